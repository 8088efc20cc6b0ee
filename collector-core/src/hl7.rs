//! HL7 v2 messages (ORU^R01) to QC results.
//!
//! Delimiters come from MSH-1 (field) and MSH-2 (component, repeat, escape,
//! subcomponent); segments end in `\r`, `\n` or `\r\n`. Escape sequences
//! `\F\ \S\ \T\ \R\ \E\` and `\Xhh..\` are decoded after splitting; formatting
//! escapes (`\H\`, `\N\`, `\.br\`...) are removed.
//!
//! Rules (Architecture Invariant: no patient field reaches a record):
//! - PID, PD1, NK1, PV1, PV2, IN1, IN2, GT1, ORC and every segment not listed
//!   here are dropped whole (PID/PD1/NK1/PV1 counted as patient segments);
//! - each OBR opens an order group; the group is a QC run when OBR-4 (component 1
//!   or 2) is one of [`QC_ORDER_CODES`] or any SPM-11 in the group is `Q` or `C`;
//!   the decision is taken at the end of the group, because SPM follows OBX in
//!   ORU^R01 v2.5;
//! - OBX of a QC group become [`QcResult`]s; OBX of any other group are patient
//!   results and are dropped (counted);
//! - OBX-5 of type ED or RP, or any value that looks like base64, is dropped
//!   (counted as a comment); TX/FT/ST/CE/CWE text is redacted; NTE is dropped;
//! - the instrument is MSH-3 (sending application, model) and OBX-18 (equipment
//!   instance identifier, serial; HemoScreen sends it in OBX-15, producer's ID,
//!   used when OBX-18 is empty), falling back to the caller's instrument.
//!
//! Control lot: SPM-2 (specimen id, first component) of a QC specimen (SPM-11
//! `Q`/`C`) is the control material and becomes `control_lot`. HemoScreen puts
//! the control lot in PID-2 of its QC messages instead (`PID||PIX240205N`), so
//! PID-2 (first component, a plain device token only) is used as the lot of a QC
//! group without an SPM lot — and only when that PID carries no person: PID-3
//! (identifier list), PID-5 (name) and PID-7 (birth date) all empty. Every other
//! PID field is dropped as always, and a PID-2 never reaches a patient group.

use crate::records::{Instrument, QcResult, Record, Timestamp};
use crate::redact::{device_id, redact};
use crate::{ParseOutput, ParseStats, scan};

/// OBR-4 codes that mark a quality-control order (compared case-insensitively).
pub const QC_ORDER_CODES: &[&str] = &["LQC", "QC", "QCR", "CONTROL", "CTRL"];

/// Encoding characters declared in MSH-1/MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// Field separator (MSH-1).
    pub field: char,
    /// Component separator.
    pub component: char,
    /// Repetition separator.
    pub repeat: char,
    /// Escape character.
    pub escape: char,
    /// Subcomponent separator.
    pub subcomponent: char,
}

impl Default for Encoding {
    fn default() -> Self {
        Self {
            field: '|',
            component: '^',
            repeat: '~',
            escape: '\\',
            subcomponent: '&',
        }
    }
}

impl Encoding {
    /// Reads the encoding characters from an MSH segment; `None` if malformed.
    pub fn from_msh(msh: &str) -> Option<Self> {
        let mut c = msh.chars().skip(3);
        let field = c.next()?;
        let enc: Vec<char> = c.take_while(|x| *x != field).collect();
        if enc.len() < 2 || field.is_alphanumeric() {
            return None;
        }
        let d = Self {
            field,
            component: enc[0],
            repeat: enc[1],
            escape: enc.get(2).copied().unwrap_or('\\'),
            subcomponent: enc.get(3).copied().unwrap_or('&'),
        };
        let all = [d.field, d.component, d.repeat, d.escape, d.subcomponent];
        let distinct = (0..5).all(|i| (i + 1..5).all(|j| all[i] != all[j]));
        distinct.then_some(d)
    }

    /// Decodes HL7 escape sequences in one (sub)component.
    pub fn unescape(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(p) = scan::find(rest, self.escape) {
            out.push_str(&rest[..p]);
            let after = &rest[p + self.escape.len_utf8()..];
            let Some(q) = scan::find(after, self.escape) else {
                // No closing escape character: drop the dangling one.
                out.push_str(after);
                return out;
            };
            let seq = &after[..q];
            match seq {
                "F" => out.push(self.field),
                "S" => out.push(self.component),
                "T" => out.push(self.subcomponent),
                "R" => out.push(self.repeat),
                "E" => out.push(self.escape),
                ".br" => out.push(' '),
                _ if seq.starts_with('X') => {
                    let hex = &seq[1..];
                    let bytes: Vec<u8> = (0..hex.len() / 2)
                        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                        .collect();
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
                _ => {}
            }
            rest = &after[q + self.escape.len_utf8()..];
        }
        out.push_str(rest);
        out
    }
}

/// One segment split into fields, numbered as HL7 numbers them (`f(1)` is
/// SEG-1; for MSH, `f(1)` is the field separator and `f(2)` the encoding).
struct Segment<'a> {
    id: &'a str,
    fields: Vec<&'a str>,
}

impl<'a> Segment<'a> {
    fn new(line: &'a str, enc: &Encoding) -> Self {
        let fields: Vec<&str> = scan::split(line, enc.field).collect();
        let id = fields.first().copied().unwrap_or("");
        Self { id, fields }
    }
    fn f(&self, n: usize) -> &'a str {
        let idx = if self.id == "MSH" {
            n.saturating_sub(1)
        } else {
            n
        };
        if self.id == "MSH" && n == 1 {
            return "";
        }
        self.fields.get(idx).copied().unwrap_or("")
    }
    fn comp(&self, n: usize, c: usize, enc: &Encoding) -> String {
        let first_rep = scan::split(self.f(n), enc.repeat).next().unwrap_or("");
        let comp = scan::split(first_rep, enc.component)
            .nth(c - 1)
            .unwrap_or("");
        let sub = scan::split(comp, enc.subcomponent).next().unwrap_or("");
        enc.unescape(sub).trim().to_string()
    }
}

struct Group {
    qc: bool,
    run_time: Option<Timestamp>,
    /// SPM-2 of a QC specimen (role `Q`/`C`): the control material id.
    lot: Option<String>,
    /// PID-2 of a person-less PID in this message (HemoScreen's control lot).
    pid_lot: Option<String>,
    obx: Vec<QcResult>,
}

/// Parses one or more HL7 v2 messages. `fallback` names the instrument when
/// neither MSH-3 nor OBX-18 does.
pub fn parse(input: &[u8], fallback: &Instrument) -> ParseOutput {
    let text = scan::utf8_lossy(input);
    let text = crate::redact::normalize(&text);
    let mut stats = ParseStats::default();
    let mut records = Vec::new();
    let mut enc = Encoding::default();
    let mut model = fallback.model.clone();
    let mut group: Option<Group> = None;
    let mut pid_lot: Option<String> = None;
    for line in scan::split_cr_lf(&text) {
        // MLLP framing (VT ... FS CR) and stray control characters around a segment.
        let line = line.trim_matches(|c: char| c.is_control());
        if line.is_empty() {
            continue;
        }
        stats.records += 1;
        if line.starts_with("MSH") {
            close(&mut group, &mut records, &mut stats);
            pid_lot = None;
            stats.frames += 1;
            match Encoding::from_msh(line) {
                Some(e) => enc = e,
                None => {
                    stats.malformed_records += 1;
                    enc = Encoding::default();
                }
            }
            let seg = Segment::new(line, &enc);
            let app = seg.comp(3, 1, &enc);
            model = if app.is_empty() {
                fallback.model.clone()
            } else {
                redact(&app)
            };
            continue;
        }
        let seg = Segment::new(line, &enc);
        if seg.id.len() != 3 || !seg.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            stats.malformed_records += 1;
            continue;
        }
        match seg.id {
            "PID" | "PD1" | "NK1" | "PV1" | "PV2" | "IN1" | "IN2" | "IN3" | "GT1" | "MRG" => {
                stats.patient_records_dropped += 1;
                if seg.id == "PID" {
                    let person = [3, 5, 7].iter().any(|&n| !seg.f(n).trim().is_empty());
                    let lot = seg.comp(2, 1, &enc);
                    pid_lot = (!person && !lot.is_empty()).then(|| device_id(&lot));
                }
            }
            "NTE" => stats.comments_dropped += 1,
            "OBR" => {
                close(&mut group, &mut records, &mut stats);
                let code1 = seg.comp(4, 1, &enc);
                let code2 = seg.comp(4, 2, &enc);
                let qc = QC_ORDER_CODES
                    .iter()
                    .any(|q| q.eq_ignore_ascii_case(&code1) || q.eq_ignore_ascii_case(&code2));
                let run_time = Timestamp::parse_compact(&seg.comp(7, 1, &enc));
                group = Some(Group {
                    qc,
                    run_time,
                    lot: None,
                    pid_lot: pid_lot.clone(),
                    obx: Vec::new(),
                });
            }
            "SPM" => {
                let role = seg.comp(11, 1, &enc);
                let qc_role = role.eq_ignore_ascii_case("Q") || role.eq_ignore_ascii_case("C");
                if let Some(g) = group.as_mut().filter(|_| qc_role) {
                    g.qc = true;
                    let lot = seg.comp(2, 1, &enc);
                    if !lot.is_empty() {
                        g.lot = Some(device_id(&lot));
                    }
                }
            }
            "OBX" => match group.as_mut() {
                Some(g) => match obx(&seg, &enc, &model, fallback, g.run_time) {
                    Some(r) => g.obx.push(r),
                    None => stats.comments_dropped += 1,
                },
                None => stats.patient_results_dropped += 1,
            },
            _ => {}
        }
    }
    close(&mut group, &mut records, &mut stats);
    ParseOutput { records, stats }
}

fn close(group: &mut Option<Group>, records: &mut Vec<Record>, stats: &mut ParseStats) {
    if let Some(g) = group.take() {
        if g.qc {
            let lot = g.lot.or(g.pid_lot).unwrap_or_default();
            records.extend(g.obx.into_iter().map(|mut r| {
                if r.control_lot.is_empty() {
                    r.control_lot = lot.clone();
                }
                Record::Qc(r)
            }));
        } else {
            stats.patient_results_dropped += g.obx.len();
        }
    }
}

/// True for long runs of the base64 alphabet (an embedded document).
fn looks_like_base64(s: &str) -> bool {
    let s = s.trim();
    s.len() >= 40
        && !s.contains(' ')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

fn obx(
    seg: &Segment<'_>,
    enc: &Encoding,
    model: &str,
    fallback: &Instrument,
    group_time: Option<Timestamp>,
) -> Option<QcResult> {
    let vtype = seg.comp(2, 1, enc).to_ascii_uppercase();
    if matches!(vtype.as_str(), "ED" | "RP") {
        return None;
    }
    let raw = seg.f(5).split(enc.repeat).next().unwrap_or("");
    if raw.split(enc.component).any(looks_like_base64) {
        return None;
    }
    let value: String = match vtype.as_str() {
        "SN" => raw
            .split(enc.component)
            .map(|c| enc.unescape(c))
            .collect::<String>(),
        "NM" => enc.unescape(raw.split(enc.component).next().unwrap_or("")),
        _ => raw
            .split(enc.component)
            .map(|c| enc.unescape(c))
            .collect::<Vec<_>>()
            .join(" "),
    };
    let analyte = seg.comp(3, 1, enc);
    if analyte.is_empty() {
        return None;
    }
    let mut serial = seg.comp(18, 1, enc);
    if serial.is_empty() {
        serial = seg.comp(15, 1, enc);
    }
    Some(QcResult {
        instrument: Instrument {
            model: model.to_string(),
            serial: if serial.is_empty() {
                fallback.serial.clone()
            } else {
                device_id(&serial)
            },
        },
        analyte: redact(&analyte),
        value: redact(value.trim()),
        unit: redact(&seg.comp(6, 1, enc)),
        reference_range: redact(&seg.comp(7, 1, enc)),
        flags: seg
            .f(8)
            .split(enc.repeat)
            .map(|f| redact(enc.unescape(f).trim()))
            .filter(|f| !f.is_empty())
            .collect(),
        control_lot: String::new(),
        control_level: String::new(),
        run_time: Timestamp::parse_compact(&seg.comp(14, 1, enc)).or(group_time),
    })
}

/// End offsets (exclusive, increasing) of the complete messages at the start
/// of `input`, so that a reader of a growing file can stop at a message
/// boundary and resume there. A message ends where the next one begins (a
/// segment starting with `MSH`, optionally after an MLLP start block VT) or
/// after an MLLP end block (FS, and the CR after it). What follows the last end
/// may still be growing: plain HL7 files carry no end marker for their last
/// message, so the caller decides when that tail is complete.
pub fn message_ends(input: &[u8]) -> Vec<usize> {
    let mut ends: Vec<usize> = Vec::new();
    let push = |end: usize, ends: &mut Vec<usize>| {
        if end > 0 && ends.last().is_none_or(|last| *last < end) {
            ends.push(end);
        }
    };
    // A message starts only at the start of a line: at 0, or after a CR,
    // LF or FS. Those bytes are found with `memchr3` rather than by looking
    // at every byte (in the module, that loop took 3.5 times its native
    // time).
    let starts_message = |i: usize| {
        let rest = &input[i..];
        rest.starts_with(b"MSH") || (rest.first() == Some(&VT) && rest[1..].starts_with(b"MSH"))
    };
    if starts_message(0) {
        push(0, &mut ends);
    }
    for i in memchr::memchr3_iter(b'\r', b'\n', FS, input) {
        if input[i] == FS {
            let stop = if input.get(i + 1) == Some(&b'\r') {
                i + 2
            } else {
                i + 1
            };
            push(stop, &mut ends);
        }
        if starts_message(i + 1) {
            push(i + 1, &mut ends);
        }
    }
    ends
}

/// MLLP start block.
const VT: u8 = 0x0B;
/// MLLP end block.
const FS: u8 = 0x1C;

#[cfg(test)]
mod tests {
    use super::*;

    /// [`message_ends`] as it was written first, a byte at a time.
    fn message_ends_bytewise(input: &[u8]) -> Vec<usize> {
        let mut ends: Vec<usize> = Vec::new();
        let push = |end: usize, ends: &mut Vec<usize>| {
            if end > 0 && ends.last().is_none_or(|last| *last < end) {
                ends.push(end);
            }
        };
        for (i, &b) in input.iter().enumerate() {
            if b == FS {
                let stop = if input.get(i + 1) == Some(&b'\r') {
                    i + 2
                } else {
                    i + 1
                };
                push(stop, &mut ends);
                continue;
            }
            let at_line_start = i == 0 || matches!(input[i - 1], b'\r' | b'\n' | FS);
            if at_line_start
                && (input[i..].starts_with(b"MSH")
                    || (b == VT && input[i + 1..].starts_with(b"MSH")))
            {
                push(i, &mut ends);
            }
        }
        ends
    }

    /// Random inputs built from the pieces message boundaries are made of
    /// (and near misses of them): the same ends as the byte-at-a-time scan.
    #[test]
    fn message_ends_agrees_with_a_scan_of_every_byte() {
        const PIECES: &[&[u8]] = &[
            b"MSH",
            b"MS",
            b"SH",
            b"M",
            b"\x0b",
            b"\x1c",
            b"\r",
            b"\n",
            b"\r\n",
            b"|",
            b"PID",
            b"OBX|1",
            b"x",
            b"\x0bMSH",
            b"\x1c\r",
            b"\x1c\x1c",
            b"msh",
            b"\xc3\xa9",
        ];
        let mut next = crate::test_rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..next() % 24 {
                input.extend_from_slice(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            assert_eq!(
                message_ends(&input),
                message_ends_bytewise(&input),
                "{:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}
