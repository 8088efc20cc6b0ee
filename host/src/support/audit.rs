//! The audit chain: append-only, hash-chained entries (each holds the hash
//! of the one before), so that an edited, removed or reordered entry is
//! found by [`AuditChain::verify`], which names the first bad entry.
//!
//! Entry hash = SHA-256(`"outpost-audit-v1"` ‖ previous hash ‖ seq ‖ at ‖
//! kind ‖ session ‖ detail), integers big-endian, texts length-prefixed
//! (u32). The first entry's previous hash is 32 zero bytes.
//!
//! Checkpoints: every [`CHECKPOINT_EVERY`] entries and at each session's
//! end the host signs (seq, hash) of the latest entry with an Ed25519 key
//! derived from the device key ([`checkpoint_key`]; the cloud, which holds
//! the device key, can derive its public half). Someone who can write the
//! database but not read `device.json` can then neither rewrite the chain up
//! to a checkpoint nor cut entries a checkpoint covers without `verify`
//! saying so.
//!
//! Architecture Invariant: entries hold ids, names, reasons and counts —
//! never a password, a key or anything from a file or the screen.

use crate::store::{Db, DbError};
use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The chain's table (created at open).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_chain (
    seq     INTEGER PRIMARY KEY,
    at_ms   INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    session TEXT NOT NULL,
    detail  TEXT NOT NULL,
    prev    TEXT NOT NULL,
    hash    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoint (
    seq        INTEGER PRIMARY KEY,
    hash       TEXT NOT NULL,
    at_ms      INTEGER NOT NULL,
    public_key TEXT NOT NULL,
    signature  BLOB NOT NULL
);
";

/// A checkpoint is signed at least every this many entries.
pub const CHECKPOINT_EVERY: i64 = 64;
const CHECKPOINT_DOMAIN: &[u8] = b"outpost-audit-checkpoint-v1";

/// The checkpoint key of a device: Ed25519 from HMAC-SHA256(device key,
/// `"outpost-audit-checkpoint-v1"`), so the device key itself signs nothing.
pub fn checkpoint_key(device_key: &[u8; 32]) -> ed25519_dalek::SigningKey {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(device_key).expect("HMAC takes any key length");
    mac.update(CHECKPOINT_DOMAIN);
    let seed: [u8; 32] = mac.finalize().into_bytes().into();
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

fn checkpoint_message(seq: i64, hash: &str) -> Vec<u8> {
    let mut m = CHECKPOINT_DOMAIN.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash.as_bytes());
    m
}

const DOMAIN: &[u8] = b"outpost-audit-v1";
const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position (1, 2, 3 ...).
    pub seq: i64,
    /// When (Unix milliseconds).
    pub at_ms: i64,
    /// What happened (`support-request`, `auth-failed`, `locked-out`,
    /// `approval`, `session-started`, `permission-use`, `session-ended` ...).
    pub kind: String,
    /// The support session it is about ("" if none).
    pub session: String,
    /// Details as JSON (ids, reasons, permissions; never secrets).
    pub detail: String,
    /// The previous entry's hash (hex).
    pub prev: String,
    /// This entry's hash (hex).
    pub hash: String,
}

/// The first entry that does not hold.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BadEntry {
    /// Its position.
    pub seq: i64,
    /// What is wrong with it.
    pub problem: String,
}

/// Result of a verification.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Verification {
    /// Entries checked.
    pub entries: u64,
    /// The hash of the last entry (hex).
    pub head: String,
    /// The first bad entry, if any.
    pub first_bad: Option<BadEntry>,
    /// Signed checkpoints that held.
    pub checkpoints: u64,
    /// The last entry a valid checkpoint covers.
    pub checkpointed_seq: i64,
}

fn entry_hash(prev: &str, seq: i64, at_ms: i64, kind: &str, session: &str, detail: &str) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(prev.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    for t in [kind, session, detail] {
        h.update((t.len() as u32).to_be_bytes());
        h.update(t.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Append an entry inside the caller's transaction (so that it commits with
/// the change it records).
pub fn append_in(
    tx: &Transaction<'_>,
    at_ms: i64,
    kind: &str,
    session: &str,
    detail: &serde_json::Value,
) -> rusqlite::Result<i64> {
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, ZERO_HASH.to_owned()),
    };
    let detail = detail.to_string();
    let hash = entry_hash(&prev, seq, at_ms, kind, session, &detail);
    tx.execute(
        "INSERT INTO audit_chain (seq, at_ms, kind, session, detail, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![seq, at_ms, kind, session, detail, prev, hash],
    )?;
    Ok(seq)
}

/// The audit chain of a database.
#[derive(Clone)]
pub struct AuditChain {
    db: Db,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get(0)?,
        at_ms: r.get(1)?,
        kind: r.get(2)?,
        session: r.get(3)?,
        detail: r.get(4)?,
        prev: r.get(5)?,
        hash: r.get(6)?,
    })
}

const COLUMNS: &str = "seq, at_ms, kind, session, detail, prev, hash";

impl AuditChain {
    /// The chain kept in `db`.
    pub fn new(db: Db) -> AuditChain {
        AuditChain { db }
    }

    /// Append one entry in its own transaction.
    pub fn append(
        &self,
        at_ms: i64,
        kind: &str,
        session: &str,
        detail: &serde_json::Value,
    ) -> Result<i64, DbError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let seq = append_in(&tx, at_ms, kind, session, detail)?;
        tx.commit()?;
        Ok(seq)
    }

    /// Entries in order; only those of `session` if given; the last `limit`.
    pub fn entries(&self, session: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>, DbError> {
        let conn = self.db.lock();
        let mut out = match session {
            Some(s) => {
                let mut st = conn.prepare(&format!(
                    "SELECT {COLUMNS} FROM audit_chain WHERE session = ?1 ORDER BY seq DESC LIMIT ?2"
                ))?;
                st.query_map(params![s, limit], row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            }
            None => {
                let mut st = conn.prepare(&format!(
                    "SELECT {COLUMNS} FROM audit_chain ORDER BY seq DESC LIMIT ?1"
                ))?;
                st.query_map(params![limit], row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            }
        };
        out.reverse();
        Ok(out)
    }

    /// Up to `limit` entries after `seq`, in order (the upload's cursor).
    pub fn after(&self, seq: i64, limit: u32) -> Result<Vec<AuditEntry>, DbError> {
        let conn = self.db.lock();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit_chain WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        Ok(st
            .query_map(params![seq, limit], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Sign a checkpoint of the latest entry with `key` (nothing if that
    /// entry has one already). Returns the entry's seq.
    pub fn checkpoint(
        &self,
        key: &ed25519_dalek::SigningKey,
        at_ms: i64,
    ) -> Result<Option<i64>, DbError> {
        use ed25519_dalek::Signer as _;
        let conn = self.db.lock();
        let last: Option<(i64, String)> = conn
            .query_row(
                "SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((seq, hash)) = last else {
            return Ok(None);
        };
        let sig = key.sign(&checkpoint_message(seq, &hash));
        let public: String = key
            .verifying_key()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        conn.execute(
            "INSERT OR IGNORE INTO audit_checkpoint (seq, hash, at_ms, public_key, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![seq, hash, at_ms, public, sig.to_bytes().as_slice()],
        )?;
        Ok(Some(seq))
    }

    /// Entries since the last checkpoint.
    pub fn since_checkpoint(&self) -> Result<i64, DbError> {
        let conn = self.db.lock();
        Ok(conn.query_row(
            "SELECT COALESCE((SELECT MAX(seq) FROM audit_chain), 0) - COALESCE((SELECT MAX(seq) FROM audit_checkpoint), 0)",
            [],
            |r| r.get(0),
        )?)
    }

    /// Walk the whole chain; the first entry whose position, link or hash
    /// does not hold is named. With `key` (the device's checkpoint key),
    /// every checkpoint must verify and match its entry.
    pub fn verify(
        &self,
        key: Option<&ed25519_dalek::VerifyingKey>,
    ) -> Result<Verification, DbError> {
        let conn = self.db.lock();
        let mut checkpoints: std::collections::BTreeMap<i64, (String, Vec<u8>)> = {
            let mut st = conn.prepare("SELECT seq, hash, signature FROM audit_checkpoint")?;
            st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
                .collect::<rusqlite::Result<_>>()?
        };
        let mut st = conn.prepare(&format!("SELECT {COLUMNS} FROM audit_chain ORDER BY seq"))?;
        let mut rows = st.query([])?;
        let mut expect_seq = 1i64;
        let mut prev = ZERO_HASH.to_owned();
        let mut entries = 0u64;
        let (mut good_checkpoints, mut checkpointed_seq) = (0u64, 0i64);
        let bad = |entries, head: String, seq, problem: String, c: u64, cs: i64| Verification {
            entries,
            head,
            first_bad: Some(BadEntry { seq, problem }),
            checkpoints: c,
            checkpointed_seq: cs,
        };
        while let Some(r) = rows.next()? {
            let e = row(r)?;
            entries += 1;
            let problem = if e.seq != expect_seq {
                Some(format!(
                    "expected entry {expect_seq} here: entries are missing"
                ))
            } else if e.prev != prev {
                Some("does not link to the entry before it".to_owned())
            } else if entry_hash(&e.prev, e.seq, e.at_ms, &e.kind, &e.session, &e.detail) != e.hash
            {
                Some("its content does not match its hash (edited)".to_owned())
            } else if let Some((hash, sig)) = checkpoints.remove(&e.seq) {
                let signed = key.map(|k| {
                    ed25519_dalek::Signature::from_slice(&sig)
                        .ok()
                        .is_some_and(|s| {
                            k.verify_strict(&checkpoint_message(e.seq, &hash), &s)
                                .is_ok()
                        })
                });
                if hash != e.hash {
                    Some("differs from the signed checkpoint of this entry".to_owned())
                } else if signed == Some(false) {
                    Some(
                        "its checkpoint signature does not verify with this device's key"
                            .to_owned(),
                    )
                } else {
                    if signed == Some(true) {
                        good_checkpoints += 1;
                        checkpointed_seq = e.seq;
                    }
                    None
                }
            } else {
                None
            };
            if let Some(problem) = problem {
                return Ok(bad(
                    entries,
                    prev,
                    e.seq,
                    problem,
                    good_checkpoints,
                    checkpointed_seq,
                ));
            }
            prev = e.hash;
            expect_seq += 1;
        }
        if let Some((&seq, _)) = checkpoints.iter().next() {
            return Ok(bad(
                entries,
                prev,
                seq,
                format!(
                    "a checkpoint covers entry {seq}, which is gone (entries removed from the end)"
                ),
                good_checkpoints,
                checkpointed_seq,
            ));
        }
        Ok(Verification {
            entries,
            head: prev,
            first_bad: None,
            checkpoints: good_checkpoints,
            checkpointed_seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain() -> (tempfile::TempDir, Db, AuditChain) {
        let d = tempfile::tempdir().unwrap();
        let db = Db::open(d.path()).unwrap();
        let c = AuditChain::new(db.clone());
        for i in 0..5 {
            c.append(1_000 + i, "support-request", "S1", &json!({ "i": i }))
                .unwrap();
        }
        assert_eq!(c.since_checkpoint().unwrap(), 5);
        assert_eq!(
            c.checkpoint(&checkpoint_key(&[7; 32]), 2_000).unwrap(),
            Some(5)
        );
        assert_eq!(c.since_checkpoint().unwrap(), 0);
        (d, db, c)
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let (_d, _db, c) = chain();
        let v = c.verify(None).unwrap();
        assert_eq!(v.entries, 5);
        assert_eq!(v.first_bad, None);
        assert_eq!(c.entries(None, 2).unwrap()[1].seq, 5);
        assert_eq!(c.entries(Some("S1"), 100).unwrap().len(), 5);
        assert!(c.entries(Some("S2"), 100).unwrap().is_empty());
    }

    #[test]
    fn checkpoints_verify_only_with_this_devices_key() {
        let (_d, db, c) = chain();
        let mine = checkpoint_key(&[7; 32]).verifying_key();
        let v = c.verify(Some(&mine)).unwrap();
        assert_eq!(
            (v.first_bad, v.checkpoints, v.checkpointed_seq),
            (None, 1, 5)
        );
        let other = checkpoint_key(&[8; 32]).verifying_key();
        let bad = c.verify(Some(&other)).unwrap().first_bad.unwrap();
        assert_eq!(bad.seq, 5);
        assert!(bad.problem.contains("signature"), "{}", bad.problem);
        // Rewriting the whole chain consistently still breaks the checkpoint.
        db.lock()
            .execute_batch("UPDATE audit_checkpoint SET signature = zeroblob(64)")
            .unwrap();
        assert!(c.verify(Some(&mine)).unwrap().first_bad.is_some());
    }

    #[test]
    fn edits_removals_and_relinks_are_named() {
        let check = |sql: &str, seq: i64, word: &str| {
            let (_d, db, c) = chain();
            db.lock().execute_batch(sql).unwrap();
            let bad = c.verify(None).unwrap().first_bad.expect(sql);
            assert_eq!(bad.seq, seq, "{sql}");
            assert!(bad.problem.contains(word), "{sql}: {}", bad.problem);
        };
        check(
            "UPDATE audit_chain SET detail = '{\"i\":9}' WHERE seq = 3",
            3,
            "edited",
        );
        check(
            "UPDATE audit_chain SET at_ms = 0 WHERE seq = 2",
            2,
            "edited",
        );
        check("DELETE FROM audit_chain WHERE seq = 2", 3, "missing");
        check(
            "UPDATE audit_checkpoint SET hash = (SELECT hash FROM audit_chain WHERE seq = 4)",
            5,
            "checkpoint",
        );
        check("DELETE FROM audit_chain WHERE seq = 5", 5, "gone");
        check(
            "UPDATE audit_chain SET prev = (SELECT hash FROM audit_chain WHERE seq = 1) WHERE seq = 4",
            4,
            "link",
        );
    }
}
