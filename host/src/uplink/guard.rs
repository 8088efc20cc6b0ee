//! The host's PHI guard: an independent second check of every plaintext batch.
//!
//! The collector module scrubs patient identifiers itself (`collector-core`
//! replaces them with `[REDACTED:kind]`). The host does not trust the module or
//! its library: before a batch a module queued is compressed, sealed and spooled,
//! [`check`] looks at every string field of every record again, with its own
//! rules, written independently of the collector's. A batch that fails is not
//! sent; the caller audits the [`Violation`] and raises an event. A violation
//! names the record index, the field and the *kind* of identifier — never the
//! value, so it can be logged and uploaded safely.
//!
//! # Normalisation
//!
//! Before any rule runs, the text is normalised so that look-alike characters
//! cannot slip an identifier past the patterns:
//!
//! | Input | Becomes |
//! |---|---|
//! | full-width ASCII U+FF01–U+FF5E (`５５５－４４`) | ASCII (`555-44`) |
//! | zero-width U+200B–U+200D, U+2060, U+FEFF; soft hyphen U+00AD | removed |
//! | no-break and typographic spaces U+00A0, U+2000–U+200A, U+202F, U+205F, U+3000 | ASCII space |
//! | Unicode hyphens and minus U+2010–U+2015, U+2212, U+FE58, U+FE63 | `-` |
//! | U+0085, U+2028, U+2029 | line feed |
//!
//! `\d` in the patterns below is Unicode-aware, so non-ASCII decimal digits
//! count as digits too.
//!
//! # Fields
//!
//! | Class | Fields (names as reported in [`Violation::field`]) |
//! |---|---|
//! | free text | `instrument.model`; qc: `analyte`, `value`, `unit`, `reference-range`, `flags`, `control-level`; maintenance: `action`, `outcome`; event: `text`; software: `component`, `version` |
//! | device identifier | `instrument.serial`; qc: `control-lot`; event: `code` |
//!
//! # Rules for free-text fields
//!
//! Checked in this order; the first rule that fires is reported. "Context"
//! words are matched case-insensitively unless marked otherwise.
//!
//! | # | Finding | Fires on | Examples caught |
//! |---|---|---|---|
//! | 1 | [`Finding::PatientSegment`] | HL7 `PID\|`, `PD1\|`, `NK1\|`, `PV1\|` anywhere; ASTM patient record `P\|` at the start of the text, after CR, LF or STX, or right after a frame digit 0–7 | `PID\|1\|\|123^^^MRN`, `2P\|1\|` |
//! | 2 | [`Finding::Ssn`] | `ddd-dd-dddd` or `ddd dd dddd` as a whole word, unless a lot label comes right before it (`lot`, `lot no.`, `lot number`, `lot #`, then optionally `:`/`#`/`=`) — the collector keeps such control lots by the same rule | `555-44-4444`, `ssn 555 44 4444` (but not `QC lot 555-12-3456`) |
//! | 3 | [`Finding::Email`] | `local@domain.tld` | `jane.doe@example.org` |
//! | 4 | [`Finding::Phone`] | NANP `(ddd) ddd-dddd`, `ddd-ddd-dddd`, `ddd.ddd.dddd`; or `+` followed by 8–15 digits with separators (` .-()`), every digit group after the country code ≥ 2 digits, not a plain decimal number | `(217) 555-0123`, `217.555.0123`, `+1 217 555 0123`, `+44 20 7946 0958` |
//! | 5 | [`Finding::BirthDate`] | a date within 20 characters after `DOB`, `D.O.B`, `born`, `birth` (also `date of birth`, `birthdate`) | `DOB 3/4/1950`, `born 4 Mar 1950`, `date of birth: 19500304` |
//! | 6 | [`Finding::Mrn`] | after `MRN`, `MR#`, `medical record`, `account`, `acct`, `patient id`, `pt id`, `sample`, `specimen`, `accession`, `acc#` (optionally `id`/`no`/`number`/`#` and `:`/`=`/`-`): a value of up to 3 letters then digits, `-`, `/` with ≥ 4 digits in all | `MRN 0012345`, `acct# 88231`, `Sample 24-0627-0012` |
//! | 7 | [`Finding::PersonName`] | after `patient`, `name`, `called`, or (case-sensitive) `pt`/`Pt`, `Mr`, `Mrs`, `Ms`, `Mx`, `Dr` (then space, `.`, `:`, `=` or `#`): a word starting with a capital letter (A–Z, À–Þ), at least two letters or an initial with a dot — unless the word is device vocabulary (`Sample`, `Mode`, `ID`, `QC`, `Not`, ...; see `NAME_STOP_WORDS`) or `name` follows a device noun (`reagent name`, `file name`, ...) | `pt DOE`, `Patient: Smith`, `Dr. Who`, `name=Jane` |
//! | 8 | [`Finding::BirthDate`] | any date with a four-digit year 1900–1999 and no time of day after it (instruments do not report bare last-century dates; birth dates are) | `(SMITH, JOHN; 01/02/1960)` |
//!
//! Dates are recognised in these shapes (rules 5 and 8): `3/4/1950`, `03-04-50`,
//! `04.03.1950` (one separator kind per date), `1950-03-04`, `1950/3/4`,
//! `19500304` (year 18xx–20xx, valid month and day), `4 Mar 1950`, `4th March 1950`,
//! `March 4, 1950`, `Mar. 4 1950`.
//!
//! # Rule for device-identifier fields
//!
//! | Finding | Fires on |
//! |---|---|
//! | [`Finding::Email`] | an e-mail address (rule 3), after normalisation |
//! | [`Finding::Phone`] | a phone number (rule 4), after normalisation |
//! | [`Finding::NotADeviceToken`] | anything but ASCII letters, digits and `. - _ / :`, or longer than 64 bytes (checked on the raw value, so spaces and invisible characters fail) |
//!
//! An SSN-shaped control lot (`555-12-3456`) is a plain token and passes: the
//! collector keeps lot numbers that look like SSNs when the context says lot.
//! Empty identifiers pass (a control lot may be empty).
//!
//! # What passes by construction
//!
//! Redaction markers (`[REDACTED:name]`, `[REDACTED:id]`) start with `[`, which
//! no value pattern accepts after a context word. Run timestamps
//! (`2024-06-27 13:54:07`, `20240627135407`), reference ranges (`4.3-5.5`),
//! units (`10*3/uL`), error codes (`E-1203`), lots (`LOT4711`, `PIX240205N`) and
//! serials (`BD634545`, `0000000-0001-HS`) match none of the rules; the tests
//! check this as hard as the true positives.
//!
//! # Known limits
//!
//! The guard is a backstop, tuned to refuse little device data, so it does not
//! look for everything the collector redacts: bare `LAST, FIRST` names without
//! a context word or old date (analyte lists like `NEUT, LYMPH` have the same
//! shape), bare 9-digit SSNs, recent dates without context, street addresses,
//! URLs and IP addresses are not detected here.
//!
//! # Cost
//!
//! Every pattern is compiled once (`OnceLock`) and runs on the `regex` crate's
//! linear-time engines; post-filters look at each match once. A batch costs
//! time linear in its size.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use outpost_protocol::{Instrument, Record};
use regex::Regex;
use serde::Serialize;

/// What kind of identifier the guard found (never the value itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Finding {
    /// A social-security-number-shaped number in free text.
    Ssn,
    /// A date of birth: a date after a birth context word, or a bare date from
    /// the last century.
    BirthDate,
    /// An e-mail address.
    Email,
    /// A telephone or fax number.
    Phone,
    /// A raw HL7 patient segment (`PID`, `PD1`, `NK1`, `PV1`) or ASTM patient
    /// record (`P|`).
    PatientSegment,
    /// A person's name after a context word (`patient`, `pt`, `Mr`, ...).
    PersonName,
    /// A medical record, account, patient-id or sample/accession number after
    /// its label.
    Mrn,
    /// A device-identifier field (serial, lot, code) that is not a plain
    /// device token.
    NotADeviceToken,
}

impl Finding {
    /// A human-readable description of the kind of finding (no value).
    pub fn describe(self) -> &'static str {
        match self {
            Finding::Ssn => "SSN-shaped number",
            Finding::BirthDate => "date of birth",
            Finding::Email => "e-mail address",
            Finding::Phone => "phone number",
            Finding::PatientSegment => "raw patient segment or record",
            Finding::PersonName => "person name",
            Finding::Mrn => "medical record, account or sample number",
            Finding::NotADeviceToken => "not a plain device token",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Where: record index in the batch, and field name (e.g. "text", "analyte",
/// "control-lot"; the instrument's fields are "instrument.model" and
/// "instrument.serial").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Index of the record in the batch, from 0.
    pub record: usize,
    /// The field, named as in the record's JSON (kebab-case).
    pub field: &'static str,
    /// What kind of identifier was found.
    pub finding: Finding,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record {}, field `{}`: {}",
            self.record, self.field, self.finding
        )
    }
}

impl std::error::Error for Violation {}

/// Checks a batch; `Ok(())` or the first violation found (records in order,
/// fields in declaration order, rules in the order of the module docs).
pub fn check(records: &[Record]) -> Result<(), Violation> {
    for (index, record) in records.iter().enumerate() {
        check_record(record).map_err(|(field, finding)| Violation {
            record: index,
            field,
            finding,
        })?;
    }
    Ok(())
}

type Hit = (&'static str, Finding);

fn check_record(record: &Record) -> Result<(), Hit> {
    match record {
        Record::Qc(q) => {
            instrument(&q.instrument)?;
            text("analyte", &q.analyte)?;
            text("value", &q.value)?;
            text("unit", &q.unit)?;
            text("reference-range", &q.reference_range)?;
            for flag in &q.flags {
                text("flags", flag)?;
            }
            token("control-lot", &q.control_lot)?;
            text("control-level", &q.control_level)?;
        }
        Record::Maintenance(m) => {
            instrument(&m.instrument)?;
            text("action", &m.action)?;
            text("outcome", &m.outcome)?;
        }
        Record::Event(e) => {
            instrument(&e.instrument)?;
            token("code", &e.code)?;
            text("text", &e.text)?;
        }
        Record::Software(s) => {
            instrument(&s.instrument)?;
            text("component", &s.component)?;
            text("version", &s.version)?;
        }
        Record::Heartbeat(h) => instrument(&h.instrument)?,
    }
    Ok(())
}

fn instrument(i: &Instrument) -> Result<(), Hit> {
    text("instrument.model", &i.model)?;
    token("instrument.serial", &i.serial)
}

fn text(field: &'static str, value: &str) -> Result<(), Hit> {
    match free_text(value) {
        Some(finding) => Err((field, finding)),
        None => Ok(()),
    }
}

fn token(field: &'static str, value: &str) -> Result<(), Hit> {
    match device_token(value) {
        Some(finding) => Err((field, finding)),
        None => Ok(()),
    }
}

/// Folds look-alike characters (see the module docs); borrows ASCII input.
fn normalize(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .filter_map(|c| match c {
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0),
                '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}' => None,
                '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => {
                    Some(' ')
                }
                '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' => Some('-'),
                '\u{0085}' | '\u{2028}' | '\u{2029}' => Some('\n'),
                _ => Some(c),
            })
            .collect(),
    )
}

struct Rules {
    patient_segment: Regex,
    ssn: Regex,
    lot_before: Regex,
    email: Regex,
    phone_nanp: Regex,
    phone_intl: Regex,
    dob: Regex,
    date: Regex,
    labelled_id: Regex,
    name_context: Regex,
    device_noun_before: Regex,
}

/// Words after a name context word that are device vocabulary, not names
/// (compared case-insensitively, without a trailing dot).
const NAME_STOP_WORDS: &[&str] = &[
    "sample",
    "samples",
    "specimen",
    "mode",
    "result",
    "results",
    "data",
    "test",
    "tests",
    "run",
    "runs",
    "queue",
    "record",
    "records",
    "report",
    "type",
    "id",
    "identifier",
    "list",
    "info",
    "information",
    "field",
    "file",
    "name",
    "number",
    "no",
    "count",
    "error",
    "unknown",
    "missing",
    "empty",
    "required",
    "invalid",
    "qc",
    "control",
    "order",
    "orders",
    "rack",
    "tube",
    "position",
    "barcode",
    "demographics",
    "is",
    "not",
    "none",
    "priority",
    "stat",
    "routine",
    "mismatch",
    "unavailable",
];

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let re = |p: &str| Regex::new(p).expect("static guard pattern compiles");
        let month = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)";
        let ordinal = r"(?:st|nd|rd|th)?";
        let date = format!(
            r"(?i:\b(?:\d{{1,2}}/\d{{1,2}}/\d{{2,4}}|\d{{1,2}}\.\d{{1,2}}\.\d{{2,4}}|\d{{1,2}}-\d{{1,2}}-\d{{2,4}}|\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{4}}/\d{{1,2}}/\d{{1,2}}|\d{{4}}\.\d{{1,2}}\.\d{{1,2}}|(?:1[89]|20)\d{{2}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])|\d{{1,2}}{ordinal}[ \-]{month}\.?,?[ \-]\d{{2,4}}|{month}\.?[ ]\d{{1,2}}{ordinal},?[ ]\d{{4}})\b)"
        );
        Rules {
            patient_segment: re(r"(?i)(?:PID|PD1|NK1|PV1)\||(?:\A|[\r\n\x02]|\b[0-7])P\|"),
            ssn: re(r"\b\d{3}[- ]\d{2}[- ]\d{4}\b"),
            lot_before: re(r"(?i)\blot\s*(?:no\.?|number|#)?\s*[:#=]?\s*$"),
            email: re(r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}\b"),
            phone_nanp: re(r"\(\d{3}\)[ .\-]?\d{3}[ .\-]?\d{4}\b|\b\d{3}[.\-]\d{3}[.\-]\d{4}\b"),
            phone_intl: re(r"\+\(?\d(?:[ .\-()]{0,2}\d){7,14}\b"),
            dob: re(&format!(
                r"(?i)(?:\bd\.?\s?o\.?\s?b\b|\bborn\b|birth)[^\r\n]{{0,20}}?{date}"
            )),
            date: re(&date),
            labelled_id: re(
                r"(?i)(?:\b(?:mrn|acct|account|sample|specimen|accession)\b|\bmr\s?#|\bacc\s?#|\bmedical\s+rec(?:ord)?s?\b|\bpatient\s*id\b|\bpt\.?\s*id\b)(?:\s*(?:id\b|no\b\.?|number\b|nr\b\.?|#))?\s*[:#=\-]?\s*(?P<value>[a-z]{0,3}\d[\d\-/]*)",
            ),
            name_context: re(
                r"(?:\b(?P<label>(?i:patient|name|called))\b|\b(?:[Pp]t|Mrs|Mr|Ms|Mx|Dr)\b)(?:\.?\s*[:#=]\s*|\.\s*|\s+)(?P<name>[A-ZÀ-ÖØ-Þ](?:[A-Za-zÀ-ÖØ-öø-ÿ'’\-]+|\.))",
            ),
            device_noun_before: re(
                r"(?i)\b(?:reagent|file|host|computer|printer|test|analyte|assay|component|module|product|material|calibrator|control|kit|device|instrument|model|parameter|method|package|folder|network)\s*$",
            ),
        }
    })
}

/// The free-text rules of the module docs; `None` when the text is clean.
/// Also applied to the lines modules write to the host log.
pub(crate) fn free_text(raw: &str) -> Option<Finding> {
    let normalized = normalize(raw);
    let s: &str = &normalized;
    let r = rules();
    if r.patient_segment.is_match(s) {
        Some(Finding::PatientSegment)
    } else if r
        .ssn
        .find_iter(s)
        .any(|m| !r.lot_before.is_match(&s[..m.start()]))
    {
        Some(Finding::Ssn)
    } else if r.email.is_match(s) {
        Some(Finding::Email)
    } else if has_phone(s, r) {
        Some(Finding::Phone)
    } else if r.dob.is_match(s) {
        Some(Finding::BirthDate)
    } else if has_labelled_id(s, r) {
        Some(Finding::Mrn)
    } else if has_context_name(s, r) {
        Some(Finding::PersonName)
    } else if has_old_date(s, r) {
        Some(Finding::BirthDate)
    } else {
        None
    }
}

/// The device-identifier rule of the module docs.
fn device_token(raw: &str) -> Option<Finding> {
    let s = normalize(raw);
    let r = rules();
    if r.email.is_match(&s) {
        return Some(Finding::Email);
    }
    if has_phone(&s, r) {
        return Some(Finding::Phone);
    }
    let plain = raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b':'));
    if plain {
        None
    } else {
        Some(Finding::NotADeviceToken)
    }
}

fn has_phone(s: &str, r: &Rules) -> bool {
    if r.phone_nanp.is_match(s) {
        return true;
    }
    r.phone_intl
        .find_iter(s)
        .any(|m| plausible_international(m.as_str()))
}

/// `+` then digit groups: a plain decimal (`+12.345678`) or a group of one
/// digit after the country code (`+37.0 37.1 37.2`) is a measurement. A trunk
/// prefix `(0)` (`+44 (0)20 ...`) is ignored.
fn plausible_international(m: &str) -> bool {
    let body = m[1..].replace("(0)", "");
    let separators: Vec<char> = body.chars().filter(|c| !c.is_numeric()).collect();
    if separators == ['.'] {
        return false;
    }
    body.split(|c: char| !c.is_numeric())
        .filter(|g| !g.is_empty())
        .skip(1)
        .all(|g| g.chars().count() >= 2)
}

fn has_labelled_id(s: &str, r: &Rules) -> bool {
    r.labelled_id.captures_iter(s).any(|c| {
        c.name("value")
            .is_some_and(|v| v.as_str().chars().filter(|c| c.is_numeric()).count() >= 4)
    })
}

fn has_context_name(s: &str, r: &Rules) -> bool {
    let mut at = 0;
    while let Some(c) = r.name_context.captures_at(s, at) {
        let name = c.name("name").expect("group `name` always participates");
        let word = name.as_str().trim_end_matches('.');
        let stop = NAME_STOP_WORDS.iter().any(|w| w.eq_ignore_ascii_case(word));
        let device_noun = c.name("label").is_some_and(|label| {
            label.as_str().eq_ignore_ascii_case("name") && {
                let from = floor_boundary(s, label.start().saturating_sub(24));
                r.device_noun_before.is_match(&s[from..label.start()])
            }
        });
        if !stop && !device_noun {
            return true;
        }
        // Rejected: search again from the candidate word, which may itself be
        // a context word ("Patient Name: Smith").
        at = name.start();
    }
    false
}

fn has_old_date(s: &str, r: &Rules) -> bool {
    r.date.find_iter(s).any(|m| {
        let before = &s[..m.start()];
        let after = &s[m.end()..];
        // Part of a longer dotted number or a version string (`v1.2.1999`).
        let glued = before.ends_with(['.', 'v', 'V'])
            || (after.starts_with('.') && after[1..].starts_with(|c: char| c.is_ascii_digit()));
        !glued && !starts_with_time(after) && old_valid_date(m.as_str())
    })
}

/// `[T ]h:mm` right after a date: a timestamp, not a birth date.
fn starts_with_time(after: &str) -> bool {
    let Some(rest) = after.strip_prefix(['T', ' ']) else {
        return false;
    };
    let hours = rest.bytes().take_while(u8::is_ascii_digit).count();
    (1..=2).contains(&hours)
        && rest[hours..].starts_with(':')
        && rest[hours + 1..].starts_with(|c: char| c.is_ascii_digit())
}

/// A plausible calendar date whose year is 1900..=1999.
fn old_valid_date(date: &str) -> bool {
    let groups: Vec<&str> = date
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let num = |g: &str| g.parse::<u32>().unwrap_or(0);
    let year = match groups.as_slice() {
        // Compact yyyymmdd: the pattern already checked month and day.
        [compact] if compact.len() == 8 => num(&compact[..4]),
        // yyyy-mm-dd.
        [y, m, d] if y.len() == 4 => {
            if !(1..=12).contains(&num(m)) || !(1..=31).contains(&num(d)) {
                return false;
            }
            num(y)
        }
        // d/m/yyyy or m/d/yyyy.
        [a, b, y] if y.len() == 4 => {
            let (a, b) = (num(a), num(b));
            if !(1..=31).contains(&a) || !(1..=31).contains(&b) || (a > 12 && b > 12) {
                return false;
            }
            num(y)
        }
        // Month-name forms: day and year.
        [_, y] if y.len() == 4 => num(y),
        _ => return false,
    };
    (1900..=1999).contains(&year)
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::{
        Heartbeat, InstallState, InstrumentEvent, MaintenanceEvent, QcResult, Severity,
        SoftwareStatus, Timestamp,
    };

    fn hemoscreen() -> Instrument {
        Instrument {
            model: "HemoScreen".into(),
            serial: "0000000-0001-HS".into(),
        }
    }

    fn qc() -> QcResult {
        QcResult {
            instrument: hemoscreen(),
            analyte: "WBC".into(),
            value: "11.0".into(),
            unit: "10*3/uL".into(),
            reference_range: "5.9-9.3".into(),
            flags: vec!["H".into()],
            control_lot: "PIX240205N".into(),
            control_level: "High".into(),
            run_time: Some(Timestamp {
                seconds: 1_719_496_447,
                nanoseconds: 0,
            }),
        }
    }

    fn event_with(code: &str, text: &str) -> Record {
        Record::Event(InstrumentEvent {
            instrument: hemoscreen(),
            severity: Severity::Warning,
            code: code.into(),
            text: text.into(),
            time: None,
        })
    }

    fn event(text: &str) -> Record {
        event_with("E-1203", text)
    }

    fn maintenance(action: &str, outcome: &str) -> Record {
        Record::Maintenance(MaintenanceEvent {
            instrument: hemoscreen(),
            action: action.into(),
            outcome: outcome.into(),
            time: None,
        })
    }

    fn software(component: &str, version: &str) -> Record {
        Record::Software(SoftwareStatus {
            instrument: hemoscreen(),
            component: component.into(),
            version: version.into(),
            state: InstallState::Installed,
        })
    }

    fn heartbeat(instrument: Instrument) -> Record {
        Record::Heartbeat(Heartbeat {
            instrument,
            time: Timestamp::default(),
        })
    }

    /// The finding for `text` in an event's `text` field, asserting the location.
    fn text_finding(text: &str) -> Option<Finding> {
        match check(&[event(text)]) {
            Ok(()) => None,
            Err(v) => {
                assert_eq!((v.record, v.field), (0, "text"), "{text:?}");
                Some(v.finding)
            }
        }
    }

    fn assert_clean(text: &str) {
        assert_eq!(text_finding(text), None, "false positive: {text:?}");
    }

    fn assert_finding(text: &str, finding: Finding) {
        assert_eq!(text_finding(text), Some(finding), "{text:?}");
    }

    const DEVICE_TEXTS: &[&str] = &[
        "E-1203 reagent probe pressure 52 kPa out of range 30-45",
        "Sample [REDACTED:id] ([REDACTED:name]; [REDACTED:date]) aspirated",
        "Patient: [REDACTED:name] DOB [REDACTED:date] MRN [REDACTED:id]",
        "pt [REDACTED:name], Dr [REDACTED:name] called [REDACTED:name]",
        "WBC 11.0 10*3/uL 5.9-9.3 lot PIX240205N serial 0000000-0001-HS",
        "Run started 2024-06-27 13:54:07",
        "Run started 2024-06-27T13:54:07Z",
        "Result time 20240627135407",
        "Calibration due 2024-07-01, last calibrated 27.06.2024",
        "QC lot LOT4711 expires 2025-03-31",
        "Reference range 4.3-5.5 10*6/uL, HGB 13.5-17.5 g/dL, PLT 150-450",
        "Serial BD634545 firmware 2.3.1 (build 20240627)",
        "Clock reset to 1970-01-01 00:00:00",
        "Temp +37.0 37.1 37.2 C, drift +0.012345678",
        "Patient sample mode enabled",
        "Patient Sample aspirated; Patient Results transmitted to LIS",
        "Patient ID [REDACTED:id] not found in worklist",
        "Patient Name: [REDACTED:name]",
        "PT Normal Control within range, PT/INR 1.02",
        "Reagent name: Diluent, File name Export.csv",
        "Sample volume 20 uL, sample 3 of 12 processed",
        "Service account locked after 3 failed logins",
        "Hostname LAB-PC-07 IP 192.168.1.20 port 2575",
        "OBX|1|NM|6690-2^WBC^LN||7.1|10*3/uL|4.5-11.0|N",
        "Firmware v1.2.1999 installed",
        "Pressure 1013 hPa, flow 2.5 mL/min, count 12000",
        "WBC, RBC, HGB, NEUT, LYMPH flagged",
        "user admin@localhost logged in",
        "Temperature -5.2 C",
        "",
    ];

    #[test]
    fn device_texts_pass() {
        for text in DEVICE_TEXTS {
            assert_clean(text);
        }
    }

    #[test]
    fn realistic_device_batch_passes() {
        let mut records = vec![Record::Qc(qc())];
        records.extend(DEVICE_TEXTS.iter().map(|t| event(t)));
        records.push(maintenance("probe cleaning", "ok"));
        records.push(maintenance(
            "daily shutdown with Cleaning Solution",
            "failed",
        ));
        records.push(software("analyzer-firmware", "2.3.1-rc1"));
        records.push(software("LIS interface", "2024.06.27"));
        records.push(heartbeat(Instrument {
            model: "XN-550".into(),
            serial: "BD634545".into(),
        }));
        records.push(event_with("E-1203", "probe blocked"));
        records.push(event_with("ERR_0042", "ok"));
        records.push(event_with("", "ok"));
        let mut lots = qc();
        lots.control_lot = "LOT4711".into();
        records.push(Record::Qc(lots));
        let mut empty = qc();
        empty.control_lot.clear();
        empty.control_level.clear();
        empty.reference_range.clear();
        records.push(Record::Qc(empty));
        for serial in ["BD634545", "0000000-0001-HS", "A1:B2/C3_D4.E5", "12345"] {
            records.push(heartbeat(Instrument {
                model: "XN-550".into(),
                serial: serial.into(),
            }));
        }
        assert_eq!(check(&records), Ok(()));
    }

    #[test]
    fn each_finding_caught_in_its_field() {
        let good = || Record::Qc(qc());
        let with_qc = |f: &dyn Fn(&mut QcResult)| {
            let mut q = qc();
            f(&mut q);
            Record::Qc(q)
        };
        let cases: Vec<(Record, &str, Finding)> = vec![
            (
                event("Operator SSN 555-44-4444 on file"),
                "text",
                Finding::Ssn,
            ),
            (
                maintenance("probe cleaning DOB 3/4/1950", "ok"),
                "action",
                Finding::BirthDate,
            ),
            (
                maintenance("probe cleaning", "reported to jane.doe@example.org"),
                "outcome",
                Finding::Email,
            ),
            (
                with_qc(&|q| q.value = "call (217) 555-0123".into()),
                "value",
                Finding::Phone,
            ),
            (
                with_qc(&|q| q.analyte = "PID|1||0012345^^^MRN".into()),
                "analyte",
                Finding::PatientSegment,
            ),
            (
                with_qc(&|q| q.flags = vec!["H".into(), "patient Smith".into()]),
                "flags",
                Finding::PersonName,
            ),
            (
                with_qc(&|q| q.reference_range = "MRN 0012345".into()),
                "reference-range",
                Finding::Mrn,
            ),
            (
                with_qc(&|q| q.unit = "born 4 Mar 1950".into()),
                "unit",
                Finding::BirthDate,
            ),
            (
                with_qc(&|q| q.control_level = "Mrs Jones".into()),
                "control-level",
                Finding::PersonName,
            ),
            (
                with_qc(&|q| q.control_lot = "LOT 4711".into()),
                "control-lot",
                Finding::NotADeviceToken,
            ),
            (
                with_qc(&|q| q.control_lot = "217-555-0123".into()),
                "control-lot",
                Finding::Phone,
            ),
            (event_with("jane@example.org", "ok"), "code", Finding::Email),
            (
                heartbeat(Instrument {
                    model: "XN-550".into(),
                    serial: "+44 20 7946 0958".into(),
                }),
                "instrument.serial",
                Finding::Phone,
            ),
            (
                heartbeat(Instrument {
                    model: "XN-550 owned by Dr. Smith".into(),
                    serial: "BD634545".into(),
                }),
                "instrument.model",
                Finding::PersonName,
            ),
            (
                software("analyzer-firmware", "acct 88231"),
                "version",
                Finding::Mrn,
            ),
            (software("pt id 55123", "1.0"), "component", Finding::Mrn),
        ];
        for (position, (bad, field, finding)) in cases.into_iter().enumerate() {
            let index = position % 3 + 1;
            let mut batch = vec![good(); index];
            batch.push(bad);
            batch.push(good());
            let v = check(&batch).expect_err(field);
            assert_eq!(
                v,
                Violation {
                    record: index,
                    field,
                    finding
                }
            );
        }
    }

    #[test]
    fn first_violation_is_reported() {
        let batch = [Record::Qc(qc()), event("MRN 0012345"), event("555-44-4444")];
        let v = check(&batch).unwrap_err();
        assert_eq!((v.record, v.field, v.finding), (1, "text", Finding::Mrn));
        assert_eq!(check(&[]), Ok(()));
    }

    #[test]
    fn display_never_contains_the_value() {
        let values = [
            "555-44-4444",
            "jane.doe@example.org",
            "(217) 555-0123",
            "DOB 3/4/1950",
            "PID|1||0012345",
            "patient Smith",
            "MRN 0012345",
        ];
        for value in values {
            let v = check(&[Record::Qc(qc()), event(value)]).unwrap_err();
            let shown = v.to_string();
            assert!(shown.starts_with("record 1, field `text`: "), "{shown}");
            let json = serde_json::to_string(&v).unwrap();
            for part in value
                .split([' ', '|', '@', '(', ')'])
                .filter(|p| p.len() > 2)
            {
                assert!(!shown.contains(part), "{shown} shows {part}");
                assert!(!json.contains(part), "{json} shows {part}");
            }
        }
        let v = Violation {
            record: 3,
            field: "text",
            finding: Finding::Ssn,
        };
        assert_eq!(v.to_string(), "record 3, field `text`: SSN-shaped number");
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({"record": 3, "field": "text", "finding": "ssn"})
        );
    }

    #[test]
    fn ssn_shaped_lot_passes_in_control_lot_but_fails_in_text() {
        let mut q = qc();
        q.control_lot = "555-12-3456".into();
        assert_eq!(check(&[Record::Qc(q)]), Ok(()));
        assert_finding("555-12-3456", Finding::Ssn);
        assert_finding("ssn 555 12 3456", Finding::Ssn);
        // Right after a lot label it is a control lot (the collector keeps it too).
        for text in [
            "control lot 555-12-3456 expired",
            "QC lot 555-12-3456 level 2 within limits",
            "Lot#: 555-12-3456",
            "lot no. 555 12 3456",
        ] {
            assert_clean(text);
        }
        assert_finding("lot 555-12-3456, patient SSN 555-44-4444", Finding::Ssn);
        assert_finding("lot is 555-12-3456", Finding::Ssn);
        let mut q = qc();
        q.value = "555-12-3456".into();
        let v = check(&[Record::Qc(q)]).unwrap_err();
        assert_eq!((v.field, v.finding), ("value", Finding::Ssn));
    }

    #[test]
    fn full_width_and_zero_width_evasions_caught() {
        assert_finding("５５５-４４-４４４４", Finding::Ssn);
        assert_finding("５５５－４４－４４４４", Finding::Ssn);
        assert_finding("555\u{200B}-44-4444", Finding::Ssn);
        assert_finding("5\u{FEFF}55-4\u{2060}4-44\u{200D}44", Finding::Ssn);
        assert_finding("555\u{2011}44\u{2013}4444", Finding::Ssn);
        assert_finding("555\u{00A0}44\u{3000}4444", Finding::Ssn);
        assert_finding("ｊａｎｅ＠ｅｘａｍｐｌｅ．ｏｒｇ", Finding::Email);
        assert_finding("ＰＩＤ｜1", Finding::PatientSegment);
        assert_finding("Ｄ\u{200B}ＯＢ 3/4/1950", Finding::BirthDate);
        assert_finding("M\u{200C}RN 0012345", Finding::Mrn);
        // Identifier fields: the specific finding from the normalised value,
        // and never a token when invisible characters are present.
        let mut q = qc();
        q.control_lot = "２１７-５５５-０１２３".into();
        assert_eq!(check(&[Record::Qc(q)]).unwrap_err().finding, Finding::Phone);
        let mut q = qc();
        q.control_lot = "PIX\u{200B}240205N".into();
        assert_eq!(
            check(&[Record::Qc(q)]).unwrap_err().finding,
            Finding::NotADeviceToken
        );
    }

    #[test]
    fn patient_line_fails() {
        assert!(text_finding("pt DOE, JANE DOB 3/4/1950 MRN 0012345").is_some());
        assert!(text_finding("Sample 24-0627-0012 (SMITH, JOHN; 01/02/1960)").is_some());
        // Each signal on its own is enough.
        assert_finding("pt DOE", Finding::PersonName);
        assert_finding("JANE DOB 3/4/1950", Finding::BirthDate);
        assert_finding("Sample 24-0627-0012 aspirated", Finding::Mrn);
        assert_finding("(SMITH, JOHN; 01/02/1960)", Finding::BirthDate);
    }

    #[test]
    fn patient_segments_caught() {
        for text in [
            "PID|1||0012345^^^HOSP^MR||DOE^JANE||19500304|F",
            "MSH|^~\\&|LIS\rPID|1||123",
            "value PD1|||",
            "NK1|1|DOE^JOHN|SPO",
            "PV1|1|O",
            "P|1||0012345||DOE^JANE",
            "H|\\^&|||\rP|1|",
            "H|\\^&|||\nP|1|",
            "\u{2}2P|1|",
            "2P|1|",
        ] {
            assert_finding(text, Finding::PatientSegment);
        }
        for text in ["O|1|SID||^^^WBC", "R|1|^^^WBC|7.1", "HTTP|ok", "GRP|1"] {
            assert_clean(text);
        }
    }

    #[test]
    fn phones_caught() {
        for text in [
            "call (217) 555-0123",
            "call (217)555-0123",
            "217-555-0123",
            "217.555.0123",
            "+1 217 555 0123",
            "+1-217-555-0123",
            "+44 20 7946 0958",
            "+44 (0)20 7946 0958",
            "+4420794609581",
            "+49 30 12345678",
        ] {
            assert_finding(text, Finding::Phone);
        }
        for text in ["+5 C", "+12.345678", "range 30-45", "+37.0 37.1 37.2"] {
            assert_clean(text);
        }
    }

    #[test]
    fn emails_caught() {
        for text in [
            "jane.doe@example.org",
            "mail J_DOE+lab@mail.example.co.uk now",
        ] {
            assert_finding(text, Finding::Email);
        }
    }

    #[test]
    fn birth_dates_caught_by_context_in_every_format() {
        for date in [
            "3/4/1950",
            "03/04/50",
            "1950-03-04",
            "1950/3/4",
            "19500304",
            "04.03.1950",
            "4 Mar 1950",
            "4th March 1950",
            "March 4, 1950",
            "Mar. 4 1950",
            "2015-06-01",
        ] {
            for context in [
                "DOB",
                "D.O.B.",
                "dob:",
                "born",
                "date of birth",
                "Birthdate =",
            ] {
                assert_finding(&format!("{context} {date}"), Finding::BirthDate);
            }
        }
        // Context within about 20 characters only.
        assert_finding("DOB (as entered) 2015-06-01", Finding::BirthDate);
        assert_clean("DOB (as entered at registration) 2015-06-01");
    }

    #[test]
    fn old_dates_caught_without_context() {
        for text in [
            "01/02/1960",
            "1960-01-02",
            "19600102",
            "2 Jan 1960",
            "January 2, 1960",
            "31.12.1999",
        ] {
            assert_finding(text, Finding::BirthDate);
        }
        for text in [
            "1999-12-31 23:59:59",
            "1970-01-01T00:00:00",
            "2024-06-27",
            "06/27/2024",
            "version 4.3.1.1999",
            "version 3.10.1999.2",
            "13/13/1960",
            "1960-13-01",
        ] {
            assert_clean(text);
        }
    }

    #[test]
    fn record_numbers_caught_by_context() {
        for text in [
            "MRN 0012345",
            "MRN:0012345",
            "mr# 445566",
            "Medical record number 445566",
            "account 10020304",
            "acct# 88231",
            "Patient ID: 12345",
            "pt id 55123",
            "Sample 24-0627-0012",
            "Specimen no. 2406270012",
            "accession A1234567",
        ] {
            assert_finding(text, Finding::Mrn);
        }
        for text in [
            "MRN 123",
            "Sample 12",
            "account locked",
            "Sample [REDACTED:id]",
        ] {
            assert_clean(text);
        }
    }

    #[test]
    fn names_caught_by_context() {
        for text in [
            "patient Smith",
            "Patient: SMITH",
            "PATIENT=Jones",
            "pt DOE",
            "Pt. Müller",
            "name: Jane",
            "Patient Name: Smith",
            "Mr Smith",
            "Mrs. Jones",
            "Ms Brown",
            "Dr. Who",
            "called Ørsted",
            "patient J. Doe",
        ] {
            assert_finding(text, Finding::PersonName);
        }
        for text in [
            "patient smith",
            "Patient [REDACTED:name]",
            "Dr [REDACTED:name]",
            "patients Smith",
            "PT Normal",
            "MS Detector ready",
            "Reagent name Diluent",
            "called [REDACTED:name]",
            "Patient QC",
        ] {
            assert_clean(text);
        }
    }

    #[test]
    fn device_tokens() {
        for good in [
            "",
            "BD634545",
            "0000000-0001-HS",
            "PIX240205N",
            "555-12-3456",
            "E-1203",
        ] {
            assert_eq!(device_token(good), None, "{good:?}");
        }
        let long = "A".repeat(65);
        for (bad, finding) in [
            ("LOT 4711", Finding::NotADeviceToken),
            ("Smith^John", Finding::NotADeviceToken),
            ("PID|1", Finding::NotADeviceToken),
            (long.as_str(), Finding::NotADeviceToken),
            ("LÖT1", Finding::NotADeviceToken),
            (" BD634545", Finding::NotADeviceToken),
            ("a@b.org", Finding::Email),
            ("217.555.0123", Finding::Phone),
            ("+12175550123", Finding::Phone),
        ] {
            assert_eq!(device_token(bad), Some(finding), "{bad:?}");
        }
        assert_eq!(device_token(&"A".repeat(64)), None);
    }

    #[test]
    fn large_batch_is_checked() {
        let batch: Vec<Record> = (0..1000)
            .map(|i| match i % 3 {
                0 => Record::Qc(qc()),
                1 => event("E-1203 reagent probe pressure 52 kPa out of range 30-45"),
                _ => event(&format!("Run {i} started 2024-06-27 13:54:07")),
            })
            .collect();
        assert_eq!(check(&batch), Ok(()));
        let mut bad = batch;
        bad[999] = event("DOB 1950-03-04");
        assert_eq!(check(&bad).unwrap_err().record, 999);
    }
}
