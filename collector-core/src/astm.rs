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
//! - H gives the instrument (sender name H.5): model = first non-empty
//!   component; serial = the instrument's serial component where the vendor's
//!   layout is known — Sysmex `name^software^serial^^^^PS code` (component 3,
//!   else 6, else the PS code), Horiba `name^serial^software` (component 2) —
//!   and otherwise the last later component that has a digit and is not a
//!   version number;
//! - P records are dropped whole, and a P record ends any QC context; a P
//!   record with any content after its sequence number marks the
//!   transmission as one about a person;
//! - an O record opens a QC context when O.12 (action code) is `Q`, or —
//!   unless a P record of the transmission named a person — when one of the
//!   instrument's QC markers says so: the H record's processing id (H.12) is
//!   `Q` (LIS2-A2: "quality control" for the whole transmission; Yumizen H500
//!   marks its QC runs that way, with O.12 empty), the specimen descriptor
//!   (O.16) is a control (`CTRL`, `QC`, `CONTROL`), the specimen id (O.3) or
//!   instrument specimen id (O.4) has a control form (`QC-<lot>`,
//!   `QC-<lot>^L<n>`, `CTRL_<lot>`, `QC^<lot>^<level>`, any case, in any
//!   component), or a comment record right under the order says so
//!   (`CONTROL_FAILED`, `QC PASSED`, ...);
//! - control identity: the lot is the lot of a control form in O.3 or O.4,
//!   else O.3's first component (a plain device token only, see
//!   [`crate::redact::device_id`]); the level is the form's `L<n>`/`LEVEL<n>`
//!   component, else the last component of a control descriptor in O.16
//!   (`CTRL^^CTRL MEDIUM`); a comment record under a QC order with `lot`
//!   or `level` labels (`LOT^PX440N^LEVEL^2`, `Lot: PX440N Level: 2`) fills
//!   in what the order left empty;
//! - R records under a QC order become [`QcResult`]s; R records under any other
//!   order are patient results and are dropped (counted);
//! - C records (free text) are dropped (counted) after the QC markers and
//!   labels above are read from them; M, L, Q, S records are ignored.

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
    // A P record of this transmission named someone: QC markers other than
    // O.12 no longer count.
    let mut named_patient = false;
    // The current order: its identity, whether an R record was read under
    // it, and where its results start in `records`.
    let mut order: Option<Order> = None;
    for raw in &deframed.records {
        stats.records += 1;
        let rec = strip_frame_digit(raw.trim_start());
        let Some(kind) = rec.chars().next() else {
            stats.malformed_records += 1;
            continue;
        };
        if kind == 'H' || kind == 'h' {
            match Delimiters::from_header(&rec.replacen('h', "H", 1)) {
                Some(d) => delims = d,
                None => {
                    stats.malformed_records += 1;
                    delims = Delimiters::default();
                }
            }
            qc_lot = None;
            order = None;
            named_patient = false;
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
                order = None;
                // A P record that names anyone (any field after its sequence
                // number) means this is not a pure QC transmission, whatever
                // the markers say: from here only O.12 = Q opens a QC context.
                if fields.iter().skip(2).any(|f| !f.trim().is_empty()) {
                    qc_transmission = false;
                    named_patient = true;
                }
            }
            'O' => {
                let action = get(&fields, 11).trim();
                let ident = order_identity(get(&fields, 2), get(&fields, 3), &delims);
                let descriptor = control_level(get(&fields, 15), &delims);
                let marked = qc_transmission || ident.marked || descriptor.is_some();
                let qc = action.eq_ignore_ascii_case("Q") || (!named_patient && marked);
                let level = ident.level.clone().or(descriptor).unwrap_or_default();
                let this = (ident.lot.clone(), level);
                qc_lot = qc.then(|| this.clone());
                order = Some(Order {
                    identity: this,
                    results_read: false,
                    start: records.len(),
                });
            }
            'R' => {
                if let Some(o) = order.as_mut() {
                    o.results_read = true;
                }
                match &qc_lot {
                    Some((lot, level)) => {
                        match qc_result(&fields, &delims, &instrument, lot, level) {
                            Some(r) => records.push(Record::Qc(r)),
                            None => stats.malformed_records += 1,
                        }
                    }
                    None => stats.patient_results_dropped += 1,
                }
            }
            'C' => {
                stats.comments_dropped += 1;
                let text = get(&fields, 3);
                let Some(o) = order.as_mut() else {
                    continue;
                };
                // A comment right under an order that says it is a control
                // run opens the QC context (before any of its results).
                if qc_lot.is_none()
                    && !o.results_read
                    && !named_patient
                    && qc_comment(text, &delims)
                {
                    qc_lot = Some(o.identity.clone());
                }
                if let Some((lot, level)) = qc_lot.as_mut() {
                    let (c_lot, c_level) = comment_identity(text, &delims);
                    let fill_lot = c_lot.filter(|_| lot.is_empty());
                    let fill_level = c_level.filter(|_| level.is_empty());
                    if let Some(l) = &fill_lot {
                        *lot = l.clone();
                    }
                    if let Some(l) = &fill_level {
                        *level = l.clone();
                    }
                    for r in &mut records[o.start..] {
                        if let Record::Qc(q) = r {
                            if let Some(l) = &fill_lot {
                                q.control_lot = l.clone();
                            }
                            if let Some(l) = &fill_level {
                                q.control_level = l.clone();
                            }
                        }
                    }
                }
            }
            'L' => {
                qc_lot = None;
                order = None;
            }
            'M' | 'Q' | 'S' => {}
            _ => stats.malformed_records += 1,
        }
    }
    ParseOutput { records, stats }
}

/// An order's control identity: (lot, level).
struct Order {
    identity: (String, String),
    results_read: bool,
    start: usize,
}

/// The control level from a specimen descriptor (O.16) such as
/// `CTRL^^CTRL MEDIUM`: `Some` (its last non-empty component, redacted) when
/// the first component says the specimen is a control; `None` otherwise.
fn control_level(descriptor: &str, d: &Delimiters) -> Option<String> {
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
    is_control.then(|| comps.last().map(|l| redact(l)).unwrap_or_default())
}

/// What an order's specimen ids (O.3, O.4) say about a control run.
#[derive(Debug, Default, PartialEq, Eq)]
struct OrderIdentity {
    /// The control lot (a device id, possibly masked), or O.3's first
    /// component; empty when neither has one.
    lot: String,
    /// The level of a control form (`L2` → `2`).
    level: Option<String>,
    /// A control form was found (`QC-<lot>`, `QC^<lot>`...).
    marked: bool,
}

/// Prefixes that make a specimen id a control's: `QC-<lot>`, `CTRL_<lot>`...
const CONTROL_PREFIXES: &[&str] = &["QC", "CTRL", "CONTROL", "QCM"];

/// `<prefix><sep><rest>` with a control prefix (any case) and `-`, `_`, `:`
/// or `.` as separator; `Some("")` for the bare prefix.
fn control_form(comp: &str) -> Option<&str> {
    CONTROL_PREFIXES.iter().find_map(|p| {
        let head = comp.get(..p.len())?;
        if !head.eq_ignore_ascii_case(p) {
            return None;
        }
        let rest = &comp[p.len()..];
        match rest.chars().next() {
            None => Some(""),
            Some('-' | '_' | ':' | '.') => Some(rest[1..].trim()),
            _ => None,
        }
    })
}

/// `L2`, `LV2`, `LVL 2`, `LEVEL2`, `Level-3` (any case) → `2`/`3`; a bare
/// `1`–`9` too when `bare` (right after a control lot).
fn level_form(comp: &str, bare: bool) -> Option<String> {
    let c = comp.trim();
    let lower = c.to_ascii_lowercase();
    let digits = ["level", "lvl", "lv", "l"].iter().find_map(|p| {
        let rest = lower.strip_prefix(p)?;
        let rest = rest.trim_start_matches([' ', '-', '_', ':', '#']);
        (!rest.is_empty() && rest.len() <= 2 && rest.bytes().all(|b| b.is_ascii_digit()))
            .then(|| rest.to_string())
    });
    digits.or_else(|| {
        (bare && c.len() == 1 && c.bytes().all(|b| (b'1'..=b'9').contains(&b)))
            .then(|| c.to_string())
    })
}

/// Control identity from O.3 (specimen id) and O.4 (instrument specimen id).
fn order_identity(o3: &str, o4: &str, d: &Delimiters) -> OrderIdentity {
    for field in [o3, o4] {
        let comps: Vec<String> = field
            .split(d.component)
            .map(|c| d.unescape(c).trim().to_string())
            .collect();
        for (i, comp) in comps.iter().enumerate() {
            let Some(rest) = control_form(comp) else {
                continue;
            };
            // `QC-<lot>` carries the lot; a bare `QC` has it in the next
            // component (`QC^<lot>^<level>`).
            let (lot, after) = if rest.is_empty() {
                let next = comps.get(i + 1).map(String::as_str).unwrap_or("");
                (next, i + 2)
            } else {
                (rest, i + 1)
            };
            // `QC-<lot>-L2` in one component: the level at the end.
            let (lot, inline_level) = match lot.rsplit_once(['-', '_']) {
                Some((l, lv)) if !l.is_empty() => match level_form(lv, false) {
                    Some(level) => (l, Some(level)),
                    None => (lot, None),
                },
                _ => (lot, None),
            };
            let level =
                inline_level.or_else(|| comps.iter().skip(after).find_map(|c| level_form(c, true)));
            return OrderIdentity {
                lot: device_id(lot),
                level,
                marked: true,
            };
        }
    }
    let first = o3.split(d.component).next().unwrap_or("");
    OrderIdentity {
        lot: device_id(d.unescape(first).trim()),
        level: None,
        marked: false,
    }
}

/// A comment that marks a control run: its first component starts with
/// `CONTROL`, `QC` or `CTRL` as a word (`CONTROL_FAILED`, `QC PASSED`).
fn qc_comment(text: &str, d: &Delimiters) -> bool {
    let first = d.unescape(text.split(d.component).next().unwrap_or(""));
    let first = first.trim();
    ["CONTROL", "QC", "CTRL"].iter().any(|p| {
        first.len() >= p.len()
            && first[..p.len()].eq_ignore_ascii_case(p)
            && first[p.len()..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_ascii_alphanumeric())
    })
}

/// `lot` and `level` labels in a comment's text (components and words):
/// `LOT^PX440N^LEVEL^2`, `Lot: PX440N, Level 2`, `lot#PX440N`.
fn comment_identity(text: &str, d: &Delimiters) -> (Option<String>, Option<String>) {
    let joined: Vec<String> = text.split(d.component).map(|c| d.unescape(c)).collect();
    let joined = joined.join(" ");
    let words: Vec<&str> = joined
        .split(|c: char| c.is_whitespace() || matches!(c, ':' | '=' | '#' | ',' | ';'))
        .filter(|w| !w.is_empty())
        .collect();
    let (mut lot, mut level) = (None, None);
    for (i, w) in words.iter().enumerate() {
        let label = w.to_ascii_lowercase();
        let next = words
            .get(i + 1)
            .filter(|n| !matches!(n.to_ascii_lowercase().as_str(), "no" | "no." | "number"))
            .or_else(|| words.get(i + 2));
        match label.as_str() {
            "lot" | "lotno" | "lot-no" | "lotnumber" if lot.is_none() => {
                lot = next.map(|n| device_id(n));
            }
            "level" | "lvl" | "lev" if level.is_none() => {
                level = next.and_then(|n| (n.len() <= 12).then(|| redact(n)));
            }
            _ => {}
        }
    }
    (lot, level)
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
    let serial = sender_serial(sender, d);
    Some(Instrument {
        model: redact(&model),
        serial: device_id(&serial),
    })
}

/// Sysmex analyzers (model prefixes): H.5 is
/// `name^software version^analyzer serial^^^^PS code`.
const SYSMEX_PREFIXES: &[&str] = &[
    "XN-", "XP-", "XS-", "XT-", "XE-", "XW-", "XQ-", "KX-", "POCH", "UF-", "UC-", "CA-", "CS-",
    "BX-",
];

/// Horiba analyzers (model prefixes): H.5 is `name^serial^software version`.
const HORIBA_PREFIXES: &[&str] = &["H500", "H550", "H2500", "YUMIZEN", "PENTRA", "MICROS"];

/// The instrument's serial from the sender field (H.5), by the vendor's
/// layout when the model names one (see the module docs).
fn sender_serial(sender: &str, d: &Delimiters) -> String {
    let all: Vec<String> = sender
        .split(d.component)
        .map(|c| d.unescape(c).trim().to_string())
        .collect();
    let Some(name_at) = all.iter().position(|c| !c.is_empty()) else {
        return String::new();
    };
    let model = all[name_at].to_ascii_uppercase();
    let at = |n: usize| all.get(name_at + n).filter(|c| !c.is_empty()).cloned();
    let starts = |list: &[&str]| list.iter().any(|p| model.starts_with(p));
    let by_layout = if starts(SYSMEX_PREFIXES) {
        at(2).or_else(|| at(5)).or_else(|| at(6))
    } else if starts(HORIBA_PREFIXES) {
        at(1).filter(|c| !is_version(c))
    } else {
        None
    };
    if let Some(s) = by_layout {
        return s;
    }
    // Unknown layout: the last component after the name that has a digit
    // and is not shaped like a version number.
    all.iter()
        .skip(name_at + 1)
        .rev()
        .find(|c| c.bytes().any(|b| b.is_ascii_digit()) && !is_version(c))
        .cloned()
        .unwrap_or_default()
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
