// The outpost dashboard. Talks only to the API it was served by; shows data
// with textContent (never as markup); refreshes from the live event stream.
"use strict";

const SEVERITY_WORDS = {
  critical: "Needs action now",
  error: "Something failed",
  warning: "Needs attention soon",
  notice: "For your information",
  info: "For your information",
  debug: "Detail",
};

const STATE_WORDS = {
  running: "Working",
  failing: "Having trouble — retrying by itself",
  quarantined: "Stopped after repeated failures — contact your administrator",
  refused: "Not started — contact your administrator",
};

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function when(unixSeconds) {
  if (!unixSeconds) return "";
  return new Date(unixSeconds * 1000).toLocaleString();
}

async function api(path, options) {
  const res = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  if (res.status === 401) {
    showLogin();
    throw new Error("not logged in");
  }
  if (!res.ok) {
    // The agent's errors carry a sentence for people (`message`).
    let message = path + ": " + res.status;
    try {
      const body = await res.json();
      if (body && body.message) message = body.message;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return res.json();
}

function showLogin() {
  $("login").hidden = false;
  $("app").hidden = true;
  setLive(false, "not logged in");
}

function setLive(on, text) {
  const live = $("live");
  live.className = on ? "live" : "live off";
  live.textContent = text;
}

function whatToDo(n) {
  if (n.key.startsWith("instrument:")) return "Check the instrument and its manual for this code.";
  if (n.key.startsWith("setting:")) return "This is about the PC's settings: tell your administrator.";
  if (n.key.startsWith("module:")) return "The agent retries by itself; if this stays, tell your administrator.";
  return "";
}

function renderNotifications(list) {
  const ul = $("notifications");
  ul.replaceChildren();
  $("none").hidden = list.active.length > 0;
  let attention = 0;
  for (const n of list.active) {
    if (!n.acknowledged_at && (n.severity === "critical" || n.severity === "error" || n.severity === "warning")) attention++;
    const li = el("li", "note " + n.severity + (n.acknowledged_at ? " acked" : ""));
    li.dataset.id = String(n.id);
    const head = el("div", "head");
    head.append(el("span", "badge " + n.severity, n.severity), el("span", "title", n.title));
    head.append(el("span", "meta", SEVERITY_WORDS[n.severity] || ""));
    li.append(head);
    if (n.body) li.append(el("div", "body", n.body));
    const hint = whatToDo(n);
    if (hint) li.append(el("div", "what", hint));
    let meta = "Since " + when(n.raised_at);
    if (n.updated_at !== n.raised_at) meta += " · updated " + when(n.updated_at);
    if (n.acknowledged_at) meta += " · acknowledged " + when(n.acknowledged_at) + " (" + n.acknowledged_by + ")";
    li.append(el("div", "meta", meta));
    const actions = el("div", "actions");
    if (!n.acknowledged_at) {
      const ack = el("button", "primary ack", "Acknowledge");
      ack.addEventListener("click", () => act(ack, n.id, "acknowledge"));
      actions.append(ack);
    }
    const dismiss = el("button", "dismiss", "Dismiss");
    dismiss.addEventListener("click", () => act(dismiss, n.id, "dismiss"));
    actions.append(dismiss);
    li.append(actions);
    ul.append(li);
  }
  $("count-attention").textContent = String(attention);
  $("tile-attention").className = attention > 0 ? "tile alert" : "tile";
}

async function act(button, id, what) {
  button.disabled = true;
  try {
    await api("/api/v1/notifications/" + id + "/" + what, { method: "POST" });
  } catch (e) {
    button.disabled = false;
  }
  refreshNotifications();
}

function renderStatus(s) {
  const tbody = $("modules");
  tbody.replaceChildren();
  let running = 0;
  for (const m of s.modules) {
    if (m.state === "running") running++;
    const tr = el("tr");
    tr.append(el("td", "", m.name));
    tr.append(el("td", "state-" + m.state, STATE_WORDS[m.state] || m.state));
    tr.append(el("td", "", String(m.calls_ok) + " ok, " + String(m.calls_failed) + " failed"));
    tr.append(el("td", "", m.last_error || ""));
    tbody.append(tr);
  }
  for (const r of s.refused_modules) {
    const tr = el("tr");
    tr.append(el("td", "", r.module), el("td", "state-refused", STATE_WORDS.refused), el("td", "", ""), el("td", "", r.reason));
    tbody.append(tr);
  }
  $("count-modules").textContent = running + " of " + (s.modules.length + s.refused_modules.length);
  $("count-waiting").textContent = String(s.uplink.waiting_batches);
  $("device").textContent = s.enrolment.enrolled ? s.enrolment.device_id : "not registered with the vendor yet";
  $("waiting").textContent = s.uplink.waiting_batches + " report(s), " + s.uplink.waiting_bytes + " bytes";
  $("delivered").textContent = String(s.uplink.delivered);
  $("dropped").textContent = String(s.uplink.dropped);
  $("refused").textContent = String(s.uplink.refused);
  $("footer").textContent = "outpost " + s.agent.version + " · running since " + when(s.agent.started_at);
}

function renderUpdates(offers) {
  const waiting = offers.filter((o) => o.state === "available" || o.state === "approved");
  $("updates-card").hidden = waiting.length === 0;
  const ul = $("updates");
  ul.replaceChildren();
  for (const o of waiting) {
    const li = el("li", "update" + (o["adds-capabilities"] ? " adds" : ""));
    li.dataset.id = String(o.id);
    const from = o["from-version"] ? o["from-version"] + " → " : "";
    li.append(el("div", "title", "“" + o.module + "” " + from + o["to-version"]));
    if (o.state === "approved") {
      li.append(el("div", "", "Approved. Once installed, this job also:"));
    } else if (o["adds-capabilities"]) {
      li.append(el("div", "", "If you approve, this job also:"));
    } else {
      li.append(el("div", "", "This version asks for nothing new."));
    }
    const changes = el("ul", "changes");
    for (const c of o.changes || []) changes.append(el("li", "", c));
    if ((o.changes || []).length > 0) li.append(changes);
    li.append(el("div", "meta muted", "Found " + when(o["created-at"]) + " · installing switches the job to the new version at once; if it fails, the version before comes back"));
    const actions = el("div", "actions");
    if (o.state === "approved") {
      const install = el("button", "primary install", "Install now");
      install.addEventListener("click", () => decide(install, o, "install"));
      actions.append(install);
    } else {
      const approve = el("button", "primary approve", "Approve");
      approve.addEventListener("click", () => decide(approve, o, "approve"));
      const reject = el("button", "reject", "Reject");
      reject.addEventListener("click", () => decide(reject, o, "reject"));
      actions.append(approve, reject);
    }
    li.append(actions);
    ul.append(li);
  }
}

async function decide(button, offer, what) {
  button.disabled = true;
  const error = $("updates-error");
  error.hidden = true;
  // An approval names the diff it was shown; if the offer changed since,
  // the agent refuses it and the list is shown again.
  let path = "/api/v1/updates/" + offer.id + "/" + what;
  if (what === "approve" && offer["diff-digest"]) path += "?diff-digest=" + encodeURIComponent(offer["diff-digest"]);
  try {
    await api(path, { method: "POST" });
  } catch (e) {
    error.textContent = what === "install"
      ? "Not installed: " + (e && e.message ? e.message : "the agent refused it") + ". The version before keeps running."
      : "Not done: the update changed or was decided elsewhere since it was shown. Look at it again below.";
    error.hidden = false;
  }
  refreshUpdates();
}

// What each support permission lets the engineer do, in plain words.
const PERMISSION_WORDS = {
  view: "SEE your screen",
  control: "CONTROL your keyboard and mouse",
  "file-transfer": "TRANSFER FILES to and from this PC",
};

function engineerWords(s) {
  const regions = (s.regions || []).join(", ");
  return (s.display_name || s.engineer) + " (" + s.engineer + (regions ? ", region " + regions : "") + ")";
}

function renderSupport(list) {
  const ul = $("support-sessions");
  ul.replaceChildren();
  for (const s of list) {
    if (s.state !== "awaiting-approval" && s.state !== "active") continue;
    const li = el("li", "support-session " + s.state);
    li.dataset.id = s.id;
    const actions = el("div", "actions");
    if (s.state === "awaiting-approval") {
      li.append(el("div", "title", "A support engineer, " + engineerWords(s) + ", asks to:"));
      const asks = el("ul", "asks");
      for (const p of s.offered) {
        const row = el("li");
        const label = el("label");
        const box = el("input", "perm");
        box.type = "checkbox";
        box.value = p;
        label.append(box, document.createTextNode(" " + (PERMISSION_WORDS[p] || p)));
        row.append(label);
        asks.append(row);
      }
      li.append(asks);
      li.append(el("div", "muted", "Tick what you allow. Anything not ticked is refused. If you do not answer in time, everything is refused."));
      const allow = el("button", "primary allow", "Allow what is ticked");
      allow.addEventListener("click", () => {
        const accept = Array.from(li.querySelectorAll("input.perm:checked")).map((b) => b.value);
        answerSupport(allow, s.id, accept);
      });
      const refuse = el("button", "refuse", "Refuse all");
      refuse.addEventListener("click", () => answerSupport(refuse, s.id, []));
      actions.append(allow, refuse);
    } else {
      li.append(el("div", "title", "Support session with " + engineerWords(s) + " is running"));
      li.append(el("div", "", "The engineer may: " + s.permissions.map((p) => PERMISSION_WORDS[p] || p).join("; ") + "."));
      const end = el("button", "primary end", "End the session now");
      end.addEventListener("click", () => endSupport(end, s.id));
      actions.append(end);
    }
    li.append(actions);
    ul.append(li);
  }
}

function supportError(text) {
  const error = $("support-error");
  error.textContent = text;
  error.hidden = !text;
}

async function answerSupport(button, id, accept) {
  button.disabled = true;
  supportError("");
  try {
    await api("/api/v1/support/sessions/" + encodeURIComponent(id) + "/approvals", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ accept: accept }),
    });
  } catch (e) {
    supportError("Not done: the engineer is no longer waiting for an answer.");
  }
  refreshSupport();
}

async function endSupport(button, id) {
  button.disabled = true;
  try {
    await api("/api/v1/support/sessions/" + encodeURIComponent(id) + "/end", { method: "POST" });
  } catch (e) {
    supportError("Not done: the session had already ended.");
  }
  refreshSupport();
}

async function requestSupport() {
  const button = $("support-request");
  button.disabled = true;
  supportError("");
  try {
    const made = await api("/api/v1/support/sessions", { method: "POST" });
    $("support-id").textContent = made.session.id;
    $("support-password").textContent = made.password;
    $("support-until").textContent = new Date(made.session.expires_at_ms).toLocaleString();
    $("support-new").hidden = false;
  } catch (e) {
    supportError("Remote support is not available on this PC.");
  }
  button.disabled = false;
}

async function refreshSupport() {
  try {
    const list = await api("/api/v1/support/sessions");
    // The password box goes once its session is no longer waiting.
    const shown = $("support-id").textContent;
    const s = list.find((x) => x.id === shown);
    if (!s || s.state !== "open") $("support-new").hidden = true;
    renderSupport(list);
  } catch (e) { /* shown by api() */ }
}

async function refreshUpdates() {
  try { renderUpdates(await api("/api/v1/updates")); } catch (e) { /* shown by api() */ }
}

async function refreshNotifications() {
  try { renderNotifications(await api("/api/v1/notifications")); } catch (e) { /* shown by api() */ }
}

async function refreshStatus() {
  try { renderStatus(await api("/api/v1/status")); } catch (e) { /* shown by api() */ }
}

function listen() {
  const source = new EventSource("/api/v1/events");
  source.addEventListener("open", () => setLive(true, "live"));
  source.addEventListener("error", () => setLive(false, "reconnecting…"));
  for (const kind of ["notification-raised", "notification-cleared", "notification-acknowledged", "resync"]) {
    source.addEventListener(kind, () => refreshNotifications());
  }
  for (const kind of ["update-available", "update-decided", "update-installed", "update-rolled-back", "resync"]) {
    source.addEventListener(kind, () => refreshUpdates());
  }
  for (const kind of ["support-requested", "support-approval-needed", "support-session-started", "support-session-ended", "resync"]) {
    source.addEventListener(kind, () => refreshSupport());
  }
  for (const kind of ["module-failed", "module-recovered", "module-quarantined", "module-released", "module-ready", "call-succeeded", "setting-problem", "setting-resolved", "resync"]) {
    source.addEventListener(kind, () => scheduleStatus());
  }
}

let statusTimer = null;
function scheduleStatus() {
  // Many events in a burst make one refresh.
  if (statusTimer) return;
  statusTimer = setTimeout(() => { statusTimer = null; refreshStatus(); }, 250);
}

async function start() {
  try {
    renderStatus(await api("/api/v1/status"));
  } catch (e) {
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  await refreshNotifications();
  await refreshUpdates();
  await refreshSupport();
  $("support-request").addEventListener("click", requestSupport);
  listen();
  setInterval(refreshStatus, 30000);
}

start();
