//! Quarantined batches (issue #18): batches the scanner flagged, kept
//! encrypted at rest like any batch, in their own table, never served.
//!
//! | table | sealed content | AAD |
//! | --- | --- | --- |
//! | `quarantine` | the zstd plaintext exactly as it came out of the envelope | `"outpost-cloud/quarantine/v1"`, u8 len, device id, u8 len, stream, u64 BE sequence |
//!
//! Plaintext columns: device id, stream, sequence, the signature name the
//! scanner reported, when, and the record count. The other domain string
//! keeps a quarantined blob from being moved into `batches` (it would not
//! open there). [`Store::batches`] reads `batches` only, so nothing here is
//! ever served by it; [`Store::quarantined`] lists the rows without their
//! content. A (device, sequence) is held by at most one of the two tables:
//! a batch arriving under a quarantined sequence, or a flagged one under a
//! stored sequence, is a sequence conflict.

use anyhow::Context;
use outpost_protocol::{DeviceId, EnvelopeHeader};
use serde::{Deserialize, Serialize};

use crate::atrest::aad;
use crate::db::{Sql, args};
use crate::store::{InsertOutcome, Store, bump, now, seq_from_sql, seq_to_sql, sequence_lock};

/// Domain of the quarantine rows.
const AAD_QUARANTINE: &[u8] = b"outpost-cloud/quarantine/v1";

/// A quarantined batch, without its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct QuarantineEntry {
    /// Sending device.
    pub device: DeviceId,
    /// Stream.
    pub stream: String,
    /// Device sequence number.
    pub sequence: u64,
    /// The scanner's name of the signature that matched.
    pub signature: String,
    /// When the cloud quarantined it, unix seconds.
    pub quarantined_at: i64,
    /// Records in the batch.
    pub records: u64,
}

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS quarantine(
        device_id TEXT NOT NULL REFERENCES devices(device_id),
        sequence INTEGER NOT NULL,
        stream TEXT NOT NULL,
        signature TEXT NOT NULL,
        quarantined_at INTEGER NOT NULL,
        record_count INTEGER NOT NULL,
        sealed BLOB NOT NULL,
        PRIMARY KEY(device_id, sequence));";

/// Whether (device, sequence) is quarantined.
pub(crate) fn holds(sql: &mut dyn Sql, device: &DeviceId, seq: i64) -> anyhow::Result<bool> {
    Ok(sql
        .query_opt(
            "SELECT device_id FROM quarantine WHERE device_id = ?1 AND sequence = ?2",
            args![device.as_str(), seq],
        )?
        .is_some())
}

fn row_aad(device: &str, stream: &str, sequence: u64) -> Vec<u8> {
    aad(
        AAD_QUARANTINE,
        &[device.as_bytes(), stream.as_bytes()],
        Some(sequence),
    )
}

impl Store {
    /// Quarantine a batch the scanner flagged as `signature`: its
    /// still-compressed plaintext sealed under the server key, in one
    /// transaction with the `quarantined` counter. The same content again
    /// (a resend) is [`InsertOutcome::Duplicate`] and counted `replay`;
    /// other content under the sequence, or a sequence already stored as a
    /// batch, is [`InsertOutcome::Conflict`] (`sequence-conflict`).
    pub fn quarantine_batch(
        &self,
        header: &EnvelopeHeader,
        compressed: &[u8],
        record_count: usize,
        signature: &str,
    ) -> anyhow::Result<InsertOutcome> {
        let seq = seq_to_sql(header.sequence)?;
        let row_aad = row_aad(header.device.as_str(), &header.stream, header.sequence);
        let blob = self.server_key().seal(&row_aad, compressed)?;
        self.db().write(|sql| {
            sql.lock(&sequence_lock(&header.device, header.sequence))?;
            let in_batches = sql
                .query_opt(
                    "SELECT device_id FROM batches WHERE device_id = ?1 AND sequence = ?2",
                    args![header.device.as_str(), seq],
                )?
                .is_some();
            let outcome = if in_batches {
                InsertOutcome::Conflict
            } else {
                let n = sql.execute(
                    "INSERT INTO quarantine(device_id, sequence, stream, signature,
                        quarantined_at, record_count, sealed)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                    args![
                        header.device.as_str(),
                        seq,
                        header.stream.as_str(),
                        signature,
                        now(),
                        i64::try_from(record_count).unwrap_or(i64::MAX),
                        blob.as_slice()
                    ],
                )?;
                if n == 1 {
                    InsertOutcome::Stored
                } else {
                    let stored = sql
                        .query_one(
                            "SELECT sealed FROM quarantine WHERE device_id = ?1 AND sequence = ?2",
                            args![header.device.as_str(), seq],
                        )?
                        .blob(0)?;
                    match self.server_key().open(&row_aad, &stored) {
                        Ok(plain) if plain == compressed => InsertOutcome::Duplicate,
                        _ => InsertOutcome::Conflict,
                    }
                }
            };
            bump(
                sql,
                match outcome {
                    InsertOutcome::Stored => "quarantined",
                    InsertOutcome::Duplicate => "replay",
                    InsertOutcome::Conflict => "sequence-conflict",
                },
            )?;
            Ok(outcome)
        })
    }

    /// Quarantined batches, without content, optionally of one device,
    /// ordered by device then sequence.
    pub fn quarantined(&self, device: Option<&DeviceId>) -> anyhow::Result<Vec<QuarantineEntry>> {
        let rows = self.db().read(|sql| {
            sql.query(
                "SELECT device_id, sequence, stream, signature, quarantined_at, record_count
                 FROM quarantine WHERE (CAST(?1 AS TEXT) IS NULL OR device_id = ?1)
                 ORDER BY device_id, sequence",
                args![device.map(DeviceId::as_str)],
            )
        })?;
        rows.into_iter()
            .map(|r| {
                Ok(QuarantineEntry {
                    device: DeviceId::parse(&r.text(0)?).context("quarantine row device id")?,
                    stream: r.text(2)?,
                    sequence: seq_from_sql(r.int(1)?),
                    signature: r.text(3)?,
                    quarantined_at: r.int(4)?,
                    records: u64::try_from(r.int(5)?).unwrap_or(0),
                })
            })
            .collect()
    }
}
