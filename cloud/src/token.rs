//! Who may enrol: an enrolment token, or — only when asked for by name —
//! anyone who reaches the server.
//!
//! The server keeps only the SHA-256 digest of the token and compares digests
//! in constant time (which also hides the token's length). The token itself
//! is wiped from memory when dropped and never printed (`Debug` shows
//! `<redacted>`).

use std::path::Path;

use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// Shortest accepted enrolment token, in bytes: shorter ones are guessable.
pub const MIN_ENROLLMENT_TOKEN_BYTES: usize = 16;
/// Longest accepted enrolment token, in bytes (the protocol's field limit).
pub const MAX_ENROLLMENT_TOKEN_BYTES: usize = 256;
/// Random bytes in a token made by [`EnrollmentToken::generate`] (hex-encoded,
/// so the token is twice as many characters).
pub const GENERATED_TOKEN_BYTES: usize = 32;
/// Environment variable `outpost-cloud serve` reads the token from (the other
/// way is `--enrollment-token-file`; never a command-line value, which every
/// user of the machine can read in the process list).
pub const ENROLLMENT_TOKEN_ENV: &str = "OUTPOST_CLOUD_ENROLLMENT_TOKEN";

/// Why a string is not an acceptable enrolment token. The message names the
/// rule, never the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Fewer than [`MIN_ENROLLMENT_TOKEN_BYTES`] bytes.
    #[error(
        "the enrolment token is {0} bytes; it must be at least {MIN_ENROLLMENT_TOKEN_BYTES} (use a random one, e.g. 32 random bytes as hex)"
    )]
    TooShort(usize),
    /// More than [`MAX_ENROLLMENT_TOKEN_BYTES`] bytes.
    #[error("the enrolment token is {0} bytes; it must be at most {MAX_ENROLLMENT_TOKEN_BYTES}")]
    TooLong(usize),
    /// Holds whitespace or a control character.
    #[error("the enrolment token holds whitespace or a control character")]
    BadCharacter,
    /// The token file could not be read.
    #[error("cannot read the enrolment token file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// A secret every enrolling device must present. (No `PartialEq`: the server
/// compares digests in constant time, nothing else compares tokens.)
#[derive(Clone)]
pub struct EnrollmentToken(String);

impl std::fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrollmentToken(<redacted>)")
    }
}

impl Drop for EnrollmentToken {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl EnrollmentToken {
    /// Accept `token` if it is [`MIN_ENROLLMENT_TOKEN_BYTES`] to
    /// [`MAX_ENROLLMENT_TOKEN_BYTES`] bytes without whitespace or control
    /// characters.
    pub fn new(token: impl Into<String>) -> Result<EnrollmentToken, TokenError> {
        let token = EnrollmentToken(token.into());
        let len = token.0.len();
        if len < MIN_ENROLLMENT_TOKEN_BYTES {
            return Err(TokenError::TooShort(len));
        }
        if len > MAX_ENROLLMENT_TOKEN_BYTES {
            return Err(TokenError::TooLong(len));
        }
        if token.0.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokenError::BadCharacter);
        }
        Ok(token)
    }

    /// A fresh random token: [`GENERATED_TOKEN_BYTES`] bytes from the OS RNG,
    /// as lowercase hex.
    pub fn generate() -> EnrollmentToken {
        let mut bytes = [0u8; GENERATED_TOKEN_BYTES];
        OsRng.fill_bytes(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        bytes.zeroize();
        EnrollmentToken(hex)
    }

    /// Read the token from `path`: the file's text without surrounding
    /// whitespace (so a trailing newline is fine), then as [`EnrollmentToken::new`].
    pub fn from_file(path: &Path) -> Result<EnrollmentToken, TokenError> {
        let mut text = std::fs::read_to_string(path).map_err(|e| TokenError::File {
            path: path.display().to_string(),
            source: e,
        })?;
        let token = EnrollmentToken::new(text.trim());
        text.zeroize();
        token
    }

    /// The token itself, for handing it to a device (the demo, tests).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

/// Who may enrol.
#[derive(Clone, Debug)]
pub enum Enrollment {
    /// Only a device presenting this token (the default of the CLI, which
    /// refuses to start without a token unless told otherwise by name).
    Token(EnrollmentToken),
    /// Anyone who can reach the server may enrol a device. Dangerous: for a
    /// closed test network only; on a reachable server anyone can fill the
    /// device table and then upload as an enrolled device.
    DangerousAnonymous,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_be_long_enough_short_enough_and_printable() {
        for (token, want) in [
            ("fifteen-bytes-x", Some("at least 16")),
            ("sixteen-bytes-xx", None),
            ("with space inside-token", Some("whitespace")),
            ("with-tab\tinside-token", Some("whitespace")),
            ("with-nul\0inside-token", Some("control")),
        ] {
            match (EnrollmentToken::new(token), want) {
                (Ok(_), None) => {}
                (Err(e), Some(w)) => assert!(e.to_string().contains(w), "{token:?}: {e}"),
                (got, _) => panic!("{token:?}: {got:?}"),
            }
        }
        let long = "x".repeat(MAX_ENROLLMENT_TOKEN_BYTES + 1);
        assert!(matches!(
            EnrollmentToken::new(long),
            Err(TokenError::TooLong(257))
        ));
        // The error never repeats the token.
        let e = EnrollmentToken::new("secret value here").unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn generated_tokens_are_random_hex_and_never_printed() {
        let a = EnrollmentToken::generate();
        let b = EnrollmentToken::generate();
        assert_eq!(a.expose().len(), 2 * GENERATED_TOKEN_BYTES);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose(), b.expose());
        assert!(!format!("{a:?}").contains(a.expose()));
        assert!(!format!("{:?}", Enrollment::Token(a.clone())).contains(a.expose()));
    }

    #[test]
    fn token_files_are_read_without_surrounding_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "  file-token-0123456789\r\n").unwrap();
        let t = EnrollmentToken::from_file(&f).unwrap();
        assert_eq!(t.expose(), "file-token-0123456789");
        let e = EnrollmentToken::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
