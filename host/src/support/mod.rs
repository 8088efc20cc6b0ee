//! Remote support, the PC's side (#16): the person at the PC asks for a
//! session; the [`Broker`] decides each connection attempt the relay passes
//! on, in a fixed order that no module can change:
//!
//! 1. the session exists, is still open, and was not used before (a replayed
//!    session id is refused);
//! 2. lock-out: neither the session nor the device is locked (a correct
//!    password during a lock is refused too, unevaluated);
//! 3. the staff credential: signed by an authority in `[support]
//!    authority-keys`, valid now, and the engineer proves possession of its
//!    key by signing this attempt's challenge with the session id and the
//!    end-to-end channel's binding (one format:
//!    [`outpost_signing::support::challenge_message`]); the credential names
//!    this PC's support region;
//! 4. the one-time password (constant-time; a failure counts against the
//!    session and the device; the password is retired after
//!    `max-failures`);
//! 5. the session-policy module ([`Supervisor::evaluate_support_request`]):
//!    a trapping, hanging, quarantined or absent module refuses;
//! 6. the person at the PC accepts or refuses each offered permission; no
//!    answer within `approval-timeout-secs` refuses;
//! 7. the grant is exactly the accepted permissions.
//!
//! The running host serves requests through the vendor's relay ([`link`]:
//! the broker is the channel's `Authorizer`).
//!
//! Every step is recorded in the [`audit`] chain. Sessions end when the
//! person or the engineer ends them, or at the idle or total timeout.
//!
//! Architecture Invariant: there is no code path for outgoing sessions or
//! meetings: a session starts only from a request made on this PC and an
//! engineer's attempt the relay hands in.
//! Architecture Invariant: the password is never logged, put in an event,
//! stored in clear or written to the audit chain.
//! Architecture Invariant: the policy module cannot loosen host rules: it can
//! only narrow what the engineer asked for, and the person approves each
//! permission of what is left.

pub mod audit;
pub mod link;
pub mod lockout;
pub mod password;
pub mod screen;
pub mod upload;

use crate::events::{Events, HostEvent};
use crate::runtime::bindings::session_policy::exports::outpost::agent::policy as wit;
use crate::store::{Db, DbError};
use crate::supervisor::Supervisor;
use audit::append_in;
use lockout::Counter;
use outpost_signing::support::{CredentialError, NONCE_BYTES, verify_credential};
use rand_core::{OsRng, RngCore};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use zeroize::Zeroizing;

/// The tables of support sessions and lock-out counters (created at open).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS support_sessions (
    id               TEXT PRIMARY KEY,
    created_at_ms    INTEGER NOT NULL,
    expires_at_ms    INTEGER NOT NULL,
    salt             BLOB NOT NULL,
    password_hash    BLOB NOT NULL,
    state            TEXT NOT NULL,
    failures         INTEGER NOT NULL DEFAULT 0,
    locked_until_ms  INTEGER NOT NULL DEFAULT 0,
    engineer         TEXT,
    display_name     TEXT,
    regions          TEXT,
    requested        TEXT,
    offered          TEXT,
    permissions      TEXT,
    started_at_ms    INTEGER,
    ended_at_ms      INTEGER,
    end_reason       TEXT
);
CREATE TABLE IF NOT EXISTS support_lockout (
    scope            TEXT PRIMARY KEY,
    failures         INTEGER NOT NULL,
    locked_until_ms  INTEGER NOT NULL
);
";

/// Longest a policy module may take to decide (the host's own deadline on
/// top of the module's call limits).
pub const POLICY_DEADLINE: Duration = Duration::from_secs(10);
/// Longest a challenge stays usable.
pub const CHALLENGE_TTL_MS: i64 = 60_000;
/// How often the timer looks for sessions past their timeouts.
pub const TIMER_PERIOD: Duration = Duration::from_secs(1);

/// `[support]` in the host config. Without authority keys every attempt is
/// refused (untrusted authority); without a region every credential is.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SupportConfig {
    /// This PC's support region (a credential must name it, e.g. `eu`).
    pub region: Option<String>,
    /// Public keys (64 hex digits) of the vendor's support authorities.
    pub authority_keys: Vec<String>,
    /// How long a request waits for an engineer (default 30 min).
    pub request_ttl_secs: u64,
    /// How long the person has to answer the approval prompt (default 2 min).
    pub approval_timeout_secs: u64,
    /// A session without traffic ends after this (default 15 min).
    pub idle_timeout_secs: u64,
    /// A session ends after this in any case (default 2 h).
    pub total_timeout_secs: u64,
    /// Wrong passwords after which the session's password is retired (default 5).
    pub max_failures: u32,
    /// The vendor's support relay, `host:port`: the running host registers
    /// each request there ([`link`]). Without it requests are made but no
    /// engineer can reach them.
    pub relay: Option<String>,
    /// The name the relay's TLS certificate must carry (default: the host
    /// part of `relay`).
    pub relay_server_name: Option<String>,
    /// The one folder a session with file transfer may write into and read
    /// from. Without it every transfer is refused.
    pub file_folder: Option<std::path::PathBuf>,
    /// The screen backend started per session ([`screen`]): an argument
    /// vector with `{port}`; default on Linux: x11vnc on `:0`; elsewhere
    /// none, and then view and control are never offered (`[]` turns the
    /// screen off on Linux too).
    pub screen_command: Option<Vec<String>>,
    /// Appended to `screen-command` when control was not approved
    /// (default `["-viewonly"]`, x11vnc's).
    pub screen_view_only_args: Option<Vec<String>>,
    /// `screen-command` takes no `{passwdfile}`: the backend runs without
    /// a password, and any local process may reach its loopback port
    /// before the engineer (default false: `check-config` refuses such a
    /// command).
    pub screen_without_password: bool,
}

impl Default for SupportConfig {
    fn default() -> Self {
        SupportConfig {
            region: None,
            authority_keys: Vec::new(),
            request_ttl_secs: 30 * 60,
            approval_timeout_secs: 120,
            idle_timeout_secs: 15 * 60,
            total_timeout_secs: 2 * 60 * 60,
            max_failures: 5,
            relay: None,
            relay_server_name: None,
            file_folder: None,
            screen_command: None,
            screen_view_only_args: None,
            screen_without_password: false,
        }
    }
}

impl SupportConfig {
    /// Check the section (used by `Config::parse`, hence `check-config`).
    pub fn validate(&self) -> Result<(), String> {
        self.trusted_keys()?;
        if self.request_ttl_secs == 0
            || self.approval_timeout_secs == 0
            || self.idle_timeout_secs == 0
            || self.total_timeout_secs == 0
            || self.max_failures == 0
        {
            return Err("support: request-ttl-secs, approval-timeout-secs, idle-timeout-secs, total-timeout-secs and max-failures must be above zero".into());
        }
        if let Some(r) = &self.region
            && (r.is_empty() || r.len() > 64)
        {
            return Err("support: region must be 1 to 64 characters".into());
        }
        if self.relay.is_some() {
            self.relay_server_name()?;
        }
        match (&self.screen_command, screen::DEFAULT_COMMAND) {
            (Some(c), _) => screen::ScreenCommand::validate(c, self.screen_without_password)?,
            (None, Some(d)) => screen::ScreenCommand::validate(
                &d.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                self.screen_without_password,
            )?,
            (None, None) => {}
        }
        Ok(())
    }

    /// The name the relay's certificate must carry: `relay-server-name`,
    /// or the host part of `relay` (`host:port`, `[v6]:port`).
    pub fn relay_server_name(&self) -> Result<String, String> {
        let Some(relay) = &self.relay else {
            return Err("support: no relay configured".into());
        };
        let (host, port) = relay
            .rsplit_once(':')
            .ok_or_else(|| format!("support: relay {relay:?} is not host:port"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("support: relay {relay:?} is not host:port"));
        }
        let name = match &self.relay_server_name {
            Some(n) => n.clone(),
            None => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        };
        rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|_| format!("support: {name:?} is not a valid relay server name"))?;
        Ok(name)
    }

    /// The authority keys, parsed.
    pub fn trusted_keys(&self) -> Result<Vec<outpost_signing::VerifyingKey>, String> {
        self.authority_keys
            .iter()
            .map(|k| {
                outpost_signing::public_key_from_hex(k)
                    .map_err(|e| format!("support: authority key {k:?}: {e}"))
            })
            .collect()
    }
}

/// A permission a session may hold: the workspace's one definition (in
/// `outpost-signing`, re-exported here and by `outpost-support-proto`).
pub use outpost_signing::Permission;

fn to_wit(p: Permission) -> wit::Permission {
    match p {
        Permission::View => wit::Permission::View,
        Permission::Control => wit::Permission::Control,
        Permission::FileTransfer => wit::Permission::FileTransfer,
    }
}

fn from_wit(p: wit::Permission) -> Permission {
    match p {
        wit::Permission::View => Permission::View,
        wit::Permission::Control => Permission::Control,
        wit::Permission::FileTransfer => Permission::FileTransfer,
    }
}

fn join(ps: &[Permission]) -> String {
    ps.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
}

fn split(s: Option<String>) -> Vec<Permission> {
    s.unwrap_or_default()
        .split(',')
        .filter_map(Permission::parse)
        .collect()
}

/// One connection attempt, as the end-to-end channel hands it in (the
/// support channel's type: session id, password, credential, the proof of
/// possession bound to the channel, the requested permissions).
pub use outpost_support_proto::ConnectAttempt;

/// What a successful attempt is granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionGrant {
    /// The session.
    pub session_id: String,
    /// Exactly the permissions the person accepted.
    pub permissions: Vec<Permission>,
    /// The engineer's id (from the verified credential).
    pub engineer: String,
    /// The session ends after this long without traffic.
    pub idle_timeout: Duration,
    /// The session ends after this long in any case.
    pub total_timeout: Duration,
}

/// Why an attempt (or an action on a session) was refused.
#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    /// No such session.
    #[error("no support session {0}")]
    UnknownSession(String),
    /// Session or device locked after wrong passwords.
    #[error("locked after wrong passwords until {} (Unix ms {until_ms})", crate::net::format_rfc3339(UNIX_EPOCH + Duration::from_millis(*until_ms as u64)))]
    Locked {
        /// End of the lock (Unix milliseconds).
        until_ms: i64,
    },
    /// Wrong password.
    #[error("wrong password ({remaining} attempt(s) left for this session)")]
    WrongPassword {
        /// Attempts left before the password is retired.
        remaining: u32,
    },
    /// The session's password was retired (too many failures, or a newer request).
    #[error("the password of support session {0} is retired")]
    PasswordRetired(String),
    /// The request was not taken up in time.
    #[error("support session {0} expired before an engineer connected")]
    SessionExpired(String),
    /// The session was used or ended already.
    #[error("support session {0} was already used or ended")]
    Replayed(String),
    /// The credential expired or is not valid yet.
    #[error("{0}")]
    CredentialExpired(CredentialError),
    /// The credential is not signed by a trusted authority.
    #[error("{0}")]
    UntrustedAuthority(CredentialError),
    /// The credential is malformed or its signature fails.
    #[error("{0}")]
    BadCredential(CredentialError),
    /// No challenge, or the challenge signature is not the engineer key's.
    #[error("proof of possession failed: {0}")]
    BadProof(String),
    /// The credential does not name this PC's region.
    #[error("the engineer's credential does not cover this PC's support region ({0})")]
    RegionRefused(String),
    /// The policy module said no.
    #[error("the session policy refused: {reason}")]
    PolicyRefused {
        /// Its reason.
        reason: String,
    },
    /// The policy module failed (trap, deadline) or none is installed.
    #[error("the session policy failed: {0}")]
    PolicyFailed(String),
    /// The person accepted nothing (or did not answer in time).
    #[error("the person at the PC approved no permission")]
    NotApproved,
    /// The action does not fit the session's state.
    #[error("support session {id} is {state}: {action} is not possible")]
    WrongState {
        /// Session.
        id: String,
        /// Its state.
        state: String,
        /// What was asked.
        action: &'static str,
    },
    /// A permission that was not offered, or not granted.
    #[error("permission {permission} is not {what} in support session {id}")]
    NotPermitted {
        /// Session.
        id: String,
        /// Permission.
        permission: &'static str,
        /// `offered` or `granted`.
        what: &'static str,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for SupportError {
    fn from(e: rusqlite::Error) -> Self {
        SupportError::Db(DbError::Sqlite(e))
    }
}

impl SupportError {
    /// A short code for the audit and the API.
    pub fn code(&self) -> &'static str {
        match self {
            SupportError::UnknownSession(_) => "unknown-session",
            SupportError::Locked { .. } => "locked",
            SupportError::WrongPassword { .. } => "wrong-password",
            SupportError::PasswordRetired(_) => "password-retired",
            SupportError::SessionExpired(_) => "session-expired",
            SupportError::Replayed(_) => "replayed",
            SupportError::CredentialExpired(_) => "credential-expired",
            SupportError::UntrustedAuthority(_) => "untrusted-authority",
            SupportError::BadCredential(_) => "bad-credential",
            SupportError::BadProof(_) => "bad-proof",
            SupportError::RegionRefused(_) => "region-refused",
            SupportError::PolicyRefused { .. } => "policy-refused",
            SupportError::PolicyFailed(_) => "policy-failed",
            SupportError::NotApproved => "not-approved",
            SupportError::WrongState { .. } => "wrong-state",
            SupportError::NotPermitted { .. } => "not-permitted",
            SupportError::Db(_) => "unavailable",
        }
    }
}

/// The host's clock, injectable for tests.
pub trait Clock: Send + Sync {
    /// Now, in Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Clone, Default)]
pub struct ManualClock(Arc<std::sync::atomic::AtomicI64>);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn at(ms: i64) -> ManualClock {
        ManualClock(Arc::new(ms.into()))
    }
    /// Move it forward.
    pub fn advance(&self, d: Duration) {
        self.0
            .fetch_add(d.as_millis() as i64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A session's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionState {
    /// Waiting for an engineer.
    Open,
    /// Its password was retired (failures, or a newer request).
    Retired,
    /// Not taken up in time.
    Expired,
    /// An engineer authenticated; the policy is deciding.
    Connecting,
    /// Waiting for the person's answer.
    AwaitingApproval,
    /// Running with the granted permissions.
    Active,
    /// Over (refused, ended, timed out).
    Ended,
}

impl SessionState {
    fn as_str(self) -> &'static str {
        match self {
            SessionState::Open => "open",
            SessionState::Retired => "retired",
            SessionState::Expired => "expired",
            SessionState::Connecting => "connecting",
            SessionState::AwaitingApproval => "awaiting-approval",
            SessionState::Active => "active",
            SessionState::Ended => "ended",
        }
    }
    fn parse(s: &str) -> SessionState {
        match s {
            "open" => SessionState::Open,
            "retired" => SessionState::Retired,
            "expired" => SessionState::Expired,
            "connecting" => SessionState::Connecting,
            "awaiting-approval" => SessionState::AwaitingApproval,
            "active" => SessionState::Active,
            _ => SessionState::Ended,
        }
    }
}

/// A session as the API shows it (never the password).
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// State.
    pub state: SessionState,
    /// Created (Unix ms).
    pub created_at_ms: i64,
    /// Open for an engineer until (Unix ms).
    pub expires_at_ms: i64,
    /// Wrong passwords so far.
    pub failures: u32,
    /// Locked until (Unix ms), if locked now.
    pub locked_until_ms: Option<i64>,
    /// The engineer (verified id), once authenticated.
    pub engineer: Option<String>,
    /// The engineer's display name.
    pub display_name: Option<String>,
    /// The engineer's regions.
    pub regions: Vec<String>,
    /// Asked for.
    pub requested: Vec<Permission>,
    /// Offered to the person for approval (after the policy).
    pub offered: Vec<Permission>,
    /// Granted (accepted by the person).
    pub permissions: Vec<Permission>,
    /// Started (Unix ms).
    pub started_at_ms: Option<i64>,
    /// Ended (Unix ms).
    pub ended_at_ms: Option<i64>,
    /// Why it ended.
    pub end_reason: Option<String>,
}

/// A new request: the session and its password, shown once to the person.
#[derive(Serialize)]
pub struct NewSession {
    /// The session.
    pub session: SessionView,
    /// The one-time password (read it out to the engineer; never stored).
    #[serde(serialize_with = "reveal")]
    pub password: Zeroizing<String>,
}

fn reveal<S: serde::Serializer>(pw: &Zeroizing<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(pw)
}

struct Row {
    view: SessionView,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

const SESSION_COLUMNS: &str = "id, state, created_at_ms, expires_at_ms, failures, locked_until_ms, engineer, display_name, regions, requested, offered, permissions, started_at_ms, ended_at_ms, end_reason, salt, password_hash";

fn session_row(r: &rusqlite::Row<'_>, now_ms: i64) -> rusqlite::Result<Row> {
    let locked: i64 = r.get(5)?;
    Ok(Row {
        view: SessionView {
            id: r.get(0)?,
            state: SessionState::parse(&r.get::<_, String>(1)?),
            created_at_ms: r.get(2)?,
            expires_at_ms: r.get(3)?,
            failures: r.get(4)?,
            locked_until_ms: (locked > now_ms).then_some(locked),
            engineer: r.get(6)?,
            display_name: r.get(7)?,
            regions: r
                .get::<_, Option<String>>(8)?
                .map(|s| s.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            requested: split(r.get(9)?),
            offered: split(r.get(10)?),
            permissions: split(r.get(11)?),
            started_at_ms: r.get(12)?,
            ended_at_ms: r.get(13)?,
            end_reason: r.get(14)?,
        },
        salt: r.get(15)?,
        hash: r.get(16)?,
    })
}

/// The person's answer to an approval prompt.
#[derive(Clone, Debug)]
enum Answer {
    Pending,
    Accepted(Vec<Permission>),
    Ended,
}

/// A session id as recorded: what was typed, normalised, at most 64
/// characters of the alphabet (so hostile input cannot fill the audit).
fn clean_id(input: &str) -> String {
    password::normalize(input)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(password::SESSION_ID_CHARS * 2)
        .collect()
}

/// The display form of a normalised id (`ABCD-EFGH-JKMN`).
fn display_id(id: &str) -> String {
    id.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// The support broker: owns the support sessions of this PC.
pub struct Broker {
    db: Db,
    cfg: SupportConfig,
    trusted: Vec<outpost_signing::VerifyingKey>,
    supervisor: Arc<Supervisor>,
    events: Events,
    clock: Arc<dyn Clock>,
    challenges: Mutex<HashMap<String, ([u8; NONCE_BYTES], i64)>>,
    answers: Mutex<HashMap<String, watch::Sender<Answer>>>,
    ends: Mutex<HashMap<String, watch::Sender<bool>>>,
    activity: Mutex<HashMap<String, i64>>,
    checkpoint_key: Option<ed25519_dalek::SigningKey>,
    instrument_models: Vec<String>,
    /// Told of each new request (the [`link`] that serves them).
    requests: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Broker {
    /// A broker over `db`. Sessions a previous run left connecting, awaiting
    /// approval or active are ended (`host-restarted`): the relay
    /// connection they belonged to is gone.
    pub fn new(
        config: &crate::config::Config,
        db: Db,
        supervisor: Arc<Supervisor>,
        events: Events,
        clock: Arc<dyn Clock>,
    ) -> Result<Broker, SupportError> {
        let cfg = config.support.clone();
        let instrument_models = config.instruments.iter().map(|i| i.model.clone()).collect();
        let trusted = cfg
            .trusted_keys()
            .map_err(|e| SupportError::BadCredential(CredentialError::InvalidClaims(e)))?;
        let b = Broker {
            db,
            cfg,
            trusted,
            supervisor,
            events,
            clock,
            challenges: Mutex::default(),
            answers: Mutex::default(),
            ends: Mutex::default(),
            activity: Mutex::default(),
            checkpoint_key: None,
            instrument_models,
            requests: Mutex::default(),
        };
        let stale: Vec<String> = {
            let conn = b.db.lock();
            let mut st = conn.prepare(
                "SELECT id FROM support_sessions WHERE state IN ('connecting', 'awaiting-approval', 'active')",
            )?;
            st.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for id in stale {
            b.finish(&id, "host-restarted", "host")?;
        }
        Ok(b)
    }

    /// Sign audit checkpoints with `key` (see [`audit`]; from
    /// [`audit::checkpoint_key`] of the device key). Without it (a device
    /// not enrolled) the chain is kept without checkpoints.
    pub fn with_checkpoint_key(mut self, key: ed25519_dalek::SigningKey) -> Broker {
        self.checkpoint_key = Some(key);
        self
    }

    /// Sign a checkpoint now (`force`, at a session's end) or when
    /// [`audit::CHECKPOINT_EVERY`] entries went by without one.
    fn checkpoint(&self, force: bool) {
        let Some(key) = &self.checkpoint_key else {
            return;
        };
        let chain = audit::AuditChain::new(self.db.clone());
        let due = force
            || chain
                .since_checkpoint()
                .is_ok_and(|n| n >= audit::CHECKPOINT_EVERY);
        if due && let Err(e) = chain.checkpoint(key, self.now()) {
            tracing::error!(target: "outpost.support", error = %e, "audit checkpoint not written");
        }
    }

    /// The config it runs with.
    pub fn config(&self) -> &SupportConfig {
        &self.cfg
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn audit(&self, kind: &str, session: &str, detail: serde_json::Value) {
        let now = self.now();
        let mut conn = self.db.lock();
        let res = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .and_then(|tx| {
                append_in(&tx, now, kind, session, &detail)?;
                tx.commit()
            });
        if let Err(e) = res {
            tracing::error!(target: "outpost.support", kind, error = %e, "audit entry not written");
        }
        drop(conn);
        self.checkpoint(false);
    }

    fn row(&self, id: &str) -> Result<Option<Row>, SupportError> {
        let now = self.now();
        let conn = self.db.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM support_sessions WHERE id = ?1"),
                params![id],
                |r| session_row(r, now),
            )
            .optional()?)
    }

    /// Create a support request: a new session id and one-time password.
    /// Any earlier session still waiting for an engineer is retired.
    pub fn request(&self, client: &str) -> Result<NewSession, SupportError> {
        let now = self.now();
        let id = password::new_session_id();
        let key = clean_id(&id);
        let pw = password::new_password();
        let salt = password::new_salt();
        let hash = password::hash(&salt, &pw);
        let expires = now + (self.cfg.request_ttl_secs as i64) * 1000;
        let retired = {
            let mut conn = self.db.lock();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let old: Vec<String> = {
                let mut st = tx.prepare("SELECT id FROM support_sessions WHERE state = 'open'")?;
                st.query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?
            };
            tx.execute(
                "UPDATE support_sessions SET state = 'retired', end_reason = 'a newer request replaced it', ended_at_ms = ?1 WHERE state = 'open'",
                params![now],
            )?;
            for o in &old {
                append_in(
                    &tx,
                    now,
                    "password-retired",
                    o,
                    &json!({ "reason": "a newer request replaced it" }),
                )?;
            }
            tx.execute(
                "INSERT INTO support_sessions (id, created_at_ms, expires_at_ms, salt, password_hash, state) VALUES (?1, ?2, ?3, ?4, ?5, 'open')",
                params![key, now, expires, salt.as_slice(), hash.as_slice()],
            )?;
            append_in(
                &tx,
                now,
                "support-request",
                &key,
                &json!({ "client": client, "expires_at_ms": expires }),
            )?;
            tx.commit()?;
            old
        };
        for o in retired {
            lock(&self.challenges).remove(&o);
        }
        self.checkpoint(false);
        tracing::info!(target: "outpost.support", session = %key, client, "support request created");
        if let Some(tx) = lock(&self.requests).as_ref() {
            let _ = tx.send(key.clone());
        }
        self.events.emit(HostEvent::SupportRequested {
            session: display_id(&key),
            expires_at_ms: expires,
        });
        let mut view = self
            .row(&key)?
            .ok_or_else(|| SupportError::UnknownSession(key.clone()))?
            .view;
        view.id = display_id(&view.id);
        Ok(NewSession {
            session: view,
            password: pw,
        })
    }

    /// All sessions, newest first (at most `limit`).
    pub fn list(&self, limit: u32) -> Result<Vec<SessionView>, SupportError> {
        let now = self.now();
        let conn = self.db.lock();
        let mut st = conn.prepare(&format!(
            "SELECT {SESSION_COLUMNS} FROM support_sessions ORDER BY created_at_ms DESC, rowid DESC LIMIT ?1"
        ))?;
        let rows = st
            .query_map(params![limit], |r| session_row(r, now))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut v = r.view;
                v.id = display_id(&v.id);
                v
            })
            .collect())
    }

    /// One session.
    pub fn get(&self, id: &str) -> Result<SessionView, SupportError> {
        let key = clean_id(id);
        let mut v = self
            .row(&key)?
            .ok_or_else(|| SupportError::UnknownSession(display_id(&key)))?
            .view;
        v.id = display_id(&v.id);
        Ok(v)
    }

    /// A fresh challenge for one connection attempt on `session_id` (it
    /// replaces any earlier one, is good for one attempt and
    /// [`CHALLENGE_TTL_MS`]).
    pub fn challenge(&self, session_id: &str) -> Result<[u8; NONCE_BYTES], SupportError> {
        let key = clean_id(session_id);
        let Some(r) = self.row(&key)? else {
            return Err(SupportError::UnknownSession(display_id(&key)));
        };
        if r.view.state != SessionState::Open {
            return Err(SupportError::WrongState {
                id: display_id(&key),
                state: r.view.state.as_str().into(),
                action: "a connection attempt",
            });
        }
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        lock(&self.challenges).insert(key, (nonce, self.now()));
        Ok(nonce)
    }

    fn device_counter(&self) -> Result<Counter, SupportError> {
        let conn = self.db.lock();
        Ok(conn
            .query_row(
                "SELECT failures, locked_until_ms FROM support_lockout WHERE scope = 'device'",
                [],
                |r| {
                    Ok(Counter {
                        failures: r.get(0)?,
                        locked_until_ms: r.get(1)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    /// Refuse an attempt: audit it and say so.
    fn refuse(&self, key: &str, a: &ConnectAttempt, e: SupportError) -> SupportError {
        tracing::info!(target: "outpost.support", session = %key, connection = %a.connection, code = e.code(), "support connection refused");
        self.audit(
            "connect-refused",
            key,
            json!({ "connection": a.connection, "code": e.code(), "reason": e.to_string() }),
        );
        self.events.emit(HostEvent::SupportRefused {
            session: display_id(key),
            reason: e.code().to_owned(),
        });
        e
    }

    /// Record a wrong password (or an unknown session id) against the
    /// device, and the session if known; retire the session's password at
    /// `max-failures`. Returns the error to give.
    fn fail_password(
        &self,
        key: &str,
        session: Option<&Row>,
        a: &ConnectAttempt,
    ) -> Result<SupportError, SupportError> {
        let now = self.now();
        let mut device = self.device_counter()?;
        device.fail(now);
        let mut conn = self.db.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO support_lockout (scope, failures, locked_until_ms) VALUES ('device', ?1, ?2)
             ON CONFLICT (scope) DO UPDATE SET failures = excluded.failures, locked_until_ms = excluded.locked_until_ms",
            params![device.failures, device.locked_until_ms],
        )?;
        let err = match session {
            None => SupportError::UnknownSession(display_id(key)),
            Some(s) => {
                let mut c = Counter {
                    failures: s.view.failures,
                    locked_until_ms: 0,
                };
                c.fail(now);
                let retire = c.failures >= self.cfg.max_failures;
                tx.execute(
                    "UPDATE support_sessions SET failures = ?2, locked_until_ms = ?3 WHERE id = ?1",
                    params![key, c.failures, c.locked_until_ms],
                )?;
                append_in(
                    &tx,
                    now,
                    "auth-failed",
                    key,
                    &json!({ "connection": a.connection, "session_failures": c.failures, "device_failures": device.failures, "locked_until_ms": device.locked_until_ms.max(c.locked_until_ms) }),
                )?;
                if retire {
                    tx.execute(
                        "UPDATE support_sessions SET state = 'retired', ended_at_ms = ?2, end_reason = 'too many wrong passwords' WHERE id = ?1",
                        params![key, now],
                    )?;
                    append_in(
                        &tx,
                        now,
                        "password-retired",
                        key,
                        &json!({ "reason": "too many wrong passwords", "failures": c.failures }),
                    )?;
                    SupportError::PasswordRetired(display_id(key))
                } else {
                    SupportError::WrongPassword {
                        remaining: self.cfg.max_failures - c.failures,
                    }
                }
            }
        };
        if session.is_none() {
            append_in(
                &tx,
                now,
                "auth-failed",
                "",
                &json!({ "connection": a.connection, "unknown_session": key, "device_failures": device.failures, "locked_until_ms": device.locked_until_ms }),
            )?;
        }
        tx.commit()?;
        drop(conn);
        self.checkpoint(false);
        self.events.emit(HostEvent::SupportRefused {
            session: display_id(key),
            reason: err.code().to_owned(),
        });
        Ok(err)
    }

    /// Decide one connection attempt (see the module doc for the order).
    #[tracing::instrument(name = "outpost.support.connect", skip_all, fields(connection = %a.connection))]
    pub async fn connect(&self, a: ConnectAttempt) -> Result<SessionGrant, SupportError> {
        let key = clean_id(&a.session_id);
        let now = self.now();
        // 1. The session exists, is open, was not used before.
        let Some(s) = self.row(&key)? else {
            let e = self.fail_password(&key, None, &a)?;
            return Err(e);
        };
        match s.view.state {
            SessionState::Open if s.view.expires_at_ms <= now => {
                self.db.lock().execute(
                    "UPDATE support_sessions SET state = 'expired', ended_at_ms = ?2, end_reason = 'not taken up in time' WHERE id = ?1 AND state = 'open'",
                    params![key, now],
                )?;
                return Err(self.refuse(&key, &a, SupportError::SessionExpired(display_id(&key))));
            }
            SessionState::Open => {}
            SessionState::Retired => {
                return Err(self.refuse(&key, &a, SupportError::PasswordRetired(display_id(&key))));
            }
            SessionState::Expired => {
                return Err(self.refuse(&key, &a, SupportError::SessionExpired(display_id(&key))));
            }
            _ => return Err(self.refuse(&key, &a, SupportError::Replayed(display_id(&key)))),
        }
        // 2. Lock-out: the session's and the device's.
        let device = self.device_counter()?;
        let session_lock = Counter {
            failures: s.view.failures,
            locked_until_ms: s.view.locked_until_ms.unwrap_or(0),
        };
        if let Some(until_ms) = [device.locked(now), session_lock.locked(now)]
            .into_iter()
            .flatten()
            .max()
        {
            self.audit(
                "locked-out",
                &key,
                json!({ "connection": a.connection, "locked_until_ms": until_ms }),
            );
            self.events.emit(HostEvent::SupportRefused {
                session: display_id(&key),
                reason: "locked".into(),
            });
            return Err(SupportError::Locked { until_ms });
        }
        // 3. The credential, its proof of possession, the region.
        let challenge = lock(&self.challenges).remove(&key);
        let nonce = match challenge {
            Some((n, at)) if now - at <= CHALLENGE_TTL_MS => n,
            Some(_) => {
                return Err(self.refuse(
                    &key,
                    &a,
                    SupportError::BadProof("the challenge expired".into()),
                ));
            }
            None => {
                return Err(self.refuse(
                    &key,
                    &a,
                    SupportError::BadProof("no challenge was issued for this attempt".into()),
                ));
            }
        };
        let cred = match verify_credential(&a.credential, &self.trusted, now.div_euclid(1000)) {
            Ok(c) => c,
            Err(e) => {
                let e = match e {
                    CredentialError::Expired { .. } | CredentialError::NotYetValid { .. } => {
                        SupportError::CredentialExpired(e)
                    }
                    CredentialError::UntrustedAuthority(_) => SupportError::UntrustedAuthority(e),
                    e => SupportError::BadCredential(e),
                };
                return Err(self.refuse(&key, &a, e));
            }
        };
        if let Err(e) = cred.verify_proof(
            &a.session_id,
            &nonce,
            &a.channel_binding,
            &a.challenge_signature,
        ) {
            return Err(self.refuse(&key, &a, SupportError::BadProof(e.to_string())));
        }
        let claims = cred.claims();
        let region = self.cfg.region.clone().unwrap_or_default();
        if region.is_empty() || !claims.regions.contains(&region) {
            let shown = if region.is_empty() {
                "none configured".to_owned()
            } else {
                region.clone()
            };
            return Err(self.refuse(&key, &a, SupportError::RegionRefused(shown)));
        }
        // 4. The password.
        if !password::matches(&s.salt, &s.hash, &a.password) {
            return Err(self.fail_password(&key, Some(&s), &a)?);
        }
        let mut requested: Vec<Permission> = Vec::new();
        for p in &a.requested {
            if !requested.contains(p) {
                requested.push(*p);
            }
        }
        {
            let mut conn = self.db.lock();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE support_sessions SET state = 'connecting', engineer = ?2, display_name = ?3, regions = ?4, requested = ?5 WHERE id = ?1 AND state = 'open'",
                params![key, claims.engineer_id, claims.display_name, claims.regions.join(","), join(&requested)],
            )?;
            if n == 0 {
                drop(tx);
                drop(conn);
                return Err(self.refuse(&key, &a, SupportError::Replayed(display_id(&key))));
            }
            tx.execute("DELETE FROM support_lockout WHERE scope = 'device'", [])?;
            append_in(
                &tx,
                now,
                "authenticated",
                &key,
                &json!({ "connection": a.connection, "engineer": claims.engineer_id, "regions": claims.regions, "certifications": claims.certifications, "credential_expires": claims.expires, "authority": outpost_signing::public_key_to_hex(cred.authority()), "requested": join(&requested) }),
            )?;
            tx.commit()?;
        }
        // 5. The session policy.
        let (minute, weekday) = local_time(now);
        let request = wit::SupportRequest {
            engineer_id: claims.engineer_id.clone(),
            engineer_name: claims.display_name.clone(),
            engineer_regions: claims.regions.clone(),
            certifications: claims.certifications.clone(),
            credential_expires: claims.expires,
            pc_region: region.clone(),
            instrument_models: self.instrument_models.clone(),
            now: now.div_euclid(1000),
            local_minute_of_day: minute,
            local_weekday: weekday,
            permissions: requested.iter().map(|p| to_wit(*p)).collect(),
            // Set by the supervisor from the host config.
            pc_holds_patient_data: true,
        };
        let decision = tokio::time::timeout(
            POLICY_DEADLINE,
            self.supervisor.evaluate_support_request(request),
        )
        .await;
        let decision = match decision {
            Err(_) => {
                let e = SupportError::PolicyFailed(format!(
                    "no answer within {} s",
                    POLICY_DEADLINE.as_secs()
                ));
                return Err(self.end_refused(&key, &a, e)?);
            }
            Ok(d) => d,
        };
        let mut offered: Vec<Permission> = requested
            .iter()
            .copied()
            .filter(|p| decision.offer.iter().any(|o| from_wit(*o) == *p))
            .collect();
        // Host rule: without a screen backend, view and control are not
        // offered (a Windows PC names its VNC server in `screen-command`).
        let screen_withheld = screen::ScreenCommand::of(&self.cfg).is_none()
            && offered
                .iter()
                .any(|p| matches!(p, Permission::View | Permission::Control));
        if screen_withheld {
            offered.retain(|p| !matches!(p, Permission::View | Permission::Control));
        }
        self.audit(
            "policy-decision",
            &key,
            json!({ "allow": decision.allow, "offered": join(&offered), "reason": decision.reason, "screen_withheld": screen_withheld }),
        );
        if !decision.allow {
            let e = if is_policy_failure(&decision.reason) {
                SupportError::PolicyFailed(decision.reason)
            } else {
                SupportError::PolicyRefused {
                    reason: decision.reason,
                }
            };
            return Err(self.end_refused(&key, &a, e)?);
        }
        if offered.is_empty() {
            let e = SupportError::PolicyRefused {
                reason: if screen_withheld {
                    "nothing asked for may be offered: this PC has no screen backend ([support] screen-command), so view and control are not offered".into()
                } else {
                    "nothing asked for may be offered".into()
                },
            };
            return Err(self.end_refused(&key, &a, e)?);
        }
        // 6. The person approves each permission.
        let (tx_answer, mut rx_answer) = watch::channel(Answer::Pending);
        lock(&self.answers).insert(key.clone(), tx_answer);
        self.db.lock().execute(
            "UPDATE support_sessions SET state = 'awaiting-approval', offered = ?2 WHERE id = ?1",
            params![key, join(&offered)],
        )?;
        self.events.emit(HostEvent::SupportApprovalNeeded {
            session: display_id(&key),
            engineer: claims.engineer_id.clone(),
            display_name: claims.display_name.clone(),
            regions: claims.regions.clone(),
            offered: offered.iter().map(|p| p.as_str().to_owned()).collect(),
        });
        let wait = Duration::from_secs(self.cfg.approval_timeout_secs);
        let answer = tokio::time::timeout(wait, async {
            loop {
                let current = rx_answer.borrow_and_update().clone();
                if !matches!(current, Answer::Pending) {
                    return current;
                }
                if rx_answer.changed().await.is_err() {
                    return Answer::Ended;
                }
            }
        })
        .await;
        lock(&self.answers).remove(&key);
        let (accepted, how) = match answer {
            Ok(Answer::Accepted(p)) => (p, "answered"),
            Ok(_) => (Vec::new(), "ended by the person"),
            Err(_) => (Vec::new(), "no answer in time"),
        };
        let now = self.now();
        for p in &offered {
            self.audit(
                if accepted.contains(p) {
                    "approval"
                } else {
                    "refusal"
                },
                &key,
                json!({ "permission": p.as_str(), "how": how }),
            );
        }
        let granted: Vec<Permission> = offered
            .iter()
            .copied()
            .filter(|p| accepted.contains(p))
            .collect();
        if granted.is_empty() {
            return Err(self.end_refused(&key, &a, SupportError::NotApproved)?);
        }
        // 7. The grant.
        let n = self.db.lock().execute(
            "UPDATE support_sessions SET state = 'active', permissions = ?2, started_at_ms = ?3 WHERE id = ?1 AND state = 'awaiting-approval'",
            params![key, join(&granted), now],
        )?;
        if n == 0 {
            return Err(SupportError::NotApproved);
        }
        lock(&self.activity).insert(key.clone(), now);
        lock(&self.ends).insert(key.clone(), watch::channel(false).0);
        self.audit(
            "session-started",
            &key,
            json!({ "connection": a.connection, "engineer": claims.engineer_id, "permissions": join(&granted) }),
        );
        self.events.emit(HostEvent::SupportSessionStarted {
            session: display_id(&key),
            engineer: claims.engineer_id.clone(),
            permissions: granted.iter().map(|p| p.as_str().to_owned()).collect(),
        });
        Ok(SessionGrant {
            session_id: display_id(&key),
            permissions: granted,
            engineer: claims.engineer_id.clone(),
            idle_timeout: Duration::from_secs(self.cfg.idle_timeout_secs),
            total_timeout: Duration::from_secs(self.cfg.total_timeout_secs),
        })
    }

    /// End a session refused after authentication (one use per session).
    fn end_refused(
        &self,
        key: &str,
        a: &ConnectAttempt,
        e: SupportError,
    ) -> Result<SupportError, SupportError> {
        let e = self.refuse(key, a, e);
        self.finish(key, e.code(), "host")?;
        Ok(e)
    }

    /// The person's answer: `accepted` are granted, every other offered
    /// permission is refused.
    pub fn decide(
        &self,
        session_id: &str,
        accepted: &[Permission],
        client: &str,
    ) -> Result<SessionView, SupportError> {
        let key = clean_id(session_id);
        let Some(r) = self.row(&key)? else {
            return Err(SupportError::UnknownSession(display_id(&key)));
        };
        if r.view.state != SessionState::AwaitingApproval {
            return Err(SupportError::WrongState {
                id: display_id(&key),
                state: r.view.state.as_str().into(),
                action: "an approval",
            });
        }
        for p in accepted {
            if !r.view.offered.contains(p) {
                return Err(SupportError::NotPermitted {
                    id: display_id(&key),
                    permission: p.as_str(),
                    what: "offered",
                });
            }
        }
        {
            // Held until the answer is recorded and sent: the waiting
            // connection takes this lock before it records what was approved
            // and refused, so the audit shows the answer first.
            let answers = lock(&self.answers);
            let Some(tx) = answers.get(&key).filter(|tx| !tx.is_closed()) else {
                return Err(SupportError::WrongState {
                    id: display_id(&key),
                    state: "no longer waiting".into(),
                    action: "an approval",
                });
            };
            tracing::info!(target: "outpost.support", session = %key, client, accepted = %join(accepted), "support approval answered");
            self.audit(
                "approval-answered",
                &key,
                json!({ "client": client, "accepted": join(accepted) }),
            );
            let _ = tx.send(Answer::Accepted(accepted.to_vec()));
        }
        self.get(&key)
    }

    /// End a session (the person, the engineer, or a timeout). Ending an
    /// open request retires its password; ending a session awaiting
    /// approval refuses everything.
    pub fn end(&self, session_id: &str, by: &str) -> Result<SessionView, SupportError> {
        let key = clean_id(session_id);
        let Some(r) = self.row(&key)? else {
            return Err(SupportError::UnknownSession(display_id(&key)));
        };
        match r.view.state {
            SessionState::AwaitingApproval => {
                if let Some(tx) = lock(&self.answers).get(&key) {
                    let _ = tx.send(Answer::Ended);
                }
                self.finish(&key, "ended-by-person", by)?;
            }
            SessionState::Open | SessionState::Connecting | SessionState::Active => {
                self.finish(&key, "ended", by)?;
            }
            s => {
                return Err(SupportError::WrongState {
                    id: display_id(&key),
                    state: s.as_str().into(),
                    action: "ending it",
                });
            }
        }
        self.get(&key)
    }

    fn finish(&self, key: &str, reason: &str, by: &str) -> Result<(), SupportError> {
        let now = self.now();
        let n = {
            let mut conn = self.db.lock();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE support_sessions SET state = 'ended', ended_at_ms = ?2, end_reason = ?3 WHERE id = ?1 AND state NOT IN ('ended', 'retired', 'expired')",
                params![key, now, reason],
            )?;
            if n > 0 {
                append_in(
                    &tx,
                    now,
                    "session-ended",
                    key,
                    &json!({ "reason": reason, "by": by }),
                )?;
            }
            tx.commit()?;
            n
        };
        lock(&self.challenges).remove(key);
        lock(&self.activity).remove(key);
        if let Some(tx) = lock(&self.ends).remove(key) {
            let _ = tx.send(true);
        }
        if n > 0 {
            self.checkpoint(true);
            self.events.emit(HostEvent::SupportSessionEnded {
                session: display_id(key),
                reason: reason.to_owned(),
            });
        }
        Ok(())
    }

    /// Traffic on an active session (the relay calls this): resets the
    /// idle timeout.
    pub fn touch(&self, session_id: &str) {
        let key = clean_id(session_id);
        let now = self.now();
        if let Some(t) = lock(&self.activity).get_mut(&key) {
            *t = now;
        }
    }

    /// Before using a permission (starting the screen backend, each file
    /// transfer): refused unless the session is active and holds it;
    /// recorded in the audit chain with `detail` (names, sizes, hashes —
    /// never content).
    pub fn use_permission(
        &self,
        session_id: &str,
        permission: Permission,
        detail: serde_json::Value,
    ) -> Result<(), SupportError> {
        let key = clean_id(session_id);
        let Some(r) = self.row(&key)? else {
            return Err(SupportError::UnknownSession(display_id(&key)));
        };
        if r.view.state != SessionState::Active {
            return Err(SupportError::WrongState {
                id: display_id(&key),
                state: r.view.state.as_str().into(),
                action: "using a permission",
            });
        }
        if !r.view.permissions.contains(&permission) {
            self.audit(
                "permission-refused",
                &key,
                json!({ "permission": permission.as_str(), "detail": detail }),
            );
            return Err(SupportError::NotPermitted {
                id: display_id(&key),
                permission: permission.as_str(),
                what: "granted",
            });
        }
        self.touch(&key);
        self.audit(
            "permission-use",
            &key,
            json!({ "permission": permission.as_str(), "detail": detail }),
        );
        Ok(())
    }

    /// A receiver that turns `true` when the session ends (None if it is
    /// not active): the relay side closes the channel on it.
    pub fn ended(&self, session_id: &str) -> Option<watch::Receiver<bool>> {
        lock(&self.ends)
            .get(&clean_id(session_id))
            .map(|tx| tx.subscribe())
    }

    /// End the active sessions past their idle or total timeout and expire
    /// open requests nobody took up. Returns how many ended.
    pub fn expire_due(&self) -> Result<usize, SupportError> {
        let now = self.now();
        let idle = self.cfg.idle_timeout_secs as i64 * 1000;
        let total = self.cfg.total_timeout_secs as i64 * 1000;
        let active: Vec<(String, i64)> = {
            let conn = self.db.lock();
            conn.execute(
                "UPDATE support_sessions SET state = 'expired', ended_at_ms = ?1, end_reason = 'not taken up in time' WHERE state = 'open' AND expires_at_ms <= ?1",
                params![now],
            )?;
            let mut st = conn
                .prepare("SELECT id, started_at_ms FROM support_sessions WHERE state = 'active'")?;
            st.query_map([], |r| {
                Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0)))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        let mut ended = 0;
        for (id, started) in active {
            let last = lock(&self.activity).get(&id).copied().unwrap_or(started);
            let reason = if now - started >= total {
                "total-timeout"
            } else if now - last >= idle {
                "idle-timeout"
            } else {
                continue;
            };
            self.finish(&id, reason, "host")?;
            ended += 1;
        }
        Ok(ended)
    }

    /// Run [`Broker::expire_due`] every [`TIMER_PERIOD`] until dropped.
    pub fn spawn_timer(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TIMER_PERIOD);
            loop {
                tick.tick().await;
                let Some(b) = weak.upgrade() else { return };
                if let Err(e) = b.expire_due() {
                    tracing::error!(target: "outpost.support", error = %e, "support timeouts not checked");
                }
            }
        })
    }
}

/// Local time of day (minutes since midnight) and weekday (0 = Monday) at
/// `ms` (Unix milliseconds), in the PC's time zone.
fn local_time(ms: i64) -> (u16, u8) {
    use chrono::{Datelike, TimeZone, Timelike};
    match chrono::Local.timestamp_millis_opt(ms).single() {
        Some(t) => (
            (t.hour() * 60 + t.minute()) as u16,
            t.weekday().num_days_from_monday() as u8,
        ),
        None => (0, 0),
    }
}

/// Reasons of [`Supervisor::evaluate_support_request`] that mean the policy
/// could not decide (none installed, quarantined, failed) rather than "no".
fn is_policy_failure(reason: &str) -> bool {
    reason.starts_with("no session-policy module")
        || reason.starts_with("session policy failed")
        || (reason.starts_with("session policy `") && reason.ends_with("is quarantined"))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(support: &str) -> Result<Config, String> {
        Config::parse(
            &format!("state-dir = \"state\"\n[support]\n{support}\n"),
            Path::new("outpost.toml"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn check_config_validates_the_support_section() {
        let key = outpost_signing::public_key_to_hex(
            &outpost_signing::SigningKey::from_bytes(&[3; 32]).verifying_key(),
        );
        let c = parse(&format!("region = \"eu\"\nauthority-keys = [\"{key}\"]")).unwrap();
        assert_eq!(c.support.trusted_keys().unwrap().len(), 1);
        assert_eq!(c.support.max_failures, 5);
        let e = parse("authority-keys = [\"abc\"]").unwrap_err();
        assert!(e.contains("support: authority key \"abc\""), "{e}");
        let e = parse("max-failures = 0").unwrap_err();
        assert!(e.contains("max-failures"), "{e}");
        let e = parse("region = \"\"").unwrap_err();
        assert!(e.contains("region"), "{e}");
        let e = parse("password = \"x\"").unwrap_err();
        assert!(e.contains("password"), "unknown keys are refused: {e}");
        // The relay: host:port; the certificate name defaults to the host.
        let c = parse("relay = \"support.example.com:8444\"").unwrap();
        assert_eq!(
            c.support.relay_server_name().unwrap(),
            "support.example.com"
        );
        let c =
            parse("relay = \"10.0.0.5:8444\"\nrelay-server-name = \"relay.example.com\"").unwrap();
        assert_eq!(c.support.relay_server_name().unwrap(), "relay.example.com");
        for bad in ["support.example.com", ":8444", "host:0", "host:http"] {
            let e = parse(&format!("relay = \"{bad}\"")).unwrap_err();
            assert!(e.contains("is not host:port"), "{bad}: {e}");
        }
        let e = parse("relay = \"h:1\"\nrelay-server-name = \"not a name\"").unwrap_err();
        assert!(e.contains("not a valid relay server name"), "{e}");
        // Without the section: support is off (no authority is trusted).
        let c = Config::parse("state-dir = \"state\"\n", Path::new("outpost.toml")).unwrap();
        assert!(c.support.trusted_keys().unwrap().is_empty());
    }
}
