//! The cloud's SQLite store: every device detail and every batch is
//! encrypted at rest with AES-256-GCM under the server key.
//!
//! A sealed column is `nonce (12 random bytes) | ciphertext | tag (16)`. The
//! AAD is a domain string followed by length-prefixed context, so a blob
//! cannot be moved to another row, table or device:
//!
//! | table | sealed content | AAD |
//! | --- | --- | --- |
//! | `devices` | JSON of e-mail, name, instrument model/id, serial, device key (hex) | `"outpost-cloud/device/v1"`, u8 len, device id |
//! | `batches` | the zstd plaintext exactly as it came out of the envelope | `"outpost-cloud/batch/v1"`, u8 len, device id, u8 len, stream, u64 BE sequence |
//! | `device_status` | JSON of the last heartbeat body | `"outpost-cloud/status/v1"`, u8 len, device id |
//! | `quarantine` | batches the scanner flagged ([`crate::quarantine`]) | `"outpost-cloud/quarantine/v1"`, as for `batches` |
//!
//! Files in the data directory: `cloud.db` (WAL mode, `synchronous=FULL`)
//! and `server.key` (32 random bytes, created on first open, mode 0600 on
//! Unix). Losing `server.key` makes every stored row unreadable.
//!
//! Plaintext columns are limited to routing metadata: device id, stream,
//! sequence, times and record counts; and the operator's alerts
//! ([`crate::defence`]: kind, reason, source address, device id, block length).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use outpost_protocol::{
    BatchBody, DeviceId, DeviceKey, EnvelopeHeader, HeartbeatBody, MAX_PLAINTEXT_BYTES,
    decompress_bounded,
};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::atrest::{AAD_BATCH, AAD_DEVICE, AAD_STATUS, ServerKey, aad};
use crate::defence::{Alert, AlertKind};

/// Name of the database file in the data directory.
pub const DB_FILE: &str = "cloud.db";
/// Name of the server key file in the data directory.
pub const KEY_FILE: &str = "server.key";

/// Every counter reason the server uses.
pub const COUNTER_REASONS: &[&str] = &[
    "accepted",
    "heartbeat",
    "bad-envelope",
    "authentication-failed",
    "unknown-device",
    "replay",
    "sequence-conflict",
    "too-large",
    "unauthorized-enrollment",
    "stale-heartbeat",
    "slow-client",
    "connection-cap",
    "address-cap",
    "enrollment-rate-limited",
    "rate-limited",
    "source-blocked",
    "quarantined",
    "scanner-unavailable",
];

/// An enrolled device, decrypted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeviceInfo {
    /// The device id.
    pub device_id: DeviceId,
    /// When it enrolled, unix seconds.
    pub created_at: i64,
    /// Contact e-mail.
    pub email: String,
    /// Contact name.
    pub name: String,
    /// Instrument model.
    pub instrument_model: String,
    /// The lab's instrument identifier.
    pub instrument_id: String,
    /// Instrument serial.
    pub serial: String,
    /// The device's remote-support public key (64 hex digits): the Ed25519
    /// key derived from its envelope key that signs its end of every
    /// support channel (`outpost_support_proto::pc::device_identity_key`).
    /// Support engineers pass it as `outpost-support --device-key`.
    pub support_key: String,
}

impl std::fmt::Debug for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Personal data is not printed through Debug (logs).
        f.debug_struct("DeviceInfo")
            .field("device_id", &self.device_id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// What enrolment stores about a device (the sealed JSON of a devices row).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SealedDevice {
    email: String,
    name: String,
    instrument_model: String,
    instrument_id: String,
    serial: String,
    device_key: String,
}

impl Drop for SealedDevice {
    fn drop(&mut self) {
        self.device_key.zeroize();
    }
}

/// Details of a device to enrol.
#[derive(Clone)]
pub struct NewDevice {
    /// Contact e-mail.
    pub email: String,
    /// Contact name.
    pub name: String,
    /// Instrument model.
    pub instrument_model: String,
    /// The lab's instrument identifier.
    pub instrument_id: String,
    /// Instrument serial.
    pub serial: String,
    /// The device's envelope key.
    pub device_key: DeviceKey,
}

/// A stored batch, decrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StoredBatch {
    /// Sending device.
    pub device: DeviceId,
    /// Stream.
    pub stream: String,
    /// Device sequence number.
    pub sequence: u64,
    /// When the cloud stored it, unix seconds.
    pub received_at: i64,
    /// The batch.
    pub body: BatchBody,
}

/// The last heartbeat of a device, decrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeviceStatus {
    /// The device.
    pub device: DeviceId,
    /// Sequence of the last accepted heartbeat.
    pub last_sequence: u64,
    /// When it was accepted, unix seconds.
    pub last_seen: i64,
    /// Its content.
    pub heartbeat: HeartbeatBody,
}

/// Result of [`Store::insert_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored now.
    Stored,
    /// (device, sequence) was stored before with the same content; nothing changed.
    Duplicate,
    /// (device, sequence) was stored before with other content; nothing changed.
    Conflict,
}

/// Result of [`Store::record_heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// Newer than the last: stored.
    Accepted,
    /// Not newer than the last accepted sequence (given).
    Stale {
        /// The last accepted sequence.
        last: u64,
    },
}

/// Handle to the cloud database; cheap to clone, safe to share.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    key: ServerKey,
    dir: PathBuf,
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn seq_to_sql(seq: u64) -> anyhow::Result<i64> {
    i64::try_from(seq).context("sequence beyond 2^63-1")
}

pub(crate) fn seq_from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Open (creating if needed) the store in `data_dir`: the directory,
    /// `server.key` and `cloud.db` with its schema.
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
        if !data_dir.exists() {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            // A directory we create is private to the service account.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        let key = ServerKey::load_or_create(&data_dir.join(KEY_FILE))?;
        let path = data_dir.join(DB_FILE);
        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS devices(
                device_id TEXT PRIMARY KEY,
                created_at INTEGER NOT NULL,
                sealed BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS batches(
                device_id TEXT NOT NULL REFERENCES devices(device_id),
                sequence INTEGER NOT NULL,
                stream TEXT NOT NULL,
                received_at INTEGER NOT NULL,
                record_count INTEGER NOT NULL,
                sealed BLOB NOT NULL,
                PRIMARY KEY(device_id, sequence));
             CREATE TABLE IF NOT EXISTS device_status(
                device_id TEXT PRIMARY KEY REFERENCES devices(device_id),
                last_sequence INTEGER NOT NULL,
                last_seen INTEGER NOT NULL,
                sealed BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS counters(
                reason TEXT PRIMARY KEY,
                count INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS alerts(
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at INTEGER NOT NULL,
                kind TEXT NOT NULL,
                reason TEXT NOT NULL,
                source TEXT NOT NULL,
                device_id TEXT,
                block_secs INTEGER);",
        )?;
        crate::quarantine::create_schema(&conn)?;
        Ok(Store {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                key,
                dir: data_dir.to_path_buf(),
            }),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every
        // write is a transaction): keep going.
        self.inner.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The at-rest key (for the quarantine, [`crate::quarantine`]).
    pub(crate) fn server_key(&self) -> &ServerKey {
        &self.inner.key
    }

    /// Enrol a device under a fresh random id and return the id.
    pub fn enroll(&self, d: &NewDevice) -> anyhow::Result<DeviceId> {
        let sealed = SealedDevice {
            email: d.email.clone(),
            name: d.name.clone(),
            instrument_model: d.instrument_model.clone(),
            instrument_id: d.instrument_id.clone(),
            serial: d.serial.clone(),
            device_key: d.device_key.to_hex(),
        };
        let mut json = serde_json::to_vec(&sealed)?;
        let conn = self.conn();
        loop {
            let id = DeviceId::generate();
            let blob = self
                .inner
                .key
                .seal(&aad(AAD_DEVICE, &[id.as_str().as_bytes()], None), &json);
            let blob = match blob {
                Ok(b) => b,
                Err(e) => {
                    json.zeroize();
                    return Err(e);
                }
            };
            let n = conn.execute(
                "INSERT OR IGNORE INTO devices(device_id, created_at, sealed) VALUES (?1, ?2, ?3)",
                params![id.as_str(), now(), blob],
            );
            match n {
                Ok(1) => {
                    json.zeroize();
                    return Ok(id);
                }
                Ok(_) => continue, // id collision (2^-128): draw again
                Err(e) => {
                    json.zeroize();
                    return Err(e.into());
                }
            }
        }
    }

    fn open_device(&self, id: &str, blob: &[u8]) -> anyhow::Result<SealedDevice> {
        let mut plain = self
            .inner
            .key
            .open(&aad(AAD_DEVICE, &[id.as_bytes()], None), blob)?;
        let d = serde_json::from_slice(&plain).context("device row JSON");
        plain.zeroize();
        d
    }

    /// The envelope key of an enrolled device, or `None` if unknown.
    pub fn device_key(&self, device: &DeviceId) -> anyhow::Result<Option<DeviceKey>> {
        let blob: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT sealed FROM devices WHERE device_id = ?1",
                [device.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        let Some(blob) = blob else { return Ok(None) };
        let d = self.open_device(device.as_str(), &blob)?;
        Ok(Some(DeviceKey::from_hex(&d.device_key)?))
    }

    /// Every enrolled device, decrypted, ordered by enrolment time.
    pub fn devices(&self) -> anyhow::Result<Vec<DeviceInfo>> {
        let rows: Vec<(String, i64, Vec<u8>)> = {
            let conn = self.conn();
            let mut st = conn.prepare(
                "SELECT device_id, created_at, sealed FROM devices ORDER BY created_at, device_id",
            )?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        rows.into_iter()
            .map(|(id, created_at, blob)| {
                let d = self.open_device(&id, &blob)?;
                Ok(DeviceInfo {
                    device_id: DeviceId::parse(&id)?,
                    created_at,
                    email: d.email.clone(),
                    name: d.name.clone(),
                    instrument_model: d.instrument_model.clone(),
                    instrument_id: d.instrument_id.clone(),
                    serial: d.serial.clone(),
                    support_key: hex::encode(
                        outpost_support_proto::pc::device_identity_key(&DeviceKey::from_hex(
                            &d.device_key,
                        )?)
                        .verifying_key()
                        .to_bytes(),
                    ),
                })
            })
            .collect()
    }

    /// Store an authenticated batch (its still-compressed plaintext) in one
    /// transaction, together with the `accepted` counter; a (device,
    /// sequence) already present is left as it was and counted as `replay`.
    pub fn insert_batch(
        &self,
        header: &EnvelopeHeader,
        compressed: &[u8],
        record_count: usize,
    ) -> anyhow::Result<InsertOutcome> {
        let seq = seq_to_sql(header.sequence)?;
        let blob = self.inner.key.seal(
            &aad(
                AAD_BATCH,
                &[header.device.as_str().as_bytes(), header.stream.as_bytes()],
                Some(header.sequence),
            ),
            compressed,
        )?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // A sequence whose batch was quarantined is taken (#18).
        if crate::quarantine::holds(&tx, &header.device, seq)? {
            bump(&tx, "sequence-conflict")?;
            tx.commit()?;
            return Ok(InsertOutcome::Conflict);
        }
        let n = tx.execute(
            "INSERT OR IGNORE INTO batches(device_id, sequence, stream, received_at, record_count, sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                header.device.as_str(),
                seq,
                header.stream,
                now(),
                i64::try_from(record_count).unwrap_or(i64::MAX),
                blob
            ],
        )?;
        let outcome = if n == 1 {
            InsertOutcome::Stored
        } else {
            // Same content (a retry whose ack was lost, or a replay)? Compare
            // with what is stored, under the server key.
            let stored: Vec<u8> = tx.query_row(
                "SELECT sealed FROM batches WHERE device_id = ?1 AND sequence = ?2",
                params![header.device.as_str(), seq],
                |r| r.get(0),
            )?;
            let stored = self.inner.key.open(
                &aad(
                    AAD_BATCH,
                    &[header.device.as_str().as_bytes(), header.stream.as_bytes()],
                    Some(header.sequence),
                ),
                &stored,
            );
            match stored {
                Ok(plain) if plain == compressed => InsertOutcome::Duplicate,
                _ => InsertOutcome::Conflict,
            }
        };
        let reason = match outcome {
            InsertOutcome::Stored => "accepted",
            InsertOutcome::Duplicate => "replay",
            InsertOutcome::Conflict => "sequence-conflict",
        };
        bump(&tx, reason)?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Record a heartbeat if its sequence is greater than the last accepted
    /// one (counted `heartbeat`), else count `stale-heartbeat`.
    pub fn record_heartbeat(
        &self,
        header: &EnvelopeHeader,
        body: &HeartbeatBody,
    ) -> anyhow::Result<HeartbeatOutcome> {
        let seq = seq_to_sql(header.sequence)?;
        let json = serde_json::to_vec(body)?;
        let blob = self.inner.key.seal(
            &aad(AAD_STATUS, &[header.device.as_str().as_bytes()], None),
            &json,
        )?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let last: Option<i64> = tx
            .query_row(
                "SELECT last_sequence FROM device_status WHERE device_id = ?1",
                [header.device.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(last) = last
            && seq <= last
        {
            bump(&tx, "stale-heartbeat")?;
            tx.commit()?;
            return Ok(HeartbeatOutcome::Stale {
                last: seq_from_sql(last),
            });
        }
        tx.execute(
            "INSERT INTO device_status(device_id, last_sequence, last_seen, sealed)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(device_id) DO UPDATE SET
               last_sequence = excluded.last_sequence,
               last_seen = excluded.last_seen,
               sealed = excluded.sealed",
            params![header.device.as_str(), seq, now(), blob],
        )?;
        bump(&tx, "heartbeat")?;
        tx.commit()?;
        Ok(HeartbeatOutcome::Accepted)
    }

    /// Add one to the counter `reason`.
    pub fn count(&self, reason: &str) -> anyhow::Result<()> {
        let conn = self.conn();
        bump(&conn, reason)
    }

    /// Add `n` to each counter `reason`, in one transaction.
    pub fn add_counts(&self, counts: &[(&str, u64)]) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (reason, n) in counts {
            check_reason(reason)?;
            tx.execute(
                "INSERT INTO counters(reason, count) VALUES (?1, ?2)
                 ON CONFLICT(reason) DO UPDATE SET count = count + excluded.count",
                params![reason, i64::try_from(*n).unwrap_or(i64::MAX)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// All counters (every known reason present, zero if never counted).
    pub fn counters(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut m: BTreeMap<String, u64> = COUNTER_REASONS
            .iter()
            .map(|r| ((*r).to_owned(), 0))
            .collect();
        let conn = self.conn();
        let mut st = conn.prepare("SELECT reason, count FROM counters")?;
        for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (k, v) = row?;
            m.insert(k, u64::try_from(v).unwrap_or(0));
        }
        Ok(m)
    }

    /// Keep `alerts` (in one transaction).
    pub fn add_alerts(&self, alerts: &[Alert]) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO alerts(at, kind, reason, source, device_id, block_secs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for a in alerts {
                st.execute(params![
                    a.at,
                    a.kind.as_str(),
                    a.reason,
                    a.source,
                    a.device.as_ref().map(DeviceId::as_str),
                    a.block_secs.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The latest `limit` alerts, oldest first.
    pub fn alerts(&self, limit: usize) -> anyhow::Result<Vec<Alert>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT at, kind, reason, source, device_id, block_secs FROM alerts
             ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (at, kind, reason, source, device, block_secs) = row?;
            out.push(Alert {
                at,
                kind: AlertKind::parse(&kind)
                    .with_context(|| format!("unknown alert kind {kind:?} in the store"))?,
                reason,
                source,
                device: device.as_deref().map(DeviceId::parse).transpose()?,
                block_secs: block_secs.map(|s| u64::try_from(s).unwrap_or(0)),
            });
        }
        out.reverse();
        Ok(out)
    }

    /// How many alerts of each kind the store holds.
    pub fn alert_counts(&self) -> anyhow::Result<BTreeMap<AlertKind, u64>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT kind, count(*) FROM alerts GROUP BY kind")?;
        let mut m = BTreeMap::new();
        for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (k, n) = row?;
            if let Some(kind) = AlertKind::parse(&k) {
                m.insert(kind, u64::try_from(n).unwrap_or(0));
            }
        }
        Ok(m)
    }

    /// Stored batches, decrypted, optionally filtered by device and stream,
    /// ordered by device then sequence.
    pub fn batches(
        &self,
        device: Option<&DeviceId>,
        stream: Option<&str>,
    ) -> anyhow::Result<Vec<StoredBatch>> {
        let rows: Vec<(String, i64, String, i64, Vec<u8>)> = {
            let conn = self.conn();
            let mut st = conn.prepare(
                "SELECT device_id, sequence, stream, received_at, sealed FROM batches
                 WHERE (?1 IS NULL OR device_id = ?1) AND (?2 IS NULL OR stream = ?2)
                 ORDER BY device_id, sequence",
            )?;
            st.query_map(params![device.map(DeviceId::as_str), stream], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?
        };
        rows.into_iter()
            .map(|(id, seq, stream, received_at, blob)| {
                let sequence = seq_from_sql(seq);
                let compressed = self.inner.key.open(
                    &aad(
                        AAD_BATCH,
                        &[id.as_bytes(), stream.as_bytes()],
                        Some(sequence),
                    ),
                    &blob,
                )?;
                let plain = decompress_bounded(&compressed, MAX_PLAINTEXT_BYTES)?;
                let body: BatchBody =
                    serde_json::from_slice(&plain).context("stored batch JSON")?;
                Ok(StoredBatch {
                    device: DeviceId::parse(&id)?,
                    stream,
                    sequence,
                    received_at,
                    body,
                })
            })
            .collect()
    }

    /// Run `f` on the database connection (for the staff tables of
    /// [`crate::staff`], kept in their own module).
    pub(crate) fn with_conn<R>(&self, f: impl FnOnce(&Connection) -> R) -> R {
        f(&self.conn())
    }

    /// The last heartbeat of `device`, decrypted, if any.
    pub fn status(&self, device: &DeviceId) -> anyhow::Result<Option<DeviceStatus>> {
        let row: Option<(i64, i64, Vec<u8>)> = self
            .conn()
            .query_row(
                "SELECT last_sequence, last_seen, sealed FROM device_status WHERE device_id = ?1",
                [device.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((seq, last_seen, blob)) = row else {
            return Ok(None);
        };
        let plain = self
            .inner
            .key
            .open(&aad(AAD_STATUS, &[device.as_str().as_bytes()], None), &blob)?;
        Ok(Some(DeviceStatus {
            device: device.clone(),
            last_sequence: seq_from_sql(seq),
            last_seen,
            heartbeat: serde_json::from_slice(&plain).context("stored heartbeat JSON")?,
        }))
    }
}

fn check_reason(reason: &str) -> anyhow::Result<()> {
    if reason.is_empty() || reason.len() > 64 {
        bail!("bad counter reason");
    }
    Ok(())
}

pub(crate) fn bump(conn: &Connection, reason: &str) -> anyhow::Result<()> {
    check_reason(reason)?;
    conn.execute(
        "INSERT INTO counters(reason, count) VALUES (?1, 1)
         ON CONFLICT(reason) DO UPDATE SET count = count + 1",
        [reason],
    )?;
    Ok(())
}
