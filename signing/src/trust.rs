//! The trust store: which publisher keys may sign modules, and how many
//! signatures each module name needs.
//!
//! The host embeds it in its config as the `[trust]` table:
//!
//! ```toml
//! [trust]
//! # Modules signed with a key marked `development = true` are refused unless
//! # this is true. Never set it on a production PC.
//! allow-development-key = false
//! # Key ids (24 hex digits) that are refused even if listed under `keys`.
//! revoked = ["0123456789abcdef01234567"]
//!
//! [[trust.keys]]
//! name = "vendor-release-2025"          # a-z, 0-9, '-'; shown in errors and audit
//! public-key = "d75a9801…511a"          # 64 hex digits (32-byte ed25519 key)
//! not-before = "2025-01-01T00:00:00Z"   # optional; RFC 3339 UTC string …
//! not-after = 1830297600                # … or Unix seconds (inclusive bounds)
//!
//! [[trust.keys]]
//! name = "security-review"
//! public-key = "…"
//!
//! [[trust.keys]]
//! name = "workspace-development"
//! public-key = "…"
//! development = true                    # refused unless allow-development-key
//!
//! # Distinct trusted signers a module needs, per module name (default 1).
//! [trust.thresholds]
//! session-policy = 2
//! ```
//!
//! Times: `not-before` and `not-after` accept Unix seconds (an integer), an
//! RFC 3339 string in UTC (`"2025-01-01T00:00:00Z"`, fractional seconds
//! allowed) or a bare TOML datetime in UTC. A key is valid at `now` when
//! `not-before <= now <= not-after`. The verifier takes `now` as an argument;
//! the trust store never reads the clock.
//!
//! Deserialisation validates the whole store (unique names and keys, valid
//! windows, thresholds between 1 and the number of keys), so a `TrustStore`
//! value is always well-formed.

use crate::keys::{KeyError, KeyId, public_key_from_hex, public_key_to_hex};
use crate::manifest::valid_name;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a trust store was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustStoreError {
    /// The text is not a valid trust store (syntax, types or unknown fields).
    #[error("trust store is not valid: {0}")]
    Parse(String),
    /// A key name is not `[a-z0-9-]`, 1..=64 bytes.
    #[error("trust store key name {0:?} must be 1..=64 bytes of a-z, 0-9 and '-'")]
    InvalidKeyName(String),
    /// Two keys share a name.
    #[error("trust store names key {0:?} twice")]
    DuplicateKeyName(String),
    /// One public key is listed twice.
    #[error("trust store lists public key {key_id} twice (as {first:?} and {second:?})")]
    DuplicateKey {
        /// The key's id.
        key_id: KeyId,
        /// The first entry's name.
        first: String,
        /// The second entry's name.
        second: String,
    },
    /// A public key does not parse.
    #[error("trust store key {name:?} has an invalid public key: {reason}")]
    InvalidPublicKey {
        /// The entry's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A validity bound does not parse, or the window is empty.
    #[error("trust store key {name:?} has an invalid validity window: {reason}")]
    InvalidWindow {
        /// The entry's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A threshold is zero, larger than the number of keys, or names no valid module.
    #[error("trust store threshold for module {module:?} is not valid: {reason}")]
    InvalidThreshold {
        /// The module name.
        module: String,
        /// What is wrong.
        reason: String,
    },
}

/// One publisher key the operator trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    name: String,
    key: VerifyingKey,
    id: KeyId,
    not_before: Option<SystemTime>,
    not_after: Option<SystemTime>,
    development: bool,
}

impl TrustedKey {
    /// A key named `name`, valid at all times, not a development key.
    pub fn new(name: &str, key: VerifyingKey) -> TrustedKey {
        TrustedKey {
            name: name.to_string(),
            id: KeyId::of(&key),
            key,
            not_before: None,
            not_after: None,
            development: false,
        }
    }

    /// Only valid from `t` on (inclusive).
    pub fn with_not_before(mut self, t: SystemTime) -> TrustedKey {
        self.not_before = Some(t);
        self
    }

    /// Only valid until `t` (inclusive).
    pub fn with_not_after(mut self, t: SystemTime) -> TrustedKey {
        self.not_after = Some(t);
        self
    }

    /// Mark as the workspace development key (refused unless the store allows it).
    pub fn with_development(mut self, development: bool) -> TrustedKey {
        self.development = development;
        self
    }

    /// The operator's name for the key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The key id derived from the public key.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// Start of the validity window, if any.
    pub fn not_before(&self) -> Option<SystemTime> {
        self.not_before
    }

    /// End of the validity window, if any.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.not_after
    }

    /// Whether this is a development key.
    pub fn is_development(&self) -> bool {
        self.development
    }
}

/// The operator's trust decisions. Deserialises from the `[trust]` table (see
/// the module docs); the default trusts nothing and refuses development keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTrustStore", into = "RawTrustStore")]
pub struct TrustStore {
    allow_development_key: bool,
    keys: Vec<TrustedKey>,
    revoked: BTreeSet<KeyId>,
    thresholds: BTreeMap<String, u32>,
}

impl TrustStore {
    /// An empty store: trusts no key, refuses development keys, threshold 1.
    pub fn new() -> TrustStore {
        TrustStore::default()
    }

    /// Parse and validate the contents of a `[trust]` table given as TOML text
    /// (the table's body, without the `[trust]` header).
    pub fn from_toml(text: &str) -> Result<TrustStore, TrustStoreError> {
        toml::from_str(text).map_err(|e| TrustStoreError::Parse(e.message().to_string()))
    }

    /// Trust `key`. Refuses a duplicate name or public key.
    pub fn add_key(&mut self, key: TrustedKey) -> Result<(), TrustStoreError> {
        if !valid_name(&key.name) {
            return Err(TrustStoreError::InvalidKeyName(key.name));
        }
        if let (Some(a), Some(b)) = (key.not_before, key.not_after)
            && a > b
        {
            return Err(TrustStoreError::InvalidWindow {
                name: key.name,
                reason: "not-before is after not-after".to_string(),
            });
        }
        for k in &self.keys {
            if k.name == key.name {
                return Err(TrustStoreError::DuplicateKeyName(key.name));
            }
            if k.id == key.id {
                return Err(TrustStoreError::DuplicateKey {
                    key_id: key.id,
                    first: k.name.clone(),
                    second: key.name,
                });
            }
        }
        self.keys.push(key);
        Ok(())
    }

    /// Refuse signatures by `key_id` from now on, even if the key is listed.
    pub fn revoke(&mut self, key_id: KeyId) {
        self.revoked.insert(key_id);
    }

    /// Require `n` distinct trusted signers for modules named `module`.
    pub fn set_threshold(&mut self, module: &str, n: u32) -> Result<(), TrustStoreError> {
        let invalid = |reason: String| TrustStoreError::InvalidThreshold {
            module: module.to_string(),
            reason,
        };
        if !valid_name(module) {
            return Err(invalid("not a valid module name".to_string()));
        }
        if n == 0 {
            return Err(invalid("must be at least 1".to_string()));
        }
        if n as usize > self.keys.len() {
            return Err(invalid(format!(
                "{n} signers required but only {} keys are trusted",
                self.keys.len()
            )));
        }
        self.thresholds.insert(module.to_string(), n);
        Ok(())
    }

    /// Allow (or refuse) modules signed by keys marked `development`.
    /// Only for developer machines and tests.
    pub fn set_allow_development_key(&mut self, allow: bool) {
        self.allow_development_key = allow;
    }

    /// Whether keys marked `development` are accepted.
    pub fn allow_development_key(&self) -> bool {
        self.allow_development_key
    }

    /// Every trusted key, in configuration order.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// The trusted key with this id, if any (revoked keys included).
    pub fn key(&self, id: &KeyId) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.id == *id)
    }

    /// Whether `id` is on the revocation list.
    pub fn is_revoked(&self, id: &KeyId) -> bool {
        self.revoked.contains(id)
    }

    /// The revocation list.
    pub fn revoked(&self) -> impl Iterator<Item = &KeyId> {
        self.revoked.iter()
    }

    /// Ids of the keys marked `development`.
    pub fn development_key_ids(&self) -> Vec<KeyId> {
        self.keys
            .iter()
            .filter(|k| k.development)
            .map(|k| k.id)
            .collect()
    }

    /// Distinct trusted signers a module named `module` needs (default 1).
    pub fn threshold(&self, module: &str) -> u32 {
        self.thresholds.get(module).copied().unwrap_or(1)
    }
}

/// The serde shape of [`TrustStore`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawTrustStore {
    #[serde(default)]
    allow_development_key: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    revoked: Vec<KeyId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    keys: Vec<RawTrustedKey>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    thresholds: BTreeMap<String, u32>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawTrustedKey {
    name: String,
    public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_before: Option<RawTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_after: Option<RawTime>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    development: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawTime {
    Unix(u64),
    Text(String),
    Toml(toml::value::Datetime),
}

fn parse_time(t: &RawTime) -> Result<SystemTime, String> {
    match t {
        RawTime::Unix(s) => UNIX_EPOCH
            .checked_add(Duration::from_secs(*s))
            .ok_or_else(|| format!("{s} is out of range")),
        RawTime::Text(s) => humantime::parse_rfc3339(s).map_err(|e| {
            format!("{s:?} is not an RFC 3339 UTC time like 2025-01-01T00:00:00Z: {e}")
        }),
        RawTime::Toml(d) => {
            let s = d.to_string();
            humantime::parse_rfc3339(&s).map_err(|e| {
                format!("{s} is not a full UTC datetime like 2025-01-01T00:00:00Z: {e}")
            })
        }
    }
}

fn unix_seconds(t: SystemTime) -> RawTime {
    RawTime::Unix(
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

impl TryFrom<RawTrustStore> for TrustStore {
    type Error = TrustStoreError;
    fn try_from(raw: RawTrustStore) -> Result<TrustStore, TrustStoreError> {
        let mut store = TrustStore::new();
        store.allow_development_key = raw.allow_development_key;
        for k in raw.keys {
            let key = public_key_from_hex(&k.public_key).map_err(|e| {
                TrustStoreError::InvalidPublicKey {
                    name: k.name.clone(),
                    reason: match e {
                        KeyError::InvalidPublicKey(r) => r,
                        other => other.to_string(),
                    },
                }
            })?;
            let window = |t: &Option<RawTime>| {
                t.as_ref().map(parse_time).transpose().map_err(|reason| {
                    TrustStoreError::InvalidWindow {
                        name: k.name.clone(),
                        reason,
                    }
                })
            };
            let mut entry = TrustedKey::new(&k.name, key).with_development(k.development);
            entry.not_before = window(&k.not_before)?;
            entry.not_after = window(&k.not_after)?;
            store.add_key(entry)?;
        }
        store.revoked = raw.revoked.into_iter().collect();
        for (module, n) in raw.thresholds {
            store.set_threshold(&module, n)?;
        }
        Ok(store)
    }
}

impl From<TrustStore> for RawTrustStore {
    fn from(s: TrustStore) -> RawTrustStore {
        RawTrustStore {
            allow_development_key: s.allow_development_key,
            revoked: s.revoked.into_iter().collect(),
            keys: s
                .keys
                .into_iter()
                .map(|k| RawTrustedKey {
                    public_key: public_key_to_hex(&k.key),
                    name: k.name,
                    not_before: k.not_before.map(unix_seconds),
                    not_after: k.not_after.map(unix_seconds),
                    development: k.development,
                })
                .collect(),
            thresholds: s.thresholds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_signing_key;

    fn hexkey() -> (VerifyingKey, String) {
        let k = generate_signing_key().verifying_key();
        (k, public_key_to_hex(&k))
    }

    #[test]
    fn parses_the_documented_shape_with_all_time_forms() {
        let (a, ha) = hexkey();
        let (_, hb) = hexkey();
        let (c, hc) = hexkey();
        let text = format!(
            r#"
allow-development-key = false
revoked = ["0123456789abcdef01234567"]
[[keys]]
name = "release"
public-key = "{ha}"
not-before = "2025-01-01T00:00:00Z"
not-after = 1830297600
[[keys]]
name = "review"
public-key = "{hb}"
not-after = 2027-01-01T00:00:00Z
[[keys]]
name = "dev"
public-key = "{hc}"
development = true
[thresholds]
session-policy = 2
"#
        );
        let store = TrustStore::from_toml(&text).unwrap();
        assert!(!store.allow_development_key());
        assert_eq!(store.keys().len(), 3);
        let release = store.key(&KeyId::of(&a)).unwrap();
        assert_eq!(release.name(), "release");
        assert_eq!(
            release.not_before(),
            Some(UNIX_EPOCH + Duration::from_secs(1_735_689_600))
        );
        assert_eq!(
            release.not_after(),
            Some(UNIX_EPOCH + Duration::from_secs(1_830_297_600))
        );
        assert_eq!(
            store.keys()[1].not_after(),
            Some(UNIX_EPOCH + Duration::from_secs(1_798_761_600))
        );
        assert_eq!(store.development_key_ids(), vec![KeyId::of(&c)]);
        assert_eq!(store.threshold("session-policy"), 2);
        assert_eq!(store.threshold("collector"), 1);
        assert!(store.is_revoked(&"0123456789abcdef01234567".parse().unwrap()));
        // Serialises back into something that parses to the same store.
        let again = TrustStore::from_toml(&toml::to_string(&store).unwrap()).unwrap();
        assert_eq!(again, store);
    }

    #[test]
    fn refuses_bad_stores_naming_the_problem() {
        let (_, ha) = hexkey();
        let key = |name: &str, extra: &str| {
            format!("[[keys]]\nname = \"{name}\"\npublic-key = \"{ha}\"\n{extra}\n")
        };
        let (_, hb) = hexkey();
        let cases = [
            (
                format!(
                    "{}[[keys]]\nname = \"b\"\npublic-key = \"{hb}\"\n",
                    key("a", "")
                ),
                None,
            ),
            (key("a", "") + &key("a", ""), Some("twice")),
            (key("a", "") + &key("b", ""), Some("twice")),
            (key("Bad Name", ""), Some("key name")),
            (
                key("a", "not-before = 20\nnot-after = 10"),
                Some("not-before is after not-after"),
            ),
            (key("a", "not-after = \"tomorrow\""), Some("RFC 3339")),
            (key("a", "shell = true"), Some("unknown field")),
            (
                key("a", "") + "[thresholds]\ncollector = 0\n",
                Some("at least 1"),
            ),
            (
                key("a", "") + "[thresholds]\ncollector = 2\n",
                Some("only 1 keys"),
            ),
            (
                "[[keys]]\nname = \"a\"\npublic-key = \"00\"\n".to_string(),
                Some("invalid public key"),
            ),
            ("revoked = [\"xyz\"]\n".to_string(), Some("24 hex digits")),
            ("allow-dev-key = true\n".to_string(), Some("unknown field")),
        ];
        for (text, want) in cases {
            match (TrustStore::from_toml(&text), want) {
                (Ok(_), None) => {}
                (Err(e), Some(w)) => assert!(e.to_string().contains(w), "{w:?} not in {e}"),
                (r, w) => panic!("{text}: got {r:?}, wanted {w:?}"),
            }
        }
    }
}
