//! The host's embedded database: module state, notifications and the uplink
//! spool (sealed envelopes) in one SQLite file (WAL, synchronous=FULL so a committed write
//! survives a power cut).
//!
//! Architecture Invariant: every table is keyed by module name and every query
//! a module can cause is scoped to the calling module by the host, never by the
//! module.

pub mod deadletter;
pub mod notifications;
pub mod quarantine;
pub mod spool;
pub mod state;
pub mod versions;

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Database file name inside the state directory.
pub const DB_FILE: &str = "outpost.db";

/// Errors from the embedded database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The state directory or database could not be opened or migrated.
    #[error("cannot open database {path}: {message}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// A shared handle on the database.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS module_state (
    module TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BLOB NOT NULL,
    PRIMARY KEY (module, key)
) WITHOUT ROWID;
-- Notifications from raise to end: active ones (active = 1, at most one
-- per module and key) and a bounded history (see notifications.rs).
CREATE TABLE IF NOT EXISTS notification_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    module          TEXT NOT NULL,
    key             TEXT NOT NULL,
    severity        TEXT NOT NULL,
    title           TEXT NOT NULL,
    body            TEXT NOT NULL,
    raised_at       INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    acknowledged_at INTEGER,
    acknowledged_by TEXT,
    cleared_at      INTEGER,
    cleared_by      TEXT,
    active          INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS notification_active
    ON notification_log (module, key) WHERE active = 1;
CREATE TABLE IF NOT EXISTS installed_versions (
    module       TEXT PRIMARY KEY,
    major        INTEGER NOT NULL,
    minor        INTEGER NOT NULL,
    patch        INTEGER NOT NULL,
    file_sha256  TEXT NOT NULL,
    installed_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    module      TEXT PRIMARY KEY,
    file_sha256 TEXT NOT NULL,
    reason      TEXT NOT NULL,
    since       INTEGER NOT NULL
);
-- Development builds before sealing kept plaintext batches here; they were
-- never uploaded and are not in the sealed format: removed.
DROP TABLE IF EXISTS uplink_spool;
-- Sealed envelopes waiting for the cloud's acknowledgement (see spool.rs).
CREATE TABLE IF NOT EXISTS uplink_outbox (
    seq        INTEGER PRIMARY KEY,
    module     TEXT NOT NULL,
    stream     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    records    INTEGER NOT NULL,
    body       BLOB NOT NULL
);
-- Batches the cloud refused one by one (malformed, too large): kept, sealed,
-- for support to look at; never sent again automatically.
CREATE TABLE IF NOT EXISTS uplink_deadletter (
    seq        INTEGER PRIMARY KEY,
    module     TEXT NOT NULL,
    stream     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    records    INTEGER NOT NULL,
    body       BLOB NOT NULL,
    reason     TEXT NOT NULL,
    moved_at   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS uplink_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS uplink_counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

impl Db {
    /// Open (creating if needed) the database in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Db, DbError> {
        let path = state_dir.join(DB_FILE);
        let open_err = |message: String| DbError::Open {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(state_dir).map_err(|e| open_err(e.to_string()))?;
        let conn = Connection::open(&path).map_err(|e| open_err(e.to_string()))?;
        // The spool's, the state's and the notifications' statements are
        // prepared once and kept (a batch runs about ten of them).
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| conn.busy_timeout(std::time::Duration::from_secs(5)))
            .and_then(|_| conn.execute_batch(SCHEMA))
            .and_then(|_| conn.execute_batch(deadletter::SCHEMA))
            .and_then(|_| conn.execute_batch(crate::update::offers::SCHEMA))
            .and_then(|_| conn.execute_batch(crate::support::SCHEMA))
            .and_then(|_| conn.execute_batch(crate::support::audit::SCHEMA))
            .and_then(|_| migrate(&conn))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// Cap the database file at about `max_bytes` (SQLite `max_page_count`):
    /// writes beyond it fail as if the disk were full. For operators who want
    /// a hard ceiling below the disk's, and for tests of the disk-full path.
    pub fn limit_size(&self, max_bytes: u64) -> Result<(), DbError> {
        let conn = self.lock();
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages = (max_bytes as i64 / page.max(1)).max(1);
        let _: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
            r.get(0)
        })?;
        Ok(())
    }

    /// Check the database's integrity (`PRAGMA integrity_check`).
    pub fn integrity_ok(&self) -> Result<bool, DbError> {
        let conn = self.lock();
        let r: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        Ok(r == "ok")
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lock the connection. A poisoned lock is recovered: SQLite keeps its own
    /// consistency and every multi-statement change runs in a transaction.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lock the connection for writes whose loss to a power cut costs
    /// nothing but a repeat: their commits do not wait for the disk
    /// (`synchronous = NORMAL` until the guard drops; WAL keeps the file
    /// consistent either way, and the next commit that does wait makes them
    /// durable too). Used for a delivered batch's removal (lost: the batch
    /// is sent again and the cloud answers `duplicate`) and a notification's
    /// raise (lost: the next event raises it again). Every other write waits.
    pub(crate) fn lock_relaxed(&self) -> Relaxed<'_> {
        let conn = self.lock();
        let _ = conn.pragma_update(None, "synchronous", "NORMAL");
        Relaxed(conn)
    }
}

/// The connection with relaxed commits (see [`Db::lock_relaxed`]); back to
/// `synchronous = FULL` when dropped.
pub(crate) struct Relaxed<'a>(MutexGuard<'a, Connection>);

impl std::ops::Deref for Relaxed<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl std::ops::DerefMut for Relaxed<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0
    }
}

impl Drop for Relaxed<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.pragma_update(None, "synchronous", "FULL") {
            // Leaving it relaxed would let the spool's commits skip the
            // disk: better to stop than to lose a record to a power cut.
            panic!("cannot set the database back to synchronous commits: {e}");
        }
    }
}

/// Bring a database written by an earlier version up to date, in one
/// transaction: active notifications of the old `notifications` table move
/// to `notification_log`.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let old: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'notifications')",
        [],
        |r| r.get(0),
    )?;
    if old {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT INTO notification_log (module, key, severity, title, body, raised_at, updated_at, active)
                 SELECT module, key, severity, title, body, raised_at, updated_at, 1 FROM notifications;
             DROP TABLE notifications;
             COMMIT;",
        )?;
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::Db;

    fn synchronous(conn: &rusqlite::Connection) -> i64 {
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn relaxed_commits_end_with_their_guard() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(synchronous(&db.lock()), 2, "FULL");
        {
            let mut relaxed = db.lock_relaxed();
            assert_eq!(synchronous(&relaxed), 1, "NORMAL");
            let tx = relaxed.transaction().unwrap();
            tx.execute(
                "INSERT INTO uplink_counters (name, value) VALUES ('x', 1)",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        assert_eq!(synchronous(&db.lock()), 2, "FULL again");
        // Even when the relaxed write failed half-way.
        {
            let mut relaxed = db.lock_relaxed();
            let tx = relaxed.transaction().unwrap();
            assert!(
                tx.execute("INSERT INTO no_such_table VALUES (1)", [])
                    .is_err()
            );
        }
        assert_eq!(synchronous(&db.lock()), 2);
    }
}
