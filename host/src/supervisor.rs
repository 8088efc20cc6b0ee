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
}

impl Shared {
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
    enrolled: bool,
    modules: Vec<Arc<LoadedModule>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
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
        });
        let mut tasks = Vec::new();
        let services = agent.runtime.services();
        let enrolled = services.uplink.identity().is_some();
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
            match m.world() {
                // Before enrolment there is no key to seal with: collectors
                // wait (their cursors stay put; a setting problem says why).
                World::Collector if !enrolled => {}
                World::Collector => {
                    tasks.push(tokio::spawn(collector_loop(shared.clone(), m.clone())))
                }
                World::Notifier => {
                    // Subscribe now so no event published after start is missed.
                    let rx = shared.events.subscribe();
                    let startup = agent.startup_problems.clone();
                    tasks.push(tokio::spawn(notifier_loop(
                        shared.clone(),
                        m.clone(),
                        startup,
                        rx,
                    )));
                }
                World::SessionPolicy => {}
            }
        }
        Supervisor {
            shared,
            holds_patient_data: agent.config.site.holds_patient_data,
            enrolled,
            modules: agent.modules.clone(),
            tasks: Mutex::new(tasks),
        }
    }

    /// Lift `module`'s quarantine (persisted and in memory) and run it again
    /// at once. Returns whether it was quarantined. Must run inside the
    /// tokio runtime the supervisor started on.
    pub fn release(&self, module: &str) -> Result<bool, ReleaseError> {
        let m = self
            .modules
            .iter()
            .find(|m| m.name() == module)
            .ok_or(ReleaseError::Unknown)?;
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
        let task = match m.world() {
            World::Collector if self.enrolled => {
                Some(tokio::spawn(collector_loop(self.shared.clone(), m.clone())))
            }
            World::Notifier => {
                let rx = self.shared.events.subscribe();
                Some(tokio::spawn(notifier_loop(
                    self.shared.clone(),
                    m.clone(),
                    Vec::new(),
                    rx,
                )))
            }
            _ => None,
        };
        if let Some(t) = task {
            self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(t);
        }
        Ok(true)
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
    /// from the request, and on such a PC file transfer is removed from the
    /// offer whatever the policy module said.
    pub async fn evaluate_support_request(&self, mut request: SupportRequest) -> Decision {
        request.pc_holds_patient_data = self.holds_patient_data;
        let deny = |reason: String| Decision {
            allow: false,
            offer: Vec::new(),
            reason,
        };
        let Some(m) = self
            .modules
            .iter()
            .find(|m| m.world() == World::SessionPolicy)
        else {
            return deny("no session-policy module is installed".into());
        };
        if self.shared.is_quarantined(m.name()) {
            return deny(format!("session policy `{}` is quarantined", m.name()));
        }
        let res = self.shared.runtime.evaluate(m, request).await.map(|mut d| {
            if self.holds_patient_data {
                d.offer.retain(|p| *p != Permission::FileTransfer);
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

/// The pause after a drain call that took `busy`, so that drain calls use at
/// most `percent` of one CPU's time: `busy × (100 − percent) / percent`.
pub fn drain_pause(busy: Duration, percent: u32) -> Duration {
    let percent = percent.clamp(1, 100);
    busy.saturating_mul(100 - percent) / percent
}

/// Runs a collector: on its interval, and while it says more input is
/// waiting (`uplink.backlog-waiting`), again at once — paced to the
/// policy's drain CPU share and yielding to the other tasks between calls —
/// sleeping the interval only once a call ends caught up.
async fn collector_loop(shared: Arc<Shared>, m: Arc<LoadedModule>) {
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
        let started = tokio::time::Instant::now();
        let res = shared.runtime.collect_reporting_backlog(&m, trigger).await;
        let backlog = matches!(res, Ok((_, true)));
        let res = res.map(|(report, _)| report);
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
                let pause = drain_pause(started.elapsed(), shared.cfg.drain_cpu_percent);
                tracing::debug!(
                    module = m.name(),
                    pause_ms = pause.as_millis() as u64,
                    "backlog waiting; calling again"
                );
                tokio::task::yield_now().await;
                tokio::time::sleep(pause).await;
            }
            Next::Continue => {
                trigger = next_trigger(watch.as_mut(), interval, started + min_gap).await;
            }
            Next::RetryAfter(d) => tokio::time::sleep(d).await,
            Next::Stop => return,
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
        _ => return None,
    })
}

async fn notifier_loop(
    shared: Arc<Shared>,
    m: Arc<LoadedModule>,
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
        let res = shared.runtime.on_event(&m, wit_event).await;
        match shared.record(m.name(), &m.file_sha256, "on-event", &res, |_| {
            event.kind().to_owned()
        }) {
            Next::Continue => {}
            Next::RetryAfter(d) => tokio::time::sleep(d).await,
            Next::Stop => return,
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
        let busy = Duration::from_millis(400);
        assert_eq!(drain_pause(busy, 100), Duration::ZERO);
        assert_eq!(drain_pause(busy, 80), Duration::from_millis(100));
        assert_eq!(drain_pause(busy, 50), busy);
        assert_eq!(drain_pause(busy, 20), Duration::from_millis(1600));
        // Out-of-range shares are clamped, never a division by zero.
        assert_eq!(drain_pause(busy, 0), busy * 99);
        assert_eq!(drain_pause(busy, 250), Duration::ZERO);
    }
}
