//! Free-text redaction of HIPAA Safe Harbor identifiers.
//!
//! [`redact`] first normalises the text ([`normalize`]: full-width ASCII folded,
//! zero-width characters removed) and then replaces each identifier it finds with
//! `[REDACTED:kind]`. The rules are deliberately greedy: when in doubt, redact.
//!
//! What is redacted, in this order:
//! 1. URLs and e-mail addresses (`url`, `email`);
//! 2. SSN-shaped numbers `ddd-dd-dddd` / `ddd dd dddd` and anything after an SSN
//!    label (`ssn`) — *except* an SSN-shaped number right after a lot label
//!    (`lot 123-45-6789`, `Lot#: ...`), which is a control lot;
//! 3. values after an identifier label: MRN, medical record, account, plan,
//!    member, policy, insurance, patient id, chart, encounter, visit, accession,
//!    sample, specimen, licence, `ID#`, `id` (`id`); the label is kept;
//! 4. phone and fax numbers, labelled or phone-shaped (`phone`);
//! 5. dates (`date`), see the date rule below; ages over 89 (`age`);
//! 6. IPv4/IPv6 addresses (`ip`); street addresses, P.O. boxes, labelled postal
//!    codes and `, ST 12345` state-plus-ZIP shapes (`address`);
//! 7. person names (`name`): after a context word (pt, patient, name, Dr, Mr, Mrs,
//!    Ms, Miss, nurse, physician, operator, user, tech...), and the shapes
//!    `LAST, FIRST`, `LAST,^FIRST` and `LAST^FIRST` anywhere.
//!
//! **Date rule.** In free text a date without a time of day is always redacted,
//! whatever its format (`3/4/1950`, `1950-03-04`, `04.03.1950`, `19500304`,
//! `4 Mar 1950`, `Mar 4, 1950`), because nothing tells a run date from a date of
//! birth or admission. A date *with* a time of day (`2024-06-27 13:54:07`,
//! `2024-06-27T13:54:07`, `20240627135407`) is a run or event timestamp and
//! survives, unless a person-context word (DOB, birth, born, patient, pt, name,
//! admitted, discharged, died...) occurs in the 40 characters before it, in which
//! case it is redacted too. Log-line prefix timestamps are split off by
//! [`crate::logs`] before the message is redacted, so they always survive.
//!
//! What survives by construction: units (`10*3/uL`), ranges (`4.3-5.5`),
//! instrument serials, analyte codes and error codes (`E-1203`) contain no shape
//! above. Names after a context word must start with a capital letter.

use regex::{Captures, NoExpand, Regex};
use std::borrow::Cow;
use std::sync::OnceLock;

/// Folds full-width ASCII (U+FF01–U+FF5E) to ASCII, the ideographic space
/// (U+3000) to a space, and removes zero-width and invisible characters
/// (U+200B–U+200D, U+2060, U+FEFF, U+00AD soft hyphen).
pub fn normalize(text: &str) -> Cow<'_, str> {
    // Every character it changes is outside ASCII.
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    Cow::Owned(normalize_chars(text))
}

fn normalize_chars(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0),
            '\u{3000}' => Some(' '),
            '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}' => None,
            _ => Some(c),
        })
        .collect()
}

const TAG_URL: &str = "[REDACTED:url]";
const TAG_EMAIL: &str = "[REDACTED:email]";
const TAG_SSN: &str = "[REDACTED:ssn]";
const TAG_ID: &str = "[REDACTED:id]";
const TAG_PHONE: &str = "[REDACTED:phone]";
const TAG_DATE: &str = "[REDACTED:date]";
const TAG_AGE: &str = "[REDACTED:age]";
const TAG_IP: &str = "[REDACTED:ip]";
const TAG_ADDRESS: &str = "[REDACTED:address]";
const TAG_NAME: &str = "[REDACTED:name]";

/// One redaction pattern, compiled on first use (a module instance lives for
/// one call, so patterns a call never needs are never compiled) in one of two
/// forms:
/// - `unicode`: the pattern as written, for any text;
/// - `ascii`: the same pattern with `\d`, `\s` and `\b` spelled as their
///   ASCII classes. On text that is all ASCII the two match exactly the same
///   spans (Unicode's extra digits, spaces and word characters are all outside
///   ASCII, and so are the extra case variants `(?i)` adds), and the ASCII form
///   compiles in about half the time. [`redact`] uses it only on ASCII text.
struct Pattern {
    text: String,
    unicode: OnceLock<Regex>,
    ascii: OnceLock<Regex>,
}

impl Pattern {
    fn new(text: &str) -> Pattern {
        debug_assert!(
            !text.contains(r"\\"),
            "ascii_form cannot rewrite an escaped backslash"
        );
        Pattern {
            text: text.to_string(),
            unicode: OnceLock::new(),
            ascii: OnceLock::new(),
        }
    }

    fn get(&self, ascii: bool) -> &Regex {
        let compile = |p: &str| Regex::new(p).expect("static redaction pattern compiles");
        if ascii {
            self.ascii.get_or_init(|| compile(&ascii_form(&self.text)))
        } else {
            self.unicode.get_or_init(|| compile(&self.text))
        }
    }
}

/// `pattern` with the Unicode-aware `\d`, `\s` and `\b` replaced by their
/// ASCII forms (see [`Pattern`]).
fn ascii_form(pattern: &str) -> String {
    pattern
        .replace(r"\d", "[0-9]")
        .replace(r"\s", r"[\t\n\x0B\x0C\r ]")
        .replace(r"\b", r"(?-u:\b)")
}

struct Rules {
    url: Pattern,
    email: Pattern,
    ssn_labelled: Pattern,
    ssn_shape: Pattern,
    lot_before: Pattern,
    labelled_id: Pattern,
    phone_labelled: Pattern,
    phone_shape: Pattern,
    date: Pattern,
    person_context: Pattern,
    age: Pattern,
    ip: Pattern,
    address: Pattern,
    po_box: Pattern,
    zip: Pattern,
    name_context: Pattern,
    name_shape: Pattern,
}

/// Upper-case and letter classes spelled out over Latin-1 so that accented
/// names are caught without the `unicode-gencat` feature of `regex`.
const UPPER: &str = "A-ZÀ-ÖØ-Þ";
const LETTER: &str = "A-Za-zÀ-ÖØ-öø-ÿ'’\\-";
const NAME_TOKEN: &str = "[A-ZÀ-ÖØ-Þ][A-Za-zÀ-ÖØ-öø-ÿ'’\\-]*\\.?";

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let r = Pattern::new;
        let month = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)";
        let time = r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)";
        let date = format!(
            r"(?i)\b(?:(?P<iso>\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}){time}?|(?P<dmy>\d{{1,2}}/\d{{1,2}}/\d{{2,4}}|\d{{1,2}}\.\d{{1,2}}\.\d{{2,4}}|\d{{1,2}}-\d{{1,2}}-\d{{2,4}}){time}?|(?P<compact>(?:1[89]|20)\d{{6}})(?P<ctime>\d{{4,6}})?|\d{{1,2}}(?:st|nd|rd|th)?[ -]{month}\.?,?[ -]\d{{2,4}}{time}?|{month}\.?[ ]\d{{1,2}}(?:st|nd|rd|th)?,?[ ]\d{{4}}{time}?)\b"
        );
        let name = format!(r"{NAME_TOKEN}(?:(?:\s*,\s*\^?\s*|\^|\s+){NAME_TOKEN}){{0,3}}");
        Rules {
            url: r(r"(?i)\b(?:https?|ftp|file)://[^\s|^]+|\bwww\.[^\s|^]+"),
            email: r(r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)+"),
            ssn_labelled: r(
                r"(?i)\b(?:ssn|ss#|soc(?:ial)?\.?\s*sec(?:urity)?\.?(?:\s*(?:no\.?|number|#))?)\s*[:#=]?\s*\d[\d \-]{7,10}\d",
            ),
            ssn_shape: r(r"\b\d{3}-\d{2}-\d{4}\b|\b\d{3} \d{2} \d{4}\b"),
            lot_before: r(r"(?i)\blot\s*(?:no\.?|number|#)?\s*[:#=]?\s*$"),
            labelled_id: r(
                r"(?i)\b(?P<label>mrn|mr#|mr no\.?|med(?:ical)? rec(?:ord)?(?:\s*(?:number|no\.?|#))?|acct|account|plan|member|policy|insurance|insured|patient\s*id|pat\s*id|pid|chart|encounter|visit|accession|acc#|sample|specimen|licen[cs]e|health\s*card|nhs|id#|id|identifier)(?P<sep>(?:\s*(?:id|no\.?|number|nr\.?|#))?\s*[:#=]?\s*)(?P<value>[A-Z0-9][A-Z0-9/\-]*\d[A-Z0-9/\-]*)",
            ),
            phone_labelled: r(
                r"(?i)\b(?P<label>phone|ph|tel(?:ephone)?|fax|cell|mobile|mob|pager|beeper|contact)(?P<sep>\.?\s*(?:no\.?|#|nr\.?)?\s*[:#=]?\s*)(?P<value>\+?[\d(][\d ()./\-]{5,}\d)",
            ),
            phone_shape: r(
                r"(?:\+\d{1,3}[\s.\-]?)?\(\d{3}\)\s?\d{3}[\s.\-]?\d{3,4}\b|\b\d{3}[.\-]\d{3}[.\-]\d{4}\b|\+\d{1,3}[\s.\-]\d{2,4}[\s.\-]\d{3,4}[\s.\-]?\d{2,4}\b",
            ),
            date: r(&date),
            person_context: r(
                r"(?i)(?:\bd\.?o\.?b\b|birth|\bborn\b|\bb\.\s*$|patient|\bpt\b|\bname\b|admi(?:t|ssion)|discharg|\bdied\b|death|deceased|\bdod\b)",
            ),
            age: r(
                r"(?i)\b(?:age[d]?\s*[:=]?\s*(?:9\d|1\d\d)\b(?:\s*(?:y|yo|yrs?|years?)\b(?:\s*old)?)?|(?:9\d|1[0-4]\d)\s*(?:y|yo|y/o|yrs?|years?)\b(?:\s*old)?)",
            ),
            ip: r(r"\b\d{1,3}(?:\.\d{1,3}){3}\b|(?i)\b(?:[0-9a-f]{1,4}:){3,7}[0-9a-f]{1,4}\b"),
            address: r(
                r"(?i)\b\d{1,6}\s+(?:[a-z0-9'\-]+\.?\s+){1,4}(?:st|street|ave|avenue|rd|road|dr|drive|blvd|boulevard|ln|lane|way|ct|court|pl|place|ter|terrace|hwy|highway|pkwy|parkway|cir|circle|sq|square|strasse|straße)\b\.?",
            ),
            po_box: r(r"(?i)\bp\.?\s*o\.?\s*box\s*\d+"),
            zip: r(r"(?i)\b(?:zip|postal\s*code|postcode|plz)\s*[:#=]?\s*[A-Z0-9][A-Z0-9 \-]{2,8}[A-Z0-9]\b|(?-i:,\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?\b)"),
            name_context: r(&format!(
                r"\b(?P<label>(?i:pt|pat|patient|name|dr|doctor|mr|mrs|ms|miss|mx|prof|nurse|rn|physician|attending|ordered by|ordering|requested by|operator|user|tech|technician|signed by|by))(?P<sep>\.\s*|\s*[:#=]\s*|\s+)(?P<value>{name})"
            )),
            name_shape: r(&format!(
                r"\b[{UPPER}][{LETTER}]+(?:\s*,\s*\^?\s*|\^)[{UPPER}][{LETTER}]+(?:[ ^][{UPPER}]\b\.?)?"
            )),
        }
    })
}

fn labelled(caps: &Captures<'_>, tag: &str) -> String {
    [&caps["label"], &caps["sep"], tag].concat()
}

fn valid_date_parts(caps: &Captures<'_>) -> bool {
    let whole = &caps[0];
    if let Some(c) = caps.name("compact") {
        let s = c.as_str();
        let m: u32 = s[4..6].parse().unwrap_or(0);
        let d: u32 = s[6..8].parse().unwrap_or(0);
        return (1..=12).contains(&m) && (1..=31).contains(&d);
    }
    let nums: Vec<u32> = whole
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(3)
        .filter_map(|s| s.parse().ok())
        .collect();
    if caps.name("dmy").is_some() && nums.len() == 3 {
        // d/m/y or m/d/y: both of the first two at most 31, one at most 12.
        let (a, b, y) = (nums[0], nums[1], nums[2]);
        let year_ok = y < 100 || (1800..=2199).contains(&y);
        return year_ok && a >= 1 && b >= 1 && a <= 31 && b <= 31 && (a <= 12 || b <= 12);
    }
    if caps.name("iso").is_some() && nums.len() == 3 {
        return (1800..=2199).contains(&nums[0]) && (1..=12).contains(&nums[1]);
    }
    true
}

fn has_time(caps: &Captures<'_>) -> bool {
    caps.name("ctime").is_some() || caps[0].contains(':')
}

/// The redaction passes, in the order [`redact`] applies them; each is one
/// pattern of [`Rules`].
#[derive(Clone, Copy)]
enum Pass {
    Url,
    Email,
    SsnLabelled,
    SsnShape,
    PhoneLabelled,
    LabelledId,
    PhoneShape,
    Date,
    Age,
    Ip,
    PoBox,
    Address,
    Zip,
    NameContext,
    NameShape,
}

const PASSES: [Pass; 15] = [
    Pass::Url,
    Pass::Email,
    Pass::SsnLabelled,
    Pass::SsnShape,
    Pass::PhoneLabelled,
    Pass::LabelledId,
    Pass::PhoneShape,
    Pass::Date,
    Pass::Age,
    Pass::Ip,
    Pass::PoBox,
    Pass::Address,
    Pass::Zip,
    Pass::NameContext,
    Pass::NameShape,
];

impl Rules {
    fn pattern(&self, pass: Pass) -> &Pattern {
        match pass {
            Pass::Url => &self.url,
            Pass::Email => &self.email,
            Pass::SsnLabelled => &self.ssn_labelled,
            Pass::SsnShape => &self.ssn_shape,
            Pass::PhoneLabelled => &self.phone_labelled,
            Pass::LabelledId => &self.labelled_id,
            Pass::PhoneShape => &self.phone_shape,
            Pass::Date => &self.date,
            Pass::Age => &self.age,
            Pass::Ip => &self.ip,
            Pass::PoBox => &self.po_box,
            Pass::Address => &self.address,
            Pass::Zip => &self.zip,
            Pass::NameContext => &self.name_context,
            Pass::NameShape => &self.name_shape,
        }
    }

    /// Runs one pass over `s`; `None` when it changes nothing. `ascii` says
    /// `s` is all ASCII (see [`Pattern`]).
    fn apply(&self, pass: Pass, s: &str, ascii: bool) -> Option<String> {
        let re = self.pattern(pass).get(ascii);
        // A plain match test first: it needs no capture slots, and most
        // passes find nothing in most texts.
        if !re.is_match(s) {
            return None;
        }
        let owned = |c: Cow<'_, str>| match c {
            Cow::Borrowed(_) => None,
            Cow::Owned(o) => Some(o),
        };
        match pass {
            Pass::Url => owned(re.replace_all(s, NoExpand(TAG_URL))),
            Pass::Email => owned(re.replace_all(s, NoExpand(TAG_EMAIL))),
            Pass::SsnLabelled => owned(re.replace_all(s, NoExpand(TAG_SSN))),
            Pass::SsnShape => replace_caps_with_context(s, re, |before, _| {
                (!self.lot_before.get(ascii).is_match(before)).then_some(TAG_SSN)
            }),
            Pass::PhoneLabelled => {
                owned(re.replace_all(s, |c: &Captures<'_>| labelled(c, TAG_PHONE)))
            }
            Pass::LabelledId => owned(re.replace_all(s, |c: &Captures<'_>| labelled(c, TAG_ID))),
            Pass::PhoneShape => owned(re.replace_all(s, NoExpand(TAG_PHONE))),
            Pass::Date => replace_caps_with_context(s, re, |before, caps| {
                if !valid_date_parts(caps) {
                    return None;
                }
                // Digits glued to a decimal point are part of a number, not a date.
                if before.ends_with(['.', ','])
                    && before[..before.len() - 1].ends_with(|c: char| c.is_ascii_digit())
                {
                    return None;
                }
                let start = floor_boundary(before, before.len().saturating_sub(40));
                let near_person = self.person_context.get(ascii).is_match(&before[start..]);
                (!has_time(caps) || near_person).then_some(TAG_DATE)
            }),
            Pass::Age => owned(re.replace_all(s, NoExpand(TAG_AGE))),
            Pass::Ip => owned(re.replace_all(s, NoExpand(TAG_IP))),
            Pass::PoBox | Pass::Address | Pass::Zip => {
                owned(re.replace_all(s, NoExpand(TAG_ADDRESS)))
            }
            Pass::NameContext => owned(re.replace_all(s, |c: &Captures<'_>| labelled(c, TAG_NAME))),
            Pass::NameShape => owned(re.replace_all(s, NoExpand(TAG_NAME))),
        }
    }
}

/// What a text contains, from one scan of its bytes: enough to skip the
/// passes that cannot match it (see [`Shape::may_match`]).
#[derive(Clone, Copy, Default)]
struct Shape {
    non_ascii: bool,
    /// Longest run of consecutive digits.
    digit_run: usize,
    /// A digit directly followed by white space.
    digit_space: bool,
    upper: bool,
    at: bool,
    dots: usize,
    colons: usize,
    /// `:` directly followed by `/`.
    colon_slash: bool,
    comma_or_caret: bool,
    /// Letters any case: `w`, `x`, `y`, `g`, `s`, `p` or `z`.
    w: bool,
    x: bool,
    y: bool,
    g: bool,
    s: bool,
    p_or_z: bool,
}

impl Shape {
    fn of(text: &str) -> Shape {
        let mut sh = Shape::default();
        let mut run = 0;
        let mut prev = 0u8;
        for b in text.bytes() {
            if b.is_ascii_digit() {
                run += 1;
                sh.digit_run = sh.digit_run.max(run);
            } else {
                run = 0;
            }
            match b {
                0x80.. => sh.non_ascii = true,
                b'A'..=b'Z' => sh.upper = true,
                b'@' => sh.at = true,
                b'.' => sh.dots += 1,
                b':' => sh.colons += 1,
                b'/' if prev == b':' => sh.colon_slash = true,
                b',' | b'^' => sh.comma_or_caret = true,
                b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' if prev.is_ascii_digit() => {
                    sh.digit_space = true
                }
                _ => {}
            }
            match b.to_ascii_lowercase() {
                b'w' => sh.w = true,
                b'x' => sh.x = true,
                b'y' => sh.y = true,
                b'g' => sh.g = true,
                b's' => sh.s = true,
                b'p' | b'z' => sh.p_or_z = true,
                _ => {}
            }
            prev = b;
        }
        sh
    }

    /// False only when `pass` cannot match a text of this shape. Each rule
    /// names something every match of the pass's pattern contains in ASCII
    /// text (a character, a run of digits, a digit before white space); a
    /// text with any non-ASCII character (where `\d`, `\s`, `\b` and `(?i)`
    /// reach further) always gets every pass. The `shape_never_skips_a_match`
    /// test holds each rule against the patterns.
    fn may_match(self, pass: Pass) -> bool {
        if self.non_ascii {
            return true;
        }
        let d = self.digit_run;
        match pass {
            Pass::Url => self.colon_slash || (self.w && self.dots > 0),
            Pass::Email => self.at,
            // A label starting with `s` (ssn, ss#, soc...) and a digit.
            Pass::SsnLabelled => self.s && d >= 1,
            // `\d{4}` in each alternative.
            Pass::SsnShape => d >= 4,
            Pass::PhoneLabelled | Pass::LabelledId => d >= 1,
            // `\d{3}` in each alternative.
            Pass::PhoneShape => d >= 3,
            // Every alternative ends in `\d{2,4}`, `\d{4}` or eight digits.
            Pass::Date => d >= 2,
            // `age` + `9\d`/`1\d\d`, or `9\d`/`1[0-4]\d` + `y...`.
            Pass::Age => (self.g || self.y) && d >= 2,
            Pass::PoBox => self.x && d >= 1,
            // House number, white space, street words.
            Pass::Address => self.digit_space,
            // Four dotted numbers, or IPv6 groups with at least three colons.
            Pass::Ip => (d >= 1 && self.dots >= 3) || self.colons >= 3,
            // `zip`, `postal`, `postcode`, `plz`, or `, ST 12345`.
            Pass::Zip => self.p_or_z || (self.comma_or_caret && d >= 5),
            // Names start with a capital letter; the `LAST, FIRST` and
            // `LAST^FIRST` shapes need the comma or caret.
            Pass::NameContext => self.upper,
            Pass::NameShape => self.upper && self.comma_or_caret,
        }
    }
}

/// Normalises `text` and replaces every identifier it finds with
/// `[REDACTED:kind]`; see the module documentation for the rules.
///
/// The passes run in the documented order, each over the output of the one
/// before. A pass is skipped when the text lacks something every match of its
/// pattern needs ([`Shape::may_match`]), runs its replacement only after a
/// plain match test succeeds, and on ASCII text uses the ASCII form of its
/// pattern ([`Pattern`]): none of these shortcuts changes the result.
pub fn redact(text: &str) -> String {
    let r = rules();
    let mut s = normalize(text).into_owned();
    let mut shape = Shape::of(&s);
    for pass in PASSES {
        if !shape.may_match(pass) {
            continue;
        }
        if let Some(next) = r.apply(pass, &s, !shape.non_ascii) {
            s = next;
            shape = Shape::of(&s);
        }
    }
    s
}

/// Redaction for device identifiers (instrument serials, control lots): a single
/// token of letters, digits and `. _ / : -` (at most 64 characters) is kept as
/// is, even when it looks like a date (`20052397` is a plausible serial), unless
/// it is SSN-shaped, phone-shaped or an e-mail address; anything else goes
/// through [`redact`].
pub fn device_id(text: &str) -> String {
    let s = normalize(text);
    let s = s.trim();
    let token = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | ':' | '-'));
    let r = rules();
    let ascii = s.is_ascii();
    let risky = [&r.ssn_shape, &r.phone_shape, &r.email]
        .iter()
        .any(|p| p.get(ascii).is_match(s));
    if token && !risky {
        s.to_string()
    } else {
        redact(s)
    }
}

/// True when `redact` would change nothing but normalisation.
pub fn is_clean(text: &str) -> bool {
    redact(text) == normalize(text)
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Like `Regex::replace_all`, but the closure sees the text before the match
/// and may keep the match by returning `None`. `None` when nothing was replaced.
fn replace_caps_with_context(
    s: &str,
    re: &Regex,
    f: impl Fn(&str, &Captures<'_>) -> Option<&'static str>,
) -> Option<String> {
    let mut out: Option<String> = None;
    let mut last = 0;
    for caps in re.captures_iter(s) {
        let m = caps.get(0).expect("group 0 always matches");
        if let Some(rep) = f(&s[..m.start()], &caps) {
            let out = out.get_or_insert_with(|| String::with_capacity(s.len() + 16));
            out.push_str(&s[last..m.start()]);
            out.push_str(rep);
            last = m.end();
        }
    }
    let mut out = out?;
    out.push_str(&s[last..]);
    Some(out)
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic generator of texts that exercise every pass: pieces of
    /// identifiers, labels and context words glued with separators, sometimes
    /// with a non-ASCII character.
    fn texts() -> Vec<String> {
        const PIECES: &[&str] = &[
            "pt",
            "Dr",
            "MRN",
            "mrn:",
            "DOB",
            "born",
            "age",
            "aged",
            "93Y",
            "101 yrs",
            "Sample",
            "lot",
            "Lot#",
            "SSN",
            "ss#",
            "phone",
            "Fax:",
            "tel",
            "zip",
            "Postal code",
            "PLZ",
            "postcode",
            "PO Box",
            "p.o. box",
            "St",
            "Street",
            "ave",
            "www.",
            "http://",
            "ftp://",
            "@",
            "example.org",
            "j.doe@mail.example.com",
            "lab@x",
            "Name@Host.IO",
            "SSN: 123456789",
            "ssn 123-45-6789",
            "Social Sec. No. 123 45 6789",
            "a.b",
            "::",
            "fe80",
            "dead:beef:cafe:face:0:1",
            "10.0.0.1",
            "123-45-6789",
            "123 45 6789",
            "555-123-4567",
            "(217)",
            "+1",
            "+44 20 7946 0958",
            "2024-06-27",
            "13:54:07",
            "T13:54",
            "3/4/1950",
            "04.03.1950",
            "19500304",
            "20240627135407",
            "4 Mar 1950",
            "Mar 4, 1950",
            "1st",
            "June",
            "SMITH",
            "JOHN",
            "Doe",
            "Jane",
            "O'BRIEN",
            "x",
            "q",
            "E-1203",
            "10*3/uL",
            "4.3-5.5",
            "WBC",
            "12.5",
            "62701",
            ", IL 62701",
            "Smith,^John",
            "DOE^JANE",
            "by",
            "user",
            "operator",
            "ID#",
            "acct",
            "Müller",
            "Ｍ",
            "é",
            "\u{00A0}",
            "٣",
            "ſsn",
            "\u{212A}",
        ];
        const SEPS: &[&str] = &[
            " ", "", ", ", ",", "^", "-", "/", ". ", ": ", "; ", "(", ")", "\t",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut out = Vec::new();
        for _ in 0..20_000 {
            let mut t = String::new();
            for _ in 0..1 + next(7) {
                t.push_str(PIECES[next(PIECES.len())]);
                t.push_str(SEPS[next(SEPS.len())]);
                if next(3) == 0 {
                    t.push_str(&next(100_000).to_string());
                    t.push_str(SEPS[next(SEPS.len())]);
                }
            }
            out.push(t);
        }
        out
    }

    /// Every pass run over every text with the patterns as written: neither
    /// the shape shortcut nor the ASCII forms.
    fn redact_every_pass(text: &str) -> String {
        let r = rules();
        let mut s = normalize(text).into_owned();
        for pass in PASSES {
            if let Some(next) = r.apply(pass, &s, false) {
                s = next;
            }
        }
        s
    }

    #[test]
    fn shape_never_skips_a_match() {
        let r = rules();
        let mut matched = [0usize; PASSES.len()];
        let mut skipped = [0usize; PASSES.len()];
        for t in texts() {
            let t = normalize(&t);
            let shape = Shape::of(&t);
            for (i, pass) in PASSES.into_iter().enumerate() {
                let hit = r.pattern(pass).get(false).is_match(&t);
                if hit {
                    matched[i] += 1;
                }
                if !shape.may_match(pass) {
                    skipped[i] += 1;
                    assert!(!hit, "pass {i} skipped on {t:?}, which it matches");
                }
            }
        }
        // Not vacuous: every pass both matched and was skipped many times.
        assert!(
            matched.iter().chain(&skipped).all(|n| *n > 50),
            "matched per pass {matched:?}, skipped per pass {skipped:?}"
        );
    }

    #[test]
    fn shortcuts_change_no_result() {
        let texts = texts();
        let ascii = texts.iter().filter(|t| normalize(t).is_ascii()).count();
        assert!(ascii > texts.len() / 2, "the ASCII forms are exercised");
        for t in texts {
            assert_eq!(redact(&t), redact_every_pass(&t), "for {t:?}");
        }
    }

    #[test]
    fn ascii_forms_match_the_same_spans_on_ascii_text() {
        let r = rules();
        let mut compared = 0;
        for t in texts()
            .iter()
            .map(|t| normalize(t))
            .filter(|t| t.is_ascii())
        {
            for pass in PASSES {
                let p = r.pattern(pass);
                let spans = |re: &Regex| -> Vec<(usize, usize)> {
                    re.find_iter(&t).map(|m| (m.start(), m.end())).collect()
                };
                assert_eq!(spans(p.get(true)), spans(p.get(false)), "{t:?}");
                // The capture groups too, through each pass's replacement.
                assert_eq!(r.apply(pass, &t, true), r.apply(pass, &t, false), "{t:?}");
                compared += 1;
            }
            for p in [&r.lot_before, &r.person_context] {
                assert_eq!(p.get(true).is_match(&t), p.get(false).is_match(&t), "{t:?}");
            }
        }
        assert!(compared > 100_000);
    }

    #[test]
    fn ascii_forms_spell_out_every_class() {
        let r = rules();
        for pass in PASSES {
            let ascii = ascii_form(&r.pattern(pass).text);
            for class in [r"\d", r"\s", r"\w"] {
                assert!(!ascii.contains(class), "{class} left in {ascii}");
            }
            assert!(!ascii.replace(r"(?-u:\b)", "").contains(r"\b"), "{ascii}");
        }
    }
}
