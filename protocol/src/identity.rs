//! Device key, device id and stream names.

use std::fmt;

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

use crate::ProtocolError;

/// Longest stream name, in bytes.
pub const MAX_STREAM_LEN: usize = 32;

/// Longest device id, in bytes.
const MAX_DEVICE_ID_LEN: usize = 64;

/// A device's 32-byte AES-256-GCM key.
///
/// Generated on the device from the OS RNG; zeroized on drop; `Debug` prints
/// `DeviceKey(<redacted>)`; no `Display`, no serde (convert explicitly with
/// [`DeviceKey::to_hex`] where a key must be stored or sent).
#[derive(Clone)]
pub struct DeviceKey([u8; 32]);

impl Drop for DeviceKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PartialEq for DeviceKey {
    /// Compares without an early exit (no timing difference by position).
    fn eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Eq for DeviceKey {}

impl DeviceKey {
    /// A fresh random key from the operating system's RNG.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        OsRng.fill_bytes(&mut k);
        DeviceKey(k)
    }

    /// A key from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DeviceKey(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parse 64 hexadecimal characters (either case).
    pub fn from_hex(hex: &str) -> Result<Self, ProtocolError> {
        let b = hex.as_bytes();
        if b.len() != 64 {
            return Err(ProtocolError::BadKey);
        }
        let mut k = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            match (hex_val(pair[0]), hex_val(pair[1])) {
                (Some(h), Some(l)) => k[i] = (h << 4) | l,
                _ => {
                    k.zeroize();
                    return Err(ProtocolError::BadKey);
                }
            }
        }
        Ok(DeviceKey(k))
    }

    /// The key as 64 lowercase hexadecimal characters. The caller should
    /// zeroize the string when done.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(<redacted>)")
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

/// A device identifier issued by the cloud: 1..=64 characters of `[A-Za-z0-9-]`.
///
/// Serialized as a plain JSON string; deserialization validates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(String);

impl DeviceId {
    /// Validate and wrap a device id.
    pub fn parse(s: &str) -> Result<Self, ProtocolError> {
        if s.is_empty()
            || s.len() > MAX_DEVICE_ID_LEN
            || !s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        {
            return Err(ProtocolError::BadDeviceId);
        }
        Ok(DeviceId(s.to_owned()))
    }

    /// A fresh id: 16 random bytes as 32 lowercase hex characters.
    pub fn generate() -> Self {
        let mut b = [0u8; 16];
        OsRng.fill_bytes(&mut b);
        DeviceId(to_hex(&b))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for DeviceId {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceId::parse(s)
    }
}

impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DeviceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Check a stream name: 1..=32 characters of `[a-z0-9-]`.
pub fn validate_stream(stream: &str) -> Result<(), ProtocolError> {
    if stream.is_empty()
        || stream.len() > MAX_STREAM_LEN
        || !stream
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Err(ProtocolError::BadStream);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hex_round_trip_and_debug_redacted() {
        let k = DeviceKey::generate();
        let hex = k.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(DeviceKey::from_hex(&hex).unwrap(), k);
        assert_eq!(DeviceKey::from_hex(&hex.to_uppercase()).unwrap(), k);
        let dbg = format!("{k:?}");
        assert_eq!(dbg, "DeviceKey(<redacted>)");
        assert!(!dbg.contains(&hex));
        assert!(DeviceKey::from_hex(&hex[..62]).is_err());
        assert!(DeviceKey::from_hex(&format!("{}zz", &hex[..62])).is_err());
    }

    #[test]
    fn device_id_validation() {
        assert!(DeviceId::parse("abc-DEF-123").is_ok());
        assert!(DeviceId::parse(&"a".repeat(64)).is_ok());
        assert!(DeviceId::parse(&"a".repeat(65)).is_err());
        assert!(DeviceId::parse("").is_err());
        assert!(DeviceId::parse("a b").is_err());
        assert!(DeviceId::parse("a_b").is_err());
        assert!(DeviceId::parse("é").is_err());
        let id = DeviceId::generate();
        assert_eq!(id.as_str().len(), 32);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<DeviceId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<DeviceId>("\"a/b\"").is_err());
    }

    #[test]
    fn stream_validation() {
        assert!(validate_stream("qc").is_ok());
        assert!(validate_stream("heartbeat").is_ok());
        assert!(validate_stream(&"a".repeat(32)).is_ok());
        assert!(validate_stream(&"a".repeat(33)).is_err());
        assert!(validate_stream("").is_err());
        assert!(validate_stream("QC").is_err());
        assert!(validate_stream("q c").is_err());
    }
}
