//! The uplink spool: sealed envelopes waiting for the cloud's acknowledgement.
//!
//! A row is committed (WAL, synchronous=FULL) before the module is told
//! "queued", and deleted only when the cloud acknowledged its sequence
//! (at-least-once; the cloud deduplicates by device and sequence).
//!
//! Sequence numbers never repeat for a device, even if this database is lost:
//! each new sequence is `max(last + 1, now in microseconds)`, and the last one
//! is kept in `uplink_meta` (a fresh database starts from the clock, above any
//! sequence issued before).
//!
//! **When the spool is full** (the bytes of all envelopes would exceed the
//! configured bound), the oldest envelopes of *droppable* streams are deleted
//! first until the new one fits; QC results, maintenance, software status and
//! audit are never dropped — if only those remain, the new batch is refused
//! (`SpoolError::Full`) and the module keeps its data (its cursors do not
//! move). Every drop is counted per stream in `uplink_counters`
//! (`dropped:<stream>`), reported in the heartbeat and raised as an event by
//! the caller.

use super::{Db, DbError, now_secs};
use rusqlite::{OptionalExtension, params};

/// Most records accepted in one batch.
pub const MAX_BATCH_RECORDS: usize = 1000;

/// Streams whose oldest batches may be dropped when the spool is full.
/// Everything else (qc, maintenance, software, audit, and any stream not
/// listed) is kept until acknowledged.
pub const DROPPABLE_STREAMS: &[&str] = &["events", "logs", "heartbeat", "notifications"];

/// Whether batches of `stream` may be dropped when the spool is full.
pub fn droppable(stream: &str) -> bool {
    DROPPABLE_STREAMS.contains(&stream)
}

/// A spooled batch (metadata only).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SpooledBatch {
    /// Sequence number (also the envelope's).
    pub seq: i64,
    /// Producing module.
    pub module: String,
    /// Stream.
    pub stream: String,
    /// Record count.
    pub records: i64,
    /// Envelope size in bytes.
    pub bytes: i64,
}

/// Why a batch was not spooled. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Only batches that are never dropped remain and the new one does not fit.
    #[error(
        "spool full: {used} of {max} bytes hold batches that are never dropped (qc, maintenance, software, audit)"
    )]
    Full {
        /// Bytes in use.
        used: u64,
        /// The bound.
        max: u64,
    },
    /// The batch could not be sealed.
    #[error("cannot seal the batch: {0}")]
    Seal(String),
    /// The state entry to write with the batch was refused.
    #[error("state entry refused: {0}")]
    State(#[from] super::state::StateError),
    /// The database refused the write (disk full, read-only, corrupt...).
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for SpoolError {
    fn from(e: rusqlite::Error) -> Self {
        SpoolError::Db(DbError::Sqlite(e))
    }
}

/// A module state entry written in the same transaction as a batch.
#[derive(Clone, Copy, Debug)]
pub struct StateWrite<'a> {
    /// Key.
    pub key: &'a str,
    /// Value.
    pub value: &'a [u8],
    /// The module's state quota in bytes.
    pub quota: u64,
}

/// What an append did besides storing the batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// The batch's sequence number.
    pub seq: u64,
    /// Batches dropped to make room: (stream, count).
    pub dropped: Vec<(String, u64)>,
}

/// The spool.
#[derive(Clone)]
pub struct Spool {
    db: Db,
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Spool {
    /// The spool over `db`.
    pub fn new(db: Db) -> Self {
        Spool { db }
    }

    /// The dead letters kept in the same database.
    pub fn dead_letters(&self) -> super::deadletter::DeadLetters {
        super::deadletter::DeadLetters::new(self.db.clone())
    }

    /// Store a sealed batch, and `state` for `module` if given. `seal` gets
    /// the sequence number and returns the envelope; everything happens in one
    /// transaction, so either the batch is durably stored with its sequence
    /// (and the state entry written), or nothing changed.
    pub fn append(
        &self,
        module: &str,
        stream: &str,
        records: usize,
        max_bytes: u64,
        state: Option<StateWrite<'_>>,
        seal: impl FnOnce(u64) -> Result<Vec<u8>, String>,
    ) -> Result<Appended, SpoolError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        if let Some(w) = state {
            super::state::write_in(&tx, module, w.quota, w.key, w.value)?;
        }
        let seq = next_seq(&tx)?;
        let body = seal(seq).map_err(SpoolError::Seal)?;
        let len = body.len() as u64;
        let mut used = used_bytes(&tx)?;
        let mut dropped: Vec<(String, u64)> = Vec::new();
        while used + len > max_bytes {
            let victim: Option<(i64, String, i64)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT seq, stream, LENGTH(body) FROM uplink_outbox
                     WHERE stream IN (SELECT value FROM json_each(?1))
                     ORDER BY seq LIMIT 1",
                )?;
                let list = serde_json::to_string(DROPPABLE_STREAMS).unwrap_or_default();
                stmt.query_row(params![list], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?
            };
            let Some((vseq, vstream, vlen)) = victim else {
                // Nothing droppable left: refuse, and roll back any drop.
                return Err(SpoolError::Full {
                    used,
                    max: max_bytes,
                });
            };
            tx.prepare_cached("DELETE FROM uplink_outbox WHERE seq = ?1")?
                .execute(params![vseq])?;
            bump(&tx, &format!("dropped:{vstream}"), 1)?;
            used -= vlen as u64;
            match dropped.iter_mut().find(|(s, _)| *s == vstream) {
                Some((_, n)) => *n += 1,
                None => dropped.push((vstream, 1)),
            }
        }
        tx.prepare_cached(
            "INSERT INTO uplink_outbox (seq, module, stream, created_at, records, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(
            params![seq as i64, module, stream, now_secs(), records as i64, body],
        )?;
        tx.prepare_cached(
            "INSERT INTO uplink_meta (key, value) VALUES ('last_seq', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )?
        .execute(params![seq as i64])?;
        set_used_bytes(&tx, used + len)?;
        bump(&tx, "queued", 1)?;
        tx.commit()?;
        Ok(Appended { seq, dropped })
    }

    /// Give batch `old` a new sequence (the cloud holds `old` with other
    /// content, after this database was restored from a backup): `reseal`
    /// gets the old envelope and the new sequence and returns the new
    /// envelope. One transaction; returns the new sequence.
    pub fn renumber(
        &self,
        old: i64,
        reseal: impl FnOnce(&[u8], u64) -> Result<Vec<u8>, String>,
    ) -> Result<u64, SpoolError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let (module, stream, created_at, records, body): (String, String, i64, i64, Vec<u8>) = tx
            .query_row(
            "SELECT module, stream, created_at, records, body FROM uplink_outbox WHERE seq = ?1",
            params![old],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?;
        let seq = next_seq(&tx)?;
        let new_body = reseal(&body, seq).map_err(SpoolError::Seal)?;
        tx.prepare_cached("DELETE FROM uplink_outbox WHERE seq = ?1")?
            .execute(params![old])?;
        tx.prepare_cached(
            "INSERT INTO uplink_outbox (seq, module, stream, created_at, records, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(
            params![seq as i64, module, stream, created_at, records, new_body],
        )?;
        tx.prepare_cached(
            "INSERT INTO uplink_meta (key, value) VALUES ('last_seq', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )?
        .execute(params![seq as i64])?;
        let used = used_bytes(&tx)?;
        set_used_bytes(
            &tx,
            (used + new_body.len() as u64).saturating_sub(body.len() as u64),
        )?;
        bump(&tx, "renumbered", 1)?;
        tx.commit()?;
        Ok(seq)
    }

    /// Batches in the spool, oldest first.
    pub fn list(&self) -> Result<Vec<SpooledBatch>, DbError> {
        self.list_from(0, i64::MAX)
    }

    /// Up to `limit` batches with a sequence above `after`, oldest first.
    pub fn list_from(&self, after: i64, limit: i64) -> Result<Vec<SpooledBatch>, DbError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, module, stream, records, LENGTH(body) FROM uplink_outbox
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit], |r| {
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

    /// The sealed envelope of batch `seq`.
    pub fn body(&self, seq: i64) -> Result<Vec<u8>, DbError> {
        Ok(self.db.lock().query_row(
            "SELECT body FROM uplink_outbox WHERE seq = ?1",
            params![seq],
            |r| r.get(0),
        )?)
    }

    /// The cloud acknowledged `seq`: forget it. Returns whether it was there.
    pub fn ack(&self, seq: i64) -> Result<bool, DbError> {
        // A removal lost to a power cut sends the batch again, and the
        // cloud answers `duplicate`: no need to wait for the disk.
        let mut conn = self.db.lock_relaxed();
        let tx = conn.transaction()?;
        let len: Option<i64> = tx
            .prepare_cached("SELECT LENGTH(body) FROM uplink_outbox WHERE seq = ?1")?
            .query_row(params![seq], |r| r.get(0))
            .optional()?;
        let n = tx
            .prepare_cached("DELETE FROM uplink_outbox WHERE seq = ?1")?
            .execute(params![seq])?;
        if let Some(len) = len.filter(|_| n > 0) {
            let used = used_bytes(&tx)?;
            set_used_bytes(&tx, used.saturating_sub(len as u64))?;
            bump(&tx, "delivered", 1)?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// The cloud refused batch `seq` itself (malformed, too large), not the
    /// device: move it out of the way to `uplink_deadletter` (kept, sealed,
    /// counted as `dead-letter:<stream>`) so the batches behind it go on.
    /// Returns its stream, or `None` if it was no longer queued.
    pub fn dead_letter(&self, seq: i64, reason: &str) -> Result<Option<String>, DbError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let row: Option<(String, i64)> = tx
            .prepare_cached("SELECT stream, LENGTH(body) FROM uplink_outbox WHERE seq = ?1")?
            .query_row(params![seq], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((stream, len)) = row else {
            return Ok(None);
        };
        tx.prepare_cached(
            "INSERT OR REPLACE INTO uplink_deadletter (seq, module, stream, created_at, records, body, reason, moved_at)
             SELECT seq, module, stream, created_at, records, body, ?2, ?3 FROM uplink_outbox WHERE seq = ?1",
        )?
        .execute(
            params![seq, reason, now_secs()],
        )?;
        tx.prepare_cached("DELETE FROM uplink_outbox WHERE seq = ?1")?
            .execute(params![seq])?;
        let used = used_bytes(&tx)?;
        set_used_bytes(&tx, used.saturating_sub(len as u64))?;
        bump(&tx, &format!("dead-letter:{stream}"), 1)?;
        tx.commit()?;
        Ok(Some(stream))
    }

    /// Batches waiting and their total bytes.
    pub fn pending(&self) -> Result<(u64, u64), DbError> {
        let conn = self.db.lock();
        let n: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM uplink_outbox")?
            .query_row([], |r| r.get(0))?;
        Ok((n as u64, used_bytes(&conn)?))
    }

    /// When (Unix seconds) the oldest waiting batch was spooled; `None` when
    /// nothing waits. A batch that waits long means uploads do not go through.
    pub fn oldest_waiting_since(&self) -> Result<Option<i64>, DbError> {
        let conn = self.db.lock();
        Ok(conn
            .prepare_cached("SELECT MIN(created_at) FROM uplink_outbox")?
            .query_row([], |r| r.get(0))?)
    }

    /// Add `n` to counter `name` (e.g. `guard-refused`).
    pub fn count(&self, name: &str, n: u64) -> Result<(), DbError> {
        let conn = self.db.lock();
        bump(&conn, name, n)?;
        Ok(())
    }

    /// Every counter: `queued`, `delivered`, `dropped:<stream>`,
    /// `guard-refused`, `spool-full`...
    pub fn counters(&self) -> Result<std::collections::BTreeMap<String, u64>, DbError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached("SELECT name, value FROM uplink_counters")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The next sequence number: `max(last + 1, now in microseconds)` (see the
/// module docs); the caller stores it as `last_seq` in the same transaction.
pub(super) fn next_seq(conn: &rusqlite::Connection) -> rusqlite::Result<u64> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT value FROM uplink_meta WHERE key = 'last_seq'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok((last.unwrap_or(0) as u64 + 1).max(now_micros()))
}

/// Bytes of all envelopes, kept as a running total in `uplink_meta` (summing
/// the bodies on every append made filling the spool quadratic); computed once
/// when missing.
pub(super) fn used_bytes(conn: &rusqlite::Connection) -> rusqlite::Result<u64> {
    let stored: Option<i64> = conn
        .prepare_cached("SELECT value FROM uplink_meta WHERE key = 'spool_bytes'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    match stored {
        Some(v) => Ok(v as u64),
        None => conn
            .prepare_cached("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM uplink_outbox")?
            .query_row([], |r| Ok(r.get::<_, i64>(0)? as u64)),
    }
}

pub(super) fn set_used_bytes(conn: &rusqlite::Connection, bytes: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO uplink_meta (key, value) VALUES ('spool_bytes', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![bytes as i64])?;
    Ok(())
}

pub(super) fn bump(conn: &rusqlite::Connection, name: &str, n: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO uplink_counters (name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
    )?
    .execute(params![name, n as i64])?;
    Ok(())
}
