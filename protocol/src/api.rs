//! HTTP API paths and messages.

use serde::{Deserialize, Serialize};

use crate::envelope::{EnvelopeHeader, open_bytes, parse_json, seal_bytes};
use crate::identity::{DeviceId, DeviceKey};
use crate::{ProtocolError, SoftwareStatus};

/// Enrolment endpoint (`POST`, JSON [`EnrollRequest`]).
pub const ENROLL_PATH: &str = "/v1/enroll";
/// Batch ingest endpoint (`POST`, envelope as `application/octet-stream`).
pub const INGEST_PATH: &str = "/v1/ingest";
/// Heartbeat endpoint (`POST`, heartbeat envelope).
pub const HEARTBEAT_PATH: &str = "/v1/heartbeat";
/// The stream name every heartbeat envelope carries.
pub const HEARTBEAT_STREAM: &str = "heartbeat";

/// Longest accepted text field of an [`EnrollRequest`], in bytes.
const MAX_FIELD: usize = 256;

/// A device asks to be enrolled. Sent once, over TLS.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EnrollRequest {
    /// Contact e-mail of the lab (personal data: encrypted at rest, never logged).
    pub email: String,
    /// Contact name (personal data: encrypted at rest, never logged).
    pub name: String,
    /// Instrument model, e.g. "XN-550".
    pub instrument_model: String,
    /// The lab's own identifier for the instrument.
    pub instrument_id: String,
    /// Instrument serial number.
    pub serial: String,
    /// The device key, 64 hex characters, generated on the device.
    pub device_key: String,
    /// Enrolment token (the reference cloud requires one unless it was
    /// started with anonymous enrolment).
    #[serde(default)]
    pub enrollment_token: Option<String>,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Personal data, the key and the token are not printed.
        f.debug_struct("EnrollRequest")
            .field("instrument_model", &self.instrument_model)
            .finish_non_exhaustive()
    }
}

impl EnrollRequest {
    /// Check the request: every text field non-empty and at most 256 bytes
    /// without control characters, the e-mail shaped `local@domain.tld`, the
    /// key 64 hex characters. The error names the field, never its content.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let fields = [
            ("email", &self.email),
            ("name", &self.name),
            ("instrument-model", &self.instrument_model),
            ("instrument-id", &self.instrument_id),
            ("serial", &self.serial),
        ];
        for (name, v) in fields {
            if v.trim().is_empty() || v.len() > MAX_FIELD || v.chars().any(char::is_control) {
                return Err(ProtocolError::Invalid(format!(
                    "{name} must be 1..={MAX_FIELD} bytes without control characters"
                )));
            }
        }
        if !email_shaped(&self.email) {
            return Err(ProtocolError::Invalid(
                "email is not an e-mail address".into(),
            ));
        }
        if self.device_key.len() != 64 || !self.device_key.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(ProtocolError::Invalid(
                "device-key must be 64 hex characters".into(),
            ));
        }
        if let Some(t) = &self.enrollment_token
            && t.len() > MAX_FIELD
        {
            return Err(ProtocolError::Invalid(format!(
                "enrollment-token must be at most {MAX_FIELD} bytes"
            )));
        }
        Ok(())
    }

    /// The device key of the request (after [`EnrollRequest::validate`]).
    pub fn key(&self) -> Result<DeviceKey, ProtocolError> {
        DeviceKey::from_hex(&self.device_key)
    }
}

fn email_shaped(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !e.chars().any(char::is_whitespace)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
}

/// The cloud's answer to a successful enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EnrollResponse {
    /// The id the device puts in every envelope from now on.
    pub device_id: DeviceId,
}

/// The cloud's answer to a stored batch or an accepted heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngestAck {
    /// The device the envelope came from.
    pub device_id: DeviceId,
    /// The envelope's sequence number.
    pub sequence: u64,
    /// True if it had been stored before (only in informational contexts;
    /// a duplicate ingest answers 409 [`ErrorCode::Duplicate`]).
    pub duplicate: bool,
}

/// Machine-readable error codes of [`ApiError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Malformed request (400).
    BadRequest,
    /// The envelope's structure is wrong (400).
    BadEnvelope,
    /// The envelope did not authenticate under the device's key (400).
    AuthenticationFailed,
    /// The device id is not enrolled (401).
    UnknownDevice,
    /// This (device, sequence) is already stored with *different* content
    /// (409): the device must send the batch again under a new sequence (a
    /// device database restored from a backup re-uses sequences).
    SequenceConflict,
    /// Body over the server's limit (413).
    TooLarge,
    /// Enrolment token missing or wrong (401).
    UnauthorizedEnrollment,
    /// Slow down; see `Retry-After` (429).
    RateLimited,
    /// Try later; see `Retry-After` (503).
    Unavailable,
    /// Heartbeat sequence not newer than the last accepted (409).
    StaleHeartbeat,
    /// The request body did not arrive in time (408); the connection is
    /// closed. A transient failure: send again.
    RequestTimeout,
}

impl ErrorCode {
    /// The kebab-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::BadEnvelope => "bad-envelope",
            ErrorCode::AuthenticationFailed => "authentication-failed",
            ErrorCode::UnknownDevice => "unknown-device",
            ErrorCode::SequenceConflict => "sequence-conflict",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::UnauthorizedEnrollment => "unauthorized-enrollment",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::StaleHeartbeat => "stale-heartbeat",
            ErrorCode::RequestTimeout => "request-timeout",
        }
    }

    /// The HTTP status the reference cloud answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::BadEnvelope | ErrorCode::AuthenticationFailed => 400,
            ErrorCode::UnknownDevice | ErrorCode::UnauthorizedEnrollment => 401,
            ErrorCode::SequenceConflict | ErrorCode::StaleHeartbeat => 409,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
        }
    }
}

/// Body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiError {
    /// What went wrong, machine-readable.
    pub error: ErrorCode,
    /// Human-readable detail (never payload content).
    pub message: String,
}

/// Plaintext of a heartbeat envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HeartbeatBody {
    /// The agent considers itself online (uplink working).
    pub online: bool,
    /// Software status of the instruments' components.
    pub software: Vec<SoftwareStatus>,
    /// Batches waiting in the device's spool.
    pub queued_batches: u64,
    /// Batches the device dropped (e.g. refused by the PHI guard), cumulative.
    pub dropped: u64,
}

/// Seal a heartbeat: an envelope on stream [`HEARTBEAT_STREAM`] whose
/// plaintext is the JSON of `body`. `sequence` must increase with every
/// heartbeat (the host uses unix milliseconds).
pub fn seal_heartbeat(
    key: &DeviceKey,
    device: &DeviceId,
    sequence: u64,
    body: &HeartbeatBody,
) -> Result<Vec<u8>, ProtocolError> {
    let json = serde_json::to_vec(body).map_err(|e| ProtocolError::body(&e))?;
    seal_bytes(key, device, HEARTBEAT_STREAM, sequence, &json)
}

/// Open a heartbeat envelope; refuses ([`ProtocolError::BadStream`]) an
/// envelope on any other stream.
pub fn open_heartbeat(
    key: &DeviceKey,
    bytes: &[u8],
) -> Result<(EnvelopeHeader, HeartbeatBody), ProtocolError> {
    let (header, plain, _) = open_bytes(key, bytes)?;
    if header.stream != HEARTBEAT_STREAM {
        return Err(ProtocolError::BadStream);
    }
    Ok((header, parse_json(&plain)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> EnrollRequest {
        EnrollRequest {
            email: "lab@example.org".into(),
            name: "Jane Lab".into(),
            instrument_model: "XN-550".into(),
            instrument_id: "H1".into(),
            serial: "12345".into(),
            device_key: DeviceKey::generate().to_hex(),
            enrollment_token: None,
        }
    }

    #[test]
    fn enroll_validation() {
        assert!(req().validate().is_ok());
        for bad in ["", "a", "a@b", "@b.c", "a@.c", "a@b.", "a b@c.d", "a@b@c.d"] {
            let mut r = req();
            r.email = bad.into();
            assert!(r.validate().is_err(), "{bad}");
        }
        let mut r = req();
        r.name = "x".repeat(257);
        assert!(r.validate().is_err());
        let mut r = req();
        r.serial = String::new();
        assert!(r.validate().is_err());
        let mut r = req();
        r.device_key = "zz".repeat(32);
        assert!(r.validate().is_err());
        let r = req();
        assert!(!format!("{r:?}").contains("lab@example.org"));
        let json = serde_json::to_value(req()).unwrap();
        assert!(json.get("instrument-model").is_some());
        assert!(json.get("enrollment-token").is_some());
    }

    #[test]
    fn error_codes_kebab() {
        let e = ApiError {
            error: ErrorCode::UnauthorizedEnrollment,
            message: "m".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["error"], "unauthorized-enrollment");
        for c in [
            ErrorCode::BadRequest,
            ErrorCode::BadEnvelope,
            ErrorCode::AuthenticationFailed,
            ErrorCode::UnknownDevice,
            ErrorCode::SequenceConflict,
            ErrorCode::TooLarge,
            ErrorCode::UnauthorizedEnrollment,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::StaleHeartbeat,
            ErrorCode::RequestTimeout,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }

    #[test]
    fn heartbeat_round_trip() {
        let key = DeviceKey::generate();
        let dev = DeviceId::parse("dev-1").unwrap();
        let body = HeartbeatBody {
            online: true,
            software: vec![],
            queued_batches: 3,
            dropped: 1,
        };
        let env = seal_heartbeat(&key, &dev, 1_700_000_000_000, &body).unwrap();
        let (h, b) = open_heartbeat(&key, &env).unwrap();
        assert_eq!(h.stream, HEARTBEAT_STREAM);
        assert_eq!(h.sequence, 1_700_000_000_000);
        assert_eq!(b, body);
        let other = seal_bytes(&key, &dev, "qc", 1, &serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(open_heartbeat(&key, &other), Err(ProtocolError::BadStream));
    }
}
