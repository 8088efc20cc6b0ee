//! Quarantined modules, persisted: a module quarantined by the supervisor stays
//! quarantined across host restarts until the operator releases it
//! (`outpost release`) or installs a different signed file for it.

use super::{Db, DbError, now_secs};
use rusqlite::{OptionalExtension, params};

/// The quarantine list.
#[derive(Clone)]
pub struct Quarantine {
    db: Db,
}

/// One quarantined module.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Quarantined {
    /// Module name.
    pub module: String,
    /// SHA-256 (hex) of the signed file that was quarantined.
    pub file_sha256: String,
    /// Why (the last failure).
    pub reason: String,
    /// When (Unix seconds).
    pub since: i64,
}

impl Quarantine {
    /// The list over `db`.
    pub fn new(db: Db) -> Self {
        Quarantine { db }
    }

    /// Quarantine `module` as installed from the file with hash `file_sha256`.
    pub fn add(&self, module: &str, file_sha256: &str, reason: &str) -> Result<(), DbError> {
        self.db.lock().execute(
            "INSERT INTO quarantine (module, file_sha256, reason, since) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (module) DO UPDATE SET file_sha256 = excluded.file_sha256,
                 reason = excluded.reason, since = excluded.since",
            params![module, file_sha256, reason, now_secs()],
        )?;
        Ok(())
    }

    /// The quarantine entry of `module` if it applies to the file `file_sha256`.
    /// An entry for another file (an upgrade or a different build) does not apply.
    pub fn get(&self, module: &str, file_sha256: &str) -> Result<Option<Quarantined>, DbError> {
        Ok(self
            .db
            .lock()
            .query_row(
                "SELECT module, file_sha256, reason, since FROM quarantine WHERE module = ?1 AND file_sha256 = ?2",
                params![module, file_sha256],
                |r| {
                    Ok(Quarantined {
                        module: r.get(0)?,
                        file_sha256: r.get(1)?,
                        reason: r.get(2)?,
                        since: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Release `module`; returns whether it was quarantined.
    pub fn release(&self, module: &str) -> Result<bool, DbError> {
        Ok(self
            .db
            .lock()
            .execute("DELETE FROM quarantine WHERE module = ?1", params![module])?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_to_the_file_and_released_by_the_operator() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(Db::open(dir.path()).unwrap());
        q.add("m", "aa", "trap: unreachable").unwrap();
        assert_eq!(
            q.get("m", "aa").unwrap().unwrap().reason,
            "trap: unreachable"
        );
        assert_eq!(
            q.get("m", "bb").unwrap(),
            None,
            "another file is not quarantined"
        );
        let q2 = Quarantine::new(Db::open(dir.path()).unwrap());
        assert!(q2.get("m", "aa").unwrap().is_some(), "survives reopen");
        assert!(q2.release("m").unwrap());
        assert!(!q2.release("m").unwrap());
        assert_eq!(q2.get("m", "aa").unwrap(), None);
    }
}
