//! Turns what lies on an instrument controller PC (ASTM transcripts, HL7 v2
//! messages, instrument logs) into typed uplink records that carry device data
//! only: QC results, instrument events, maintenance and software status.
//!
//! Architecture Invariant: no parser in this crate copies a patient field into a
//! record. Patient segments (ASTM P, HL7 PID/PD1/NK1/PV1) are dropped whole,
//! results are produced only for quality-control runs, and every piece of free
//! text that reaches a record goes through [`redact::redact`] first.
//!
//! Architecture Invariant: pure `std`, no threads, no I/O, no `unsafe`; the crate
//! builds for `wasm32-wasip2` so the collector module can use it unchanged.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod astm;
pub mod csvjson;
pub mod hl7;
pub mod logs;
pub mod names;
/// The source text of the redaction patterns.
///
/// This file is compiled twice: as the module `patterns` of
/// `outpost-collector-core`, where [`crate::redact`] turns each pattern into a
/// `regex::Regex` and a bounded backtracker, and by `include!` into the
/// crate's build script, which compiles the ASCII form of each pattern
/// (`patterns::ascii_form`) into a forward and a reverse dense DFA that
/// `redact` embeds and uses to find matches in ASCII text. Keeping one source
/// for both means the two cannot drift apart; the `dfas_agree_with_the_patterns`
/// and `dfa_hits_are_the_regex_captures` tests check that they do not.
mod patterns;
pub mod records;
pub mod redact;
pub mod scan;

pub use records::{
    Heartbeat, InstallState, Instrument, InstrumentEvent, MaintenanceEvent, QcResult, Record,
    Severity, SoftwareStatus, Timestamp,
};

/// What a parser saw and threw away, so the caller can report data quality
/// without ever seeing the dropped content.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ParseStats {
    /// Transport frames read (ASTM E1381) or messages read (HL7).
    pub frames: usize,
    /// Frames with a bad checksum, bad frame number, or truncated.
    pub malformed_frames: usize,
    /// Records or segments read.
    pub records: usize,
    /// Records or segments that could not be understood.
    pub malformed_records: usize,
    /// Patient records or segments dropped whole (ASTM P, HL7 PID/PD1/NK1/PV1...).
    pub patient_records_dropped: usize,
    /// Comment records, notes and free-text observations dropped.
    pub comments_dropped: usize,
    /// Results dropped because they belong to a patient sample, not a QC run.
    pub patient_results_dropped: usize,
}

/// Records produced by one parse, plus counters of what was dropped.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ParseOutput {
    /// Device records safe to upload.
    pub records: Vec<Record>,
    /// What was read, dropped or malformed.
    pub stats: ParseStats,
}

/// A xorshift64 generator for the unit tests' generated inputs: the same
/// sequence for the same seed on every run.
#[cfg(test)]
pub(crate) fn test_rng(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
