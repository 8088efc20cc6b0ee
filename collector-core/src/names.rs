//! Person names in free text, by dictionary (issue #19 part 3).
//!
//! Context words and `LAST, FIRST` shapes ([`crate::redact`]) miss a name
//! written plainly: `WARN E-2207 pasted id 4711 for Jane Roe`. This pass
//! finds such names with the public-domain name lists of the 1990 US Census
//! (`data/given-names.txt`: every given name of the female and male lists;
//! `data/surnames.txt`: the 15,000 most frequent surnames), embedded in the
//! binary as sorted text (about 150 KB) and searched by binary search — no
//! index to build at start, which matters in a module instance that lives
//! for one call.
//!
//! A **name** is, in free text:
//! - two adjacent words (one space between them) written as names are —
//!   both `Capitalised` or both `ALL CAPS`, each at least two letters — where
//!   one is a given name and the other a surname, in either order
//!   (`Jane Roe`, `ROE JANE`, `María González`); or
//! - a given name, capitalised, right after a person cue (`for`, `by`,
//!   `from`, `with`, `user`, `operator`, `tech`, `nurse`...), with the
//!   capitalised word after it when there is one (`by Maria`, `for Jane
//!   Roe`).
//!
//! Letters with diacritics are folded before the lists are searched
//! (`MÜLLER` → `MULLER`, `GONZÁLEZ` → `GONZALEZ`, `ß` → `SS`), so non-ASCII
//! names are found as their ASCII forms are.
//!
//! **Instrument vocabulary survives**: words that are given names or
//! surnames but are also ordinary words on an instrument (months, `Long`,
//! `Max`, `Mark`, `Will`, `Page`, colours, `Wash`, `Sample`, `High`, `Low`,
//! analyte and reagent words...) never count as a name part
//! ([`DEVICE_WORDS`]), and lower-case words never do (`jane roe` in a log is
//! rare; `may`, `will`, `long` in English text are common). Only the name's
//! words are replaced (`[REDACTED:name]`), so the event text stays readable.

use std::borrow::Cow;
use std::sync::OnceLock;

const GIVEN_NAMES: &str = include_str!("../data/given-names.txt");
const SURNAMES: &str = include_str!("../data/surnames.txt");

/// The replacement of a name.
pub const TAG_NAME: &str = "[REDACTED:name]";

/// Words that are names in the census lists and also ordinary words in
/// instrument texts; never a name part (upper case, ASCII-folded).
#[rustfmt::skip]
pub const DEVICE_WORDS: &[&str] = &[
    // Months and days.
    "JANUARY",
    "APRIL",
    "MAY",
    "JUNE",
    "JULY",
    "AUGUST",
    "MONDAY",
    "FRIDAY",
    // English words.
    "LONG",
    "MAX",
    "MARK",
    "WILL",
    "PAGE",
    "KING",
    "HOPE",
    "JOY",
    "FAITH",
    "GRACE",
    "CHANCE",
    "BILL",
    "DAWN",
    "SUMMER",
    "WINTER",
    "AUTUMN",
    "SUNNY",
    "MAJOR",
    "NORMAL",
    "GOLDEN",
    "SPRING",
    "FALL",
    "HALL",
    "HILL",
    "WOOD",
    "WOODS",
    "STONE",
    "LAKE",
    "RIVER",
    "RIVERS",
    "FIELD",
    "FIELDS",
    "PARK",
    "PARKS",
    "PRICE",
    "COST",
    "FRANK",
    "HUNTER",
    "BAKER",
    "COOK",
    "WALKER",
    "TURNER",
    "CARTER",
    "MASON",
    "MILLER",
    "BISHOP",
    "CHURCH",
    "NATION",
    "STATE",
    "POWER",
    "POWERS",
    "LOCK",
    "KEY",
    "KEYS",
    "GATE",
    "GATES",
    "BELL",
    "BOOTH",
    "CLOUD",
    // Colours (reagents, tubes, stains).
    "WHITE",
    "BLACK",
    "BROWN",
    "GREEN",
    "GRAY",
    "GREY",
    "RED",
    "BLUE",
    "ROSE",
    "VIOLET",
    "ORANGE",
    "AMBER",
    "IVORY",
    "CRYSTAL",
    "PEARL",
    "RUBY",
    "JADE",
    "SILVER",
    "GOLD",
    // Instrument and laboratory words.
    "WASH",
    "SAMPLE",
    "HIGH",
    "LOW",
    "BLANK",
    "SHORT",
    "DRAIN",
    "BANK",
    "GRAM",
    "RACK",
    "TUBE",
    "CUP",
    "LINE",
    "LEVEL",
    "LOT",
    "RUN",
    "TEST",
    "MODE",
    "CLEAN",
    "RINSE",
    "PROBE",
    "LIGHT",
    "LAMP",
    "BATTERY",
    "POWER",
    "SENSOR",
    "MOTOR",
    "FILTER",
    "COUNT",
    "COUNTER",
    "MEAN",
    "MEDIAN",
    "RANGE",
    "TARGET",
    "LIMIT",
    "CHECK",
    "START",
    "STOP",
    "READY",
    "SLEEP",
    "SERVICE",
    "MAINTENANCE",
    "WARNING",
    "ERROR",
    "ALARM",
    "STATUS",
    "DELTA",
    "ALPHA",
    "BETA",
    "GAMMA",
    "SIGMA",
    "OMEGA",
    "BASE",
    "ACID",
    "SALT",
    "IRON",
    "LEAD",
    "COPPER",
    "ZINC",
    "PLATELET",
    "FERRITIN",
    "GLUCOSE",
    "SODIUM",
    "CALCIUM",
    "CHLORIDE",
    "LACTATE",
    "WRIGHT",
    "GIEMSA",
    "LEISHMAN",
    "JENNER",
    "FIELD",
    "PAPPENHEIM",
    "GRAM",
    "ZIEHL",
    "NEELSEN",
    "DRABKIN",
    "WESTGARD",
    "LEVEY",
    "JENNINGS",
    "COULTER",
    "ABBOTT",
    "ROCHE",
    "SIEMENS",
    "BECKMAN",
    "HORIBA",
    "SYSMEX",
    "MINDRAY",
    "VITROS",
    "COBAS",
    "ALINITY",
    "ARCHITECT",
    "ATELLICA",
    "ADVIA",
    "DIMENSION",
    "PENTRA",
    "YUMIZEN",
    "ORTHO",
    "BIORAD",
    "RANDOX",
    "STAGO",
    "WERFEN",
    "BRUKER",
    "HAMILTON",
    "TECAN",
    "EPPENDORF",
    "MILLIPORE",
    "FISHER",
    "THERMO",
    "SIGMA",
    "MERCK",
    "BAYER",
    "DADE",
    "BEHRING",
    "KONE",
    "HITACHI",
    "OLYMPUS",
    "MODULAR",
    "ELECSYS",
    "LIAISON",
    "VIDAS",
    "AFINION",
    "VANTAGE",
    "PIXCELL",
    "HEMOSCREEN",
    "GENEXPERT",
    "CEPHEID",
    "HOLOGIC",
    "PANTHER",
    "TIGRIS",
    "LUMINEX",
    "QUIDEL",
    "SOFIA",
    "TRIAGE",
    "ALERE",
    "BINAX",
    "ACCU",
    "CHEK",
    "CONTOUR",
    "FREESTYLE",
    "HOST",
    "LIS",
    "SERVER",
    "CLIENT",
    "PORT",
    "MASTER",
    "SLAVE",
    "LINK",
    "NODE",
    // Address words (a street is not a person; the address rule sees numbers).
    "STREET", "ROAD", "AVENUE", "LANE", "DRIVE", "COURT", "PLACE", "SQUARE", "BOULEVARD",
];

/// Lower-case words after which a capitalised given name is a person.
const CUES: &[&str] = &[
    "for",
    "by",
    "from",
    "with",
    "to",
    "user",
    "operator",
    "tech",
    "technician",
    "nurse",
    "physician",
    "doctor",
    "patient",
    "pt",
    "mr",
    "mrs",
    "ms",
    "dr",
    "dear",
    "signed",
    "attn",
    "contact",
    "called",
    "named",
    "sent",
    "entered",
    "reviewed",
    "approved",
    "verified",
];

fn list(text: &'static str) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // The files are sorted; sorting again costs little and keeps the binary
    // search right should an edit break the order.
    v.sort_unstable();
    v.dedup();
    v
}

fn given_names() -> &'static [&'static str] {
    static LIST: OnceLock<Vec<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| list(GIVEN_NAMES))
}

fn surnames() -> &'static [&'static str] {
    static LIST: OnceLock<Vec<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| list(SURNAMES))
}

fn device_words() -> &'static [&'static str] {
    static LIST: OnceLock<Vec<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| {
        let mut v = DEVICE_WORDS.to_vec();
        v.sort_unstable();
        v.dedup();
        v
    })
}

/// Is `folded` (upper-case ASCII) a given name?
pub fn is_given_name(folded: &str) -> bool {
    given_names().binary_search(&folded).is_ok() && !is_device_word(folded)
}

/// Is `folded` (upper-case ASCII) a surname?
pub fn is_surname(folded: &str) -> bool {
    surnames().binary_search(&folded).is_ok() && !is_device_word(folded)
}

fn is_device_word(folded: &str) -> bool {
    device_words().binary_search(&folded).is_ok()
}

/// Upper-case ASCII form of a word: letters with diacritics folded; `None`
/// when a letter has no ASCII form here.
pub fn fold(word: &str) -> Option<String> {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        let folded =
            match c {
                'a'..='z' | 'A'..='Z' => {
                    out.push(c.to_ascii_uppercase());
                    continue;
                }
                '\'' | '’' => continue,
                'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'Ā'
                | 'ā' | 'Ă' | 'ă' | 'Ą' | 'ą' => "A",
                'Æ' | 'æ' => "AE",
                'Ç' | 'ç' | 'Ć' | 'ć' | 'Č' | 'č' => "C",
                'Ď' | 'ď' | 'Đ' | 'đ' => "D",
                'È' | 'É' | 'Ê' | 'Ë' | 'è' | 'é' | 'ê' | 'ë' | 'Ē' | 'ē' | 'Ę' | 'ę' | 'Ě'
                | 'ě' => "E",
                'Ğ' | 'ğ' => "G",
                'Ì' | 'Í' | 'Î' | 'Ï' | 'ì' | 'í' | 'î' | 'ï' | 'Ī' | 'ī' | 'İ' | 'ı' => {
                    "I"
                }
                'Ł' | 'ł' | 'Ľ' | 'ľ' => "L",
                'Ñ' | 'ñ' | 'Ń' | 'ń' | 'Ň' | 'ň' => "N",
                'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' | 'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'Ő'
                | 'ő' => "O",
                'Œ' | 'œ' => "OE",
                'Ř' | 'ř' => "R",
                'Ś' | 'ś' | 'Š' | 'š' | 'Ş' | 'ş' => "S",
                'ß' => "SS",
                'Ť' | 'ť' | 'Ţ' | 'ţ' => "T",
                'Ù' | 'Ú' | 'Û' | 'Ü' | 'ù' | 'ú' | 'û' | 'ü' | 'Ů' | 'ů' | 'Ű' | 'ű' => {
                    "U"
                }
                'Ý' | 'ý' | 'ÿ' | 'Ÿ' => "Y",
                'Ź' | 'ź' | 'Ż' | 'ż' | 'Ž' | 'ž' => "Z",
                _ => return None,
            };
        out.push_str(folded);
    }
    Some(out)
}

/// `f` of the folded form of `word` (see [`fold`]); ASCII words are folded
/// into a stack buffer, without allocating. False when `word` has a letter
/// without an ASCII form.
fn with_folded(word: &str, f: impl FnOnce(&str) -> bool) -> bool {
    const MAX: usize = 32;
    if word.is_ascii() && word.len() <= MAX {
        let mut buf = [0u8; MAX];
        let mut n = 0;
        for b in word.bytes().filter(|b| *b != b'\'') {
            buf[n] = b.to_ascii_uppercase();
            n += 1;
        }
        return std::str::from_utf8(&buf[..n]).is_ok_and(f);
    }
    fold(word).is_some_and(|folded| f(&folded))
}

/// How a word is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    /// `Jane`: an upper-case letter, then lower-case letters only.
    Title,
    /// `JANE`.
    Upper,
    /// Anything else.
    Other,
}

fn case_of(word: &str) -> Case {
    let mut chars = word.chars();
    let Some(first) = chars.next() else {
        return Case::Other;
    };
    if !first.is_uppercase() {
        return Case::Other;
    }
    // One pass, no allocation: letters after the first, whether all are
    // upper case, whether any is lower case, and whether every inner
    // capital follows an apostrophe or a `Mc`/`Mac` prefix (`O'Brien`,
    // `McDonald`, `MacLeod`).
    let (mut letters, mut all_upper, mut any_lower, mut capitals_ok) = (0, true, false, true);
    let mut prev = first;
    let mut prev2 = '\0';
    for (i, c) in chars.enumerate() {
        let at = i + 1;
        if c.is_alphabetic() {
            letters += 1;
            if c.is_uppercase() {
                let after_prefix = (at == 2 && first == 'M' && prev == 'c')
                    || (at == 3 && first == 'M' && prev2 == 'a' && prev == 'c');
                capitals_ok &= matches!(prev, '\'' | '’') || after_prefix;
            } else {
                all_upper = false;
                any_lower |= c.is_lowercase();
            }
        }
        prev2 = prev;
        prev = c;
    }
    if letters == 0 {
        Case::Other // one letter: an initial, not a name part here
    } else if all_upper {
        Case::Upper
    } else if any_lower && capitals_ok {
        Case::Title
    } else {
        Case::Other
    }
}

/// A word of the text: its byte span.
#[derive(Clone, Copy)]
struct Word {
    start: usize,
    end: usize,
}

fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        let part = c.is_alphabetic() || ((c == '\'' || c == '’') && start.is_some());
        match (part, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(Word { start: s, end: i });
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(Word {
            start: s,
            end: text.len(),
        });
    }
    out
}

/// `text` with person names found by the lists replaced (see the module
/// docs); borrowed when there is none.
pub fn redact_names(text: &str) -> Cow<'_, str> {
    // Cheap exit: a name needs an upper-case letter followed by a letter.
    let b = text.as_bytes();
    let maybe = !text.is_ascii()
        || b.windows(2)
            .any(|w| w[0].is_ascii_uppercase() && w[1].is_ascii_alphabetic());
    if !maybe {
        return Cow::Borrowed(text);
    }
    let ws = words(text);
    let word = |w: &Word| &text[w.start..w.end];
    // Inside a marker (`[REDACTED:name]`): not a word of the text.
    let in_marker = |w: &Word| text[..w.start].ends_with("[REDACTED:") || word(w) == "REDACTED";
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < ws.len() {
        let w = &ws[i];
        if in_marker(w) {
            i += 1;
            continue;
        }
        let case = case_of(word(w));
        if case == Case::Other {
            i += 1;
            continue;
        }

        // A pair: given + surname or surname + given, same case, one space.
        if let Some(next) = ws.get(i + 1) {
            let gap = &text[w.end..next.start];
            if gap == " " && case_of(word(next)) == case && !in_marker(next) {
                let pair = with_folded(word(w), |this| {
                    with_folded(word(next), |other| {
                        (is_given_name(this) && is_surname(other))
                            || (is_surname(this) && is_given_name(other))
                    })
                });
                if pair {
                    spans.push((w.start, next.end));
                    i += 2;
                    continue;
                }
            }
        }
        // A given name after a person cue, with the capitalised word after it.
        let cue = || {
            i.checked_sub(1)
                .map(|p| &ws[p])
                .filter(|p| text[p.end..w.start].chars().all(|c| c == ' ' || c == ':'))
                .is_some_and(|p| CUES.iter().any(|c| c.eq_ignore_ascii_case(word(p))))
        };
        if case == Case::Title && cue() && with_folded(word(w), is_given_name) {
            let mut end = w.end;
            let mut used = 1;
            if let Some(next) = ws.get(i + 1)
                && &text[w.end..next.start] == " "
                && case_of(word(next)) == Case::Title
            {
                end = next.end;
                used = 2;
            }
            spans.push((w.start, end));
            i += used;
            continue;
        }
        i += 1;
    }
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e) in spans {
        out.push_str(&text[at..s]);
        out.push_str(TAG_NAME);
        at = e;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}
