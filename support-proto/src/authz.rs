//! The seam with the host's support broker: the PC side asks an
//! [`Authorizer`] for a challenge and then for a decision on each connection
//! attempt. The broker (in the host) checks the one-time password with its
//! lock-out, verifies the staff credential and the signature over
//! [`challenge_message`] (one format, defined in `outpost-signing`: the
//! session id, the PC's challenge and the channel binding), asks the session-policy module and the person at
//! the PC, and answers with exactly the approved permissions.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use outpost_signing::support::{CHANNEL_BINDING_BYTES, Permission, challenge_message};

/// What the engineer presented, for the broker to decide on. `Debug` never
/// prints the password.
#[derive(Clone)]
pub struct ConnectAttempt {
    /// The session id the engineer asked the relay for.
    pub session_id: String,
    /// The one-time password the engineer typed (the broker compares it in
    /// constant time).
    pub password: String,
    /// The engineer's staff credential, as the engineer sent it (opaque here;
    /// the broker verifies it against the support authority's key).
    pub credential: Vec<u8>,
    /// Ed25519 signature by the credential's key over
    /// [`challenge_message`]`(session_id, challenge, channel_binding)`.
    pub challenge_signature: Vec<u8>,
    /// The Noise handshake hash after the PC's message: binds the signature
    /// to this one end-to-end channel (a relay cannot forward it elsewhere).
    pub channel_binding: [u8; 32],
    /// The permissions the engineer asks for (deduplicated, sorted).
    pub requested: Vec<Permission>,
    /// Where the attempt came from, for the audit (the relay's report of the
    /// engineer's address, e.g. `relay 203.0.113.7:50122`).
    pub connection: String,
}

impl std::fmt::Debug for ConnectAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectAttempt")
            .field("session_id", &self.session_id)
            .field("password", &"<redacted>")
            .field("credential_len", &self.credential.len())
            .field("requested", &self.requested)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// The broker's yes: exactly the permissions the person approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Approved permissions (a subset of the requested ones).
    pub permissions: Vec<Permission>,
    /// The engineer, as named by the verified credential.
    pub engineer: String,
    /// The session ends after this long without traffic.
    #[serde(with = "millis")]
    pub idle_timeout: Duration,
    /// The session ends after this long in any case.
    #[serde(with = "millis")]
    pub total_timeout: Duration,
}

impl Grant {
    /// Whether `p` was approved.
    pub fn allows(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }
}

/// Why a connection attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalCode {
    /// No such session (unknown, ended or already used).
    UnknownSession,
    /// Wrong one-time password.
    BadPassword,
    /// Too many wrong passwords: wait, or the password is retired.
    LockedOut,
    /// The staff credential is invalid, expired, of another region or of
    /// another authority, or the challenge signature does not verify.
    BadCredential,
    /// The session-policy module refused (or trapped, hung or is absent).
    Policy,
    /// The person at the PC refused, or did not answer in time.
    NotApproved,
    /// Anything else on the PC side (the message says what).
    Internal,
}

/// A refusal with its reason. The message is shown to the engineer: it
/// names what was wrong but never holds the password or a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Refusal {
    /// The kind of refusal.
    pub code: RefusalCode,
    /// What was wrong, in words.
    pub message: String,
}

impl Refusal {
    /// A refusal of kind `code`.
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// The broker, as the PC side of the channel sees it. Object safe (use it as
/// `Arc<dyn Authorizer>`).
#[async_trait::async_trait]
pub trait Authorizer: Send + Sync {
    /// A fresh 32-byte challenge for this session id (the engineer signs it,
    /// with the session id and the channel binding, by its credential key:
    /// [`challenge_message`]).
    /// The broker keeps it and verifies the signature in
    /// [`Authorizer::connect`] against the challenge it issued, never one the
    /// engineer names.
    fn challenge(&self, session_id: &str) -> Result<[u8; 32], Refusal>;
    /// Decide the attempt: the granted permissions (exactly what the person
    /// approved), or a refusal.
    async fn connect(&self, attempt: ConnectAttempt) -> Result<Grant, Refusal>;
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
