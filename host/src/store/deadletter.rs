//! Dead letters: what the uplink refused to send, kept instead of dropped.
//!
//! Two sources, one view:
//! - **guard**: a record the host's PHI guard refused in `uplink.enqueue`
//!   (`uplink_guard_deadletter`). The record is kept sealed with the device
//!   key, exactly as the spool seals a batch (a one-record batch under the
//!   stream it was queued on, the row id as its sequence), so no plaintext
//!   reaches the database. The same record refused again (a module that
//!   re-reads its input after a crash) is counted on its row, not stored
//!   twice: rows are told apart by a keyed digest (HMAC-SHA256 under a key
//!   derived from the device key) of module, stream and record.
//! - **cloud**: a batch the cloud refused one by one (malformed, too large),
//!   moved out of the outbox by the sender (`uplink_deadletter`, see
//!   [`super::spool::Spool::dead_letter`]).
//!
//! The redacted view ([`DeadLetter`]) holds module, stream, when, the kind of
//! finding (or the cloud's reason), the field, records and size: never a
//! value. An operator can discard a dead letter or retry it (opened, checked
//! by the guard again, resealed under a new sequence and put in the outbox,
//! in one transaction); each action is written to `uplink_deadletter_audit`
//! with who and when. Counters: `guard-dead-letter:<stream>` (kept),
//! `guard-dead-letter-repeat` (the same record refused again),
//! `retried-dead-letters`, `discarded-dead-letters`.
//!
//! The guard's table is bounded ([`MAX_GUARD_DEAD_LETTER_BYTES`]): when it is
//! full a new refusal is not stored and the caller tells the module to keep
//! its data (`unavailable`), so a record is never refused into nowhere.

use super::spool::{bump, next_seq, set_used_bytes, used_bytes};
use super::{Db, DbError, now_secs};
use rusqlite::{OptionalExtension, params};
use std::fmt;
use std::str::FromStr;

/// The dead-letter tables and the audit of operator actions (created at
/// open, after the main schema).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS uplink_guard_deadletter (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    module          TEXT NOT NULL,
    stream          TEXT NOT NULL,
    refused_at      INTEGER NOT NULL,
    last_refused_at INTEGER NOT NULL,
    finding         TEXT NOT NULL,
    field           TEXT NOT NULL,
    digest          BLOB NOT NULL,
    refusals        INTEGER NOT NULL,
    body            BLOB NOT NULL,
    UNIQUE (module, stream, digest)
);
CREATE TABLE IF NOT EXISTS uplink_deadletter_audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    who     TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    outcome TEXT NOT NULL
);
";

/// Most bytes of sealed records the guard's dead-letter table holds.
pub const MAX_GUARD_DEAD_LETTER_BYTES: u64 = 64 << 20;

/// Most audit entries kept (the oldest go first).
pub const MAX_AUDIT_ENTRIES: i64 = 10_000;

/// Who refused what ended up in the dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The host's PHI guard refused a record before it was queued.
    Guard,
    /// The cloud refused a sealed batch.
    Cloud,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Guard => "guard",
            Source::Cloud => "cloud",
        })
    }
}

/// A dead letter's id as the operator types it: `g<row>` for the guard's,
/// `c<sequence>` for the cloud's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeadLetterId {
    /// Which table.
    pub source: Source,
    /// Row id (guard) or the batch's sequence (cloud).
    pub n: i64,
}

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            Source::Guard => write!(f, "g{}", self.n),
            Source::Cloud => write!(f, "c{}", self.n),
        }
    }
}

impl serde::Serialize for DeadLetterId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A dead-letter id that is not `g<number>` or `c<number>`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a dead-letter id (g<number> or c<number>, as `outpost uplink dead-letters` lists them)"
)]
pub struct BadId(pub String);

impl FromStr for DeadLetterId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, BadId> {
        let bad = || BadId(s.chars().take(40).collect());
        let (source, digits) = match s.as_bytes().first() {
            Some(b'g' | b'G') => (Source::Guard, &s[1..]),
            Some(b'c' | b'C') => (Source::Cloud, &s[1..]),
            _ => return Err(bad()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n = digits.parse::<i64>().map_err(|_| bad())?;
        Ok(DeadLetterId { source, n })
    }
}

/// The redacted view of a dead letter: where it came from, when, why, and
/// how big — never a value.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeadLetter {
    /// Its id (`g12`, `c1733…`).
    pub id: DeadLetterId,
    /// Who refused it.
    pub source: Source,
    /// The module that queued it.
    pub module: String,
    /// Its stream.
    pub stream: String,
    /// When it was refused (Unix seconds; the last time, if more than once).
    pub at: i64,
    /// The guard's finding (`ssn`, `person-name`, ...) or the cloud's reason.
    pub reason: String,
    /// The field the guard named (`control-lot`, `text`); none for the cloud.
    pub field: Option<String>,
    /// Records held.
    pub records: i64,
    /// Sealed size in bytes.
    pub bytes: i64,
    /// How often the same record was refused (guard; 1 for the cloud).
    pub refusals: i64,
}

/// An operator action, as audited.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Entry id.
    pub id: i64,
    /// When (Unix seconds).
    pub at: i64,
    /// Who (the operator's account, through which client).
    pub who: String,
    /// `discard` or `retry`.
    pub action: String,
    /// The dead letter's id.
    pub target: String,
    /// What happened (`discarded`, `queued as <seq>`, `refused again: ...`).
    pub outcome: String,
}

/// Why a dead letter could not be stored or moved.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The guard's table holds [`MAX_GUARD_DEAD_LETTER_BYTES`] already.
    #[error(
        "the dead-letter store is full ({used} of {max} bytes); look at `outpost uplink dead-letters` and discard or retry"
    )]
    Full {
        /// Bytes in use.
        used: u64,
        /// The bound.
        max: u64,
    },
    /// No such dead letter.
    #[error("no dead letter {0}")]
    NotFound(DeadLetterId),
    /// Sealing or opening failed.
    #[error("cannot seal or open dead letter: {0}")]
    Seal(String),
    /// The outbox has no room for a retried batch.
    #[error("the upload queue is full ({used} of {max} bytes); retry later")]
    SpoolFull {
        /// Bytes in use.
        used: u64,
        /// The bound.
        max: u64,
    },
    /// The database refused.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for DeadLetterError {
    fn from(e: rusqlite::Error) -> Self {
        DeadLetterError::Db(DbError::Sqlite(e))
    }
}

/// A guard refusal to keep.
#[derive(Clone, Copy, Debug)]
pub struct Refusal<'a> {
    /// The module that queued the record.
    pub module: &'a str,
    /// The stream it was queued on.
    pub stream: &'a str,
    /// The guard's finding code.
    pub finding: &'a str,
    /// The field.
    pub field: &'a str,
    /// Keyed digest of module, stream and record (duplicates share it).
    pub digest: &'a [u8],
}

/// What [`DeadLetters::keep_refused`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kept {
    /// The dead letter's id.
    pub id: DeadLetterId,
    /// False when the same record was already held (its count went up).
    pub new: bool,
}

/// The dead-letter store over the host's database.
#[derive(Clone)]
pub struct DeadLetters {
    db: Db,
}

impl DeadLetters {
    /// The store over `db`.
    pub fn new(db: Db) -> Self {
        DeadLetters { db }
    }

    /// Keep a record the guard refused: `seal` gets the row id and returns
    /// the sealed record. One transaction; a record already held (same
    /// digest) only has its count and time updated.
    pub fn keep_refused(
        &self,
        r: Refusal<'_>,
        seal: impl FnOnce(i64) -> Result<Vec<u8>, String>,
    ) -> Result<Kept, DeadLetterError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let now = now_secs();
        let known: Option<i64> = tx
            .query_row(
                "SELECT id FROM uplink_guard_deadletter WHERE module = ?1 AND stream = ?2 AND digest = ?3",
                params![r.module, r.stream, r.digest],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(id) = known {
            tx.execute(
                "UPDATE uplink_guard_deadletter SET refusals = refusals + 1, last_refused_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            bump(&tx, "guard-dead-letter-repeat", 1)?;
            tx.commit()?;
            return Ok(Kept {
                id: DeadLetterId {
                    source: Source::Guard,
                    n: id,
                },
                new: false,
            });
        }
        let used: i64 = tx.query_row(
            "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM uplink_guard_deadletter",
            [],
            |row| row.get(0),
        )?;
        let id: i64 = tx.query_row(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM uplink_guard_deadletter",
            [],
            |row| row.get(0),
        )?;
        let body = seal(id).map_err(DeadLetterError::Seal)?;
        if used as u64 + body.len() as u64 > MAX_GUARD_DEAD_LETTER_BYTES {
            return Err(DeadLetterError::Full {
                used: used as u64,
                max: MAX_GUARD_DEAD_LETTER_BYTES,
            });
        }
        tx.execute(
            "INSERT INTO uplink_guard_deadletter
                 (id, module, stream, refused_at, last_refused_at, finding, field, digest, refusals, body)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, 1, ?8)",
            params![id, r.module, r.stream, now, r.finding, r.field, r.digest, body],
        )?;
        bump(&tx, &format!("guard-dead-letter:{}", r.stream), 1)?;
        tx.commit()?;
        Ok(Kept {
            id: DeadLetterId {
                source: Source::Guard,
                n: id,
            },
            new: true,
        })
    }

    /// Every dead letter, guard's first, oldest first.
    pub fn list(&self) -> Result<Vec<DeadLetter>, DbError> {
        let conn = self.db.lock();
        let mut out = Vec::new();
        let mut stmt = conn.prepare_cached(
            "SELECT id, module, stream, last_refused_at, finding, field, LENGTH(body), refusals
             FROM uplink_guard_deadletter ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DeadLetter {
                id: DeadLetterId {
                    source: Source::Guard,
                    n: r.get(0)?,
                },
                source: Source::Guard,
                module: r.get(1)?,
                stream: r.get(2)?,
                at: r.get(3)?,
                reason: r.get(4)?,
                field: Some(r.get(5)?),
                records: 1,
                bytes: r.get(6)?,
                refusals: r.get(7)?,
            })
        })?;
        for row in rows {
            out.push(row?);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT seq, module, stream, moved_at, reason, records, LENGTH(body)
             FROM uplink_deadletter ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DeadLetter {
                id: DeadLetterId {
                    source: Source::Cloud,
                    n: r.get(0)?,
                },
                source: Source::Cloud,
                module: r.get(1)?,
                stream: r.get(2)?,
                at: r.get(3)?,
                reason: r.get(4)?,
                field: None,
                records: r.get(5)?,
                bytes: r.get(6)?,
                refusals: 1,
            })
        })?;
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// Dead letters held: (guard's, cloud's).
    pub fn counts(&self) -> Result<(u64, u64), DbError> {
        let conn = self.db.lock();
        let g: i64 = conn.query_row("SELECT COUNT(*) FROM uplink_guard_deadletter", [], |r| {
            r.get(0)
        })?;
        let c: i64 = conn.query_row("SELECT COUNT(*) FROM uplink_deadletter", [], |r| r.get(0))?;
        Ok((g as u64, c as u64))
    }

    /// The sealed body of dead letter `id` with its module and stream.
    pub fn body(&self, id: DeadLetterId) -> Result<Option<(String, String, Vec<u8>)>, DbError> {
        let conn = self.db.lock();
        let sql = match id.source {
            Source::Guard => {
                "SELECT module, stream, body FROM uplink_guard_deadletter WHERE id = ?1"
            }
            Source::Cloud => "SELECT module, stream, body FROM uplink_deadletter WHERE seq = ?1",
        };
        Ok(conn
            .query_row(sql, params![id.n], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?)
    }

    /// Forget dead letter `id`, audited as done by `who`. Returns whether it
    /// was there.
    pub fn discard(&self, id: DeadLetterId, who: &str) -> Result<bool, DbError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let n = match id.source {
            Source::Guard => tx.execute(
                "DELETE FROM uplink_guard_deadletter WHERE id = ?1",
                params![id.n],
            )?,
            Source::Cloud => tx.execute(
                "DELETE FROM uplink_deadletter WHERE seq = ?1",
                params![id.n],
            )?,
        };
        let outcome = if n > 0 { "discarded" } else { "not found" };
        audit_in(&tx, who, "discard", &id.to_string(), outcome)?;
        if n > 0 {
            bump(&tx, "discarded-dead-letters", 1)?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Put dead letter `id` back in the outbox under a new sequence, audited
    /// as done by `who`: `reseal` gets the sealed body and the new sequence
    /// and returns the new envelope (after checking the content again); an
    /// `Err` from it keeps the dead letter and is audited as the outcome.
    /// One transaction: either the batch is in the outbox and the dead
    /// letter gone, or nothing but the audit entry changed. Returns the new
    /// sequence.
    pub fn requeue(
        &self,
        id: DeadLetterId,
        who: &str,
        max_spool_bytes: u64,
        reseal: impl FnOnce(&str, &[u8], u64) -> Result<Vec<u8>, String>,
    ) -> Result<u64, DeadLetterError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction()?;
        let target = id.to_string();
        let row: Option<(String, String, i64, Vec<u8>)> = match id.source {
            Source::Guard => tx
                .query_row(
                    "SELECT module, stream, 1, body FROM uplink_guard_deadletter WHERE id = ?1",
                    params![id.n],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?,
            Source::Cloud => tx
                .query_row(
                    "SELECT module, stream, records, body FROM uplink_deadletter WHERE seq = ?1",
                    params![id.n],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?,
        };
        let Some((module, stream, records, body)) = row else {
            audit_in(&tx, who, "retry", &target, "not found")?;
            tx.commit()?;
            return Err(DeadLetterError::NotFound(id));
        };
        let seq = next_seq(&tx)?;
        let sealed = match reseal(&stream, &body, seq) {
            Ok(s) => s,
            Err(why) => {
                audit_in(&tx, who, "retry", &target, &format!("kept: {why}"))?;
                tx.commit()?;
                return Err(DeadLetterError::Seal(why));
            }
        };
        let used = used_bytes(&tx)?;
        if used + sealed.len() as u64 > max_spool_bytes {
            audit_in(&tx, who, "retry", &target, "kept: the upload queue is full")?;
            tx.commit()?;
            return Err(DeadLetterError::SpoolFull {
                used,
                max: max_spool_bytes,
            });
        }
        tx.execute(
            "INSERT INTO uplink_outbox (seq, module, stream, created_at, records, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![seq as i64, module, stream, now_secs(), records, sealed],
        )?;
        tx.execute(
            "INSERT INTO uplink_meta (key, value) VALUES ('last_seq', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![seq as i64],
        )?;
        set_used_bytes(&tx, used + sealed.len() as u64)?;
        match id.source {
            Source::Guard => tx.execute(
                "DELETE FROM uplink_guard_deadletter WHERE id = ?1",
                params![id.n],
            )?,
            Source::Cloud => tx.execute(
                "DELETE FROM uplink_deadletter WHERE seq = ?1",
                params![id.n],
            )?,
        };
        bump(&tx, "queued", 1)?;
        bump(&tx, "retried-dead-letters", 1)?;
        audit_in(
            &tx,
            who,
            "retry",
            &target,
            &format!("queued as batch {seq}"),
        )?;
        tx.commit()?;
        Ok(seq)
    }

    /// The audit of operator actions, newest first, at most `limit`.
    pub fn audit(&self, limit: i64) -> Result<Vec<AuditEntry>, DbError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, who, action, target, outcome FROM uplink_deadletter_audit
             ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], |r| {
            Ok(AuditEntry {
                id: r.get(0)?,
                at: r.get(1)?,
                who: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                outcome: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn audit_in(
    conn: &rusqlite::Connection,
    who: &str,
    action: &str,
    target: &str,
    outcome: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO uplink_deadletter_audit (at, who, action, target, outcome) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now_secs(), who, action, target, outcome],
    )?;
    conn.execute(
        "DELETE FROM uplink_deadletter_audit WHERE id <= (SELECT MAX(id) FROM uplink_deadletter_audit) - ?1",
        params![MAX_AUDIT_ENTRIES],
    )?;
    Ok(())
}
