//! The outpost host: loads capability-restricted Wasm components and runs them.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view.
#![deny(missing_docs)]
// The exceptions are `runtime::cache::deserialize_own`, `dpapi` (Windows
// calls) and `trim` (madvise, malloc_trim, process counters); each says the
// invariant that makes it sound.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
pub mod diagnose;
#[cfg(windows)]
pub mod dpapi;
pub mod events;
pub mod grants;
pub mod metrics;
pub mod net;
pub mod runtime;
pub mod secret_file;
pub mod service;
pub mod store;
pub mod supervisor;
pub mod support;
pub mod trim;
pub mod untrusted;
pub mod update;
pub mod uplink;
pub mod watch;
