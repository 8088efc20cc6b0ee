//! CSV and JSON QC exports with a column allowlist.
//!
//! Only the columns in [`ALLOWED_COLUMNS`] are read; every other column (patient
//! name, sample id, comment, operator...) is dropped unread and counted once per
//! file in `ParseStats::comments_dropped`. Header names are compared after
//! lower-casing and removing spaces, `_`, `-` and `.`.
//!
//! These readers are for files the operator declared as QC exports. When a row
//! carries a sample-type column (`sample type`, `type`, `specimen role`), the row
//! is kept only when it says `QC`, `Q`, `C`, `CONTROL` or `CAL`; other rows are
//! patient results and are dropped (counted). Every value is redacted.
//!
//! CSV: RFC 4180 quoting; the delimiter (`,`, `;` or tab) is the one that occurs
//! most often in the header line. JSON: an array of objects, or an object with a
//! `results`, `qc` or `data` array; string, number and boolean values are read.

use crate::records::{Instrument, QcResult, Record, Timestamp};
use crate::redact::{device_id, redact};
use crate::{ParseOutput, ParseStats};

/// Which record field a column feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// Instrument model.
    Model,
    /// Instrument serial.
    Serial,
    /// Analyte or test code.
    Analyte,
    /// Measured value.
    Value,
    /// Unit.
    Unit,
    /// Reference or acceptance range.
    Range,
    /// Flags (split on `;`, `,`, `~` or space).
    Flags,
    /// Control lot.
    Lot,
    /// Control level.
    Level,
    /// Run time (ISO 8601 `YYYY-MM-DD[T ]hh:mm[:ss][Z]` or compact).
    RunTime,
    /// Sample type (QC or patient); decides whether the row is kept.
    SampleType,
}

/// The allowlist: normalised header name → field. Anything else is dropped.
pub const ALLOWED_COLUMNS: &[(&str, Column)] = &[
    ("model", Column::Model),
    ("instrument", Column::Model),
    ("instrumentmodel", Column::Model),
    ("serial", Column::Serial),
    ("serialnumber", Column::Serial),
    ("serialno", Column::Serial),
    ("sn", Column::Serial),
    ("instrumentserial", Column::Serial),
    ("analyte", Column::Analyte),
    ("test", Column::Analyte),
    ("testcode", Column::Analyte),
    ("parameter", Column::Analyte),
    ("assay", Column::Analyte),
    ("value", Column::Value),
    ("result", Column::Value),
    ("measuredvalue", Column::Value),
    ("unit", Column::Unit),
    ("units", Column::Unit),
    ("range", Column::Range),
    ("referencerange", Column::Range),
    ("refrange", Column::Range),
    ("targetrange", Column::Range),
    ("acceptancerange", Column::Range),
    ("flag", Column::Flags),
    ("flags", Column::Flags),
    ("lot", Column::Lot),
    ("controllot", Column::Lot),
    ("lotnumber", Column::Lot),
    ("qclot", Column::Lot),
    ("level", Column::Level),
    ("controllevel", Column::Level),
    ("qclevel", Column::Level),
    ("runtime", Column::RunTime),
    ("time", Column::RunTime),
    ("datetime", Column::RunTime),
    ("timestamp", Column::RunTime),
    ("sampletype", Column::SampleType),
    ("type", Column::SampleType),
    ("specimenrole", Column::SampleType),
];

fn column(header: &str) -> Option<Column> {
    let key: String = crate::redact::normalize(header)
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    ALLOWED_COLUMNS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, c)| *c)
}

/// Parses `YYYY-MM-DD[T ]hh:mm[:ss[.fff]][Z]` or the compact instrument form.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    let t = text.trim().trim_end_matches('Z');
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    let (main, frac) = match t.rsplit_once('.') {
        Some((m, f)) if t.contains(':') && f.bytes().all(|b| b.is_ascii_digit()) => (m, Some(f)),
        _ => (t, None),
    };
    let main_digits: String = main.chars().filter(char::is_ascii_digit).collect();
    let mut compact = if t.contains(['-', ':', 'T', ' ', '/']) {
        main_digits
    } else {
        digits
    };
    if compact.len() == 12 {
        compact.push_str("00");
    }
    match frac {
        Some(f) => Timestamp::parse_compact(&format!("{compact}.{f}")),
        None => Timestamp::parse_compact(&compact),
    }
}

fn is_qc_type(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_uppercase().as_str(),
        "QC" | "Q" | "C" | "CONTROL" | "CAL" | "CALIBRATOR"
    )
}

fn row_to_record(
    cells: &[(Column, String)],
    fallback: &Instrument,
    stats: &mut ParseStats,
) -> Option<Record> {
    let get = |col: Column| {
        cells
            .iter()
            .find(|(c, _)| *c == col)
            .map(|(_, v)| v.trim())
            .unwrap_or("")
    };
    let stype = cells.iter().find(|(c, _)| *c == Column::SampleType);
    if stype.is_some_and(|(_, v)| !is_qc_type(v)) {
        stats.patient_results_dropped += 1;
        return None;
    }
    let analyte = get(Column::Analyte);
    if analyte.is_empty() {
        stats.malformed_records += 1;
        return None;
    }
    let or = |v: &str, d: &str| {
        if v.is_empty() {
            d.to_string()
        } else {
            redact(v)
        }
    };
    Some(Record::Qc(QcResult {
        instrument: Instrument {
            model: or(get(Column::Model), &fallback.model),
            serial: match get(Column::Serial) {
                "" => fallback.serial.clone(),
                s => device_id(s),
            },
        },
        analyte: redact(analyte),
        value: redact(get(Column::Value)),
        unit: redact(get(Column::Unit)),
        reference_range: redact(get(Column::Range)),
        flags: get(Column::Flags)
            .split([';', ',', '~', ' '])
            .filter(|f| !f.is_empty())
            .map(redact)
            .collect(),
        control_lot: device_id(get(Column::Lot)),
        control_level: redact(get(Column::Level)),
        run_time: parse_time(get(Column::RunTime)),
    }))
}

/// Splits CSV text into rows of fields (RFC 4180 quoting).
pub fn csv_rows(text: &str, delimiter: char) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
        } else if c == '"' && field.is_empty() {
            quoted = true;
        } else if c == delimiter {
            row.push(std::mem::take(&mut field));
        } else if c == '\n' || c == '\r' {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            row.push(std::mem::take(&mut field));
            if row.iter().any(|f| !f.is_empty()) {
                rows.push(std::mem::take(&mut row));
            } else {
                row.clear();
            }
        } else {
            field.push(c);
        }
    }
    row.push(field);
    if row.iter().any(|f| !f.is_empty()) {
        rows.push(row);
    }
    rows
}

/// Parses a CSV QC export (see module docs).
pub fn parse_csv(input: &[u8], fallback: &Instrument) -> ParseOutput {
    let text = crate::logs::decode(input);
    let header_line = text.lines().next().unwrap_or("");
    let delimiter = [',', ';', '\t']
        .into_iter()
        .max_by_key(|d| header_line.matches(*d).count())
        .unwrap_or(',');
    let rows = csv_rows(&text, delimiter);
    let mut stats = ParseStats::default();
    let mut records = Vec::new();
    let Some((header, body)) = rows.split_first() else {
        return ParseOutput { records, stats };
    };
    let cols: Vec<Option<Column>> = header.iter().map(|h| column(h)).collect();
    stats.comments_dropped += cols.iter().filter(|c| c.is_none()).count();
    for row in body {
        stats.records += 1;
        let cells: Vec<(Column, String)> = cols
            .iter()
            .zip(row)
            .filter_map(|(c, v)| c.map(|c| (c, v.clone())))
            .collect();
        records.extend(row_to_record(&cells, fallback, &mut stats));
    }
    ParseOutput { records, stats }
}

/// Parses a JSON QC export (see module docs); invalid JSON is counted malformed.
pub fn parse_json(input: &[u8], fallback: &Instrument) -> ParseOutput {
    let mut stats = ParseStats::default();
    let mut records = Vec::new();
    let text = crate::logs::decode(input);
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => {
            stats.malformed_records += 1;
            return ParseOutput { records, stats };
        }
    };
    let rows = match &value {
        serde_json::Value::Array(a) => a.as_slice(),
        serde_json::Value::Object(o) => ["results", "qc", "data"]
            .iter()
            .find_map(|k| o.get(*k).and_then(|v| v.as_array()))
            .map_or(&[][..], |a| a.as_slice()),
        _ => &[],
    };
    let mut unknown = std::collections::BTreeSet::new();
    for row in rows {
        stats.records += 1;
        let Some(obj) = row.as_object() else {
            stats.malformed_records += 1;
            continue;
        };
        let mut cells = Vec::new();
        for (k, v) in obj {
            let Some(col) = column(k) else {
                unknown.insert(k.clone());
                continue;
            };
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Array(a) if col == Column::Flags => a
                    .iter()
                    .filter_map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(";"),
                _ => continue,
            };
            cells.push((col, text));
        }
        records.extend(row_to_record(&cells, fallback, &mut stats));
    }
    stats.comments_dropped += unknown.len();
    ParseOutput { records, stats }
}
