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
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::atrest::aad;
use crate::store::{InsertOutcome, Store, bump, now, seq_from_sql, seq_to_sql};

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

pub(crate) fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS quarantine(
            device_id TEXT NOT NULL REFERENCES devices(device_id),
            sequence INTEGER NOT NULL,
            stream TEXT NOT NULL,
            signature TEXT NOT NULL,
            quarantined_at INTEGER NOT NULL,
            record_count INTEGER NOT NULL,
            sealed BLOB NOT NULL,
            PRIMARY KEY(device_id, sequence));",
    )
}

/// Whether (device, sequence) is quarantined.
pub(crate) fn holds(conn: &Connection, device: &DeviceId, seq: i64) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM quarantine WHERE device_id = ?1 AND sequence = ?2",
        params![device.as_str(), seq],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
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
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let in_batches = tx
            .query_row(
                "SELECT 1 FROM batches WHERE device_id = ?1 AND sequence = ?2",
                params![header.device.as_str(), seq],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        let outcome = if in_batches {
            InsertOutcome::Conflict
        } else {
            let n = tx.execute(
                "INSERT OR IGNORE INTO quarantine(device_id, sequence, stream, signature,
                    quarantined_at, record_count, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    header.device.as_str(),
                    seq,
                    header.stream,
                    signature,
                    now(),
                    i64::try_from(record_count).unwrap_or(i64::MAX),
                    blob
                ],
            )?;
            if n == 1 {
                InsertOutcome::Stored
            } else {
                let stored: Vec<u8> = tx.query_row(
                    "SELECT sealed FROM quarantine WHERE device_id = ?1 AND sequence = ?2",
                    params![header.device.as_str(), seq],
                    |r| r.get(0),
                )?;
                match self.server_key().open(&row_aad, &stored) {
                    Ok(plain) if plain == compressed => InsertOutcome::Duplicate,
                    _ => InsertOutcome::Conflict,
                }
            }
        };
        bump(
            &tx,
            match outcome {
                InsertOutcome::Stored => "quarantined",
                InsertOutcome::Duplicate => "replay",
                InsertOutcome::Conflict => "sequence-conflict",
            },
        )?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Quarantined batches, without content, optionally of one device,
    /// ordered by device then sequence.
    pub fn quarantined(&self, device: Option<&DeviceId>) -> anyhow::Result<Vec<QuarantineEntry>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT device_id, sequence, stream, signature, quarantined_at, record_count
             FROM quarantine WHERE (?1 IS NULL OR device_id = ?1)
             ORDER BY device_id, sequence",
        )?;
        let rows = st.query_map(params![device.map(DeviceId::as_str)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        rows.map(|row| {
            let (id, seq, stream, signature, quarantined_at, records) = row?;
            Ok(QuarantineEntry {
                device: DeviceId::parse(&id).context("quarantine row device id")?,
                stream,
                sequence: seq_from_sql(seq),
                signature,
                quarantined_at,
                records: u64::try_from(records).unwrap_or(0),
            })
        })
        .collect()
    }
}
