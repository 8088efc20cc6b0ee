//! Diagnostic logging into the host's log (`outpost:agent/log`).
//!
//! The host tags each line with the module's name and cuts lines longer than
//! 4096 bytes. Never log payloads or anything that could contain patient data.

use crate::bindings::agent::outpost::agent::log::write as wit_write;
use crate::types::Severity;

/// Write one line at `level`.
pub fn write(level: Severity, message: &str) {
    wit_write(level, message);
}

/// Write one line at [`Severity::Debug`].
pub fn debug(message: &str) {
    write(Severity::Debug, message);
}

/// Write one line at [`Severity::Info`].
pub fn info(message: &str) {
    write(Severity::Info, message);
}

/// Write one line at [`Severity::Notice`].
pub fn notice(message: &str) {
    write(Severity::Notice, message);
}

/// Write one line at [`Severity::Warning`].
pub fn warn(message: &str) {
    write(Severity::Warning, message);
}

/// Write one line at [`Severity::Error`].
pub fn error(message: &str) {
    write(Severity::Error, message);
}
