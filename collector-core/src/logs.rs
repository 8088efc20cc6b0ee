//! Plain-text instrument and application logs to [`InstrumentEvent`]s.
//!
//! [`decode`] reads UTF-8 (with or without BOM) and UTF-16 LE/BE (with BOM, or
//! without BOM when every other byte of the start is zero). [`parse_line`] reads
//! one line of the common shape
//!
//! ```text
//! [2024-06-27 13:54:07.120] ERROR E-1203 aspiration failed for pt DOE, JANE
//! ```
//!
//! - a timestamp in *prefix position* (`YYYY-MM-DD[T ]hh:mm:ss[.fff][Z|±hh:mm]`,
//!   `YYYY/MM/DD ...`, or compact `YYYYMMDDhhmmss`, optionally in brackets) is a
//!   log timestamp and becomes `time`; it is never part of the redacted text;
//! - a level word (TRACE/DEBUG, INFO, NOTICE, WARN/WARNING, ERROR/ERR,
//!   FATAL/CRITICAL/CRIT/ALARM) sets the severity;
//! - the first event code (`E-1203`, `W0412`, `ERR-12`, `ALM-0042`) becomes `code`;
//!   its letter sets the severity when no level word does (E error, W warning,
//!   F critical, I info), otherwise `info`;
//! - the remaining text goes through [`redact`].

use crate::records::{Instrument, InstrumentEvent, Record, Severity, Timestamp};
use crate::redact::redact;
use crate::{ParseOutput, ParseStats};
use regex::Regex;
use std::sync::OnceLock;

/// Longest line read, in characters; longer lines are cut (and counted malformed).
pub const MAX_LINE_CHARS: usize = 4096;

/// Decodes a log file's bytes to text (see module docs).
pub fn decode(bytes: &[u8]) -> String {
    let utf16 = |b: &[u8], le: bool| -> String {
        let units = b.chunks_exact(2).map(|c| {
            if le {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .map(|r| r.unwrap_or('\u{FFFD}'))
            .collect()
    };
    match bytes {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false),
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8_lossy(rest).into_owned(),
        _ => {
            let head = &bytes[..bytes.len().min(64)];
            let zeros_odd = head.iter().skip(1).step_by(2).filter(|b| **b == 0).count();
            let zeros_even = head.iter().step_by(2).filter(|b| **b == 0).count();
            let half = head.len() / 2;
            if half >= 2 && zeros_odd == half && zeros_even == 0 {
                utf16(bytes, true)
            } else if half >= 2 && zeros_even == half.max(1) && zeros_odd == 0 {
                utf16(bytes, false)
            } else {
                String::from_utf8_lossy(bytes).into_owned()
            }
        }
    }
}

struct LogRules {
    ts: Regex,
    level: Regex,
    code: Regex,
}

fn rules() -> &'static LogRules {
    static R: OnceLock<LogRules> = OnceLock::new();
    R.get_or_init(|| {
        let r = |p: &str| Regex::new(p).expect("static log pattern compiles");
        LogRules {
            ts: r(
                r"^\s*\[?(?P<y>\d{4})[-/.]?(?P<mo>\d{2})[-/.]?(?P<d>\d{2})[T ]?(?P<h>\d{2}):?(?P<mi>\d{2}):?(?P<s>\d{2})(?:[.,](?P<f>\d{1,9}))?(?P<z>Z|[+-]\d{2}:?\d{2})?\]?[\s|;,-]*",
            ),
            level: r(
                r"^\s*[\[<(]?(?i:(?P<lvl>trace|debug|info|information|notice|warn|warning|error|err|fatal|critical|crit|alarm))[\]>)]?:?\s*[|;-]?\s*",
            ),
            code: r(r"\b[A-Z]{1,3}-?\d{3,5}\b"),
        }
    })
}

fn level_severity(l: &str) -> Severity {
    match l.to_ascii_lowercase().as_str() {
        "trace" | "debug" => Severity::Debug,
        "info" | "information" => Severity::Info,
        "notice" => Severity::Notice,
        "warn" | "warning" => Severity::Warning,
        "error" | "err" => Severity::Error,
        _ => Severity::Critical,
    }
}

fn code_severity(code: &str) -> Severity {
    match code.as_bytes().first() {
        Some(b'E') => Severity::Error,
        Some(b'W') => Severity::Warning,
        Some(b'F') | Some(b'C') => Severity::Critical,
        _ => Severity::Info,
    }
}

/// Reads one log line; `None` for a blank line.
pub fn parse_line(line: &str, instrument: &Instrument) -> Option<InstrumentEvent> {
    let line = crate::redact::normalize(line);
    let line = line.trim_end();
    if line.trim().is_empty() {
        return None;
    }
    let r = rules();
    let mut rest: &str = line;
    let mut time = None;
    if let Some(c) = r.ts.captures(rest) {
        let n = |k: &str| {
            c.name(k)
                .and_then(|m| m.as_str().parse::<u32>().ok())
                .unwrap_or(0)
        };
        let nanos = c.name("f").map_or(0, |f| {
            let s = f.as_str();
            s.parse::<u32>().unwrap_or(0) * 10u32.pow(9 - s.len() as u32)
        });
        let offset = c.name("z").map_or(0i64, |z| {
            let z = z.as_str();
            if z == "Z" {
                return 0;
            }
            let digits: String = z.chars().filter(char::is_ascii_digit).collect();
            let h: i64 = digits[..2].parse().unwrap_or(0);
            let m: i64 = digits[2..].parse().unwrap_or(0);
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        });
        let y = i64::from(n("y"));
        if let Some(ts) = Timestamp::from_civil(y, n("mo"), n("d"), n("h"), n("mi"), n("s"), nanos)
        {
            time = Some(Timestamp {
                seconds: ts.seconds - offset,
                nanoseconds: ts.nanoseconds,
            });
            rest = &rest[c.get(0).map_or(0, |m| m.end())..];
        }
    }
    let mut severity = None;
    if let Some(c) = r.level.captures(rest) {
        severity = Some(level_severity(&c["lvl"]));
        rest = &rest[c.get(0).map_or(0, |m| m.end())..];
    }
    // The first code-shaped token that is not the instrument's own model or
    // serial (lines often name the instrument before the event code).
    // (The whole match is the code: its `\b`s are zero-width.)
    let code = r
        .code
        .find_iter(rest)
        .map(|m| m.as_str())
        .find(|c| *c != instrument.model && *c != instrument.serial)
        .unwrap_or_default();
    let severity = severity.unwrap_or_else(|| {
        if code.is_empty() {
            Severity::Info
        } else {
            code_severity(code)
        }
    });
    let rest = rest.trim();
    // At most MAX_LINE_CHARS characters (a line has at least as many bytes).
    let text = if rest.len() <= MAX_LINE_CHARS {
        rest
    } else {
        match rest.char_indices().nth(MAX_LINE_CHARS) {
            Some((cut, _)) => &rest[..cut],
            None => rest,
        }
    };
    Some(InstrumentEvent {
        instrument: instrument.clone(),
        severity,
        code: redact(code),
        text: redact(text),
        time,
    })
}

/// Reads a whole log file (any supported encoding), one event per non-blank line.
pub fn parse(bytes: &[u8], instrument: &Instrument) -> ParseOutput {
    let text = decode(bytes);
    let mut stats = ParseStats::default();
    let mut records = Vec::new();
    for line in text.lines() {
        // A line has at least as many bytes as characters.
        if line.len() > MAX_LINE_CHARS && line.chars().count() > MAX_LINE_CHARS {
            stats.malformed_records += 1;
        }
        if let Some(ev) = parse_line(line, instrument) {
            stats.records += 1;
            records.push(Record::Event(ev));
        }
    }
    ParseOutput { records, stats }
}
