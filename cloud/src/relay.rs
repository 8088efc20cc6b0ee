//! The remote-support relay (issue #16): pairs a PC and an engineer by
//! session id and forwards the frames of their end-to-end channel, bytes
//! only.
//!
//! * The PC keeps one outbound TLS connection here (it has no inbound
//!   port): `register-pc {device, session}`, then proves its enrolment with
//!   an HMAC under its envelope key over a fresh relay nonce
//!   ([`outpost_support_proto::relay_wire::register_mac`]).
//! * The engineer connects with the session id; the relay removes the
//!   pending entry (a session id pairs once), tells both `paired` and from
//!   then on copies length-prefixed frames between them.
//!
//! Architecture Invariant: the relay never holds a key of the end-to-end
//! channel: it sees Noise handshake and transport messages only, and a byte
//! it changed, dropped, replayed or reordered ends the session at either
//! end. Caps: pending sessions per device and in total, paired sessions,
//! hello and pending timeouts, an idle timeout, 65535-byte frames.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use outpost_protocol::DeviceId;
use outpost_support_proto::frame::{MAX_FRAME_BYTES, read_frame};
use outpost_support_proto::relay_wire::{
    self, RelayErrorCode, RelayMsg, new_nonce, validate_session_id, verify_register_mac,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::store::Store;

/// Default [`RelayLimits::max_pending_per_device`].
pub const MAX_PENDING_PER_DEVICE: usize = 4;
/// Default [`RelayLimits::max_pending`].
pub const MAX_PENDING: usize = 1024;
/// Default [`RelayLimits::max_paired`].
pub const MAX_PAIRED: usize = 256;
/// Default [`RelayLimits::max_handshakes`].
pub const MAX_HANDSHAKES: usize = 128;
/// Default [`RelayLimits::hello_timeout`], in milliseconds.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;
/// Default [`RelayLimits::pending_timeout`], in milliseconds (30 minutes).
pub const PENDING_TIMEOUT_MS: u64 = 30 * 60 * 1000;
/// Default [`RelayLimits::idle_timeout`], in milliseconds (15 minutes).
pub const IDLE_TIMEOUT_MS: u64 = 15 * 60 * 1000;

/// What one client may cost the relay.
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// Sessions one device may have waiting at once.
    pub max_pending_per_device: usize,
    /// Sessions waiting at once, all devices.
    pub max_pending: usize,
    /// Paired sessions at once.
    pub max_paired: usize,
    /// Connections in TLS or hello at once (more wait for a slot).
    pub max_handshakes: usize,
    /// Time for TLS and the hello messages.
    pub hello_timeout: Duration,
    /// How long a registered PC waits for its engineer.
    pub pending_timeout: Duration,
    /// A paired session without a frame in either direction this long is
    /// closed.
    pub idle_timeout: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_pending_per_device: MAX_PENDING_PER_DEVICE,
            max_pending: MAX_PENDING,
            max_paired: MAX_PAIRED,
            max_handshakes: MAX_HANDSHAKES,
            hello_timeout: Duration::from_millis(HELLO_TIMEOUT_MS),
            pending_timeout: Duration::from_millis(PENDING_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(IDLE_TIMEOUT_MS),
        }
    }
}

/// Sees every forwarded frame (tests check that no plaintext passes).
pub type FrameTap = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Configuration of a relay.
#[derive(Clone)]
pub struct RelayConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// TLS (the same certificate as the fleet server's listener).
    pub tls: Arc<rustls::ServerConfig>,
    /// The enrolled devices.
    pub store: Store,
    /// Caps and timeouts.
    pub limits: RelayLimits,
    /// Observer of forwarded frames; `None` in production.
    pub tap: Option<FrameTap>,
}

/// Counters of a running relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// PCs registered.
    pub registered: AtomicU64,
    /// Sessions paired.
    pub paired: AtomicU64,
    /// Registrations refused: unknown device or wrong proof.
    pub bad_proof: AtomicU64,
    /// Engineers refused: no PC waits under the session id.
    pub unknown_session: AtomicU64,
    /// Refused for a cap or a duplicate session id.
    pub busy: AtomicU64,
    /// Hellos that were malformed or too slow.
    pub bad_hello: AtomicU64,
    /// Pending sessions that expired.
    pub expired: AtomicU64,
    /// Paired sessions closed for idleness.
    pub idle_closed: AtomicU64,
    /// Frames forwarded.
    pub frames: AtomicU64,
}

struct Pending {
    device: DeviceId,
    generation: u64,
    handoff: oneshot::Sender<(TlsStream<TcpStream>, SocketAddr)>,
}

struct Shared {
    limits: RelayLimits,
    store: Store,
    tap: Option<FrameTap>,
    pending: Mutex<HashMap<String, Pending>>,
    generation: AtomicU64,
    paired_now: AtomicUsize,
    stats: RelayStats,
}

/// The relay.
#[derive(Debug)]
pub struct Relay;

/// A relay accepting connections.
pub struct RunningRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for RunningRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningRelay")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Bind `cfg.listen` and start relaying.
    pub async fn start(cfg: RelayConfig) -> anyhow::Result<RunningRelay> {
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding the relay to {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            limits: cfg.limits.clone(),
            store: cfg.store,
            tap: cfg.tap,
            pending: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            paired_now: AtomicUsize::new(0),
            stats: RelayStats::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let acceptor = TlsAcceptor::from(cfg.tls);
        let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone(), stop_rx));
        Ok(RunningRelay {
            addr,
            shared,
            stop,
            task,
        })
    }
}

impl RunningRelay {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters.
    pub fn stats(&self) -> &RelayStats {
        &self.shared.stats
    }

    /// Sessions waiting for their engineer.
    pub fn pending(&self) -> usize {
        self.shared.pending.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Sessions paired now.
    pub fn paired(&self) -> usize {
        self.shared.paired_now.load(Ordering::Relaxed)
    }

    /// Stop accepting; sessions in progress end with their connections.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let handshakes = Arc::new(Semaphore::new(shared.limits.max_handshakes));
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(target: "outpost.relay", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let hello_timeout = shared.limits.hello_timeout;
            let hello = tokio::time::timeout(hello_timeout, async {
                let mut tls = acceptor.accept(tcp).await.ok()?;
                let m = relay_wire::recv(&mut tls).await.ok()?;
                Some((tls, m))
            })
            .await;
            let Ok(Some((tls, hello))) = hello else {
                shared.stats.bad_hello.fetch_add(1, Ordering::Relaxed);
                return;
            };
            match hello {
                RelayMsg::RegisterPc { device, session } => {
                    register_pc(shared, tls, peer, device, session, permit).await
                }
                RelayMsg::Connect { session } => {
                    drop(permit);
                    connect_engineer(shared, tls, peer, session).await
                }
                _ => {
                    shared.stats.bad_hello.fetch_add(1, Ordering::Relaxed);
                    let mut tls = tls;
                    refuse(
                        &mut tls,
                        RelayErrorCode::BadHello,
                        "expected register-pc or connect",
                    )
                    .await;
                }
            }
        });
    }
}

async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, code: RelayErrorCode, message: &str) {
    let _ = relay_wire::send(
        s,
        &RelayMsg::Error {
            code,
            message: message.to_owned(),
        },
    )
    .await;
    let _ = s.shutdown().await;
}

async fn register_pc(
    shared: Arc<Shared>,
    mut tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    device: String,
    session: String,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let stats = &shared.stats;
    let (Ok(device), Ok(())) = (DeviceId::parse(&device), validate_session_id(&session)) else {
        stats.bad_hello.fetch_add(1, Ordering::Relaxed);
        return refuse(
            &mut tls,
            RelayErrorCode::BadHello,
            "malformed device or session id",
        )
        .await;
    };
    let nonce = new_nonce();
    let proof = tokio::time::timeout(shared.limits.hello_timeout, async {
        relay_wire::send(
            &mut tls,
            &RelayMsg::Nonce {
                nonce: hex::encode(nonce),
            },
        )
        .await
        .ok()?;
        match relay_wire::recv(&mut tls).await.ok()? {
            RelayMsg::Proof { mac } => hex::decode(mac).ok(),
            _ => None,
        }
    })
    .await;
    let Ok(Some(mac)) = proof else {
        stats.bad_hello.fetch_add(1, Ordering::Relaxed);
        return refuse(&mut tls, RelayErrorCode::BadHello, "expected the proof").await;
    };
    let store = shared.store.clone();
    let dev = device.clone();
    let key = tokio::task::spawn_blocking(move || store.device_key(&dev)).await;
    let ok = match key {
        Ok(Ok(Some(key))) => verify_register_mac(&key, &nonce, &session, &mac),
        _ => false,
    };
    if !ok {
        stats.bad_proof.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "outpost.relay", %peer, "registration refused: unknown device or wrong proof");
        return refuse(
            &mut tls,
            RelayErrorCode::BadProof,
            "the device is not enrolled or its proof is wrong",
        )
        .await;
    }
    let (tx, mut rx) = oneshot::channel();
    let generation = shared.generation.fetch_add(1, Ordering::Relaxed);
    let refusal = {
        let Ok(mut pending) = shared.pending.lock() else {
            return;
        };
        if pending.contains_key(&session) {
            Some("the session id is already registered")
        } else if pending.len() >= shared.limits.max_pending {
            Some("too many sessions are waiting")
        } else if pending.values().filter(|p| p.device == device).count()
            >= shared.limits.max_pending_per_device
        {
            Some("this device has too many sessions waiting")
        } else {
            pending.insert(
                session.clone(),
                Pending {
                    device: device.clone(),
                    generation,
                    handoff: tx,
                },
            );
            None
        }
    };
    if let Some(why) = refusal {
        stats.busy.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "outpost.relay", device = %device.as_str(), reason = why, "registration refused");
        let code = if why.contains("already") {
            RelayErrorCode::DuplicateSession
        } else {
            RelayErrorCode::Busy
        };
        return refuse(&mut tls, code, why).await;
    }
    drop(permit);
    stats.registered.fetch_add(1, Ordering::Relaxed);
    if relay_wire::send(&mut tls, &RelayMsg::Registered)
        .await
        .is_err()
    {
        remove_pending(&shared, &session, generation);
        return;
    }
    let deadline = Instant::now() + shared.limits.pending_timeout;
    let handoff = tokio::select! {
        h = &mut rx => h.ok(),
        // A waiting PC sends nothing: any byte or a close ends the wait.
        _ = relay_wire::peer_sent_or_closed(&mut tls) => None,
        () = tokio::time::sleep_until(deadline) => {
            stats.expired.fetch_add(1, Ordering::Relaxed);
            None
        }
    };
    remove_pending(&shared, &session, generation);
    // An engineer handed over while another branch won still counts as
    // paired: take it (and close it) so the count stays right.
    rx.close();
    let handoff = handoff.or_else(|| rx.try_recv().ok());
    let Some((mut eng, eng_addr)) = handoff else {
        let _ = tls.shutdown().await;
        return;
    };
    let paired = RelayMsg::Paired {
        peer: eng_addr.to_string(),
    };
    let to_eng = RelayMsg::Paired {
        peer: "pc".to_owned(),
    };
    if relay_wire::send(&mut tls, &paired).await.is_err()
        || relay_wire::send(&mut eng, &to_eng).await.is_err()
    {
        shared.paired_now.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    stats.paired.fetch_add(1, Ordering::Relaxed);
    tracing::info!(target: "outpost.relay", device = %device.as_str(), "session paired");
    let idle = forward(&shared, tls, eng).await;
    if idle {
        stats.idle_closed.fetch_add(1, Ordering::Relaxed);
    }
    shared.paired_now.fetch_sub(1, Ordering::Relaxed);
    tracing::info!(target: "outpost.relay", device = %device.as_str(), idle, "session closed");
}

fn remove_pending(shared: &Shared, session: &str, generation: u64) {
    if let Ok(mut p) = shared.pending.lock()
        && p.get(session).is_some_and(|e| e.generation == generation)
    {
        p.remove(session);
    }
}

async fn connect_engineer(
    shared: Arc<Shared>,
    mut tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    session: String,
) {
    let stats = &shared.stats;
    if validate_session_id(&session).is_err() {
        stats.bad_hello.fetch_add(1, Ordering::Relaxed);
        return refuse(&mut tls, RelayErrorCode::BadHello, "malformed session id").await;
    }
    let entry = shared
        .pending
        .lock()
        .ok()
        .and_then(|mut p| p.remove(&session));
    let Some(entry) = entry else {
        stats.unknown_session.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "outpost.relay", %peer, "engineer refused: unknown session");
        return refuse(
            &mut tls,
            RelayErrorCode::UnknownSession,
            "no PC waits under this session id",
        )
        .await;
    };
    if shared.paired_now.fetch_add(1, Ordering::Relaxed) >= shared.limits.max_paired {
        shared.paired_now.fetch_sub(1, Ordering::Relaxed);
        stats.busy.fetch_add(1, Ordering::Relaxed);
        return refuse(
            &mut tls,
            RelayErrorCode::Busy,
            "too many sessions in progress",
        )
        .await;
    }
    if let Err((mut tls, _)) = entry.handoff.send((tls, peer)) {
        shared.paired_now.fetch_sub(1, Ordering::Relaxed);
        stats.unknown_session.fetch_add(1, Ordering::Relaxed);
        refuse(
            &mut tls,
            RelayErrorCode::UnknownSession,
            "the PC of this session went away",
        )
        .await;
    }
}

/// Copy frames both ways until either side closes, a frame is malformed,
/// or nothing moved for the idle timeout (returns `true` then).
async fn forward(shared: &Shared, pc: TlsStream<TcpStream>, eng: TlsStream<TcpStream>) -> bool {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (pr, pw) = tokio::io::split(pc);
    let (er, ew) = tokio::io::split(eng);
    let up = pump(shared, er, pw, &last, start);
    let down = pump(shared, pr, ew, &last, start);
    let idle = shared.limits.idle_timeout;
    let watchdog = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = start + since + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        () = up => false,
        () = down => false,
        () = watchdog => true,
    }
}

async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    shared: &Shared,
    mut r: R,
    mut w: W,
    last: &AtomicU64,
    start: Instant,
) {
    let mut buf = Vec::with_capacity(MAX_FRAME_BYTES);
    let mut out = Vec::with_capacity(2 + MAX_FRAME_BYTES);
    while read_frame(&mut r, &mut buf, MAX_FRAME_BYTES).await.is_ok() {
        if let Some(tap) = &shared.tap {
            tap(&buf);
        }
        out.clear();
        // read_frame guarantees 1..=65535 bytes.
        out.extend_from_slice(&(buf.len() as u16).to_be_bytes());
        out.extend_from_slice(&buf);
        if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
            break;
        }
        shared.stats.frames.fetch_add(1, Ordering::Relaxed);
        last.store(
            u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
    let _ = w.shutdown().await;
}
