// The source text of the redaction patterns. Documented where `lib.rs`
// declares the module: this file is also `include!`d by `build.rs`, where an
// inner doc comment cannot stand. Nothing here may name `crate::` items.

/// One redaction pattern; [`source`] gives its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatternId {
    Url,
    Email,
    SsnLabelled,
    SsnShape,
    LotBefore,
    LabelledId,
    PhoneLabelled,
    PhoneShape,
    Date,
    PersonContext,
    Age,
    Ip,
    Address,
    PoBox,
    Zip,
    NameContext,
    NameShape,
}

/// Every pattern, in the order of its embedded DFA.
pub(crate) const PATTERN_IDS: [PatternId; 17] = [
    PatternId::Url,
    PatternId::Email,
    PatternId::SsnLabelled,
    PatternId::SsnShape,
    PatternId::LotBefore,
    PatternId::LabelledId,
    PatternId::PhoneLabelled,
    PatternId::PhoneShape,
    PatternId::Date,
    PatternId::PersonContext,
    PatternId::Age,
    PatternId::Ip,
    PatternId::Address,
    PatternId::PoBox,
    PatternId::Zip,
    PatternId::NameContext,
    PatternId::NameShape,
];

/// Whether the embedded DFAs of pattern `id` are sparse rather than dense.
/// The address pattern's counted repetition of words makes its dense
/// forward DFA about 1.2 MB, the sparse one about 0.35 MB; a sparse DFA
/// searches more slowly, and the address pass runs only on texts with a
/// house number and a street word, so the module is made smaller there.
pub(crate) fn is_sparse(id: PatternId) -> bool {
    matches!(id, PatternId::Address)
}

/// Upper-case and letter classes spelled out over Latin-1 so that accented
/// names are caught without the `unicode-gencat` feature of `regex`.
const UPPER: &str = "A-ZÀ-ÖØ-Þ";
const LETTER: &str = "A-Za-zÀ-ÖØ-öø-ÿ'’\\-";
const NAME_TOKEN: &str = "[A-ZÀ-ÖØ-Þ][A-Za-zÀ-ÖØ-öø-ÿ'’\\-]*\\.?";

/// The text of pattern `id`, as `regex` syntax.
pub(crate) fn source(id: PatternId) -> String {
    let month = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)";
    let time = r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)";
    let date = format!(
        r"(?i)\b(?:(?P<iso>\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}){time}?|(?P<dmy>\d{{1,2}}/\d{{1,2}}/\d{{2,4}}|\d{{1,2}}\.\d{{1,2}}\.\d{{2,4}}|\d{{1,2}}-\d{{1,2}}-\d{{2,4}}){time}?|(?P<compact>(?:1[89]|20)\d{{6}})(?P<ctime>\d{{4,6}})?|\d{{1,2}}(?:st|nd|rd|th)?[ -]{month}\.?,?[ -]\d{{2,4}}{time}?|{month}\.?[ ]\d{{1,2}}(?:st|nd|rd|th)?,?[ ]\d{{4}}{time}?)\b"
    );
    let name = format!(r"{NAME_TOKEN}(?:(?:\s*,\s*\^?\s*|\^|\s+){NAME_TOKEN}){{0,3}}");
    match id {
        PatternId::Url => r"(?i)\b(?:https?|ftp|file)://[^\s|^]+|\bwww\.[^\s|^]+".to_string(),
        PatternId::Email => r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)+".to_string(),
        PatternId::SsnLabelled => r"(?i)\b(?:ssn|ss#|soc(?:ial)?\.?\s*sec(?:urity)?\.?(?:\s*(?:no\.?|number|#))?)\s*[:#=]?\s*\d[\d \-]{7,10}\d".to_string(),
        PatternId::SsnShape => r"\b\d{3}-\d{2}-\d{4}\b|\b\d{3} \d{2} \d{4}\b".to_string(),
        PatternId::LotBefore => r"(?i)\blot\s*(?:no\.?|number|#)?\s*[:#=]?\s*$".to_string(),
        PatternId::LabelledId => r"(?i)\b(?P<label>mrn|mr#|mr no\.?|med(?:ical)? rec(?:ord)?(?:\s*(?:number|no\.?|#))?|acct|account|plan|member|policy|insurance|insured|patient\s*id|pat\s*id|pid|chart|encounter|visit|accession|acc#|sample|specimen|licen[cs]e|health\s*card|nhs|id#|id|identifier)(?P<sep>(?:\s*(?:id|no\.?|number|nr\.?|#))?\s*[:#=]?\s*)(?P<value>[A-Z0-9][A-Z0-9/\-]*\d[A-Z0-9/\-]*)".to_string(),
        PatternId::PhoneLabelled => r"(?i)\b(?P<label>phone|ph|tel(?:ephone)?|fax|cell|mobile|mob|pager|beeper|contact)(?P<sep>\.?\s*(?:no\.?|#|nr\.?)?\s*[:#=]?\s*)(?P<value>\+?[\d(][\d ()./\-]{5,}\d)".to_string(),
        PatternId::PhoneShape => r"(?:\+\d{1,3}[\s.\-]?)?\(\d{3}\)\s?\d{3}[\s.\-]?\d{3,4}\b|\b\d{3}[.\-]\d{3}[.\-]\d{4}\b|\+\d{1,3}[\s.\-]\d{2,4}[\s.\-]\d{3,4}[\s.\-]?\d{2,4}\b".to_string(),
        PatternId::Date => date,
        PatternId::PersonContext => r"(?i)(?:\bd\.?o\.?b\b|birth|\bborn\b|\bb\.\s*$|patient|\bpt\b|\bname\b|admi(?:t|ssion)|discharg|\bdied\b|death|deceased|\bdod\b)".to_string(),
        PatternId::Age => r"(?i)\b(?:age[d]?\s*[:=]?\s*(?:9\d|1\d\d)\b(?:\s*(?:y|yo|yrs?|years?)\b(?:\s*old)?)?|(?:9\d|1[0-4]\d)\s*(?:y|yo|y/o|yrs?|years?)\b(?:\s*old)?)".to_string(),
        PatternId::Ip => r"\b\d{1,3}(?:\.\d{1,3}){3}\b|(?i)\b(?:[0-9a-f]{1,4}:){3,7}[0-9a-f]{1,4}\b".to_string(),
        PatternId::Address => r"(?i)\b\d{1,6}\s+(?:[a-z0-9'\-]+\.?\s+){1,4}(?:st|street|ave|avenue|rd|road|dr|drive|blvd|boulevard|ln|lane|way|ct|court|pl|place|ter|terrace|hwy|highway|pkwy|parkway|cir|circle|sq|square|strasse|straße)\b\.?".to_string(),
        PatternId::PoBox => r"(?i)\bp\.?\s*o\.?\s*box\s*\d+".to_string(),
        PatternId::Zip => r"(?i)\b(?:zip|postal\s*code|postcode|plz)\s*[:#=]?\s*[A-Z0-9][A-Z0-9 \-]{2,8}[A-Z0-9]\b|(?-i:,\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?\b)".to_string(),
        PatternId::NameContext => format!(
                r"\b(?P<label>(?i:pt|pat|patient|name|dr|doctor|mr|mrs|ms|miss|mx|prof|nurse|rn|physician|attending|ordered by|ordering|requested by|operator|user|tech|technician|signed by|by))(?P<sep>\.\s*|\s*[:#=]\s*|\s+)(?P<value>{name})"
            ),
        PatternId::NameShape => format!(
                r"\b[{UPPER}][{LETTER}]+(?:\s*,\s*\^?\s*|\^)[{UPPER}][{LETTER}]+(?:[ ^][{UPPER}]\b\.?)?"
            ),
    }
}

/// `pattern` with the Unicode-aware `\d`, `\s` and `\b` replaced by their
/// ASCII forms. On text that is all ASCII the two forms match exactly the
/// same spans (Unicode's extra digits, spaces and word characters are all
/// outside ASCII, and so are the extra case variants `(?i)` adds). The ASCII
/// form compiles in about half the time, and a DFA can be built from it (a
/// DFA cannot express Unicode `\b`).
pub(crate) fn ascii_form(pattern: &str) -> String {
    pattern
        .replace(r"\d", "[0-9]")
        .replace(r"\s", r"[\t\n\x0B\x0C\r ]")
        .replace(r"\b", r"(?-u:\b)")
}
