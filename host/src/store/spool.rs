//! The uplink spool: batches queued by modules, committed before the module
//! is told "queued". Issue #5 adds sealing and the sender; until then batches
//! are kept as canonical JSON of the typed records.

use super::{Db, DbError, now_secs};
use rusqlite::params;

/// Most records accepted in one batch.
pub const MAX_BATCH_RECORDS: usize = 1000;

/// A spooled batch (metadata only).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SpooledBatch {
    /// Sequence number.
    pub seq: i64,
    /// Producing module.
    pub module: String,
    /// Stream.
    pub stream: String,
    /// Record count.
    pub records: i64,
    /// Body size in bytes.
    pub bytes: i64,
}

/// The spool.
#[derive(Clone)]
pub struct Spool {
    db: Db,
}

impl Spool {
    /// The spool over `db`.
    pub fn new(db: Db) -> Self {
        Spool { db }
    }

    /// Append a batch; returns its sequence number once committed.
    pub fn append(
        &self,
        module: &str,
        stream: &str,
        records: usize,
        body: &[u8],
    ) -> Result<u64, DbError> {
        let conn = self.db.lock();
        conn.execute(
            "INSERT INTO uplink_spool (module, stream, created_at, records, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![module, stream, now_secs(), records as i64, body],
        )?;
        Ok(conn.last_insert_rowid() as u64)
    }

    /// Batches in the spool, oldest first.
    pub fn list(&self) -> Result<Vec<SpooledBatch>, DbError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, module, stream, records, LENGTH(body) FROM uplink_spool ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SpooledBatch {
                seq: r.get(0)?,
                module: r.get(1)?,
                stream: r.get(2)?,
                records: r.get(3)?,
                bytes: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The body of batch `seq`.
    pub fn body(&self, seq: i64) -> Result<Vec<u8>, DbError> {
        Ok(self.db.lock().query_row(
            "SELECT body FROM uplink_spool WHERE seq = ?1",
            params![seq],
            |r| r.get(0),
        )?)
    }
}
