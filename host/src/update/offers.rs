//! Update offers, decisions and the update clock in the state database.
//!
//! * `update_offers`: one row per (module, version, file hash) the updater
//!   found: the versions, the capability diff and its digest, the state
//!   (`available`, `approved`, `rejected`, `installed`, `failed`, `refused`)
//!   and the reason of the last change. A refused offer (its signature, name,
//!   version or capability digest did not check out) is kept with the reason.
//! * `update_audit`: every decision with the diff digest it was about and
//!   which client made it.
//! * `update_clock`: the highest time the updater has seen, so metadata
//!   expiry is checked against a clock that never goes backwards.

use crate::store::{Db, DbError, now_secs};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// The tables (part of the store's schema, created if missing).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS update_offers (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    module            TEXT NOT NULL,
    from_version      TEXT,
    to_version        TEXT NOT NULL,
    target            TEXT NOT NULL,
    file_sha256       TEXT NOT NULL,
    file_path         TEXT,
    diff_digest       TEXT,
    diff_text         TEXT,
    adds_capabilities INTEGER NOT NULL,
    state             TEXT NOT NULL,
    reason            TEXT,
    approved_digest   TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    UNIQUE (module, to_version, file_sha256)
);
CREATE TABLE IF NOT EXISTS update_audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    offer_id    INTEGER NOT NULL,
    module      TEXT NOT NULL,
    to_version  TEXT NOT NULL,
    decision    TEXT NOT NULL,
    diff_digest TEXT,
    client      TEXT NOT NULL,
    at          INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS update_clock (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    highest_secs INTEGER NOT NULL
);
";

/// The state of an offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OfferState {
    /// Verified and waiting for a decision.
    Available,
    /// The person approved the diff recorded in `approved_digest`.
    Approved,
    /// The person rejected it.
    Rejected,
    /// Installed.
    Installed,
    /// Installing failed (rolled back).
    Failed,
    /// The updater refused it (signature, name, version, digest): see reason.
    Refused,
}

impl OfferState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OfferState::Available => "available",
            OfferState::Approved => "approved",
            OfferState::Rejected => "rejected",
            OfferState::Installed => "installed",
            OfferState::Failed => "failed",
            OfferState::Refused => "refused",
        }
    }

    fn parse(s: &str) -> Option<OfferState> {
        Some(match s {
            "available" => OfferState::Available,
            "approved" => OfferState::Approved,
            "rejected" => OfferState::Rejected,
            "installed" => OfferState::Installed,
            "failed" => OfferState::Failed,
            "refused" => OfferState::Refused,
            _ => return None,
        })
    }
}

/// One offer as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Offer {
    /// Row id.
    pub id: i64,
    /// Module name.
    pub module: String,
    /// Installed version when found.
    pub from_version: Option<String>,
    /// Offered version.
    pub to_version: String,
    /// TUF target name.
    pub target: String,
    /// SHA-256 of the module file (hex).
    pub file_sha256: String,
    /// Where the verified file waits (none for a refused offer).
    pub file_path: Option<String>,
    /// Digest of the capability diff against the installed version.
    pub diff_digest: Option<String>,
    /// The diff, one item a line (`+ endpoint …`).
    pub diff_text: Option<String>,
    /// Whether the new version asks for more than the installed one.
    pub adds_capabilities: bool,
    /// State.
    pub state: OfferState,
    /// Why it is in that state (refusal or failure reason).
    pub reason: Option<String>,
    /// The diff digest an approval was given for.
    pub approved_digest: Option<String>,
    /// Seconds since the epoch.
    pub created_at: i64,
    /// Seconds since the epoch.
    pub updated_at: i64,
}

/// One decision about an offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuditEntry {
    /// `approved`, `rejected`, `approval-void`, `installed`, `failed`.
    pub decision: String,
    /// The diff digest the decision was about.
    pub diff_digest: Option<String>,
    /// Who: `cli:<user>`, `api:<client>`, `host`.
    pub client: String,
    /// Seconds since the epoch.
    pub at: i64,
}

/// A new offer to record.
#[derive(Clone, Debug)]
pub struct NewOffer<'a> {
    /// Module name.
    pub module: &'a str,
    /// Installed version.
    pub from_version: Option<&'a str>,
    /// Offered version.
    pub to_version: &'a str,
    /// TUF target name.
    pub target: &'a str,
    /// File SHA-256 (hex).
    pub file_sha256: &'a str,
    /// Where the verified file waits.
    pub file_path: Option<&'a str>,
    /// Diff digest.
    pub diff_digest: Option<&'a str>,
    /// Diff text.
    pub diff_text: Option<&'a str>,
    /// Asks for more.
    pub adds_capabilities: bool,
    /// Initial state (`Available` or `Refused`).
    pub state: OfferState,
    /// Reason (for `Refused`).
    pub reason: Option<&'a str>,
}

/// Why a decision was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// No such offer.
    #[error("no update offer {0}")]
    NotFound(i64),
    /// The offer is not waiting for a decision.
    #[error("update offer {id} is {state}, not available")]
    NotAvailable {
        /// Offer id.
        id: i64,
        /// Its state.
        state: &'static str,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for DecisionError {
    fn from(e: rusqlite::Error) -> Self {
        DecisionError::Db(e.into())
    }
}

/// The offers, audit and clock tables.
#[derive(Clone)]
pub struct Offers {
    db: Db,
}

const COLUMNS: &str = "id, module, from_version, to_version, target, file_sha256, file_path, diff_digest, diff_text, adds_capabilities, state, reason, approved_digest, created_at, updated_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Offer> {
    let state: String = r.get(10)?;
    Ok(Offer {
        id: r.get(0)?,
        module: r.get(1)?,
        from_version: r.get(2)?,
        to_version: r.get(3)?,
        target: r.get(4)?,
        file_sha256: r.get(5)?,
        file_path: r.get(6)?,
        diff_digest: r.get(7)?,
        diff_text: r.get(8)?,
        adds_capabilities: r.get::<_, i64>(9)? != 0,
        state: OfferState::parse(&state).unwrap_or(OfferState::Refused),
        reason: r.get(11)?,
        approved_digest: r.get(12)?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
    })
}

impl Offers {
    /// The tables over `db`.
    pub fn new(db: Db) -> Offers {
        Offers { db }
    }

    /// Record `o` unless the same (module, version, file) is already
    /// recorded; returns the stored offer either way, and whether it is new.
    pub fn record(&self, o: &NewOffer<'_>) -> Result<(Offer, bool), DbError> {
        let now = now_secs();
        let conn = self.db.lock();
        let inserted = conn.execute(
            "INSERT INTO update_offers (module, from_version, to_version, target, file_sha256, file_path,
                 diff_digest, diff_text, adds_capabilities, state, reason, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)
             ON CONFLICT (module, to_version, file_sha256) DO NOTHING",
            params![
                o.module,
                o.from_version,
                o.to_version,
                o.target,
                o.file_sha256,
                o.file_path,
                o.diff_digest,
                o.diff_text,
                o.adds_capabilities as i64,
                o.state.as_str(),
                o.reason,
                now
            ],
        )?;
        let offer = conn.query_row(
            &format!(
                "SELECT {COLUMNS} FROM update_offers WHERE module = ?1 AND to_version = ?2 AND file_sha256 = ?3"
            ),
            params![o.module, o.to_version, o.file_sha256],
            row,
        )?;
        Ok((offer, inserted > 0))
    }

    /// Every offer, newest first.
    pub fn list(&self) -> Result<Vec<Offer>, DbError> {
        let conn = self.db.lock();
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM update_offers ORDER BY id DESC"
        ))?;
        let rows = st.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// One offer.
    pub fn get(&self, id: i64) -> Result<Option<Offer>, DbError> {
        Ok(self
            .db
            .lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM update_offers WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()?)
    }

    /// Approve (`approve = true`) or reject an available offer; the approval
    /// records the exact diff digest shown to the person. Both go into the
    /// audit table with `client`.
    pub fn decide(&self, id: i64, approve: bool, client: &str) -> Result<Offer, DecisionError> {
        let offer = self.get(id)?.ok_or(DecisionError::NotFound(id))?;
        if offer.state != OfferState::Available {
            return Err(DecisionError::NotAvailable {
                id,
                state: offer.state.as_str(),
            });
        }
        let (state, digest) = if approve {
            (OfferState::Approved, offer.diff_digest.clone())
        } else {
            (OfferState::Rejected, None)
        };
        let now = now_secs();
        {
            let mut conn = self.db.lock();
            let tx = conn.transaction().map_err(DbError::from)?;
            tx.execute(
                "UPDATE update_offers SET state = ?2, approved_digest = ?3, reason = NULL, updated_at = ?4 WHERE id = ?1",
                params![id, state.as_str(), digest, now],
            )?;
            audit(&tx, &offer, state, client, now)?;
            tx.commit()?;
        }
        self.get(id)?.ok_or(DecisionError::NotFound(id))
    }

    /// Move offer `id` to `state` (installed, failed) with `reason`, and
    /// record it in the audit table with the offer's diff digest.
    pub fn mark(
        &self,
        id: i64,
        state: OfferState,
        reason: Option<&str>,
        client: &str,
    ) -> Result<Offer, DecisionError> {
        let offer = self.get(id)?.ok_or(DecisionError::NotFound(id))?;
        let now = now_secs();
        {
            let mut conn = self.db.lock();
            let tx = conn.transaction().map_err(DbError::from)?;
            tx.execute(
                "UPDATE update_offers SET state = ?2, reason = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, state.as_str(), reason, now],
            )?;
            audit(&tx, &offer, state, client, now)?;
            tx.commit()?;
        }
        self.get(id)?.ok_or(DecisionError::NotFound(id))
    }

    /// Whether `offer`'s approval still covers `current_digest` (the diff
    /// recomputed at install time). An approval of another diff is void:
    /// the offer goes back to `available` (recorded in the audit table).
    pub fn approval_holds(&self, id: i64, current_digest: &str) -> Result<bool, DecisionError> {
        let offer = self.get(id)?.ok_or(DecisionError::NotFound(id))?;
        if offer.state != OfferState::Approved {
            return Ok(false);
        }
        if offer.approved_digest.as_deref() == Some(current_digest) {
            return Ok(true);
        }
        let now = now_secs();
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(DbError::from)?;
        tx.execute(
            "UPDATE update_offers SET state = 'available', approved_digest = NULL, diff_digest = ?2,
                 reason = 'the capability diff changed since approval; approve again', updated_at = ?3
             WHERE id = ?1",
            params![id, current_digest, now],
        )?;
        tx.execute(
            "INSERT INTO update_audit (offer_id, module, to_version, decision, diff_digest, client, at)
             VALUES (?1, ?2, ?3, 'approval-void', ?4, 'host', ?5)",
            params![id, offer.module, offer.to_version, current_digest, now],
        )?;
        tx.commit()?;
        Ok(false)
    }

    /// The audit entries of an offer, oldest first.
    pub fn audit(&self, id: i64) -> Result<Vec<AuditEntry>, DbError> {
        let conn = self.db.lock();
        let mut st = conn.prepare(
            "SELECT decision, diff_digest, client, at FROM update_audit WHERE offer_id = ?1 ORDER BY id",
        )?;
        let rows = st
            .query_map(params![id], |r| {
                Ok(AuditEntry {
                    decision: r.get(0)?,
                    diff_digest: r.get(1)?,
                    client: r.get(2)?,
                    at: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The update clock: `max(now, highest time seen)`, stored as the new
    /// highest. Seconds since the epoch.
    pub fn clock(&self, now: i64) -> Result<i64, DbError> {
        let conn = self.db.lock();
        let seen: Option<i64> = conn
            .query_row(
                "SELECT highest_secs FROM update_clock WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let t = seen.map_or(now, |s| s.max(now));
        conn.execute(
            "INSERT INTO update_clock (id, highest_secs) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET highest_secs = MAX(highest_secs, excluded.highest_secs)",
            params![t],
        )?;
        Ok(t)
    }
}

/// The audit row of a decision or state change of `offer`, with its diff
/// digest, in the caller's transaction.
fn audit(
    tx: &rusqlite::Transaction<'_>,
    offer: &Offer,
    state: OfferState,
    client: &str,
    now: i64,
) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO update_audit (offer_id, module, to_version, decision, diff_digest, client, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            offer.id,
            offer.module,
            offer.to_version,
            state.as_str(),
            offer.diff_digest,
            client,
            now
        ],
    )
}
