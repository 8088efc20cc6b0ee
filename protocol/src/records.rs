//! Typed device records, mirroring WIT `outpost:agent/types` and
//! `outpost:agent/uplink` field for field.

use serde::{Deserialize, Serialize};

/// An instrument attached to the controller PC (WIT `instrument`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Instrument {
    /// Instrument model as the vendor names it, e.g. "XN-550".
    pub model: String,
    /// Instrument serial number.
    pub serial: String,
}

/// A point in time since the Unix epoch, UTC (WIT `timestamp`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub seconds: i64,
    /// Nanoseconds within the second (0..1_000_000_000).
    pub nanoseconds: u32,
}

/// How serious something is (WIT `severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Routine detail, not shown to the user.
    Debug,
    /// Normal operation worth recording.
    Info,
    /// Something the user may want to know.
    Notice,
    /// Degraded operation: attention needed soon.
    Warning,
    /// A failure of a function of the instrument or the PC.
    Error,
    /// The instrument or the agent cannot work until someone acts.
    Critical,
}

/// A quality-control or calibration result, never a patient sample (WIT `qc-result`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QcResult {
    /// The instrument that ran the control.
    pub instrument: Instrument,
    /// Analyte or test code, e.g. "WBC".
    pub analyte: String,
    /// Measured value as reported (text).
    pub value: String,
    /// Unit as reported, e.g. "10*3/uL".
    pub unit: String,
    /// Reference or acceptance range as reported (may be empty).
    pub reference_range: String,
    /// Abnormal/QC flags as reported (e.g. "H", "L", "A").
    pub flags: Vec<String>,
    /// Control material lot number (may be empty).
    pub control_lot: String,
    /// Control level (may be empty).
    pub control_level: String,
    /// When the instrument ran the control.
    pub run_time: Option<Timestamp>,
}

/// A maintenance action (WIT `maintenance-event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MaintenanceEvent {
    /// The instrument maintained.
    pub instrument: Instrument,
    /// What was done, e.g. "probe cleaning".
    pub action: String,
    /// Outcome as reported ("ok", "failed", ...).
    pub outcome: String,
    /// When it happened.
    pub time: Option<Timestamp>,
}

/// An event the instrument or its software reported (WIT `instrument-event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InstrumentEvent {
    /// The instrument concerned.
    pub instrument: Instrument,
    /// Severity as mapped from the instrument's own level.
    pub severity: Severity,
    /// The instrument's error or event code, e.g. "E-1203".
    pub code: String,
    /// Event text after PHI redaction.
    pub text: String,
    /// When it happened.
    pub time: Option<Timestamp>,
}

/// Install state of one software component (WIT `install-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallState {
    /// Installed and current.
    Installed,
    /// An install or update is in progress.
    Installing,
    /// The last install or update failed.
    Failed,
    /// Not installed.
    Absent,
}

/// Version and install state of one software component (WIT `software-status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SoftwareStatus {
    /// The instrument whose software this is.
    pub instrument: Instrument,
    /// Component name, e.g. "analyzer-firmware".
    pub component: String,
    /// Version string as reported.
    pub version: String,
    /// Install state.
    pub state: InstallState,
}

/// Online status ping (WIT `heartbeat`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Heartbeat {
    /// The instrument whose controller is alive.
    pub instrument: Instrument,
    /// When the heartbeat was produced.
    pub time: Timestamp,
}

/// What happened to a notification (host status, not a module's record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotificationState {
    /// Raised, or raised again with new content.
    Raised,
    /// The person at the PC acknowledged it.
    Acknowledged,
    /// Its module cleared it (the cause went away).
    Cleared,
    /// The person at the PC dismissed it.
    Dismissed,
}

/// A change of the notifications shown at the PC, reported by the host as
/// device status: which module's notification, its key and severity, its
/// title (checked by the PHI guard before it was kept), what happened and
/// through which client. Never a notification's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotificationStatus {
    /// The instrument of this PC (the first configured one).
    pub instrument: Instrument,
    /// The module that raised it.
    pub module: String,
    /// The module's key for it.
    pub key: String,
    /// Its severity.
    pub severity: Severity,
    /// What happened.
    pub state: NotificationState,
    /// Its one-line title.
    pub title: String,
    /// `module`, or the client through which the person acted.
    pub by: String,
    /// When.
    pub time: Timestamp,
}

/// One entry of the PC's remote-support audit chain, uploaded by the host
/// on its own stream `support-audit` (never from a module), in chain order.
/// `hash` and `prev` are the local chain's (SHA-256, hex). A file transfer
/// carries [`SupportAuditFile`] instead of its detail (`detail` is `{}`):
/// the file's name stays on the PC, only its keyed hash is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SupportAuditEntry {
    /// Position in the chain (1, 2, 3 ...).
    pub seq: i64,
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// What happened (`support-request`, `auth-failed`, `approval`,
    /// `file-transfer`, `session-ended` ...).
    pub entry_kind: String,
    /// The support session ("" if none).
    pub session: String,
    /// Details as JSON text (ids, reasons, permissions; never secrets).
    pub detail: String,
    /// The previous entry's hash.
    pub prev: String,
    /// This entry's hash (over the local entry, whose detail a file
    /// transfer's upload leaves out).
    pub hash: String,
    /// A file transfer's facts without its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<SupportAuditFile>,
}

/// A support file transfer as uploaded: no name, no free text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SupportAuditFile {
    /// HMAC-SHA256 of the file's name under a key only the PC holds (hex).
    pub name_hmac: String,
    /// Bytes moved.
    pub size: u64,
    /// SHA-256 of the content (hex; "" if it did not complete).
    pub sha256: String,
    /// `to-pc` or `from-pc`.
    pub direction: String,
    /// Whether it completed.
    pub done: bool,
}

/// One record of a batch (WIT `record`, plus the host's own notification
/// status and support audit). JSON: the arm's fields plus `"kind": "qc" |
/// "maintenance" | "event" | "software" | "heartbeat" | "notification" |
/// "support-audit"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    /// A QC result.
    Qc(QcResult),
    /// A maintenance event.
    Maintenance(MaintenanceEvent),
    /// An instrument event.
    Event(InstrumentEvent),
    /// Software status.
    Software(SoftwareStatus),
    /// Heartbeat.
    Heartbeat(Heartbeat),
    /// A notification change (from the host, never from a module).
    Notification(NotificationStatus),
    /// An entry of the support audit chain (from the host, never from a
    /// module).
    SupportAudit(SupportAuditEntry),
}

impl Record {
    /// The record's `kind` as it appears in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Qc(_) => "qc",
            Record::Maintenance(_) => "maintenance",
            Record::Event(_) => "event",
            Record::Software(_) => "software",
            Record::Heartbeat(_) => "heartbeat",
            Record::Notification(_) => "notification",
            Record::SupportAudit(_) => "support-audit",
        }
    }
}

/// The plaintext of a batch envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BatchBody {
    /// When the device created the batch, unix seconds.
    pub created_at: i64,
    /// The records, in the order the module queued them.
    pub records: Vec<Record>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst() -> Instrument {
        Instrument {
            model: "XN-550".into(),
            serial: "12345".into(),
        }
    }

    #[test]
    fn record_json_shape() {
        let r = Record::Qc(QcResult {
            instrument: inst(),
            analyte: "WBC".into(),
            value: "7.1".into(),
            unit: "10*3/uL".into(),
            reference_range: "6.5-7.5".into(),
            flags: vec!["H".into()],
            control_lot: "L1".into(),
            control_level: "1".into(),
            run_time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanoseconds: 5,
            }),
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["kind"], "qc");
        assert_eq!(v["reference-range"], "6.5-7.5");
        assert_eq!(v["control-lot"], "L1");
        assert_eq!(v["run-time"]["seconds"], 1_700_000_000);
        let back: Record = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);

        let e = Record::Event(InstrumentEvent {
            instrument: inst(),
            severity: Severity::Warning,
            code: "E-1".into(),
            text: "t".into(),
            time: None,
        });
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "event");
        assert_eq!(v["severity"], "warning");
        let s = Record::Software(SoftwareStatus {
            instrument: inst(),
            component: "fw".into(),
            version: "1".into(),
            state: InstallState::Installing,
        });
        assert_eq!(serde_json::to_value(&s).unwrap()["state"], "installing");
    }

    #[test]
    fn unknown_fields_refused() {
        let ok = r#"{"kind":"heartbeat","instrument":{"model":"m","serial":"s"},"time":{"seconds":1,"nanoseconds":0}}"#;
        assert!(serde_json::from_str::<Record>(ok).is_ok());
        let extra = r#"{"kind":"heartbeat","instrument":{"model":"m","serial":"s"},"time":{"seconds":1,"nanoseconds":0},"patient":"x"}"#;
        assert!(serde_json::from_str::<Record>(extra).is_err());
        let nested = r#"{"kind":"heartbeat","instrument":{"model":"m","serial":"s","name":"x"},"time":{"seconds":1,"nanoseconds":0}}"#;
        assert!(serde_json::from_str::<Record>(nested).is_err());
        let bad_kind = r#"{"kind":"patient","instrument":{"model":"m","serial":"s"},"time":{"seconds":1,"nanoseconds":0}}"#;
        assert!(serde_json::from_str::<Record>(bad_kind).is_err());
        let body = r#"{"created-at":1,"records":[],"extra":1}"#;
        assert!(serde_json::from_str::<BatchBody>(body).is_err());
    }
}
