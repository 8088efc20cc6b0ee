//! The notification centre: active notifications per module, persisted.

use super::{Db, DbError, now_secs};
use rusqlite::params;
use serde::Serialize;

/// Most active notifications one module may hold.
pub const MAX_ACTIVE_PER_MODULE: u32 = 100;
/// Longest key (bytes).
pub const MAX_KEY_BYTES: usize = 128;
/// Title bytes kept.
pub const MAX_TITLE_BYTES: usize = 200;
/// Body bytes kept.
pub const MAX_BODY_BYTES: usize = 2000;

/// One active notification.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Notification {
    /// The module that raised it.
    pub module: String,
    /// The module's key.
    pub key: String,
    /// Severity name (`debug` … `critical`).
    pub severity: String,
    /// One-line summary.
    pub title: String,
    /// Explanation.
    pub body: String,
    /// First raised (Unix seconds).
    pub raised_at: i64,
    /// Last updated (Unix seconds).
    pub updated_at: i64,
}

/// Why a notification change was refused.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Key empty or too long.
    #[error("invalid notification key")]
    InvalidKey,
    /// The module has [`MAX_ACTIVE_PER_MODULE`] active notifications.
    #[error("too many active notifications ({0})")]
    TooManyActive(u32),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for NotifyError {
    fn from(e: rusqlite::Error) -> Self {
        NotifyError::Db(e.into())
    }
}

/// The notification centre.
#[derive(Clone)]
pub struct Notifications {
    db: Db,
}

impl Notifications {
    /// The centre over `db`.
    pub fn new(db: Db) -> Self {
        Notifications { db }
    }

    /// Raise or update `key` for `module`. Returns whether it is new.
    pub fn raise(
        &self,
        module: &str,
        key: &str,
        severity: &str,
        title: &str,
        body: &str,
    ) -> Result<bool, NotifyError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(NotifyError::InvalidKey);
        }
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM notifications WHERE module = ?1 AND key = ?2)",
            params![module, key],
            |r| r.get(0),
        )?;
        if !exists {
            let count: u32 = tx.query_row(
                "SELECT COUNT(*) FROM notifications WHERE module = ?1",
                params![module],
                |r| r.get(0),
            )?;
            if count >= MAX_ACTIVE_PER_MODULE {
                return Err(NotifyError::TooManyActive(MAX_ACTIVE_PER_MODULE));
            }
        }
        let now = now_secs();
        tx.execute(
            "INSERT INTO notifications (module, key, severity, title, body, raised_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (module, key) DO UPDATE SET severity = excluded.severity,
                 title = excluded.title, body = excluded.body, updated_at = excluded.updated_at",
            params![
                module,
                key,
                severity,
                truncate(title, MAX_TITLE_BYTES),
                truncate(body, MAX_BODY_BYTES),
                now
            ],
        )?;
        tx.commit()?;
        Ok(!exists)
    }

    /// Clear `key` of `module`; returns whether it was active.
    pub fn clear(&self, module: &str, key: &str) -> Result<bool, NotifyError> {
        let n = self.db.lock().execute(
            "DELETE FROM notifications WHERE module = ?1 AND key = ?2",
            params![module, key],
        )?;
        Ok(n > 0)
    }

    /// Active notifications, oldest first; only `module`'s when given.
    pub fn active(&self, module: Option<&str>) -> Result<Vec<Notification>, NotifyError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT module, key, severity, title, body, raised_at, updated_at FROM notifications
             WHERE ?1 IS NULL OR module = ?1 ORDER BY raised_at, module, key",
        )?;
        let rows = stmt.query_map(params![module], |r| {
            Ok(Notification {
                module: r.get(0)?,
                key: r.get(1)?,
                severity: r.get(2)?,
                title: r.get(3)?,
                body: r.get(4)?,
                raised_at: r.get(5)?,
                updated_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Cut `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_update_clear_scoped_by_module() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifications::new(Db::open(dir.path()).unwrap());
        assert!(n.raise("a", "k", "warning", "t", "b").unwrap());
        assert!(!n.raise("a", "k", "error", "t2", "b").unwrap());
        n.raise("b", "k", "info", "other", "").unwrap();
        let a = n.active(Some("a")).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].severity.as_str(), a[0].title.as_str()),
            ("error", "t2")
        );
        assert_eq!(n.active(None).unwrap().len(), 2);
        assert!(n.clear("a", "k").unwrap());
        assert!(!n.clear("a", "k").unwrap());
        assert_eq!(
            n.active(None).unwrap().len(),
            1,
            "b's notification untouched"
        );
        assert_eq!(truncate("héllo", 2), "h");
    }
}
