//! The broker joined to the end-to-end channel (#16): every support request
//! made on this PC is registered at the vendor's relay (`[support] relay`,
//! one outbound TLS connection through the host's client configuration and
//! trust anchors; no inbound port) and served by
//! [`outpost_support_proto::pc::serve`] with the [`Broker`] as its
//! [`Authorizer`] ([`BrokerAuthorizer`]): the broker decides every attempt
//! that arrives over the channel, and the channel carries exactly what it
//! granted.
//!
//! * The PC proves its identity in the handshake with the device's support
//!   identity key ([`outpost_support_proto::pc::device_identity_key`],
//!   derived from the enrolled envelope key; see ARCHITECTURE.md).
//! * The engineer's proof of possession is bound to the channel (session
//!   id, the broker's challenge and the Noise handshake hash: see
//!   [`outpost_signing::support::challenge_message`]); a relay cannot replay
//!   it on another channel.
//! * A refused attempt leaves the request open while the broker says so
//!   (a wrong password, counted by the lock-out): the session is registered
//!   again for the next attempt.
//! * The session ends when the broker's session ends (the person ends it
//!   from the CLI, API or dashboard, a timeout, a newer request retires
//!   it), when the engineer ends it, or when the channel breaks; the end is
//!   recorded in the audit chain.
//! * File transfers (`[support] file-folder`, the one granted folder) and
//!   uses of the screen are recorded in the audit chain (names, sizes,
//!   hashes; never content).
//! * The screen backend ([`super::screen`]) is started once the grant is
//!   known, view-only unless control was approved, and stopped when the
//!   session ends; its start or failure is audited.
//!
//! Architecture Invariant: this module only answers requests made on this
//! PC (the broker's request hook); it never opens a session by itself.

use super::screen::{ScreenCommand, ScreenError};
use super::{Broker, SessionState, SupportConfig, SupportError, clean_id, display_id, lock};
use crate::uplink::Uplink;
use outpost_support_proto::channel::ChannelError;
use outpost_support_proto::files::{Direction, FileAudit, FileBackend};
use outpost_support_proto::pc::{
    self, Backends, EndReason, PcConfig, PcError, ScreenBackend, SessionEvent, device_identity_key,
};
use outpost_support_proto::relay_wire::{RelayError, RelayTarget};
use outpost_support_proto::{Authorizer, ConnectAttempt, Grant, Refusal, RefusalCode};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a served session looks whether the broker ended it.
pub const WATCH_PERIOD: Duration = Duration::from_millis(200);
/// First wait before registering again after the relay failed (doubles up
/// to [`MAX_RETRY`]).
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest wait between registrations at a failing relay.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// The broker as the channel's [`Authorizer`].
pub struct BrokerAuthorizer(pub Arc<Broker>);

/// The refusal the engineer sees for a broker error: its kind, and the
/// broker's words (which name what was wrong, never a password or key).
pub fn refusal(e: &SupportError) -> Refusal {
    let code = match e {
        SupportError::UnknownSession(_)
        | SupportError::Replayed(_)
        | SupportError::SessionExpired(_)
        | SupportError::WrongState { .. } => RefusalCode::UnknownSession,
        SupportError::WrongPassword { .. } => RefusalCode::BadPassword,
        SupportError::Locked { .. } | SupportError::PasswordRetired(_) => RefusalCode::LockedOut,
        SupportError::CredentialExpired(_)
        | SupportError::UntrustedAuthority(_)
        | SupportError::BadCredential(_)
        | SupportError::BadProof(_)
        | SupportError::RegionRefused(_) => RefusalCode::BadCredential,
        SupportError::PolicyRefused { .. } | SupportError::PolicyFailed(_) => RefusalCode::Policy,
        SupportError::NotApproved | SupportError::NotPermitted { .. } => RefusalCode::NotApproved,
        SupportError::Db(_) => {
            return Refusal::new(
                RefusalCode::Internal,
                "the PC could not decide (its storage failed)",
            );
        }
    };
    Refusal::new(code, e.to_string())
}

#[async_trait::async_trait]
impl Authorizer for BrokerAuthorizer {
    fn challenge(&self, session_id: &str) -> Result<[u8; 32], Refusal> {
        self.0.challenge(session_id).map_err(|e| refusal(&e))
    }

    async fn connect(&self, attempt: ConnectAttempt) -> Result<Grant, Refusal> {
        match self.0.connect(attempt).await {
            Ok(g) => Ok(Grant {
                permissions: g.permissions,
                engineer: g.engineer,
                idle_timeout: g.idle_timeout,
                total_timeout: g.total_timeout,
            }),
            Err(e) => Err(refusal(&e)),
        }
    }
}

/// Where support requests are served: the relay, and what a session may
/// reach behind the gate.
#[derive(Clone)]
pub struct Link {
    relay: RelayTarget,
    uplink: Arc<Uplink>,
    files: Option<PathBuf>,
    screen: Option<ScreenCommand>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("relay", &self.relay)
            .field("files", &self.files)
            .field("screen", &self.screen)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// The link of `[support]`, connecting with `tls` (the host's client
    /// configuration: its trust anchors and TLS versions). `None` when no
    /// relay is configured. The device identity is read from `uplink` for
    /// each session, so a device enrolled while the host runs is served.
    pub fn from_config(
        cfg: &SupportConfig,
        tls: Arc<rustls::ClientConfig>,
        uplink: Arc<Uplink>,
    ) -> Result<Option<Link>, String> {
        let Some(relay) = &cfg.relay else {
            return Ok(None);
        };
        let name = cfg.relay_server_name()?;
        let relay = RelayTarget::new(relay.clone(), &name, tls).map_err(|e| e.to_string())?;
        Ok(Some(Link {
            relay,
            uplink,
            files: cfg.file_folder.clone(),
            screen: ScreenCommand::of(cfg),
        }))
    }
}

impl Broker {
    /// Serve every support request from now on (and those still open)
    /// through `link`'s relay. Runs until the broker is dropped.
    pub fn spawn_link(self: &Arc<Self>, link: Link) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        *lock(&self.requests) = Some(tx);
        let open: Vec<String> = self
            .list(1000)
            .map(|l| {
                l.into_iter()
                    .filter(|s| s.state == SessionState::Open)
                    .map(|s| clean_id(&s.id))
                    .collect()
            })
            .unwrap_or_default();
        let weak = Arc::downgrade(self);
        let link = Arc::new(link);
        tokio::spawn(async move {
            for key in open {
                if let Some(b) = weak.upgrade() {
                    tokio::spawn(serve_request(b, link.clone(), key));
                }
            }
            while let Some(key) = rx.recv().await {
                let Some(b) = weak.upgrade() else { return };
                tokio::spawn(serve_request(b, link.clone(), key));
            }
        })
    }

    fn state_of(&self, key: &str) -> Option<SessionState> {
        self.row(key).ok().flatten().map(|r| r.view.state)
    }
}

/// Whether a session in `state` is still going on (waiting, deciding or
/// running).
fn live(state: Option<SessionState>) -> bool {
    matches!(
        state,
        Some(
            SessionState::Open
                | SessionState::Connecting
                | SessionState::AwaitingApproval
                | SessionState::Active
        )
    )
}

/// Resolves when the broker's session `key` is over. While it runs, the
/// channel enforces the idle timeout (it sees the engineer's traffic), so
/// the broker's activity mark is kept fresh; the broker's timer still ends
/// the session at its total timeout.
async fn until_over(broker: Arc<Broker>, key: String) {
    loop {
        let state = broker.state_of(&key);
        if !live(state) {
            // A refusal that ended the session is still on its way to the
            // engineer (the channel sends it after the broker answered):
            // give it one period before the channel is closed.
            tokio::time::sleep(WATCH_PERIOD).await;
            return;
        }
        if state == Some(SessionState::Active) {
            broker.touch(&key);
        }
        tokio::time::sleep(WATCH_PERIOD).await;
    }
}

fn backends(broker: &Arc<Broker>, link: &Link, key: &str) -> Backends {
    let b = broker.clone();
    let k = key.to_owned();
    let files = link.files.as_ref().map(|folder| {
        FileBackend::new(
            folder,
            Arc::new(move |a: &FileAudit| {
                b.touch(&k);
                b.audit(
                    "file-transfer",
                    &k,
                    json!({
                        "name": a.name,
                        "size": a.size,
                        "sha256": a.sha256,
                        "direction": match a.direction { Direction::ToPc => "to-pc", Direction::FromPc => "from-pc" },
                        "outcome": match &a.outcome { Ok(()) => "done".to_owned(), Err(r) => r.message.clone() },
                    }),
                );
            }),
        )
    });
    let b = broker.clone();
    let k = key.to_owned();
    let events: pc::EventFn = Arc::new(move |e: &SessionEvent| {
        match e {
        SessionEvent::ScreenOpened { stream } => {
            b.touch(&k);
            b.audit(
                "permission-use",
                &k,
                json!({ "permission": "view", "detail": { "screen-stream": stream } }),
            );
        }
        SessionEvent::ScreenDenied { stream, reason } => b.audit(
            "permission-refused",
            &k,
            json!({ "permission": "view", "detail": { "screen-stream": stream, "reason": reason.message } }),
        ),
    }
    });
    let screen = link.screen.clone().map(|cmd| {
        let b = broker.clone();
        let k = key.to_owned();
        let program = cmd.program().to_owned();
        cmd.starter(Arc::new(
            move |r: Result<&ScreenBackend, &ScreenError>, control: bool| match r {
                Ok(s) => b.audit(
                    "screen-backend-started",
                    &k,
                    json!({ "program": program, "port": s.addr.port(), "control": control }),
                ),
                Err(e) => b.audit(
                    "screen-backend-failed",
                    &k,
                    json!({ "program": program, "control": control, "error": e.to_string() }),
                ),
            },
        ))
    });
    Backends {
        vnc: None,
        vnc_password: None,
        files,
        events: Some(events),
        screen,
    }
}

/// Serve one request until its session is over.
async fn serve_request(broker: Arc<Broker>, link: Arc<Link>, key: String) {
    let authorizer: Arc<dyn Authorizer> = Arc::new(BrokerAuthorizer(broker.clone()));
    let session_id = display_id(&key);
    let mut retry = FIRST_RETRY;
    loop {
        if broker.state_of(&key) != Some(SessionState::Open) {
            return;
        }
        let Some(identity) = link.uplink.identity() else {
            tracing::warn!(target: "outpost.support", session = %key, "remote support needs an enrolled device (outpost enroll): the request waits");
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(MAX_RETRY);
            continue;
        };
        let cfg = PcConfig {
            relay: link.relay.clone(),
            device_id: identity.device_id.clone(),
            relay_key: identity.key.clone(),
            device_key: device_identity_key(&identity.key),
            session_id: session_id.clone(),
        };
        drop(identity);
        let served = pc::serve(
            &cfg,
            authorizer.clone(),
            backends(&broker, &link, &key),
            until_over(broker.clone(), key.clone()),
        )
        .await;
        match served {
            Ok(report) => {
                let (reason, by) = match &report.ended {
                    EndReason::Engineer(_) => ("ended", "engineer"),
                    EndReason::Stopped => ("ended", "person"),
                    EndReason::IdleTimeout => ("idle-timeout", "host"),
                    EndReason::TotalTimeout => ("total-timeout", "host"),
                    EndReason::Channel(e) => {
                        broker.audit(
                            "channel-failed",
                            &key,
                            json!({ "connection": report.connection, "error": e.to_string() }),
                        );
                        ("channel-broken", "host")
                    }
                };
                if let Err(e) = broker.finish(&key, reason, by) {
                    tracing::error!(target: "outpost.support", session = %key, error = %e, "support session end not recorded");
                }
                return;
            }
            Err(PcError::Relay(RelayError::Stopped)) => return,
            Err(PcError::Channel(ChannelError::Refused(r))) => {
                // The broker recorded why; the request stays open while it
                // says so (the loop looks).
                tracing::info!(target: "outpost.support", session = %key, code = ?r.code, "support attempt refused");
                retry = FIRST_RETRY;
            }
            Err(PcError::Channel(e)) => {
                // A handshake that broke (timeout, tampering): nothing was
                // granted, or the grant never reached the engineer.
                tracing::warn!(target: "outpost.support", session = %key, error = %e, "support handshake failed");
                if matches!(
                    broker.state_of(&key),
                    Some(
                        SessionState::Active
                            | SessionState::Connecting
                            | SessionState::AwaitingApproval
                    )
                ) {
                    broker.audit("channel-failed", &key, json!({ "error": e.to_string() }));
                    let _ = broker.finish(&key, "channel-broken", "host");
                }
                retry = FIRST_RETRY;
            }
            Err(PcError::Relay(e)) => {
                tracing::warn!(target: "outpost.support", session = %key, error = %e, retry_ms = retry.as_millis() as u64, "support relay unavailable; registering again");
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = until_over(broker.clone(), key.clone()) => return,
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}
