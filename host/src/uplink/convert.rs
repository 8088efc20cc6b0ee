//! WIT uplink records (as lifted from a module) → the wire records of
//! `outpost-protocol`. A field-for-field move: nothing added, nothing dropped.

use crate::runtime::bindings::{types, uplink};
use outpost_protocol as p;

fn instrument(i: types::Instrument) -> p::Instrument {
    p::Instrument {
        model: i.model,
        serial: i.serial,
    }
}

fn ts(t: types::Timestamp) -> p::Timestamp {
    p::Timestamp {
        seconds: t.seconds,
        nanoseconds: t.nanoseconds,
    }
}

fn severity(s: types::Severity) -> p::Severity {
    match s {
        types::Severity::Debug => p::Severity::Debug,
        types::Severity::Info => p::Severity::Info,
        types::Severity::Notice => p::Severity::Notice,
        types::Severity::Warning => p::Severity::Warning,
        types::Severity::Error => p::Severity::Error,
        types::Severity::Critical => p::Severity::Critical,
    }
}

fn install_state(s: uplink::InstallState) -> p::InstallState {
    match s {
        uplink::InstallState::Installed => p::InstallState::Installed,
        uplink::InstallState::Installing => p::InstallState::Installing,
        uplink::InstallState::Failed => p::InstallState::Failed,
        uplink::InstallState::Absent => p::InstallState::Absent,
    }
}

/// One record, moved.
pub fn record(r: uplink::Record) -> p::Record {
    match r {
        uplink::Record::Qc(q) => p::Record::Qc(p::QcResult {
            instrument: instrument(q.instrument),
            analyte: q.analyte,
            value: q.value,
            unit: q.unit,
            reference_range: q.reference_range,
            flags: q.flags,
            control_lot: q.control_lot,
            control_level: q.control_level,
            run_time: q.run_time.map(ts),
        }),
        uplink::Record::Maintenance(m) => p::Record::Maintenance(p::MaintenanceEvent {
            instrument: instrument(m.instrument),
            action: m.action,
            outcome: m.outcome,
            time: m.time.map(ts),
        }),
        uplink::Record::Event(e) => p::Record::Event(p::InstrumentEvent {
            instrument: instrument(e.instrument),
            severity: severity(e.severity),
            code: e.code,
            text: e.text,
            time: e.time.map(ts),
        }),
        uplink::Record::Software(s) => p::Record::Software(p::SoftwareStatus {
            instrument: instrument(s.instrument),
            component: s.component,
            version: s.version,
            state: install_state(s.state),
        }),
        uplink::Record::Heartbeat(h) => p::Record::Heartbeat(p::Heartbeat {
            instrument: instrument(h.instrument),
            time: ts(h.time),
        }),
    }
}
