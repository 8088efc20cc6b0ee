//! The staff tables, in the store's database: each device's region and
//! the staff audit. Kept apart from `store.rs`; reached through the
//! store's [`crate::db::Db`].

use anyhow::Context;
use outpost_protocol::DeviceId;
use serde::Serialize;

use crate::db::args;
use crate::store::Store;

/// The region a device gets at enrolment when the server names none
/// (`outpost-cloud serve --region`).
pub const DEFAULT_REGION: &str = "default";

/// Longest region name.
pub const MAX_REGION_CHARS: usize = 64;

/// The staff tables (created by [`Store::open_with`]).
pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS device_region(
         device_id TEXT PRIMARY KEY NOT NULL,
         region TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS staff_audit(
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         at INTEGER NOT NULL,
         issuer TEXT,
         subject TEXT,
         action TEXT NOT NULL,
         route TEXT NOT NULL,
         device TEXT,
         peer TEXT NOT NULL,
         outcome TEXT NOT NULL,
         detail TEXT);";

/// Check a region name: 1 to [`MAX_REGION_CHARS`] of `[A-Za-z0-9._-]`.
pub fn check_region(region: &str) -> anyhow::Result<()> {
    if region.is_empty()
        || region.chars().count() > MAX_REGION_CHARS
        || !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        anyhow::bail!(
            "region name {region:?} is not 1 to {MAX_REGION_CHARS} letters, digits, '.', '_' or '-'"
        );
    }
    Ok(())
}

/// Set (or change) the region of `device`.
pub fn set_region(store: &Store, device: &DeviceId, region: &str) -> anyhow::Result<()> {
    check_region(region)?;
    store
        .db()
        .write(|sql| {
            sql.execute(
                "INSERT INTO device_region(device_id, region) VALUES (?1, ?2)
                 ON CONFLICT(device_id) DO UPDATE SET region = excluded.region",
                args![device.as_str(), region],
            )
        })
        .with_context(|| format!("setting the region of device {device}"))?;
    Ok(())
}

/// The region of `device`; `None` when it has none (then no staff member
/// sees it).
pub fn region_of(store: &Store, device: &DeviceId) -> anyhow::Result<Option<String>> {
    store
        .db()
        .read(|sql| {
            sql.query_opt(
                "SELECT region FROM device_region WHERE device_id = ?1",
                args![device.as_str()],
            )?
            .map(|r| r.text(0))
            .transpose()
        })
        .context("reading a device's region")
}

/// One row of the staff audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuditEntry {
    /// Row number (increasing).
    pub id: i64,
    /// When, unix seconds.
    pub at: i64,
    /// The OpenID provider that vouched for the staff member (none when
    /// the sign-in failed before an ID token was validated).
    pub issuer: Option<String>,
    /// The staff member's subject at that provider.
    pub subject: Option<String>,
    /// `sign-in`, `sign-out`, `list-devices`, `read-batches`, `read-status`.
    pub action: String,
    /// The route requested.
    pub route: String,
    /// The device concerned, if any.
    pub device: Option<String>,
    /// The peer address of the connection.
    pub peer: String,
    /// `ok`, `refused` (sign-in), `forbidden` (403) or `not-found` (404).
    pub outcome: String,
    /// Why it was refused (never a token, code or claim value).
    pub detail: Option<String>,
}

/// Append one audit row (`id` and `at` are set here).
pub(crate) fn audit(store: &Store, e: &AuditEntry) -> anyhow::Result<()> {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    store
        .db()
        .write(|sql| {
            sql.execute(
                "INSERT INTO staff_audit(at, issuer, subject, action, route, device, peer, outcome, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                args![
                    at,
                    e.issuer.as_deref(),
                    e.subject.as_deref(),
                    e.action.as_str(),
                    e.route.as_str(),
                    e.device.as_deref(),
                    e.peer.as_str(),
                    e.outcome.as_str(),
                    e.detail.as_deref()
                ],
            )
        })
        .context("writing the staff audit")?;
    Ok(())
}

/// Every audit row, oldest first.
pub fn audit_entries(store: &Store) -> anyhow::Result<Vec<AuditEntry>> {
    let rows = store
        .db()
        .read(|sql| {
            sql.query(
                "SELECT id, at, issuer, subject, action, route, device, peer, outcome, detail
                 FROM staff_audit ORDER BY id",
                &[],
            )
        })
        .context("reading the staff audit")?;
    rows.into_iter()
        .map(|r| {
            Ok(AuditEntry {
                id: r.int(0)?,
                at: r.int(1)?,
                issuer: r.opt_text(2)?,
                subject: r.opt_text(3)?,
                action: r.text(4)?,
                route: r.text(5)?,
                device: r.opt_text(6)?,
                peer: r.text(7)?,
                outcome: r.text(8)?,
                detail: r.opt_text(9)?,
            })
        })
        .collect()
}
