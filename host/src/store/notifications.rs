//! The notification centre: what modules raised for the person at the PC,
//! active and past, persisted.
//!
//! One table, `notification_log`: a row per notification from its raise to
//! its end. While it is active (`active = 1`) a module's raise of the same
//! key updates it; the module clearing it, or the person dismissing it,
//! ends it (`cleared_at`, `cleared_by`) and it becomes history. The person
//! may acknowledge an active notification (`acknowledged_at`, `_by`): it
//! stays active — the problem is still there — but is marked as seen.
//! History is bounded ([`MAX_HISTORY`]): the oldest ended rows go first.
//! Every change is committed before the call returns.

use super::{Db, DbError, now_secs};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// Most active notifications one module may hold.
pub const MAX_ACTIVE_PER_MODULE: u32 = 100;
/// Longest key (bytes).
pub const MAX_KEY_BYTES: usize = 128;
/// Title bytes kept.
pub const MAX_TITLE_BYTES: usize = 200;
/// Body bytes kept.
pub const MAX_BODY_BYTES: usize = 2000;
/// Ended notifications kept as history; the oldest beyond it are deleted.
pub const MAX_HISTORY: u32 = 1000;
/// Longest client name recorded with an acknowledgement or dismissal.
pub const MAX_CLIENT_BYTES: usize = 64;

/// One notification, active or past.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Notification {
    /// Stable id (the API and the CLI act on it).
    pub id: i64,
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
    /// Last raised or updated (Unix seconds).
    pub updated_at: i64,
    /// When the person acknowledged it, if they did.
    pub acknowledged_at: Option<i64>,
    /// Through which client (`dashboard`, `cli`, ...).
    pub acknowledged_by: Option<String>,
    /// When it ended, if it did.
    pub cleared_at: Option<i64>,
    /// Who ended it: `module` (the module cleared it) or the client through
    /// which the person dismissed it.
    pub cleared_by: Option<String>,
    /// Whether it is still active.
    pub active: bool,
}

/// What changed, for the live stream of the local API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Raised anew or updated.
    Raised(Notification),
    /// Acknowledged by the person.
    Acknowledged(Notification),
    /// Ended (cleared by its module or dismissed by the person).
    Ended(Notification),
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
    /// No active notification has this id.
    #[error("no active notification with id {0}")]
    NotActive(i64),
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

const COLUMNS: &str = "id, module, key, severity, title, body, raised_at, updated_at, \
     acknowledged_at, acknowledged_by, cleared_at, cleared_by, active";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Notification> {
    Ok(Notification {
        id: r.get(0)?,
        module: r.get(1)?,
        key: r.get(2)?,
        severity: r.get(3)?,
        title: r.get(4)?,
        body: r.get(5)?,
        raised_at: r.get(6)?,
        updated_at: r.get(7)?,
        acknowledged_at: r.get(8)?,
        acknowledged_by: r.get(9)?,
        cleared_at: r.get(10)?,
        cleared_by: r.get(11)?,
        active: r.get(12)?,
    })
}

fn by_id(tx: &rusqlite::Connection, id: i64) -> rusqlite::Result<Notification> {
    // Cached: a raise runs this (and its other statements) for every alert
    // a backlog drain raises; preparing them anew was a third of its time.
    tx.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM notification_log WHERE id = ?1"
    ))?
    .query_row(params![id], row)
}

/// An active notification raised again unchanged has its time refreshed
/// (one write) at most this often.
pub const REFRESH_SECS: i64 = 60;

/// What a [`Notifications::raise`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaiseChange {
    /// A new active notification.
    New,
    /// An active one changed: its body, and, if `status`, its severity or
    /// title (what the device status sent to the cloud holds).
    Updated {
        /// Severity or title changed.
        status: bool,
    },
    /// Raised again as it was (at most its time refreshed).
    Unchanged,
}

impl Notifications {
    /// The centre over `db`.
    pub fn new(db: Db) -> Self {
        Notifications { db }
    }

    /// Raise or update `key` for `module`. Returns the notification as
    /// stored, and what changed. Raising an active notification again with
    /// the same severity, title and body changes nothing — no write, not
    /// even its time, unless that is [`REFRESH_SECS`] old (a log replaying
    /// one instrument error thousands of times is one notification, not
    /// thousands of durable writes).
    pub fn raise(
        &self,
        module: &str,
        key: &str,
        severity: &str,
        title: &str,
        body: &str,
    ) -> Result<(Notification, RaiseChange), NotifyError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(NotifyError::InvalidKey);
        }
        // A raise lost to a power cut is raised again by the next event.
        let mut conn = self.db.lock_relaxed();
        let tx = conn.transaction()?;
        let existing: Option<Notification> = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM notification_log WHERE module = ?1 AND key = ?2 AND active = 1"
            ))?
            .query_row(params![module, key], row)
            .optional()?;
        let now = now_secs();
        let (title, body) = (
            truncate(title, MAX_TITLE_BYTES),
            truncate(body, MAX_BODY_BYTES),
        );
        let (id, change) = match existing {
            Some(old) => {
                let status = old.severity != severity || old.title != title;
                if !status && old.body == body && now - old.updated_at < REFRESH_SECS {
                    return Ok((old, RaiseChange::Unchanged));
                }
                tx.prepare_cached(
                    "UPDATE notification_log SET severity = ?2, title = ?3, body = ?4,
                         updated_at = ?5 WHERE id = ?1",
                )?
                .execute(params![old.id, severity, title, body, now])?;
                let change = if status || old.body != body {
                    RaiseChange::Updated { status }
                } else {
                    RaiseChange::Unchanged
                };
                (old.id, change)
            }
            None => {
                let count: u32 = tx
                    .prepare_cached(
                        "SELECT COUNT(*) FROM notification_log WHERE module = ?1 AND active = 1",
                    )?
                    .query_row(params![module], |r| r.get(0))?;
                if count >= MAX_ACTIVE_PER_MODULE {
                    return Err(NotifyError::TooManyActive(MAX_ACTIVE_PER_MODULE));
                }
                tx.prepare_cached(
                    "INSERT INTO notification_log (module, key, severity, title, body,
                         raised_at, updated_at, active) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 1)",
                )?
                .execute(params![module, key, severity, title, body, now])?;
                (tx.last_insert_rowid(), RaiseChange::New)
            }
        };
        let n = by_id(&tx, id)?;
        tx.commit()?;
        Ok((n, change))
    }

    /// Clear `key` of `module` (the module's own clear); returns the ended
    /// notification, if one was active.
    pub fn clear(&self, module: &str, key: &str) -> Result<Option<Notification>, NotifyError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let id: Option<i64> = tx
            .prepare_cached(
                "SELECT id FROM notification_log WHERE module = ?1 AND key = ?2 AND active = 1",
            )?
            .query_row(params![module, key], |r| r.get(0))
            .optional()?;
        let Some(id) = id else {
            return Ok(None);
        };
        let n = end(&tx, id, "module")?;
        tx.commit()?;
        Ok(Some(n))
    }

    /// The person acknowledged active notification `id` through `client`.
    pub fn acknowledge(&self, id: i64, client: &str) -> Result<Notification, NotifyError> {
        let client = truncate(client, MAX_CLIENT_BYTES);
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let n = tx
            .prepare_cached(
                "UPDATE notification_log SET acknowledged_at = ?2, acknowledged_by = ?3
             WHERE id = ?1 AND active = 1",
            )?
            .execute(params![id, now_secs(), client])?;
        if n == 0 {
            return Err(NotifyError::NotActive(id));
        }
        let n = by_id(&tx, id)?;
        tx.commit()?;
        Ok(n)
    }

    /// The person dismissed active notification `id` through `client`: it
    /// ends and becomes history (a module raising the key again makes a
    /// new one).
    pub fn dismiss(&self, id: i64, client: &str) -> Result<Notification, NotifyError> {
        let client = truncate(client, MAX_CLIENT_BYTES);
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let active: bool = tx
            .prepare_cached("SELECT active FROM notification_log WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?
            .unwrap_or(false);
        if !active {
            return Err(NotifyError::NotActive(id));
        }
        let n = end(&tx, id, client)?;
        tx.commit()?;
        Ok(n)
    }

    /// Active notifications, oldest first; only `module`'s when given.
    pub fn active(&self, module: Option<&str>) -> Result<Vec<Notification>, NotifyError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM notification_log WHERE active = 1
             AND (?1 IS NULL OR module = ?1) ORDER BY raised_at, id"
        ))?;
        let rows = stmt.query_map(params![module], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ended notifications, newest first, at most `limit`.
    pub fn history(&self, limit: u32) -> Result<Vec<Notification>, NotifyError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM notification_log WHERE active = 0
             ORDER BY cleared_at DESC, id DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map(params![limit], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The notification with `id`, active or past.
    pub fn get(&self, id: i64) -> Result<Option<Notification>, NotifyError> {
        Ok(by_id(&self.db.lock(), id).optional()?)
    }
}

/// End notification `id` (by `who`) and trim the history.
fn end(tx: &rusqlite::Connection, id: i64, who: &str) -> Result<Notification, NotifyError> {
    tx.prepare_cached(
        "UPDATE notification_log SET active = 0, cleared_at = ?2, cleared_by = ?3 WHERE id = ?1",
    )?
    .execute(params![id, now_secs(), who])?;
    tx.prepare_cached(
        "DELETE FROM notification_log WHERE active = 0 AND id NOT IN
             (SELECT id FROM notification_log WHERE active = 0
              ORDER BY cleared_at DESC, id DESC LIMIT ?1)",
    )?
    .execute(params![MAX_HISTORY])?;
    Ok(by_id(tx, id)?)
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

    fn centre() -> (tempfile::TempDir, Notifications) {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifications::new(Db::open(dir.path()).unwrap());
        (dir, n)
    }

    #[test]
    fn raise_update_clear_scoped_by_module() {
        let (_d, n) = centre();
        let (first, change) = n.raise("a", "k", "warning", "t", "b").unwrap();
        assert_eq!(change, RaiseChange::New);
        let (again, change) = n.raise("a", "k", "error", "t2", "b").unwrap();
        assert_eq!(change, RaiseChange::Updated { status: true });
        assert_eq!(first.id, again.id, "an update keeps its id");
        let (_, change) = n.raise("a", "k", "error", "t2", "b2").unwrap();
        assert_eq!(
            change,
            RaiseChange::Updated { status: false },
            "the body only"
        );
        // The same again: nothing written, not even the time.
        let writes = |n: &Notifications| -> i64 {
            n.db.lock()
                .query_row("SELECT total_changes()", [], |r| r.get(0))
                .unwrap()
        };
        let before = writes(&n);
        let (same, change) = n.raise("a", "k", "error", "t2", "b2").unwrap();
        assert_eq!(change, RaiseChange::Unchanged);
        assert_eq!(same.id, first.id);
        assert_eq!(writes(&n), before, "an unchanged raise writes nothing");
        n.raise("b", "k", "info", "other", "").unwrap();
        let a = n.active(Some("a")).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].severity.as_str(), a[0].title.as_str()),
            ("error", "t2")
        );
        assert_eq!(n.active(None).unwrap().len(), 2);
        let ended = n.clear("a", "k").unwrap().expect("was active");
        assert_eq!(ended.cleared_by.as_deref(), Some("module"));
        assert!(n.clear("a", "k").unwrap().is_none());
        assert_eq!(
            n.active(None).unwrap().len(),
            1,
            "b's notification untouched"
        );
        assert_eq!(n.history(10).unwrap()[0].id, first.id);
        assert_eq!(truncate("héllo", 2), "h");
    }

    #[test]
    fn the_person_acknowledges_and_dismisses() {
        let (_d, n) = centre();
        let (x, _) = n.raise("m", "k", "warning", "t", "b").unwrap();
        let acked = n.acknowledge(x.id, "dashboard").unwrap();
        assert!(acked.active);
        assert_eq!(acked.acknowledged_by.as_deref(), Some("dashboard"));
        let gone = n.dismiss(x.id, "cli").unwrap();
        assert!(!gone.active);
        assert_eq!(gone.cleared_by.as_deref(), Some("cli"));
        assert!(matches!(
            n.dismiss(x.id, "cli"),
            Err(NotifyError::NotActive(_))
        ));
        assert!(matches!(
            n.acknowledge(x.id, "cli"),
            Err(NotifyError::NotActive(_))
        ));
        // Raised again: a new notification, not the dismissed one.
        let (y, change) = n.raise("m", "k", "warning", "t", "b").unwrap();
        assert!(change == RaiseChange::New && y.id != x.id);
    }

    #[test]
    fn history_is_bounded() {
        let (_d, n) = centre();
        for i in 0..(MAX_HISTORY + 50) {
            n.raise("m", "k", "info", &format!("t{i}"), "").unwrap();
            n.clear("m", "k").unwrap();
        }
        let h = n.history(MAX_HISTORY * 2).unwrap();
        assert_eq!(h.len(), MAX_HISTORY as usize);
        assert_eq!(h[0].title, format!("t{}", MAX_HISTORY + 49), "newest kept");
    }

    #[test]
    fn notifications_of_the_old_schema_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = rusqlite::Connection::open(dir.path().join(super::super::DB_FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE notifications (module TEXT NOT NULL, key TEXT NOT NULL,
                   severity TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL,
                   raised_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
                   PRIMARY KEY (module, key)) WITHOUT ROWID;
                 INSERT INTO notifications VALUES ('m', 'k', 'error', 'old', 'body', 5, 6);",
            )
            .unwrap();
        }
        let n = Notifications::new(Db::open(dir.path()).unwrap());
        let a = n.active(None).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].title.as_str(), a[0].raised_at), ("old", 5));
    }
}
