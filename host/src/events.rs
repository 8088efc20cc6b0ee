//! Host events: what happened to modules and settings, for the notifier, the
//! CLI and tests. Events carry names, counts and reasons, never payloads.

use serde::Serialize;
use tokio::sync::broadcast;

/// Capacity of the event bus; a slow observer loses the oldest events.
pub const EVENT_BUS_CAPACITY: usize = 1024;

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
        /// Stable code.
        code: String,
        /// Description.
        text: String,
    },
    /// An instrument reported a warning or worse (from a collector's records).
    InstrumentAlert {
        /// Instrument model.
        model: String,
        /// Instrument serial.
        serial: String,
        /// Severity name.
        severity: String,
        /// Instrument code.
        code: String,
        /// Redacted text.
        text: String,
    },
    /// A module raised or updated a notification.
    NotificationRaised {
        /// Module name.
        module: String,
        /// Notification key.
        key: String,
        /// Severity name.
        severity: String,
        /// Title.
        title: String,
    },
    /// A module cleared a notification.
    NotificationCleared {
        /// Module name.
        module: String,
        /// Notification key.
        key: String,
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
            HostEvent::InstrumentAlert { .. } => "instrument-alert",
            HostEvent::NotificationRaised { .. } => "notification-raised",
            HostEvent::NotificationCleared { .. } => "notification-cleared",
            HostEvent::RequestRefused { .. } => "request-refused",
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
            | HostEvent::RequestRefused { module, .. } => Some(module),
            HostEvent::SettingProblem { .. } | HostEvent::InstrumentAlert { .. } => None,
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
