//! Ed25519 signing keys: generation, key ids, and the key file formats.
//!
//! # Key id
//!
//! A key id is 12 bytes derived from the 32-byte Ed25519 public key `pk`:
//!
//! ```text
//! key_id = HMAC-SHA256(key = pk, message = "key_id")[0..12]
//! ```
//!
//! This is the derivation `wasmsign2` uses for its default key ids
//! (`PublicKey::attach_default_key_id`), so `wasmsign2 verify` matches our
//! signatures to the public key it is given, and `wasmsign2 sign -K pk`
//! writes the same key id we compute. Key ids are written as 24 lowercase
//! hex digits. A key id only *names* a key: verification always checks the
//! signature with the trusted public key the id points to.
//!
//! # Key files
//!
//! Both files are ASCII text, two lines, each ended by `\n` (a trailing `\r`
//! or spaces are tolerated on load, nothing else):
//!
//! ```text
//! outpost-ed25519-secret-key-v1
//! <64 hex digits: the 32-byte Ed25519 seed (RFC 8032 secret key)>
//! ```
//!
//! ```text
//! outpost-ed25519-public-key-v1
//! <64 hex digits: the 32-byte Ed25519 public key>
//! ```
//!
//! The public key is also accepted by the trust store as the bare 64 hex
//! digits. [`wasmsign2_public_key_bytes`] exports the raw form the
//! `wasmsign2` CLI reads with `-K` (33 bytes: `0x01` then the key).
//!
//! # Protecting the secret key file
//!
//! [`save_signing_key`] never overwrites a file (it creates it exclusively).
//! - Unix: the file is created with mode `0600` (owner read/write only) via
//!   `OpenOptionsExt::mode`, so it is never readable by others even briefly;
//!   [`load_signing_key`] refuses a file whose mode grants any group or other
//!   permission, as OpenSSH does.
//! - Windows: the file is created with the default ACL inherited from its
//!   directory. Plan: set an explicit owner-only DACL at creation
//!   (`CreateFileW` with a `SECURITY_ATTRIBUTES` holding a DACL granting
//!   `GENERIC_ALL` to the current user SID only, protected from inheritance)
//!   and check the DACL on load. Until that lands, keep signing keys on Windows
//!   in a directory whose ACL already admits only the owner (for example under
//!   `%LOCALAPPDATA%`), or on the build machine only — controller PCs never
//!   hold signing keys, only public keys in the trust store.

use crate::hex;
use ed25519_dalek::{SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zeroize::Zeroizing;

/// First line of a secret key file.
pub const SECRET_KEY_FILE_TAG: &str = "outpost-ed25519-secret-key-v1";
/// First line of a public key file.
pub const PUBLIC_KEY_FILE_TAG: &str = "outpost-ed25519-public-key-v1";
/// Largest key file read (bytes); key files are about 100 bytes.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The 12-byte id of a public key (see the module docs for the derivation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; crate::format::KEY_ID_BYTES]);

impl KeyId {
    /// The id of `key`: `HMAC-SHA256(key = public key, "key_id")[0..12]`.
    pub fn of(key: &VerifyingKey) -> KeyId {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
        mac.update(b"key_id");
        let full = mac.finalize().into_bytes();
        let mut id = [0u8; crate::format::KEY_ID_BYTES];
        id.copy_from_slice(&full[..crate::format::KEY_ID_BYTES]);
        KeyId(id)
    }

    /// The raw 12 bytes as stored in a signature entry.
    pub fn as_bytes(&self) -> &[u8; crate::format::KEY_ID_BYTES] {
        &self.0
    }

    pub(crate) fn from_bytes(bytes: [u8; crate::format::KEY_ID_BYTES]) -> KeyId {
        KeyId(bytes)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = String;
    fn from_str(s: &str) -> Result<KeyId, String> {
        hex::decode_array(s)
            .map(KeyId)
            .ok_or_else(|| format!("key id {s:?} is not 24 hex digits"))
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KeyId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a key could not be saved, loaded or parsed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("key file {path}: {error}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file exists already; keys are never overwritten.
    #[error("key file {0} exists already; refusing to overwrite it")]
    Exists(PathBuf),
    /// The file is not in the documented format.
    #[error("key file {path} is not valid: {reason}")]
    Format {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A secret key file is readable or writable by group or others (Unix).
    #[error(
        "secret key file {path} has mode {mode:04o}; it must not be accessible to group or others (chmod 600)"
    )]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An encoded public key is not valid.
    #[error("public key is not valid: {0}")]
    InvalidPublicKey(String),
}

/// Generate a new signing key from the operating system's random source.
pub fn generate_signing_key() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// The key id of a signing key's public half.
pub fn key_id(key: &VerifyingKey) -> KeyId {
    KeyId::of(key)
}

/// Lowercase hex of a public key (64 digits), as written in the trust store.
pub fn public_key_to_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// Parse a public key from 64 hex digits. Refuses points that are not on the
/// curve and weak (small-order) keys.
pub fn public_key_from_hex(s: &str) -> Result<VerifyingKey, KeyError> {
    let bytes: [u8; 32] = hex::decode_array(s.trim())
        .ok_or_else(|| KeyError::InvalidPublicKey(format!("{s:?} is not 64 hex digits")))?;
    public_key_from_bytes(&bytes)
}

fn public_key_from_bytes(bytes: &[u8; 32]) -> Result<VerifyingKey, KeyError> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| {
        KeyError::InvalidPublicKey(format!("{} is not an ed25519 point", hex::encode(bytes)))
    })?;
    if key.is_weak() {
        return Err(KeyError::InvalidPublicKey(format!(
            "{} is a weak (small-order) ed25519 key",
            hex::encode(bytes)
        )));
    }
    Ok(key)
}

/// The public key in the raw form the `wasmsign2` CLI reads (`-K file`):
/// 33 bytes, the algorithm byte `0x01` (Ed25519) then the 32-byte key.
pub fn wasmsign2_public_key_bytes(key: &VerifyingKey) -> [u8; 33] {
    let mut out = [0u8; 33];
    out[0] = crate::format::ALG_ED25519;
    out[1..].copy_from_slice(key.as_bytes());
    out
}

/// Parse a `wasmsign2` raw public key (as written by `wasmsign2 keygen -K`).
pub fn public_key_from_wasmsign2(bytes: &[u8]) -> Result<VerifyingKey, KeyError> {
    match bytes {
        [crate::format::ALG_ED25519, rest @ ..] if rest.len() == 32 => {
            public_key_from_bytes(rest.try_into().expect("32 bytes"))
        }
        _ => Err(KeyError::InvalidPublicKey(format!(
            "{} bytes; a wasmsign2 public key is 0x01 followed by 32 bytes",
            bytes.len()
        ))),
    }
}

/// Save `key` to a new file at `path` (see the module docs for the format and
/// the file protection). Never overwrites an existing file.
pub fn save_signing_key(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let seed = Zeroizing::new(hex::encode(key.as_bytes()));
    let text = Zeroizing::new(format!("{SECRET_KEY_FILE_TAG}\n{}\n", seed.as_str()));
    write_new(path, text.as_bytes(), true)
}

/// Load a secret key file written by [`save_signing_key`].
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = Zeroizing::new(read_small(path)?);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|source| io(path, source))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let body = parse_key_text(path, &text, SECRET_KEY_FILE_TAG)?;
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
        hex::decode_array(body)
            .ok_or_else(|| format_err(path, "the second line must be 64 hex digits"))?,
    );
    Ok(SigningKey::from_bytes(&seed))
}

/// Save a public key to a new file at `path` (mode `0644` on Unix).
pub fn save_public_key(path: &Path, key: &VerifyingKey) -> Result<(), KeyError> {
    let text = format!("{PUBLIC_KEY_FILE_TAG}\n{}\n", public_key_to_hex(key));
    write_new(path, text.as_bytes(), false)
}

/// Load a public key file written by [`save_public_key`].
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = read_small(path)?;
    let body = parse_key_text(path, &text, PUBLIC_KEY_FILE_TAG)?;
    public_key_from_hex(body).map_err(|e| format_err(path, &e.to_string()))
}

fn parse_key_text<'a>(path: &Path, text: &'a str, tag: &str) -> Result<&'a str, KeyError> {
    let mut lines = text.lines().map(str::trim_end);
    if lines.next() != Some(tag) {
        return Err(format_err(path, &format!("the first line must be {tag:?}")));
    }
    let body = lines
        .next()
        .ok_or_else(|| format_err(path, "the key line is missing"))?;
    if lines.any(|l| !l.is_empty()) {
        return Err(format_err(path, "unexpected text after the key line"));
    }
    Ok(body)
}

fn read_small(path: &Path) -> Result<String, KeyError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| io(path, source))?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| io(path, source))?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format_err(
            path,
            &format!("longer than {MAX_KEY_FILE_BYTES} bytes"),
        ));
    }
    Ok(text)
}

fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), KeyError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(windows)]
    {
        // Windows: the file inherits its directory's ACL. See the module docs
        // for the owner-only DACL plan; controller PCs hold no secret keys.
        let _ = secret;
    }
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists(path.to_path_buf())
        } else {
            io(path, source)
        }
    })?;
    file.write_all(bytes).map_err(|source| io(path, source))?;
    file.sync_all().map_err(|source| io(path, source))
}

fn io(path: &Path, error: std::io::Error) -> KeyError {
    KeyError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn format_err(path: &Path, reason: &str) -> KeyError {
    KeyError::Format {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_matches_the_wasmsign2_derivation_vector() {
        // RFC 8032 test 1 public key; id computed independently as
        // HMAC-SHA256(key = pk, "key_id")[..12] (python hmac).
        let pk =
            public_key_from_hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
                .unwrap();
        assert_eq!(KeyId::of(&pk).to_string(), KEY_ID_RFC8032_TEST1);
        assert_eq!(
            KeyId::of(&pk).to_string().parse::<KeyId>().unwrap(),
            KeyId::of(&pk)
        );
    }

    const KEY_ID_RFC8032_TEST1: &str = "58fb94a6933f01b8b7707a8b";

    #[test]
    fn refuses_weak_and_malformed_public_keys() {
        // The identity point (small order).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(public_key_from_hex(&hex::encode(&identity)).is_err());
        assert!(public_key_from_hex("zz").is_err());
        assert!(public_key_from_wasmsign2(&[0x01; 10]).is_err());
        let k = generate_signing_key().verifying_key();
        assert_eq!(
            public_key_from_wasmsign2(&wasmsign2_public_key_bytes(&k)).unwrap(),
            k
        );
    }

    #[test]
    fn key_files_round_trip_with_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let sk_path = dir.path().join("release.key");
        let pk_path = dir.path().join("release.pub");
        let sk = generate_signing_key();
        save_signing_key(&sk_path, &sk).unwrap();
        save_public_key(&pk_path, &sk.verifying_key()).unwrap();
        assert_eq!(
            load_signing_key(&sk_path).unwrap().to_bytes(),
            sk.to_bytes()
        );
        assert_eq!(load_public_key(&pk_path).unwrap(), sk.verifying_key());
        assert!(matches!(
            save_signing_key(&sk_path, &sk),
            Err(KeyError::Exists(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&sk_path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&sk_path, std::fs::Permissions::from_mode(0o640)).unwrap();
            let err = load_signing_key(&sk_path).unwrap_err().to_string();
            assert!(err.contains("0640") && err.contains("release.key"), "{err}");
        }
        // A public key file is not a secret key file.
        assert!(matches!(
            load_signing_key(&pk_path),
            Err(KeyError::Format { .. }) | Err(KeyError::TooOpen { .. })
        ));
        let bad = dir.path().join("bad.pub");
        std::fs::write(&bad, format!("{PUBLIC_KEY_FILE_TAG}\nabc\n")).unwrap();
        assert!(
            load_public_key(&bad)
                .unwrap_err()
                .to_string()
                .contains("bad.pub")
        );
    }
}
