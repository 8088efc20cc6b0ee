//! Notifications for the person at the PC (`outpost:agent/notify`, notifier world).
//!
//! A module raises, updates and clears notifications under its own keys and can
//! list the active ones it raised; it never sees other modules' notifications.

use crate::bindings::notifier::outpost::agent::notify as wit;
use crate::types::Severity;

/// A notification as the module raises it (key, severity, title, body).
pub use wit::Notification;

/// A notification as the host keeps it, with when it was raised and updated.
pub use wit::ActiveNotification;

/// Why a notification call was refused.
pub use wit::NotifyError;

impl Notification {
    /// A notification with the given key, severity, title and body.
    pub fn new(
        key: impl Into<String>,
        severity: Severity,
        title: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        Notification {
            key: key.into(),
            severity,
            title: title.into(),
            body: body.into(),
        }
    }
}

/// Raise (or update, when the key is already active) a notification. It is
/// persisted before this returns.
pub fn raise(notification: &Notification) -> Result<(), NotifyError> {
    wit::raise(notification)
}

/// Clear the notification with `key`; returns whether one was active.
pub fn clear(key: &str) -> Result<bool, NotifyError> {
    wit::clear(key)
}

/// The active notifications this module raised, oldest first.
pub fn active() -> Vec<ActiveNotification> {
    wit::active()
}
