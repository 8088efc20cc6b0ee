//! The outpost host: loads capability-restricted Wasm components and runs them.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view.
#![deny(missing_docs)]

pub mod agent;
pub mod cli;
pub mod config;
pub mod events;
pub mod grants;
pub mod net;
pub mod runtime;
pub mod store;
pub mod supervisor;
