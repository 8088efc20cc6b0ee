//! Lowercase hex encoding (private helper; keeps the dependency list short).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Encode bytes as lowercase hex.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    s
}

/// Decode exactly `N` bytes of hex (either case); `None` on any other input.
pub(crate) fn decode_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_refuses_bad_input() {
        let bytes = [0x00, 0x7f, 0x80, 0xff, 0x12];
        let s = super::encode(&bytes);
        assert_eq!(s, "007f80ff12");
        assert_eq!(super::decode_array::<5>(&s), Some(bytes));
        assert_eq!(super::decode_array::<5>("007F80FF12"), Some(bytes));
        assert_eq!(super::decode_array::<5>("007f80ff1"), None);
        assert_eq!(super::decode_array::<5>("007f80ff1g"), None);
        assert_eq!(super::decode_array::<4>(&s), None);
    }
}
