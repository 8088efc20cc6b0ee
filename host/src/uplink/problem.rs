//! The setting-problem codes the uplink raises, in one place (the stable
//! `code` of `HostEvent::SettingProblem`; the notifier shows each as
//! `setting:<code>`).

/// Uploads or heartbeats keep failing without the server's TLS being at
/// fault: no connection, timeouts, 5xx, answers that are not the cloud's.
/// Raised after [`FAILURES_BEFORE_PROBLEM`] failed attempts in a row.
pub const UNREACHABLE: &str = "uplink-unreachable";
/// The cloud's server was reached but the TLS handshake failed (unknown CA,
/// expired certificate, wrong name, no common version or cipher). Raised
/// after [`FAILURES_BEFORE_PROBLEM`] failed attempts in a row.
pub const TLS_REFUSED: &str = "uplink-tls-refused";
/// The cloud answered again after [`UNREACHABLE`] or [`TLS_REFUSED`] (or
/// [`REJECTED`]) was raised.
pub const RECOVERED: &str = "uplink-recovered";
/// The cloud refuses this device (401, 403, other 4xx): nothing is deleted.
pub const REJECTED: &str = "uplink-rejected";
/// Prefix of `uplink-dead-letter:<stream>`: the cloud refused one batch.
pub const DEAD_LETTER_PREFIX: &str = "uplink-dead-letter:";
/// Prefix of `uplink-guard-refused:<module>`: the PHI guard refused a batch.
pub const GUARD_REFUSED_PREFIX: &str = "uplink-guard-refused:";
/// Prefix of `uplink-dropped:<stream>`: the spool was full, oldest dropped.
pub const DROPPED_PREFIX: &str = "uplink-dropped:";
/// The spool is full of batches that are never dropped.
pub const SPOOL_FULL: &str = "uplink-spool-full";
/// The spool cannot be written (disk full, database error).
pub const SPOOL_UNWRITABLE: &str = "uplink-spool-unwritable";

/// Failed attempts in a row (each after its back-off) before
/// [`UNREACHABLE`] or [`TLS_REFUSED`] is raised: one lost heartbeat is not
/// worth a notification, three in a row are.
pub const FAILURES_BEFORE_PROBLEM: u32 = 3;
