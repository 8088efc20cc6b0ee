//! Integration tests of outpost-signing: one binary, one module per concern.
#![forbid(unsafe_code)]

mod common;
mod format_spec;
mod interop;
mod policy;
mod round_trip;
mod structure;
mod tamper;
