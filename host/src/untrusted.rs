//! Text a module supplied, on its way into the host's log, events, the
//! notification centre or the quarantine list.
//!
//! A module is untrusted: what it hands the host as text (log lines,
//! stdout/stderr, error results, notification keys, titles and bodies, the
//! authority of a refused request) may hold patient data, may be huge, and
//! may carry control characters that forge a log line of the host's own.
//! Everything of that kind passes [`clean`] (or [`clean_multiline`]) before
//! it is logged, stored or published:
//!
//! 1. cut to the byte budget of its use (at a character boundary, with a
//!    note saying how much was cut);
//! 2. checked by the PHI guard's free-text rules (`uplink::guard`); a text in
//!    which they find an identifier is replaced by a note naming the kind of
//!    identifier, and [`withheld_total`] counts it;
//! 3. control characters (C0, DEL, C1, line and paragraph separators) and
//!    the Unicode bidirectional controls that reorder what a terminal shows
//!    are escaped as `\n`, `\r`, `\t` or `\u{…}`, so a module's text stays on
//!    one line and reads as what it is.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest module error text kept (bytes), e.g. a collector's `Err(..)`.
pub const MAX_ERROR_TEXT_BYTES: usize = 1024;
/// Longest module log line kept (bytes).
pub const MAX_LOG_LINE_BYTES: usize = 4096;
/// Longest request authority kept in events (bytes).
pub const MAX_AUTHORITY_BYTES: usize = 256;

static WITHHELD: AtomicU64 = AtomicU64::new(0);

/// How many module texts the PHI guard withheld since the process started.
pub fn withheld_total() -> u64 {
    WITHHELD.load(Ordering::Relaxed)
}

/// `text` cut to `max_bytes`, checked by the PHI guard and with every control
/// character escaped: safe to log, store and show on one line.
pub fn clean(text: &str, max_bytes: usize) -> Cow<'_, str> {
    clean_with(text, max_bytes, false)
}

/// Like [`clean`], but line feeds stay (a notification body has paragraphs);
/// carriage returns and every other control character are escaped.
pub fn clean_multiline(text: &str, max_bytes: usize) -> Cow<'_, str> {
    clean_with(text, max_bytes, true)
}

/// Whether the PHI guard finds an identifier in `text`; the kind if so.
pub fn phi_finding(text: &str) -> Option<&'static str> {
    crate::uplink::guard::free_text(text).map(|f| f.describe())
}

/// Room kept for the note that says how much was cut.
const CUT_NOTE_BYTES: usize = 32;

fn clean_with(text: &str, max_bytes: usize, keep_lf: bool) -> Cow<'_, str> {
    let cut = if text.len() <= max_bytes {
        text
    } else {
        cut(text, max_bytes.saturating_sub(CUT_NOTE_BYTES))
    };
    if let Some(kind) = phi_finding(cut) {
        WITHHELD.fetch_add(1, Ordering::Relaxed);
        return Cow::Owned(format!("[withheld by the PHI guard: {kind}]"));
    }
    let escaped = escape(cut, keep_lf);
    if cut.len() == text.len() {
        return escaped;
    }
    let mut s = escaped.into_owned();
    let _ = write!(s, " [... {} bytes cut]", text.len() - cut.len());
    Cow::Owned(s)
}

/// The longest prefix of `text` of at most `max_bytes` that ends at a
/// character boundary.
pub fn cut(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether `c` must not reach a log line or a terminal as it is.
fn needs_escape(c: char, keep_lf: bool) -> bool {
    match c {
        '\n' => !keep_lf,
        // C0, DEL, C1.
        '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        // Line and paragraph separators (read as line breaks by some viewers).
        '\u{2028}' | '\u{2029}' => true,
        // Bidirectional embeddings, overrides, isolates and marks
        // (Trojan-source style reordering of what is shown).
        '\u{200e}'
        | '\u{200f}'
        | '\u{061c}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

fn escape(text: &str, keep_lf: bool) -> Cow<'_, str> {
    if !text.chars().any(|c| needs_escape(c, keep_lf)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !needs_escape(c, keep_lf) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_a_line() {
        for (input, want) in [
            ("plain text", "plain text"),
            (
                "ok\n2026-12-04T10:00:00Z  INFO outpost: forged",
                "ok\\n2026-12-04T10:00:00Z  INFO outpost: forged",
            ),
            ("a\rb", "a\\rb"),
            ("tab\there", "tab\\there"),
            ("bell\u{7}", "bell\\u{7}"),
            ("esc\u{1b}[31mred", "esc\\u{1b}[31mred"),
            ("c1\u{85}next", "c1\\u{85}next"),
            ("ls\u{2028}x", "ls\\u{2028}x"),
            ("rlo\u{202e}cod.exe", "rlo\\u{202e}cod.exe"),
            ("Müller-Reagenz", "Müller-Reagenz"),
        ] {
            let got = clean(input, 4096);
            assert_eq!(got, want, "{input:?}");
            assert!(!got.contains('\n') && !got.contains('\r'));
        }
        assert_eq!(clean_multiline("one\ntwo\r\n", 100), "one\ntwo\\r\n");
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary_and_says_so() {
        let text = "é".repeat(1000); // 2000 bytes
        let got = clean(&text, 101);
        assert!(got.starts_with(&"é".repeat(34)), "{got}");
        assert!(got.ends_with(" [... 1932 bytes cut]"), "{got}");
        assert!(got.len() <= 101, "{}", got.len());
        assert_eq!(clean("short", 101), "short");
    }

    #[test]
    fn identifiers_are_withheld_and_counted() {
        let before = withheld_total();
        for text in [
            "patient SSN 555-44-4444 failed",
            "DOB 03/04/1950",
            "MRN 0012345 not found",
            "mail jane.doe@example.org",
        ] {
            let got = clean(text, 4096);
            assert!(
                got.starts_with("[withheld by the PHI guard: "),
                "{text}: {got}"
            );
        }
        assert!(withheld_total() >= before + 4);
        assert_eq!(clean("E-1203 reagent low", 4096), "E-1203 reagent low");
    }
}
