//! Shared vocabulary of the `outpost:agent/types` interface.

use crate::bindings::agent::outpost::agent::types as wit;

/// How serious something is (logs, instrument events, notifications), least
/// serious first.
pub use wit::Severity;

/// An instrument attached to this controller PC, as the operator configured it:
/// model and serial number (device data, never a person).
pub use wit::Instrument;

/// A point in time: seconds and nanoseconds since the Unix epoch, UTC.
pub use wit::Timestamp;

impl Severity {
    /// Rank from 0 (`Debug`) to 5 (`Critical`), for comparisons such as
    /// "at least a warning".
    pub fn rank(self) -> u8 {
        match self {
            Severity::Debug => 0,
            Severity::Info => 1,
            Severity::Notice => 2,
            Severity::Warning => 3,
            Severity::Error => 4,
            Severity::Critical => 5,
        }
    }

    /// Whether `self` is at least as serious as `other`.
    pub fn at_least(self, other: Severity) -> bool {
        self.rank() >= other.rank()
    }
}

impl Instrument {
    /// An instrument from its model and serial number.
    pub fn new(model: impl Into<String>, serial: impl Into<String>) -> Self {
        Instrument {
            model: model.into(),
            serial: serial.into(),
        }
    }
}

impl Timestamp {
    /// The current wall-clock time from `wasi:clocks/wall-clock`.
    ///
    /// Only available inside a component (panics natively).
    pub fn now() -> Self {
        let now = crate::bindings::wasi::wasi::clocks::wall_clock::now();
        Timestamp {
            // Wall-clock seconds fit in i64 for the next 292 billion years.
            seconds: i64::try_from(now.seconds).unwrap_or(i64::MAX),
            nanoseconds: now.nanoseconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_order() {
        assert!(Severity::Error.at_least(Severity::Warning));
        assert!(Severity::Warning.at_least(Severity::Warning));
        assert!(!Severity::Notice.at_least(Severity::Warning));
        assert!(Severity::Critical.at_least(Severity::Error));
    }
}
