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
//! - a level word (TRACE/DEBUG, INFO/INFORMATION, NOTICE, WARN/WARNING,
//!   ERROR/ERR, FATAL/CRITICAL/CRIT/ALARM, any case, a whole word, optionally
//!   in brackets and followed by `:`) sets the severity and is not part of the
//!   text;
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
        [0xEF, 0xBB, 0xBF, rest @ ..] => crate::scan::utf8_lossy(rest).into_owned(),
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
                crate::scan::utf8_lossy(bytes).into_owned()
            }
        }
    }
}

/// A log pattern, compiled the first time it is used. Each call of the
/// collector module starts a fresh instance, so a pattern costs its
/// compilation in every call that uses it: ASCII lines (nearly all) are read
/// by hand and never compile one.
fn pattern(cell: &'static OnceLock<Regex>, source: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(source).expect("static log pattern compiles"))
}

/// A timestamp at the start of a line, and the separators after it.
fn ts() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    pattern(
        &R,
        r"^\s*\[?(?P<y>\d{4})[-/.]?(?P<mo>\d{2})[-/.]?(?P<d>\d{2})[T ]?(?P<h>\d{2}):?(?P<mi>\d{2}):?(?P<s>\d{2})(?:[.,](?P<f>\d{1,9}))?(?P<z>Z|[+-]\d{2}:?\d{2})?\]?[\s|;,-]*",
    )
}

/// A level word at the start of what follows the timestamp.
fn level() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    pattern(
        &R,
        r"^\s*[\[<(]?(?i:(?P<lvl>trace|debug|information|info|notice|warning|warn|error|err|fatal|critical|crit|alarm))\b[\]>)]?:?\s*[|;-]?\s*",
    )
}

/// An event code (`E-1203`, `W123`).
fn code() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    pattern(&R, r"\b[A-Z]{1,3}-?\d{3,5}\b")
}

/// The first match of the `code` pattern in `text` that `wanted` accepts;
/// by hand on ASCII text ([`ascii_codes`]).
fn first_code(text: &str, wanted: impl Fn(&str) -> bool) -> Option<&str> {
    if text.is_ascii() {
        ascii_codes(text).find(|c| wanted(c))
    } else {
        code()
            .find_iter(text)
            .map(|m| m.as_str())
            .find(|c| wanted(c))
    }
}

/// The matches of the `code` pattern `\b[A-Z]{1,3}-?\d{3,5}\b` in ASCII
/// `text`, as `find_iter` finds them: a match starts a word with a run of
/// one to three capital letters (a longer run leaves the pattern no way to
/// reach a digit), then an optional `-`, then a run of three to five digits
/// that ends the word. The `ascii_codes_are_the_patterns_matches` test holds
/// it to the pattern.
fn ascii_codes(text: &str) -> impl Iterator<Item = &str> {
    let b = text.as_bytes();
    let word = move |i: usize| {
        b.get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    };
    let run = move |mut i: usize, class: fn(&u8) -> bool| {
        while b.get(i).is_some_and(class) {
            i += 1;
        }
        i
    };
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            let start = i;
            i += 1;
            if !b[start].is_ascii_uppercase() || (start > 0 && word(start - 1)) {
                continue;
            }
            let letters_end = run(start, u8::is_ascii_uppercase);
            let digits = letters_end + usize::from(b.get(letters_end) == Some(&b'-'));
            let end = run(digits, u8::is_ascii_digit);
            if (1..=3).contains(&(letters_end - start))
                && (3..=5).contains(&(end - digits))
                && !word(end)
            {
                i = end;
                return Some(&text[start..end]);
            }
        }
        None
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

/// The parts of a timestamp at the start of a line (the `ts` pattern's
/// groups) and where the prefix around it ends.
#[derive(Debug, PartialEq)]
struct TimestampPrefix<'a> {
    year: &'a str,
    month: &'a str,
    day: &'a str,
    hour: &'a str,
    minute: &'a str,
    second: &'a str,
    fraction: Option<&'a str>,
    zone: Option<&'a str>,
    end: usize,
}

/// The timestamp prefix of `line`, as the `ts` pattern reads it. ASCII
/// lines (nearly all) are read by [`ascii_timestamp_prefix`], which does
/// by hand what the pattern does; others by the pattern, where `\d` and
/// `\s` reach beyond ASCII.
fn timestamp_prefix(line: &str) -> Option<TimestampPrefix<'_>> {
    if line.is_ascii() {
        return ascii_timestamp_prefix(line);
    }
    regex_timestamp_prefix(line)
}

fn regex_timestamp_prefix(line: &str) -> Option<TimestampPrefix<'_>> {
    let c = ts().captures(line)?;
    let group = |k: &str| c.name(k).map_or("", |m| m.as_str());
    Some(TimestampPrefix {
        year: group("y"),
        month: group("mo"),
        day: group("d"),
        hour: group("h"),
        minute: group("mi"),
        second: group("s"),
        fraction: c.name("f").map(|m| m.as_str()),
        zone: c.name("z").map(|m| m.as_str()),
        end: c.get(0).map_or(0, |m| m.end()),
    })
}

/// White space as `\s` matches it in ASCII text.
fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ')
}

/// [`regex_timestamp_prefix`] for ASCII `line`, without the pattern:
/// `^\s*\[?` year `[-/.]?` month `[-/.]?` day `[T ]?` hour `:?` minute `:?`
/// second, then `[.,]` and 1 to 9 fraction digits, a zone (`Z` or
/// `[+-]hh:?mm`), `\]?` and `[\s|;,-]*`, each optional part taken whenever
/// it is there, as the pattern's greedy, fixed-width parts take it. The
/// `ascii_prefixes_read_as_the_patterns_do` test holds it to the pattern.
fn ascii_timestamp_prefix(line: &str) -> Option<TimestampPrefix<'_>> {
    let b = line.as_bytes();
    let digits = |at: usize, n: usize| {
        b.get(at..at + n)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let is = |at: usize, set: &[u8]| b.get(at).is_some_and(|c| set.contains(c));
    let mut i = 0;
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    i += usize::from(is(i, b"["));
    let field = |i: &mut usize, n: usize, sep: &[u8]| -> Option<&str> {
        if !digits(*i, n) {
            return None;
        }
        let f = &line[*i..*i + n];
        *i += n;
        *i += usize::from(is(*i, sep));
        Some(f)
    };
    let year = field(&mut i, 4, b"-/.")?;
    let month = field(&mut i, 2, b"-/.")?;
    let day = field(&mut i, 2, b"T ")?;
    let hour = field(&mut i, 2, b":")?;
    let minute = field(&mut i, 2, b":")?;
    let second = field(&mut i, 2, b"")?;
    let mut fraction = None;
    if is(i, b".,") && digits(i + 1, 1) {
        let start = i + 1;
        i = start;
        while i < b.len() && i - start < 9 && b[i].is_ascii_digit() {
            i += 1;
        }
        fraction = Some(&line[start..i]);
    }
    let mut zone = None;
    if is(i, b"Z") {
        zone = Some(&line[i..i + 1]);
        i += 1;
    } else if is(i, b"+-") && digits(i + 1, 2) {
        let colon = usize::from(is(i + 3, b":") && digits(i + 4, 2));
        if digits(i + 3 + colon, 2) {
            let end = i + 5 + colon;
            zone = Some(&line[i..end]);
            i = end;
        }
    }
    i += usize::from(is(i, b"]"));
    while i < b.len() && (is_space(b[i]) || matches!(b[i], b'|' | b';' | b',' | b'-')) {
        i += 1;
    }
    Some(TimestampPrefix {
        year,
        month,
        day,
        hour,
        minute,
        second,
        fraction,
        zone,
        end: i,
    })
}

/// The level words of the `level` pattern. A level word is a whole word
/// (`\b` after it), so at most one of them starts a text.
const LEVEL_WORDS: [&str; 13] = [
    "trace",
    "debug",
    "information",
    "info",
    "notice",
    "warning",
    "warn",
    "error",
    "err",
    "fatal",
    "critical",
    "crit",
    "alarm",
];

/// The level word at the start of `rest` and where the prefix around it
/// ends, as the `level` pattern reads them; by hand on ASCII text (as with
/// [`timestamp_prefix`]).
fn level_prefix(rest: &str) -> Option<(&str, usize)> {
    if !rest.is_ascii() {
        let c = level().captures(rest)?;
        return Some((c.name("lvl")?.as_str(), c.get(0)?.end()));
    }
    let b = rest.as_bytes();
    let is = |at: usize, set: &[u8]| b.get(at).is_some_and(|c| set.contains(c));
    let skip_space = |mut i: usize| {
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        i
    };
    let mut i = skip_space(0);
    i += usize::from(is(i, b"[<("));
    let word = LEVEL_WORDS.iter().find(|w| {
        let end = i + w.len();
        b.get(i..end)
            .is_some_and(|t| t.eq_ignore_ascii_case(w.as_bytes()))
            && !b
                .get(end)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    })?;
    let level = &rest[i..i + word.len()];
    i += word.len();
    i += usize::from(is(i, b"]>)"));
    i += usize::from(is(i, b":"));
    i = skip_space(i);
    i += usize::from(is(i, b"|;-"));
    Some((level, skip_space(i)))
}

/// Reads one log line; `None` for a blank line.
pub fn parse_line(line: &str, instrument: &Instrument) -> Option<InstrumentEvent> {
    let line = crate::redact::normalize(line);
    let line = line.trim_end();
    if line.trim().is_empty() {
        return None;
    }
    let mut rest: &str = line;
    let mut time = None;
    if let Some(ts) = timestamp_prefix(rest) {
        let n = |k: &str| k.parse::<u32>().unwrap_or(0);
        let nanos = ts.fraction.map_or(0, |f| {
            f.parse::<u32>().unwrap_or(0) * 10u32.pow(9 - f.len() as u32)
        });
        let offset = ts.zone.map_or(0i64, |z| {
            if z == "Z" {
                return 0;
            }
            let digits: String = z.chars().filter(char::is_ascii_digit).collect();
            let h: i64 = digits[..2].parse().unwrap_or(0);
            let m: i64 = digits[2..].parse().unwrap_or(0);
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        });
        let y = i64::from(n(ts.year));
        let [mo, d, h, mi, sec] = [ts.month, ts.day, ts.hour, ts.minute, ts.second].map(n);
        if let Some(t) = Timestamp::from_civil(y, mo, d, h, mi, sec, nanos) {
            time = Some(Timestamp {
                seconds: t.seconds - offset,
                nanoseconds: t.nanoseconds,
            });
            rest = &rest[ts.end..];
        }
    }
    let mut severity = None;
    if let Some((level, end)) = level_prefix(rest) {
        severity = Some(level_severity(level));
        rest = &rest[end..];
    }
    // The first code-shaped token that is not the instrument's own model or
    // serial (lines often name the instrument before the event code).
    // (The whole match is the code: its `\b`s are zero-width.)
    let code =
        first_code(rest, |c| c != instrument.model && c != instrument.serial).unwrap_or_default();
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
    for line in crate::scan::lines(&text) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines that start with every shape of timestamp and level prefix the
    /// patterns know, and with near misses of each: separators present,
    /// missing or wrong, short digit runs, fractions of 0 to 11 digits,
    /// whole, broken and absent zones, brackets, level words in any case
    /// and glued to other words.
    fn lines() -> Vec<String> {
        const LEAD: &[&str] = &["", " ", "\t ", "[", " [", "(", "\u{0B}"];
        const YEAR: &[&str] = &["2024", "1999", "202", "20245", "x024"];
        const SEP: &[&str] = &["-", "/", ".", "", " ", "--", ":"];
        const TWO: &[&str] = &["06", "27", "6", "00", "99", "1x"];
        const MID: &[&str] = &["T", " ", "", "  ", "t", "_"];
        const COLON: &[&str] = &[":", "", "::", "-"];
        const FRACTION: &[&str] = &[
            "",
            ".1",
            ",123",
            ".123456789",
            ".12345678901",
            ".",
            ",x",
            ".5Z",
        ];
        const ZONE: &[&str] = &[
            "", "Z", "+01:00", "-0530", "+05:3", "-05", "+0", "z", "+01:000", "-12:",
        ];
        const TAIL: &[&str] = &[
            "", "]", "] ", " | ", ";", ", ", " - ", "-", "]]", " ] ", "\r\n",
        ];
        const LEVEL: &[&str] = &[
            "INFO",
            "info",
            "",
            "Information",
            "WARNING",
            "warn",
            "Warnings",
            "err",
            "ERROR",
            "Errors",
            "CRIT",
            "critical",
            "alarm",
            "notice",
            "debug",
            "TRACE",
            "fatal",
            "[ERROR]",
            "<warn>",
            "(info)",
            "[INFO]:",
            "INFO -",
            "erro",
            "x",
        ];
        const AFTER: &[&str] = &["", " ", ": ", " | ", " ;  ", "-", "]", ":|"];
        const MESSAGE: &[&str] = &["", "E-1203 probe", "pt DOE", "  x", "13:54:07"];
        let mut rng = crate::test_rng(0x9E37_79B9_7F4A_7C15);
        // Mostly one of the first two (well-formed) options, so that whole
        // prefixes are common; otherwise any.
        let mut pick = |xs: &[&'static str]| {
            let r = rng();
            let n = if r % 10 < 8 { 2 } else { xs.len() };
            xs[((r >> 8) % n as u64) as usize]
        };
        let mut out = Vec::new();
        for _ in 0..40_000 {
            let mut l = String::new();
            l.push_str(pick(LEAD));
            for part in [
                pick(YEAR),
                pick(SEP),
                pick(TWO),
                pick(SEP),
                pick(TWO),
                pick(MID),
                pick(TWO),
                pick(COLON),
                pick(TWO),
                pick(COLON),
                pick(TWO),
                pick(FRACTION),
                pick(ZONE),
                pick(TAIL),
                pick(LEVEL),
                pick(AFTER),
                pick(MESSAGE),
            ] {
                l.push_str(part);
            }
            out.push(l);
        }
        out
    }

    #[test]
    fn ascii_codes_are_the_patterns_matches() {
        const PIECES: &[&str] = &[
            "E", "W", "AB", "ABC", "ABCD", "Ab", "-", "--", "_", "123", "1234", "12345", "123456",
            "12", "9", " ", ".", ",", "a", "x1", "E-1203", "W123", "(", "\t",
        ];
        let mut rng = crate::test_rng(0x2545_F491_4F6C_DD1D);
        let mut next = |n: usize| (rng() >> 8) as usize % n;
        let mut found = 0;
        for _ in 0..50_000 {
            let text: String = (0..1 + next(8))
                .map(|_| PIECES[next(PIECES.len())])
                .collect();
            let by_hand: Vec<&str> = ascii_codes(&text).collect();
            let by_regex: Vec<&str> = code().find_iter(&text).map(|m| m.as_str()).collect();
            assert_eq!(by_hand, by_regex, "{text:?}");
            found += by_hand.len();
        }
        // Not vacuous: codes were found, and missed, many times.
        assert!((5_000..100_000).contains(&found), "{found} codes");
        for line in lines() {
            let by_regex: Vec<&str> = code().find_iter(&line).map(|m| m.as_str()).collect();
            assert_eq!(ascii_codes(&line).collect::<Vec<_>>(), by_regex, "{line:?}");
        }
    }

    #[test]
    fn ascii_prefixes_read_as_the_patterns_do() {
        let (mut stamped, mut levelled) = (0, 0);
        for line in lines() {
            assert!(line.is_ascii());
            let by_hand = ascii_timestamp_prefix(&line);
            let by_regex = regex_timestamp_prefix(&line);
            assert_eq!(by_hand, by_regex, "{line:?}");
            let rest = &line[by_hand.as_ref().map_or(0, |t| t.end)..];
            let by_regex = level()
                .captures(rest)
                .map(|c| (c.name("lvl").unwrap().as_str(), c.get(0).unwrap().end()));
            assert_eq!(level_prefix(rest), by_regex, "{rest:?}");
            stamped += usize::from(by_hand.is_some());
            levelled += usize::from(by_regex.is_some());
        }
        // Not vacuous: both shapes were found, and missed, many times.
        assert!((2_000..38_000).contains(&stamped), "{stamped} timestamps");
        assert!((2_000..38_000).contains(&levelled), "{levelled} levels");
    }
}
