//! collector-core's plain records → the WIT records the uplink takes.

use outpost_collector_core as core;
use outpost_sdk::uplink::{
    Heartbeat, InstallState, InstrumentEvent, MaintenanceEvent, QcResult, Record, SoftwareStatus,
};
use outpost_sdk::{Instrument, Severity, Timestamp};

fn instrument(i: core::Instrument) -> Instrument {
    Instrument::new(i.model, i.serial)
}

fn time(t: core::Timestamp) -> Timestamp {
    Timestamp {
        seconds: t.seconds,
        nanoseconds: t.nanoseconds,
    }
}

fn severity(s: core::Severity) -> Severity {
    match s {
        core::Severity::Debug => Severity::Debug,
        core::Severity::Info => Severity::Info,
        core::Severity::Notice => Severity::Notice,
        core::Severity::Warning => Severity::Warning,
        core::Severity::Error => Severity::Error,
        core::Severity::Critical => Severity::Critical,
    }
}

/// The uplink stream a record travels on.
pub fn stream(r: &Record) -> &'static str {
    match r {
        Record::Qc(_) => crate::QC_STREAM,
        Record::Maintenance(_) => crate::MAINTENANCE_STREAM,
        Record::Event(_) => crate::EVENTS_STREAM,
        Record::Software(_) => crate::SOFTWARE_STREAM,
        Record::Heartbeat(_) => crate::HEARTBEAT_STREAM,
    }
}

/// Convert one record.
pub fn record(r: core::Record) -> Record {
    match r {
        core::Record::Qc(q) => Record::Qc(QcResult {
            instrument: instrument(q.instrument),
            analyte: q.analyte,
            value: q.value,
            unit: q.unit,
            reference_range: q.reference_range,
            flags: q.flags,
            control_lot: q.control_lot,
            control_level: q.control_level,
            run_time: q.run_time.map(time),
        }),
        core::Record::Maintenance(m) => Record::Maintenance(MaintenanceEvent {
            instrument: instrument(m.instrument),
            action: m.action,
            outcome: m.outcome,
            time: m.time.map(time),
        }),
        core::Record::Event(e) => Record::Event(InstrumentEvent {
            instrument: instrument(e.instrument),
            severity: severity(e.severity),
            code: e.code,
            text: e.text,
            time: e.time.map(time),
        }),
        core::Record::Software(s) => Record::Software(SoftwareStatus {
            instrument: instrument(s.instrument),
            component: s.component,
            version: s.version,
            state: match s.state {
                core::InstallState::Installed => InstallState::Installed,
                core::InstallState::Installing => InstallState::Installing,
                core::InstallState::Failed => InstallState::Failed,
                core::InstallState::Absent => InstallState::Absent,
            },
        }),
        core::Record::Heartbeat(h) => Record::Heartbeat(Heartbeat {
            instrument: instrument(h.instrument),
            time: time(h.time),
        }),
    }
}
