//! Plain Rust mirrors of the WIT uplink records (`wit/uplink.wit`, `wit/types.wit`).
//!
//! Each type has the same fields as its WIT counterpart so the collector module
//! can convert one into the other field by field. None has a field for patient data.

use serde::Serialize;

/// A point in time: seconds and nanoseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub seconds: i64,
    /// Nanoseconds within the second (0..1_000_000_000).
    pub nanoseconds: u32,
}

impl Timestamp {
    /// Builds a timestamp from a UTC calendar date and time; `None` when a
    /// field is out of range.
    pub fn from_civil(
        year: i64,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        nanoseconds: u32,
    ) -> Option<Self> {
        if !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
            || nanoseconds >= 1_000_000_000
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let seconds =
            days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
        Some(Self {
            seconds,
            nanoseconds,
        })
    }

    /// Parses the compact instrument form `YYYYMMDD[HH[MM[SS[.fff]]]]` used by
    /// ASTM E1394 and HL7 v2 (DTM); a trailing `+hhmm`/`-hhmm` offset is applied.
    /// The time is taken as UTC when no offset is given.
    pub fn parse_compact(text: &str) -> Option<Self> {
        let text = text.trim();
        let (main, offset_secs) = match text.find(['+', '-']) {
            Some(i) => {
                let off = &text[i + 1..];
                if off.len() != 4 || !off.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let h: i64 = off[..2].parse().ok()?;
                let m: i64 = off[2..].parse().ok()?;
                let sign = if text.as_bytes()[i] == b'-' { -1 } else { 1 };
                (&text[..i], sign * (h * 3600 + m * 60))
            }
            None => (text, 0),
        };
        let (digits, frac) = match main.split_once('.') {
            Some((d, f)) => (d, Some(f)),
            None => (main, None),
        };
        if digits.len() < 8 || digits.len() > 14 || digits.len() % 2 != 0 {
            return None;
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> u32 {
            digits.get(r).and_then(|s| s.parse().ok()).unwrap_or(0)
        };
        let nanos = match frac {
            Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
                let v: u32 = f.parse().ok()?;
                v * 10u32.pow(9 - f.len() as u32)
            }
            Some(_) => return None,
            None => 0,
        };
        let ts = Self::from_civil(
            i64::from(num(0..4)),
            num(4..6),
            num(6..8),
            num(8..10),
            num(10..12),
            num(12..14),
            nanos,
        )?;
        Some(Self {
            seconds: ts.seconds - offset_secs,
            nanoseconds: ts.nanoseconds,
        })
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub(crate) fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// How serious something is (mirrors WIT `severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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

/// An instrument: model and serial identify a machine, never a person.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Instrument {
    /// Instrument model as the vendor names it, e.g. "XN-550".
    pub model: String,
    /// Instrument serial number.
    pub serial: String,
}

/// A quality-control or calibration result (never a patient sample).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
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
    /// Abnormal/QC flags as reported.
    pub flags: Vec<String>,
    /// Control material lot number (may be empty).
    pub control_lot: String,
    /// Control level (may be empty).
    pub control_level: String,
    /// When the instrument ran the control.
    pub run_time: Option<Timestamp>,
}

/// A maintenance action recorded by the instrument or the operator software.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaintenanceEvent {
    /// The instrument maintained.
    pub instrument: Instrument,
    /// What was done (scrubbed).
    pub action: String,
    /// Outcome as reported.
    pub outcome: String,
    /// When it happened.
    pub time: Option<Timestamp>,
}

/// An event the instrument or its software reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstrumentEvent {
    /// The instrument concerned.
    pub instrument: Instrument,
    /// Severity mapped from the instrument's own level.
    pub severity: Severity,
    /// The instrument's error or event code, e.g. "E-1203" (may be empty).
    pub code: String,
    /// Event text after PHI redaction.
    pub text: String,
    /// When it happened.
    pub time: Option<Timestamp>,
}

/// Install state of one software component (mirrors WIT `install-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// Version and install state of one software component on the PC.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SoftwareStatus {
    /// The instrument whose software this is.
    pub instrument: Instrument,
    /// Component name.
    pub component: String,
    /// Version string as reported.
    pub version: String,
    /// Install state.
    pub state: InstallState,
}

/// Online status ping.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heartbeat {
    /// The instrument whose controller is alive.
    pub instrument: Instrument,
    /// When the heartbeat was produced.
    pub time: Timestamp,
}

/// One uplink record (mirrors WIT `record`); every arm is device data.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
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
}
