//! Small persistent key-value state private to this module (`outpost:agent/state`).
//!
//! Keys are 1..=256 bytes of UTF-8; keys and values count against the state
//! quota of the module's grant. A write is durable once it returns `Ok`; when it
//! returns an error nothing was changed.

use crate::bindings::agent::outpost::agent::state as wit;

/// Why a write was refused: over quota, invalid key, or the host could not
/// write durably.
pub use wit::StateError;

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Option<Vec<u8>> {
    wit::get(key)
}

/// The value under `key` as UTF-8 text; `None` if absent or not valid UTF-8.
pub fn get_string(key: &str) -> Option<String> {
    get(key).and_then(|bytes| String::from_utf8(bytes).ok())
}

/// Store `value` under `key`, replacing any previous value, durably.
pub fn set(key: &str, value: &[u8]) -> Result<(), StateError> {
    wit::set(key, value)
}

/// Store the text `value` under `key`, durably.
pub fn set_string(key: &str, value: &str) -> Result<(), StateError> {
    set(key, value.as_bytes())
}

/// Remove `key`; removing a missing key is not an error.
pub fn delete(key: &str) -> Result<(), StateError> {
    wit::delete(key)
}

/// Keys that start with `prefix`, in byte order (at most 1000).
pub fn keys(prefix: &str) -> Vec<String> {
    wit::keys(prefix)
}
