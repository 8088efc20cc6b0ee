//! The installed-version ledger: the highest version ever installed per module
//! name, so an older signed module can never be installed again (no downgrade).

use super::{Db, DbError, now_secs};
use rusqlite::{OptionalExtension, params};

/// The ledger.
#[derive(Clone)]
pub struct Versions {
    db: Db,
}

impl Versions {
    /// The ledger over `db`.
    pub fn new(db: Db) -> Self {
        Versions { db }
    }

    /// The highest version ever installed under `module`.
    pub fn highest(&self, module: &str) -> Result<Option<(u64, u64, u64)>, DbError> {
        let row: Option<(i64, i64, i64)> = self
            .db
            .lock()
            .query_row(
                "SELECT major, minor, patch FROM installed_versions WHERE module = ?1",
                params![module],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(row.map(|(a, b, c)| (a as u64, b as u64, c as u64)))
    }

    /// Record that `version` of `module` (file hash `sha256_hex`) was installed;
    /// the ledger only ever moves up.
    pub fn record(
        &self,
        module: &str,
        version: (u64, u64, u64),
        sha256_hex: &str,
    ) -> Result<(), DbError> {
        let (a, b, c) = (version.0 as i64, version.1 as i64, version.2 as i64);
        self.db.lock().execute(
            "INSERT INTO installed_versions (module, major, minor, patch, file_sha256, installed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (module) DO UPDATE SET major = excluded.major, minor = excluded.minor,
                 patch = excluded.patch, file_sha256 = excluded.file_sha256, installed_at = excluded.installed_at
             WHERE (excluded.major, excluded.minor, excluded.patch) > (major, minor, patch)
                OR ((excluded.major, excluded.minor, excluded.patch) = (major, minor, patch)
                    AND excluded.file_sha256 != file_sha256)",
            params![module, a, b, c, sha256_hex, now_secs()],
        )?;
        Ok(())
    }
}

impl Versions {
    /// Set `module`'s entry to `version` (file `sha256_hex`) even if lower:
    /// only for the host's own rollback of an update that failed in service
    /// to the exact file that ran before it
    /// ([`crate::update::install::roll_back`]); nothing else lowers the ledger.
    pub fn roll_back_to(
        &self,
        module: &str,
        version: (u64, u64, u64),
        sha256_hex: &str,
    ) -> Result<(), DbError> {
        let (a, b, c) = (version.0 as i64, version.1 as i64, version.2 as i64);
        self.db.lock().execute(
            "INSERT INTO installed_versions (module, major, minor, patch, file_sha256, installed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (module) DO UPDATE SET major = excluded.major, minor = excluded.minor,
                 patch = excluded.patch, file_sha256 = excluded.file_sha256, installed_at = excluded.installed_at",
            params![module, a, b, c, sha256_hex, now_secs()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_moves_up_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let v = Versions::new(Db::open(dir.path()).unwrap());
        assert_eq!(v.highest("m").unwrap(), None);
        v.record("m", (1, 2, 0), "aa").unwrap();
        v.record("m", (1, 1, 9), "bb").unwrap();
        assert_eq!(v.highest("m").unwrap(), Some((1, 2, 0)));
        v.record("m", (1, 10, 0), "cc").unwrap();
        let v2 = Versions::new(Db::open(dir.path()).unwrap());
        assert_eq!(v2.highest("m").unwrap(), Some((1, 10, 0)));
        assert_eq!(v2.highest("other").unwrap(), None);
    }
}
