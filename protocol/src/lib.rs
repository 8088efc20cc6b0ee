//! Wire types shared by the outpost host (the device agent) and the vendor's
//! fleet cloud: device identity, the typed device records, the sealed
//! envelope that carries them, and the HTTP API messages.
//!
//! This crate depends on neither the host nor the cloud (nor tokio, nor
//! wasmtime); both sides depend on it, so the wire format is defined and
//! tested exactly once.
//!
//! # Identity
//!
//! * [`DeviceKey`]: 32 bytes from the operating system's RNG, generated *on the
//!   device* at enrolment and sent once (hex, 64 characters) in the
//!   [`EnrollRequest`] over TLS. It is the AES-256-GCM key of every envelope the
//!   device sends. It is zeroized on drop, never printed (`Debug` shows
//!   `DeviceKey(<redacted>)`, there is no `Display`).
//! * [`DeviceId`]: issued by the cloud at enrolment; 1 to 64 characters of
//!   `[A-Za-z0-9-]` (the reference cloud issues 32 lowercase hex characters).
//!
//! # Records
//!
//! [`Record`] and its arms mirror the WIT `outpost:agent/uplink` types field for
//! field. JSON form: field names in kebab-case, unknown fields refused, and a
//! record is an object with a `"kind"` member naming its arm (`qc`,
//! `maintenance`, `event`, `software`, `heartbeat`) next to the arm's fields:
//!
//! ```json
//! {"kind":"qc","instrument":{"model":"XN-550","serial":"12345"},
//!  "analyte":"WBC","value":"7.1","unit":"10*3/uL","reference-range":"6.5-7.5",
//!  "flags":[],"control-lot":"L1","control-level":"1",
//!  "run-time":{"seconds":1700000000,"nanoseconds":0}}
//! ```
//!
//! A batch is a [`BatchBody`]: `{"created-at": <unix seconds>, "records": [...]}`.
//!
//! # The sealed envelope (byte by byte)
//!
//! Every upload (a batch, or a heartbeat) travels as one envelope. All integers
//! are unsigned; multi-byte integers are big-endian.
//!
//! | offset | length | content |
//! | --- | --- | --- |
//! | 0 | 4 | magic `b"OPE1"` (`4F 50 45 31`); the `1` is the format version |
//! | 4 | 1 | `S` = length of the stream name, 1..=32 |
//! | 5 | `S` | stream name, ASCII `[a-z0-9-]` |
//! | 5+S | 1 | `D` = length of the device id, 1..=64 |
//! | 6+S | `D` | device id, ASCII `[A-Za-z0-9-]` |
//! | 6+S+D | 8 | sequence number, u64 big-endian |
//! | 14+S+D | 12 | AES-GCM nonce (96 bits from the OS RNG) |
//! | 26+S+D | rest (≥ 16) | AES-256-GCM ciphertext, 16-byte tag appended |
//!
//! * **Header and AAD.** Bytes `0 .. 14+S+D` (magic through sequence) are the
//!   *header*. The header is the AES-GCM additional authenticated data, so the
//!   device id, the stream and the sequence are bound to the ciphertext: moving
//!   a ciphertext under another header (other device, stream or sequence) fails
//!   authentication. The nonce is not in the AAD; it is an input of GCM itself,
//!   so changing it also fails authentication.
//! * **Key.** The device's [`DeviceKey`], AES-256-GCM.
//! * **Plaintext.** A zstd frame (level 3) of the JSON of the body: for a batch
//!   the [`BatchBody`] as `serde_json` writes it (fields in declaration order,
//!   no whitespace); for a heartbeat a [`HeartbeatBody`]. Compression happens
//!   before encryption (ciphertext does not compress); the length of the
//!   compressed data is visible to an observer, as the length of any TLS record
//!   would be.
//! * **Nonce.** 96 random bits per envelope, from the OS RNG, *not* derived from
//!   the sequence: if a device's database is restored from a backup, the device
//!   reuses sequence numbers with different content, and a sequence-derived
//!   nonce would then repeat under the same key — which breaks GCM (it leaks the
//!   XOR of the plaintexts and the authentication key). With random nonces the
//!   probability of a repeat stays below 2⁻³² for up to 2³² envelopes per key.
//! * **Limits.** An envelope is at most [`MAX_ENVELOPE_BYTES`] (16 MiB); the
//!   decompressed plaintext at most [`MAX_PLAINTEXT_BYTES`] (64 MiB). The
//!   plaintext limit is enforced *while* decompressing (a bounded reader), so a
//!   small envelope that inflates to gigabytes (a zip bomb) is refused after
//!   at most the limit was produced.
//! * **Errors.** Every authentication problem — wrong key, any changed byte of
//!   the header, nonce, ciphertext or tag — is the one error
//!   [`ProtocolError::AuthenticationFailed`]; the receiver learns nothing about
//!   *what* was wrong (no oracle). Structural problems found before the key is
//!   used (magic, lengths, stream or device-id syntax) have their own variants.
//!   Decompression and JSON are only looked at after authentication succeeded.
//!
//! # HTTP API
//!
//! All over HTTPS (TLS 1.2 or 1.3, certificate verified).
//!
//! * `POST` [`ENROLL_PATH`] (`/v1/enroll`), `application/json` [`EnrollRequest`]
//!   → `200` [`EnrollResponse`]; `400` `bad-request`; `401`
//!   `unauthorized-enrollment` (the cloud requires an enrolment token and it was
//!   missing or wrong); `429` `rate-limited` with `Retry-After` (seconds) once
//!   an address sent too many wrong tokens.
//! * `POST` [`INGEST_PATH`] (`/v1/ingest`), body = one envelope as
//!   `application/octet-stream`:
//!   * `200` + [`IngestAck`] naming the device and sequence: stored durably
//!     — now (`duplicate: false`) or earlier, with the same content
//!     (`duplicate: true`, a retry or a replay; the server counts it as a
//!     replay and stores nothing). Only this answer lets the host drop the
//!     batch.
//!   * `409` + [`ApiError`] with [`ErrorCode::SequenceConflict`]: this
//!     (device, sequence) is stored with different content (the device's
//!     database was restored from a backup); the host sends the batch again
//!     under a new sequence.
//!   * `401` `unknown-device`: the device id in the header is not enrolled.
//!   * `400` `bad-envelope` (structure) or `authentication-failed` (wrong key,
//!     tampered).
//!   * `413` `too-large`: over the server's body limit.
//!   * `429` `rate-limited` / `503` `unavailable`: try later; may carry
//!     `Retry-After` (seconds).
//!   * `408` `request-timeout` (any endpoint): the body did not arrive in
//!     time; the server closes the connection. Send again.
//! * `POST` [`HEARTBEAT_PATH`] (`/v1/heartbeat`), body = an envelope on stream
//!   [`HEARTBEAT_STREAM`] whose plaintext is a [`HeartbeatBody`] (see
//!   [`seal_heartbeat`], [`open_heartbeat`]). Its sequence is a monotonically
//!   increasing counter (the host uses unix milliseconds). `200` [`IngestAck`];
//!   `409` `stale-heartbeat` if the sequence is not greater than the last
//!   accepted heartbeat's; otherwise the same errors as ingest.
//!
//! Every error body is an [`ApiError`] `{"error": <code>, "message": <text>}`;
//! the message never repeats payload content.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod envelope;
mod error;
mod identity;
mod records;

pub use api::{
    ApiError, ENROLL_PATH, EnrollRequest, EnrollResponse, ErrorCode, HEARTBEAT_PATH,
    HEARTBEAT_STREAM, HeartbeatBody, INGEST_PATH, IngestAck, open_heartbeat, seal_heartbeat,
};
pub use envelope::{
    EnvelopeHeader, MAGIC, MAX_ENVELOPE_BYTES, MAX_PLAINTEXT_BYTES, NONCE_LEN, Opened, TAG_LEN,
    ZSTD_LEVEL, compress, decompress_bounded, open, open_bytes, open_compressed, seal, seal_bytes,
    seal_compressed,
};
pub use error::ProtocolError;
pub use identity::{DeviceId, DeviceKey, MAX_STREAM_LEN, validate_stream};
pub use records::{
    BatchBody, Heartbeat, InstallState, Instrument, InstrumentEvent, MaintenanceEvent,
    NotificationState, NotificationStatus, QcResult, Record, Severity, SoftwareStatus,
    SupportAuditEntry, SupportAuditFile, Timestamp,
};
