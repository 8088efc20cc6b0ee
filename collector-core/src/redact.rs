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
//!    `LAST, FIRST`, `LAST,^FIRST` and `LAST^FIRST` anywhere;
//! 8. person names written plainly (`for Jane Roe`, `MÜLLER ANNA`), by the
//!    public-domain census name lists ([`crate::names`]).
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

use crate::patterns::{PATTERN_IDS, PatternId, ascii_form, is_sparse, source};
use regex::{Captures, Regex};
use regex_automata::dfa::{Automaton, dense, regex::Regex as DfaRegex, sparse};
use regex_automata::nfa::thompson::backtrack::{self, BoundedBacktracker};
use regex_automata::{Anchored, Input, Match, MatchError};
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

/// `pattern` without its word boundaries (`\b`): it matches wherever
/// `pattern` does (taking away an assertion only lets more through), and the
/// regex crate can run it on its lazy DFA on any text, which it cannot do
/// with a Unicode `\b` on text with a non-ASCII character. A match test by
/// it that finds nothing spares the slower one by `pattern`.
fn loose_form(pattern: &str) -> String {
    pattern.replace(r"\b", "")
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

/// One redaction pattern ([`crate::patterns`]) and the engines that run it,
/// each made on first use (a module instance lives for one call, so engines
/// a call never needs are never made):
/// - `dfa`: the pattern's ASCII form ([`ascii_form`]) compiled by the build
///   script into a forward and a reverse dense DFA, embedded in the binary;
///   loading them only checks them. On ASCII text these answer every match
///   test and find every match, so nothing is determinized at run time.
///   `None` if the embedded bytes do not load (the `every_dfa_loads` test
///   holds them loadable).
/// - `backtrack`: a bounded backtracker for the ASCII form, which reads the
///   capture groups of a match the DFAs found (only the passes that need
///   groups build one).
/// - `ascii`: the ASCII form as a `regex::Regex`: the fallback on ASCII text
///   should a DFA not load, a match be empty, or a match be too long for
///   the backtracker.
/// - `unicode`: the pattern as written, for text with any non-ASCII
///   character.
/// - `loose`: the pattern as written without its word boundaries
///   ([`loose_form`]), the match test off ASCII before `unicode`'s.
///
/// On text that is all ASCII the ASCII form matches exactly the same spans
/// as the pattern as written (Unicode's extra digits, spaces and word
/// characters are all outside ASCII, and so are the extra case variants
/// `(?i)` adds).
struct Pattern {
    id: PatternId,
    text: String,
    dfa: OnceLock<Option<Dfas>>,
    backtrack: OnceLock<Option<BoundedBacktracker>>,
    ascii: OnceLock<Regex>,
    unicode: OnceLock<Regex>,
    loose: OnceLock<Regex>,
}

/// A pattern's embedded DFAs, dense or (see [`is_sparse`]) sparse.
enum Dfas {
    Dense(DfaRegex<dense::DFA<&'static [u32]>>),
    Sparse(DfaRegex<sparse::DFA<&'static [u8]>>),
}

impl Dfas {
    /// The leftmost-first match in `input`.
    fn try_search(&self, input: &Input<'_>) -> Result<Option<Match>, MatchError> {
        match self {
            Dfas::Dense(r) => r.try_search(input),
            Dfas::Sparse(r) => r.try_search(input),
        }
    }

    /// Whether there is a match in `input`: the forward DFA alone, stopping
    /// at the first match state it reaches.
    fn is_match(&self, input: &Input<'_>) -> Result<bool, MatchError> {
        let input = input.clone().earliest(true);
        Ok(match self {
            Dfas::Dense(r) => r.forward().try_search_fwd(&input)?.is_some(),
            Dfas::Sparse(r) => r.forward().try_search_fwd(&input)?.is_some(),
        })
    }
}

/// The DFAs `build.rs` wrote, 8-byte aligned (`dense::DFA::from_bytes`
/// needs 4).
#[repr(C)]
struct Aligned<B: ?Sized> {
    _align: [u64; 0],
    bytes: B,
}

static DFA_BLOB: &Aligned<[u8]> = &Aligned {
    _align: [],
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/redact.dfa")),
};

include!(concat!(env!("OUT_DIR"), "/redact_dfa.rs"));

/// A match a pass may replace: its span and, when the pass reads them
/// ([`Pass::reads_groups`]), the spans of capture groups 1 to 4.
#[derive(Debug, PartialEq)]
struct Hit {
    start: usize,
    end: usize,
    groups: [Option<(usize, usize)>; 4],
}

impl Hit {
    /// A match with no groups read.
    fn of_match(m: regex::Match<'_>) -> Hit {
        Hit {
            start: m.start(),
            end: m.end(),
            groups: [None; 4],
        }
    }

    /// A match with its capture groups.
    fn of_captures(c: &Captures<'_>) -> Hit {
        let span = |m: regex::Match<'_>| (m.start(), m.end());
        let (start, end) = span(c.get(0).expect("group 0 always matches"));
        Hit {
            start,
            end,
            groups: std::array::from_fn(|i| c.get(i + 1).map(span)),
        }
    }

    /// The text of capture group `i` (1 to 4) in `s`, if it took part.
    fn group<'s>(&self, s: &'s str, i: usize) -> Option<&'s str> {
        self.groups[i - 1].map(|(a, b)| &s[a..b])
    }
}

impl Pattern {
    fn new(id: PatternId) -> Pattern {
        let text = source(id);
        debug_assert!(
            !text.contains(r"\\"),
            "ascii_form cannot rewrite an escaped backslash"
        );
        Pattern {
            id,
            text,
            dfa: OnceLock::new(),
            backtrack: OnceLock::new(),
            ascii: OnceLock::new(),
            unicode: OnceLock::new(),
            loose: OnceLock::new(),
        }
    }

    /// The pattern as written without its word boundaries
    /// ([`loose_form`]), for the match test off ASCII.
    fn loose(&self) -> &Regex {
        self.loose.get_or_init(|| {
            Regex::new(&loose_form(&self.text)).expect("static redaction pattern compiles")
        })
    }

    fn get(&self, ascii: bool) -> &Regex {
        let compile = |p: &str| Regex::new(p).expect("static redaction pattern compiles");
        if ascii {
            self.ascii.get_or_init(|| compile(&ascii_form(&self.text)))
        } else {
            self.unicode.get_or_init(|| compile(&self.text))
        }
    }

    fn dfa(&self) -> Option<&Dfas> {
        self.dfa
            .get_or_init(|| {
                let bytes = |(start, end): (usize, usize)| &DFA_BLOB.bytes[start..end];
                let (forward, reverse) = (
                    bytes(FORWARD_DFAS[self.id as usize]),
                    bytes(REVERSE_DFAS[self.id as usize]),
                );
                let regex = DfaRegex::builder();
                Some(match is_sparse(self.id) {
                    true => {
                        let load = |b| sparse::DFA::from_bytes(b).ok().map(|(dfa, _)| dfa);
                        Dfas::Sparse(regex.build_from_dfas(load(forward)?, load(reverse)?))
                    }
                    false => {
                        let load = |b| dense::DFA::from_bytes(b).ok().map(|(dfa, _)| dfa);
                        Dfas::Dense(regex.build_from_dfas(load(forward)?, load(reverse)?))
                    }
                })
            })
            .as_ref()
    }

    fn backtracker(&self) -> Option<&BoundedBacktracker> {
        self.backtrack
            .get_or_init(|| BoundedBacktracker::new(&ascii_form(&self.text)).ok())
            .as_ref()
    }

    /// Whether the pattern matches anywhere in `s`; `ascii` says `s` is all
    /// ASCII. On ASCII text the forward DFA answers, stopping at the first
    /// match state it reaches. Off ASCII, the pattern without its word
    /// boundaries answers first: where it finds nothing the pattern cannot
    /// either, and it runs on the regex crate's lazy DFA, where a Unicode
    /// `\b` on text with a non-ASCII character makes the pattern as written
    /// run on the PikeVM (a log line with a `°C` or `µL` cost twenty times
    /// an ASCII one).
    fn is_match(&self, s: &str, ascii: bool) -> bool {
        // The DFAs have no quit bytes and no size limit at search time, so
        // a search cannot fail; if it ever did, the regex answers.
        let by_dfa = || self.dfa()?.is_match(&Input::new(s)).ok();
        match ascii.then(by_dfa).flatten() {
            Some(found) => found,
            None if !ascii => self.loose().is_match(s) && self.get(false).is_match(s),
            None => self.get(ascii).is_match(s),
        }
    }

    /// Every match in `s`, leftmost first and not overlapping, as
    /// `Regex::captures_iter` finds them, with capture groups when `groups`,
    /// into `hits` (cleared first). `scratch` is the backtracker's, kept
    /// between calls.
    fn hits(
        &self,
        s: &str,
        ascii: bool,
        groups: bool,
        hits: &mut Vec<Hit>,
        scratch: &mut Option<GroupScratch>,
    ) {
        hits.clear();
        if ascii && self.dfa_hits(s, groups, hits, scratch) {
            return;
        }
        hits.clear();
        let re = self.get(ascii);
        if groups {
            hits.extend(re.captures_iter(s).map(|c| Hit::of_captures(&c)));
        } else {
            hits.extend(re.find_iter(s).map(Hit::of_match));
        }
    }

    /// [`Pattern::hits`] by the DFAs, and the backtracker for the groups;
    /// false (the caller asks the regex instead) if an engine is missing,
    /// a match is empty (the regex iterator's rules for those are its own)
    /// or a match is too long for the backtracker.
    fn dfa_hits(
        &self,
        s: &str,
        groups: bool,
        hits: &mut Vec<Hit>,
        scratch: &mut Option<GroupScratch>,
    ) -> bool {
        let Some(dfa) = self.dfa() else {
            return false;
        };
        let bt = match groups {
            true => match self.backtracker() {
                Some(bt) => Some(bt),
                None => return false,
            },
            false => None,
        };
        let mut at = 0;
        while at < s.len() {
            let m = match dfa.try_search(&Input::new(s).range(at..)) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => return false,
            };
            if m.is_empty() {
                return false;
            }
            let mut hit = Hit {
                start: m.start(),
                end: m.end(),
                groups: [None; 4],
            };
            if let Some(bt) = bt {
                // The groups of the match the DFAs found: the backtracker
                // anchored on exactly its span, which is how `regex` reads
                // groups too. Look-around still sees the text around it.
                // (Made at the first match: most texts have none.)
                let (cache, caps) =
                    scratch.get_or_insert_with(|| (bt.create_cache(), bt.create_captures()));
                let input = Input::new(s).range(m.range()).anchored(Anchored::Yes);
                if bt.try_search(cache, &input, caps).is_err()
                    || caps.get_match().map(|g| g.range()) != Some(m.range())
                {
                    return false;
                }
                for (i, g) in hit.groups.iter_mut().enumerate() {
                    *g = caps.get_group(i + 1).map(|g| (g.start, g.end));
                }
            }
            hits.push(hit);
            at = m.end();
        }
        true
    }
}

/// A backtracker's cache and capture slots, for one pattern.
type GroupScratch = (backtrack::Cache, regex_automata::util::captures::Captures);

/// What [`redact`] reuses from one call to the next (one per thread, so
/// that scrubbing a batch of records does not allocate per pass): the
/// matches of a pass, the text and the next pass's output, and each
/// pattern's backtracker scratch (whose visited set the backtracker bounds,
/// at 256 KiB by default).
#[derive(Default)]
struct Scratch {
    hits: Vec<Hit>,
    text: String,
    next: String,
    groups: [Option<GroupScratch>; PATTERN_IDS.len()],
}

impl Scratch {
    /// Buffers above this are dropped after use rather than kept (a
    /// base64 document in a note should not pin its size for good).
    const KEEP_BYTES: usize = 64 * 1024;

    /// Forgets whatever grew past [`Scratch::KEEP_BYTES`].
    fn trim(&mut self) {
        for s in [&mut self.text, &mut self.next] {
            if s.capacity() > Self::KEEP_BYTES {
                *s = String::new();
            }
        }
        if self.hits.capacity() * std::mem::size_of::<Hit>() > Self::KEEP_BYTES {
            self.hits = Vec::new();
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Every pattern, indexed by [`PatternId`].
struct Rules {
    patterns: Vec<Pattern>,
    /// The embedded forward DFA of the labelled-phone and labelled-ID
    /// patterns' ASCII forms together (loaded on first use; `None` if it
    /// does not load, and both passes then run on their own).
    labelled: OnceLock<Option<dense::DFA<&'static [u32]>>>,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| Rules {
        patterns: PATTERN_IDS.into_iter().map(Pattern::new).collect(),
        labelled: OnceLock::new(),
    })
}

/// Capture group numbers, looked up by number rather than by name (a name
/// lookup costs a search per match): `label` and `sep` of the labelled
/// patterns, `iso`, `dmy`, `compact` and `ctime` of the date pattern. The
/// `groups_are_numbered_as_named` test holds them to the names.
mod group {
    pub const LABEL: usize = 1;
    pub const SEP: usize = 2;
    pub const ISO: usize = 1;
    pub const DMY: usize = 2;
    pub const COMPACT: usize = 3;
    pub const CTIME: usize = 4;
}

/// What the date pattern's capture groups say about one of its matches:
/// which alternative matched (ISO `y-m-d`, `d/m/y` or compact `yyyymmdd`),
/// the compact digits, and whether compact digits carry a time.
#[derive(Debug, PartialEq)]
struct DateParts<'a> {
    iso: bool,
    dmy: bool,
    compact: Option<&'a str>,
    ctime: bool,
}

impl<'a> DateParts<'a> {
    /// From the groups of `hit`, a match in `s` with its groups read.
    fn of_groups(s: &'a str, hit: &Hit) -> DateParts<'a> {
        DateParts {
            iso: hit.group(s, group::ISO).is_some(),
            dmy: hit.group(s, group::DMY).is_some(),
            compact: hit.group(s, group::COMPACT),
            ctime: hit.group(s, group::CTIME).is_some(),
        }
    }

    /// From the text of a match in ASCII text, without reading groups: the
    /// pattern's alternatives start in shapes no other alternative can
    /// (four digits and a separator; one or two digits, a separator and a
    /// digit; eight digits; or a day or month name), and after the compact
    /// digits only the time digits follow. The
    /// `date_parts_from_the_text_are_the_groups` test holds this.
    fn of_ascii(m: &'a str) -> DateParts<'a> {
        let b = m.as_bytes();
        let digits = |n: usize| b.len() >= n && b[..n].iter().all(u8::is_ascii_digit);
        let sep = |i: usize| b.get(i).is_some_and(|c| b"-/.".contains(c));
        let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
        let compact = digits(8);
        DateParts {
            iso: digits(4) && sep(4),
            dmy: (digits(1) && sep(1) && digit(2)) || (digits(2) && sep(2) && digit(3)),
            compact: compact.then(|| &m[..8]),
            ctime: compact && b.len() > 8,
        }
    }

    /// Whether the match `whole` is a plausible date.
    fn valid(&self, whole: &str) -> bool {
        if let Some(c) = self.compact {
            let m: u32 = c[4..6].parse().unwrap_or(0);
            let d: u32 = c[6..8].parse().unwrap_or(0);
            return (1..=12).contains(&m) && (1..=31).contains(&d);
        }
        let nums: Vec<u32> = whole
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .take(3)
            .filter_map(|s| s.parse().ok())
            .collect();
        if self.dmy && nums.len() == 3 {
            // d/m/y or m/d/y: both of the first two at most 31, one at most 12.
            let (a, b, y) = (nums[0], nums[1], nums[2]);
            let year_ok = y < 100 || (1800..=2199).contains(&y);
            return year_ok && a >= 1 && b >= 1 && a <= 31 && b <= 31 && (a <= 12 || b <= 12);
        }
        if self.iso && nums.len() == 3 {
            return (1800..=2199).contains(&nums[0]) && (1..=12).contains(&nums[1]);
        }
        true
    }

    /// Whether the match `whole` has a time of day.
    fn has_time(&self, whole: &str) -> bool {
        self.ctime || whole.contains(':')
    }
}

/// The redaction passes, in the order [`redact`] applies them; each is one
/// pattern of [`Rules`].
#[derive(Clone, Copy, Debug)]
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

/// The labelled-ID pass's bit in a mask of passes. It runs right after the
/// labelled-phone pass, so the text [`Rules::labelled_may_match`] scanned
/// for both is the one each pass sees unless the first replaces something.
const LABELLED_ID: u16 = 1 << Pass::LabelledId as u16;
const _: () = assert!(Pass::LabelledId as usize == Pass::PhoneLabelled as usize + 1);

// `PASSES[i] as usize == i`: a pass's bit in a mask of passes is its place
// in the order they run (`Shape::passes`, `redact_with`).
const _: () = {
    let mut i = 0;
    while i < PASSES.len() {
        assert!(PASSES[i] as usize == i);
        i += 1;
    }
};

impl Pass {
    /// The tag the pass writes in place of what it redacts.
    fn tag(self) -> &'static str {
        match self {
            Pass::Url => TAG_URL,
            Pass::Email => TAG_EMAIL,
            Pass::SsnLabelled | Pass::SsnShape => TAG_SSN,
            Pass::PhoneLabelled | Pass::PhoneShape => TAG_PHONE,
            Pass::LabelledId => TAG_ID,
            Pass::Date => TAG_DATE,
            Pass::Age => TAG_AGE,
            Pass::Ip => TAG_IP,
            Pass::PoBox | Pass::Address | Pass::Zip => TAG_ADDRESS,
            Pass::NameContext | Pass::NameShape => TAG_NAME,
        }
    }

    /// The shape of [`Pass::tag`].
    fn tag_shape(self) -> Shape {
        static SHAPES: OnceLock<[Shape; PASSES.len()]> = OnceLock::new();
        SHAPES.get_or_init(|| {
            let mut shapes = [Shape::default(); PASSES.len()];
            for pass in PASSES {
                shapes[pass as usize] = Shape::of(pass.tag());
            }
            shapes
        })[self as usize]
    }

    /// Whether the pass's replacement reads capture groups: the label and
    /// separator it keeps, or (off ASCII; see [`DateParts::of_ascii`]) the
    /// parts of a date.
    fn reads_groups(self, ascii: bool) -> bool {
        match self {
            Pass::PhoneLabelled | Pass::LabelledId | Pass::NameContext => true,
            Pass::Date => !ascii,
            _ => false,
        }
    }

    fn pattern(self) -> PatternId {
        match self {
            Pass::Url => PatternId::Url,
            Pass::Email => PatternId::Email,
            Pass::SsnLabelled => PatternId::SsnLabelled,
            Pass::SsnShape => PatternId::SsnShape,
            Pass::PhoneLabelled => PatternId::PhoneLabelled,
            Pass::LabelledId => PatternId::LabelledId,
            Pass::PhoneShape => PatternId::PhoneShape,
            Pass::Date => PatternId::Date,
            Pass::Age => PatternId::Age,
            Pass::Ip => PatternId::Ip,
            Pass::PoBox => PatternId::PoBox,
            Pass::Address => PatternId::Address,
            Pass::Zip => PatternId::Zip,
            Pass::NameContext => PatternId::NameContext,
            Pass::NameShape => PatternId::NameShape,
        }
    }
}

impl Rules {
    fn get(&self, id: PatternId) -> &Pattern {
        &self.patterns[id as usize]
    }

    /// Whether the labelled-phone or the labelled-ID pattern matches
    /// anywhere in `s`, which is all ASCII: one scan of the two patterns'
    /// DFA, stopping at the first match state. `None` if that DFA did not
    /// load or the search failed (it cannot: the DFA has no quit bytes).
    fn labelled_may_match(&self, s: &str) -> Option<bool> {
        let dfa = self
            .labelled
            .get_or_init(|| {
                let (start, end) = LABELLED_DFA;
                dense::DFA::from_bytes(&DFA_BLOB.bytes[start..end])
                    .ok()
                    .map(|(dfa, _)| dfa)
            })
            .as_ref()?;
        let input = Input::new(s).earliest(true);
        Some(dfa.try_search_fwd(&input).ok()?.is_some())
    }

    fn pattern(&self, pass: Pass) -> &Pattern {
        self.get(pass.pattern())
    }

    /// Runs one pass over `s`, writing the new text to `out` (cleared
    /// first): how many matches were replaced, 0 when it changes nothing
    /// (`out` is then not the text). `ascii` says `s` is all ASCII (see
    /// [`Pattern`]). Without `pretest`, no match test first (the tests'
    /// reference: every match found by the pattern as written).
    fn apply_into(
        &self,
        pass: Pass,
        s: &str,
        ascii: bool,
        scratch: &mut Scratch,
        out: &mut String,
        pretest: bool,
    ) -> usize {
        let pattern = self.pattern(pass);
        // Off ASCII, a plain match test first: it needs no capture slots,
        // and most passes find nothing in most texts. (On ASCII text the
        // DFAs' search for the first match costs no more than a test.)
        if pretest && !ascii && !pattern.is_match(s, ascii) {
            return 0;
        }
        let hits = &mut scratch.hits;
        let groups = &mut scratch.groups[pass.pattern() as usize];
        pattern.hits(s, ascii, pass.reads_groups(ascii), hits, groups);
        out.clear();
        let mut last = 0;
        let mut replaced = 0;
        for hit in hits.iter() {
            let Some(keep) = self.replacement(pass, s, hit, ascii) else {
                continue;
            };
            out.push_str(&s[last..hit.start]);
            for (a, b) in keep.into_iter().flatten() {
                out.push_str(&s[a..b]);
            }
            out.push_str(pass.tag());
            last = hit.end;
            replaced += 1;
        }
        if replaced > 0 {
            out.push_str(&s[last..]);
        }
        replaced
    }

    /// [`Rules::apply_into`] with buffers of its own: the new text and how
    /// many matches were replaced, or `None` when it changes nothing.
    #[cfg(test)]
    fn apply(&self, pass: Pass, s: &str, ascii: bool) -> Option<(String, usize)> {
        let mut out = String::new();
        let n = self.apply_into(pass, s, ascii, &mut Scratch::default(), &mut out, false);
        (n > 0).then_some((out, n))
    }

    /// Whether the match `hit` of `pass` in `s` is replaced by the pass's
    /// tag, and what of it is kept before the tag (a label and its
    /// separator); `None` to keep the match as it is.
    fn replacement(&self, pass: Pass, s: &str, hit: &Hit, ascii: bool) -> Option<Kept> {
        let before = &s[..hit.start];
        match pass {
            Pass::PhoneLabelled | Pass::LabelledId | Pass::NameContext => {
                Some([hit.groups[group::LABEL - 1], hit.groups[group::SEP - 1]])
            }
            // An SSN-shaped control lot right after a lot label is kept.
            Pass::SsnShape => {
                (!self.get(PatternId::LotBefore).is_match(before, ascii)).then_some(KEEP_NOTHING)
            }
            Pass::Date => {
                let whole = &s[hit.start..hit.end];
                let parts = match ascii {
                    true => DateParts::of_ascii(whole),
                    false => DateParts::of_groups(s, hit),
                };
                if !parts.valid(whole) {
                    return None;
                }
                // Digits glued to a decimal point are part of a number, not a date.
                if before.ends_with(['.', ','])
                    && before[..before.len() - 1].ends_with(|c: char| c.is_ascii_digit())
                {
                    return None;
                }
                let start = floor_boundary(before, before.len().saturating_sub(40));
                let near_person = self
                    .get(PatternId::PersonContext)
                    .is_match(&before[start..], ascii);
                (!parts.has_time(whole) || near_person).then_some(KEEP_NOTHING)
            }
            Pass::Url
            | Pass::Email
            | Pass::SsnLabelled
            | Pass::PhoneShape
            | Pass::Age
            | Pass::Ip
            | Pass::PoBox
            | Pass::Address
            | Pass::Zip
            | Pass::NameShape => Some(KEEP_NOTHING),
        }
    }
}

/// The spans of a match kept before its tag: a label and its separator.
type Kept = [Option<(usize, usize)>; 2];
const KEEP_NOTHING: Kept = [None, None];

/// The byte classes [`Shape::of`] looks for, and the pairs of adjacent
/// bytes it looks for, as tables: one lookup per byte and one per pair of
/// bytes, so that the scan keeps few values live (in Wasm, Cranelift spills
/// every value the registers cannot hold).
mod class {
    /// Each byte's code (the low four bits of its class): which of the
    /// bytes that make up the pairs in [`PAIR`] it is.
    pub const CODE: u32 = 0xF;
    const DIGIT_CODE: u32 = 1;
    const SPACE_CODE: u32 = 2;
    const COLON_CODE: u32 = 3;
    const SLASH_CODE: u32 = 4;
    /// `(` and `+`, which start the phone shapes that are not all digits.
    const PAREN_OR_PLUS_CODE: u32 = 5;
    /// The letters any case.
    const A_CODE: u32 = 6;
    const G_CODE: u32 = 7;
    const I_CODE: u32 = 8;
    const L_CODE: u32 = 9;
    const O_CODE: u32 = 10;
    const P_CODE: u32 = 11;
    const S_CODE: u32 = 12;
    const Y_CODE: u32 = 13;
    const Z_CODE: u32 = 14;

    pub const DIGIT: u32 = 1 << 4;
    /// ASCII white space, as `\s` in the ASCII forms.
    pub const SPACE: u32 = 1 << 5;
    pub const UPPER: u32 = 1 << 6;
    pub const AT: u32 = 1 << 7;
    pub const DOT: u32 = 1 << 8;
    pub const COLON: u32 = 1 << 9;
    pub const COMMA_OR_CARET: u32 = 1 << 10;
    pub const NON_ASCII: u32 = 1 << 11;
    /// The letters `w` and `x`, any case.
    pub const W: u32 = 1 << 12;
    pub const X: u32 = 1 << 13;
    pub const Y: u32 = 1 << 14;

    pub static BYTE_CLASS: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let b = i as u8;
            table[i] = match b {
                b'0'..=b'9' => DIGIT | DIGIT_CODE,
                b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' => SPACE | SPACE_CODE,
                b'@' => AT,
                b'.' => DOT,
                b':' => COLON | COLON_CODE,
                b'/' => SLASH_CODE,
                b',' | b'^' => COMMA_OR_CARET,
                b'(' | b'+' => PAREN_OR_PLUS_CODE,
                0x80.. => NON_ASCII,
                _ => 0,
            };
            if b.is_ascii_uppercase() {
                table[i] |= UPPER;
            }
            table[i] |= match b.to_ascii_lowercase() {
                b'a' => A_CODE,
                b'g' => G_CODE,
                b'i' => I_CODE,
                b'l' => L_CODE,
                b'o' => O_CODE,
                b'p' => P_CODE,
                b's' => S_CODE,
                b'w' => W,
                b'x' => X,
                b'y' => Y | Y_CODE,
                b'z' => Z_CODE,
                _ => 0,
            };
            i += 1;
        }
        table
    };

    /// Pairs of adjacent bytes, one bit each.
    pub const DIGIT_SPACE: u32 = 1;
    pub const COLON_SLASH: u32 = 1 << 1;
    /// `(` or `+` and a digit.
    pub const PAREN_DIGIT: u32 = 1 << 2;
    /// `ss` or `so`.
    pub const SS_OR_SO: u32 = 1 << 3;
    pub const AG: u32 = 1 << 4;
    /// A digit and `y`.
    pub const DIGIT_Y: u32 = 1 << 5;
    /// The halves of the three letters of `zip`, `pos` and `plz`: a pair
    /// `zi` followed by a pair `ip` one byte on, and so on. The second
    /// half's bit is the first's shifted by one, so `(before << 1) & now`
    /// (masked by [`TRIPLES`]) holds the triples found.
    pub const ZI: u32 = 1 << 8;
    pub const IP: u32 = 1 << 9;
    pub const PO: u32 = 1 << 11;
    pub const OS: u32 = 1 << 12;
    pub const PL: u32 = 1 << 14;
    pub const LZ: u32 = 1 << 15;
    /// The bits a triple sets; [`PAIRS`] are the bits a pair alone sets.
    pub const TRIPLES: u32 = IP | OS | LZ;
    pub const PAIRS: u32 = DIGIT_SPACE | COLON_SLASH | PAREN_DIGIT | SS_OR_SO | AG | DIGIT_Y;

    /// The pair bits of every pair of codes, indexed `before << 4 | now`.
    pub static PAIR: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let (before, now) = ((i >> 4) as u32, (i & 15) as u32);
            table[i] = match (before, now) {
                (DIGIT_CODE, SPACE_CODE) => DIGIT_SPACE,
                (COLON_CODE, SLASH_CODE) => COLON_SLASH,
                (PAREN_OR_PLUS_CODE, DIGIT_CODE) => PAREN_DIGIT,
                (S_CODE, S_CODE | O_CODE) => SS_OR_SO,
                (A_CODE, G_CODE) => AG,
                (DIGIT_CODE, Y_CODE) => DIGIT_Y,
                (Z_CODE, I_CODE) => ZI,
                (I_CODE, P_CODE) => IP,
                (P_CODE, O_CODE) => PO,
                (O_CODE, S_CODE) => OS,
                (P_CODE, L_CODE) => PL,
                (L_CODE, Z_CODE) => LZ,
                _ => 0,
            };
            i += 1;
        }
        table
    };
}

/// Whether `word` (ASCII, lower case) is one of the street words of the
/// address pattern that are ASCII (a text with `straße` is not ASCII, and
/// gets every pass).
fn is_street_word(word: &[u8]) -> bool {
    matches!(
        word,
        b"st"
            | b"street"
            | b"ave"
            | b"avenue"
            | b"rd"
            | b"road"
            | b"dr"
            | b"drive"
            | b"blvd"
            | b"boulevard"
            | b"ln"
            | b"lane"
            | b"way"
            | b"ct"
            | b"court"
            | b"pl"
            | b"place"
            | b"ter"
            | b"terrace"
            | b"hwy"
            | b"highway"
            | b"pkwy"
            | b"parkway"
            | b"cir"
            | b"circle"
            | b"sq"
            | b"square"
            | b"strasse"
    )
}

/// Whether a street word ([`is_street_word`]) stands in `bytes` as a whole
/// word (of `(?-u:\b)`: ASCII letters, digits and `_`) right after white
/// space.
fn has_street_word(bytes: &[u8]) -> bool {
    const LONGEST: usize = "boulevard".len();
    let mut lower = [0u8; LONGEST];
    let mut n = None;
    for &b in bytes {
        let word = b.is_ascii_alphanumeric() || b == b'_';
        n = match n {
            // In a word that started after white space: `i` bytes so far.
            Some(i) if word => {
                if i < LONGEST {
                    lower[i] = b.to_ascii_lowercase();
                }
                Some(i + 1)
            }
            Some(i) if i <= LONGEST && is_street_word(&lower[..i]) => return true,
            _ => None,
        };
        if n.is_none() && BYTE_CLASS[usize::from(b)] & class::SPACE != 0 {
            n = Some(0);
        }
    }
    matches!(n, Some(i) if i <= LONGEST && is_street_word(&lower[..i]))
}

use class::BYTE_CLASS;

/// Digit runs seen so far by [`Shape::of`]: the last two, and whether three
/// in a row one byte apart have had the SSN or the dotted phone shape.
#[derive(Clone, Copy, Default)]
struct Runs {
    /// (start, end) of the run before the last, and of the last.
    last: [(usize, usize); 2],
    ssn: bool,
    phone: bool,
}

impl Runs {
    /// A run of digits `start..end` of `bytes` ended.
    ///
    /// Kept out of [`Shape::of`]'s loop, which then holds fewer values for
    /// Cranelift to keep in registers: inlined, the loop spilled most of them
    /// to the stack in the module, and out of line `Shape::of` takes 18 %
    /// fewer samples there. Natively it makes no measurable difference: runs
    /// end far less often than bytes go by.
    #[inline(never)]
    fn end(&mut self, bytes: &[u8], start: usize, end: usize) {
        let [(a0, a1), (b0, b1)] = self.last;
        if b1 > 0 && a1 + 1 == b0 && b1 + 1 == start {
            let (sa, sb) = (bytes[a1], bytes[b1]);
            let (a, b, c) = (a1 - a0, b1 - b0, end - start);
            self.ssn |= a >= 3 && b == 2 && c >= 4 && sa == sb && matches!(sa, b'-' | b' ');
            self.phone |= a >= 3
                && b == 3
                && c >= 4
                && matches!(sa, b'.' | b'-')
                && matches!(sb, b'.' | b'-');
        }
        self.last = [self.last[1], (start, end)];
    }
}

/// What a text contains, from one scan of its bytes (and, only when the
/// text has them, a count of its dots and colons and a look for street words
/// after a digit and white space): enough to skip the passes that cannot
/// match it (see [`Shape::may_match`]).
#[derive(Clone, Copy, Default)]
struct Shape {
    /// The classes of the text's bytes (`class::BYTE_CLASS`), or-ed.
    classes: u32,
    /// The pairs and triples of adjacent bytes found (`class::PAIR`).
    pairs: u32,
    /// Longest run of consecutive digits.
    digit_run: usize,
    dots: usize,
    colons: usize,
    /// Three runs of digits, each one byte from the next, as in
    /// `\d{3}-\d{2}-\d{4}`: at least three digits, exactly two, at least
    /// four, with the same `-` or space between.
    ssn_digits: bool,
    /// Runs of digits as in `\d{3}[.-]\d{3}[.-]\d{4}`: at least three,
    /// exactly three, at least four.
    phone_digits: bool,
    /// A street word ([`is_street_word`]) as a whole word right after white
    /// space.
    street_word: bool,
}

impl Shape {
    fn of(text: &str) -> Shape {
        use class::*;
        let bytes = text.as_bytes();
        let (mut classes, mut pairs) = (0u32, 0u32);
        let (mut code, mut pair) = (0u32, 0u32);
        let (mut run, mut digit_run) = (0, 0);
        let mut runs = Runs::default();
        for (i, &b) in bytes.iter().enumerate() {
            let c = BYTE_CLASS[usize::from(b)];
            classes |= c;
            let now = PAIR[((code << 4) | (c & CODE)) as usize];
            pairs |= (now & PAIRS) | ((pair << 1) & now & TRIPLES);
            (code, pair) = (c & CODE, now);
            if c & DIGIT != 0 {
                run += 1;
            } else if run > 0 {
                digit_run = digit_run.max(run);
                runs.end(bytes, i - run, i);
                run = 0;
            }
        }
        if run > 0 {
            digit_run = digit_run.max(run);
            runs.end(bytes, bytes.len() - run, bytes.len());
        }
        let count = |bit: u32, byte: u8| match classes & bit {
            0 => 0,
            _ => bytecount(bytes, byte),
        };
        Shape {
            classes,
            pairs,
            digit_run,
            dots: count(DOT, b'.'),
            colons: count(COLON, b':'),
            ssn_digits: runs.ssn,
            phone_digits: runs.phone,
            street_word: pairs & DIGIT_SPACE != 0 && has_street_word(bytes),
        }
    }

    /// The text has a byte of `class` (one of `class::BYTE_CLASS`'s bits).
    fn has(self, class: u32) -> bool {
        self.classes & class != 0
    }

    /// The text has a pair (or triple) of adjacent bytes among `pair`
    /// (`class::PAIR`'s bits).
    fn has_pair(self, pair: u32) -> bool {
        self.pairs & pair != 0
    }

    /// A shape that covers the text made from a text of this shape by
    /// replacing `n` matches with a tag of shape `t`
    /// ([`Pass::tag_shape`]), without a scan of the new text:
    /// what the text had, plus `n` times what the tag has. Nothing else can
    /// appear: the kept parts were in the text, and a tag starts with `[`,
    /// ends with `]` and holds no digit, white space, `.` or `/`, so no new
    /// digit run, digit before white space, `:/`, pair of letters or word
    /// after white space forms where a tag meets the text, and no run of
    /// digits one byte from another. (A match may end inside a run of
    /// digits, leaving a shorter run right after the tag's `]`; such a run
    /// follows no run one byte before it, and is at most as long as the run
    /// it was part of.) Counts are kept, not lowered: a cover may overstate.
    /// The `shape_after_replacing_covers_the_new_text` test holds this.
    fn after_replacing(self, t: Shape, n: usize) -> Shape {
        Shape {
            classes: self.classes | t.classes,
            pairs: self.pairs | t.pairs,
            digit_run: self.digit_run.max(t.digit_run),
            dots: self.dots + n * t.dots,
            colons: self.colons + n * t.colons,
            ssn_digits: self.ssn_digits || t.ssn_digits,
            phone_digits: self.phone_digits || t.phone_digits,
            street_word: self.street_word || t.street_word,
        }
    }

    /// Whether every text of shape `other` is also covered by this shape:
    /// it has at least everything `other` has.
    #[cfg(test)]
    fn covers(self, other: Shape) -> bool {
        let implies = |a: bool, b: bool| !b || a;
        self.classes & other.classes == other.classes
            && self.pairs & other.pairs == other.pairs
            && self.digit_run >= other.digit_run
            && self.dots >= other.dots
            && self.colons >= other.colons
            && implies(self.ssn_digits, other.ssn_digits)
            && implies(self.phone_digits, other.phone_digits)
            && implies(self.street_word, other.street_word)
    }

    /// The text has a byte outside ASCII.
    fn non_ascii(self) -> bool {
        self.has(class::NON_ASCII)
    }

    /// False only when `pass` cannot match a text of this shape. Each rule
    /// names something every match of the pass's pattern contains in ASCII
    /// text (a character; a pair or triple of adjacent characters such as a
    /// digit before white space or `zip`; runs of digits arranged as in an
    /// SSN or a phone number; a street word after white space); a
    /// text with any non-ASCII character (where `\d`, `\s`, `\b` and `(?i)`
    /// reach further) always gets every pass. The `shape_never_skips_a_match`
    /// test holds each rule against the patterns.
    #[inline(always)]
    fn may_match(self, pass: Pass) -> bool {
        use class::*;
        if self.non_ascii() {
            return true;
        }
        let d = self.digit_run;
        match pass {
            Pass::Url => self.has_pair(COLON_SLASH) || (self.has(W) && self.dots > 0),
            Pass::Email => self.has(AT),
            // A label starting `ss` or `so` (ssn, ss#, soc...) and a digit.
            Pass::SsnLabelled => self.has_pair(SS_OR_SO) && d >= 1,
            Pass::SsnShape => self.ssn_digits,
            Pass::PhoneLabelled | Pass::LabelledId => d >= 1,
            // `(` or `+` before a digit, or the all-digits shape.
            Pass::PhoneShape => self.has_pair(PAREN_DIGIT) || self.phone_digits,
            // Every alternative ends in `\d{2,4}`, `\d{4}` or eight digits.
            Pass::Date => d >= 2,
            // `age` + `9\d`/`1\d\d`, or `9\d`/`1[0-4]\d` + `\s*y...`: a digit
            // right before `y`, or a digit before white space and a `y`.
            Pass::Age => {
                (self.has_pair(AG | DIGIT_Y) || (self.has_pair(DIGIT_SPACE) && self.has(Y)))
                    && d >= 2
            }
            Pass::PoBox => self.has(X) && d >= 1,
            // House number, white space, words, white space, a street word.
            Pass::Address => self.street_word,
            // Four dotted numbers, or IPv6 groups with at least three colons.
            Pass::Ip => (d >= 1 && self.dots >= 3) || self.colons >= 3,
            // `zip`, `postal`, `postcode`, `plz`, or `, ST 12345`.
            Pass::Zip => self.has_pair(TRIPLES) || (self.has(COMMA_OR_CARET) && d >= 5),
            // Names start with a capital letter; the `LAST, FIRST` and
            // `LAST^FIRST` shapes need the comma or caret.
            Pass::NameContext => self.has(UPPER),
            Pass::NameShape => self.has(UPPER) && self.has(COMMA_OR_CARET),
        }
    }

    /// The passes that may match, one bit each (`1 << pass as u16`).
    fn passes(self) -> u16 {
        PASSES
            .iter()
            .fold(0, |m, &p| m | u16::from(self.may_match(p)) << p as u16)
    }
}

/// Normalises `text` and replaces every identifier it finds with
/// `[REDACTED:kind]`; see the module documentation for the rules.
///
/// The passes run in the documented order, each over the output of the one
/// before. A pass is skipped when the text lacks something every match of its
/// pattern needs (`Shape::may_match`; after a pass replaces something the
/// shape is updated from the tags it wrote, not rescanned). On ASCII text a
/// pass finds its matches with the embedded DFAs of its pattern's ASCII form
/// and reads capture groups with a backtracker (`Pattern`); elsewhere it
/// tests for a match with the pattern without its word boundaries (lazy DFA),
/// then with the pattern as written, before it captures. Before
/// the labelled-phone and labelled-ID passes, one scan of a DFA of both
/// patterns skips both where neither matches. A text of up to 64 bytes seen
/// lately gets its result from a memo (`Memo`). None of these shortcuts
/// changes the result: the tests in this module hold each against the
/// pattern as written.
pub fn redact(text: &str) -> String {
    memoized(Memoized::Redact, text, |text| {
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => redact_with(text, &mut scratch),
            // Not reached (`redact` does not call itself); fresh buffers if
            // it ever were.
            Err(_) => redact_with(text, &mut Scratch::default()),
        })
    })
}

/// Which function a [`Memo`] entry holds the result of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Memoized {
    Redact,
    DeviceId,
}

/// The results of [`redact`] and [`device_id`] for the short texts seen
/// last (one per thread). The same short values come back in record after
/// record: units, reference ranges, analyte names, flags, control levels,
/// the instrument's model and serial, event codes. Both functions depend on
/// their text alone, so a result is reused exactly as computed.
///
/// Direct-mapped: a text's hash picks one slot, and a new text replaces
/// whatever the slot held, so the table never holds more than
/// [`Memo::SLOTS`] entries of texts of at most [`Memo::MAX_TEXT_BYTES`].
/// The texts may hold PHI, as every buffer of the parsers may; nothing here
/// is written anywhere, and in the module the instance's memory is gone
/// after each call.
struct Memo {
    /// Empty until the first text is stored.
    slots: Vec<Option<MemoEntry>>,
}

/// A slot's entry; a new text reuses the buffers of the one it replaces.
struct MemoEntry {
    of: Memoized,
    text: String,
    result: String,
}

impl Memo {
    const SLOTS: usize = 1024;
    /// Longer texts (log messages, notes) rarely repeat whole.
    const MAX_TEXT_BYTES: usize = 64;

    /// The slot of `text`, the same for both functions: the entry says
    /// which one it holds.
    fn slot(text: &str) -> usize {
        use std::hash::Hasher;
        let mut h = rustc_hash::FxHasher::default();
        h.write(text.as_bytes());
        h.finish() as usize % Memo::SLOTS
    }
}

thread_local! {
    static MEMO: std::cell::RefCell<Memo> = const { std::cell::RefCell::new(Memo { slots: Vec::new() }) };
}

/// `compute(text)`, from the [`Memo`] when `text` is short and was seen
/// last in its slot.
fn memoized(of: Memoized, text: &str, compute: impl FnOnce(&str) -> String) -> String {
    if text.len() > Memo::MAX_TEXT_BYTES {
        return compute(text);
    }
    let slot = Memo::slot(text);
    let known = MEMO.with(|memo| match memo.borrow().slots.get(slot) {
        Some(Some(e)) if e.of == of && e.text == text => Some(e.result.clone()),
        _ => None,
    });
    if let Some(result) = known {
        return result;
    }
    let result = compute(text);
    MEMO.with(|memo| {
        // No borrow is held while `compute` runs (`device_id` may call
        // `redact`, which looks up and stores its own result), so this one
        // succeeds; if it ever did not, the result is simply not stored.
        if let Ok(mut memo) = memo.try_borrow_mut() {
            if memo.slots.is_empty() {
                memo.slots.resize_with(Memo::SLOTS, || None);
            }
            let entry = memo.slots[slot].get_or_insert_with(|| MemoEntry {
                of,
                text: String::new(),
                result: String::new(),
            });
            entry.of = of;
            entry.text.clear();
            entry.text.push_str(text);
            entry.result.clear();
            entry.result.push_str(&result);
        }
    });
    result
}

/// [`redact`] with the buffers of `scratch`, which it leaves trimmed.
fn redact_with(text: &str, scratch: &mut Scratch) -> String {
    let r = rules();
    let mut s = std::mem::take(&mut scratch.text);
    let mut next = std::mem::take(&mut scratch.next);
    s.clear();
    s.push_str(&normalize(text));
    let mut shape = Shape::of(&s);
    // The passes still to run, as bits in `PASSES` order: only those that
    // can match are visited (testing all 15 in turn was about a fifth of
    // this function's own time in the module).
    let mut todo = shape.passes();
    while todo != 0 {
        let i = todo.trailing_zeros();
        let pass = PASSES[i as usize];
        let later = !((2u16 << i) - 1);
        // The labelled-phone pass runs right before the labelled-ID pass;
        // when both are to run on ASCII text, one scan of their joint DFA
        // skips both where neither matches (most texts with a digit).
        if matches!(pass, Pass::PhoneLabelled)
            && todo & LABELLED_ID != 0
            && !shape.non_ascii()
            && r.labelled_may_match(&s) == Some(false)
        {
            todo &= later & !LABELLED_ID;
            continue;
        }
        let replaced = r.apply_into(pass, &s, !shape.non_ascii(), scratch, &mut next, true);
        todo &= later;
        if replaced > 0 {
            std::mem::swap(&mut s, &mut next);
            shape = shape.after_replacing(pass.tag_shape(), replaced);
            todo = shape.passes() & later;
        }
    }
    // Person names the patterns cannot see, by dictionary.
    let out = match crate::names::redact_names(&s) {
        Cow::Borrowed(_) => s.clone(),
        Cow::Owned(named) => named,
    };
    (scratch.text, scratch.next) = (s, next);
    scratch.trim();
    out
}

/// Redaction for device identifiers (instrument serials, control lots) taken
/// from a field that says what it holds (a `Lot` column, ASTM O.3/O.4, HL7
/// PID-2 of a QC run): the value is kept when it is a plain device token, and
/// otherwise masked **whole** as one `[REDACTED:kind]` marker, so that a
/// doubtful lot or serial costs that one field, never the record (the host's
/// guard accepts exactly such a marker in an identifier field, and nothing
/// else that is not a plain token).
///
/// Kept: one token of ASCII letters, digits and `. _ / : -`, at most
/// [`MAX_DEVICE_ID_BYTES`] (internal runs of spaces become one `_`, so
/// `L 2309A` is kept as `L_2309A`), that none of these fires on:
/// - an SSN shape (`555-12-3456`, exactly nine digits, any 3-2-4 digit groups),
///   a phone shape (3-3-4 groups, `217.555.0123`), an e-mail address;
/// - three digit groups that make a date (`2015-06-01`, `03.04.50`);
/// - a patient label at its start followed by a digit (`MRN-12`, `ptid_7`),
///   or an identifier label anywhere in a token with a digit (`sample_L6789`);
/// - anything [`redact`] would change, except a compact date of this century
///   (`20240627`: lots and serials are often date codes).
///
/// These are the host guard's rules for identifier fields, written again
/// here (the guard stays independent of this crate); the host's tests run
/// generated values through both and require that every result passes.
pub fn device_id(text: &str) -> String {
    memoized(Memoized::DeviceId, text, device_id_of)
}

/// Longest device identifier kept, in bytes (the host guard's bound).
pub const MAX_DEVICE_ID_BYTES: usize = 64;

fn device_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || device_separator(b)
}

fn device_separator(b: u8) -> bool {
    matches!(b, b'.' | b'_' | b'/' | b':' | b'-')
}

/// `[REDACTED:kind]` for the first marker in `redacted`, or `fallback`.
fn whole_marker(redacted: &str, fallback: &'static str) -> String {
    let kind = redacted
        .split_once("[REDACTED:")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(kind, _)| kind)
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase()));
    match kind {
        Some(kind) => format!("[REDACTED:{kind}]"),
        None => fallback.to_string(),
    }
}

/// Patient labels that make an identifier-shaped token an identifier.
const PATIENT_LABELS: &[(&str, &str)] = &[
    ("ssn", TAG_SSN),
    ("dob", TAG_DATE),
    ("birth", TAG_DATE),
    ("born", TAG_DATE),
    ("mrn", TAG_ID),
    ("patient", TAG_ID),
    ("patid", TAG_ID),
    ("ptid", TAG_ID),
    ("acct", TAG_ID),
    ("account", TAG_ID),
    ("accession", TAG_ID),
    ("specimen", TAG_ID),
    ("sample", TAG_ID),
];

/// The marker for a plain token shaped like a patient identifier.
fn identifier_shape(token: &str) -> Option<&'static str> {
    let all_digits = |g: &str| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit());
    if token.len() == 9 && all_digits(token) {
        return Some(TAG_SSN);
    }
    let groups: Vec<&str> = token.split(|c: char| device_separator(c as u8)).collect();
    for w in groups.windows(3) {
        if w.iter().all(|g| all_digits(g)) {
            match [w[0].len(), w[1].len(), w[2].len()] {
                [3, 2, 4] => return Some(TAG_SSN),
                [3, 3, 4] => return Some(TAG_PHONE),
                _ => {}
            }
        }
    }
    if groups.len() == 3 && groups.iter().all(|g| all_digits(g)) {
        let num = |g: &str| g.parse::<u32>().unwrap_or(0);
        let (a, b, c) = (groups[0], groups[1], groups[2]);
        let date = if a.len() == 4 {
            b.len() <= 2 && c.len() <= 2 && (1..=12).contains(&num(b)) && (1..=31).contains(&num(c))
        } else {
            a.len() <= 2
                && b.len() <= 2
                && matches!(c.len(), 2 | 4)
                && (1..=31).contains(&num(a))
                && (1..=31).contains(&num(b))
                && (num(a) <= 12 || num(b) <= 12)
        };
        let mut seps = token.bytes().filter(|b| device_separator(*b));
        let (first, second) = (seps.next(), seps.next());
        if date && first == second && first != Some(b':') {
            return Some(TAG_DATE);
        }
    }
    PATIENT_LABELS.iter().find_map(|&(label, tag)| {
        let head = token.get(..label.len())?;
        let rest = &token[label.len()..];
        let next = *rest.as_bytes().first()?;
        (head.eq_ignore_ascii_case(label)
            && (device_separator(next) || next.is_ascii_digit())
            && rest.bytes().any(|b| b.is_ascii_digit()))
        .then_some(tag)
    })
}

/// Identifier labels that, anywhere in a token with a digit, make it
/// doubtful (`sample_L6789`, `ACCT.12`, `tel:5550123`): inside a token `_`
/// and `.` join words, so the free-text rules' word boundaries do not see
/// the label; the host guard's rules do.
const LABELS_IN_TOKEN: &[(&str, &str)] = &[
    ("ssn", TAG_SSN),
    ("ss#", TAG_SSN),
    ("social", TAG_SSN),
    ("dob", TAG_DATE),
    ("d.o.b", TAG_DATE),
    ("birth", TAG_DATE),
    ("born", TAG_DATE),
    ("mrn", TAG_ID),
    ("mr#", TAG_ID),
    ("medical", TAG_ID),
    ("record", TAG_ID),
    ("account", TAG_ID),
    ("acct", TAG_ID),
    ("acc#", TAG_ID),
    ("patient", TAG_ID),
    ("patid", TAG_ID),
    ("ptid", TAG_ID),
    ("sample", TAG_ID),
    ("specimen", TAG_ID),
    ("accession", TAG_ID),
    ("tel", TAG_PHONE),
    ("phone", TAG_PHONE),
    ("fax", TAG_PHONE),
    ("mobile", TAG_PHONE),
    ("cell", TAG_PHONE),
    ("ph#", TAG_PHONE),
];

/// `yyyymmdd` with a year 2000–2099 and a valid month and day.
fn compact_recent_date(token: &str) -> bool {
    let b = token.as_bytes();
    if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) || !token.starts_with("20") {
        return false;
    }
    let num = |r: std::ops::Range<usize>| token[r].parse::<u32>().unwrap_or(0);
    (1..=12).contains(&num(4..6)) && (1..=31).contains(&num(6..8))
}

/// [`device_id`] computed.
fn device_id_of(text: &str) -> String {
    let s = normalize(text);
    let s = s.trim();
    if s.is_empty() {
        return String::new();
    }
    let joined: Cow<'_, str> =
        if s.contains(' ') && s.bytes().all(|b| b == b' ' || device_token_byte(b)) {
            Cow::Owned(
                s.split(' ')
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
                    .join("_"),
            )
        } else {
            Cow::Borrowed(s)
        };
    let token = joined.len() <= MAX_DEVICE_ID_BYTES && joined.bytes().all(device_token_byte);
    if !token {
        return whole_marker(&redact(s), TAG_ID);
    }
    if let Some(tag) = identifier_shape(&joined) {
        return tag.to_string();
    }
    let shape = Shape::of(&joined);
    let risky = [Pass::SsnShape, Pass::PhoneShape, Pass::Email]
        .into_iter()
        .find(|&pass| {
            shape.may_match(pass) && rules().pattern(pass).is_match(&joined, !shape.non_ascii())
        });
    if let Some(pass) = risky {
        return pass.tag().to_string();
    }
    if joined.bytes().any(|b| b.is_ascii_digit()) {
        let lower = joined.to_ascii_lowercase();
        if let Some((_, tag)) = LABELS_IN_TOKEN.iter().find(|(l, _)| lower.contains(l)) {
            return tag.to_string();
        }
    }
    let redacted = redact(&joined);
    if redacted != *joined && !compact_recent_date(&joined) {
        return whole_marker(&redacted, TAG_ID);
    }
    joined.into_owned()
}

/// True when `redact` would change nothing but normalisation.
pub fn is_clean(text: &str) -> bool {
    redact(text) == normalize(text)
}

/// How many times `byte` occurs in `bytes`.
fn bytecount(bytes: &[u8], byte: u8) -> usize {
    bytes.iter().filter(|&&b| b == byte).count()
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
            // Near misses of the shape rules' letters, words and digit runs.
            "Main St.",
            "12 Oak Ave",
            "Rd",
            "drive",
            "Way_2",
            "sq",
            "Avenues",
            "1 y",
            "95 y/o",
            "bag",
            "yes",
            "Ages",
            "zi",
            "po",
            "pl",
            "Pos",
            "Zip9",
            "so",
            "Soc Sec",
            "(2",
            "+4",
            "555.123.4567",
            "555-1234",
            "12-34-5678",
            "123-456-7890",
            "1234-56-78901",
            "123 45 678",
            "123-45 6789",
        ];
        const SEPS: &[&str] = &[
            " ", "", ", ", ",", "^", "-", "/", ". ", ": ", "; ", "(", ")", "\t",
        ];
        let mut rng = crate::test_rng(0x2545_F491_4F6C_DD1D);
        let mut next = |n: usize| (rng() % n as u64) as usize;
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

    /// [`Pattern::dfa_hits`] into a new vector: `None` when it falls back.
    fn dfa_hits(
        p: &Pattern,
        s: &str,
        groups: bool,
        scratch: &mut Option<GroupScratch>,
    ) -> Option<Vec<Hit>> {
        let mut hits = Vec::new();
        p.dfa_hits(s, groups, &mut hits, scratch).then_some(hits)
    }

    /// Every pass run over every text with the patterns as written: neither
    /// the shape shortcut nor the ASCII forms.
    fn redact_every_pass(text: &str) -> String {
        let r = rules();
        let mut s = normalize(text).into_owned();
        for pass in PASSES {
            if let Some((next, _)) = r.apply(pass, &s, false) {
                s = next;
            }
        }
        crate::names::redact_names(&s).into_owned()
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

    /// Short texts come from the memo once seen, long ones never: whatever
    /// the order, and however many texts share a slot, `redact` and
    /// `device_id` give what they compute afresh, and never each other's
    /// result (date-shaped tokens are kept by one and redacted by the
    /// other).
    #[test]
    fn memoized_results_are_the_computed_ones() {
        let mut inputs = texts();
        for i in 0..1500u32 {
            let (y, m, d) = (1930 + i % 70, 1 + i % 12, 1 + i % 28);
            inputs.push(format!("{y}{m:02}{d:02}"));
            inputs.push(format!("LOT{i} pt DOE, JANE {m}/{d}/{y}"));
        }
        let expected: Vec<(String, String)> = inputs
            .iter()
            .map(|t| {
                let redacted = redact_with(t, &mut Scratch::default());
                (redacted, device_id_of(t))
            })
            .collect();
        assert!(
            expected.iter().filter(|(r, d)| r != d).count() > 1500,
            "many texts where the two functions differ"
        );
        let mut rng = crate::test_rng(0x2545_F491_4F6C_DD1D);
        for round in 0..3 {
            for _ in 0..inputs.len() {
                let i = (rng() % inputs.len() as u64) as usize;
                let (redacted, device) = &expected[i];
                let (first, second) = match (round + i) % 2 {
                    0 => (redact(&inputs[i]), device_id(&inputs[i])),
                    _ => {
                        let d = device_id(&inputs[i]);
                        (redact(&inputs[i]), d)
                    }
                };
                assert_eq!(&first, redacted, "redact({:?})", inputs[i]);
                assert_eq!(&second, device, "device_id({:?})", inputs[i]);
            }
        }
        // Both results of a text share its slot: each call finds the other
        // function's entry there.
        for (t, device) in [
            ("19600102", "[REDACTED:date]"),
            ("20240627", "20240627"),
            ("19991231", "[REDACTED:date]"),
        ] {
            for _ in 0..2 {
                assert_eq!(redact(t), "[REDACTED:date]", "{t}");
                assert_eq!(device_id(t), device, "{t}");
            }
        }
        MEMO.with(|memo| {
            let memo = memo.borrow();
            assert_eq!(memo.slots.len(), Memo::SLOTS);
            assert!(
                memo.slots
                    .iter()
                    .flatten()
                    .all(|e| e.text.len() <= Memo::MAX_TEXT_BYTES)
            );
        });
    }

    #[test]
    fn redaction_keeps_no_big_buffers() {
        let big = "MRN 1234567 seen; ".repeat(10_000);
        let out = redact(&big);
        assert_eq!(out.matches("MRN [REDACTED:id] seen;").count(), 10_000);
        SCRATCH.with(|s| {
            let s = s.borrow();
            assert!(s.text.capacity() <= Scratch::KEEP_BYTES);
            assert!(s.next.capacity() <= Scratch::KEEP_BYTES);
            assert!(s.hits.capacity() * std::mem::size_of::<Hit>() <= Scratch::KEEP_BYTES);
        });
        // And the buffers still work afterwards.
        assert_eq!(redact("MRN 1234567"), "MRN [REDACTED:id]");
    }

    #[test]
    fn every_street_word_of_the_address_pattern_is_known() {
        // The pattern's last group is its street words.
        let source = source(PatternId::Address);
        let group = source.rsplit("(?:").next().unwrap();
        let words: Vec<&str> = group.split(')').next().unwrap().split('|').collect();
        assert!(words.len() > 20, "{words:?}");
        for w in words {
            for text in [
                format!("12 Elm {w}"),
                format!("12 Elm {}", w.to_uppercase()),
            ] {
                assert!(rules().get(PatternId::Address).get(false).is_match(&text));
                let shape = Shape::of(&text);
                assert!(shape.may_match(Pass::Address), "{text:?}");
                if text.is_ascii() {
                    assert!(shape.street_word, "{text:?}");
                }
            }
        }
    }

    #[test]
    fn shape_after_replacing_covers_the_new_text() {
        let r = rules();
        let mut replaced = 0;
        for t in texts() {
            let mut s = normalize(&t).into_owned();
            let mut shape = Shape::of(&s);
            for pass in PASSES {
                if let Some((next, n)) = r.apply(pass, &s, !shape.non_ascii()) {
                    let cover = shape.after_replacing(pass.tag_shape(), n);
                    assert!(
                        cover.covers(Shape::of(&next)),
                        "{pass:?}: {s:?} -> {next:?}"
                    );
                    assert!(!cover.non_ascii() || !next.is_ascii() || shape.non_ascii());
                    s = next;
                    shape = cover;
                    replaced += n;
                }
            }
        }
        assert!(replaced > 10_000, "{replaced} replacements");
    }

    #[test]
    fn the_loose_forms_match_wherever_the_patterns_do() {
        // Lines of the kind that sent every pass to the PikeVM: a unit, a
        // temperature, an accented name, a no-break space, digits and
        // letters outside ASCII that `\d` and `(?i)` reach.
        let mut extra = Vec::new();
        for odd in [
            "°C", "µL", "MÜLLER", "José", "\u{a0}", "\u{2007}", "٣٤٥", "\u{212a}", "\u{17f}", "ß",
            "’", "—",
        ] {
            for t in [
                "incubator 37.2 {} cooler, sample 24-1128-90301 rack 4",
                "pt {} Smith DOB 03/04/1950 ssn 555-12-3456",
                "{}MRN 12345 call 217-555-0123 at 12 Main St",
                "MÜLLER, HANS{} age 93 yo 10.0.0.12 zip 12345",
                "Dr{} Jane Roe, 1950-03-04 www.x.org jo@x.org",
            ] {
                extra.push(t.replace("{}", odd));
            }
        }
        let texts: Vec<String> = texts()
            .into_iter()
            .chain(extra)
            .map(|t| normalize(&t).into_owned())
            .filter(|t| !t.is_ascii())
            .collect();
        assert!(texts.len() > 1000, "{} non-ASCII texts", texts.len());
        let (mut matched, mut spared) = (0, 0);
        for id in PATTERN_IDS {
            let loose = loose_form(&source(id));
            assert!(!loose.contains(r"\b"), "{id:?}");
            let (loose, written) = (
                Regex::new(&loose).unwrap(),
                Regex::new(&source(id)).unwrap(),
            );
            for t in &texts {
                let (l, w) = (loose.is_match(t), written.is_match(t));
                assert!(
                    l || !w,
                    "{id:?}: the pattern matches {t:?}, its loose form not"
                );
                matched += usize::from(w);
                spared += usize::from(!l);
            }
        }
        // Both sides are exercised: matches, and texts the test spares.
        assert!(
            matched > 1000 && spared > 1000,
            "{matched} matched, {spared} spared"
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
            for p in [PatternId::LotBefore, PatternId::PersonContext].map(|id| r.get(id)) {
                assert_eq!(p.get(true).is_match(&t), p.get(false).is_match(&t), "{t:?}");
            }
        }
        assert!(compared > 100_000);
    }

    #[test]
    fn groups_are_numbered_as_named() {
        let r = rules();
        let names = |id: PatternId| -> Vec<Option<String>> {
            let re = r.get(id).get(false);
            re.capture_names().map(|n| n.map(str::to_string)).collect()
        };
        for id in [
            PatternId::LabelledId,
            PatternId::PhoneLabelled,
            PatternId::NameContext,
        ] {
            let n = names(id);
            assert_eq!(n[group::LABEL].as_deref(), Some("label"), "{id:?}");
            assert_eq!(n[group::SEP].as_deref(), Some("sep"), "{id:?}");
        }
        let n = names(PatternId::Date);
        for (i, name) in [
            (group::ISO, "iso"),
            (group::DMY, "dmy"),
            (group::COMPACT, "compact"),
            (group::CTIME, "ctime"),
        ] {
            assert_eq!(n[i].as_deref(), Some(name));
        }
    }

    /// On ASCII text the DFAs and the backtracker find every pass's matches
    /// themselves (no fallback to the regex), and find exactly the matches
    /// and capture groups `Regex::captures_iter` finds with the pattern as
    /// written.
    #[test]
    fn dfa_hits_are_the_regex_captures() {
        let r = rules();
        let mut found = 0;
        // One backtracker scratch per pattern for all texts, as `redact`
        // keeps them.
        let mut scratch = Scratch::default();
        for t in texts()
            .iter()
            .map(|t| normalize(t))
            .filter(|t| t.is_ascii())
        {
            for pass in PASSES {
                let p = r.pattern(pass);
                let groups = &mut scratch.groups[pass.pattern() as usize];
                let expected: Vec<Hit> = p
                    .get(false)
                    .captures_iter(&t)
                    .map(|c| Hit::of_captures(&c))
                    .collect();
                let with_groups = dfa_hits(p, &t, true, groups);
                assert_eq!(with_groups.as_ref(), Some(&expected), "{pass:?} on {t:?}");
                let spans = |hits: Vec<Hit>| -> Vec<(usize, usize)> {
                    hits.iter().map(|h| (h.start, h.end)).collect()
                };
                let without = dfa_hits(p, &t, false, groups).expect("no fallback");
                assert_eq!(spans(without), spans(expected), "{pass:?} on {t:?}");
                found += with_groups.map_or(0, |h| h.len());
            }
        }
        assert!(found > 10_000, "{found} matches compared");
    }

    #[test]
    fn date_parts_from_the_text_are_the_groups() {
        let r = rules();
        let date = r.get(PatternId::Date).get(false);
        let mut extra: Vec<String> = [
            "2024-06-27",
            "2024/6/7 13:54",
            "1950.03.04T01:02:03.5",
            "3/4/1950",
            "04.03.1950",
            "4-3-50",
            "12-31-1999 23:59",
            "19500304",
            "20240627135407",
            "2024062713540",
            "202406271354",
            "4 Mar 1950",
            "4th-March-1950",
            "Mar 4, 1950",
            "march 4th 1950 10:00",
            "1st jan 99",
            "Sept. 9, 2001",
        ]
        .iter()
        .map(|d| format!("on {d} x"))
        .collect();
        extra.extend(texts().iter().map(|t| normalize(t).into_owned()));
        let mut compared = 0;
        for t in extra.iter().filter(|t| t.is_ascii()) {
            for c in date.captures_iter(t) {
                let m = c.get(0).unwrap();
                let hit = Hit::of_captures(&c);
                let by_groups = DateParts::of_groups(t, &hit);
                assert_eq!(
                    DateParts::of_ascii(m.as_str()),
                    by_groups,
                    "{:?}",
                    m.as_str()
                );
                compared += 1;
            }
        }
        assert!(compared > 1_000, "{compared} dates");
    }

    /// A match longer than the backtracker can take (its visited set is
    /// bounded) falls back to the regex, with the same result.
    #[test]
    fn long_matches_fall_back_to_the_regex() {
        let r = rules();
        let value = "A1".repeat(100_000);
        let text = format!("see MRN {value} and phone 555-123-4567");
        let p = r.pattern(Pass::LabelledId);
        assert!(
            dfa_hits(p, &text, true, &mut None).is_none(),
            "the backtracker takes a 200 KB match"
        );
        assert!(
            dfa_hits(p, &text, false, &mut None).is_some(),
            "spans alone need no backtracker"
        );
        let out = redact(&text);
        assert_eq!(out, "see MRN [REDACTED:id] and phone [REDACTED:phone]");
        assert_eq!(out, redact_every_pass(&text));
    }

    #[test]
    fn every_dfa_loads() {
        let r = rules();
        for id in PATTERN_IDS {
            let dfa = r.get(id).dfa();
            assert!(dfa.is_some(), "the DFA of {id:?} does not load");
            assert_eq!(
                matches!(dfa, Some(Dfas::Sparse(_))),
                is_sparse(id),
                "{id:?}"
            );
        }
        assert!(is_sparse(PatternId::Address));
    }

    /// The embedded DFAs answer every match test exactly as the regexes do:
    /// on every generated ASCII text, on each of its prefixes and suffixes
    /// (the context tests run on the text before a match, and `$`, `\b` and
    /// the start of text behave differently at the edges), and on the empty
    /// text.
    #[test]
    fn dfas_agree_with_the_patterns() {
        let r = rules();
        let mut hits = [0usize; PATTERN_IDS.len()];
        let mut labelled = [0usize; 2];
        let texts: Vec<String> = texts()
            .iter()
            .map(|t| normalize(t).into_owned())
            .filter(|t| t.is_ascii())
            .collect();
        let mut compared = 0;
        for t in &texts {
            let cuts = [0, t.len() / 3, t.len() / 2, t.len()];
            let mut pieces = vec![t.as_str()];
            pieces.extend(cuts.iter().map(|&c| &t[..c]));
            pieces.extend(cuts.iter().map(|&c| &t[c..]));
            for piece in pieces {
                for id in PATTERN_IDS {
                    let p = r.get(id);
                    let by_regex = p.get(false).is_match(piece);
                    assert_eq!(p.is_match(piece, true), by_regex, "{id:?} on {piece:?}");
                    hits[id as usize] += usize::from(by_regex);
                    compared += 1;
                }
                let either = [PatternId::PhoneLabelled, PatternId::LabelledId]
                    .into_iter()
                    .any(|id| r.get(id).get(false).is_match(piece));
                assert_eq!(
                    r.labelled_may_match(piece),
                    Some(either),
                    "the labelled patterns' joint DFA on {piece:?}"
                );
                labelled[usize::from(either)] += 1;
            }
        }
        assert!(compared > 1_000_000, "{compared} comparisons");
        assert!(
            labelled.iter().all(|&n| n > 1000),
            "many texts with and without a labelled match: {labelled:?}"
        );
        assert!(
            hits.iter().all(|&n| n > 50),
            "every pattern matched many texts: {hits:?}"
        );
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
