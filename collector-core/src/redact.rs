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

use regex::{Captures, Regex};
use std::sync::OnceLock;

/// Folds full-width ASCII (U+FF01–U+FF5E) to ASCII, the ideographic space
/// (U+3000) to a space, and removes zero-width and invisible characters
/// (U+200B–U+200D, U+2060, U+FEFF, U+00AD soft hyphen).
pub fn normalize(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0),
            '\u{3000}' => Some(' '),
            '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}' => None,
            _ => Some(c),
        })
        .collect()
}

fn tag(kind: &str) -> String {
    format!("[REDACTED:{kind}]")
}

struct Rules {
    url: Regex,
    email: Regex,
    ssn_labelled: Regex,
    ssn_shape: Regex,
    lot_before: Regex,
    labelled_id: Regex,
    phone_labelled: Regex,
    phone_shape: Regex,
    date: Regex,
    person_context: Regex,
    age: Regex,
    ip: Regex,
    address: Regex,
    po_box: Regex,
    zip: Regex,
    name_context: Regex,
    name_shape: Regex,
}

/// Upper-case and letter classes spelled out over Latin-1 so that accented
/// names are caught without the `unicode-gencat` feature of `regex`.
const UPPER: &str = "A-ZÀ-ÖØ-Þ";
const LETTER: &str = "A-Za-zÀ-ÖØ-öø-ÿ'’\\-";
const NAME_TOKEN: &str = "[A-ZÀ-ÖØ-Þ][A-Za-zÀ-ÖØ-öø-ÿ'’\\-]*\\.?";

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let r = |p: &str| Regex::new(p).expect("static redaction pattern compiles");
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

fn labelled(caps: &Captures<'_>, kind: &str) -> String {
    format!("{}{}{}", &caps["label"], &caps["sep"], tag(kind))
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

/// Normalises `text` and replaces every identifier it finds with
/// `[REDACTED:kind]`; see the module documentation for the rules.
pub fn redact(text: &str) -> String {
    let r = rules();
    let mut s = normalize(text);
    s = r.url.replace_all(&s, tag("url").as_str()).into_owned();
    s = r.email.replace_all(&s, tag("email").as_str()).into_owned();
    s = r
        .ssn_labelled
        .replace_all(&s, tag("ssn").as_str())
        .into_owned();
    s = replace_with_context(&s, &r.ssn_shape, |before, _| {
        if r.lot_before.is_match(before) {
            None
        } else {
            Some(tag("ssn"))
        }
    });
    s = r
        .phone_labelled
        .replace_all(&s, |c: &Captures<'_>| labelled(c, "phone"))
        .into_owned();
    s = r
        .labelled_id
        .replace_all(&s, |c: &Captures<'_>| labelled(c, "id"))
        .into_owned();
    s = r
        .phone_shape
        .replace_all(&s, tag("phone").as_str())
        .into_owned();
    s = replace_caps_with_context(&s, &r.date, |before, caps| {
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
        let near_person = r.person_context.is_match(&before[start..]);
        if has_time(caps) && !near_person {
            None
        } else {
            Some(tag("date"))
        }
    });
    s = r.age.replace_all(&s, tag("age").as_str()).into_owned();
    s = r.ip.replace_all(&s, tag("ip").as_str()).into_owned();
    s = r
        .po_box
        .replace_all(&s, tag("address").as_str())
        .into_owned();
    s = r
        .address
        .replace_all(&s, tag("address").as_str())
        .into_owned();
    s = r.zip.replace_all(&s, tag("address").as_str()).into_owned();
    s = r
        .name_context
        .replace_all(&s, |c: &Captures<'_>| labelled(c, "name"))
        .into_owned();
    s = r
        .name_shape
        .replace_all(&s, tag("name").as_str())
        .into_owned();
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
    let risky = r.ssn_shape.is_match(s) || r.phone_shape.is_match(s) || r.email.is_match(s);
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

fn replace_with_context(s: &str, re: &Regex, f: impl Fn(&str, &str) -> Option<String>) -> String {
    replace_caps_with_context(s, re, |before, caps| f(before, &caps[0]))
}

/// Like `Regex::replace_all`, but the closure sees the text before the match
/// and may keep the match by returning `None`.
fn replace_caps_with_context(
    s: &str,
    re: &Regex,
    f: impl Fn(&str, &Captures<'_>) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for caps in re.captures_iter(s) {
        let m = caps.get(0).expect("group 0 always matches");
        out.push_str(&s[last..m.start()]);
        match f(&s[..m.start()], &caps) {
            Some(rep) => out.push_str(&rep),
            None => out.push_str(m.as_str()),
        }
        last = m.end();
    }
    out.push_str(&s[last..]);
    out
}
