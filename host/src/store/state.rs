//! Per-module key-value state with a byte quota (the `state` interface).

use super::{Db, DbError};
use rusqlite::{OptionalExtension, params};

/// Longest key accepted (bytes).
pub const MAX_KEY_BYTES: usize = 256;
/// Most keys returned by one `keys` call.
pub const MAX_KEYS_LISTED: usize = 1000;

/// Why a state write was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The write would exceed the module's quota (bytes allowed).
    #[error("state quota of {0} bytes exceeded")]
    QuotaExceeded(u64),
    /// Key empty or longer than [`MAX_KEY_BYTES`].
    #[error("invalid state key")]
    InvalidKey,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        StateError::Db(e.into())
    }
}

/// Write `key` = `value` for `module` inside the caller's transaction, within
/// `quota` bytes (key + value bytes over all of the module's keys).
pub(crate) fn write_in(
    conn: &rusqlite::Connection,
    module: &str,
    quota: u64,
    key: &str,
    value: &[u8],
) -> Result<(), StateError> {
    check_key(key)?;
    let used: i64 = conn.prepare_cached(
        "SELECT COALESCE(SUM(LENGTH(CAST(key AS BLOB)) + LENGTH(value)), 0) FROM module_state WHERE module = ?1 AND key != ?2",
    )?
    .query_row(
        params![module, key],
        |r| r.get(0),
    )?;
    let needed = used as u64 + key.len() as u64 + value.len() as u64;
    if needed > quota {
        return Err(StateError::QuotaExceeded(quota));
    }
    conn.prepare_cached(
        "INSERT INTO module_state (module, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (module, key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![module, key, value])?;
    Ok(())
}

/// One module's view of the state table.
#[derive(Clone)]
pub struct ModuleState {
    db: Db,
    module: String,
    quota_bytes: u64,
}

impl ModuleState {
    /// State of `module`, limited to `quota_bytes` (key + value bytes).
    pub fn new(db: Db, module: &str, quota_bytes: u64) -> Self {
        ModuleState {
            db,
            module: module.to_owned(),
            quota_bytes,
        }
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let conn = self.db.lock();
        Ok(conn
            .prepare_cached("SELECT value FROM module_state WHERE module = ?1 AND key = ?2")?
            .query_row(params![self.module, key], |r| r.get(0))
            .optional()?)
    }

    /// Store `value` under `key` durably, within the quota.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        write_in(&tx, &self.module, self.quota_bytes, key, value)?;
        tx.commit()?;
        Ok(())
    }

    /// Remove `key`.
    pub fn delete(&self, key: &str) -> Result<(), StateError> {
        check_key(key)?;
        self.db.lock().execute(
            "DELETE FROM module_state WHERE module = ?1 AND key = ?2",
            params![self.module, key],
        )?;
        Ok(())
    }

    /// Keys starting with `prefix`, in byte order, at most [`MAX_KEYS_LISTED`].
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT key FROM module_state WHERE module = ?1 AND substr(key, 1, ?2) = ?3 ORDER BY key LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                self.module,
                prefix.chars().count() as i64,
                prefix,
                MAX_KEYS_LISTED as i64
            ],
            |r| r.get::<_, String>(0),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn check_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        Err(StateError::InvalidKey)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_is_per_module_and_counts_keys_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let a = ModuleState::new(db.clone(), "a", 10);
        let b = ModuleState::new(db.clone(), "b", 10);
        a.set("k", b"123456789").unwrap(); // 1 + 9 = 10 bytes
        assert!(matches!(
            a.set("k2", b"x"),
            Err(StateError::QuotaExceeded(10))
        ));
        a.set("k", b"12345678").unwrap(); // replacing frees the old value
        assert_eq!(a.get("k").unwrap().unwrap(), b"12345678");
        assert_eq!(
            b.get("k").unwrap(),
            None,
            "modules never see each other's state"
        );
        b.set("k", b"b").unwrap();
        assert_eq!(a.keys("").unwrap(), ["k"]);
        a.delete("k").unwrap();
        assert_eq!(a.get("k").unwrap(), None);
        assert!(matches!(a.set("", b""), Err(StateError::InvalidKey)));
        drop(a);
        // Durable across reopen.
        let db2 = Db::open(dir.path()).unwrap();
        assert_eq!(
            ModuleState::new(db2, "b", 10).get("k").unwrap().unwrap(),
            b"b"
        );
    }
}
