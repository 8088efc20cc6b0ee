//! The vendor's reference fleet server for outpost: enrolment, sealed-batch
//! ingest and heartbeats over HTTPS, with every device detail and every batch
//! encrypted at rest. Used by tests and the demo; depends on
//! [`outpost_protocol`] only (never on the host).
//!
//! * [`Server::start`] binds, serves TLS 1.2/1.3 (rustls, ring) and returns a
//!   [`RunningServer`].
//! * [`Store`] is the SQLite store and the read-back API for support staff.
//! * [`TestPki`] makes a CA and a server certificate for tests.
//! * [`Enrollment`] says who may enrol: a device presenting the
//!   [`EnrollmentToken`], or — asked for by name — anyone.
//! * [`repo`] makes and re-signs the TUF repository of module updates
//!   (`tough`) and serves it read-only under `/v1/updates/`.
//! * [`relay`] pairs a PC and a support engineer by session id and
//!   forwards their end-to-end encrypted frames, bytes only (#16).
//! * [`limits`] bounds what one client may cost: connection caps (global and
//!   per source address), slow-client timeouts, the lock-out of addresses
//!   that guess enrolment tokens.
//! * [`defence`] rate-limits requests per source and per device, blocks
//!   sources after repeated failures, replays and conflicts, and raises
//!   [`defence::Alert`]s; [`metrics`] serves the counters and alerts to the
//!   operator (`/metrics`, `/alerts`).
//! * [`scan`] passes every batch through ClamAV's clamd before it is stored;
//!   [`quarantine`] keeps the flagged ones, sealed, never served (#18).
//! * [`staff`] is the staff read-back API under `/staff/`: OpenID Connect
//!   sign-in, claims-based access by region, every access audited (#18).
//!
//! The HTTP semantics are those documented in [`outpost_protocol`]. Counters
//! (see [`store::COUNTER_REASONS`]): `accepted` (batch stored), `heartbeat`
//! (heartbeat accepted), `replay` (duplicate batch), and one per refusal
//! reason, among them `slow-client`, `connection-cap`, `address-cap`,
//! `enrollment-rate-limited`, `rate-limited` and `source-blocked` (counted
//! in memory, written every [`limits::COUNTER_FLUSH_MS`]), `quarantined`
//! (the scanner flagged a batch) and `scanner-unavailable` (no verdict:
//! answered 503). Logs carry device id, stream, sequence,
//! sizes, reasons and, for refused connections and enrolments, the peer
//! address — never payloads, keys, tokens, e-mail addresses, names or
//! serial numbers.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod atrest;
pub mod db;
pub mod defence;
pub mod limits;
pub mod metrics;
pub mod pki;
pub mod quarantine;
pub mod relay;
pub mod repo;
pub mod scan;
pub mod server;
pub mod staff;
pub mod store;
pub mod token;

pub use db::postgres::PostgresConfig;
pub use defence::{Alert, AlertKind, DefenceConfig, Rate};
pub use limits::{ConnectionLimits, EnrollGuessLimit};
pub use pki::TestPki;
pub use quarantine::QuarantineEntry;
pub use relay::{Relay, RelayConfig, RelayLimits, RunningRelay};
pub use scan::{ClamdAddr, ClamdConfig, ScanError, Scanner, Verdict};
pub use server::{RunningServer, Server, ServerConfig, tls_config};
pub use staff::StaffConfig;
pub use store::{
    DatabaseConfig, DeviceInfo, DeviceStatus, HeartbeatOutcome, InsertOutcome, NewDevice, Store,
    StoredBatch,
};
pub use token::{Enrollment, EnrollmentToken, TokenError};
