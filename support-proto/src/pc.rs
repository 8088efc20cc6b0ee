//! The PC's side: one outbound TLS connection to the relay (no inbound port
//! on the PC), the Noise responder, and the session with exactly the granted
//! permissions: TCP streams to the screen backend (VNC on loopback; the
//! backend itself enforces view-only) and file transfer in the granted
//! folder. Ends on the engineer's `end`, on `stop`, on the grant's idle or
//! total timeout, or on any channel error.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use outpost_protocol::{DeviceId, DeviceKey};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::authz::{Authorizer, Grant, Permission, Refusal, RefusalCode};
use crate::channel::{ChannelError, OpenReader, SealWriter, msg_name, respond};
use crate::files::{Direction, FileAudit, FileBackend, PutSink};
use crate::msg::{MAX_DATA_BYTES, Msg};
use crate::relay_wire::{self, RelayError, RelayTarget};
use crate::rfb::{self, ViewerHandshake, VncPassword};

/// Most TCP streams open at once in one session.
pub const MAX_TCP_STREAMS: usize = 16;
/// Most file transfers in flight at once in one session.
pub const MAX_TRANSFERS: usize = 4;
/// Depth of the outgoing message queue.
const OUT_QUEUE: usize = 64;
/// How long the `end` message may take to leave at the end.
const END_FLUSH_MS: u64 = 2_000;

/// Domain separation of the device's support identity key
/// ([`device_identity_key`]).
pub const DEVICE_IDENTITY_CONTEXT: &[u8] = b"outpost-support/v1 device-identity\0";

/// The device's Ed25519 support identity key, derived from its enrolled
/// envelope key (HMAC-SHA256 under the envelope key over
/// [`DEVICE_IDENTITY_CONTEXT`] as the seed). It signs the PC's fresh Noise
/// key in every handshake ([`crate::channel::device_binding_message`]), so
/// the engineer knows it reached the enrolled device. Derived rather than
/// stored: it lives exactly as long and as protected as the envelope key
/// (`device.json`: owner-only on Unix, DPAPI on Windows), needs no second
/// secret file, and the vendor's cloud, which holds the envelope key of every
/// enrolled device, can give engineers the public half without the device
/// publishing anything. Domain-separated from every other use of the
/// envelope key (sealing, the relay registration MAC, the audit checkpoint
/// key).
pub fn device_identity_key(envelope: &DeviceKey) -> SigningKey {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(envelope.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(DEVICE_IDENTITY_CONTEXT);
    let seed: [u8; 32] = mac.finalize().into_bytes().into();
    SigningKey::from_bytes(&seed)
}

/// Who the PC is and where its relay is.
pub struct PcConfig {
    /// The relay.
    pub relay: RelayTarget,
    /// The enrolled device id.
    pub device_id: DeviceId,
    /// The enrolled envelope key: proves the device to the relay.
    pub relay_key: DeviceKey,
    /// The device's Ed25519 key: signs the PC's Noise key for the engineer
    /// (the host passes [`device_identity_key`] of `relay_key`).
    pub device_key: SigningKey,
    /// The session id (made by the broker).
    pub session_id: String,
}

impl std::fmt::Debug for PcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcConfig")
            .field("relay", &self.relay)
            .field("device_id", &self.device_id)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// What a session may reach behind the gate.
#[derive(Clone, Default)]
pub struct Backends {
    /// The screen backend's TCP address (a VNC server on loopback started
    /// for this session with the approved rights); `None`: no screen.
    pub vnc: Option<SocketAddr>,
    /// The screen backend's VNC password; `None`: it asks for none. The PC
    /// authenticates to the backend itself and offers the engineer's
    /// viewer security type None ([`crate::rfb`]): the password never
    /// crosses the channel.
    pub vnc_password: Option<VncPassword>,
    /// The granted folder; `None`: no file transfer.
    pub files: Option<FileBackend>,
    /// Told of each use or refused use of the screen (for the audit; file
    /// transfers go to the folder's own audit callback).
    pub events: Option<EventFn>,
    /// Starts the screen backend once the grant is known, with its rights
    /// (view only, or control), when `vnc` is `None` and the grant holds
    /// view or control; the backend lives until the session ends. A start
    /// that fails leaves the session without a screen (streams refused).
    pub screen: Option<ScreenStarter>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("vnc", &self.vnc)
            .field("vnc_password", &self.vnc_password.is_some())
            .field("files", &self.files)
            .field("events", &self.events.is_some())
            .field("screen", &self.screen.is_some())
            .finish()
    }
}

/// A screen backend started for one session: its loopback address and what
/// keeps it running (dropped at the session's end, which stops it).
pub struct ScreenBackend {
    /// Where the backend listens (loopback).
    pub addr: SocketAddr,
    /// Its per-session VNC password (`None`: it was started without one).
    pub password: Option<VncPassword>,
    /// Stops the backend when dropped (e.g. a child process killed on drop).
    pub guard: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for ScreenBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScreenBackend")
            .field("addr", &self.addr)
            .field("password", &self.password.is_some())
            .finish_non_exhaustive()
    }
}

/// What [`ScreenStarter`] returns.
pub type ScreenFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<ScreenBackend, Refusal>> + Send>>;

/// Starts a session's screen backend for a grant (see [`Backends::screen`]).
pub type ScreenStarter = Arc<dyn Fn(&Grant) -> ScreenFuture + Send + Sync>;

/// A use of a permission in a session, for the audit. Holds no content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Screen stream `stream` was opened to the backend.
    ScreenOpened {
        /// The stream id.
        stream: u32,
    },
    /// Screen stream `stream` was refused.
    ScreenDenied {
        /// The stream id.
        stream: u32,
        /// Why.
        reason: Refusal,
    },
}

/// The session-event callback.
pub type EventFn = Arc<dyn Fn(&SessionEvent) + Send + Sync>;

/// How a session ended.
#[derive(Debug)]
pub enum EndReason {
    /// The engineer ended it (with its reason).
    Engineer(String),
    /// `stop` fired (the person at the PC ended it).
    Stopped,
    /// No message from the engineer for the grant's idle timeout.
    IdleTimeout,
    /// The grant's total timeout passed.
    TotalTimeout,
    /// The channel broke (tampering, a closed connection, a protocol
    /// violation).
    Channel(ChannelError),
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::Engineer(r) => write!(f, "ended by the engineer: {r}"),
            EndReason::Stopped => f.write_str("ended at the PC"),
            EndReason::IdleTimeout => f.write_str("idle timeout"),
            EndReason::TotalTimeout => f.write_str("total timeout"),
            EndReason::Channel(e) => write!(f, "channel failed: {e}"),
        }
    }
}

/// A session that ran.
#[derive(Debug)]
pub struct SessionReport {
    /// What was granted.
    pub grant: Grant,
    /// The engineer's address as the relay reported it.
    pub connection: String,
    /// How it ended.
    pub ended: EndReason,
}

/// Why [`serve`] returned without a session.
#[derive(Debug, thiserror::Error)]
pub enum PcError {
    /// Registering or waiting at the relay failed.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// The handshake failed or the attempt was refused.
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

/// Register `cfg.session_id` at the relay, wait for the engineer, run the
/// handshake with `authorizer` and serve the granted session until it ends.
/// One attempt: after a refusal, call again to accept another one. `stop`
/// ends the wait or the session.
pub async fn serve(
    cfg: &PcConfig,
    authorizer: Arc<dyn Authorizer>,
    backends: Backends,
    stop: impl Future<Output = ()> + Send,
) -> Result<SessionReport, PcError> {
    let mut stop = std::pin::pin!(stop);
    let mut s =
        relay_wire::register_pc(&cfg.relay, &cfg.device_id, &cfg.relay_key, &cfg.session_id)
            .await?;
    let peer = tokio::select! {
        p = relay_wire::wait_paired(&mut s) => p?,
        () = &mut stop => return Err(RelayError::Stopped.into()),
    };
    let connection = format!("relay {peer}");
    let accepted = tokio::select! {
        a = respond(&mut s, &cfg.session_id, &cfg.device_key, authorizer.as_ref(), connection.clone()) => a?,
        () = &mut stop => return Err(RelayError::Stopped.into()),
    };
    tracing::info!(
        target: "outpost.support",
        session = %cfg.session_id,
        permissions = ?accepted.grant.permissions,
        "support session open"
    );
    let grant = accepted.grant.clone();
    let mut backends = backends;
    let mut screen = None;
    if backends.vnc.is_none()
        && (grant.allows(Permission::View) || grant.allows(Permission::Control))
        && let Some(start) = backends.screen.clone()
    {
        match start(&grant).await {
            Ok(b) => {
                backends.vnc = Some(b.addr);
                backends.vnc_password = b.password.clone();
                screen = Some(b);
            }
            Err(r) => {
                tracing::warn!(target: "outpost.support", session = %cfg.session_id, reason = %r.message, "screen backend not started");
            }
        }
    }
    let (rd, wr) = tokio::io::split(s);
    let reader = OpenReader::new(rd, accepted.transport.clone());
    let writer = SealWriter::new(wr, accepted.transport);
    let ended = run_session(reader, writer, &grant, backends, stop).await;
    // The backend stops with the session.
    drop(screen);
    tracing::info!(target: "outpost.support", session = %cfg.session_id, ended = %ended, "support session ended");
    Ok(SessionReport {
        grant,
        connection,
        ended,
    })
}

/// Send queued messages, flushing when the queue runs dry.
pub(crate) fn spawn_writer<W>(
    mut w: SealWriter<W>,
    mut rx: mpsc::Receiver<Msg>,
) -> tokio::task::JoinHandle<Result<(), ChannelError>>
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let last = matches!(m, Msg::End(_));
            w.send(&m).await?;
            if rx.is_empty() || last {
                w.flush().await?;
            }
            if last {
                let _ = w.shutdown().await;
                break;
            }
        }
        Ok(())
    })
}

struct State<'a> {
    grant: &'a Grant,
    backends: Backends,
    tx: mpsc::Sender<Msg>,
    tcp: HashMap<u32, OwnedWriteHalf>,
    /// Screen streams whose viewer has not finished its security handshake.
    viewers: HashMap<u32, ViewerHandshake>,
    puts: HashMap<u32, PutSink>,
    gets: HashMap<u32, tokio::task::JoinHandle<()>>,
}

async fn run_session<R, W>(
    mut reader: OpenReader<R>,
    writer: SealWriter<W>,
    grant: &Grant,
    backends: Backends,
    mut stop: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) -> EndReason
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    let mut writer_task = spawn_writer(writer, rx);
    let total = Instant::now() + grant.total_timeout;
    let mut idle = Instant::now() + grant.idle_timeout;
    let mut writer_done = false;
    let mut st = State {
        grant,
        backends,
        tx: tx.clone(),
        tcp: HashMap::new(),
        viewers: HashMap::new(),
        puts: HashMap::new(),
        gets: HashMap::new(),
    };
    let ended = loop {
        tokio::select! {
            m = reader.recv() => match m {
                Ok(Msg::End(reason)) => break EndReason::Engineer(reason),
                Ok(m) => {
                    idle = Instant::now() + grant.idle_timeout;
                    if let Err(e) = st.handle(m).await {
                        break EndReason::Channel(e);
                    }
                }
                Err(e) => break EndReason::Channel(e),
            },
            w = &mut writer_task => {
                writer_done = true;
                break EndReason::Channel(match w {
                    Ok(Err(e)) => e,
                    _ => ChannelError::Protocol("the sending side stopped".into()),
                });
            }
            () = tokio::time::sleep_until(idle) => break EndReason::IdleTimeout,
            () = tokio::time::sleep_until(total) => break EndReason::TotalTimeout,
            () = &mut stop => break EndReason::Stopped,
        }
    };
    // Refused-for-ending uploads leave nothing behind.
    for (_, p) in st.puts.drain() {
        let audit = FileAudit {
            name: p.name().to_owned(),
            size: p.written(),
            sha256: String::new(),
            direction: Direction::ToPc,
            outcome: Err(Refusal::new(
                RefusalCode::Internal,
                format!("the session ended mid-transfer ({ended})"),
            )),
        };
        if let Some(f) = &st.backends.files {
            f.audit(&audit);
        }
        p.abort().await;
    }
    for (_, g) in st.gets.drain() {
        g.abort();
    }
    st.tcp.clear();
    if !matches!(ended, EndReason::Engineer(_) | EndReason::Channel(_)) {
        let _ = tx.try_send(Msg::End(ended.to_string()));
    }
    drop(st);
    drop(tx);
    if !writer_done {
        let _ = tokio::time::timeout(Duration::from_millis(END_FLUSH_MS), writer_task).await;
    }
    ended
}

fn not_granted(what: &str) -> Refusal {
    Refusal::new(
        RefusalCode::NotApproved,
        format!("{what} was not approved for this session"),
    )
}

impl State<'_> {
    async fn send(&self, m: Msg) -> Result<(), ChannelError> {
        self.tx
            .send(m)
            .await
            .map_err(|_| ChannelError::Protocol("the sending side stopped".into()))
    }

    fn event(&self, e: SessionEvent) {
        if let Some(f) = &self.backends.events {
            f(&e);
        }
    }

    /// Connect to the screen backend and pass its security handshake with
    /// the session's password (within
    /// [`rfb::BACKEND_HANDSHAKE_TIMEOUT_MS`]).
    async fn connect_backend(&self, addr: SocketAddr) -> Result<TcpStream, Refusal> {
        let mut s = TcpStream::connect(addr).await.map_err(|e| {
            Refusal::new(
                RefusalCode::Internal,
                format!("the screen backend is not reachable: {e}"),
            )
        })?;
        let _ = s.set_nodelay(true);
        rfb::authenticate_backend(&mut s, self.backends.vnc_password.as_ref())
            .await
            .map_err(|e| Refusal::new(RefusalCode::Internal, e.to_string()))?;
        Ok(s)
    }

    /// Carry backend stream `s` as TCP stream `id`.
    fn open_stream(&mut self, id: u32, s: TcpStream) {
        let _ = s.set_nodelay(true);
        let (mut r, w) = s.into_split();
        self.tcp.insert(id, w);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATA_BYTES];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(Msg::TcpData(id, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Msg::TcpClose(id)).await;
        });
    }

    async fn handle(&mut self, m: Msg) -> Result<(), ChannelError> {
        match m {
            Msg::TcpOpen(id) => {
                if self.tcp.contains_key(&id) {
                    return Err(ChannelError::Protocol(format!(
                        "stream {id} is open already"
                    )));
                }
                let refusal = if !(self.grant.allows(Permission::View)
                    || self.grant.allows(Permission::Control))
                {
                    Some(not_granted("screen view"))
                } else if self.backends.vnc.is_none() {
                    Some(Refusal::new(
                        RefusalCode::Internal,
                        "no screen backend on this PC",
                    ))
                } else if self.tcp.len() >= MAX_TCP_STREAMS {
                    Some(Refusal::new(
                        RefusalCode::Internal,
                        format!("at most {MAX_TCP_STREAMS} streams at once"),
                    ))
                } else {
                    None
                };
                let refusal = match (refusal, self.backends.vnc) {
                    (None, Some(addr)) => match self.connect_backend(addr).await {
                        Ok(s) => {
                            // The PC's own RFB server half greets the viewer
                            // before any byte of the backend's (which waits
                            // for the viewer's ClientInit).
                            self.send(Msg::TcpData(id, ViewerHandshake::greeting().to_vec()))
                                .await?;
                            self.viewers.insert(id, ViewerHandshake::new());
                            self.open_stream(id, s);
                            None
                        }
                        Err(r) => Some(r),
                    },
                    (r, _) => r,
                };
                match refusal {
                    None => {
                        self.event(SessionEvent::ScreenOpened { stream: id });
                        Ok(())
                    }
                    Some(reason) => {
                        self.event(SessionEvent::ScreenDenied {
                            stream: id,
                            reason: reason.clone(),
                        });
                        self.send(Msg::Deny(id, reason)).await
                    }
                }
            }
            Msg::TcpData(id, data) => {
                let data = match self.viewers.get_mut(&id) {
                    None => data,
                    Some(h) => match h.feed(&data) {
                        Ok(fed) => {
                            if fed.done {
                                self.viewers.remove(&id);
                            }
                            if !fed.reply.is_empty() {
                                self.send(Msg::TcpData(id, fed.reply)).await?;
                            }
                            fed.forward
                        }
                        Err(e) => {
                            tracing::warn!(target: "outpost.support", stream = id, error = %e, "screen stream closed");
                            self.viewers.remove(&id);
                            self.tcp.remove(&id);
                            return self.send(Msg::TcpClose(id)).await;
                        }
                    },
                };
                if data.is_empty() {
                    return Ok(());
                }
                if let Some(w) = self.tcp.get_mut(&id)
                    && w.write_all(&data).await.is_err()
                {
                    self.tcp.remove(&id);
                    self.send(Msg::TcpClose(id)).await?;
                }
                Ok(())
            }
            Msg::TcpClose(id) => {
                self.viewers.remove(&id);
                if let Some(mut w) = self.tcp.remove(&id) {
                    let _ = w.shutdown().await;
                }
                Ok(())
            }
            Msg::PutStart(id, h) => {
                let Some(files) = self.files_for(id, &h.name, h.size, Direction::ToPc).await?
                else {
                    return Ok(());
                };
                if self.puts.contains_key(&id) || self.gets.contains_key(&id) {
                    return Err(ChannelError::Protocol(format!(
                        "transfer {id} is open already"
                    )));
                }
                match files.begin_put(&h.name, h.size).await {
                    Ok(sink) => {
                        self.puts.insert(id, sink);
                        self.send(Msg::PutReady(id)).await
                    }
                    Err(r) => {
                        audit_refusal(&files, &h.name, h.size, Direction::ToPc, r.clone());
                        self.send(Msg::Deny(id, r)).await
                    }
                }
            }
            Msg::PutChunk(id, data) => {
                let Some(sink) = self.puts.get_mut(&id) else {
                    // A chunk of a transfer already refused: drop it (the
                    // refusal was sent and audited).
                    return Ok(());
                };
                if let Err(r) = sink.write(&data).await {
                    let sink = self.puts.remove(&id).expect("present");
                    self.audit_put_failure(&sink, r.clone());
                    sink.abort().await;
                    return self.send(Msg::Deny(id, r)).await;
                }
                Ok(())
            }
            Msg::PutEnd(id, hash) => {
                let Some(sink) = self.puts.remove(&id) else {
                    return Ok(());
                };
                let (name, written) = (sink.name().to_owned(), sink.written());
                let files = self.backends.files.clone().expect("a put implies a folder");
                match sink.finish(hash).await {
                    Ok(done) => {
                        files.audit(&FileAudit {
                            name: done.name.clone(),
                            size: done.size,
                            sha256: done.sha256.clone(),
                            direction: Direction::ToPc,
                            outcome: Ok(()),
                        });
                        self.send(Msg::FileOk(id, done)).await
                    }
                    Err(r) => {
                        audit_refusal(&files, &name, written, Direction::ToPc, r.clone());
                        self.send(Msg::Deny(id, r)).await
                    }
                }
            }
            Msg::GetStart(id, name) => {
                let Some(files) = self.files_for(id, &name, 0, Direction::FromPc).await? else {
                    return Ok(());
                };
                if self.puts.contains_key(&id) || self.gets.contains_key(&id) {
                    return Err(ChannelError::Protocol(format!(
                        "transfer {id} is open already"
                    )));
                }
                self.gets.retain(|_, h| !h.is_finished());
                match files.open_get(&name).await {
                    Ok((file, size)) => {
                        let tx = self.tx.clone();
                        let h = tokio::spawn(send_file(tx, files, id, name, file, size));
                        self.gets.insert(id, h);
                        Ok(())
                    }
                    Err(r) => {
                        audit_refusal(&files, &name, 0, Direction::FromPc, r.clone());
                        self.send(Msg::Deny(id, r)).await
                    }
                }
            }
            Msg::FileOk(..) | Msg::Deny(..) => Ok(()),
            other => Err(ChannelError::Protocol(format!(
                "the engineer may not send {}",
                msg_name(&other)
            ))),
        }
    }

    /// The folder if file transfer is granted and possible; otherwise the
    /// refusal is audited and sent and `None` returned.
    async fn files_for(
        &mut self,
        id: u32,
        name: &str,
        size: u64,
        dir: Direction,
    ) -> Result<Option<FileBackend>, ChannelError> {
        let refusal = if !self.grant.allows(Permission::FileTransfer) {
            Some(not_granted("file transfer"))
        } else if self.backends.files.is_none() {
            Some(Refusal::new(
                RefusalCode::Internal,
                "no folder is granted on this PC",
            ))
        } else if self.puts.len() + self.gets.len() >= MAX_TRANSFERS {
            Some(Refusal::new(
                RefusalCode::Internal,
                format!("at most {MAX_TRANSFERS} transfers at once"),
            ))
        } else {
            None
        };
        match refusal {
            Some(r) => {
                if let Some(f) = &self.backends.files {
                    audit_refusal(f, name, size, dir, r.clone());
                }
                self.send(Msg::Deny(id, r)).await?;
                Ok(None)
            }
            None => Ok(self.backends.files.clone()),
        }
    }

    fn audit_put_failure(&self, sink: &PutSink, r: Refusal) {
        if let Some(f) = &self.backends.files {
            audit_refusal(f, sink.name(), sink.written(), Direction::ToPc, r);
        }
    }
}

fn audit_refusal(f: &FileBackend, name: &str, size: u64, direction: Direction, r: Refusal) {
    f.audit(&FileAudit {
        name: name.to_owned(),
        size,
        sha256: String::new(),
        direction,
        outcome: Err(r),
    });
}

async fn send_file(
    tx: mpsc::Sender<Msg>,
    files: FileBackend,
    id: u32,
    name: String,
    mut file: tokio::fs::File,
    size: u64,
) {
    if tx.send(Msg::GetMeta(id, size)).await.is_err() {
        return;
    }
    let mut hasher = Sha256::new();
    let mut sent = 0u64;
    let mut buf = vec![0u8; MAX_DATA_BYTES];
    let outcome = loop {
        if sent == size {
            break Ok(());
        }
        let want = usize::try_from((size - sent).min(buf.len() as u64)).unwrap_or(buf.len());
        match file.read(&mut buf[..want]).await {
            Ok(0) => {
                break Err(Refusal::new(
                    RefusalCode::Internal,
                    format!("file {name:?} shrank while being sent"),
                ));
            }
            Ok(n) => {
                hasher.update(&buf[..n]);
                sent += n as u64;
                if tx.send(Msg::GetChunk(id, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                break Err(Refusal::new(
                    RefusalCode::Internal,
                    format!("reading {name:?}: {e}"),
                ));
            }
        }
    };
    let digest: [u8; 32] = hasher.finalize().into();
    match outcome {
        Ok(()) => {
            files.audit(&FileAudit {
                name: name.clone(),
                size,
                sha256: hex::encode(digest),
                direction: Direction::FromPc,
                outcome: Ok(()),
            });
            let _ = tx.send(Msg::GetEnd(id, digest)).await;
        }
        Err(r) => {
            audit_refusal(&files, &name, sent, Direction::FromPc, r.clone());
            let _ = tx.send(Msg::Deny(id, r)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_identity_key_is_the_envelope_keys_own() {
        let a = DeviceKey::from_bytes([1; 32]);
        let b = DeviceKey::from_bytes([2; 32]);
        // Stable for one envelope key (the cloud derives the same public
        // half), different for another.
        assert_eq!(
            device_identity_key(&a).verifying_key(),
            device_identity_key(&DeviceKey::from_bytes([1; 32])).verifying_key()
        );
        assert_ne!(
            device_identity_key(&a).verifying_key(),
            device_identity_key(&b).verifying_key()
        );
        // Not the envelope key itself used as a seed.
        assert_ne!(device_identity_key(&a).to_bytes(), *a.as_bytes());
    }
}
