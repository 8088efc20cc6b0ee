//! outpost notifier module: turns host events into notifications.
//!
//! | event | notification |
//! | --- | --- |
//! | module failed | raise `module:<name>`, warning |
//! | module quarantined | raise `module:<name>`, error |
//! | module recovered or released | clear `module:<name>` |
//! | setting problem | raise `setting:<code>` at the severity the host gives |
//! | setting resolved | clear `setting:<code>` |
//! | instrument event, warning or worse | raise `instrument:<serial>:<code>` at its severity |

use outpost_sdk::notify::{self, Notification};
use outpost_sdk::{HostEvent, Notifier, Severity};

/// What to do for one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Raise or update this notification.
    Raise(Notification),
    /// Clear the notification with this key.
    Clear(String),
    /// Nothing to tell the user.
    Ignore,
}

/// The notifier module.
pub struct EventNotifier;

impl Notifier for EventNotifier {
    fn on_event(event: HostEvent) -> Result<(), String> {
        match action_for(event) {
            Action::Raise(n) => {
                notify::raise(&n).map_err(|e| format!("while raising {}: {e}", n.key))
            }
            Action::Clear(key) => notify::clear(&key)
                .map(drop)
                .map_err(|e| format!("while clearing {key}: {e}")),
            Action::Ignore => Ok(()),
        }
    }
}

outpost_sdk::export_notifier!(EventNotifier);

/// The action for one host event.
pub fn action_for(event: HostEvent) -> Action {
    match event {
        HostEvent::ModuleFailed(f) => Action::Raise(Notification::new(
            format!("module:{}", f.module),
            Severity::Warning,
            format!("Module {} failed", f.module),
            format!(
                "The {} module failed ({}); {} consecutive failure(s). The agent retries it automatically.",
                f.module, f.reason, f.consecutive
            ),
        )),
        HostEvent::ModuleQuarantined(module) => Action::Raise(Notification::new(
            format!("module:{module}"),
            Severity::Error,
            format!("Module {module} stopped"),
            format!(
                "The {module} module failed repeatedly and is quarantined. Contact your administrator or vendor support."
            ),
        )),
        HostEvent::ModuleRecovered(module) | HostEvent::ModuleReleased(module) => {
            Action::Clear(format!("module:{module}"))
        }
        HostEvent::SettingProblem(p) => Action::Raise(Notification::new(
            format!("setting:{}", p.code),
            p.severity,
            "Setting problem".to_string(),
            p.text,
        )),
        HostEvent::SettingResolved(code) => Action::Clear(format!("setting:{code}")),
        HostEvent::InstrumentEvent(alert) if alert.severity.at_least(Severity::Warning) => {
            let serial = &alert.instrument.serial;
            Action::Raise(Notification::new(
                format!("instrument:{serial}:{}", alert.code),
                alert.severity,
                format!(
                    "{} {serial}: {}",
                    alert.instrument.model,
                    if alert.code.is_empty() {
                        "event"
                    } else {
                        &alert.code
                    }
                ),
                alert.text,
            ))
        }
        HostEvent::InstrumentEvent(_) => Action::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_sdk::{Instrument, InstrumentAlert, ModuleFailure, SettingProblem};

    fn raised(action: Action) -> (String, Severity) {
        match action {
            Action::Raise(n) => (n.key, n.severity),
            other => panic!("expected a raise, got {other:?}"),
        }
    }

    fn alert(severity: Severity) -> HostEvent {
        HostEvent::InstrumentEvent(InstrumentAlert {
            instrument: Instrument::new("XN-550", "S1"),
            severity,
            code: "E-1203".into(),
            text: "pump".into(),
        })
    }

    #[test]
    fn events_map_to_actions() {
        let failed = HostEvent::ModuleFailed(ModuleFailure {
            module: "collector".into(),
            reason: "cpu deadline exceeded".into(),
            consecutive: 2,
        });
        assert_eq!(
            raised(action_for(failed)),
            ("module:collector".into(), Severity::Warning)
        );
        assert_eq!(
            raised(action_for(HostEvent::ModuleQuarantined("collector".into()))),
            ("module:collector".into(), Severity::Error)
        );
        assert_eq!(
            action_for(HostEvent::ModuleRecovered("collector".into())),
            Action::Clear("module:collector".into())
        );
        let setting = HostEvent::SettingProblem(SettingProblem {
            code: "directory-missing:instrument-logs".into(),
            severity: Severity::Error,
            text: "missing".into(),
        });
        assert_eq!(
            raised(action_for(setting)),
            (
                "setting:directory-missing:instrument-logs".into(),
                Severity::Error
            )
        );
        assert_eq!(
            action_for(HostEvent::SettingResolved(
                "directory-missing:instrument-logs".into()
            )),
            Action::Clear("setting:directory-missing:instrument-logs".into())
        );
        assert_eq!(
            raised(action_for(alert(Severity::Warning))),
            ("instrument:S1:E-1203".into(), Severity::Warning)
        );
        assert_eq!(
            raised(action_for(alert(Severity::Critical))).1,
            Severity::Critical
        );
        assert_eq!(action_for(alert(Severity::Notice)), Action::Ignore);
    }
}
