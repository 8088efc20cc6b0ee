//! Read-only facts about this installation (`outpost:agent/host-info`).

use crate::bindings::agent::outpost::agent::host_info as wit;
use crate::types::Instrument;

/// The version of the outpost host running this module (a semver string).
pub fn agent_version() -> String {
    wit::agent_version()
}

/// The instruments the operator configured for this PC (may be empty).
pub fn instruments() -> Vec<Instrument> {
    wit::instruments()
}

/// The name this module was installed under (from its manifest).
pub fn module_name() -> String {
    wit::module_name()
}
