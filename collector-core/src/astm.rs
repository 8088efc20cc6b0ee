//! ASTM E1381 (low-level framing) and E1394 (records) from instrument transcripts.
//!
//! [`deframe`] turns a captured byte stream into logical records: each frame
//! `STX FN text (ETB|ETX) C1 C2 CR [LF]` has its frame number and checksum
//! (sum of the bytes from FN through ETB/ETX, modulo 256, two hex digits) checked;
//! frames ending in ETB are continued by the next frame, so a record (or a name)
//! split across frames is joined before it is read. A bad or truncated frame is
//! counted, and any partial record it belonged to is discarded. Input without STX
//! is read as an unframed transcript, one record per line.
//!
//! [`parse`] reads E1394 records with the delimiters the H record declares and
//! produces QC results only:
//! - H gives the instrument (sender name H.5: model = first non-empty component,
//!   serial = the last later component that has a digit and is not a version number);
//! - P records are dropped whole, and a P record ends any QC context;
//! - an O record opens a QC context when O.12 (action code) is `Q`, or when the
//!   H record's processing id (H.12) is `Q` — LIS2-A2 defines H.12 `Q` as
//!   "quality control" for the whole transmission (Yumizen H500 marks its QC
//!   runs that way, with O.12 empty) — unless a P record with any content
//!   after its sequence number came first in that transmission (then only
//!   O.12 counts). Its specimen id (O.3, first component) is
//!   the control lot (kept only when it is a plain device token, see
//!   [`crate::redact::device_id`]); when the specimen descriptor (O.16) is a
//!   control (`CTRL`, `QC`, `CONTROL`), its last component is the control level;
//! - R records under a QC order become [`QcResult`]s; R records under any other
//!   order are patient results and are dropped (counted);
//! - C records (free text) are dropped (counted); M, L, Q, S records are ignored.

use crate::records::{Instrument, QcResult, Record, Timestamp};
use crate::redact::{device_id, redact};
use crate::{ParseOutput, ParseStats, scan};

const STX: u8 = 0x02;
const ETX: u8 = 0x03;
const ETB: u8 = 0x17;
const CR: u8 = 0x0D;
const LF: u8 = 0x0A;

/// Upper bound on one logical record after joining frames, in bytes; longer
/// records are counted malformed and discarded (memory bound on hostile input).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Logical records recovered from a byte stream, plus framing counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deframed {
    /// One entry per record (without the terminating CR), lossily decoded as UTF-8.
    pub records: Vec<String>,
    /// Frames read.
    pub frames: usize,
    /// Frames rejected (bad checksum, bad frame number, truncated, oversized).
    pub malformed_frames: usize,
}

/// The ASTM checksum of `bytes` (FN through ETB/ETX), as two uppercase hex digits.
pub fn checksum(bytes: &[u8]) -> [u8; 2] {
    let sum = bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    let hex = b"0123456789ABCDEF";
    [hex[usize::from(sum >> 4)], hex[usize::from(sum & 0x0F)]]
}

/// Builds one E1381 frame around `text` (test and tooling helper).
pub fn frame(number: u8, text: &[u8], last: bool) -> Vec<u8> {
    let mut body = vec![b'0' + number % 8];
    body.extend_from_slice(text);
    body.push(if last { ETX } else { ETB });
    let cs = checksum(&body);
    let mut out = vec![STX];
    out.extend_from_slice(&body);
    out.extend_from_slice(&cs);
    out.extend_from_slice(&[CR, LF]);
    out
}

/// Splits a captured stream into logical records; see the module docs.
pub fn deframe(input: &[u8]) -> Deframed {
    let mut out = Deframed::default();
    if memchr::memchr(STX, input).is_none() {
        for line in scan::split_cr_lf_bytes(input) {
            let line: Vec<u8> = line
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_control())
                .collect();
            if !line.is_empty() {
                out.records.push(scan::utf8_lossy(&line).into_owned());
            }
        }
        return out;
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut i = 0;
    while let Some(off) = memchr::memchr(STX, &input[i..]) {
        let start = i + off + 1;
        let Some(end_off) = memchr::memchr3(ETX, ETB, STX, &input[start..]) else {
            out.frames += 1;
            out.malformed_frames += 1;
            pending.clear();
            break;
        };
        let end = start + end_off;
        out.frames += 1;
        if input[end] == STX {
            // A new frame started before this one ended: truncated.
            out.malformed_frames += 1;
            pending.clear();
            i = end;
            continue;
        }
        let body = &input[start..=end];
        let given = input.get(end + 1..end + 3);
        let fn_ok = body.first().is_some_and(|b| (b'0'..=b'7').contains(b));
        let cs_ok = given.is_some_and(|g| g.eq_ignore_ascii_case(&checksum(body)));
        i = (end + 3).min(input.len());
        if !fn_ok || !cs_ok || pending.len() + body.len() > MAX_RECORD_BYTES {
            out.malformed_frames += 1;
            pending.clear();
            continue;
        }
        pending.extend_from_slice(&body[1..body.len() - 1]);
        if input[end] == ETX {
            flush(&mut pending, &mut out.records);
        }
    }
    if !pending.is_empty() {
        // The stream ended inside an intermediate (ETB) frame sequence.
        out.malformed_frames += 1;
    }
    out
}

fn flush(pending: &mut Vec<u8>, records: &mut Vec<String>) {
    for rec in scan::split_cr_lf_bytes(pending) {
        if !rec.is_empty() {
            records.push(scan::utf8_lossy(rec).into_owned());
        }
    }
    pending.clear();
}

/// Delimiters declared by the H record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// Field delimiter (`|`).
    pub field: char,
    /// Repeat delimiter (`\`).
    pub repeat: char,
    /// Component delimiter (`^`).
    pub component: char,
    /// Escape character (`&`).
    pub escape: char,
}

impl Default for Delimiters {
    fn default() -> Self {
        Self {
            field: '|',
            repeat: '\\',
            component: '^',
            escape: '&',
        }
    }
}

impl Delimiters {
    /// Reads the delimiters from an H record (`H|\^&...`); `None` when the
    /// record does not declare four distinct, non-alphanumeric delimiters.
    pub fn from_header(h: &str) -> Option<Self> {
        let c: Vec<char> = h.chars().take(5).collect();
        if c.len() < 5 || c[0] != 'H' {
            return None;
        }
        let d = Self {
            field: c[1],
            repeat: c[2],
            component: c[3],
            escape: c[4],
        };
        let all = [d.field, d.repeat, d.component, d.escape];
        let distinct = (0..4).all(|i| (i + 1..4).all(|j| all[i] != all[j]));
        let printable = all.iter().all(|x| x.is_ascii_punctuation());
        (distinct && printable).then_some(d)
    }

    /// Decodes E1394 escape sequences (`&F&`, `&S&`, `&R&`, `&E&`) in `text`.
    /// Unknown sequences are removed.
    pub fn unescape(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut parts = text.split(self.escape);
        if let Some(first) = parts.next() {
            out.push_str(first);
        }
        let rest: Vec<&str> = parts.collect();
        let mut k = 0;
        while k < rest.len() {
            if k + 1 < rest.len() {
                match rest[k] {
                    "F" => out.push(self.field),
                    "S" => out.push(self.component),
                    "R" => out.push(self.repeat),
                    "E" => out.push(self.escape),
                    _ => {}
                }
                out.push_str(rest[k + 1]);
                k += 2;
            } else {
                // Dangling escape character: keep the text after it.
                out.push_str(rest[k]);
                k += 1;
            }
        }
        out
    }
}

fn get<'a>(fields: &[&'a str], n: usize) -> &'a str {
    fields.get(n).copied().unwrap_or("")
}

/// Parses an ASTM stream into QC records. `fallback` names the instrument when
/// the H record does not (an operator-configured model and serial).
pub fn parse(input: &[u8], fallback: &Instrument) -> ParseOutput {
    let deframed = deframe(input);
    let mut stats = ParseStats {
        frames: deframed.frames,
        malformed_frames: deframed.malformed_frames,
        ..ParseStats::default()
    };
    let mut records = Vec::new();
    let mut delims = Delimiters::default();
    let mut instrument = fallback.clone();
    let mut qc_lot: Option<(String, String)> = None;
    let mut qc_transmission = false;
    for raw in &deframed.records {
        stats.records += 1;
        let rec = strip_frame_digit(raw.trim_start());
        let Some(kind) = rec.chars().next() else {
            stats.malformed_records += 1;
            continue;
        };
        if kind == 'H' {
            match Delimiters::from_header(rec) {
                Some(d) => delims = d,
                None => {
                    stats.malformed_records += 1;
                    delims = Delimiters::default();
                }
            }
            qc_lot = None;
            let fields: Vec<&str> = scan::split(rec, delims.field).collect();
            qc_transmission = get(&fields, 11).trim().eq_ignore_ascii_case("Q");
            instrument = header_instrument(rec, &delims).unwrap_or_else(|| fallback.clone());
            continue;
        }
        if rec.chars().nth(1) != Some(delims.field) {
            stats.malformed_records += 1;
            continue;
        }
        let fields: Vec<&str> = scan::split(rec, delims.field).collect();
        match kind.to_ascii_uppercase() {
            'P' => {
                stats.patient_records_dropped += 1;
                qc_lot = None;
                // A P record that names anyone (any field after its sequence
                // number) means this is not a pure QC transmission, whatever
                // H.12 says: from here only O.12 = Q opens a QC context.
                if fields.iter().skip(2).any(|f| !f.trim().is_empty()) {
                    qc_transmission = false;
                }
            }
            'O' => {
                let action = get(&fields, 11).trim();
                let qc = qc_transmission || action.eq_ignore_ascii_case("Q");
                qc_lot = qc.then(|| {
                    let spec = get(&fields, 2).split(delims.component).next().unwrap_or("");
                    let lot = device_id(delims.unescape(spec).trim());
                    (lot, control_level(get(&fields, 15), &delims))
                });
            }
            'R' => match &qc_lot {
                Some((lot, level)) => match qc_result(&fields, &delims, &instrument, lot, level) {
                    Some(r) => records.push(Record::Qc(r)),
                    None => stats.malformed_records += 1,
                },
                None => stats.patient_results_dropped += 1,
            },
            'C' => stats.comments_dropped += 1,
            'L' => qc_lot = None,
            'M' | 'Q' | 'S' => {}
            _ => stats.malformed_records += 1,
        }
    }
    ParseOutput { records, stats }
}

/// The control level from a specimen descriptor (O.16) such as
/// `CTRL^^CTRL MEDIUM`: its last non-empty component, when the first says the
/// specimen is a control; empty otherwise.
fn control_level(descriptor: &str, d: &Delimiters) -> String {
    let comps: Vec<String> = descriptor
        .split(d.component)
        .map(|c| d.unescape(c).trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    let is_control = comps.first().is_some_and(|c| {
        ["CTRL", "QC", "CONTROL"]
            .iter()
            .any(|k| c.eq_ignore_ascii_case(k))
    });
    match comps.last() {
        Some(level) if is_control => redact(level),
        _ => String::new(),
    }
}

/// The first component of a field (reference ranges carry a qualifier after it,
/// `84.0 - 94.0^REFERENCE_RANGE`).
fn first_component<'a>(field: &'a str, d: &Delimiters) -> &'a str {
    field.split(d.component).next().unwrap_or("")
}

/// Unframed transcripts keep the frame number in front of the record type.
fn strip_frame_digit(rec: &str) -> &str {
    let b = rec.as_bytes();
    if b.len() > 2 && b[0].is_ascii_digit() && b[1].is_ascii_alphabetic() {
        &rec[1..]
    } else {
        rec
    }
}

fn header_instrument(h: &str, d: &Delimiters) -> Option<Instrument> {
    let fields: Vec<&str> = scan::split(h, d.field).collect();
    let sender = get(&fields, 4);
    let comps: Vec<String> = sender
        .split(d.component)
        .map(|c| d.unescape(c).trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    let model = comps.first()?.clone();
    // Vendors order the components differently (Sysmex name^...^serial,
    // Yumizen name^serial^software version): the serial is the last component
    // after the name that has a digit and is not shaped like a version number.
    let serial = comps
        .iter()
        .skip(1)
        .rev()
        .find(|c| c.bytes().any(|b| b.is_ascii_digit()) && !is_version(c))
        .cloned()
        .unwrap_or_default();
    Some(Instrument {
        model: redact(&model),
        serial: device_id(&serial),
    })
}

/// `4.8`, `2.2.2.2b`, `04.04.00.00`: digits separated by dots, optionally one
/// trailing letter.
fn is_version(c: &str) -> bool {
    let core = c
        .strip_suffix(|ch: char| ch.is_ascii_alphabetic())
        .unwrap_or(c);
    core.contains('.')
        && core
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn qc_result(
    fields: &[&str],
    d: &Delimiters,
    instrument: &Instrument,
    lot: &str,
    level: &str,
) -> Option<QcResult> {
    let test: Vec<&str> = get(fields, 2).split(d.component).collect();
    let analyte = test
        .iter()
        .skip(3)
        .chain(test.iter())
        .map(|c| c.trim())
        .find(|c| !c.is_empty())?;
    let value = get(fields, 3)
        .split(d.component)
        .map(str::trim)
        .find(|c| !c.is_empty())
        .unwrap_or("");
    let clean = |s: &str| redact(d.unescape(s).trim());
    Some(QcResult {
        instrument: instrument.clone(),
        analyte: clean(analyte),
        value: clean(value),
        unit: clean(get(fields, 4)),
        reference_range: clean(first_component(get(fields, 5), d)),
        flags: get(fields, 6)
            .split(d.repeat)
            .map(clean)
            .filter(|f| !f.is_empty())
            .collect(),
        control_lot: lot.to_string(),
        control_level: level.to_string(),
        // R.13 (test completed), else R.12 (test started; Yumizen sends only that).
        run_time: Timestamp::parse_compact(get(fields, 12))
            .or_else(|| Timestamp::parse_compact(get(fields, 11))),
    })
}

const EOT: u8 = 0x04;

/// End offsets (exclusive, increasing) of the complete messages at the start
/// of `input`, so that a reader of a growing transcript can stop at a message
/// boundary and resume there. A message is complete after an EOT byte (the end
/// of an E1381 transmission), after the end frame (ETX) whose last record is the
/// L (terminator) record, including its checksum and CR LF trailer, or — unframed — after the
/// line ending of an L record. Whatever follows the last end is incomplete so
/// far. Every end is also a place where [`parse`] can start again: the next
/// message declares its own delimiters in its H record.
pub fn message_ends(input: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let framed = memchr::memchr(STX, input).is_some();
    let push = |end: usize, ends: &mut Vec<usize>| {
        if ends.last().is_none_or(|last| *last < end) {
            ends.push(end);
        }
    };
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == EOT {
            push(i + 1, &mut ends);
            i += 1;
        } else if framed && b == STX {
            // STX FN text ... ETX C1 C2 CR LF
            let start = i + 1;
            // The first ETX, ETB, STX or EOT (memchr takes at most three).
            let rest = &input[start..];
            let first = match memchr::memchr3(ETX, ETB, STX, rest) {
                Some(c) => Some(memchr::memchr(EOT, &rest[..c]).unwrap_or(c)),
                None => memchr::memchr(EOT, rest),
            };
            let Some(off) = first else {
                break;
            };
            let end = start + off;
            let text = &input[start..end];
            // The frame's last record (frames may carry several, CR-separated).
            let last = scan::last_cr_lf_piece(text.get(1..).unwrap_or_default());
            let is_l = last.first().is_some_and(|c| c.eq_ignore_ascii_case(&b'L'))
                && last.get(1).is_none_or(|c| !c.is_ascii_alphanumeric());
            if input[end] == ETX && is_l {
                // The trailer must be there in full (C1 C2 CR, LF optional).
                if input.len() < end + 4 {
                    break;
                }
                let mut stop = end + 4;
                if input.get(stop) == Some(&LF) {
                    stop += 1;
                }
                push(stop, &mut ends);
                i = stop;
            } else {
                i = end.max(i + 1);
            }
        } else if !framed && (b == CR || b == LF) {
            i += 1;
        } else if !framed {
            let Some(len) = memchr::memchr2(CR, LF, &input[i..]) else {
                break;
            };
            let line = strip_frame_digit(
                std::str::from_utf8(&input[i..i + len])
                    .unwrap_or("")
                    .trim_start_matches(|c: char| c.is_ascii_control()),
            );
            let mut stop = i + len + 1;
            if input[i + len] == CR && input.get(stop) == Some(&LF) {
                stop += 1;
            }
            let bytes = line.as_bytes();
            if bytes.first().is_some_and(|c| c.eq_ignore_ascii_case(&b'L'))
                && bytes.get(1).is_some_and(|c| !c.is_ascii_alphanumeric())
            {
                push(stop, &mut ends);
            }
            i = stop;
        } else {
            i += 1;
        }
    }
    ends
}
