//! The support audit's upload (#16): every entry of the hash-chained audit
//! ([`super::audit`]) goes to the vendor's cloud through the uplink as the
//! host-owned stream [`STREAM`] (module [`MODULE`]), in order, each entry
//! once, even across restarts.
//!
//! * **Once, in order:** a cursor (the last queued entry's `seq`, in the
//!   host's own module state, key [`CURSOR_KEY`]) is written in the same
//!   transaction as the batch that carries the entries up to it
//!   ([`Uplink::enqueue_with_state`]): after a crash either both are there
//!   or neither. The spool then delivers at least once and the cloud
//!   deduplicates by (device, sequence).
//! * **Never dropped:** `support-audit` is not among the spool's droppable
//!   streams ([`crate::store::spool::DROPPABLE_STREAMS`]); a full spool
//!   refuses the batch, the cursor stays, and the entries wait in the chain
//!   until there is room. Not enrolled yet: they wait too.
//! * **No file names:** a file-transfer entry may name a patient's file.
//!   Uploaded, it carries the name's keyed hash (HMAC-SHA256 under a random
//!   key kept only in this PC's database, [`NAME_KEY`]: the cloud can match
//!   two transfers of one file but cannot test a guessed name), its size,
//!   content hash, direction and whether it was done, and no free text; the
//!   plain name and the refusal's words stay in the local chain
//!   (`outpost audit show`). Every other entry goes as it is, through the
//!   PHI guard like any record; one the guard refuses is kept sealed as a
//!   dead letter (`outpost uplink dead-letters`) and the cursor passes it.
//!
//! The uploaded `hash` and `prev` are the local chain's, so the cloud can
//! check the linkage (and, for every entry but file transfers, recompute
//! the hash); the signed checkpoints stay local.

use super::audit::{AuditChain, AuditEntry};
use crate::store::spool::StateWrite;
use crate::store::state::ModuleState;
use crate::store::{Db, DbError};
use crate::uplink::{EnqueueError, Uplink};
use hmac::{Hmac, Mac};
use outpost_protocol as p;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// The uplink stream of the support audit.
pub const STREAM: &str = "support-audit";
/// The module name the host's own audit is queued under.
pub const MODULE: &str = crate::runtime::NOTIFICATIONS_MODULE;
/// The host's state key of the last queued entry's `seq`.
pub const CURSOR_KEY: &str = "support-audit-cursor";
/// The host's state key of the file-name hash key (32 random bytes).
pub const NAME_KEY: &str = "support-audit-name-key";
/// Most entries in one batch.
pub const BATCH_ENTRIES: u32 = 200;
/// How often the chain is looked at for new entries.
pub const UPLOAD_PERIOD: Duration = Duration::from_secs(1);
/// The host's own state quota (its few keys).
const HOST_STATE_QUOTA_BYTES: u64 = 64 << 10;

/// Why entries were not queued (they wait in the chain; nothing is lost).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The chain or the host's state could not be read.
    #[error("the support audit could not be read: {0}")]
    Db(#[from] DbError),
    /// The host's state (cursor, name key) could not be read or written.
    #[error("the support audit's upload cursor: {0}")]
    State(#[from] crate::store::state::StateError),
    /// The uplink did not take the batch (not enrolled, spool full...).
    #[error("the support audit was not queued: {0}")]
    Enqueue(#[from] EnqueueError),
}

/// Queues the audit chain of a database on its uplink.
pub struct AuditUpload {
    chain: AuditChain,
    state: ModuleState,
    uplink: Arc<Uplink>,
}

impl AuditUpload {
    /// The upload of `db`'s chain through `uplink`.
    pub fn new(db: Db, uplink: Arc<Uplink>) -> AuditUpload {
        AuditUpload {
            chain: AuditChain::new(db.clone()),
            state: ModuleState::new(db, MODULE, HOST_STATE_QUOTA_BYTES),
            uplink,
        }
    }

    /// The `seq` of the last entry queued (0: none yet).
    pub fn cursor(&self) -> Result<i64, UploadError> {
        Ok(self
            .state
            .get(CURSOR_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, i64::from_be_bytes))
    }

    /// The key of file names' hashes, made on first use.
    fn name_key(&self) -> Result<Vec<u8>, UploadError> {
        if let Some(k) = self.state.get(NAME_KEY)?.filter(|k| k.len() == 32) {
            return Ok(k);
        }
        let mut k = vec![0u8; 32];
        OsRng.fill_bytes(&mut k);
        self.state.set(NAME_KEY, &k)?;
        Ok(k)
    }

    /// Queue every entry after the cursor; returns how many entries the
    /// cursor passed (queued, or refused by the guard and kept as dead
    /// letters).
    pub fn run_once(&self) -> Result<usize, UploadError> {
        let mut passed = 0;
        loop {
            let cursor = self.cursor()?;
            let entries = self.chain.after(cursor, BATCH_ENTRIES)?;
            if entries.is_empty() {
                return Ok(passed);
            }
            let key = self.name_key()?;
            let records: Vec<p::Record> = entries
                .iter()
                .map(|e| p::Record::SupportAudit(for_upload(e, &key)))
                .collect();
            match self.queue(records, entries.last().map_or(cursor, |e| e.seq)) {
                Ok(()) => passed += entries.len(),
                Err(EnqueueError::Guard(v)) => {
                    // The refused entry is a dead letter now: queue those
                    // before it, then move the cursor past it.
                    let refused = &entries[v.record];
                    if v.record > 0 {
                        let before: Vec<p::Record> = entries[..v.record]
                            .iter()
                            .map(|e| p::Record::SupportAudit(for_upload(e, &key)))
                            .collect();
                        self.queue(before, entries[v.record - 1].seq)?;
                    }
                    self.state.set(CURSOR_KEY, &refused.seq.to_be_bytes())?;
                    tracing::warn!(target: "outpost.support", seq = refused.seq, kind = %refused.kind, violation = %v, "support audit entry refused by the PHI guard; kept as a dead letter");
                    passed += v.record + 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn queue(&self, records: Vec<p::Record>, last: i64) -> Result<(), EnqueueError> {
        let cursor = last.to_be_bytes();
        self.uplink
            .enqueue_with_state(
                MODULE,
                STREAM,
                records,
                Some(StateWrite {
                    key: CURSOR_KEY,
                    value: &cursor,
                    quota: HOST_STATE_QUOTA_BYTES,
                }),
            )
            .map(|_| ())
    }

    /// Look for new entries every [`UPLOAD_PERIOD`] until the runtime ends.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPLOAD_PERIOD);
            let mut last_error = String::new();
            loop {
                tick.tick().await;
                match self.run_once() {
                    Ok(_) => last_error.clear(),
                    // Not enrolled yet: the entries wait quietly.
                    Err(UploadError::Enqueue(EnqueueError::NotEnrolled)) => {}
                    Err(e) => {
                        let text = e.to_string();
                        if text != last_error {
                            tracing::warn!(target: "outpost.support", error = %text, "support audit waits in the chain");
                            last_error = text;
                        }
                    }
                }
            }
        })
    }
}

/// The uploaded form of `e`: file-transfer entries without the file's name
/// (its keyed hash instead) and without free text.
pub fn for_upload(e: &AuditEntry, name_key: &[u8]) -> p::SupportAuditEntry {
    let mut out = p::SupportAuditEntry {
        seq: e.seq,
        at_ms: e.at_ms,
        entry_kind: e.kind.clone(),
        session: e.session.clone(),
        detail: e.detail.clone(),
        prev: e.prev.clone(),
        hash: e.hash.clone(),
        file: None,
    };
    if e.kind == "file-transfer" {
        let d: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
        let name = d["name"].as_str().unwrap_or_default();
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(name_key).expect("HMAC takes any key length");
        mac.update(name.as_bytes());
        out.file = Some(p::SupportAuditFile {
            name_hmac: mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            size: d["size"].as_u64().unwrap_or_default(),
            sha256: d["sha256"].as_str().unwrap_or_default().to_owned(),
            direction: d["direction"].as_str().unwrap_or_default().to_owned(),
            done: d["outcome"].as_str() == Some("done"),
        });
        out.detail = "{}".into();
    }
    out
}
