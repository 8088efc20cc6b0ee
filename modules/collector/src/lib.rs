//! outpost collector module: heartbeats for each configured instrument and one
//! `instrument-event` per new line of the `*.log` files in the granted
//! directories.
//!
//! The parsing here is deliberately trivial (keyword severity, `E-nnnn` codes);
//! it is a placeholder for the instrument-specific parsers.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use outpost_sdk::uplink::{self, Heartbeat, InstrumentEvent, Record};
use outpost_sdk::{CollectReport, Collector, Instrument, Severity, Timestamp, Trigger};
use outpost_sdk::{fs, host, log, state};

/// Uplink stream for heartbeats.
pub const HEARTBEAT_STREAM: &str = "heartbeat";
/// Uplink stream for instrument events.
pub const EVENTS_STREAM: &str = "events";
/// Most event records queued by one call.
pub const MAX_RECORDS_PER_CALL: usize = 1000;
/// Records per `uplink.enqueue` batch.
pub const RECORDS_PER_BATCH: usize = 100;
/// Most new bytes read from one file in one call.
pub const MAX_READ_BYTES_PER_FILE: u64 = 4 * 1024 * 1024;
/// Deepest directory level walked below a granted directory.
pub const MAX_DIR_DEPTH: usize = 8;
/// Longest event text kept, in bytes.
pub const MAX_EVENT_TEXT_BYTES: usize = 512;
/// State key prefix of the per-file byte cursors.
pub const CURSOR_PREFIX: &str = "cursor:";

/// The collector module.
pub struct LogCollector;

impl Collector for LogCollector {
    fn collect(_trigger: Trigger) -> Result<CollectReport, String> {
        let mut report = CollectReport::empty();
        let instruments = host::instruments();
        let now = Timestamp::now();

        let heartbeats: Vec<Record> = instruments
            .iter()
            .map(|instrument| {
                Record::Heartbeat(Heartbeat {
                    instrument: instrument.clone(),
                    time: now,
                })
            })
            .collect();
        if !heartbeats.is_empty() {
            uplink::enqueue(HEARTBEAT_STREAM, &heartbeats)
                .map_err(|e| format!("while queueing heartbeats: {e}"))?;
            report.records_queued += count(heartbeats.len());
        }

        let instrument = instruments
            .first()
            .cloned()
            .unwrap_or_else(|| Instrument::new("", ""));
        let mut files = Vec::new();
        for dir in fs::directories() {
            walk(Path::new(&dir), 0, &mut files, &mut report);
        }

        let mut events = Vec::new();
        let mut cursors = Vec::new();
        for path in &files {
            if events.len() >= MAX_RECORDS_PER_CALL {
                break;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("log") {
                continue;
            }
            match read_new_lines(path, &instrument, &mut events, &mut report) {
                Ok(Some(cursor)) => cursors.push(cursor),
                Ok(None) => {}
                Err(e) => {
                    report.malformed += 1;
                    log::warn(&format!("cannot read {}: {e}", path.display()));
                }
            }
        }

        for batch in events.chunks(RECORDS_PER_BATCH) {
            uplink::enqueue(EVENTS_STREAM, batch)
                .map_err(|e| format!("while queueing events: {e}"))?;
            report.records_queued += count(batch.len());
        }
        // Cursors move only after their records are durably queued.
        for (key, offset) in cursors {
            state::set_string(&key, &offset.to_string())
                .map_err(|e| format!("while saving a cursor: {e}"))?;
        }
        Ok(report)
    }
}

outpost_sdk::export_collector!(LogCollector);

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Collect regular files below `dir` (sorted, at most [`MAX_DIR_DEPTH`] deep).
fn walk(dir: &Path, depth: usize, files: &mut Vec<std::path::PathBuf>, report: &mut CollectReport) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        report.malformed += 1;
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() && depth < MAX_DIR_DEPTH {
            walk(&path, depth + 1, files, report);
        } else if kind.is_file() {
            report.files_scanned += 1;
            files.push(path);
        }
    }
}

/// Read the lines of `path` after its cursor into `events`, up to the per-call
/// cap. Returns the cursor's state key and new offset when it moved.
fn read_new_lines(
    path: &Path,
    instrument: &Instrument,
    events: &mut Vec<Record>,
    report: &mut CollectReport,
) -> std::io::Result<Option<(String, u64)>> {
    let key = format!("{CURSOR_PREFIX}{}", path.display());
    if key.len() > 256 {
        report.malformed += 1;
        return Ok(None);
    }
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut cursor = state::get_string(&key)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    if cursor > len {
        // The file was truncated or rotated: start again.
        cursor = 0;
    }
    if cursor == len {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(cursor))?;
    let mut buf = Vec::new();
    file.take(MAX_READ_BYTES_PER_FILE).read_to_end(&mut buf)?;

    let room = MAX_RECORDS_PER_CALL.saturating_sub(events.len());
    let (lines, consumed) = complete_lines(&buf, room);
    for line in lines {
        match std::str::from_utf8(line) {
            Ok(text) => events.push(Record::Event(event_for(instrument, text))),
            Err(_) => report.malformed += 1,
        }
    }
    Ok((consumed > 0).then(|| (key, cursor + consumed as u64)))
}

/// Up to `max` complete (newline-terminated) lines of `buf`, without their line
/// endings and skipping blank ones, and the number of bytes they span.
pub fn complete_lines(buf: &[u8], max: usize) -> (Vec<&[u8]>, usize) {
    let mut lines = Vec::new();
    let mut consumed = 0;
    while lines.len() < max {
        let Some(nl) = buf[consumed..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let line = &buf[consumed..consumed + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        consumed += nl + 1;
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push(line);
        }
    }
    (lines, consumed)
}

/// Severity of a log line by keyword: `ERROR` or an `E-` code is an error,
/// `WARN` a warning, anything else info.
pub fn severity_of(line: &str) -> Severity {
    if line.contains("ERROR") || line.contains("E-") {
        Severity::Error
    } else if line.contains("WARN") {
        Severity::Warning
    } else {
        Severity::Info
    }
}

/// The first `E-<digits>` token of the line, if any.
pub fn event_code(line: &str) -> Option<&str> {
    line.match_indices("E-").find_map(|(start, _)| {
        let digits = line[start + 2..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        (digits > 0).then(|| &line[start..start + 2 + digits])
    })
}

/// The event record for one log line.
pub fn event_for(instrument: &Instrument, line: &str) -> InstrumentEvent {
    let line = line.trim();
    let mut end = line.len().min(MAX_EVENT_TEXT_BYTES);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    InstrumentEvent {
        instrument: instrument.clone(),
        severity: severity_of(line),
        code: event_code(line).unwrap_or_default().to_string(),
        text: line[..end].to_string(),
        time: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_by_keyword() {
        for (line, expect) in [
            ("12:00 ERROR pump stalled", Severity::Error),
            ("12:00 code E-1203 raised", Severity::Error),
            ("12:00 WARN reagent low", Severity::Warning),
            ("12:00 WARNING reagent low", Severity::Warning),
            ("12:00 run complete", Severity::Info),
            ("12:00 error in lowercase is info", Severity::Info),
        ] {
            assert_eq!(severity_of(line), expect, "{line}");
        }
    }

    #[test]
    fn codes() {
        assert_eq!(event_code("x E-1203 y"), Some("E-1203"));
        assert_eq!(event_code("LINE-ONE E-7"), Some("E-7"));
        assert_eq!(event_code("E- no digits"), None);
        assert_eq!(event_code("plain"), None);
    }

    #[test]
    fn lines_stop_at_partial_and_cap() {
        let buf = b"a\r\n\nb\nc\npartial";
        let (lines, consumed) = complete_lines(buf, 10);
        assert_eq!(lines, vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(consumed, 8);
        let (lines, consumed) = complete_lines(buf, 2);
        assert_eq!(lines, vec![&b"a"[..], b"b"]);
        assert_eq!(consumed, 6);
    }

    #[test]
    fn event_text_is_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_EVENT_TEXT_BYTES);
        let event = event_for(&Instrument::new("XN-550", "1234"), &long);
        assert!(event.text.len() <= MAX_EVENT_TEXT_BYTES);
        assert_eq!(event.severity, Severity::Info);
        assert_eq!(event.instrument.serial, "1234");
    }
}
