//! The supervisor: runs collectors on their interval, feeds host events to
//! notifiers, routes support requests to the session policy; restarts failing
//! modules with capped exponential back-off and quarantines a module after too
//! many consecutive failures. A host event is published for each step.
//!
//! Architecture Invariant: nothing a module does can end the host process. A
//! failed call is an ordinary value here ([`CallError`]).

use crate::agent::Agent;
use crate::config::SupervisorConfig;
use crate::events::{Events, HostEvent, Setting};
use crate::runtime::bindings::collector::exports::outpost::agent::collect::Trigger;
use crate::runtime::bindings::host_events as wit;
use crate::runtime::bindings::session_policy::exports::outpost::agent::policy::{
    Decision, Permission, SupportRequest,
};
use crate::runtime::bindings::types::{Instrument, Severity};
use crate::runtime::{CallError, LoadedModule, Runtime};
use crate::store::quarantine::Quarantine;
use crate::update::install::Authorisation;
use crate::uplink::sender::{Sender, SenderConfig};
use outpost_signing::manifest::World;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// Health of one module as the supervisor sees it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ModuleHealth {
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Successful calls.
    pub calls_ok: u64,
    /// Failed calls.
    pub calls_failed: u64,
    /// Quarantined: no further calls until the operator restarts the host.
    pub quarantined: bool,
    /// Last failure reason.
    pub last_error: Option<String>,
}

/// What to do after a call.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    RetryAfter(Duration),
    Stop,
}

struct Shared {
    runtime: Arc<Runtime>,
    quarantine: Quarantine,
    events: Events,
    cfg: SupervisorConfig,
    health: Mutex<BTreeMap<String, ModuleHealth>>,
    /// The host's configuration (for reloading a module in place).
    config: crate::config::Config,
    enrolled: bool,
    /// The loaded modules; a reload or rollback replaces one, and its loop
    /// takes the new one at its next call.
    modules: Mutex<Vec<Arc<LoadedModule>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// On a PC holding patient data: whether the person authorised file
    /// transfer by approving the running session policy's update that added
    /// it (recomputed whenever the session policy is loaded).
    file_transfer: Mutex<Authorisation>,
}

/// An installed update is on probation until it has completed this many
/// successful calls since it was loaded: quarantined before that, it is
/// rolled back to the version before it, which is loaded in its place.
pub const PROBATION_CALLS: u64 = 10;

impl Shared {
    fn module(&self, name: &str) -> Option<Arc<LoadedModule>> {
        self.modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|m| m.name() == name)
            .cloned()
    }

    /// The module loaded under `m`'s name now, if it is not `m` (a reload
    /// or rollback replaced it).
    fn newer(&self, m: &Arc<LoadedModule>) -> Option<Arc<LoadedModule>> {
        self.module(m.name()).filter(|n| !Arc::ptr_eq(n, m))
    }

    /// Load module `name` again from its effective file (an installed or
    /// restored update) and put it in place of the running one, with fresh
    /// health. Returns the new module and whether the old one was
    /// quarantined (its loop has ended).
    async fn reload(self: &Arc<Self>, name: &str) -> anyhow::Result<(Arc<LoadedModule>, bool)> {
        let me = self.clone();
        let owned = name.to_owned();
        let loaded = tokio::task::spawn_blocking(move || {
            crate::agent::load_named(&me.config, &me.runtime, &owned)
        })
        .await??;
        let loaded = Arc::new(loaded);
        {
            let mut all = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            all.retain(|m| m.name() != name);
            all.push(loaded.clone());
        }
        if loaded.world() == World::SessionPolicy {
            *self.file_transfer.lock().unwrap_or_else(|p| p.into_inner()) =
                file_transfer_authorisation(&self.config, &self.runtime, &loaded);
        }
        let was_quarantined = {
            let mut all = self.health.lock().unwrap_or_else(|p| p.into_inner());
            let old = all.insert(name.to_owned(), ModuleHealth::default());
            old.is_some_and(|h| h.quarantined)
        };
        if was_quarantined {
            self.events.emit(HostEvent::SettingResolved {
                setting: Setting::Quarantined(name.to_owned()),
            });
        }
        self.events.emit(HostEvent::ModuleReady {
            module: name.to_owned(),
            world: loaded.world().to_string(),
        });
        tracing::info!(module = name, file_sha256 = %loaded.file_sha256, "module reloaded in place");
        Ok((loaded, was_quarantined))
    }

    /// `m` was quarantined: if it is an installed update still on probation
    /// ([`PROBATION_CALLS`]), roll it back and return the version before it,
    /// loaded in its place.
    async fn roll_back(self: &Arc<Self>, m: &LoadedModule) -> Option<Arc<LoadedModule>> {
        let (calls_ok, reason) = {
            let all = self.health.lock().unwrap_or_else(|p| p.into_inner());
            let h = all.get(m.name()).cloned().unwrap_or_default();
            (h.calls_ok, h.last_error.unwrap_or_default())
        };
        let running_update = crate::update::install::installed_file(&self.config, m.name())
            .and_then(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .is_some_and(|sha| sha == m.file_sha256);
        if calls_ok >= PROBATION_CALLS || !running_update {
            return None;
        }
        let db = self.runtime.services().db.clone();
        if let Err(e) = crate::update::install::roll_back(
            &self.config,
            &db,
            &self.events,
            m.name(),
            &m.file_sha256,
            &reason,
        ) {
            tracing::error!(module = m.name(), error = %e, "rolling back the failed update failed; the module stays quarantined");
            return None;
        }
        match self.reload(m.name()).await {
            Ok((new, _)) => Some(new),
            Err(e) => {
                tracing::error!(module = m.name(), error = %e, "the rolled-back version does not load; it loads at the next start");
                None
            }
        }
    }

    /// Start the loop that runs `m` (collectors once enrolled, notifiers).
    fn spawn_loop(self: &Arc<Self>, m: Arc<LoadedModule>, startup: Vec<HostEvent>) {
        let task = match m.world() {
            // Before enrolment there is no key to seal with: collectors
            // wait (their cursors stay put; a setting problem says why).
            World::Collector if !self.enrolled => None,
            World::Collector => Some(tokio::spawn(collector_loop(self.clone(), m))),
            World::Notifier => {
                // Subscribe now so no event published after start is missed.
                let rx = self.events.subscribe();
                Some(tokio::spawn(notifier_loop(self.clone(), m, startup, rx)))
            }
            World::SessionPolicy => None,
        };
        if let Some(t) = task {
            self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(t);
        }
    }

    /// The back-off before retry number `n` (1-based): initial × 2^(n-1), capped.
    fn backoff(&self, n: u32) -> Duration {
        let ms = self
            .cfg
            .backoff_initial_ms
            .saturating_mul(1u64 << (n.saturating_sub(1)).min(32))
            .min(self.cfg.backoff_max_ms.max(self.cfg.backoff_initial_ms));
        Duration::from_millis(ms)
    }

    fn mark_quarantined(&self, module: &str, reason: &str) {
        let mut all = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let h = all.entry(module.to_owned()).or_default();
        h.quarantined = true;
        h.last_error = Some(reason.to_owned());
    }

    fn is_quarantined(&self, module: &str) -> bool {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(module)
            .is_some_and(|h| h.quarantined)
    }

    /// Record the outcome of a call of `module` (loaded from the file with hash
    /// `file_sha256`); publish the matching events; persist a quarantine.
    fn record<T>(
        &self,
        module: &str,
        file_sha256: &str,
        call: &str,
        res: &Result<T, CallError>,
        summary: impl FnOnce(&T) -> String,
    ) -> Next {
        let mut all = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let h = all.entry(module.to_owned()).or_default();
        match res {
            Ok(v) => {
                h.calls_ok += 1;
                let recovered = h.consecutive_failures > 0;
                h.consecutive_failures = 0;
                drop(all);
                self.events.emit(HostEvent::CallSucceeded {
                    module: module.to_owned(),
                    call: call.to_owned(),
                    summary: summary(v),
                });
                if recovered {
                    self.events.emit(HostEvent::ModuleRecovered {
                        module: module.to_owned(),
                    });
                }
                Next::Continue
            }
            Err(e) => {
                h.calls_failed += 1;
                h.consecutive_failures += 1;
                h.last_error = Some(e.to_string());
                let n = h.consecutive_failures;
                let quarantine = n >= self.cfg.max_consecutive_failures;
                if quarantine {
                    h.quarantined = true;
                }
                drop(all);
                tracing::warn!(module, call, failures = n, "module call failed: {e}");
                self.events.emit(HostEvent::ModuleFailed {
                    module: module.to_owned(),
                    reason: e.to_string(),
                    consecutive: n,
                });
                if quarantine {
                    if let Err(db) = self.quarantine.add(module, file_sha256, &e.to_string()) {
                        tracing::error!(module, error = %db, "cannot persist quarantine; it lasts until the host restarts");
                    }
                    self.events.emit(HostEvent::ModuleQuarantined {
                        module: module.to_owned(),
                        failures: n,
                    });
                    Next::Stop
                } else {
                    let after = self.backoff(n);
                    self.events.emit(HostEvent::ModuleRestarting {
                        module: module.to_owned(),
                        after_ms: after.as_millis() as u64,
                    });
                    Next::RetryAfter(after)
                }
            }
        }
    }
}

/// A running supervisor. Dropping it stops every task.
pub struct Supervisor {
    shared: Arc<Shared>,
    holds_patient_data: bool,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for t in self
            .shared
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            t.abort();
        }
    }
}

/// Why a release was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// No module of that name is loaded.
    #[error("no module of that name is loaded")]
    Unknown,
    /// The quarantine list could not be changed.
    #[error(transparent)]
    Db(#[from] crate::store::DbError),
}

impl Supervisor {
    /// Start supervising `agent`'s modules. Must run inside a tokio runtime.
    pub fn start(agent: &Agent, events: Events) -> Supervisor {
        let quarantine = Quarantine::new(agent.runtime.services().db.clone());
        let services = agent.runtime.services();
        let enrolled = services.uplink.identity().is_some();
        let file_transfer = agent
            .modules
            .iter()
            .find(|m| m.world() == World::SessionPolicy)
            .map(|m| file_transfer_authorisation(&agent.config, &agent.runtime, m))
            .unwrap_or(Authorisation::Refused(
                "no session-policy module is installed",
            ));
        let shared = Arc::new(Shared {
            runtime: agent.runtime.clone(),
            quarantine: quarantine.clone(),
            events,
            cfg: agent.config.supervisor.clone(),
            health: Mutex::new(
                agent
                    .modules
                    .iter()
                    .map(|m| (m.name().to_owned(), ModuleHealth::default()))
                    .collect(),
            ),
            config: agent.config.clone(),
            enrolled,
            modules: Mutex::new(agent.modules.clone()),
            tasks: Mutex::new(Vec::new()),
            file_transfer: Mutex::new(file_transfer),
        });
        let mut tasks = Vec::new();
        if enrolled {
            match Sender::new(
                services.uplink.clone(),
                shared.events.clone(),
                &services.tls,
                sender_config(agent),
            ) {
                Ok(sender) => tasks.push(tokio::spawn(sender.run(std::future::pending()))),
                Err(e) => {
                    tracing::error!(error = %e, "uploads disabled");
                    shared.events.emit(HostEvent::problem(
                        Setting::UplinkDisabled,
                        format!("uploads are disabled: {e:#}"),
                    ));
                }
            }
        }
        for m in &agent.modules {
            match quarantine.get(m.name(), &m.file_sha256) {
                Ok(Some(q)) => {
                    shared.mark_quarantined(m.name(), &q.reason);
                    shared.events.emit(HostEvent::problem(
                        Setting::Quarantined(m.name().to_owned()),
                        format!(
                            "module `{}` stays quarantined ({}); release it with `outpost release {} --config FILE` or install a new version",
                            m.name(),
                            q.reason,
                            m.name()
                        ),
                    ));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(module = m.name(), error = %e, "cannot read the quarantine list")
                }
            }
            shared.spawn_loop(m.clone(), agent.startup_problems.clone());
        }
        // An update installed while the host runs (the scheduled automatic
        // install, or through the local API) is loaded in place.
        let mut rx = shared.events.subscribe();
        let weak = Arc::downgrade(&shared);
        tasks.push(tokio::spawn(async move {
            loop {
                let module = match rx.recv().await {
                    Ok(HostEvent::UpdateInstalled { module, .. }) => module,
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                let Some(shared) = weak.upgrade() else { return };
                match shared.reload(&module).await {
                    Ok((m, true)) => shared.spawn_loop(m, Vec::new()),
                    Ok((_, false)) => {}
                    Err(e) => {
                        tracing::error!(module, error = %e, "the installed update does not load in place; it loads at the next start")
                    }
                }
            }
        }));
        shared
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tasks);
        Supervisor {
            shared,
            holds_patient_data: agent.config.site.holds_patient_data,
        }
    }

    /// Lift `module`'s quarantine (persisted and in memory) and run it again
    /// at once. Returns whether it was quarantined. Must run inside the
    /// tokio runtime the supervisor started on.
    pub fn release(&self, module: &str) -> Result<bool, ReleaseError> {
        let m = self.shared.module(module).ok_or(ReleaseError::Unknown)?;
        let persisted = self.shared.quarantine.release(module)?;
        let was = {
            let mut all = self.shared.health.lock().unwrap_or_else(|p| p.into_inner());
            let h = all.entry(module.to_owned()).or_default();
            let was = h.quarantined;
            h.quarantined = false;
            h.consecutive_failures = 0;
            was
        };
        if !was {
            return Ok(persisted);
        }
        tracing::info!(module, "quarantine lifted; the module runs again");
        self.shared.events.emit(HostEvent::ModuleReleased {
            module: module.to_owned(),
        });
        self.shared.events.emit(HostEvent::SettingResolved {
            setting: Setting::Quarantined(module.to_owned()),
        });
        self.shared.spawn_loop(m, Vec::new());
        Ok(true)
    }

    /// The module loaded under `name` now (a reload or rollback replaces
    /// the one loaded at start).
    pub fn loaded(&self, name: &str) -> Option<Arc<LoadedModule>> {
        self.shared.module(name)
    }

    /// Health of every module.
    pub fn health(&self) -> BTreeMap<String, ModuleHealth> {
        self.shared
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Route a support request to the session-policy module. Fails closed: with
    /// no policy module, or one that is quarantined or failing, the answer is
    /// "no". Whether the PC holds patient data comes from the host config, not
    /// from the request. On such a PC file transfer is removed from the offer
    /// whatever the policy module said, unless the running session policy was
    /// installed by an update that added `permission file-transfer` and the
    /// person at this PC approved that diff (#15's authorised-install rule,
    /// [`crate::update::install::authorisation`]).
    pub async fn evaluate_support_request(&self, mut request: SupportRequest) -> Decision {
        request.pc_holds_patient_data = self.holds_patient_data;
        let deny = |reason: String| Decision {
            allow: false,
            offer: Vec::new(),
            reason,
        };
        let policy = self
            .shared
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|m| m.world() == World::SessionPolicy)
            .cloned();
        let Some(m) = policy else {
            return deny("no session-policy module is installed".into());
        };
        if self.shared.is_quarantined(m.name()) {
            return deny(format!("session policy `{}` is quarantined", m.name()));
        }
        let file_transfer = self
            .shared
            .file_transfer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let res = self
            .shared
            .runtime
            .evaluate(&m, request)
            .await
            .map(|mut d| {
                if let (true, Authorisation::Refused(why)) =
                    (self.holds_patient_data, &file_transfer)
                    && d.offer.contains(&Permission::FileTransfer)
                {
                    d.offer.retain(|p| *p != Permission::FileTransfer);
                    d.reason = format!(
                        "{}; file transfer is off: this PC holds patient data and {why}",
                        d.reason
                    );
                }
                d
            });
        self.shared
            .record(m.name(), &m.file_sha256, "evaluate", &res, |d| {
                format!("allow={} offer={}", d.allow, d.offer.len())
            });
        res.unwrap_or_else(|e| deny(format!("session policy failed: {e}")))
    }
}

/// Whether the person authorised file transfer for the session policy `m`
/// (see [`Shared::file_transfer`]).
fn file_transfer_authorisation(
    config: &crate::config::Config,
    runtime: &Runtime,
    m: &LoadedModule,
) -> Authorisation {
    let db = &runtime.services().db;
    match crate::update::install::authorisation(
        config,
        db,
        m.name(),
        &m.file_sha256,
        "permission file-transfer",
    ) {
        Ok(a) => {
            if let (true, Authorisation::Approved { offer, version }) =
                (config.site.holds_patient_data, &a)
            {
                tracing::info!(
                    module = m.name(),
                    offer,
                    version = version.as_str(),
                    "file transfer on this patient-data PC was authorised when this session policy was installed"
                );
            }
            a
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the install records; file transfer stays off");
            Authorisation::Refused("the install records could not be read")
        }
    }
}

/// Sender settings from the agent's config.
fn sender_config(agent: &Agent) -> SenderConfig {
    let u = &agent.config.uplink;
    let instrument = agent
        .config
        .instruments
        .first()
        .map(|i| outpost_protocol::Instrument {
            model: i.model.clone(),
            serial: i.serial.clone(),
        })
        .unwrap_or(outpost_protocol::Instrument {
            model: String::new(),
            serial: String::new(),
        });
    SenderConfig {
        endpoints: u.endpoints(),
        bytes_per_sec: (u.bandwidth_mbit * 1e6 / 8.0) as u64,
        heartbeat_interval: Duration::from_secs(u.heartbeat_interval_secs),
        retry_initial: Duration::from_millis(u.retry_initial_ms),
        retry_max: Duration::from_millis(u.retry_max_ms),
        request_timeout: Duration::from_secs(u.request_timeout_secs),
        software: agent
            .software
            .iter()
            .map(|(component, version)| outpost_protocol::SoftwareStatus {
                instrument: instrument.clone(),
                component: component.clone(),
                version: version.clone(),
                state: outpost_protocol::InstallState::Installed,
            })
            .collect(),
    }
}

/// The pause after a drain call of `wall` time during which the process
/// used `cpu` of CPU time, so that the drain uses at most `percent` of one
/// CPU: `cpu × 100 / percent − wall` — a call that spent its time busy
/// (`cpu` = `wall`) is followed by `wall × (100 − percent) / percent`, a
/// call that waited on the disk by less. `cpu` is the whole process's
/// (what else the host did meanwhile counts against the drain too); where
/// it cannot be read (`None`), the call is taken as busy throughout.
pub fn drain_pause(wall: Duration, cpu: Option<Duration>, percent: u32) -> Duration {
    let percent = percent.clamp(1, 100);
    let used = cpu.unwrap_or(wall);
    (used.saturating_mul(100) / percent).saturating_sub(wall)
}

/// Runs a collector: on its interval, and while it says more input is
/// waiting (`uplink.backlog-waiting`), again at once — paced to the
/// policy's drain CPU share and yielding to the other tasks between calls —
/// sleeping the interval only once a call ends caught up.
async fn collector_loop(shared: Arc<Shared>, mut m: Arc<LoadedModule>) {
    let interval = Duration::from_secs(shared.cfg.collect_interval_secs);
    let min_gap = Duration::from_millis(shared.cfg.min_change_interval_ms);
    let mut watch = if shared.cfg.watch_directories && !m.grant().directories().is_empty() {
        match crate::watch::DirWatch::start(m.grant().directories().values()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(module = m.name(), error = %e, "file-change triggers off; the interval still applies");
                None
            }
        }
    } else {
        None
    };
    let mut trigger = Trigger::Startup;
    loop {
        // A reload (installed update) or rollback replaced the module.
        if let Some(newer) = shared.newer(&m) {
            m = newer;
            trigger = Trigger::Startup;
        }
        let started = tokio::time::Instant::now();
        let cpu_before = crate::trim::cpu_time();
        let res = shared.runtime.collect_reporting_backlog(&m, trigger).await;
        let cpu = cpu_before
            .zip(crate::trim::cpu_time())
            .map(|(before, after)| after.saturating_sub(before));
        let backlog = matches!(res, Ok((_, true)));
        let res = res.map(|(report, _)| report);
        // A change-triggered call that found new records: changes may still
        // be arriving, and the watch may have dropped them (see
        // `DirWatch::rearm`); one more call at the policy's rate reads
        // them either way, until a call finds nothing new.
        let follow_up =
            trigger == Trigger::FileChange && matches!(&res, Ok(r) if r.records_queued > 0);
        let next = shared.record(m.name(), &m.file_sha256, "collect", &res, |r| {
            format!(
                "files={} records={} malformed={}{}",
                r.files_scanned,
                r.records_queued,
                r.malformed,
                if backlog { " backlog" } else { "" }
            )
        });
        match next {
            Next::Continue if backlog => {
                trigger = Trigger::Schedule;
                let pause = drain_pause(started.elapsed(), cpu, shared.cfg.drain_cpu_percent);
                tracing::debug!(
                    module = m.name(),
                    pause_ms = pause.as_millis() as u64,
                    "backlog waiting; calling again"
                );
                tokio::task::yield_now().await;
                tokio::time::sleep(pause).await;
            }
            Next::Continue => {
                if let Some(w) = watch.as_mut() {
                    w.rearm();
                }
                trigger = if follow_up {
                    tokio::time::sleep_until(started + min_gap).await;
                    if let Some(w) = watch.as_mut() {
                        w.drain();
                    }
                    Trigger::FileChange
                } else {
                    next_trigger(watch.as_mut(), interval, started + min_gap).await
                };
            }
            Next::RetryAfter(d) => tokio::time::sleep(d).await,
            Next::Stop => match shared.roll_back(&m).await {
                Some(previous) => {
                    m = previous;
                    trigger = Trigger::Startup;
                }
                None => return,
            },
        }
    }
}

/// Wait for the next collection: the interval, or a change in a granted
/// directory — then no earlier than [`crate::watch::DEBOUNCE`] after it
/// and `earliest` (the policy's rate).
async fn next_trigger(
    watch: Option<&mut crate::watch::DirWatch>,
    interval: Duration,
    earliest: tokio::time::Instant,
) -> Trigger {
    let Some(watch) = watch else {
        tokio::time::sleep(interval).await;
        return Trigger::Schedule;
    };
    // Changes that arrived during the call are read by the next one anyway.
    tokio::select! {
        _ = tokio::time::sleep(interval) => Trigger::Schedule,
        _ = watch.changed() => {
            let at = (tokio::time::Instant::now() + crate::watch::DEBOUNCE).max(earliest);
            tokio::time::sleep_until(at).await;
            watch.drain();
            Trigger::FileChange
        }
    }
}

/// The WIT severity of a host severity.
fn wit_severity(s: crate::events::Severity) -> Severity {
    use crate::events::Severity as S;
    match s {
        S::Debug => Severity::Debug,
        S::Info => Severity::Info,
        S::Notice => Severity::Notice,
        S::Warning => Severity::Warning,
        S::Error => Severity::Error,
        S::Critical => Severity::Critical,
    }
}

/// Translate a host event into what the notifier world understands.
fn to_wit(e: &HostEvent) -> Option<wit::HostEvent> {
    Some(match e {
        HostEvent::ModuleFailed {
            module,
            reason,
            consecutive,
        } => wit::HostEvent::ModuleFailed(wit::ModuleFailure {
            module: module.clone(),
            reason: reason.clone(),
            consecutive: *consecutive,
        }),
        HostEvent::ModuleQuarantined { module, .. } => {
            wit::HostEvent::ModuleQuarantined(module.clone())
        }
        HostEvent::ModuleRecovered { module } => wit::HostEvent::ModuleRecovered(module.clone()),
        HostEvent::ModuleReleased { module } => wit::HostEvent::ModuleReleased(module.clone()),
        HostEvent::ModuleRefused { module, reason } => {
            let setting = Setting::ModuleRefused(module.clone());
            wit::HostEvent::SettingProblem(wit::SettingProblem {
                code: setting.code(),
                severity: wit_severity(setting.severity()),
                text: reason.clone(),
            })
        }
        HostEvent::SettingProblem {
            setting,
            severity,
            text,
        } => wit::HostEvent::SettingProblem(wit::SettingProblem {
            code: setting.code(),
            severity: wit_severity(*severity),
            text: text.clone(),
        }),
        HostEvent::SettingResolved { setting } => wit::HostEvent::SettingResolved(setting.code()),
        HostEvent::InstrumentAlert {
            model,
            serial,
            severity,
            code,
            text,
        } => wit::HostEvent::InstrumentEvent(wit::InstrumentAlert {
            instrument: Instrument {
                model: model.clone(),
                serial: serial.clone(),
            },
            severity: wit_severity(*severity),
            code: code.clone(),
            text: text.clone(),
        }),
        HostEvent::UpdateAvailable {
            offer,
            module,
            from_version,
            to_version,
            adds_capabilities,
            changes,
        } => wit::HostEvent::UpdateAvailable(wit::UpdateOffer {
            offer: u64::try_from(*offer).ok()?,
            module: module.clone(),
            from_version: from_version.clone(),
            to_version: to_version.clone(),
            changes: changes.clone(),
            needs_approval: *adds_capabilities,
        }),
        HostEvent::UpdateDecided { module, .. } | HostEvent::UpdateInstalled { module, .. } => {
            wit::HostEvent::UpdateSettled(module.clone())
        }
        HostEvent::UpdateRolledBack {
            module,
            failed_version,
            restored_version,
            ..
        } => wit::HostEvent::UpdateRolledBack(wit::UpdateRollback {
            module: module.clone(),
            failed_version: failed_version.clone(),
            restored_version: restored_version.clone(),
        }),
        _ => return None,
    })
}

async fn notifier_loop(
    shared: Arc<Shared>,
    mut m: Arc<LoadedModule>,
    startup: Vec<HostEvent>,
    mut rx: tokio::sync::broadcast::Receiver<HostEvent>,
) {
    // Problems found before the notifier ran come first.
    let mut startup = startup.into_iter();
    loop {
        let next = match startup.next() {
            Some(e) => Ok(e),
            None => rx.recv().await,
        };
        let event = match next {
            Ok(e) => e,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    module = m.name(),
                    dropped = n,
                    "notifier fell behind; events dropped"
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        // A notifier never hears about itself: its own failures would feed back.
        if event.module() == Some(m.name()) {
            continue;
        }
        let Some(wit_event) = to_wit(&event) else {
            continue;
        };
        if let Some(newer) = shared.newer(&m) {
            m = newer;
        }
        let res = shared.runtime.on_event(&m, wit_event).await;
        match shared.record(m.name(), &m.file_sha256, "on-event", &res, |_| {
            event.kind().to_owned()
        }) {
            Next::Continue => {}
            Next::RetryAfter(d) => tokio::time::sleep(d).await,
            Next::Stop => match shared.roll_back(&m).await {
                Some(previous) => m = previous,
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_problems_and_resolutions_reach_the_notifier_under_one_code() {
        let raised = HostEvent::problem(Setting::UplinkTlsRefused, "tls");
        let Some(wit::HostEvent::SettingProblem(p)) = to_wit(&raised) else {
            panic!("not a setting problem");
        };
        assert_eq!(p.code, "uplink-tls-refused");
        assert_eq!(p.severity, Severity::Error);
        let resolved = HostEvent::SettingResolved {
            setting: Setting::UplinkTlsRefused,
        };
        let Some(wit::HostEvent::SettingResolved(code)) = to_wit(&resolved) else {
            panic!("not a resolution");
        };
        assert_eq!(code, p.code);
        let refused = HostEvent::ModuleRefused {
            module: "m".into(),
            reason: "bad".into(),
        };
        let Some(wit::HostEvent::SettingProblem(p)) = to_wit(&refused) else {
            panic!("not a setting problem");
        };
        assert_eq!(
            (p.code.as_str(), p.severity),
            ("module-refused:m", Severity::Error)
        );
    }

    #[test]
    fn update_offers_decisions_and_rollbacks_reach_the_notifier() {
        let offer = HostEvent::UpdateAvailable {
            offer: 4,
            module: "collector".into(),
            from_version: "1.0.0".into(),
            to_version: "1.1.0".into(),
            adds_capabilities: true,
            changes: vec!["may read the directory “qc”".into()],
        };
        let Some(wit::HostEvent::UpdateAvailable(o)) = to_wit(&offer) else {
            panic!("not an offer");
        };
        assert_eq!((o.offer, o.module.as_str()), (4, "collector"));
        assert!(o.needs_approval);
        assert_eq!(o.changes, ["may read the directory “qc”"]);
        for settled in [
            HostEvent::UpdateDecided {
                offer: 4,
                module: "collector".into(),
                to_version: "1.1.0".into(),
                decision: "rejected".into(),
                client: "dashboard".into(),
            },
            HostEvent::UpdateInstalled {
                offer: 4,
                module: "collector".into(),
                to_version: "1.1.0".into(),
            },
        ] {
            assert!(
                matches!(to_wit(&settled), Some(wit::HostEvent::UpdateSettled(m)) if m == "collector"),
                "{settled:?}"
            );
        }
        let back = HostEvent::UpdateRolledBack {
            offer: 4,
            module: "collector".into(),
            failed_version: "1.1.0".into(),
            restored_version: "1.0.0".into(),
            reason: "trap".into(),
        };
        let Some(wit::HostEvent::UpdateRolledBack(r)) = to_wit(&back) else {
            panic!("not a rollback");
        };
        assert_eq!(
            (r.failed_version.as_str(), r.restored_version.as_str()),
            ("1.1.0", "1.0.0")
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let db = crate::store::Db::open(dir.path()).unwrap();
        let services = crate::runtime::Services::new(
            db,
            Events::default(),
            vec![],
            crate::net::tls_config(&[], false).unwrap(),
        );
        let shared = Shared {
            quarantine: Quarantine::new(services.db.clone()),
            runtime: Arc::new(Runtime::new(services, 16, None).unwrap()),
            events: Events::default(),
            cfg: SupervisorConfig {
                collect_interval_secs: 1,
                max_consecutive_failures: 3,
                backoff_initial_ms: 100,
                backoff_max_ms: 250,
                drain_cpu_percent: 80,
                ..SupervisorConfig::default()
            },
            health: Mutex::default(),
            config: crate::config::Config::parse(
                "state-dir = \"state\"\n",
                &dir.path().join("outpost.toml"),
            )
            .unwrap(),
            enrolled: false,
            modules: Mutex::default(),
            tasks: Mutex::default(),
            file_transfer: Mutex::new(Authorisation::Refused("test")),
        };
        let ms = |n| shared.backoff(n).as_millis();
        assert_eq!((ms(1), ms(2), ms(3), ms(40)), (100, 200, 250, 250));
        let mut rx = shared.events.subscribe();
        let fail: Result<(), CallError> = Err(CallError::Trap("x".into()));
        assert_eq!(
            shared.record("m", "ab", "c", &fail, |_| String::new()),
            Next::RetryAfter(Duration::from_millis(100))
        );
        assert_eq!(
            shared.record("m", "ab", "c", &fail, |_| String::new()),
            Next::RetryAfter(Duration::from_millis(200))
        );
        assert_eq!(
            shared.record("m", "ab", "c", &fail, |_| String::new()),
            Next::Stop
        );
        assert!(shared.is_quarantined("m"));
        assert!(
            shared.quarantine.get("m", "ab").unwrap().is_some(),
            "persisted"
        );
        let kinds: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.kind())
            .collect();
        assert_eq!(
            kinds,
            [
                "module-failed",
                "module-restarting",
                "module-failed",
                "module-restarting",
                "module-failed",
                "module-quarantined"
            ]
        );
    }

    #[test]
    fn drain_calls_are_paced_to_the_cpu_share() {
        let ms = Duration::from_millis;
        let busy = ms(400);
        // A call busy throughout (or whose CPU time is unknown).
        for cpu in [Some(busy), None] {
            assert_eq!(drain_pause(busy, cpu, 100), Duration::ZERO);
            assert_eq!(drain_pause(busy, cpu, 80), ms(100));
            assert_eq!(drain_pause(busy, cpu, 50), busy);
            assert_eq!(drain_pause(busy, cpu, 20), ms(1600));
            // Out-of-range shares are clamped, never a division by zero.
            assert_eq!(drain_pause(busy, cpu, 0), busy * 99);
            assert_eq!(drain_pause(busy, cpu, 250), Duration::ZERO);
        }
        // A call that waited on the disk for a quarter of its time used
        // 300 ms of CPU in 400: 80 % of one CPU needs 375 ms in all.
        assert_eq!(drain_pause(busy, Some(ms(300)), 80), Duration::ZERO);
        assert_eq!(drain_pause(busy, Some(ms(300)), 50), ms(200));
        // Other threads busy meanwhile (uploads) count against the drain.
        assert_eq!(drain_pause(busy, Some(ms(600)), 80), ms(350));
    }
}
