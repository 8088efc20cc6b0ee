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
//! Before any rule runs, the text is folded so that invisible and look-alike
//! characters cannot slip an identifier past the patterns. Text made only of
//! printable ASCII, tab, CR, LF and STX is used as it is (borrowed, no
//! allocation); anything else is folded into a new string:
//!
//! | Input | Becomes |
//! |---|---|
//! | compatibility forms (NFKD): full-width ASCII (`５５５－４４`), small forms (U+FE58, U+FE63), ligatures, circled and super/subscript digits, mathematical letters and digits | their plain decomposition (`555-44`) |
//! | format characters (general category Cf: zero-width U+200B–U+200D, U+2060, U+FEFF, bidi marks U+200E/U+200F, U+202A–U+202E, U+2066–U+2069, soft hyphen U+00AD, tags ...), combining marks (Mn, Me), control characters other than tab, CR, LF and STX (Cc, DEL) | removed |
//! | space separators (Zs: U+00A0, U+2000–U+200A, U+202F, U+205F, U+3000 ...) | ASCII space |
//! | dash punctuation (Pd: U+2010–U+2015, U+2E3A ...), minus signs U+2212, U+02D7, U+2043, U+2796 | `-` |
//! | middle and leader dots U+00B7, U+2027, U+2219, U+22C5, U+2E31, U+3002, U+30FB | `.` |
//! | fraction and division slashes U+2044, U+2215, U+2571, U+27CB, U+29F8 | `/` |
//! | connector punctuation (Pc: U+203F, U+2040, U+2054 ...) | `_` |
//! | decimal digits of any script (Nd: Arabic-Indic, Devanagari ...) | ASCII digits |
//! | U+0085, line and paragraph separators (Zl, Zp) | line feed |
//!
//! After folding every decimal digit is an ASCII digit, so the patterns use
//! `[0-9]`. `-`, `.`, `/` and `_` are the separator class: where a rule below
//! says "separator" it means any one of them, the same one throughout a
//! number, with up to three spaces or tabs on either side (`123 - 45 - 6789`).
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
//! words are matched case-insensitively unless marked otherwise. A number
//! "stands alone" when no letter or digit touches it on either side (`_`
//! does not count as a letter here, unlike in regex word boundaries).
//!
//! | # | Finding | Fires on | Examples caught |
//! |---|---|---|---|
//! | 1 | [`Finding::PatientSegment`] | HL7 `PID\|`, `PD1\|`, `NK1\|`, `PV1\|` anywhere; ASTM patient record `P\|` at the start of the text, after CR, LF or STX, or right after a frame digit 0–7 | `PID\|1\|\|123^^^MRN`, `2P\|1\|` |
//! | 2 | [`Finding::Ssn`] | `ddd-dd-dddd` with any separator, or with spaces only, standing alone — unless a lot label comes right before it (`lot`, `lot no.`, `lot number`, `lot #`, then optionally `:`/`#`/`=`) — the collector keeps such control lots by the same rule; or 9 or more digits (separators allowed between any two) after `SSN`, `SS#`, `SS no`, `social security (number)`, `soc. sec. #` | `555-44-4444`, `555.44.4444`, `555 - 44 - 4444`, `ssn 555 44 4444`, `SSN 555444444` (but not `QC lot 555-12-3456`) |
//! | 3 | [`Finding::Email`] | `local@domain.tld` | `jane.doe@example.org` |
//! | 4 | [`Finding::Phone`] | NANP `(ddd) ddd-dddd`; `ddd-ddd-dddd` with separator `-` or `.` standing alone; or `+` followed by 8–15 digits with separators (` .-()/_`), every digit group after the country code ≥ 2 digits, not a plain decimal number; or 7–15 digits (any separators, parentheses, spaces) after `tel`, `telephone`, `phone`, `fax`, `mobile`, `cell phone`, `ph#` | `(217) 555-0123`, `217.555.0123`, `+1 217 555 0123`, `+44 20 7946 0958`, `tel 217/555/0123`, `fax_2175550123` |
//! | 5 | [`Finding::BirthDate`] | a date standing alone within 20 characters (no line break) after `DOB`, `D.O.B`, `born`, `birth` (also `date of birth`, `birthdate`); here also dates written with spaces only (`03 04 1950`) | `DOB 3/4/1950`, `born 4 Mar 1950`, `date of birth: 19500304`, `DOB_1950_03_04` |
//! | 6 | [`Finding::Mrn`] | after `MRN`, `MR#`, `medical record`, `account`, `acct`, `patient id`, `pt id`, `sample`, `specimen`, `accession`, `acc#` (optionally `id`/`no`/`number`/`#` and `:`/`=`/`-`/`_`): a value of up to 3 letters then digit groups joined by separators, ≥ 4 digits in all, not a plain decimal number (`sample 10.25 uL`) | `MRN 0012345`, `acct# 88231`, `Sample 24-0627-0012`, `MRN_00.123.45` |
//! | 7 | [`Finding::PersonName`] | after `patient`, `name`, `called`, or (case-sensitive) `pt`/`Pt`, `Mr`, `Mrs`, `Ms`, `Mx`, `Dr` (then space, `.`, `:`, `=` or `#`): a word starting with a capital letter (A–Z, À–Þ), at least two letters or an initial with a dot — unless the word is device vocabulary (`Sample`, `Mode`, `ID`, `QC`, `Not`, ...; see `NAME_STOP_WORDS`) or `name` follows a device noun (`reagent name`, `file name`, ...) | `pt DOE`, `Patient: Smith`, `Dr. Who`, `name=Jane` |
//! | 8 | [`Finding::BirthDate`] | any date standing alone with a four-digit year 1900–1999 and no time of day after it (instruments do not report bare last-century dates; birth dates are) | `(SMITH, JOHN; 01/02/1960)` |
//!
//! Dates are recognised in these shapes (rules 5 and 8): `3/4/1950`,
//! `03-04-50`, `04.03.1950`, `4_3_1950`, `1950-03-04`, `1950/3/4`, `1950 . 03 . 04`
//! (any separator, one kind per date, spaces around it allowed), `19500304`
//! (year 18xx–20xx, valid month and day), `4 Mar 1950`, `4th March 1950`,
//! `March 4, 1950`, `Mar. 4 1950`.
//!
//! Rules 2 to 6 and 8 need digits: a text with fewer (after folding) than the
//! shortest form of a rule holds skips that rule (`MIN_DIGITS_*`); the SSN and
//! NANP phone shapes also need three runs of digits in a row with their group
//! sizes (`Needs`), and the labelled rules the letters of their labels.
//!
//! # Rules for device-identifier fields
//!
//! A serial, lot or event code is a short token of letters, digits and a few
//! separators. An identifier field is refused when any of these fires (in
//! this order):
//!
//! | Finding | Fires on |
//! |---|---|
//! | the free-text finding | any free-text rule above, on the normalised value, without the lot exception of rule 2 (`555-12-3456` is refused as a lot) |
//! | [`Finding::NotADeviceToken`] | anything but ASCII letters, digits and `. - _ / :`, or longer than [`MAX_DEVICE_TOKEN_BYTES`] (checked on the raw value, so spaces and invisible characters fail) |
//! | [`Finding::Ssn`] | exactly nine digits (`123456789`); or three consecutive digit groups of 3, 2 and 4 digits, whatever the separators (`123:45:6789`) |
//! | [`Finding::Phone`] | three consecutive digit groups of 3, 3 and 4 digits, whatever the separators (`217_555_0123`) |
//! | [`Finding::BirthDate`] | exactly three digit groups joined by one separator (not `:`) that form a valid date: day and month (either order) then a 2- or 4-digit year, or a 4-digit year, month, day (`2015-06-01`, `03.04.50`) |
//! | [`Finding::Ssn`], [`Finding::BirthDate`], [`Finding::Mrn`] | a patient label at the start — `SSN`; `DOB`, `birth`, `born`; `MRN`, `patient`, `patid`, `ptid`, `acct`, `account`, `accession`, `specimen`, `sample` (any case) — followed by a separator or a digit, with a digit somewhere after it (`MRN-12`, `ptid_7`; but not `SAMPLE_SHORT`) |
//!
//! Empty identifiers pass (a control lot may be empty), and so does a value
//! that is exactly one redaction marker, `[REDACTED:kind]` with a lowercase
//! kind of at most 16 letters: the collector masks a doubtful lot or serial
//! whole that way (`collector-core`'s `device_id`), so that one doubtful
//! field costs its value and not the record. Real serials, lots
//! and codes pass: `BD634545`, `0000000-0001-HS`, `XN-11587`, `PIX240205N`,
//! `L2309A`, `12345`, `QC-2024-11`, `E-1203`, `W-0412`, `ERR_0042`.
//!
//! **Nine digits.** A lot or serial that is exactly nine digits cannot be told
//! from an SSN written without separators, and an identifier field carries no
//! context to decide. A collector bug that puts a patient identifier into the
//! lot (HL7 PID-2 holds the control lot in QC runs) is the failure this guard
//! exists for, so the guard fails closed: such a value is refused, the batch
//! is not sent, and the refusal is counted, audited and raised, where a lab
//! would see it. Nine digits with a letter or a separator anywhere
//! (`L123456789`, `1234-56789`) are device-shaped and pass; so do all-digit
//! values of other lengths (`12345`, `41260802`), and 8-digit dates of this
//! century (`20240627`: lots and serials are often date codes).
//!
//! # What passes by construction
//!
//! Redaction markers (`[REDACTED:name]`, `[REDACTED:id]`) start with `[`, which
//! no value pattern accepts after a context word. Run timestamps
//! (`2024-06-27 13:54:07`, `20240627135407`), reference ranges (`4.3-5.5`),
//! units (`10*3/uL`), error codes (`E-1203`), lots (`LOT4711`, `PIX240205N`) and
//! serials (`BD634545`, `0000000-0001-HS`) match none of the rules; the tests
//! check this as hard as the true positives, and run every record the
//! collector's parsers make of the instrument corpus through the guard.
//!
//! # Known limits
//!
//! The guard is a backstop, tuned to refuse little device data, so it does not
//! look for everything the collector redacts: bare `LAST, FIRST` names without
//! a context word or old date (analyte lists like `NEUT, LYMPH` have the same
//! shape), bare 9-digit SSNs in free text, recent dates without context,
//! street addresses, URLs and IP addresses are not detected here; nor are
//! bare phone numbers written with `/` or `_` or spaces only (`100/250/1000`
//! is as likely a list of counts), numbers in free text whose separators
//! differ (`123-45.6789`, `123 45-6789`: `100.00-1000` and `123.45 6789` are
//! ranges and lists of values; identifier fields do catch these), separators
//! outside the class (`123,45,6789`), letters posing as digits (`O`, `l`),
//! nor numbers written with non-decimal digits that NFKD does not map (Roman
//! numerals, fractions).
//!
//! # Cost
//!
//! Every pattern is compiled once (`OnceLock`) and runs on the `regex` crate's
//! linear-time engines; post-filters look at each match once, and a rejected
//! match is retried one character later (matches are bounded in length, so
//! this stays linear). Plain ASCII text is checked in place; a text with few
//! digits runs only the rules that could match it (most short fields — `1.23`,
//! `10*3/uL`, `WBC` — run three or four patterns), and a plain device token
//! skips the segment and e-mail rules it cannot match. Word boundaries are
//! ASCII, so non-ASCII text (`37 °C`) stays on the regex crate's DFAs. A batch
//! costs time linear in its size.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use icu_normalizer::DecomposingNormalizerBorrowed;
use icu_properties::props::GeneralCategory;
use icu_properties::{CodePointMapData, CodePointMapDataBorrowed};
use outpost_protocol::{Instrument, Record};
use regex::{Match, Regex};
use serde::Serialize;

/// Longest device identifier (serial, lot, event code) accepted, in bytes.
pub const MAX_DEVICE_TOKEN_BYTES: usize = 64;

/// What kind of identifier the guard found (never the value itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Finding {
    /// A social-security-number-shaped number.
    Ssn,
    /// A date of birth: a date after a birth context word, a bare date from
    /// the last century, or an identifier that is a date.
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
        Record::Notification(n) => {
            instrument(&n.instrument)?;
            text("module", &n.module)?;
            text("key", &n.key)?;
            text("title", &n.title)?;
            text("by", &n.by)?;
        }
        Record::SupportAudit(a) => {
            // Host-made: kind, session id and the chain's hashes; the
            // detail may hold words people typed (reasons). A file
            // transfer carries no name (a keyed hash) and no free text.
            token("entry-kind", &a.entry_kind)?;
            token("session", &a.session)?;
            text("detail", &a.detail)?;
            digest("prev", &a.prev)?;
            digest("hash", &a.hash)?;
            if let Some(f) = &a.file {
                digest("file.name-hmac", &f.name_hmac)?;
                if !f.sha256.is_empty() {
                    digest("file.sha256", &f.sha256)?;
                }
                token("file.direction", &f.direction)?;
            }
        }
    }
    Ok(())
}

/// A SHA-256 in hex (64 lowercase hex digits) is a digest, not an
/// identifier, whatever digit runs it holds; anything else is a token.
fn digest(field: &'static str, value: &str) -> Result<(), Hit> {
    if value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Ok(());
    }
    token(field, value)
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

// ---------------------------------------------------------------------------
// Normalisation.

/// An ASCII byte kept as it is: printable, tab, LF, CR, or STX (the ASTM
/// frame start, which rule 1 looks at).
fn plain_ascii(b: u8) -> bool {
    matches!(b, b' '..=b'~' | b'\t' | b'\n' | b'\r' | 0x02)
}

/// Folds invisible and look-alike characters (see the module docs); borrows
/// text made only of [`plain_ascii`] bytes.
fn normalize(text: &str) -> Cow<'_, str> {
    if text.bytes().all(plain_ascii) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(fold(text))
    }
}

/// Unicode general categories (ICU4X compiled data; already in the host
/// through `url`'s IDNA support).
const CATEGORIES: CodePointMapDataBorrowed<'static, GeneralCategory> = CodePointMapData::new();

fn fold(text: &str) -> String {
    let nfkd = DecomposingNormalizerBorrowed::new_nfkd();
    let mut out = String::with_capacity(text.len());
    for c in nfkd.normalize_iter(text.chars()) {
        if c.is_ascii() {
            if plain_ascii(c as u8) {
                out.push(c);
            }
        } else if let Some(folded) = fold_char(c) {
            out.push(folded);
        }
    }
    out
}

/// One non-ASCII character after NFKD: its replacement, or `None` to drop it.
fn fold_char(c: char) -> Option<char> {
    match c {
        '\u{0085}' => return Some('\n'),
        '\u{2212}' | '\u{02D7}' | '\u{2043}' | '\u{2796}' => return Some('-'),
        '\u{00B7}' | '\u{2027}' | '\u{2219}' | '\u{22C5}' | '\u{2E31}' | '\u{3002}'
        | '\u{30FB}' => return Some('.'),
        '\u{2044}' | '\u{2215}' | '\u{2571}' | '\u{27CB}' | '\u{29F8}' => return Some('/'),
        _ => {}
    }
    Some(match CATEGORIES.get(c) {
        GeneralCategory::Format
        | GeneralCategory::NonspacingMark
        | GeneralCategory::EnclosingMark
        | GeneralCategory::Control => return None,
        GeneralCategory::SpaceSeparator => ' ',
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => '\n',
        GeneralCategory::DashPunctuation => '-',
        GeneralCategory::ConnectorPunctuation => '_',
        GeneralCategory::DecimalNumber => ascii_digit(c),
        _ => c,
    })
}

/// The ASCII digit with the value of the decimal digit `c`. Unicode encodes
/// each script's decimal digits as a contiguous run from 0 to 9 (a stability
/// policy), so the value is the distance from the start of the run, modulo 10
/// where runs of two scripts touch.
fn ascii_digit(c: char) -> char {
    let mut zero = c as u32;
    while let Some(before) = zero.checked_sub(1).and_then(char::from_u32) {
        if CATEGORIES.get(before) != GeneralCategory::DecimalNumber {
            break;
        }
        zero -= 1;
    }
    char::from(b'0' + ((c as u32 - zero) % 10) as u8)
}

// ---------------------------------------------------------------------------
// Patterns.

struct Rules {
    patient_segment: Regex,
    ssn: Regex,
    labelled_ssn: Regex,
    lot_before: Regex,
    email: Regex,
    phone_parenthesised: Regex,
    phone_nanp: Regex,
    phone_intl: Regex,
    labelled_phone: Regex,
    dob_label: Regex,
    dob_date: Regex,
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

/// Labels that make a device identifier a patient identifier when they start
/// it, with the finding each one means (compared case-insensitively).
const IDENTIFIER_LABELS: &[(&str, Finding)] = &[
    ("ssn", Finding::Ssn),
    ("dob", Finding::BirthDate),
    ("birth", Finding::BirthDate),
    ("born", Finding::BirthDate),
    ("mrn", Finding::Mrn),
    ("patient", Finding::Mrn),
    ("patid", Finding::Mrn),
    ("ptid", Finding::Mrn),
    ("acct", Finding::Mrn),
    ("account", Finding::Mrn),
    ("accession", Finding::Mrn),
    ("specimen", Finding::Mrn),
    ("sample", Finding::Mrn),
];

/// A separator of the separator class, with up to three spaces or tabs on
/// either side (`sep("-")`; `sep(r"\.")`).
fn sep(class: &str) -> String {
    format!(r"[ \t]{{0,3}}{class}[ \t]{{0,3}}")
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        // Word boundaries are ASCII ones (`\b` below means `(?-u:\b)`): the
        // text is folded first, so letters that matter are ASCII, and a
        // Unicode `\b` would make the regex crate leave its DFAs for a slower
        // engine on any text with a non-ASCII character (`°C`, `µL`).
        let re = |p: &str| {
            Regex::new(&p.replace(r"\b", r"(?-u:\b)")).expect("static guard pattern compiles")
        };
        // A word boundary where `_` also separates words (`MRN_0012345`).
        let b = r"(?:\b|_)";
        let month = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)";
        let ordinal = r"(?:st|nd|rd|th)?";
        // Numeric dates, one separator kind per date.
        let numeric: Vec<String> = ["/", r"\.", "-", "_"]
            .iter()
            .flat_map(|k| {
                let s = sep(k);
                [
                    format!(r"[0-9]{{1,2}}{s}[0-9]{{1,2}}{s}[0-9]{{2,4}}"),
                    format!(r"[0-9]{{4}}{s}[0-9]{{1,2}}{s}[0-9]{{1,2}}"),
                ]
            })
            .collect();
        let date = format!(
            r"(?i:{}|(?:1[89]|20)[0-9]{{2}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])|[0-9]{{1,2}}{ordinal}[ \-]{month}\.?,?[ \-][0-9]{{2,4}}|{month}\.?[ ][0-9]{{1,2}}{ordinal},?[ ][0-9]{{4}})",
            numeric.join("|")
        );
        // After a birth label, a date written with spaces only counts too.
        let dob_date =
            format!(r"{date}|[0-9]{{1,2}}[ \t]{{1,3}}[0-9]{{1,2}}[ \t]{{1,3}}[0-9]{{2,4}}|[0-9]{{4}}[ \t]{{1,3}}[0-9]{{1,2}}[ \t]{{1,3}}[0-9]{{1,2}}");
        let ssn = format!(
            r"[0-9]{{3}}(?:{h}[0-9]{{2}}{h}|{d}[0-9]{{2}}{d}|{s}[0-9]{{2}}{s}|{u}[0-9]{{2}}{u}|[ \t]{{1,3}}[0-9]{{2}}[ \t]{{1,3}})[0-9]{{4}}",
            h = sep("-"),
            d = sep(r"\."),
            s = sep("/"),
            u = sep("_"),
        );
        let nanp = format!(
            r"[0-9]{{3}}(?:{h}[0-9]{{3}}{h}|{d}[0-9]{{3}}{d})[0-9]{{4}}",
            h = sep("-"),
            d = sep(r"\."),
        );
        // Digits with at most one separator (and spaces) between any two.
        let spread = |n: &str| format!(r"[0-9](?:[ \t]{{0,3}}[-./_]?[ \t]{{0,3}}[0-9]){{{n}}}");
        Rules {
            patient_segment: re(r"(?i)(?:PID|PD1|NK1|PV1)\||(?:\A|[\r\n\x02]|\b[0-7])P\|"),
            ssn: re(&ssn),
            labelled_ssn: re(&format!(
                r"(?i){b}(?:ssn|ss[ \t]*(?:#|no\b\.?|nr\b\.?|num(?:ber)?\b)|soc(?:ial)?\.?[ \t._-]*sec(?:urity)?\.?(?:[ \t._-]*(?:#|no\b\.?|nr\b\.?|num(?:ber)?\b|card\b))?)[ \t]*[:#=._-]?[ \t]*{}",
                spread("8,")
            )),
            lot_before: re(r"(?i)\blot\s*(?:no\.?|number|#)?\s*[:#=]?\s*$"),
            email: re(r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}\b"),
            phone_parenthesised: re(r"\([0-9]{3}\)[ .\-]?[0-9]{3}[ .\-]?[0-9]{4}\b"),
            phone_nanp: re(&nanp),
            phone_intl: re(r"\+\(?[0-9](?:[ .\-()/_]{0,2}[0-9]){7,14}\b"),
            labelled_phone: re(&format!(
                r"(?i){b}(?:tel(?:ephone)?|phone|fax|mobile|cell[ \t]*phone|ph[ \t]*#)\.?(?:[ \t]*(?:#|no\b\.?|nr\b\.?|num(?:ber)?\b))?[ \t]*[:#=._-]?[ \t]*\+?[ \t]*\(?[ \t]*[0-9](?:[ \t]{{0,3}}[-./_()]?[ \t]{{0,3}}[0-9]){{6,14}}"
            )),
            dob_label: re(&format!(
                r"(?i){b}(?:d\.?[ \t]?o\.?[ \t]?b|born){b}|birth"
            )),
            dob_date: re(&dob_date),
            date: re(&date),
            labelled_id: re(&format!(
                r"(?i)(?:{b}(?:mrn|acct|account|sample|specimen|accession){b}|{b}mr[ \t]?#|{b}acc[ \t]?#|\bmedical\s+rec(?:ord)?s?{b}|{b}patient[\s_]*id{b}|{b}pt\.?[\s_]*id{b})(?:\s*(?:id\b|no\b\.?|number\b|nr\b\.?|#))?\s*[:#=_\-]?\s*(?P<value>[a-z]{{0,3}}[0-9]+(?:[ \t]{{0,3}}[-/_.][ \t]{{0,3}}[0-9]+)*)"
            )),
            name_context: re(
                r"(?:\b(?P<label>(?i:patient|name|called))\b|\b(?:[Pp]t|Mrs|Mr|Ms|Mx|Dr)\b)(?:\.?\s*[:#=]\s*|\.\s*|\s+)(?P<name>[A-ZÀ-ÖØ-Þ](?:[A-Za-zÀ-ÖØ-öø-ÿ'’\-]+|\.))",
            ),
            device_noun_before: re(
                r"(?i)\b(?:reagent|file|host|computer|printer|test|analyte|assay|component|module|product|material|calibrator|control|kit|device|instrument|model|parameter|method|package|folder|network)\s*$",
            ),
        }
    })
}

// ---------------------------------------------------------------------------
// Free text.

/// Whether a lot label right before an SSN-shaped number excuses it (free
/// text: yes, as the collector keeps such lots; identifier fields: no).
#[derive(Clone, Copy, PartialEq, Eq)]
enum LotException {
    Applies,
    DoesNotApply,
}

/// The free-text rules of the module docs; `None` when the text is clean.
/// Also applied to the lines modules write to the host log.
pub(crate) fn free_text(raw: &str) -> Option<Finding> {
    text_rules(&normalize(raw), LotException::Applies)
}

/// The fewest digits a text needs for each rule to be able to fire (the
/// shortest forms: `SSN 123456789`, `tel 5550123`, `born 4 Mar 50`,
/// `MRN 1234`, `4 Mar 1950`); a text with fewer digits skips the rule.
const MIN_DIGITS_SSN: usize = 9;
const MIN_DIGITS_PHONE: usize = 7;
const MIN_DIGITS_DATE_AFTER_LABEL: usize = 3;
const MIN_DIGITS_MRN: usize = 4;
const MIN_DIGITS_OLD_DATE: usize = 5;

/// Which rules a text of `s` could fire, and the lot exception.
struct Scope {
    needs: Needs,
    lot: LotException,
    /// Rules 1 (patient segment) and 3 (e-mail); off for plain tokens, which
    /// hold no `|` or `@`.
    segment_and_email: bool,
}

/// What a text holds that some rule's every match needs: its ASCII digits,
/// a few punctuation marks, and which ASCII letters (either case) it holds.
/// Each rule below is skipped when the text lacks what every match of its
/// pattern contains, so a skip never changes a verdict (the
/// `gating_never_changes_a_verdict` test holds this against every rule run
/// on generated and real texts). Letters are only looked at in ASCII text:
/// elsewhere a case-insensitive pattern letter may match a non-ASCII one
/// (`ſ` for `s`), so every letter counts as present.
///
/// It also notes whether three runs of ASCII digits follow one another, each
/// gap made of 1 to 7 of `space tab - . / _` (what the SSN and NANP phone
/// shapes put between their groups), with a middle run of exactly two digits
/// (`ssn_shape`) or three (`nanp_shape`), at least three before it and at
/// least four after: every match of those two patterns has such runs.
#[derive(Clone, Copy)]
struct Needs {
    digits: usize,
    /// Bit `b - b'a'` for each letter `b` present, case folded.
    letters: u32,
    pipe: bool,
    at: bool,
    paren: bool,
    plus: bool,
    dash_or_dot: bool,
    ssn_shape: bool,
    nanp_shape: bool,
}

/// Digit runs seen so far, for [`Needs::ssn_shape`] and [`Needs::nanp_shape`].
struct Runs {
    /// Length of the run in progress (0: not in one).
    run: usize,
    /// Bytes since the last run ended, while all are gap bytes; `None` once
    /// another byte came (or before any run).
    gap: Option<usize>,
    /// The two runs before the one in progress, each joined to the next by
    /// a gap (0: none).
    first: usize,
    second: usize,
}

impl Runs {
    const MAX_GAP: usize = 7;

    /// A run of `len` digits ended.
    fn end(&mut self, n: &mut Needs, len: usize) {
        if self.first >= 3 && len >= 4 {
            n.ssn_shape |= self.second == 2;
            n.nanp_shape |= self.second == 3;
        }
        (self.first, self.second) = (self.second, len);
        self.gap = Some(0);
    }

    fn byte(&mut self, n: &mut Needs, b: u8) {
        if b.is_ascii_digit() {
            if self.run == 0 && !matches!(self.gap, Some(1..=Runs::MAX_GAP)) {
                // Not joined to the runs before.
                (self.first, self.second) = (0, 0);
            }
            self.run += 1;
            return;
        }
        if self.run > 0 {
            let len = std::mem::take(&mut self.run);
            self.end(n, len);
        }
        self.gap = match (self.gap, b) {
            (Some(g), b' ' | b'\t' | b'-' | b'.' | b'/' | b'_') => Some(g + 1),
            _ => None,
        };
    }
}

impl Needs {
    fn of(s: &str) -> Needs {
        let mut n = Needs {
            digits: 0,
            letters: 0,
            pipe: false,
            at: false,
            paren: false,
            plus: false,
            dash_or_dot: false,
            ssn_shape: false,
            nanp_shape: false,
        };
        let mut runs = Runs {
            run: 0,
            gap: None,
            first: 0,
            second: 0,
        };
        let mut ascii = true;
        for b in s.bytes() {
            runs.byte(&mut n, b);
            match b {
                b'0'..=b'9' => n.digits += 1,
                b'a'..=b'z' | b'A'..=b'Z' => n.letters |= 1 << ((b | 0x20) - b'a'),
                b'|' => n.pipe = true,
                b'@' => n.at = true,
                b'(' => n.paren = true,
                b'+' => n.plus = true,
                b'-' | b'.' => n.dash_or_dot = true,
                0x80.. => ascii = false,
                _ => {}
            }
        }
        if runs.run > 0 {
            let len = runs.run;
            runs.end(&mut n, len);
        }
        if !ascii {
            n.letters = u32::MAX;
        }
        n
    }

    /// Every run: as if nothing were known about the text but its digits.
    #[cfg(test)]
    fn everything(digits: usize) -> Needs {
        Needs {
            digits,
            letters: u32::MAX,
            pipe: true,
            at: true,
            paren: true,
            plus: true,
            dash_or_dot: true,
            ssn_shape: true,
            nanp_shape: true,
        }
    }

    /// Whether every letter of `word` is present.
    fn all(&self, word: &str) -> bool {
        word.bytes()
            .all(|b| self.letters & (1 << ((b | 0x20) - b'a')) != 0)
    }
}

/// The free-text rules on normalised text `s`.
fn text_rules(s: &str, lot: LotException) -> Option<Finding> {
    scoped_rules(
        s,
        Scope {
            needs: Needs::of(s),
            lot,
            segment_and_email: true,
        },
    )
}

/// The free-text rules in the order of the module docs, skipping those
/// `scope` rules out.
fn scoped_rules(s: &str, scope: Scope) -> Option<Finding> {
    let r = rules();
    let n = scope.needs;
    let d = n.digits;
    if scope.segment_and_email && n.pipe && r.patient_segment.is_match(s) {
        Some(Finding::PatientSegment)
    } else if d >= MIN_DIGITS_SSN && has_ssn(s, r, scope.lot, n) {
        Some(Finding::Ssn)
    } else if scope.segment_and_email && n.at && r.email.is_match(s) {
        Some(Finding::Email)
    } else if d >= MIN_DIGITS_PHONE && has_phone(s, r, n) {
        Some(Finding::Phone)
    // Every birth label (`dob`, `d.o.b`, `born`, `birth`) has a `b`.
    } else if d >= MIN_DIGITS_DATE_AFTER_LABEL && n.all("b") && has_birth_date_by_context(s, r) {
        Some(Finding::BirthDate)
    // `mrn`, `mr#`, `sample`, `specimen`, `medical`; `acct`, `account`,
    // `accession`, `acc#`; `patient id`, `pt id`.
    } else if d >= MIN_DIGITS_MRN
        && (n.all("m") || n.all("ac") || n.all("ptid"))
        && has_labelled_id(s, r)
    {
        Some(Finding::Mrn)
    // `name`, `Mr`, `Mrs`, `Ms`, `Mx`; `patient`, `Pt`; `called`; `Dr`.
    } else if (n.all("m") || n.all("pt") || n.all("cal") || n.all("dr")) && has_context_name(s, r) {
        Some(Finding::PersonName)
    } else if d >= MIN_DIGITS_OLD_DATE && has_old_date(s, r) {
        Some(Finding::BirthDate)
    } else {
        None
    }
}

/// No letter or digit right before `start` or right at `end`.
fn stands_alone(s: &str, start: usize, end: usize) -> bool {
    !s[..start]
        .chars()
        .next_back()
        .is_some_and(char::is_alphanumeric)
        && !s[end..].chars().next().is_some_and(char::is_alphanumeric)
}

/// The first match of `re` in `s`, starting at `from`, that stands alone and
/// passes `accept`; a rejected match is tried again one character later, so
/// a rejected candidate cannot hide an overlapping one.
fn find_alone<'s>(
    re: &Regex,
    s: &'s str,
    mut from: usize,
    accept: impl Fn(&Match<'s>) -> bool,
) -> Option<Match<'s>> {
    while let Some(m) = re.find_at(s, from) {
        if stands_alone(s, m.start(), m.end()) && accept(&m) {
            return Some(m);
        }
        from = m.start() + s[m.start()..].chars().next().map_or(1, char::len_utf8);
    }
    None
}

fn has_ssn(s: &str, r: &Rules, lot: LotException, n: Needs) -> bool {
    let shaped = n.ssn_shape
        && find_alone(&r.ssn, s, 0, |m| {
            lot == LotException::DoesNotApply || !r.lot_before.is_match(&s[..m.start()])
        })
        .is_some();
    // Every SSN label (`ssn`, `ss #`, `soc sec`) starts with an `s`.
    shaped || (n.all("s") && r.labelled_ssn.is_match(s))
}

fn has_phone(s: &str, r: &Rules, n: Needs) -> bool {
    (n.paren && r.phone_parenthesised.is_match(s))
        || (n.nanp_shape && find_alone(&r.phone_nanp, s, 0, |_| true).is_some())
        || (n.plus
            && r.phone_intl
                .find_iter(s)
                .any(|m| plausible_international(m.as_str())))
        // `tel`, `phone`, `ph #`, `cell phone`, `fax`, `mobile`.
        || ((n.all("tel") || n.all("ph") || n.all("fax") || n.all("mob"))
            && r.labelled_phone.is_match(s))
}

/// `+` then digit groups: a plain decimal (`+12.345678`) or a group of one
/// digit after the country code (`+37.0 37.1 37.2`) is a measurement. A trunk
/// prefix `(0)` (`+44 (0)20 ...`) is ignored.
fn plausible_international(m: &str) -> bool {
    let body = m[1..].replace("(0)", "");
    let separators: Vec<char> = body.chars().filter(|c| !c.is_ascii_digit()).collect();
    if separators == ['.'] {
        return false;
    }
    body.split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .skip(1)
        .all(|g| g.len() >= 2)
}

/// Longest gap between a birth label and its date, in characters.
const DOB_GAP_CHARS: usize = 20;

/// Rule 5: a date within [`DOB_GAP_CHARS`] after a birth label, on the same
/// line.
fn has_birth_date_by_context(s: &str, r: &Rules) -> bool {
    r.dob_label.find_iter(s).any(|label| {
        find_alone(&r.dob_date, s, label.end(), |_| true).is_some_and(|date| {
            let gap = &s[label.end()..date.start()];
            !gap.contains(['\r', '\n']) && gap.chars().count() <= DOB_GAP_CHARS
        })
    })
}

fn has_labelled_id(s: &str, r: &Rules) -> bool {
    r.labelled_id.captures_iter(s).any(|c| {
        c.name("value").is_some_and(|v| {
            let v = v.as_str();
            v.bytes().filter(u8::is_ascii_digit).count() >= 4 && !plain_decimal(v)
        })
    })
}

/// Digits, one `.`, digits: a measurement (`10.25`).
fn plain_decimal(v: &str) -> bool {
    v.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
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
    find_alone(&r.date, s, 0, |m| {
        let before = &s[..m.start()];
        let after = &s[m.end()..];
        // Part of a longer dotted number or a version string (`v1.2.1999`).
        let glued = before.ends_with(['.', 'v', 'V'])
            || (after.starts_with('.') && after[1..].starts_with(|c: char| c.is_ascii_digit()));
        !glued && !starts_with_time(after) && old_valid_date(m.as_str())
    })
    .is_some()
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
        [a, b, c] => match numeric_date_year(a, b, c) {
            Some(year) if year.len() == 4 => num(year),
            _ => return false,
        },
        // Month-name forms: day and year.
        [_, y] if y.len() == 4 => num(y),
        _ => return false,
    };
    (1900..=1999).contains(&year)
}

/// The year of three digit groups that form a valid numeric date — `y m d`
/// with a 4-digit year, or day and month in either order then a 2- or
/// 4-digit year — or `None`.
fn numeric_date_year<'a>(a: &'a str, b: &'a str, c: &'a str) -> Option<&'a str> {
    let num = |g: &str| g.parse::<u32>().unwrap_or(0);
    if a.len() == 4 {
        let (m, d) = (num(b), num(c));
        return (b.len() <= 2 && c.len() <= 2 && (1..=12).contains(&m) && (1..=31).contains(&d))
            .then_some(a);
    }
    let (x, y) = (num(a), num(b));
    let valid = a.len() <= 2
        && b.len() <= 2
        && matches!(c.len(), 2 | 4)
        && (1..=31).contains(&x)
        && (1..=31).contains(&y)
        && (x <= 12 || y <= 12);
    valid.then_some(c)
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

// ---------------------------------------------------------------------------
// Device identifiers.

/// The device-identifier rules of the module docs.
fn device_token(raw: &str) -> Option<Finding> {
    if is_mask(raw) {
        return None;
    }
    let plain = raw.len() <= MAX_DEVICE_TOKEN_BYTES && raw.bytes().all(token_byte);
    if !plain {
        // Refused either way; the free-text rules name what it is, if they can.
        return Some(
            text_rules(&normalize(raw), LotException::DoesNotApply)
                .unwrap_or(Finding::NotADeviceToken),
        );
    }
    let scope = Scope {
        needs: Needs::of(raw),
        lot: LotException::DoesNotApply,
        segment_and_email: false,
    };
    scoped_rules(raw, scope).or_else(|| identifier_shape(raw))
}

/// Longest kind in an identifier field's mask (`[REDACTED:address]`).
const MAX_MASK_KIND_BYTES: usize = 16;

/// The whole value is one redaction marker, `[REDACTED:kind]` with `kind`
/// 1 to [`MAX_MASK_KIND_BYTES`] lowercase ASCII letters: the collector's
/// mask of a doubtful lot or serial, which holds no identifier.
fn is_mask(raw: &str) -> bool {
    raw.strip_prefix("[REDACTED:")
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|kind| {
            (1..=MAX_MASK_KIND_BYTES).contains(&kind.len())
                && kind.bytes().all(|b| b.is_ascii_lowercase())
        })
}

fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || token_separator(b)
}

fn token_separator(b: u8) -> bool {
    matches!(b, b'.' | b'-' | b'_' | b'/' | b':')
}

/// The identifier shapes of a plain token (ASCII letters, digits and
/// separators only).
fn identifier_shape(token: &str) -> Option<Finding> {
    let all_digits = |g: &str| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit());
    if token.len() == 9 && all_digits(token) {
        return Some(Finding::Ssn);
    }
    // Three consecutive groups at a time, without allocating.
    let mut window: [&str; 3] = ["", "", ""];
    let mut groups = 0;
    for group in token.split(|c: char| token_separator(c as u8)) {
        window = [window[1], window[2], group];
        groups += 1;
        if groups >= 3 && window.iter().all(|g| all_digits(g)) {
            match window.map(str::len) {
                [3, 2, 4] => return Some(Finding::Ssn),
                [3, 3, 4] => return Some(Finding::Phone),
                _ => {}
            }
        }
    }
    if groups == 3 && window.iter().all(|g| all_digits(g)) {
        let mut separators = token.bytes().filter(|b| token_separator(*b));
        let (first, second) = (separators.next(), separators.next());
        if first == second
            && first != Some(b':')
            && numeric_date_year(window[0], window[1], window[2]).is_some()
        {
            return Some(Finding::BirthDate);
        }
    }
    labelled_identifier(token)
}

/// A patient label starting the token, followed by a separator or a digit,
/// with a digit after it.
fn labelled_identifier(token: &str) -> Option<Finding> {
    IDENTIFIER_LABELS.iter().find_map(|&(label, finding)| {
        let head = token.get(..label.len())?;
        if !head.eq_ignore_ascii_case(label) {
            return None;
        }
        let rest = &token[label.len()..];
        let next = *rest.as_bytes().first()?;
        let attached = token_separator(next) || next.is_ascii_digit();
        (attached && rest.bytes().any(|b| b.is_ascii_digit())).then_some(finding)
    })
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
    fn ssn_shaped_lot_fails_in_control_lot_and_passes_in_text_only_after_a_lot_label() {
        // An identifier field has no context: an SSN shape is refused there.
        let mut q = qc();
        q.control_lot = "555-12-3456".into();
        let v = check(&[Record::Qc(q)]).unwrap_err();
        assert_eq!((v.field, v.finding), ("control-lot", Finding::Ssn));
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
        for good in ["", "BD634545", "0000000-0001-HS", "PIX240205N", "E-1203"] {
            assert_eq!(device_token(good), None, "{good:?}");
        }
        let long = "A".repeat(65);
        for (bad, finding) in [
            ("LOT 4711", Finding::NotADeviceToken),
            ("Smith^John", Finding::NotADeviceToken),
            ("PID|1", Finding::PatientSegment),
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

    // -----------------------------------------------------------------------
    // Data-driven tables (issue #20): hostile values that must be refused
    // with the named finding, and real device values that must pass.

    use Finding::{BirthDate, Email, Mrn, NotADeviceToken, PatientSegment, PersonName, Phone, Ssn};

    /// Free text an evasion or a bug could produce; each is refused with the
    /// finding next to it.
    const HOSTILE_TEXTS: &[(&str, Finding)] = &[
        // SSNs with other separators, spaces around them, or invisible and
        // look-alike characters inside.
        ("123.45.6789", Ssn),
        ("123/45/6789", Ssn),
        ("123_45_6789", Ssn),
        ("123 - 45 - 6789", Ssn),
        ("123 . 45 . 6789", Ssn),
        ("123  45\t6789", Ssn),
        ("ref_123_45_6789_x", Ssn),
        ("123\u{200E}-45-6789", Ssn),
        ("123-\u{200F}45-6789", Ssn),
        ("1\u{202E}23-45-6789", Ssn),
        ("12\u{2066}3-45-67\u{2069}89", Ssn),
        ("123\u{02D7}45\u{02D7}6789", Ssn),
        ("1\u{0301}23-4\u{0308}5-67\u{20DD}89", Ssn),
        ("123\u{034F}-45-6789\u{FE0F}", Ssn),
        ("123\u{00AD}-45-6789", Ssn),
        ("123\u{E0020}-45-6789", Ssn),
        ("123\u{0007}-45-\u{007F}6789", Ssn),
        ("123\u{2010}45\u{2010}6789", Ssn),
        ("123\u{2012}45\u{2015}6789", Ssn),
        ("123\u{2212}45\u{2212}6789", Ssn),
        ("123\u{FE58}45\u{FE58}6789", Ssn),
        ("123\u{FE63}45\u{FE63}6789", Ssn),
        ("123\u{FF0D}45\u{FF0D}6789", Ssn),
        ("123\u{2E3A}45\u{2E3A}6789", Ssn),
        ("123\u{00B7}45\u{00B7}6789", Ssn),
        ("123\u{2024}45\u{2024}6789", Ssn),
        ("123\u{FF0E}45\u{FF0E}6789", Ssn),
        ("123\u{2044}45\u{2044}6789", Ssn),
        ("123\u{2215}45\u{2215}6789", Ssn),
        ("123\u{FF0F}45\u{FF0F}6789", Ssn),
        ("123\u{FF3F}45\u{FF3F}6789", Ssn),
        ("123\u{203F}45\u{203F}6789", Ssn),
        ("123\u{2007}45\u{202F}6789", Ssn),
        ("１２３-４５-６７８９", Ssn),
        (
            "\u{0661}\u{0662}\u{0663}-\u{0664}\u{0665}-\u{0666}\u{0667}\u{0668}\u{0669}",
            Ssn,
        ),
        (
            "\u{0967}\u{0968}\u{0969}-\u{096A}\u{096B}-\u{096C}\u{096D}\u{096E}\u{096F}",
            Ssn,
        ),
        (
            "\u{1D7CF}\u{1D7D0}\u{1D7D1}-\u{1D7D2}\u{1D7D3}-\u{1D7D4}\u{1D7D5}\u{1D7D6}\u{1D7D7}",
            Ssn,
        ),
        (
            "\u{2460}\u{2461}\u{2462}-\u{2463}\u{2464}-\u{2465}\u{2466}\u{2467}\u{2468}",
            Ssn,
        ),
        // Labelled SSNs without the 3-2-4 shape.
        ("SSN 123456789", Ssn),
        ("ssn:123456789", Ssn),
        ("SSN#123 456 789", Ssn),
        ("SSN_123456789", Ssn),
        ("SS# 123456789", Ssn),
        ("ss no. 123456789", Ssn),
        ("social security number 123456789", Ssn),
        ("Soc. Sec. No. 123-456-789", Ssn),
        ("S\u{200B}SN 123456789", Ssn),
        ("ＳＳＮ １２３４５６７８９", Ssn),
        // Dates of birth with other separators, spaces and look-alikes.
        ("DOB_1950_03_04", BirthDate),
        ("DOB: 03 / 04 / 1950", BirthDate),
        ("DOB 03 04 1950", BirthDate),
        ("DOB 1950 03 04", BirthDate),
        ("pt_dob=04_03_2015", BirthDate),
        ("dob 2015\u{2010}06\u{2010}01", BirthDate),
        ("D\u{200F}OB 3\u{2215}4\u{2215}2015", BirthDate),
        (
            "born \u{0660}\u{0663}/\u{0660}\u{0664}/\u{0662}\u{0660}\u{0661}\u{0665}",
            BirthDate,
        ),
        ("date of birth\u{00A0}04\u{2024}03\u{2024}2015", BirthDate),
        ("01 / 02 / 1960", BirthDate),
        ("1960_01_02", BirthDate),
        ("1960\u{2011}01\u{2011}02", BirthDate),
        // Record numbers with other separators.
        ("MRN_0012345", Mrn),
        ("MRN: 001.234.567", Mrn),
        ("MRN 00 - 123 - 45", Mrn),
        ("MRN 0012_345", Mrn),
        ("patient_id=12345", Mrn),
        ("M\u{0301}RN 0012345", Mrn),
        ("ＭＲＮ\u{3000}００１２３４５", Mrn),
        ("acct\u{2010}88231", Mrn),
        // Phone numbers: labelled with any separators, or spaced.
        ("tel 217/555/0123", Phone),
        ("phone: 217_555_0123", Phone),
        ("Fax 2175550123", Phone),
        ("Tel.: (217) 555 0123", Phone),
        ("mobile +1 217 555 0123", Phone),
        ("217 - 555 - 0123", Phone),
        ("217 . 555 . 0123", Phone),
        ("217\u{2011}555\u{2011}0123", Phone),
        ("+44_20_7946_0958", Phone),
        ("+44/20/7946/0958", Phone),
        // The shortest form of each rule that needs digits.
        ("born 4 Mar 50", BirthDate),
        ("tel 5550123", Phone),
        ("MRN 1234", Mrn),
        ("4 Mar 1950", BirthDate),
        // The other kinds, through the same folding.
        ("ＰＩＤ｜1", PatientSegment),
        ("P\u{200B}ID|1||0012345", PatientSegment),
        ("jane.doe\u{FF20}example.org", Email),
        ("Pa\u{0301}tient: Smith", PersonName),
    ];

    /// Real device text (and look-alikes of the hostile forms that are not
    /// identifiers); each passes.
    const REAL_TEXTS: &[&str] = &[
        "sample 10.25 uL aspirated",
        "Sample 3 - 12 processed",
        "Version 2024.06.27 installed",
        "counts 100/250/1000",
        "build_2024_06_27",
        "ratio 1 - 2, range 100 - 250",
        "QC lot 123-45-6789 within limits",
        "lot no. 123.45.6789",
        "pH 7.35 7.45 7.40",
        "cell count 4500000",
        "telemetry 1234567 frames",
        "Fax module offline",
        "SAMPLE_SHORT on rack 12",
        "PATIENT_ID_MISSING",
        "Temperatur 37,0 °C, Volumen 20 µL",
        "Température de l’incubateur 37 °C",
        "Gerät Nr. 12 bereit",
        "Durchfluss 2,5 mL/min — OK",
        "Run 2024\u{2010}06\u{2010}27 13:54:07",
        "WBC 11.0 10*3/uL 5.9\u{2013}9.3",
        "12:30:45 probe home",
        "IP 10.123.45.67 port 2575",
        "E-1203 reagent probe pressure 52 kPa",
    ];

    /// Device identifier values that are really patient identifiers, with
    /// the finding; refused in every identifier field.
    const HOSTILE_IDENTIFIERS: &[(&str, Finding)] = &[
        ("123-45-6789", Ssn),
        ("123.45.6789", Ssn),
        ("123/45/6789", Ssn),
        ("123_45_6789", Ssn),
        ("123:45:6789", Ssn),
        ("X-123-45-6789", Ssn),
        ("123456789", Ssn),
        ("555-12-3456", Ssn),
        ("SSN-123456789", Ssn),
        ("SSN123456789", Ssn),
        ("ssn_12", Ssn),
        ("DOB:1950-03-04", BirthDate),
        ("dob_19500304", BirthDate),
        ("DOB-7", BirthDate),
        ("born_1950", BirthDate),
        ("1950-03-04", BirthDate),
        ("19771201", BirthDate),
        ("2015-06-01", BirthDate),
        ("01/02/2015", BirthDate),
        ("03.04.50", BirthDate),
        ("MRN:12345678", Mrn),
        ("MRN-12", Mrn),
        ("mrn0042", Mrn),
        ("ptid_7", Mrn),
        ("patient-0042", Mrn),
        ("PatID:77", Mrn),
        ("ACCT:88231", Mrn),
        ("sample-2406270012", Mrn),
        ("Specimen_42", Mrn),
        ("217-555-0123", Phone),
        ("217.555.0123", Phone),
        ("217_555_0123", Phone),
        ("217/555/0123", Phone),
        ("+12175550123", Phone),
        ("a@b.org", Email),
        ("PID|1", PatientSegment),
        ("LOT 4711", NotADeviceToken),
        ("Smith^John", NotADeviceToken),
        ("１２３４５", NotADeviceToken),
        ("PIX\u{200B}240205N", NotADeviceToken),
        ("L\u{0301}2309A", NotADeviceToken),
        ("XN-11587\u{200E}", NotADeviceToken),
    ];

    /// Serials, lots and event codes as instruments write them (the corpus,
    /// the sample logs, vendors' formats); each passes in every identifier
    /// field.
    const REAL_IDENTIFIERS: &[&str] = &[
        "",
        "BD634545",
        "0000000-0001-HS",
        "XN-11587",
        "910YOXH02826",
        "SN-20431",
        "PIX240205N",
        "PX440N",
        "L2309A",
        "12345",
        "24-1187",
        "QC-2024-11",
        "LOT4711",
        "LOT-1.0",
        "E-1203",
        "W-0412",
        "W-0007",
        "ERR_0042",
        "A1:B2/C3_D4.E5",
        "41260802",
        "20240627",
        "2024-11",
        "L123456789",
        "1234-56789",
        "12345678",
        "1234567890",
        "12:30:45",
        "SAMPLE_SHORT",
        "PATIENT_ID_MISSING",
        "MRN",
        "PT-001",
        "PID-0042",
        "Dr-1",
    ];

    /// The identifier fields, each holding `value` in an otherwise clean record.
    fn identifier_records(value: &str) -> [(Record, &'static str); 3] {
        let mut q = qc();
        q.control_lot = value.into();
        [
            (Record::Qc(q), "control-lot"),
            (event_with(value, "ok"), "code"),
            (
                heartbeat(Instrument {
                    model: "XN-550".into(),
                    serial: value.into(),
                }),
                "instrument.serial",
            ),
        ]
    }

    #[test]
    fn hostile_texts_are_refused_naming_the_kind() {
        for (text, finding) in HOSTILE_TEXTS {
            assert_eq!(free_text(text), Some(*finding), "{text:?}");
            assert_finding(text, *finding);
        }
    }

    #[test]
    fn real_texts_pass() {
        for text in REAL_TEXTS {
            assert_clean(text);
        }
    }

    #[test]
    fn hostile_identifiers_are_refused_in_every_identifier_field() {
        for (value, finding) in HOSTILE_IDENTIFIERS {
            for (record, field) in identifier_records(value) {
                let v = check(&[Record::Qc(qc()), record]).expect_err(value);
                assert_eq!(
                    v,
                    Violation {
                        record: 1,
                        field,
                        finding: *finding
                    },
                    "{value:?}"
                );
            }
        }
    }

    #[test]
    fn real_identifiers_pass_in_every_identifier_field() {
        for value in REAL_IDENTIFIERS {
            for (record, field) in identifier_records(value) {
                assert_eq!(check(&[record]), Ok(()), "{field} {value:?}");
            }
        }
    }

    #[test]
    fn folding_maps_look_alikes_and_drops_invisibles() {
        for (raw, folded) in [
            ("５５５－４４", "555-44"),
            ("a\u{200B}\u{200E}\u{00AD}\u{0301}b", "ab"),
            ("1\u{2212}2\u{02D7}3\u{2014}4", "1-2-3-4"),
            ("1\u{00B7}2\u{2044}3\u{203F}4", "1.2/3_4"),
            ("\u{00A0}\u{3000}\u{2028}\u{0085}", "  \n\n"),
            ("\u{0663}\u{096F}\u{1D7D7}\u{FF10}", "3990"),
            (
                "\u{0001}\u{0002}\t\r\n\u{001B}[0m\u{009B}",
                "\u{0002}\t\r\n[0m",
            ),
            ("Müller 37 °C", "Muller 37 °C"),
        ] {
            assert_eq!(normalize(raw), folded, "{raw:?}");
        }
        // Plain ASCII is borrowed, not copied.
        for plain in ["E-1203 probe blocked", "a\tb\r\n\u{0002}1P|", ""] {
            assert!(matches!(normalize(plain), Cow::Borrowed(_)), "{plain:?}");
        }
    }

    /// Every record the collector's parsers make of the instrument corpus
    /// (collector-core/tests/data, the copy of the shared corpus) and of the
    /// sample logs passes the guard: the guard refuses no real device data.
    #[test]
    fn every_corpus_record_passes() {
        use outpost_collector_core as core;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let fallback = core::Instrument {
            model: "XN-550".into(),
            serial: "BD634545".into(),
        };
        let mut records = Vec::new();
        for (dir, kind) in [
            ("collector-core/tests/data/astm", "astm"),
            ("collector-core/tests/data/hl7", "hl7"),
            ("examples/sample-data/instrument-logs", "log"),
        ] {
            let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "{dir}");
            for file in files {
                let bytes = std::fs::read(&file).unwrap();
                let parsed: Vec<core::Record> = match kind {
                    "log" => core::logs::parse(&bytes, &fallback).records,
                    _ => {
                        let ends = if kind == "astm" {
                            core::astm::message_ends(&bytes)
                        } else {
                            core::hl7::message_ends(&bytes)
                        };
                        let mut start = 0;
                        let mut out = Vec::new();
                        for end in ends.into_iter().chain([bytes.len()]) {
                            if end > start {
                                let unit = &bytes[start..end];
                                out.extend(if kind == "astm" {
                                    core::astm::parse(unit, &fallback).records
                                } else {
                                    core::hl7::parse(unit, &fallback).records
                                });
                                start = end;
                            }
                        }
                        out
                    }
                };
                records.extend(parsed.into_iter().map(|r| (file.clone(), wire(r))));
            }
        }
        let qc = records
            .iter()
            .filter(|(_, r)| matches!(r, Record::Qc(_)))
            .count();
        assert!(qc >= 41, "the corpus's QC runs parse ({qc} QC records)");
        for lot in ["PIX240205N", "PX440N"] {
            assert!(
                records
                    .iter()
                    .any(|(_, r)| matches!(r, Record::Qc(q) if q.control_lot == lot)),
                "lot {lot}"
            );
        }
        for (file, record) in &records {
            if let Err(v) = check(std::slice::from_ref(record)) {
                panic!("{}: a real device record was refused: {v}", file.display());
            }
        }
    }

    /// A xorshift64 generator: the same values for the same seed on every run.
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// Skipping the rules a text cannot fire (`Needs`) never changes a
    /// verdict: every rule run on every text gives the same answer as the
    /// gated run, for the hostile and real texts and identifiers above, the
    /// corpus's log lines, and 100,000 texts generated from the words and
    /// marks the rules look for (either case, non-ASCII look-alikes among
    /// them).
    #[test]
    fn the_digit_run_shapes_hold_every_ssn_and_nanp_match() {
        // Every text the SSN or NANP pattern matches anywhere has the digit
        // runs `Needs` notes for it, so skipping those patterns on a text
        // without them skips nothing. Random texts over digits and the gap
        // bytes (and a few others that break a gap), lengths 1 to 40.
        let r = rules();
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        const ALPHABET: &[u8] = b"0123456789012345678901234567890123456789 \t-./_ -.a:,(+";
        let (mut ssn, mut nanp) = (0, 0);
        for _ in 0..300_000 {
            let len = 1 + (next() % 40) as usize;
            let t: String = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize] as char)
                .collect();
            let n = Needs::of(&t);
            if r.ssn.is_match(&t) {
                ssn += 1;
                assert!(n.ssn_shape, "SSN pattern matches {t:?}");
            }
            if r.phone_nanp.is_match(&t) {
                nanp += 1;
                assert!(n.nanp_shape, "NANP pattern matches {t:?}");
            }
        }
        // The random texts do reach both patterns.
        assert!(ssn > 1000 && nanp > 300, "ssn {ssn}, nanp {nanp}");
        // And the shapes are not simply always on.
        for clean in [
            "sample 24-1128-90301 aspirated rack 47 pos 7",
            "12:30:45.123",
            "555x12x3456",
        ] {
            let n = Needs::of(clean);
            assert!(!n.ssn_shape && !n.nanp_shape, "{clean}");
        }
    }

    #[test]
    fn gating_never_changes_a_verdict() {
        let mut texts: Vec<String> = HOSTILE_TEXTS
            .iter()
            .map(|(t, _)| *t)
            .chain(REAL_TEXTS.iter().copied())
            .chain(HOSTILE_IDENTIFIERS.iter().map(|(t, _)| *t))
            .chain(REAL_IDENTIFIERS.iter().copied())
            .chain(DEVICE_TEXTS.iter().copied())
            .map(str::to_owned)
            .collect();
        let logs = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/sample-data/instrument-logs");
        for file in std::fs::read_dir(logs).unwrap() {
            let text =
                String::from_utf8_lossy(&std::fs::read(file.unwrap().path()).unwrap()).into_owned();
            texts.extend(text.lines().map(str::to_owned));
        }
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        const PARTS: &[&str] = &[
            " ",
            "  ",
            "-",
            ".",
            "/",
            "_",
            ":",
            "#",
            "=",
            "|",
            "@",
            "(",
            ")",
            "+",
            "\t",
            "\n",
            "0",
            "1",
            "12",
            "123",
            "555",
            "0123",
            "45",
            "6789",
            "1950",
            "1975",
            "2024",
            "03",
            "ssn",
            "SS",
            "soc",
            "sec",
            "tel",
            "Phone",
            "ph",
            "fax",
            "mobile",
            "cell",
            "dob",
            "D.O.B",
            "born",
            "Birth",
            "mrn",
            "MR",
            "acct",
            "acc",
            "sample",
            "specimen",
            "medical",
            "rec",
            "patient",
            "Pt",
            "id",
            "name",
            "called",
            "Mrs",
            "Mr",
            "Ms",
            "Mx",
            "Dr",
            "lot",
            "no",
            "Smith",
            "John",
            "jan",
            "March",
            "x.org",
            "PID",
            "P",
            "NK1",
            "PID|1|",
            "P|1",
            "\x02P|",
            "jo@x.org",
            "a.b@lab-1.example.com",
            "\u{17f}",
            "K",
            "\u{212a}",
            "é",
            "ß",
            "Ø",
            "\u{2212}",
            "\u{ff10}",
        ];
        // Number shapes the rules look for, and what may come between a
        // label and its value.
        const NUMBERS: &[&str] = &[
            "555-12-3456",
            "555 12 3456",
            "123456789",
            "(217) 555-0123",
            "217.555.0123",
            "+44 20 7946 0958",
            "03/04/1950",
            "1950-03-04",
            "4 Mar 1950",
            "March 4, 1950",
            "00123456",
            "12-3456",
            "5550123",
            "19500304",
            "2024-06-27 10:30",
            "10.25",
            "555 - 12 - 3456",
            "555\t12\t3456",
            "555   12   3456",
            "555_12_3456",
            "555/12/3456",
            "555 .12. 3456",
            "1555-12-34567",
            "555-12- -3456",
            "555-123-4567",
            "217 - 555 - 0123",
            "217 .555. 0123",
            "0217.555.01234",
            "24-1128-90301",
        ];
        const BETWEEN: &[&str] = &[" ", ": ", "#", " no. ", "=", "_", " - ", "  ", ""];
        let mut pick = |from: &[&'static str]| from[(next() % from.len() as u64) as usize];
        for i in 0..100_000 {
            let mut t = String::new();
            for _ in 0..i % 3 {
                t.push_str(pick(PARTS));
                t.push(' ');
            }
            t.push_str(pick(PARTS));
            t.push_str(pick(BETWEEN));
            if i % 4 != 3 {
                t.push_str(pick(NUMBERS));
            } else {
                t.push_str(pick(PARTS));
            }
            for _ in 0..i % 2 {
                t.push(' ');
                t.push_str(pick(PARTS));
            }
            texts.push(t);
        }
        let mut fired = std::collections::BTreeMap::<String, usize>::new();
        for raw in &texts {
            let s = normalize(raw);
            for lot in [LotException::Applies, LotException::DoesNotApply] {
                for segment_and_email in [true, false] {
                    let gated = scoped_rules(
                        &s,
                        Scope {
                            needs: Needs::of(&s),
                            lot,
                            segment_and_email,
                        },
                    );
                    let every = scoped_rules(
                        &s,
                        Scope {
                            needs: Needs::everything(Needs::of(&s).digits),
                            lot,
                            segment_and_email,
                        },
                    );
                    assert_eq!(gated, every, "{raw:?}");
                    if let Some(f) = every {
                        *fired.entry(format!("{f:?}")).or_default() += 1;
                    }
                }
            }
        }
        // The generated texts reach every rule, not only clean verdicts.
        for kind in [
            "PatientSegment",
            "Ssn",
            "Email",
            "Phone",
            "BirthDate",
            "Mrn",
            "PersonName",
        ] {
            assert!(
                fired.get(kind).is_some_and(|n| *n >= 100),
                "{kind}: {fired:?}"
            );
        }
    }

    /// What collector-core's `device_id` keeps or masks in a lot or serial
    /// field, the guard accepts: generated values of every shape (digit
    /// groups with each separator, patient labels, dates, letters, spaces,
    /// non-ASCII) and the values of issue #19 — a doubtful field is masked,
    /// and the record it sits in passes.
    #[test]
    fn collector_device_ids_pass_the_guard() {
        use outpost_collector_core::redact::device_id;
        let mut values: Vec<String> = [
            "555-12-3456",
            "555.12.3456",
            "555 12 3456",
            "555_12_3456",
            "555:12:3456",
            "123456789",
            "217-555-0123",
            "2015-06-01",
            "03.04.50",
            "19500304",
            "20240627",
            "MRN-12",
            "ptid_7",
            "SSN-123",
            "dob.1950",
            "L 2309A",
            "LÖT1",
            "Smith^John",
            "PID|1",
            "a@b.org",
            "DOE, JANE",
            "+12175550123",
            "QC-2024-11",
            "PIX240205N",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        values.push("A".repeat(65));
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        const PARTS: &[&str] = &[
            "-", ".", "/", "_", ":", " ", "L", "LOT", "QC", "mrn", "dob", "sample", "19", "20",
            "0", "1", "12", "123", "45", "4567", "6789", "2024", "1950", "06", "31", "ß", "^",
            "tel", "acct", "Dr", "pt", "Mr", "Smith", "born", "@", "x.org", "+", "(", ")", "#",
        ];
        for _ in 0..50_000 {
            let n = 1 + next() % 7;
            let v: String = (0..n)
                .map(|_| PARTS[(next() % PARTS.len() as u64) as usize])
                .collect();
            values.push(v);
        }
        for v in &values {
            let kept = device_id(v);
            assert_eq!(device_token(&kept), None, "{v:?} became {kept:?}");
            let mut q = qc();
            q.control_lot = kept.clone();
            q.instrument.serial = kept;
            assert_eq!(check(&[Record::Qc(q)]), Ok(()), "{v:?}");
        }
    }

    /// Issue #19: a CSV QC export whose `Lot` column holds SSN-shaped values
    /// loses no row: each lot is masked, every record passes the guard.
    #[test]
    fn a_csv_with_ssn_shaped_lots_loses_no_row() {
        use outpost_collector_core as core;
        let fallback = core::Instrument {
            model: "XN-550".into(),
            serial: "BD634545".into(),
        };
        let mut csv = String::from("Analyte;Result;Unit;Lot;Level\n");
        for i in 0..20 {
            let lot = match i % 3 {
                0 => format!("555-12-{:04}", 3400 + i),
                1 => format!("555 12 {:04}", 3400 + i),
                _ => format!("55512{:04}", 3400 + i),
            };
            csv.push_str(&format!("WBC;{i}.5;10*3/uL;{lot};{}\n", i % 3));
        }
        let out = core::csvjson::parse_csv(csv.as_bytes(), &fallback);
        assert_eq!(out.records.len(), 20);
        let wired: Vec<Record> = out.records.into_iter().map(wire).collect();
        for r in &wired {
            assert_eq!(check(std::slice::from_ref(r)), Ok(()), "{r:?}");
            let Record::Qc(q) = r else { panic!("not QC") };
            assert_eq!(q.control_lot, "[REDACTED:ssn]");
        }
    }

    /// The mask is one exact marker; anything around or inside it is refused.
    #[test]
    fn only_an_exact_mask_passes_as_an_identifier() {
        for ok in ["[REDACTED:ssn]", "[REDACTED:address]", "[REDACTED:id]"] {
            assert_eq!(device_token(ok), None, "{ok}");
        }
        for bad in [
            "[REDACTED:]",
            "[REDACTED:SSN]",
            "[REDACTED:ssn] 123-45-6789",
            "x[REDACTED:ssn]",
            "[REDACTED:ssn]]",
            "[REDACTED:abcdefghijklmnopq]",
            "[REDACTED:ss-n]",
            "[REDACTED:ssn123456789]",
        ] {
            assert!(device_token(bad).is_some(), "{bad}");
        }
    }

    /// collector-core's record → the wire record (what the collector module
    /// and `uplink::convert` do between them, field for field).
    fn wire(r: outpost_collector_core::Record) -> Record {
        use outpost_collector_core as core;
        let instrument = |i: core::Instrument| Instrument {
            model: i.model,
            serial: i.serial,
        };
        match r {
            core::Record::Qc(q) => Record::Qc(QcResult {
                instrument: instrument(q.instrument),
                analyte: q.analyte,
                value: q.value,
                unit: q.unit,
                reference_range: q.reference_range,
                flags: q.flags,
                control_lot: q.control_lot,
                control_level: q.control_level,
                run_time: None,
            }),
            core::Record::Maintenance(m) => Record::Maintenance(MaintenanceEvent {
                instrument: instrument(m.instrument),
                action: m.action,
                outcome: m.outcome,
                time: None,
            }),
            core::Record::Event(e) => Record::Event(InstrumentEvent {
                instrument: instrument(e.instrument),
                severity: Severity::Info,
                code: e.code,
                text: e.text,
                time: None,
            }),
            core::Record::Software(s) => Record::Software(SoftwareStatus {
                instrument: instrument(s.instrument),
                component: s.component,
                version: s.version,
                state: InstallState::Installed,
            }),
            core::Record::Heartbeat(h) => heartbeat(instrument(h.instrument)),
        }
    }
}
