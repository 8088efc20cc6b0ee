//! The host side of the `outpost:agent` interfaces. Each function acts for the
//! calling module only: the module name and grant come from the store, never
//! from the module's arguments.

use super::bindings::{host_events, host_info, log, notify, state, types, uplink};
use super::sandbox::HostState;
use super::stdio::Stream;
use crate::events::HostEvent;
use crate::store::notifications::{MAX_BODY_BYTES, MAX_TITLE_BYTES, NotifyError};
use crate::store::spool::{MAX_BATCH_RECORDS, SpoolError, StateWrite};
use crate::store::state::{ModuleState, StateError};
use crate::untrusted;
use types::Severity;

/// The host's severity for a WIT severity.
pub fn host_severity(s: Severity) -> crate::events::Severity {
    use crate::events::Severity as S;
    match s {
        Severity::Debug => S::Debug,
        Severity::Info => S::Info,
        Severity::Notice => S::Notice,
        Severity::Warning => S::Warning,
        Severity::Error => S::Error,
        Severity::Critical => S::Critical,
    }
}

/// Severity as the lowercase name used in storage and events.
pub fn severity_name(s: Severity) -> &'static str {
    host_severity(s).name()
}

/// The WIT severity stored under `name` (an unknown name is taken as
/// critical: it is shown, not hidden).
fn severity_from_name(name: &str) -> Severity {
    use crate::events::Severity as S;
    match S::from_name(name) {
        Some(S::Debug) => Severity::Debug,
        Some(S::Info) => Severity::Info,
        Some(S::Notice) => Severity::Notice,
        Some(S::Warning) => Severity::Warning,
        Some(S::Error) => Severity::Error,
        Some(S::Critical) | None => Severity::Critical,
    }
}

/// The alerts a batch raises: its warning, error and critical instrument
/// events, one per instrument and event code, in order of first appearance:
/// the most severe, the latest of equal severity. The records of a call
/// were read at about the same moment; a log that repeats one error
/// thousands of times is one thing for the person at the PC to see (the
/// notifier keys its notification by instrument and code), and each record
/// still goes to the cloud.
///
/// Once the batch is queued they join the call's ([`merge_alert`]), and
/// the call's are raised when it ends ([`take_alerts`]), not per batch: a
/// backlog drain queues hundreds of batches, and an alert per batch and
/// code was a notifier call and a database write each (about a tenth of
/// the host's time in a drain).
fn batch_alerts(batch: &[uplink::Record]) -> Vec<uplink::InstrumentEvent> {
    let mut chosen: Vec<&uplink::InstrumentEvent> = Vec::new();
    for r in batch {
        let uplink::Record::Event(e) = r else {
            continue;
        };
        if !matches!(
            e.severity,
            Severity::Warning | Severity::Error | Severity::Critical
        ) {
            continue;
        }
        keep_alert(&mut chosen, e, |k| k);
    }
    chosen.into_iter().cloned().collect()
}

/// Adds `e` to the call's `alerts` ([`keep_alert`]).
fn merge_alert(alerts: &mut Vec<uplink::InstrumentEvent>, e: uplink::InstrumentEvent) {
    keep_alert(alerts, e, |k| k);
}

/// Adds `e` (the event `event` gives of it) to `alerts`: in place of the
/// one of its instrument and code if it is at least as severe, at the end
/// if there is none.
fn keep_alert<E>(alerts: &mut Vec<E>, e: E, event: fn(&E) -> &uplink::InstrumentEvent) {
    let new = event(&e);
    let same = |k: &E| {
        let k = event(k);
        k.code == new.code
            && k.instrument.serial == new.instrument.serial
            && k.instrument.model == new.instrument.model
    };
    match alerts.iter_mut().find(|k| same(k)) {
        Some(k) => {
            if host_severity(new.severity) >= host_severity(event(k).severity) {
                *k = e;
            }
        }
        None => alerts.push(e),
    }
}

/// Most alerts held back until a call ends; more are raised at once.
pub const MAX_PENDING_ALERTS: usize = 256;

/// The alerts of a call's queued batches ([`batch_alerts`]) as host events.
/// Only the chosen events are cleaned (the cleaning runs the PHI check on
/// each text).
pub(crate) fn take_alerts(state: &mut HostState) -> Vec<HostEvent> {
    // The records passed the uplink's PHI guard; their texts may still hold
    // line breaks and other control characters, which an event must not.
    let clean = |s: &str| untrusted::clean(s, untrusted::MAX_LOG_LINE_BYTES).into_owned();
    std::mem::take(&mut state.alerts)
        .into_iter()
        .map(|e| HostEvent::InstrumentAlert {
            model: clean(&e.instrument.model),
            serial: clean(&e.instrument.serial),
            severity: host_severity(e.severity),
            code: clean(&e.code),
            text: clean(&e.text),
        })
        .collect()
}

impl HostState {
    fn state(&self) -> ModuleState {
        ModuleState::new(
            self.module.services.db.clone(),
            &self.module.name,
            self.module.grant.state_quota_bytes(),
        )
    }
}

impl types::Host for HostState {}
impl host_events::Host for HostState {}

impl host_info::Host for HostState {
    fn agent_version(&mut self) -> wasmtime::Result<String> {
        Ok(env!("CARGO_PKG_VERSION").to_owned())
    }

    fn instruments(&mut self) -> wasmtime::Result<Vec<types::Instrument>> {
        Ok(self
            .module
            .services
            .instruments
            .iter()
            .map(|i| types::Instrument {
                model: i.model.clone(),
                serial: i.serial.clone(),
            })
            .collect())
    }

    fn module_name(&mut self) -> wasmtime::Result<String> {
        Ok(self.module.name.to_string())
    }
}

impl log::Host for HostState {
    fn write(&mut self, level: Severity, message: String) -> wasmtime::Result<()> {
        let stream = match level {
            Severity::Debug => Stream::LogDebug,
            Severity::Info | Severity::Notice => Stream::LogInfo,
            Severity::Warning => Stream::LogWarn,
            Severity::Error | Severity::Critical => Stream::LogError,
        };
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .line(stream, &message);
        Ok(())
    }
}

fn state_err(e: StateError) -> state::StateError {
    match e {
        StateError::QuotaExceeded(q) => state::StateError::QuotaExceeded(q),
        StateError::InvalidKey => state::StateError::InvalidKey,
        StateError::Db(e) => state::StateError::Unavailable(e.to_string()),
    }
}

impl state::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        // A read failure is a host fault, not something the module can handle.
        Ok(self.state().get(&key)?)
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), state::StateError>> {
        Ok(self.state().set(&key, &value).map_err(state_err))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), state::StateError>> {
        Ok(self.state().delete(&key).map_err(state_err))
    }

    fn keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
        Ok(self.state().keys(&prefix)?)
    }
}

impl uplink::Host for HostState {
    fn enqueue(
        &mut self,
        stream: String,
        batch: Vec<uplink::Record>,
    ) -> wasmtime::Result<Result<u64, uplink::UplinkError>> {
        Ok(self.queue(stream, batch, None))
    }

    fn enqueue_with_state(
        &mut self,
        stream: String,
        batch: Vec<uplink::Record>,
        state: uplink::StateEntry,
    ) -> wasmtime::Result<Result<u64, uplink::UplinkError>> {
        Ok(self.queue(stream, batch, Some(state)))
    }

    fn backlog_waiting(&mut self) -> wasmtime::Result<()> {
        self.backlog_waiting = true;
        Ok(())
    }
}

impl HostState {
    /// `uplink.enqueue[-with-state]`: grant and size checks, then the uplink
    /// (guard, seal, spool, and the state entry in the same transaction).
    fn queue(
        &mut self,
        stream: String,
        batch: Vec<uplink::Record>,
        state: Option<uplink::StateEntry>,
    ) -> Result<u64, uplink::UplinkError> {
        let grant = &self.module.grant;
        if !grant.uplink_streams().contains(&stream) {
            return Err(uplink::UplinkError::StreamNotGranted(stream));
        }
        if batch.is_empty() || batch.len() > MAX_BATCH_RECORDS {
            return Err(uplink::UplinkError::BatchTooLarge(MAX_BATCH_RECORDS as u32));
        }
        // Which records raise alerts is taken before the records are moved
        // (not copied) into the batch; kept only if the batch is queued.
        let alerts = batch_alerts(&batch);
        let records: Vec<_> = batch
            .into_iter()
            .map(crate::uplink::convert::record)
            .collect();
        let services = &self.module.services;
        let write = state.as_ref().map(|s| StateWrite {
            key: &s.key,
            value: &s.value,
            quota: grant.state_quota_bytes(),
        });
        let seq =
            match services
                .uplink
                .enqueue_with_state(&self.module.name, &stream, records, write)
            {
                Ok(seq) => seq,
                Err(e) => {
                    use crate::uplink::EnqueueError as E;
                    return Err(match e {
                        E::Guard(v) => uplink::UplinkError::RefusedByGuard(uplink::GuardRefusal {
                            record: v.record as u32,
                            field: v.field.to_owned(),
                            finding: v.finding.describe().to_owned(),
                        }),
                        E::BadStream => uplink::UplinkError::StreamNotGranted(stream),
                        E::Spool(SpoolError::State(e)) => {
                            uplink::UplinkError::StateRefused(e.to_string())
                        }
                        other => uplink::UplinkError::Unavailable(other.to_string()),
                    });
                }
            };
        for e in alerts {
            merge_alert(&mut self.alerts, e);
        }
        // A log of thousands of distinct codes: raised in bursts no larger
        // than this, not all at the call's end (the event bus holds
        // `EVENT_BUS_CAPACITY` for a subscriber that lags).
        if self.alerts.len() >= MAX_PENDING_ALERTS {
            let module = self.module.clone();
            for alert in take_alerts(self) {
                module.services.events.emit(alert);
            }
        }
        Ok(seq)
    }
}

/// Most notification raises and clears one call may make: each is a
/// durable database write, and a person reads a few notifications, not
/// thousands (a notifier in a loop must not turn into a write storm).
pub const MAX_NOTIFY_CHANGES_PER_CALL: u32 = 64;

impl HostState {
    /// Count one notification change; the refusal once the call's budget
    /// is spent.
    fn notify_budget(&mut self) -> Option<notify::NotifyError> {
        self.notify_changes += 1;
        if self.notify_changes == MAX_NOTIFY_CHANGES_PER_CALL + 1 {
            tracing::warn!(target: "outpost.module", module = &*self.module.name, "notification changes over the per-call budget are refused");
        }
        (self.notify_changes > MAX_NOTIFY_CHANGES_PER_CALL).then(|| {
            notify::NotifyError::Unavailable(format!(
                "more than {MAX_NOTIFY_CHANGES_PER_CALL} notification changes in one call"
            ))
        })
    }
}

/// Why a notification key cannot be kept, if it cannot: control characters
/// or an identifier the PHI guard recognises (keys are stored, listed and
/// shown as they are).
fn key_problem(key: &str) -> Option<&'static str> {
    if key.chars().any(char::is_control) {
        return Some("control character in key");
    }
    untrusted::phi_finding(key).map(|_| "identifier in key (PHI guard)")
}

fn notify_err(e: NotifyError) -> notify::NotifyError {
    match e {
        NotifyError::InvalidKey => notify::NotifyError::InvalidKey,
        NotifyError::TooManyActive(n) => notify::NotifyError::TooManyActive(n),
        // Only the person's acknowledge and dismiss can meet this.
        NotifyError::NotActive(_) => notify::NotifyError::InvalidKey,
        NotifyError::Db(e) => notify::NotifyError::Unavailable(e.to_string()),
    }
}

fn ts(seconds: i64) -> types::Timestamp {
    types::Timestamp {
        seconds,
        nanoseconds: 0,
    }
}

impl notify::Host for HostState {
    fn raise(
        &mut self,
        n: notify::Notification,
    ) -> wasmtime::Result<Result<(), notify::NotifyError>> {
        if let Some(refused) = self.notify_budget() {
            return Ok(Err(refused));
        }
        let services = &self.module.services;
        let severity = severity_name(n.severity);
        // The key is an identifier the module chose: it must be plain text
        // with no identifier in it, or the notification is refused. Title and
        // body are cut, PHI-checked (withheld with a note) and escaped.
        if let Some(problem) = key_problem(&n.key) {
            tracing::warn!(target: "outpost.module", module = &*self.module.name, problem, "notification key refused");
            return Ok(Err(notify::NotifyError::InvalidKey));
        }
        let title = untrusted::clean(&n.title, MAX_TITLE_BYTES);
        let body = untrusted::clean_multiline(&n.body, MAX_BODY_BYTES);
        let res = services
            .notifications
            .raise(&self.module.name, &n.key, severity, &title, &body);
        Ok(match res {
            Ok((stored, change)) => {
                use crate::store::notifications::RaiseChange as Change;
                // The cloud hears of a new notification or a new severity or
                // title (what its status holds); the person's clients of
                // any change; nobody of a raise that changed nothing.
                if matches!(change, Change::New | Change::Updated { status: true }) {
                    services.report_notification(
                        &stored,
                        outpost_protocol::NotificationState::Raised,
                        "module",
                    );
                }
                if change != Change::Unchanged {
                    services.events.emit(HostEvent::NotificationRaised {
                        id: stored.id,
                        module: self.module.name.to_string(),
                        key: n.key,
                        severity: host_severity(n.severity),
                        title: title.into_owned(),
                    });
                }
                Ok(())
            }
            Err(e) => Err(notify_err(e)),
        })
    }

    fn clear(&mut self, key: String) -> wasmtime::Result<Result<bool, notify::NotifyError>> {
        if let Some(refused) = self.notify_budget() {
            return Ok(Err(refused));
        }
        let services = &self.module.services;
        Ok(
            match services.notifications.clear(&self.module.name, &key) {
                Ok(ended) => {
                    let was = ended.is_some();
                    if let Some(n) = ended {
                        services.report_notification(
                            &n,
                            outpost_protocol::NotificationState::Cleared,
                            "module",
                        );
                        services.events.emit(HostEvent::NotificationCleared {
                            id: n.id,
                            module: self.module.name.to_string(),
                            key,
                            by: "module".into(),
                        });
                    }
                    Ok(was)
                }
                Err(e) => Err(notify_err(e)),
            },
        )
    }

    fn active(&mut self) -> wasmtime::Result<Vec<notify::ActiveNotification>> {
        let list = self
            .module
            .services
            .notifications
            .active(Some(&self.module.name))?;
        Ok(list
            .into_iter()
            .map(|n| notify::ActiveNotification {
                notification: notify::Notification {
                    key: n.key,
                    severity: severity_from_name(&n.severity),
                    title: n.title,
                    body: n.body,
                },
                raised_at: ts(n.raised_at),
                updated_at: ts(n.updated_at),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::types::{Instrument, Severity as Wit};
    use super::uplink::{InstrumentEvent, MaintenanceEvent, Record};
    use super::{batch_alerts, merge_alert};

    fn event(serial: &str, code: &str, severity: Wit, text: &str) -> Record {
        Record::Event(InstrumentEvent {
            instrument: Instrument {
                model: "XN-550".into(),
                serial: serial.into(),
            },
            severity,
            code: code.into(),
            text: text.into(),
            time: None,
        })
    }

    /// (serial, code, severity, text) of each alert of a call whose queued
    /// batches were `batches`.
    fn call(batches: &[&[Record]]) -> Vec<(String, String, Wit, String)> {
        let mut pending = Vec::new();
        for b in batches {
            for e in batch_alerts(b) {
                merge_alert(&mut pending, e);
            }
        }
        pending
            .into_iter()
            .map(|e| (e.instrument.serial, e.code, e.severity, e.text))
            .collect()
    }

    fn row(serial: &str, code: &str, severity: Wit, text: &str) -> (String, String, Wit, String) {
        (serial.into(), code.into(), severity, text.into())
    }

    #[test]
    fn a_call_alerts_once_per_instrument_and_code_most_severe_then_latest() {
        let maintenance = Record::Maintenance(MaintenanceEvent {
            instrument: Instrument {
                model: "XN-550".into(),
                serial: "S1".into(),
            },
            action: "probe wash".into(),
            outcome: "done".into(),
            time: None,
        });
        let first = [
            event("S1", "E-1203", Wit::Error, "sampler 1"),
            event("S1", "I-0001", Wit::Info, "an info event raises nothing"),
            event("S1", "W-0412", Wit::Warning, "reagent low"),
            maintenance,
            event("S1", "E-1203", Wit::Warning, "sampler 2"),
            event("S2", "E-1203", Wit::Error, "other analyzer"),
        ];
        let second = [
            event("S1", "E-1203", Wit::Error, "sampler 3"),
            event("S1", "E-1203", Wit::Warning, "sampler 4"),
            event("S2", "F-0009", Wit::Critical, "pump stalled"),
            event("S1", "W-0412", Wit::Warning, "reagent low again"),
        ];
        let want = [
            row("S1", "E-1203", Wit::Error, "sampler 3"),
            row("S1", "W-0412", Wit::Warning, "reagent low again"),
            row("S2", "E-1203", Wit::Error, "other analyzer"),
            row("S2", "F-0009", Wit::Critical, "pump stalled"),
        ];
        assert_eq!(call(&[&first, &second]), want);
        // The same records in one batch, or split anywhere: the same alerts.
        let all: Vec<Record> = first.iter().chain(&second).cloned().collect();
        for cut in 0..=all.len() {
            assert_eq!(call(&[&all[..cut], &all[cut..]]), want, "cut at {cut}");
        }
        // A more severe event of a later batch takes the place of a lesser
        // one; a lesser one does not.
        assert_eq!(
            call(&[
                &[event("S1", "E-1", Wit::Warning, "a")],
                &[event("S1", "E-1", Wit::Critical, "b")],
                &[event("S1", "E-1", Wit::Error, "c")],
            ]),
            [row("S1", "E-1", Wit::Critical, "b")]
        );
    }
}
