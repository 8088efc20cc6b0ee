//! The API's resources. Every handler reads or acts through the host's own
//! services; none takes a module's word for anything.

use super::{Caller, Shared, refuse, sse_event};
use crate::events::HostEvent;
use crate::grants::GrantSummary;
use crate::store::notifications::{Notification, NotifyError};
use crate::supervisor::{ModuleHealth, ReleaseError};
use axum::Json;
use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::broadcast::error::RecvError;

/// Facts about the agent fixed when it started.
#[derive(Clone, Debug, Serialize)]
pub struct AgentFacts {
    /// The host's version.
    pub version: String,
    /// When it started (Unix seconds).
    pub started_at: i64,
    /// Whether the PC is configured as holding patient data.
    pub holds_patient_data: bool,
    /// The modules that loaded.
    pub modules: Vec<ModuleFacts>,
    /// The modules refused at start, and why.
    pub refused: Vec<crate::agent::Refused>,
}

/// A loaded module as the status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ModuleFacts {
    /// Name.
    pub name: String,
    /// World.
    pub world: String,
    /// Version.
    pub version: String,
    /// SHA-256 of its signed file.
    pub file_sha256: String,
    /// Its effective grant.
    pub grant: GrantSummary,
}

impl ModuleFacts {
    /// The facts of a loaded module.
    pub fn of(m: &crate::runtime::LoadedModule) -> ModuleFacts {
        ModuleFacts {
            name: m.name().to_owned(),
            world: m.world().to_string(),
            version: m.grant().version().to_owned(),
            file_sha256: m.file_sha256.clone(),
            grant: GrantSummary::from(m.grant()),
        }
    }
}

impl AgentFacts {
    /// The facts of `agent`, started now.
    pub fn of(agent: &crate::agent::Agent) -> AgentFacts {
        AgentFacts {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: crate::store::now_secs(),
            holds_patient_data: agent.config.site.holds_patient_data,
            modules: agent
                .modules
                .iter()
                .map(|m| ModuleFacts {
                    name: m.name().to_owned(),
                    world: m.world().to_string(),
                    version: m.grant().version().to_owned(),
                    file_sha256: m.file_sha256.clone(),
                    grant: GrantSummary::from(m.grant()),
                })
                .collect(),
            refused: agent.refused.clone(),
        }
    }
}

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(super::dashboard::index))
        .route("/assets/{file}", get(super::dashboard::asset))
        .route("/login", get(login))
        .route("/logout", post(logout))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/login-codes", post(new_login_code))
        .route("/api/v1/status", get(status))
        .route("/api/v1/notifications", get(notifications))
        .route("/api/v1/notifications/{id}/acknowledge", post(acknowledge))
        .route("/api/v1/notifications/{id}/dismiss", post(dismiss))
        .route("/api/v1/modules/{name}/release", post(release))
        .route("/api/v1/events", get(events))
        .route("/api/v1/updates", get(updates_list))
        .route("/api/v1/updates/{id}", get(update_show))
        .route("/api/v1/updates/{id}/approve", post(update_approve))
        .route("/api/v1/updates/{id}/reject", post(update_reject))
        .route("/api/v1/updates/{id}/install", post(update_install))
        .merge(super::support::routes())
}

fn update_offers(s: &Shared) -> crate::update::offers::Offers {
    crate::update::offers::Offers::new(s.ctx.services.db.clone())
}

fn update_view(s: &Shared, offer: crate::update::offers::Offer) -> Response {
    match crate::update::OfferView::of(&update_offers(s), offer) {
        Ok(v) => Json(v).into_response(),
        Err(e) => server_error(e),
    }
}

async fn updates_list(State(s): State<Arc<Shared>>) -> Response {
    let offers = update_offers(&s);
    let list = match offers.list() {
        Ok(l) => l,
        Err(e) => return server_error(e),
    };
    let mut views = Vec::with_capacity(list.len());
    for o in list {
        match crate::update::OfferView::of(&offers, o) {
            Ok(v) => views.push(v),
            Err(e) => return server_error(e),
        }
    }
    Json(views).into_response()
}

fn no_offer(id: i64) -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        "unknown-update",
        format!("no update offer {id}"),
    )
}

async fn update_show(State(s): State<Arc<Shared>>, Path(id): Path<i64>) -> Response {
    match update_offers(&s).get(id) {
        Ok(Some(o)) => update_view(&s, o),
        Ok(None) => no_offer(id),
        Err(e) => server_error(e),
    }
}

/// Install an offer now (approved, or adding nothing where the operator's
/// policy allows): staged, health-checked, switched; the running host then
/// loads it in place (`update-installed`).
async fn update_install(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Response {
    use crate::update::install::InstallError as E;
    let (config, db, events, client) = (
        s.ctx.config.clone(),
        s.ctx.services.db.clone(),
        s.ctx.events.clone(),
        caller.client.clone(),
    );
    let res = tokio::task::spawn_blocking(move || {
        crate::update::install::install(&config, &db, &events, id, &client)
    })
    .await;
    match res {
        Ok(Ok(o)) => {
            tracing::info!(target: "outpost.api", offer = id, module = %o.module, client = %caller.client, "update installed");
            update_view(&s, o)
        }
        Ok(Err(E::NotFound(id))) => no_offer(id),
        Ok(Err(e @ (E::NotInstallable { .. } | E::NeedsApproval(_)))) => {
            refuse(StatusCode::CONFLICT, "not-installable", e.to_string())
        }
        Ok(Err(e @ E::ApprovalVoid(_))) => {
            refuse(StatusCode::CONFLICT, "diff-changed", e.to_string())
        }
        Ok(Err(e @ (E::File { .. } | E::HealthCheck { .. }))) => refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "install-failed",
            e.to_string(),
        ),
        Ok(Err(e)) => server_error(e),
        Err(e) => server_error(e),
    }
}

fn update_decide(s: &Shared, caller: &Caller, id: i64, approve: bool) -> Response {
    use crate::update::offers::DecisionError;
    match update_offers(s).decide(id, approve, &caller.client) {
        Ok(o) => {
            tracing::info!(target: "outpost.api", offer = id, module = %o.module, client = %caller.client, approve, "update decision");
            s.ctx.events.emit(HostEvent::UpdateDecided {
                offer: o.id,
                module: o.module.clone(),
                to_version: o.to_version.clone(),
                decision: o.state.as_str().to_owned(),
                client: caller.client.clone(),
            });
            update_view(s, o)
        }
        Err(DecisionError::NotFound(id)) => no_offer(id),
        Err(e @ DecisionError::NotAvailable { .. }) => {
            refuse(StatusCode::CONFLICT, "not-available", e.to_string())
        }
        Err(DecisionError::Db(e)) => server_error(e),
    }
}

/// `?diff-digest=` on an approval: the digest of the diff the person was
/// shown. When given and no longer the offer's, the approval is refused
/// (409 `diff-changed`) so that nobody approves a diff they did not see.
#[derive(serde::Deserialize)]
struct ApproveQuery {
    #[serde(rename = "diff-digest")]
    diff_digest: Option<String>,
}

async fn update_approve(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    Query(q): Query<ApproveQuery>,
) -> Response {
    if let Some(shown) = q.diff_digest {
        match update_offers(&s).get(id) {
            Ok(Some(o)) if o.diff_digest.as_deref() != Some(shown.as_str()) => {
                return refuse(
                    StatusCode::CONFLICT,
                    "diff-changed",
                    format!(
                        "update offer {id} changed since it was shown: look at what it adds again"
                    ),
                );
            }
            Ok(Some(_)) => {}
            Ok(None) => return no_offer(id),
            Err(e) => return server_error(e),
        }
    }
    update_decide(&s, &caller, id, true)
}

async fn update_reject(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Response {
    update_decide(&s, &caller, id, false)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::OPENAPI).into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let text = s.ctx.services.metrics.render(&s.ctx.services);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(Serialize)]
struct LoginCode {
    /// The URL to open in the browser on this PC.
    url: String,
    /// Seconds it stays valid.
    expires_in_secs: u64,
}

/// A one-time login URL for the dashboard; only a program holding the
/// token may ask (a browser session cannot make more of them).
async fn new_login_code(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    if caller.via != super::Via::Token {
        return refuse(
            StatusCode::FORBIDDEN,
            "token-required",
            "login URLs are made with the API token (`outpost dashboard`)",
        );
    }
    let code = s.sessions.new_login_code();
    Json(LoginCode {
        url: format!("http://127.0.0.1:{}/login?code={code}", s.port),
        expires_in_secs: s.sessions.code_ttl().as_secs(),
    })
    .into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    code: Option<String>,
}

/// Exchange a one-time code for the session cookie, then go to the page.
async fn login(State(s): State<Arc<Shared>>, Query(q): Query<LoginQuery>) -> Response {
    match q.code.as_deref().and_then(|c| s.sessions.redeem(c)) {
        Some(id) => {
            let cookie = format!(
                "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                super::auth::SESSION_COOKIE,
                super::auth::SESSION_TTL_SECS
            );
            tracing::info!(target: "outpost.api", "dashboard session opened");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        None => {
            tracing::warn!(target: "outpost.api", "login refused: code unknown, expired or used");
            (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                super::dashboard::LOGIN_FAILED,
            )
                .into_response()
        }
    }
}

async fn logout(State(s): State<Arc<Shared>>, headers: axum::http::HeaderMap) -> Response {
    if let Some(id) = headers
        .get(header::COOKIE)
        .and_then(|c| c.to_str().ok())
        .and_then(super::auth::session_from_cookie)
    {
        s.sessions.end(id);
    }
    let clear = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        super::auth::SESSION_COOKIE
    );
    ([(header::SET_COOKIE, clear)], Redirect::to("/")).into_response()
}

/// A module as the status shows it: what it is, how it runs, what it may do.
#[derive(Serialize)]
struct ModuleStatus<'a> {
    #[serde(flatten)]
    facts: &'a ModuleFacts,
    /// `running`, `failing` or `quarantined`.
    state: &'static str,
    #[serde(flatten)]
    health: ModuleHealth,
}

#[derive(Serialize)]
struct Enrolment {
    enrolled: bool,
    device_id: Option<String>,
    server: Option<String>,
}

#[derive(Serialize)]
struct UplinkStatus {
    waiting_batches: u64,
    waiting_bytes: u64,
    delivered: u64,
    dropped: u64,
    refused: u64,
    dead_letters: u64,
    /// Dead letters held now (`outpost uplink dead-letters`), by who refused them.
    dead_letters_held: DeadLettersHeld,
    counters: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct DeadLettersHeld {
    guard: u64,
    cloud: u64,
}

#[derive(Serialize)]
struct Status<'a> {
    agent: AgentView<'a>,
    enrolment: Enrolment,
    modules: Vec<ModuleStatus<'a>>,
    refused_modules: &'a [crate::agent::Refused],
    uplink: UplinkStatus,
    notifications: NotificationCounts,
}

#[derive(Serialize)]
struct AgentView<'a> {
    version: &'a str,
    started_at: i64,
    holds_patient_data: bool,
}

#[derive(Serialize)]
struct NotificationCounts {
    active: usize,
    by_severity: BTreeMap<String, usize>,
}

pub(super) fn server_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(target: "outpost.api", error = %e, "request failed");
    refuse(
        StatusCode::INTERNAL_SERVER_ERROR,
        "unavailable",
        "the host could not read its state; see the host log",
    )
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    let facts = &s.ctx.agent;
    let services = &s.ctx.services;
    let health = s.ctx.supervisor.health();
    // The modules running now: an update installed in place or rolled back
    // replaces the one loaded at start.
    let live: Vec<ModuleFacts> = facts
        .modules
        .iter()
        .map(|m| {
            s.ctx
                .supervisor
                .loaded(&m.name)
                .map(|l| ModuleFacts::of(&l))
                .unwrap_or_else(|| m.clone())
        })
        .collect();
    let modules = live
        .iter()
        .map(|m| {
            let h = health.get(&m.name).cloned().unwrap_or_default();
            let state = if h.quarantined {
                "quarantined"
            } else if h.consecutive_failures > 0 {
                "failing"
            } else {
                "running"
            };
            ModuleStatus {
                facts: m,
                state,
                health: h,
            }
        })
        .collect();
    let identity = services.uplink.identity();
    let (waiting_batches, waiting_bytes) = match services.spool.pending() {
        Ok(p) => p,
        Err(e) => return server_error(e),
    };
    let counters = match services.spool.counters() {
        Ok(c) => c,
        Err(e) => return server_error(e),
    };
    let (held_guard, held_cloud) = match services.spool.dead_letters().counts() {
        Ok(c) => c,
        Err(e) => return server_error(e),
    };
    let sum = |prefix: &str| -> u64 {
        counters
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| *v)
            .sum()
    };
    let active = match services.notifications.active(None) {
        Ok(a) => a,
        Err(e) => return server_error(e),
    };
    let mut by_severity = BTreeMap::new();
    for n in &active {
        *by_severity.entry(n.severity.clone()).or_insert(0) += 1;
    }
    Json(Status {
        agent: AgentView {
            version: &facts.version,
            started_at: facts.started_at,
            holds_patient_data: facts.holds_patient_data,
        },
        enrolment: Enrolment {
            enrolled: identity.is_some(),
            device_id: identity.as_ref().map(|i| i.device_id.to_string()),
            server: identity.as_ref().map(|i| i.server.clone()),
        },
        modules,
        refused_modules: &facts.refused,
        uplink: UplinkStatus {
            waiting_batches,
            waiting_bytes,
            delivered: sum("delivered"),
            dropped: sum("dropped"),
            refused: sum("guard-refused") + sum("dead-letter"),
            dead_letters: sum("dead-letter"),
            dead_letters_held: DeadLettersHeld {
                guard: held_guard,
                cloud: held_cloud,
            },
            counters,
        },
        notifications: NotificationCounts {
            active: active.len(),
            by_severity,
        },
    })
    .into_response()
}

#[derive(Deserialize)]
struct NotificationsQuery {
    /// Also the ended ones, newest first, at most this many.
    history: Option<u32>,
}

#[derive(Serialize)]
struct NotificationList {
    active: Vec<Notification>,
    history: Vec<Notification>,
}

/// Most history entries one request returns.
const MAX_HISTORY_PER_REQUEST: u32 = 500;

async fn notifications(
    State(s): State<Arc<Shared>>,
    Query(q): Query<NotificationsQuery>,
) -> Response {
    let centre = &s.ctx.services.notifications;
    let active = match centre.active(None) {
        Ok(a) => a,
        Err(e) => return server_error(e),
    };
    let history = match q.history {
        Some(n) if n > 0 => match centre.history(n.min(MAX_HISTORY_PER_REQUEST)) {
            Ok(h) => h,
            Err(e) => return server_error(e),
        },
        _ => Vec::new(),
    };
    Json(NotificationList { active, history }).into_response()
}

fn notify_answer(
    s: &Shared,
    res: Result<Notification, NotifyError>,
    state: outpost_protocol::NotificationState,
    client: &str,
    event: impl FnOnce(&Notification) -> HostEvent,
) -> Response {
    match res {
        Ok(n) => {
            s.ctx.services.report_notification(&n, state, client);
            s.ctx.events.emit(event(&n));
            Json(n).into_response()
        }
        Err(NotifyError::NotActive(id)) => refuse(
            StatusCode::NOT_FOUND,
            "not-active",
            format!("no active notification with id {id}"),
        ),
        Err(e) => server_error(e),
    }
}

async fn acknowledge(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Response {
    let res = s.ctx.services.notifications.acknowledge(id, &caller.client);
    let state = outpost_protocol::NotificationState::Acknowledged;
    notify_answer(&s, res, state, &caller.client, |n| {
        HostEvent::NotificationAcknowledged {
            id: n.id,
            module: n.module.clone(),
            key: n.key.clone(),
            client: caller.client.clone(),
        }
    })
}

async fn dismiss(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Response {
    let res = s.ctx.services.notifications.dismiss(id, &caller.client);
    let state = outpost_protocol::NotificationState::Dismissed;
    notify_answer(&s, res, state, &caller.client, |n| {
        HostEvent::NotificationCleared {
            id: n.id,
            module: n.module.clone(),
            key: n.key.clone(),
            by: caller.client.clone(),
        }
    })
}

#[derive(Serialize)]
struct Released {
    module: String,
    released: bool,
}

async fn release(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    match s.ctx.supervisor.release(&name) {
        Ok(released) => {
            tracing::info!(target: "outpost.api", module = %name, client = %caller.client, released, "quarantine release requested");
            Json(Released {
                module: name,
                released,
            })
            .into_response()
        }
        Err(ReleaseError::Unknown) => refuse(
            StatusCode::NOT_FOUND,
            "unknown-module",
            format!("no module `{name}` is loaded"),
        ),
        Err(ReleaseError::Db(e)) => server_error(e),
    }
}

/// Releases the stream's slot when the stream ends.
struct StreamSlot(Arc<Shared>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn events(State(s): State<Arc<Shared>>) -> Response {
    if s.streams.fetch_add(1, Ordering::SeqCst) >= super::MAX_EVENT_STREAMS {
        s.streams.fetch_sub(1, Ordering::SeqCst);
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-streams",
            "too many event streams are open",
        );
    }
    let slot = StreamSlot(s.clone());
    let rx = s.ctx.events.subscribe();
    let stream = futures_util::stream::unfold((rx, slot), |(mut rx, slot)| async move {
        let ev = match rx.recv().await {
            Ok(ev) => sse_event(&ev),
            Err(RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(ev), (rx, slot)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(super::SSE_KEEPALIVE))
        .into_response()
}
