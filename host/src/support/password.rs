//! One-time session passwords and session ids: drawn from the OS CSPRNG
//! over an alphabet without look-alike characters, stored only as a keyed
//! hash, compared in constant time.
//!
//! Architecture Invariant: a password exists in clear only in the answer to
//! the person who asked for the session (API/CLI/dashboard on this PC). It is
//! never logged, never put in an event or the audit chain, never stored.

use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The characters of passwords and session ids: digits and capitals without
/// 0/O, 1/I/L (31 characters, ≈ 4.95 bits each).
pub const ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Characters in a password (≈ 59 bits).
pub const PASSWORD_CHARS: usize = 12;
/// Characters in a session id (≈ 59 bits).
pub const SESSION_ID_CHARS: usize = 12;
/// Length of the per-session salt (the key of the stored hash).
pub const SALT_BYTES: usize = 16;

/// Bits of entropy of `chars` characters of [`ALPHABET`].
pub fn entropy_bits(chars: usize) -> f64 {
    chars as f64 * (ALPHABET.len() as f64).log2()
}

/// `n` characters of [`ALPHABET`], uniformly (rejection sampling of OS
/// random bytes), in groups of four joined by `-`.
fn random_code(n: usize) -> Zeroizing<String> {
    // 248 = 8 × 31: bytes at or above it would bias the draw.
    const LIMIT: u8 = (256 - 256 % ALPHABET.len()) as u8;
    let mut out = Zeroizing::new(String::with_capacity(n + n / 4));
    let mut buf = Zeroizing::new([0u8; 64]);
    let mut drawn = 0;
    while drawn < n {
        OsRng.fill_bytes(&mut buf[..]);
        for &b in buf.iter() {
            if drawn == n {
                break;
            }
            if b >= LIMIT {
                continue;
            }
            if drawn > 0 && drawn % 4 == 0 {
                out.push('-');
            }
            out.push(ALPHABET[(b as usize) % ALPHABET.len()] as char);
            drawn += 1;
        }
    }
    out
}

/// A new one-time password (e.g. `7KQM-X3HD-RW9P`).
pub fn new_password() -> Zeroizing<String> {
    random_code(PASSWORD_CHARS)
}

/// A new session id (same alphabet and shape as passwords).
pub fn new_session_id() -> String {
    random_code(SESSION_ID_CHARS).to_string()
}

/// A new random salt.
pub fn new_salt() -> [u8; SALT_BYTES] {
    let mut s = [0u8; SALT_BYTES];
    OsRng.fill_bytes(&mut s);
    s
}

/// What a person typed, as compared: capitals, without spaces and dashes.
/// Session ids are normalised the same way.
pub fn normalize(input: &str) -> Zeroizing<String> {
    Zeroizing::new(
        input
            .chars()
            .filter(|c| !matches!(c, '-' | ' ' | '\t'))
            .flat_map(char::to_uppercase)
            .take(64)
            .collect(),
    )
}

/// The stored form of `password`: HMAC-SHA-256 keyed with the session's salt.
pub fn hash(salt: &[u8], password: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(normalize(password).as_bytes());
    mac.finalize().into_bytes().into()
}

/// Whether `attempt` is the password stored as `stored` (constant time in
/// the stored hash).
pub fn matches(salt: &[u8], stored: &[u8], attempt: &str) -> bool {
    hash(salt, attempt).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_enough_and_unambiguous() {
        assert!(entropy_bits(PASSWORD_CHARS) >= 40.0);
        const { assert!(PASSWORD_CHARS >= 10) };
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let p = new_password();
            assert_eq!(p.len(), PASSWORD_CHARS + 2, "{}", p.as_str());
            for c in p.chars().filter(|&c| c != '-') {
                assert!(!"0O1IL".contains(c), "{c}");
                assert!(ALPHABET.contains(&(c as u8)), "{c}");
                seen.insert(c);
            }
        }
        assert_eq!(seen.len(), ALPHABET.len(), "every character is drawn");
        assert_ne!(new_password(), new_password());
        assert_ne!(new_session_id(), new_session_id());
    }

    #[test]
    fn comparison_ignores_case_spaces_and_dashes_only() {
        let salt = new_salt();
        let h = hash(&salt, "7KQM-X3HD-RW9P");
        assert!(matches(&salt, &h, "7kqm x3hd rw9p"));
        assert!(matches(&salt, &h, "7KQMX3HDRW9P"));
        assert!(!matches(&salt, &h, "7KQMX3HDRW9"));
        assert!(!matches(&salt, &h, "7KQMX3HDRW9PP"));
        assert!(!matches(&new_salt(), &h, "7KQMX3HDRW9P"));
        assert!(!matches(&salt, &h[..31], "7KQMX3HDRW9P"));
    }
}
