//! The vendor's reference fleet server for outpost: enrolment, sealed-batch
//! ingest and heartbeats over HTTPS, with every device detail and every batch
//! encrypted at rest. Used by tests and the demo; depends on
//! [`outpost_protocol`] only (never on the host).
//!
//! * [`Server::start`] binds, serves TLS 1.2/1.3 (rustls, ring) and returns a
//!   [`RunningServer`].
//! * [`Store`] is the SQLite store and the read-back API for support staff.
//! * [`TestPki`] makes a CA and a server certificate for tests.
//!
//! The HTTP semantics are those documented in [`outpost_protocol`]. Counters
//! (see [`store::COUNTER_REASONS`]): `accepted` (batch stored), `heartbeat`
//! (heartbeat accepted), `replay` (duplicate batch), and one per refusal
//! reason. Logs carry device id, stream, sequence, sizes and reasons — never
//! payloads, keys, e-mail addresses, names or serial numbers.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod atrest;
pub mod pki;
pub mod server;
pub mod store;

pub use pki::TestPki;
pub use server::{RunningServer, Server, ServerConfig, tls_config};
pub use store::{
    DeviceInfo, DeviceStatus, HeartbeatOutcome, InsertOutcome, NewDevice, Store, StoredBatch,
};
