//! # outpost-sdk
//!
//! What an outpost module author depends on. Each module is a WebAssembly
//! component of one world of the `outpost:agent` WIT package (`wit/` at the
//! workspace root); enable the cargo feature of that world and only its bindings
//! are compiled:
//!
//! | feature | world | export trait | export macro |
//! | --- | --- | --- | --- |
//! | `collector` | `collector` | `Collector` | `export_collector!` |
//! | `notifier` | `notifier` | `Notifier` | `export_notifier!` |
//! | `session-policy` | `session-policy` | `SessionPolicy` | `export_session_policy!` |
//!
//! Every world gets [`log`], [`state`], [`host`] and [`fs`]; the collector adds
//! `uplink`, the notifier `notify`, and the
//! collector and session-policy worlds `http`.
//!
//! A module is a handful of lines: see the example on `Collector`.
//!
//! The crate also compiles for the host target so that module logic can be
//! unit-tested natively; calling a host import there panics (the generated
//! native stubs are unreachable).
//!
//! The generated bindings live in a hidden module and are not part of the API:
//! everything a module needs is re-exported here under idiomatic names.
#![deny(missing_docs)]
// Generated code needs `unsafe` for the canonical ABI; it is confined to the
// `bindings` module, which is the only place allowed to use it.
#![deny(unsafe_code)]

// Lets the generated export macros name this crate as `outpost_sdk` from inside it.
extern crate self as outpost_sdk;

#[doc(hidden)]
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings;

pub mod fs;
pub mod host;
pub mod log;
pub mod state;
pub mod types;

#[cfg(any(feature = "collector", feature = "session-policy"))]
pub mod http;

#[cfg(feature = "collector")]
mod collector;
#[cfg(feature = "collector")]
pub mod uplink;
#[cfg(feature = "collector")]
pub use collector::{CollectReport, Collector, Trigger};

#[cfg(feature = "notifier")]
mod notifier;
#[cfg(feature = "notifier")]
pub mod notify;
#[cfg(feature = "notifier")]
pub use notifier::{
    HostEvent, InstrumentAlert, ModuleFailure, Notifier, SettingProblem, UpdateOffer,
    UpdateRollback,
};

#[cfg(feature = "session-policy")]
mod session_policy;
#[cfg(feature = "session-policy")]
pub use session_policy::{Decision, Permission, SessionPolicy, SupportRequest};

pub use types::{Instrument, Severity, Timestamp};

/// Items the export macros expand to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "collector")]
    pub use crate::bindings::collector;
    #[cfg(feature = "notifier")]
    pub use crate::bindings::notifier;
    #[cfg(feature = "session-policy")]
    pub use crate::bindings::session_policy;
}
