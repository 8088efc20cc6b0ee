//! The cloud's store: every device detail and every batch is encrypted at
//! rest with AES-256-GCM under the server key before it reaches the
//! database — embedded SQLite by default, or PostgreSQL shared by several
//! ingest nodes ([`DatabaseConfig`], [`crate::db`]).
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
//! Files in the data directory: `server.key` (32 random bytes, created on
//! first open, mode 0600 on Unix; every node sharing a PostgreSQL database
//! needs the same one) and, with SQLite, `cloud.db` (WAL mode,
//! `synchronous=FULL`). Losing `server.key` makes every stored row
//! unreadable; the database never holds it.
//!
//! Plaintext columns are limited to routing metadata: device id, stream,
//! sequence, times and record counts; and the operator's alerts
//! ([`crate::defence`]: kind, reason, source address, device id, block length).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use outpost_protocol::{
    BatchBody, DeviceId, DeviceKey, EnvelopeHeader, HeartbeatBody, MAX_PLAINTEXT_BYTES,
    decompress_bounded,
};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::atrest::{AAD_BATCH, AAD_DEVICE, AAD_KEY_CHECK, AAD_STATUS, ServerKey, aad};
use crate::db::postgres::{Postgres, PostgresConfig};
use crate::db::sqlite::Sqlite;
use crate::db::{Db, Sql, args};
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

/// Where the store keeps its rows.
#[derive(Debug, Clone, Default)]
pub enum DatabaseConfig {
    /// `cloud.db` in the data directory (one server).
    #[default]
    Sqlite,
    /// A PostgreSQL server shared by several ingest nodes.
    Postgres(PostgresConfig),
}

/// The store's tables, in SQLite's SQL ([`Dialect::ddl`] turns them into
/// PostgreSQL's).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS devices(
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
     CREATE TABLE IF NOT EXISTS key_check(
        id INTEGER PRIMARY KEY,
        sealed BLOB NOT NULL);
     CREATE TABLE IF NOT EXISTS alerts(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL,
        source TEXT NOT NULL,
        device_id TEXT,
        block_secs INTEGER);";

/// Handle to the cloud database; cheap to clone, safe to share. Every
/// method blocks (call it from a blocking task).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
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

fn count_to_sql(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The lock under which one (device, sequence) is decided: whether it goes
/// to `batches` or to the quarantine, on whichever node.
pub(crate) fn sequence_lock(device: &DeviceId, seq: u64) -> Vec<u8> {
    let mut k = b"outpost-cloud/sequence/".to_vec();
    k.extend_from_slice(device.as_str().as_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl Store {
    /// Open (creating if needed) the store in `data_dir`: the directory,
    /// `server.key` and `cloud.db` with its schema.
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
        Store::open_with(data_dir, &DatabaseConfig::Sqlite)
    }

    /// Open the store with its key in `data_dir` and its rows where
    /// `database` says; create the tables that are missing.
    pub fn open_with(data_dir: &Path, database: &DatabaseConfig) -> anyhow::Result<Store> {
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
        let db = match database {
            DatabaseConfig::Sqlite => Db::new(Arc::new(Sqlite::open(&data_dir.join(DB_FILE))?)),
            DatabaseConfig::Postgres(cfg) => Db::new(Arc::new(Postgres::connect(cfg)?)),
        };
        let dialect = db.dialect();
        db.write(|sql| {
            // Nodes starting together create the tables one at a time.
            sql.lock(b"outpost-cloud/schema")?;
            for ddl in [
                SCHEMA,
                crate::quarantine::SCHEMA,
                crate::staff::db::SCHEMA,
                crate::staff::newloc::SCHEMA,
                crate::staff::shared::SCHEMA,
            ] {
                sql.batch(&dialect.ddl(ddl))?;
            }
            Ok(())
        })
        .with_context(|| format!("creating the tables in {}", db.describe()))?;
        check_key(&db, &key, data_dir)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                key,
                dir: data_dir.to_path_buf(),
            }),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Where the rows live (a file or a PostgreSQL server; no password).
    pub fn describe(&self) -> String {
        self.inner.db.describe()
    }

    /// The database (for the quarantine and the staff tables, kept in their
    /// own modules).
    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
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
        let json = Zeroizing::new(serde_json::to_vec(&sealed)?);
        loop {
            let id = DeviceId::generate();
            let blob = self
                .inner
                .key
                .seal(&aad(AAD_DEVICE, &[id.as_str().as_bytes()], None), &json)?;
            let n = self.inner.db.write(|sql| {
                sql.execute(
                    "INSERT INTO devices(device_id, created_at, sealed) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                    args![id.as_str(), now(), blob],
                )
            })?;
            if n == 1 {
                return Ok(id);
            }
            // id collision (2^-128): draw again
        }
    }

    fn open_device(&self, id: &str, blob: &[u8]) -> anyhow::Result<SealedDevice> {
        let plain = Zeroizing::new(
            self.inner
                .key
                .open(&aad(AAD_DEVICE, &[id.as_bytes()], None), blob)?,
        );
        serde_json::from_slice(&plain).context("device row JSON")
    }

    /// The envelope key of an enrolled device, or `None` if unknown.
    pub fn device_key(&self, device: &DeviceId) -> anyhow::Result<Option<DeviceKey>> {
        let row = self.inner.db.read(|sql| {
            sql.query_opt(
                "SELECT sealed FROM devices WHERE device_id = ?1",
                args![device.as_str()],
            )
        })?;
        let Some(row) = row else { return Ok(None) };
        let d = self.open_device(device.as_str(), &row.blob(0)?)?;
        Ok(Some(DeviceKey::from_hex(&d.device_key)?))
    }

    /// Every enrolled device, decrypted, ordered by enrolment time.
    pub fn devices(&self) -> anyhow::Result<Vec<DeviceInfo>> {
        let rows = self.inner.db.read(|sql| {
            sql.query(
                "SELECT device_id, created_at, sealed FROM devices ORDER BY created_at, device_id",
                &[],
            )
        })?;
        rows.into_iter()
            .map(|r| {
                let id = r.text(0)?;
                let d = self.open_device(&id, &r.blob(2)?)?;
                Ok(DeviceInfo {
                    device_id: DeviceId::parse(&id)?,
                    created_at: r.int(1)?,
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
    /// sequence) already present is left as it was and counted as `replay`
    /// (same content) or `sequence-conflict` (other content). Decided once
    /// across every node that shares the database.
    pub fn insert_batch(
        &self,
        header: &EnvelopeHeader,
        compressed: &[u8],
        record_count: usize,
    ) -> anyhow::Result<InsertOutcome> {
        let seq = seq_to_sql(header.sequence)?;
        let row_aad = aad(
            AAD_BATCH,
            &[header.device.as_str().as_bytes(), header.stream.as_bytes()],
            Some(header.sequence),
        );
        let blob = self.inner.key.seal(&row_aad, compressed)?;
        self.inner.db.write(|sql| {
            sql.lock(&sequence_lock(&header.device, header.sequence))?;
            // A sequence whose batch was quarantined is taken (#18).
            if crate::quarantine::holds(sql, &header.device, seq)? {
                bump(sql, "sequence-conflict")?;
                return Ok(InsertOutcome::Conflict);
            }
            let n = sql.execute(
                "INSERT INTO batches(device_id, sequence, stream, received_at, record_count, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                args![
                    header.device.as_str(),
                    seq,
                    header.stream.as_str(),
                    now(),
                    count_to_sql(record_count),
                    blob.as_slice()
                ],
            )?;
            let outcome = if n == 1 {
                InsertOutcome::Stored
            } else {
                // Same content (a retry whose ack was lost, or a replay)?
                // Compare with what is stored, under the server key.
                let stored = sql
                    .query_one(
                        "SELECT sealed FROM batches WHERE device_id = ?1 AND sequence = ?2",
                        args![header.device.as_str(), seq],
                    )?
                    .blob(0)?;
                match self.inner.key.open(&row_aad, &stored) {
                    Ok(plain) if plain == compressed => InsertOutcome::Duplicate,
                    _ => InsertOutcome::Conflict,
                }
            };
            bump(
                sql,
                match outcome {
                    InsertOutcome::Stored => "accepted",
                    InsertOutcome::Duplicate => "replay",
                    InsertOutcome::Conflict => "sequence-conflict",
                },
            )?;
            Ok(outcome)
        })
    }

    /// Record a heartbeat if its sequence is greater than the last accepted
    /// one (counted `heartbeat`), else count `stale-heartbeat`. One
    /// conditional statement, so two nodes cannot store an older one last.
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
        self.inner.db.write(|sql| {
            let n = sql.execute(
                "INSERT INTO device_status(device_id, last_sequence, last_seen, sealed)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(device_id) DO UPDATE SET
                   last_sequence = excluded.last_sequence,
                   last_seen = excluded.last_seen,
                   sealed = excluded.sealed
                 WHERE device_status.last_sequence < excluded.last_sequence",
                args![header.device.as_str(), seq, now(), blob],
            )?;
            if n == 1 {
                bump(sql, "heartbeat")?;
                return Ok(HeartbeatOutcome::Accepted);
            }
            let last = sql
                .query_one(
                    "SELECT last_sequence FROM device_status WHERE device_id = ?1",
                    args![header.device.as_str()],
                )?
                .int(0)?;
            bump(sql, "stale-heartbeat")?;
            Ok(HeartbeatOutcome::Stale {
                last: seq_from_sql(last),
            })
        })
    }

    /// Add one to the counter `reason`.
    pub fn count(&self, reason: &str) -> anyhow::Result<()> {
        self.inner.db.write(|sql| bump(sql, reason))
    }

    /// Add `n` to each counter `reason`, in one transaction.
    pub fn add_counts(&self, counts: &[(&str, u64)]) -> anyhow::Result<()> {
        self.inner.db.write(|sql| {
            for (reason, n) in counts {
                add(sql, reason, i64::try_from(*n).unwrap_or(i64::MAX))?;
            }
            Ok(())
        })
    }

    /// All counters (every known reason present, zero if never counted).
    pub fn counters(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut m: BTreeMap<String, u64> = COUNTER_REASONS
            .iter()
            .map(|r| ((*r).to_owned(), 0))
            .collect();
        let rows = self
            .inner
            .db
            .read(|sql| sql.query("SELECT reason, count FROM counters", &[]))?;
        for r in rows {
            m.insert(r.text(0)?, u64::try_from(r.int(1)?).unwrap_or(0));
        }
        Ok(m)
    }

    /// Keep `alerts` (in one transaction).
    pub fn add_alerts(&self, alerts: &[Alert]) -> anyhow::Result<()> {
        self.inner.db.write(|sql| {
            for a in alerts {
                sql.execute(
                    "INSERT INTO alerts(at, kind, reason, source, device_id, block_secs)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    args![
                        a.at,
                        a.kind.as_str(),
                        a.reason.as_str(),
                        a.source.as_str(),
                        a.device.as_ref().map(DeviceId::as_str),
                        a.block_secs.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// The latest `limit` alerts, oldest first.
    pub fn alerts(&self, limit: usize) -> anyhow::Result<Vec<Alert>> {
        let rows = self.inner.db.read(|sql| {
            sql.query(
                "SELECT at, kind, reason, source, device_id, block_secs FROM alerts
                 ORDER BY id DESC LIMIT ?1",
                args![count_to_sql(limit)],
            )
        })?;
        let mut out = rows
            .into_iter()
            .map(|r| {
                let kind = r.text(1)?;
                Ok(Alert {
                    at: r.int(0)?,
                    kind: AlertKind::parse(&kind)
                        .with_context(|| format!("unknown alert kind {kind:?} in the store"))?,
                    reason: r.text(2)?,
                    source: r.text(3)?,
                    device: r.opt_text(4)?.as_deref().map(DeviceId::parse).transpose()?,
                    block_secs: r.opt_int(5)?.map(|s| u64::try_from(s).unwrap_or(0)),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    /// How many alerts of each kind the store holds.
    pub fn alert_counts(&self) -> anyhow::Result<BTreeMap<AlertKind, u64>> {
        let rows = self
            .inner
            .db
            .read(|sql| sql.query("SELECT kind, count(*) FROM alerts GROUP BY kind", &[]))?;
        let mut m = BTreeMap::new();
        for r in rows {
            if let Some(kind) = AlertKind::parse(&r.text(0)?) {
                m.insert(kind, u64::try_from(r.int(1)?).unwrap_or(0));
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
        let rows = self.inner.db.read(|sql| {
            sql.query(
                "SELECT device_id, sequence, stream, received_at, sealed FROM batches
                 WHERE (CAST(?1 AS TEXT) IS NULL OR device_id = ?1)
                   AND (CAST(?2 AS TEXT) IS NULL OR stream = ?2)
                 ORDER BY device_id, sequence",
                args![device.map(DeviceId::as_str), stream],
            )
        })?;
        rows.into_iter()
            .map(|r| {
                let (id, stream) = (r.text(0)?, r.text(2)?);
                let sequence = seq_from_sql(r.int(1)?);
                let compressed = self.inner.key.open(
                    &aad(
                        AAD_BATCH,
                        &[id.as_bytes(), stream.as_bytes()],
                        Some(sequence),
                    ),
                    &r.blob(4)?,
                )?;
                let plain = decompress_bounded(&compressed, MAX_PLAINTEXT_BYTES)?;
                let body: BatchBody =
                    serde_json::from_slice(&plain).context("stored batch JSON")?;
                Ok(StoredBatch {
                    device: DeviceId::parse(&id)?,
                    stream,
                    sequence,
                    received_at: r.int(3)?,
                    body,
                })
            })
            .collect()
    }

    /// The last heartbeat of `device`, decrypted, if any.
    pub fn status(&self, device: &DeviceId) -> anyhow::Result<Option<DeviceStatus>> {
        let row = self.inner.db.read(|sql| {
            sql.query_opt(
                "SELECT last_sequence, last_seen, sealed FROM device_status WHERE device_id = ?1",
                args![device.as_str()],
            )
        })?;
        let Some(r) = row else {
            return Ok(None);
        };
        let plain = self.inner.key.open(
            &aad(AAD_STATUS, &[device.as_str().as_bytes()], None),
            &r.blob(2)?,
        )?;
        Ok(Some(DeviceStatus {
            device: device.clone(),
            last_sequence: seq_from_sql(r.int(0)?),
            last_seen: r.int(1)?,
            heartbeat: serde_json::from_slice(&plain).context("stored heartbeat JSON")?,
        }))
    }
}

/// The text the key check seals.
const KEY_CHECK_TEXT: &[u8] = b"outpost-cloud server key check";

/// Refuse a server key other than the one the database's rows are sealed
/// with (a node given a new or another node's wrong `server.key`): it
/// would write rows nobody else can open and read none. The first open of
/// a database records the check.
fn check_key(db: &Db, key: &ServerKey, data_dir: &Path) -> anyhow::Result<()> {
    let check_aad = aad(AAD_KEY_CHECK, &[], None);
    db.write(|sql| {
        sql.lock(b"outpost-cloud/key-check")?;
        match sql.query_opt("SELECT sealed FROM key_check WHERE id = 1", &[])? {
            Some(row) => match key.open(&check_aad, &row.blob(0)?) {
                Ok(text) if text == KEY_CHECK_TEXT => Ok(()),
                _ => bail!(
                    "{} in {} is not the key the rows in {} are sealed with: copy server.key \
                     from a node of this database (a node with another key could read none of \
                     them and would write rows the others cannot read)",
                    KEY_FILE,
                    data_dir.display(),
                    db.describe()
                ),
            },
            None => {
                let blob = key.seal(&check_aad, KEY_CHECK_TEXT)?;
                sql.execute(
                    "INSERT INTO key_check(id, sealed) VALUES (1, ?1) ON CONFLICT DO NOTHING",
                    args![blob],
                )?;
                Ok(())
            }
        }
    })
}

fn check_reason(reason: &str) -> anyhow::Result<()> {
    if reason.is_empty() || reason.len() > 64 {
        bail!("bad counter reason");
    }
    Ok(())
}

pub(crate) fn bump(sql: &mut dyn Sql, reason: &str) -> anyhow::Result<()> {
    add(sql, reason, 1)
}

fn add(sql: &mut dyn Sql, reason: &str, n: i64) -> anyhow::Result<()> {
    check_reason(reason)?;
    sql.execute(
        "INSERT INTO counters(reason, count) VALUES (?1, ?2)
         ON CONFLICT(reason) DO UPDATE SET count = counters.count + excluded.count",
        args![reason, n],
    )?;
    Ok(())
}
