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
//! | update available | raise `update:<module>`, notice: the versions, what it may newly do, where to decide |
//! | update settled (installed, approved, rejected) | clear `update:<module>` |
//! | update rolled back | raise `update:<module>`, warning: the version that failed, the one running again |

use outpost_sdk::notify::{self, Notification};
use outpost_sdk::{HostEvent, Notifier, Severity, UpdateOffer};

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
        HostEvent::UpdateAvailable(offer) => Action::Raise(update_available(offer)),
        HostEvent::UpdateSettled(module) => Action::Clear(format!("update:{module}")),
        HostEvent::UpdateRolledBack(r) => Action::Raise(Notification::new(
            format!("update:{}", r.module),
            Severity::Warning,
            format!("Update of {} taken back", r.module),
            format!(
                "Version {} of the {} module failed after it was installed, so the agent put version {} back; it runs as before. Your vendor has been told through the agent's status; nothing to do here unless it repeats.",
                r.failed_version, r.module, r.restored_version
            ),
        )),
    }
}

/// At most this many changes are listed in a notification; the dashboard
/// and `outpost updates show` list them all.
pub const CHANGES_LISTED: usize = 6;

fn update_available(o: UpdateOffer) -> Notification {
    let mut body = format!(
        "Version {} of the {} module can replace version {}.",
        o.to_version, o.module, o.from_version
    );
    if !o.changes.is_empty() {
        body.push_str(" What changes:");
        for c in o.changes.iter().take(CHANGES_LISTED) {
            body.push_str("\n• ");
            body.push_str(c);
        }
        if o.changes.len() > CHANGES_LISTED {
            body.push_str(&format!(
                "\n• and {} more",
                o.changes.len() - CHANGES_LISTED
            ));
        }
        body.push('\n');
    } else {
        body.push(' ');
    }
    if o.needs_approval {
        body.push_str(&format!(
            "It asks for more than the installed version, so it installs only after you approve these changes: open the dashboard (`outpost dashboard`) or run `outpost updates show {}`.",
            o.offer
        ));
    } else {
        body.push_str(&format!(
            "It asks for nothing new. It installs automatically where your administrator allows it; otherwise approve it in the dashboard or with `outpost updates show {}`.",
            o.offer
        ));
    }
    Notification::new(
        format!("update:{}", o.module),
        if o.needs_approval {
            Severity::Notice
        } else {
            Severity::Info
        },
        format!(
            "Update for {}: {} → {}{}",
            o.module,
            o.from_version,
            o.to_version,
            if o.needs_approval {
                ", needs your approval"
            } else {
                ""
            }
        ),
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_sdk::{Instrument, InstrumentAlert, ModuleFailure, SettingProblem, UpdateRollback};

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

    fn offer(changes: Vec<String>, needs_approval: bool) -> HostEvent {
        HostEvent::UpdateAvailable(UpdateOffer {
            offer: 7,
            module: "session-policy".into(),
            from_version: "1.0.0".into(),
            to_version: "1.1.0".into(),
            changes,
            needs_approval,
        })
    }

    #[test]
    fn an_update_that_asks_for_more_says_what_and_where_to_approve() {
        let Action::Raise(n) = action_for(offer(
            vec!["may transfer files during remote support".into()],
            true,
        )) else {
            panic!("an offer is shown")
        };
        assert_eq!(n.key, "update:session-policy");
        assert_eq!(n.severity, Severity::Notice);
        assert!(n.title.contains("1.0.0 → 1.1.0"), "{}", n.title);
        assert!(n.title.contains("needs your approval"), "{}", n.title);
        assert!(
            n.body
                .contains("• may transfer files during remote support")
        );
        assert!(n.body.contains("outpost updates show 7"), "{}", n.body);
        assert!(n.body.contains("only after you approve"), "{}", n.body);
    }

    #[test]
    fn an_update_that_asks_for_nothing_new_is_shown_quietly() {
        let Action::Raise(n) = action_for(offer(Vec::new(), false)) else {
            panic!("an offer is shown")
        };
        assert_eq!(n.severity, Severity::Info);
        assert!(!n.title.contains("approval"), "{}", n.title);
        assert!(n.body.contains("asks for nothing new"), "{}", n.body);
    }

    #[test]
    fn a_long_list_of_changes_is_cut_and_says_how_many_more() {
        let changes: Vec<String> = (0..10)
            .map(|i| format!("may connect to h{i}.example:443 over HTTPS"))
            .collect();
        let Action::Raise(n) = action_for(offer(changes, true)) else {
            panic!("an offer is shown")
        };
        assert_eq!(n.body.matches("• may").count(), CHANGES_LISTED);
        assert!(n.body.contains("• and 4 more"), "{}", n.body);
    }

    #[test]
    fn a_settled_update_is_cleared_and_a_rollback_is_a_warning() {
        assert_eq!(
            action_for(HostEvent::UpdateSettled("collector".into())),
            Action::Clear("update:collector".into())
        );
        let Action::Raise(n) = action_for(HostEvent::UpdateRolledBack(UpdateRollback {
            module: "collector".into(),
            failed_version: "2.0.0".into(),
            restored_version: "1.0.0".into(),
        })) else {
            panic!("a rollback is shown")
        };
        assert_eq!(
            (n.key.as_str(), n.severity),
            ("update:collector", Severity::Warning)
        );
        assert!(
            n.body.contains("2.0.0") && n.body.contains("1.0.0"),
            "{}",
            n.body
        );
    }
}
