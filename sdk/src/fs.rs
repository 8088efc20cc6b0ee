//! The module's granted directories (`wasi:filesystem/preopens`).
//!
//! The host preopens each logical directory `NAME` of the grant read-only at the
//! guest path `/NAME`; use `std::fs` on those paths. Nothing else is reachable.

use crate::bindings::wasi::wasi::filesystem::preopens::get_directories;

/// Guest paths of the directories the host preopened for this module (e.g.
/// `/instrument-logs`), in the host's order. Empty without a directory grant.
pub fn directories() -> Vec<String> {
    get_directories()
        .into_iter()
        .map(|(_dir, path)| path)
        .collect()
}
