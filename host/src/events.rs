//! Host events: what happened to modules and settings, for the notifier, the
//! CLI and tests. Events carry names, counts and reasons, never payloads.

use serde::Serialize;
use tokio::sync::broadcast;

/// Capacity of the event bus; a slow observer loses the oldest events.
pub const EVENT_BUS_CAPACITY: usize = 1024;

/// How serious something the host reports is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Routine detail.
    Debug,
    /// Normal operation worth recording.
    Info,
    /// Something the user may want to know.
    Notice,
    /// Degraded operation: attention needed soon.
    Warning,
    /// A function of the instrument or the PC failed.
    Error,
    /// Nothing works until someone acts.
    Critical,
}

impl Severity {
    /// The lowercase name used in storage, events and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// The severity named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<Severity> {
        Some(match name {
            "debug" => Severity::Debug,
            "info" => Severity::Info,
            "notice" => Severity::Notice,
            "warning" => Severity::Warning,
            "error" => Severity::Error,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A problem with the PC's or the agent's settings, by kind: every code the
/// host raises is one of these, with its severity, so a raise and the
/// resolution that clears it name the same thing by construction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Setting {
    /// A logical directory of `[directories]` is not a directory.
    DirectoryMissing(String),
    /// The device is not enrolled: nothing is collected or uploaded.
    DeviceNotEnrolled,
    /// `device.json` exists but cannot be used.
    DeviceIdentityUnusable,
    /// The device enrolled with another cloud than the one uploads go to.
    UplinkEndpointMismatch,
    /// The uploader could not be started.
    UplinkDisabled,
    /// Uploads and heartbeats keep failing (no connection, timeouts, 5xx).
    UplinkUnreachable,
    /// The cloud's server was reached but its TLS was refused.
    UplinkTlsRefused,
    /// The cloud refuses this device.
    UplinkRejected,
    /// The cloud refused one batch of a stream; it is kept aside.
    UplinkDeadLetter(String),
    /// The PHI guard refused a batch of a module.
    UplinkGuardRefused(String),
    /// The spool was full; the oldest batches of a stream were dropped.
    UplinkDropped(String),
    /// The spool is full of batches that are never dropped.
    UplinkSpoolFull,
    /// The spool cannot be written (disk full, database error).
    UplinkSpoolUnwritable,
    /// A module runs under the development key.
    DevelopmentKey(String),
    /// A module stays quarantined from an earlier run.
    Quarantined(String),
    /// A module could not be loaded.
    ModuleRefused(String),
    /// The local API (dashboard, CLI) could not be started.
    ApiUnavailable,
}

impl Setting {
    /// The stable code, e.g. `directory-missing:instrument-logs`.
    pub fn code(&self) -> String {
        let (kind, arg) = match self {
            Setting::DirectoryMissing(d) => ("directory-missing", Some(d)),
            Setting::DeviceNotEnrolled => ("device-not-enrolled", None),
            Setting::DeviceIdentityUnusable => ("device-identity-unusable", None),
            Setting::UplinkEndpointMismatch => ("uplink-endpoint-mismatch", None),
            Setting::UplinkDisabled => ("uplink-disabled", None),
            Setting::UplinkUnreachable => ("uplink-unreachable", None),
            Setting::UplinkTlsRefused => ("uplink-tls-refused", None),
            Setting::UplinkRejected => ("uplink-rejected", None),
            Setting::UplinkDeadLetter(s) => ("uplink-dead-letter", Some(s)),
            Setting::UplinkGuardRefused(m) => ("uplink-guard-refused", Some(m)),
            Setting::UplinkDropped(s) => ("uplink-dropped", Some(s)),
            Setting::UplinkSpoolFull => ("uplink-spool-full", None),
            Setting::UplinkSpoolUnwritable => ("uplink-spool-unwritable", None),
            Setting::DevelopmentKey(m) => ("development-key", Some(m)),
            Setting::Quarantined(m) => ("quarantined", Some(m)),
            Setting::ModuleRefused(m) => ("module-refused", Some(m)),
            Setting::ApiUnavailable => ("api-unavailable", None),
        };
        match arg {
            Some(a) => format!("{kind}:{a}"),
            None => kind.to_owned(),
        }
    }

    /// How serious the problem is.
    pub fn severity(&self) -> Severity {
        match self {
            Setting::DirectoryMissing(_)
            | Setting::DeviceNotEnrolled
            | Setting::UplinkEndpointMismatch
            | Setting::UplinkUnreachable
            | Setting::UplinkDeadLetter(_)
            | Setting::UplinkDropped(_)
            | Setting::DevelopmentKey(_)
            | Setting::ApiUnavailable => Severity::Warning,
            Setting::DeviceIdentityUnusable
            | Setting::UplinkDisabled
            | Setting::UplinkTlsRefused
            | Setting::UplinkRejected
            | Setting::UplinkGuardRefused(_)
            | Setting::UplinkSpoolFull
            | Setting::Quarantined(_)
            | Setting::ModuleRefused(_) => Severity::Error,
            Setting::UplinkSpoolUnwritable => Severity::Critical,
        }
    }
}

impl Serialize for Setting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.code())
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.code())
    }
}

/// Something the host observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum HostEvent {
    /// A module was loaded and is ready to run.
    ModuleReady {
        /// Module name.
        module: String,
        /// Module world.
        world: String,
    },
    /// A module could not be loaded.
    ModuleRefused {
        /// Module name.
        module: String,
        /// Why (names the capability, import, file).
        reason: String,
    },
    /// A call succeeded.
    CallSucceeded {
        /// Module name.
        module: String,
        /// What was called.
        call: String,
        /// Short summary (counts).
        summary: String,
    },
    /// A call failed: trap, deadline, memory limit or error result.
    ModuleFailed {
        /// Module name.
        module: String,
        /// Why.
        reason: String,
        /// Consecutive failures.
        consecutive: u32,
    },
    /// The module will be retried after a delay.
    ModuleRestarting {
        /// Module name.
        module: String,
        /// Delay before the next call.
        after_ms: u64,
    },
    /// The module succeeded after failing.
    ModuleRecovered {
        /// Module name.
        module: String,
    },
    /// The module failed too often and will not be called again until the
    /// operator acts.
    ModuleQuarantined {
        /// Module name.
        module: String,
        /// Consecutive failures.
        failures: u32,
    },
    /// A settings problem.
    SettingProblem {
        /// What kind (serialized as its stable `code`).
        #[serde(rename = "code")]
        setting: Setting,
        /// Its severity (from the kind).
        severity: Severity,
        /// Description.
        text: String,
    },
    /// A settings problem raised earlier went away.
    SettingResolved {
        /// What kind (serialized as its stable `code`).
        #[serde(rename = "code")]
        setting: Setting,
    },
    /// An instrument reported a warning or worse (from a collector's records).
    InstrumentAlert {
        /// Instrument model.
        model: String,
        /// Instrument serial.
        serial: String,
        /// Severity.
        severity: Severity,
        /// Instrument code.
        code: String,
        /// Redacted text.
        text: String,
    },
    /// A module raised or updated a notification.
    NotificationRaised {
        /// The notification's id.
        id: i64,
        /// Module name.
        module: String,
        /// Notification key.
        key: String,
        /// Severity.
        severity: Severity,
        /// Title.
        title: String,
    },
    /// A notification ended: its module cleared it, or the person
    /// dismissed it.
    NotificationCleared {
        /// The notification's id.
        id: i64,
        /// Module name.
        module: String,
        /// Notification key.
        key: String,
        /// `module`, or the client through which the person dismissed it.
        by: String,
    },
    /// The person acknowledged a notification (it stays active).
    NotificationAcknowledged {
        /// The notification's id.
        id: i64,
        /// Module name.
        module: String,
        /// Notification key.
        key: String,
        /// The client through which it was acknowledged.
        client: String,
    },
    /// The operator lifted a module's quarantine; it runs again.
    ModuleReleased {
        /// Module name.
        module: String,
    },
    /// Something the uplink refused to send was kept as a dead letter
    /// (`outpost uplink dead-letters`): a record the PHI guard refused, or
    /// a batch the cloud refused. Never carries a value.
    DeadLettered {
        /// The dead letter's id (`g12`, `c1733…`).
        id: String,
        /// Who refused it.
        source: crate::store::deadletter::Source,
        /// The module that queued it.
        module: String,
        /// Its stream.
        stream: String,
        /// The guard's finding code (`ssn`, `person-name`...) or the cloud's reason.
        reason: String,
        /// The field the guard named.
        field: Option<String>,
        /// The same record was held already (refused again).
        repeated: bool,
    },
    /// A verified module update is waiting for the person's decision (or,
    /// adding nothing, for automatic installation where the policy allows).
    UpdateAvailable {
        /// The offer's id (`outpost updates show ID`).
        offer: i64,
        /// Module name.
        module: String,
        /// Installed version.
        from_version: String,
        /// Offered version.
        to_version: String,
        /// Whether it asks for anything more (then it needs approval).
        adds_capabilities: bool,
        /// Each change of its capabilities in plain words.
        changes: Vec<String>,
    },
    /// The person approved or rejected an update offer.
    UpdateDecided {
        /// The offer's id.
        offer: i64,
        /// Module name.
        module: String,
        /// Offered version.
        to_version: String,
        /// `approved` or `rejected`.
        decision: String,
        /// The client through which it was decided.
        client: String,
    },
    /// The person at the PC asked for remote support (a session id and a
    /// one-time password were made; the password is never in an event).
    SupportRequested {
        /// The session id.
        session: String,
        /// Open for an engineer until (Unix ms).
        expires_at_ms: i64,
    },
    /// An engineer authenticated; the person must accept or refuse each
    /// offered permission.
    SupportApprovalNeeded {
        /// The session id.
        session: String,
        /// The engineer's verified id.
        engineer: String,
        /// The engineer's name.
        display_name: String,
        /// The engineer's regions.
        regions: Vec<String>,
        /// The permissions offered (`view`, `control`, `file-transfer`).
        offered: Vec<String>,
    },
    /// A support session started with the approved permissions.
    SupportSessionStarted {
        /// The session id.
        session: String,
        /// The engineer's verified id.
        engineer: String,
        /// The granted permissions.
        permissions: Vec<String>,
    },
    /// A support session ended.
    SupportSessionEnded {
        /// The session id.
        session: String,
        /// Why (`ended`, `idle-timeout`, `total-timeout`, a refusal code).
        reason: String,
    },
    /// A support connection attempt was refused.
    SupportRefused {
        /// The session id it named.
        session: String,
        /// The refusal code (`wrong-password`, `locked`, `region-refused`...).
        reason: String,
    },
    /// A module update was installed; the running host loads it in place of
    /// the old version at that module's next call.
    UpdateInstalled {
        /// The offer's id.
        offer: i64,
        /// Module name.
        module: String,
        /// The installed version.
        to_version: String,
    },
    /// An installed update failed in service before completing its probation
    /// and the version before it runs again.
    UpdateRolledBack {
        /// The failed update's offer id.
        offer: i64,
        /// Module name.
        module: String,
        /// The version that failed.
        failed_version: String,
        /// The version that runs again.
        restored_version: String,
        /// The failure (from the host's call record; no module text beyond it).
        reason: String,
    },
    /// An outbound request was refused by the network grant.
    RequestRefused {
        /// Module name.
        module: String,
        /// `host:port` asked for.
        authority: String,
        /// Why.
        reason: String,
    },
}

impl HostEvent {
    /// A setting problem of kind `setting`, at the kind's severity.
    pub fn problem(setting: Setting, text: impl Into<String>) -> HostEvent {
        HostEvent::SettingProblem {
            severity: setting.severity(),
            setting,
            text: text.into(),
        }
    }

    /// The event's kind, as in its JSON `event` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            HostEvent::ModuleReady { .. } => "module-ready",
            HostEvent::ModuleRefused { .. } => "module-refused",
            HostEvent::CallSucceeded { .. } => "call-succeeded",
            HostEvent::ModuleFailed { .. } => "module-failed",
            HostEvent::ModuleRestarting { .. } => "module-restarting",
            HostEvent::ModuleRecovered { .. } => "module-recovered",
            HostEvent::ModuleQuarantined { .. } => "module-quarantined",
            HostEvent::SettingProblem { .. } => "setting-problem",
            HostEvent::SettingResolved { .. } => "setting-resolved",
            HostEvent::InstrumentAlert { .. } => "instrument-alert",
            HostEvent::NotificationRaised { .. } => "notification-raised",
            HostEvent::NotificationCleared { .. } => "notification-cleared",
            HostEvent::NotificationAcknowledged { .. } => "notification-acknowledged",
            HostEvent::ModuleReleased { .. } => "module-released",
            HostEvent::RequestRefused { .. } => "request-refused",
            HostEvent::DeadLettered { .. } => "dead-lettered",
            HostEvent::UpdateAvailable { .. } => "update-available",
            HostEvent::UpdateDecided { .. } => "update-decided",
            HostEvent::SupportRequested { .. } => "support-requested",
            HostEvent::SupportApprovalNeeded { .. } => "support-approval-needed",
            HostEvent::SupportSessionStarted { .. } => "support-session-started",
            HostEvent::SupportSessionEnded { .. } => "support-session-ended",
            HostEvent::SupportRefused { .. } => "support-refused",
            HostEvent::UpdateInstalled { .. } => "update-installed",
            HostEvent::UpdateRolledBack { .. } => "update-rolled-back",
        }
    }

    /// The module an event is about, if any.
    pub fn module(&self) -> Option<&str> {
        match self {
            HostEvent::ModuleReady { module, .. }
            | HostEvent::ModuleRefused { module, .. }
            | HostEvent::CallSucceeded { module, .. }
            | HostEvent::ModuleFailed { module, .. }
            | HostEvent::ModuleRestarting { module, .. }
            | HostEvent::ModuleRecovered { module }
            | HostEvent::ModuleQuarantined { module, .. }
            | HostEvent::NotificationRaised { module, .. }
            | HostEvent::NotificationCleared { module, .. }
            | HostEvent::NotificationAcknowledged { module, .. }
            | HostEvent::ModuleReleased { module }
            | HostEvent::RequestRefused { module, .. }
            | HostEvent::DeadLettered { module, .. } => Some(module),
            HostEvent::UpdateAvailable { module, .. }
            | HostEvent::UpdateDecided { module, .. }
            | HostEvent::UpdateInstalled { module, .. }
            | HostEvent::UpdateRolledBack { module, .. } => Some(module),
            HostEvent::SettingProblem { .. }
            | HostEvent::SettingResolved { .. }
            | HostEvent::InstrumentAlert { .. }
            | HostEvent::SupportRequested { .. }
            | HostEvent::SupportApprovalNeeded { .. }
            | HostEvent::SupportSessionStarted { .. }
            | HostEvent::SupportSessionEnded { .. }
            | HostEvent::SupportRefused { .. } => None,
        }
    }
}

/// The event bus.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<HostEvent>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(EVENT_BUS_CAPACITY).0,
        }
    }
}

impl Events {
    /// Publish an event. Only its kind and module are logged: titles and
    /// texts come from modules and are never written to the host log.
    pub fn emit(&self, event: HostEvent) {
        tracing::info!(target: "outpost.event", kind = event.kind(), module = event.module().unwrap_or("-"));
        let _ = self.tx.send(event);
    }

    /// Subscribe to events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.tx.subscribe()
    }
}
