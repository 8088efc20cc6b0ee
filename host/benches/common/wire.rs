//! Shared by the host benchmarks: collector-core records → wire records (the
//! collector module's conversion followed by the host's, field for field).

use outpost_collector_core as core;
use outpost_protocol as p;

fn wire_instrument(i: core::Instrument) -> p::Instrument {
    p::Instrument {
        model: i.model,
        serial: i.serial,
    }
}

fn wire_time(t: core::Timestamp) -> p::Timestamp {
    p::Timestamp {
        seconds: t.seconds,
        nanoseconds: t.nanoseconds,
    }
}

pub fn to_wire(r: core::Record) -> p::Record {
    match r {
        core::Record::Qc(q) => p::Record::Qc(p::QcResult {
            instrument: wire_instrument(q.instrument),
            analyte: q.analyte,
            value: q.value,
            unit: q.unit,
            reference_range: q.reference_range,
            flags: q.flags,
            control_lot: q.control_lot,
            control_level: q.control_level,
            run_time: q.run_time.map(wire_time),
        }),
        core::Record::Maintenance(m) => p::Record::Maintenance(p::MaintenanceEvent {
            instrument: wire_instrument(m.instrument),
            action: m.action,
            outcome: m.outcome,
            time: m.time.map(wire_time),
        }),
        core::Record::Event(e) => p::Record::Event(p::InstrumentEvent {
            instrument: wire_instrument(e.instrument),
            severity: match e.severity {
                core::Severity::Debug => p::Severity::Debug,
                core::Severity::Info => p::Severity::Info,
                core::Severity::Notice => p::Severity::Notice,
                core::Severity::Warning => p::Severity::Warning,
                core::Severity::Error => p::Severity::Error,
                core::Severity::Critical => p::Severity::Critical,
            },
            code: e.code,
            text: e.text,
            time: e.time.map(wire_time),
        }),
        core::Record::Software(s) => p::Record::Software(p::SoftwareStatus {
            instrument: wire_instrument(s.instrument),
            component: s.component,
            version: s.version,
            state: match s.state {
                core::InstallState::Installed => p::InstallState::Installed,
                core::InstallState::Installing => p::InstallState::Installing,
                core::InstallState::Failed => p::InstallState::Failed,
                core::InstallState::Absent => p::InstallState::Absent,
            },
        }),
        core::Record::Heartbeat(h) => p::Record::Heartbeat(p::Heartbeat {
            instrument: wire_instrument(h.instrument),
            time: wire_time(h.time),
        }),
    }
}

/// The stream the collector module queues a record on.
pub fn stream_of(r: &p::Record) -> &'static str {
    match r {
        p::Record::Qc(_) => "qc",
        p::Record::Maintenance(_) => "maintenance",
        p::Record::Event(_) => "events",
        p::Record::Software(_) => "software",
        p::Record::Heartbeat(_) => "heartbeat",
        p::Record::Notification(_) => "notifications",
        p::Record::SupportAudit(_) => "support-audit",
    }
}
