//! Staff state every node shares (#18): sessions, sign-ins in progress and
//! sign-ins held for their e-mail link live in the store's database, so a
//! staff browser may reach any node behind the balancer (the sign-in
//! started on one, the provider's callback landing on another).
//!
//! | table | sealed content | AAD |
//! | --- | --- | --- |
//! | `staff_state` | JSON of the session, the sign-in's PKCE verifier and nonce, or the held sign-in | `"outpost-cloud/staff-state/v1"`, u8 len, kind, u8 len, key |
//!
//! A row's key is the SHA-256 of the secret its browser holds (the session
//! id, the OIDC state, the mailed token): the database alone gives nobody a
//! cookie or a link that works. Plaintext columns: the kind and the expiry.
//! Expired rows are purged whenever a row of their kind is added; a
//! sign-in in progress or a held one is taken (deleted and returned) in one
//! statement, so it works once across every node.

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::atrest::aad;
use crate::db::args;
use crate::store::{Store, now};

const AAD_STAFF_STATE: &[u8] = b"outpost-cloud/staff-state/v1";

/// The table (created by [`Store::open_with`]).
pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS staff_state(
         kind TEXT NOT NULL,
         key BLOB NOT NULL,
         expires_at INTEGER NOT NULL,
         sealed BLOB NOT NULL,
         PRIMARY KEY (kind, key));";

/// What a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A signed-in staff member, by session id.
    Session,
    /// A sign-in sent to the provider, by OIDC state.
    Login,
    /// A sign-in held for its e-mail link, by the link's token.
    Held,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::Login => "login",
            Kind::Held => "held",
        }
    }
}

fn row_aad(kind: Kind, key: &[u8; 32]) -> Vec<u8> {
    aad(AAD_STAFF_STATE, &[kind.as_str().as_bytes(), key], None)
}

/// Keep `value` under `key` for `ttl_secs`, unless `max` unexpired rows of
/// `kind` exist already (`Ok(false)`).
pub(crate) fn put<T: Serialize>(
    store: &Store,
    kind: Kind,
    key: &[u8; 32],
    ttl_secs: u64,
    value: &T,
    max: usize,
) -> anyhow::Result<bool> {
    let json = Zeroizing::new(serde_json::to_vec(value)?);
    let blob = store.server_key().seal(&row_aad(kind, key), &json)?;
    let now = now();
    let expires = now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX));
    store.db().write(|sql| {
        sql.execute(
            "DELETE FROM staff_state WHERE kind = ?1 AND expires_at <= ?2",
            args![kind.as_str(), now],
        )?;
        let n = sql
            .query_one(
                "SELECT COUNT(*) FROM staff_state WHERE kind = ?1",
                args![kind.as_str()],
            )?
            .int(0)?;
        if usize::try_from(n).unwrap_or(usize::MAX) >= max {
            return Ok(false);
        }
        let added = sql.execute(
            "INSERT INTO staff_state(kind, key, expires_at, sealed) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            args![kind.as_str(), key.as_slice(), expires, blob.as_slice()],
        )?;
        Ok(added == 1)
    })
}

fn open<T: DeserializeOwned>(
    store: &Store,
    kind: Kind,
    key: &[u8; 32],
    blob: &[u8],
) -> anyhow::Result<T> {
    let plain = Zeroizing::new(store.server_key().open(&row_aad(kind, key), blob)?);
    serde_json::from_slice(&plain).with_context(|| format!("a staff {} row", kind.as_str()))
}

/// What is kept under `key`, if it has not expired: `Ok(None)` when there
/// is nothing, `Ok(Some(Err(())))` when it expired (and is removed).
pub(crate) fn get<T: DeserializeOwned>(
    store: &Store,
    kind: Kind,
    key: &[u8; 32],
) -> anyhow::Result<Option<Result<T, Expired>>> {
    let row = store.db().read(|sql| {
        sql.query_opt(
            "SELECT expires_at, sealed FROM staff_state WHERE kind = ?1 AND key = ?2",
            args![kind.as_str(), key.as_slice()],
        )
    })?;
    let Some(row) = row else { return Ok(None) };
    if row.int(0)? <= now() {
        remove(store, kind, key)?;
        return Ok(Some(Err(Expired)));
    }
    Ok(Some(Ok(open(store, kind, key, &row.blob(1)?)?)))
}

/// The row has expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expired;

/// Remove what is kept under `key` and return it if it had not expired:
/// whichever node asks first gets it, once.
pub(crate) fn take<T: DeserializeOwned>(
    store: &Store,
    kind: Kind,
    key: &[u8; 32],
) -> anyhow::Result<Option<T>> {
    let row = store.db().write(|sql| {
        sql.query_opt(
            "DELETE FROM staff_state WHERE kind = ?1 AND key = ?2 RETURNING expires_at, sealed",
            args![kind.as_str(), key.as_slice()],
        )
    })?;
    match row {
        Some(row) if row.int(0)? > now() => Ok(Some(open(store, kind, key, &row.blob(1)?)?)),
        _ => Ok(None),
    }
}

/// Remove what is kept under `key`.
pub(crate) fn remove(store: &Store, kind: Kind, key: &[u8; 32]) -> anyhow::Result<()> {
    store.db().write(|sql| {
        sql.execute(
            "DELETE FROM staff_state WHERE kind = ?1 AND key = ?2",
            args![kind.as_str(), key.as_slice()],
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_sealed_capped_expire_and_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        assert!(put(&store, Kind::Login, &a, 60, &"verifier-a", 2).unwrap());
        assert!(put(&store, Kind::Login, &b, 60, &"verifier-b", 2).unwrap());
        // The cap counts unexpired rows of the kind only.
        assert!(!put(&store, Kind::Login, &c, 60, &"verifier-c", 2).unwrap());
        assert!(put(&store, Kind::Held, &c, 60, &"held-c", 2).unwrap());
        assert_eq!(
            take::<String>(&store, Kind::Login, &a).unwrap().as_deref(),
            Some("verifier-a")
        );
        assert_eq!(take::<String>(&store, Kind::Login, &a).unwrap(), None);
        // Another kind under the same key does not open (the AAD names it).
        assert_eq!(take::<String>(&store, Kind::Session, &b).unwrap(), None);
        // Expired: reported as such, then gone; its place is free again.
        assert!(put(&store, Kind::Session, &a, 0, &"old", 10).unwrap());
        assert_eq!(
            get::<String>(&store, Kind::Session, &a).unwrap(),
            Some(Err(Expired))
        );
        assert_eq!(get::<String>(&store, Kind::Session, &a).unwrap(), None);
        assert!(put(&store, Kind::Session, &a, 60, &"new", 10).unwrap());
        assert_eq!(
            get::<String>(&store, Kind::Session, &a).unwrap(),
            Some(Ok("new".to_owned()))
        );
        remove(&store, Kind::Session, &a).unwrap();
        assert_eq!(get::<String>(&store, Kind::Session, &a).unwrap(), None);
        // The database holds no value in clear.
        let raw = std::fs::read(dir.path().join(crate::store::DB_FILE)).unwrap();
        let mut wal = raw.clone();
        wal.extend(std::fs::read(dir.path().join("cloud.db-wal")).unwrap_or_default());
        assert!(!wal.windows(10).any(|w| w == b"verifier-b"));
    }
}
