//! Byte searches for the parsers' hot loops.
//!
//! `str::split(char)`, `str::lines` and `iter().position(..)` search a word or
//! a byte at a time; `memchr` searches 16 or 32 bytes at a time, with SSE2 or
//! AVX2 natively and with Wasm SIMD (`simd128`, which the workspace's guests
//! are built with) in the collector module. Separators are found with
//! `memchr` when they are ASCII, which every delimiter in the corpus is; any
//! other character falls back to the standard library's search.

use std::borrow::Cow;

/// `bytes` as text, like `String::from_utf8_lossy`, but checked first with
/// `str::from_utf8`, which skips ASCII a word at a time; the lossy decoder
/// looks at every byte and runs only on input that is not valid UTF-8.
pub fn utf8_lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// `s` split at every `sep`: the same pieces as `s.split(sep)`.
pub fn split(s: &str, sep: char) -> Split<'_> {
    Split { rest: Some(s), sep }
}

/// Iterator returned by [`split`].
pub struct Split<'a> {
    rest: Option<&'a str>,
    sep: char,
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match find(rest, self.sep) {
            Some(i) => {
                self.rest = Some(&rest[i + self.sep.len_utf8()..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Where `c` first occurs in `s`, like `s.find(c)`.
pub fn find(s: &str, c: char) -> Option<usize> {
    if c.is_ascii() {
        memchr::memchr(c as u8, s.as_bytes())
    } else {
        s.find(c)
    }
}

/// The lines of `s`, like `s.lines()`: split at `\n`, a `\r` right before
/// it removed, no empty last line after a final `\n`.
pub fn lines(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s).filter(|s| !s.is_empty());
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b'\n', r.as_bytes()) {
            Some(i) => {
                rest = Some(&r[i + 1..]).filter(|s| !s.is_empty());
                let line = &r[..i];
                Some(line.strip_suffix('\r').unwrap_or(line))
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// The pieces of `s` between CR and LF bytes: the same as
/// `s.split(['\r', '\n'])` ([`split_cr_lf_bytes`] on its bytes; a piece
/// cut at ASCII bytes is whole UTF-8).
pub fn split_cr_lf(s: &str) -> impl Iterator<Item = &str> {
    let base = s.as_ptr() as usize;
    split_cr_lf_bytes(s.as_bytes()).map(move |piece| {
        let start = piece.as_ptr() as usize - base;
        &s[start..start + piece.len()]
    })
}

/// The pieces of `bytes` between CR and LF bytes: the same as
/// `bytes.split(|b| *b == b'\r' || *b == b'\n')`.
pub fn split_cr_lf_bytes(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr2(b'\r', b'\n', r) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// The last non-empty piece of `bytes` between CR and LF bytes (empty if
/// there is none): the same as `split_cr_lf_bytes(bytes).rfind(|p| !p.is_empty())`,
/// found from the end with `memrchr2`.
pub fn last_cr_lf_piece(bytes: &[u8]) -> &[u8] {
    let Some(last) = bytes.iter().rposition(|b| !matches!(b, b'\r' | b'\n')) else {
        return &[];
    };
    let start = memchr::memrchr2(b'\r', b'\n', &bytes[..last]).map_or(0, |i| i + 1);
    &bytes[start..=last]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXTS: &[&str] = &[
        "",
        "|",
        "||",
        "a",
        "a|b",
        "|a|b|",
        "MSH|^~\\&|XN-550|||20240101||ORU^R01",
        "a\r\nb\nc\r\rd\n\n",
        "\n",
        "\r\n",
        "x\r",
        "é|ü|€",
        "no separators at all, but longer than thirty-two bytes, so memchr vectorises",
        "sep|at|the|end|of|a|long|text|that|crosses|the|sixteen|byte|boundary|",
    ];

    #[test]
    fn split_matches_str_split() {
        for t in TEXTS {
            for sep in ['|', '^', '\r', 'é', '€', ' '] {
                let ours: Vec<&str> = split(t, sep).collect();
                let std: Vec<&str> = t.split(sep).collect();
                assert_eq!(ours, std, "{t:?} split at {sep:?}");
                assert_eq!(find(t, sep), t.find(sep), "{t:?} find {sep:?}");
            }
        }
    }

    #[test]
    fn utf8_lossy_matches_the_standard_library() {
        let inputs: &[&[u8]] = &[
            b"",
            b"plain ASCII, longer than one machine word",
            "caf\u{e9} \u{20ac}".as_bytes(),
            b"bad \xff byte",
            b"cut \xe2\x82",
            b"\xc3\x28 overlong and \xf0\x9f\x98\x80 emoji",
        ];
        for input in inputs {
            let ours = utf8_lossy(input);
            assert_eq!(ours, String::from_utf8_lossy(input), "{input:?}");
            assert_eq!(
                matches!(ours, Cow::Borrowed(_)),
                std::str::from_utf8(input).is_ok(),
                "borrowed exactly when valid: {input:?}"
            );
        }
    }

    #[test]
    fn byte_pieces_match_slice_split() {
        let cr_lf = |b: &u8| *b == b'\r' || *b == b'\n';
        for t in TEXTS {
            let b = t.as_bytes();
            let ours: Vec<&[u8]> = split_cr_lf_bytes(b).collect();
            let std: Vec<&[u8]> = b.split(cr_lf).collect();
            assert_eq!(ours, std, "{t:?}");
            let last: &[u8] = std
                .iter()
                .rfind(|p| !p.is_empty())
                .copied()
                .unwrap_or_default();
            assert_eq!(last_cr_lf_piece(b), last, "{t:?}");
        }
        // Every arrangement of up to eight CR, LF and other bytes.
        for n in 0..=8u32 {
            for code in 0..3u32.pow(n) {
                let b: Vec<u8> = (0..n)
                    .map(|i| [b'\r', b'\n', b'x'][(code / 3u32.pow(i) % 3) as usize])
                    .collect();
                let std: Vec<&[u8]> = b.split(cr_lf).collect();
                assert_eq!(split_cr_lf_bytes(&b).collect::<Vec<_>>(), std);
                let last: &[u8] = std
                    .iter()
                    .rfind(|p| !p.is_empty())
                    .copied()
                    .unwrap_or_default();
                assert_eq!(last_cr_lf_piece(&b), last, "{b:?}");
            }
        }
    }

    #[test]
    fn lines_match_str_lines() {
        for t in TEXTS {
            let ours: Vec<&str> = lines(t).collect();
            let std: Vec<&str> = t.lines().collect();
            assert_eq!(ours, std, "{t:?}");
            let ours: Vec<&str> = split_cr_lf(t).collect();
            let std: Vec<&str> = t.split(['\r', '\n']).collect();
            assert_eq!(ours, std, "{t:?}");
        }
    }
}
