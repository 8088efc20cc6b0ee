//! Uplink: what a module queues, on its way to the vendor's cloud.
//!
//! `uplink.enqueue(stream, batch)` →
//! 1. grant check (stream) and size check (in the WIT host impl);
//! 2. WIT records → wire records ([`convert`]);
//! 3. the host's own PHI guard ([`guard`]): a batch that fails is not queued;
//!    the refused record is kept, sealed, in the dead letters
//!    ([`crate::store::deadletter`]; `outpost uplink dead-letters` lists,
//!    retries and discards them), the refusal is counted (`guard-refused`,
//!    `guard-dead-letter:<stream>`), logged without the value, published as
//!    [`HostEvent::DeadLettered`] and raised as a
//!    `uplink-guard-refused:<module>` setting problem. If the record cannot
//!    be kept (dead-letter store full or unwritable) the module hears
//!    `unavailable` and keeps its data: nothing is refused into nowhere;
//! 4. JSON → zstd → AES-256-GCM under the device key, AAD binding device id,
//!    stream and sequence (`outpost-protocol`);
//! 5. the durable spool ([`crate::store::spool`]), committed before the module
//!    hears "queued";
//! 6. the [`sender`] delivers oldest first and forgets a batch once the cloud
//!    acknowledged its sequence.
//!
//! Before enrolment there is no key, so nothing is queued: the collector is
//! not scheduled and a `device-not-enrolled` setting problem is raised.

pub mod convert;
pub mod enroll;
pub mod guard;
pub mod identity;
pub mod problem;
pub mod sender;

use crate::events::{Events, HostEvent, Setting};
use crate::store::deadletter::{DeadLetterError, DeadLetterId, Kept, Refusal, Source};
use crate::store::spool::{Spool, SpoolError, StateWrite};
use identity::Identity;
use outpost_protocol as p;
use std::sync::{Arc, RwLock};

/// Default bound of the spool (all envelopes), in bytes.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 << 20;

/// Why a batch was not queued. Nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// No device identity yet.
    #[error("this device is not enrolled; run `outpost enroll`")]
    NotEnrolled,
    /// The PHI guard found an identifier.
    #[error("refused by the host's patient-data guard: {0}")]
    Guard(guard::Violation),
    /// The stream name is not a valid wire stream name.
    #[error("invalid stream name")]
    BadStream,
    /// Spool full of batches that are never dropped, or unwritable.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The guard refused a record and it could not be kept as a dead
    /// letter: nothing was queued or refused; the module keeps its data.
    #[error("a refused record could not be kept: {0}")]
    DeadLetter(DeadLetterError),
}

/// The uplink service shared by every module call and the sender.
pub struct Uplink {
    spool: Spool,
    events: Events,
    identity: RwLock<Option<Arc<Identity>>>,
    max_bytes: std::sync::atomic::AtomicU64,
    queued: tokio::sync::Notify,
    /// A spool problem raised and not yet resolved (full, unwritable).
    spool_problem: std::sync::Mutex<Option<Setting>>,
}

impl Uplink {
    /// An uplink over `spool` with no identity yet.
    pub fn new(spool: Spool, events: Events) -> Uplink {
        Uplink {
            spool,
            events,
            identity: RwLock::new(None),
            max_bytes: DEFAULT_SPOOL_MAX_BYTES.into(),
            queued: tokio::sync::Notify::new(),
            spool_problem: std::sync::Mutex::new(None),
        }
    }

    /// A batch was queued: a spool problem raised before is over.
    fn resolve_spool_problem(&self) {
        let raised = self
            .spool_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(setting) = raised {
            self.events.emit(HostEvent::SettingResolved { setting });
        }
    }

    /// Use `identity` from now on.
    pub fn set_identity(&self, identity: Option<Identity>) {
        *self.identity.write().unwrap_or_else(|p| p.into_inner()) = identity.map(Arc::new);
    }

    /// The current identity.
    pub fn identity(&self) -> Option<Arc<Identity>> {
        self.identity
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Bound the spool to `bytes`.
    pub fn set_max_bytes(&self, bytes: u64) {
        self.max_bytes
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// The spool.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Guard, seal and durably queue `records` from `module` on `stream`;
    /// returns the batch's sequence number once committed.
    pub fn enqueue(
        &self,
        module: &str,
        stream: &str,
        records: Vec<p::Record>,
    ) -> Result<u64, EnqueueError> {
        self.enqueue_with_state(module, stream, records, None)
    }

    /// [`Uplink::enqueue`], writing `state` (a module state entry, e.g. a
    /// file cursor) in the same transaction as the batch.
    pub fn enqueue_with_state(
        &self,
        module: &str,
        stream: &str,
        records: Vec<p::Record>,
        state: Option<StateWrite<'_>>,
    ) -> Result<u64, EnqueueError> {
        let id = self.identity().ok_or(EnqueueError::NotEnrolled)?;
        p::validate_stream(stream).map_err(|_| EnqueueError::BadStream)?;
        if let Err(v) = guard::check(&records) {
            let kept = match self.keep_refused(&id, module, stream, &records[v.record], &v) {
                Ok(kept) => kept,
                Err(e) => {
                    tracing::error!(module, stream, violation = %v, error = %e, "a record refused by the PHI guard could not be kept; the module keeps its data");
                    self.events.emit(HostEvent::problem(
                        Setting::UplinkGuardRefused(module.to_owned()),
                        format!("a record from module `{module}` on stream `{stream}` was refused ({v}) and could not be kept aside: {e}"),
                    ));
                    return Err(EnqueueError::DeadLetter(e));
                }
            };
            let _ = self.spool.count("guard-refused", 1);
            tracing::warn!(module, stream, violation = %v, dead_letter = %kept.id, "record refused by the PHI guard; kept as a dead letter, batch not queued");
            self.events.emit(HostEvent::DeadLettered {
                id: kept.id.to_string(),
                source: Source::Guard,
                module: module.to_owned(),
                stream: stream.to_owned(),
                reason: finding_code(v.finding),
                field: Some(v.field.to_owned()),
                repeated: !kept.new,
            });
            self.events.emit(HostEvent::problem(
                Setting::UplinkGuardRefused(module.to_owned()),
                format!("a record from module `{module}` on stream `{stream}` was not sent ({v}); it is kept as dead letter {} (`outpost uplink dead-letters`)", kept.id),
            ));
            return Err(EnqueueError::Guard(v));
        }
        let n = records.len();
        let body = p::BatchBody {
            created_at: crate::store::now_secs(),
            records,
        };
        let compressed = serde_json::to_vec(&body)
            .map_err(|e| e.to_string())
            .and_then(|json| p::compress(&json).map_err(|e| e.to_string()))
            .map_err(|e| EnqueueError::Spool(SpoolError::Seal(e)))?;
        let max = self.max_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let appended = self.spool.append(module, stream, n, max, state, |seq| {
            p::seal_compressed(&id.key, &id.device_id, stream, seq, &compressed)
                .map_err(|e| e.to_string())
        });
        match appended {
            Ok(a) => {
                for (dropped_stream, count) in &a.dropped {
                    tracing::warn!(stream = %dropped_stream, count, "spool full: oldest batches dropped");
                    self.events.emit(HostEvent::problem(
                        Setting::UplinkDropped(dropped_stream.clone()),
                        format!(
                            "the upload queue is full: {count} oldest batch(es) of `{dropped_stream}` dropped to make room (QC and maintenance are never dropped)"
                        ),
                    ));
                }
                self.queued.notify_one();
                self.resolve_spool_problem();
                Ok(a.seq)
            }
            Err(e) => {
                let setting = match &e {
                    // The module's own mistake (key, quota): not a host problem.
                    SpoolError::State(_) => return Err(EnqueueError::Spool(e)),
                    SpoolError::Full { .. } => {
                        let _ = self.spool.count("spool-full", 1);
                        Setting::UplinkSpoolFull
                    }
                    _ => Setting::UplinkSpoolUnwritable,
                };
                tracing::error!(module, stream, error = %e, "batch not queued");
                *self.spool_problem.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(setting.clone());
                self.events.emit(HostEvent::problem(
                    setting,
                    format!("a batch from module `{module}` was not queued: {e}"),
                ));
                Err(EnqueueError::Spool(e))
            }
        }
    }

    /// Keep `record`, refused by the guard for `v`, sealed in the dead
    /// letters (one-record batch, the row id as its sequence).
    fn keep_refused(
        &self,
        id: &Identity,
        module: &str,
        stream: &str,
        record: &p::Record,
        v: &guard::Violation,
    ) -> Result<Kept, DeadLetterError> {
        use hmac::Mac;
        let json = serde_json::to_vec(record).map_err(|e| DeadLetterError::Seal(e.to_string()))?;
        use sha2::Digest;
        // A key of its own for the digest, derived from the device key (the
        // device key itself only ever seals).
        let digest_key = sha2::Sha256::new()
            .chain_update(b"outpost dead-letter digest key\0")
            .chain_update(id.key.as_bytes())
            .finalize();
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&digest_key)
            .map_err(|e| DeadLetterError::Seal(e.to_string()))?;
        mac.update(module.as_bytes());
        mac.update(b"\0");
        mac.update(stream.as_bytes());
        mac.update(b"\0");
        mac.update(&json);
        let digest = mac.finalize().into_bytes();
        let finding = finding_code(v.finding);
        let refusal = Refusal {
            module,
            stream,
            finding: &finding,
            field: v.field,
            digest: &digest,
        };
        self.spool.dead_letters().keep_refused(refusal, |row| {
            let body = p::BatchBody {
                created_at: crate::store::now_secs(),
                records: vec![record.clone()],
            };
            p::seal(&id.key, &id.device_id, stream, row as u64, &body).map_err(|e| e.to_string())
        })
    }

    /// Put dead letter `dl` back in the outbox (audited as done by `who`):
    /// opened with the device key, checked by the guard again (a record it
    /// still refuses stays where it is, and the audit says why), resealed
    /// under a new sequence. Returns the new sequence.
    pub fn retry_dead_letter(&self, dl: DeadLetterId, who: &str) -> Result<u64, DeadLetterError> {
        let id = self
            .identity()
            .ok_or_else(|| DeadLetterError::Seal("this device is not enrolled".into()))?;
        let max = self.max_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let seq = self
            .spool
            .dead_letters()
            .requeue(dl, who, max, |stream, sealed, seq| {
                let opened = p::open(&id.key, sealed).map_err(|e| format!("cannot open: {e}"))?;
                guard::check(&opened.body.records)
                    .map_err(|v| format!("refused by the guard again: {v}"))?;
                p::seal(&id.key, &id.device_id, stream, seq, &opened.body)
                    .map_err(|e| e.to_string())
            })?;
        self.queued.notify_one();
        Ok(seq)
    }

    /// Send batch `seq` again under a new sequence (the cloud holds `seq`
    /// with other content): opened and resealed with this device's key.
    pub fn renumber(&self, seq: i64) -> Result<u64, SpoolError> {
        let Some(id) = self.identity() else {
            return Err(SpoolError::Seal("not enrolled".into()));
        };
        self.spool.renumber(seq, |old, new_seq| {
            let (header, plain) = p::open_bytes(&id.key, old)
                .map(|(h, plain, _)| (h, plain))
                .map_err(|e| e.to_string())?;
            p::seal_bytes(&id.key, &id.device_id, &header.stream, new_seq, &plain)
                .map_err(|e| e.to_string())
        })
    }

    /// Resolves when a batch was queued since the last call (the sender's wake-up).
    pub async fn queued(&self) {
        self.queued.notified().await
    }

    /// Open a spooled batch with this device's key (local inspection and
    /// tests; the host never needs the plaintext again after sealing).
    pub fn read_back(&self, seq: i64) -> anyhow::Result<p::BatchBody> {
        let id = self
            .identity()
            .ok_or_else(|| anyhow::anyhow!("not enrolled"))?;
        let envelope = self.spool.body(seq)?;
        Ok(p::open(&id.key, &envelope)
            .map_err(|e| anyhow::anyhow!("batch {seq}: {e}"))?
            .body)
    }
}

/// The stable code of a guard finding (`ssn`, `person-name`, ...).
fn finding_code(f: guard::Finding) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| f.describe().to_owned())
}
