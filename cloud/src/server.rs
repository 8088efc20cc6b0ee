//! HTTPS serving: rustls (TLS 1.2/1.3, ring provider) in front of an axum router,
//! with the connection caps, slow-client timeouts and enrolment guess
//! lock-out of [`crate::limits`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use http_body_util::BodyExt;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use outpost_protocol::{
    ApiError, ENROLL_PATH, EnrollRequest, EnrollResponse, EnvelopeHeader, ErrorCode,
    HEARTBEAT_PATH, HEARTBEAT_STREAM, HeartbeatBody, INGEST_PATH, IngestAck, MAX_ENVELOPE_BYTES,
    MAX_PLAINTEXT_BYTES, ProtocolError, decompress_bounded, open_compressed,
};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::defence::{Defence, DefenceConfig, Endpoint, Refused, Strike};
use crate::limits::{
    COUNTER_FLUSH_MS, ConnRefusal, ConnSlot, ConnTracker, ConnectionLimits, EnrollGuessLimit,
    GuessLimiter, MAX_TRACKED_SOURCES, Refusal, RefusalCounters,
};
use crate::scan::{Scanner, Verdict};
use crate::store::{DatabaseConfig, HeartbeatOutcome, InsertOutcome, NewDevice, Store};
use crate::token::Enrollment;

/// Largest enrolment request body.
const MAX_ENROLL_BYTES: usize = 64 * 1024;
/// How long in-flight requests may take to finish at shutdown.
const SHUTDOWN_DRAIN_MS: u64 = 5_000;
/// Pause after a failed `accept` (e.g. out of descriptors) before the next.
const ACCEPT_ERROR_PAUSE_MS: u64 = 100;
/// `Retry-After` of a `503 unavailable`, in seconds.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// Configuration of a running cloud server.
#[derive(Clone)]
pub struct ServerConfig {
    /// Data directory (`server.key`; `cloud.db` with SQLite).
    pub data_dir: PathBuf,
    /// Where the rows live: `cloud.db` (default) or a PostgreSQL server
    /// shared with other nodes.
    pub database: DatabaseConfig,
    /// Address to bind (tests: `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// Server certificate chain, PEM, leaf first.
    pub cert_chain_pem: String,
    /// Server private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
    /// Who may enrol: a token, or by name anyone.
    pub enrollment: Enrollment,
    /// Largest ingest/heartbeat body accepted (answer 413 above it).
    pub max_body_bytes: usize,
    /// Connection caps and slow-client timeouts.
    pub limits: ConnectionLimits,
    /// Lock-out of sources that send wrong enrolment tokens.
    pub enroll_guesses: EnrollGuessLimit,
    /// A TUF repository of module updates to serve read-only under
    /// `/v1/updates/` ([`crate::repo`]); `None`: no update routes.
    pub updates_repo: Option<PathBuf>,
    /// Request rates, strikes and blocks ([`crate::defence`]).
    pub defence: DefenceConfig,
    /// Serve `/metrics` and `/alerts` over plain HTTP on this address
    /// ([`crate::metrics`]); `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// The scanner every batch passes before it is stored ([`crate::scan`]);
    /// `None`: batches are stored unscanned (the CLI asks for that by name,
    /// `--dangerous-no-scanner`).
    pub scanner: Option<Scanner>,
    /// The region devices enrolling here get ([`crate::staff`] shows a
    /// staff member only the devices of their regions); default
    /// [`crate::staff::DEFAULT_REGION`].
    pub region: String,
    /// The staff read-back API under `/staff/` (OpenID Connect sign-in);
    /// `None`: no staff routes.
    pub staff: Option<crate::staff::StaffConfig>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("data_dir", &self.data_dir)
            .field("database", &self.database)
            .field("listen", &self.listen)
            .field("enrollment", &self.enrollment)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("limits", &self.limits)
            .field("enroll_guesses", &self.enroll_guesses)
            .field("updates_repo", &self.updates_repo)
            .field("defence", &self.defence)
            .field("metrics_listen", &self.metrics_listen)
            .field("scanner", &self.scanner)
            .field("region", &self.region)
            .field("staff", &self.staff)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// A configuration enrolling as `enrollment` says — pass
    /// `Enrollment::Token(..)`; there is no default, and anonymous enrolment
    /// must be asked for by its name, [`Enrollment::DangerousAnonymous`].
    /// Everything else has its safe default: a body limit of
    /// [`MAX_ENVELOPE_BYTES`], [`ConnectionLimits::default`],
    /// [`EnrollGuessLimit::default`] and [`DefenceConfig::default`]; no
    /// metrics listener. No scanner: set [`ServerConfig::scanner`] to scan
    /// uploads.
    pub fn new(
        data_dir: PathBuf,
        listen: SocketAddr,
        cert_chain_pem: String,
        key_pem: String,
        enrollment: Enrollment,
    ) -> Self {
        ServerConfig {
            data_dir,
            database: DatabaseConfig::Sqlite,
            listen,
            cert_chain_pem,
            key_pem,
            enrollment,
            max_body_bytes: MAX_ENVELOPE_BYTES,
            limits: ConnectionLimits::default(),
            enroll_guesses: EnrollGuessLimit::default(),
            updates_repo: None,
            defence: DefenceConfig::default(),
            metrics_listen: None,
            scanner: None,
            region: crate::staff::DEFAULT_REGION.to_owned(),
            staff: None,
        }
    }
}

/// The fleet server.
#[derive(Debug)]
pub struct Server;

/// A server accepting connections; stop it with [`RunningServer::shutdown`].
pub struct RunningServer {
    addr: SocketAddr,
    store: Store,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    flusher: JoinHandle<()>,
    refusals: Arc<RefusalCounters>,
    tracker: Arc<ConnTracker>,
    defence: Arc<Defence>,
    metrics: Option<(SocketAddr, JoinHandle<()>)>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct App {
    store: Store,
    /// SHA-256 of the enrolment token; `None` only for
    /// [`Enrollment::DangerousAnonymous`].
    token_hash: Option<[u8; 32]>,
    max_body: usize,
    limits: Arc<ConnectionLimits>,
    guesses: Arc<GuessLimiter>,
    refusals: Arc<RefusalCounters>,
    defence: Arc<Defence>,
    scanner: Option<Arc<Scanner>>,
    /// The region of devices enrolling here.
    region: Arc<str>,
}

/// The peer of the connection a request came on (a request extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// What a connection task needs besides its socket.
#[derive(Clone)]
struct ConnCtx {
    acceptor: TlsAcceptor,
    router: Router,
    limits: Arc<ConnectionLimits>,
    refusals: Arc<RefusalCounters>,
}

/// Build the rustls server configuration: ring provider, TLS 1.3 and 1.2 only,
/// ALPN `http/1.1`.
pub fn tls_config(
    cert_chain_pem: &str,
    key_pem: &str,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading certificate PEM")?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in the certificate PEM");
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .context("reading key PEM")?
        .context("no private key in the key PEM")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .context("TLS versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("server certificate and key")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The axum router of the API, over `store`.
fn router(app: App) -> Router {
    Router::new()
        .route(ENROLL_PATH, post(enroll))
        .route(INGEST_PATH, post(ingest))
        .route(HEARTBEAT_PATH, post(heartbeat))
        .with_state(app)
}

impl Server {
    /// Open the store, bind `cfg.listen` and start serving HTTPS.
    pub async fn start(cfg: ServerConfig) -> anyhow::Result<RunningServer> {
        cfg.limits
            .validate()
            .map_err(|e| anyhow!("connection limits: {e}"))?;
        cfg.defence
            .validate()
            .map_err(|e| anyhow!("defence settings: {e}"))?;
        let tls = tls_config(&cfg.cert_chain_pem, &cfg.key_pem)?;
        if let Some(repo) = &cfg.updates_repo {
            crate::repo::check_servable(repo)?;
        }
        let (dir, database) = (cfg.data_dir.clone(), cfg.database.clone());
        let store = tokio::task::spawn_blocking(move || Store::open_with(&dir, &database))
            .await
            .map_err(|e| anyhow!("store open task: {e}"))??;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        crate::staff::db::check_region(&cfg.region)?;
        let defence = Arc::new(Defence::new(cfg.defence.clone()));
        let refusals = Arc::new(RefusalCounters::default());
        let staff_router = {
            let (s, staff) = (store.clone(), cfg.staff.clone());
            let guard = crate::staff::SignInGuard {
                defence: Arc::clone(&defence),
                refusals: Arc::clone(&refusals),
            };
            tokio::task::spawn_blocking(move || {
                staff
                    .map(|c| crate::staff::router(&c, s, guard))
                    .transpose()
            })
            .await
            .map_err(|e| anyhow!("staff setup task: {e}"))??
        };
        let token_hash = match &cfg.enrollment {
            Enrollment::Token(t) => Some(t.digest()),
            Enrollment::DangerousAnonymous => {
                tracing::warn!(
                    "enrolment is anonymous: anyone who reaches this server can enrol a device"
                );
                None
            }
        };
        let limits = Arc::new(cfg.limits.clone());
        let tracker = ConnTracker::new(&limits);
        let app = App {
            store: store.clone(),
            token_hash,
            max_body: cfg.max_body_bytes,
            limits: Arc::clone(&limits),
            guesses: Arc::new(GuessLimiter::new(
                cfg.enroll_guesses.clone(),
                MAX_TRACKED_SOURCES,
            )),
            refusals: Arc::clone(&refusals),
            defence: Arc::clone(&defence),
            scanner: cfg.scanner.clone().map(Arc::new),
            region: Arc::from(cfg.region.as_str()),
        };
        match &cfg.scanner {
            Some(s) => match s.ping().await {
                Ok(()) => tracing::info!(scanner = %s.describe(), "uploads are scanned"),
                Err(e) => tracing::warn!(scanner = %s.describe(), error = %e,
                    "the scanner does not answer; batches are refused with 503 until it does"),
            },
            None => tracing::warn!("no scanner: batches are stored unscanned"),
        }
        let (stop, stop_rx) = watch::channel(false);
        let metrics = match cfg.metrics_listen {
            Some(at) => {
                let view = crate::metrics::MetricsView {
                    store: store.clone(),
                    refusals: Arc::clone(&refusals),
                    defence: Arc::clone(&defence),
                    tracker: Arc::clone(&tracker),
                };
                Some(crate::metrics::serve(at, view, stop_rx.clone()).await?)
            }
            None => None,
        };
        let ctx = ConnCtx {
            acceptor: TlsAcceptor::from(tls),
            router: {
                let r = match &cfg.updates_repo {
                    Some(repo) => router(app).merge(crate::repo::router(repo.clone())),
                    None => router(app),
                };
                match staff_router {
                    Some(staff) => r.merge(staff),
                    None => r,
                }
            },
            limits,
            refusals: Arc::clone(&refusals),
        };
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&tracker),
            ctx,
            stop_rx.clone(),
        ));
        let flusher = tokio::spawn(flush_loop(
            store.clone(),
            Arc::clone(&refusals),
            Arc::clone(&defence),
            stop_rx,
        ));
        tracing::info!(%addr, "outpost-cloud listening");
        Ok(RunningServer {
            addr,
            store,
            stop,
            task,
            flusher,
            refusals,
            tracker,
            defence,
            metrics,
        })
    }
}

impl RunningServer {
    /// The bound address (with the actual port when the config said 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's store (same database the handlers write). Its counters
    /// lag the connection-level refusals by up to [`COUNTER_FLUSH_MS`]; see
    /// [`RunningServer::counters`].
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every counter, including the connection-level refusals not yet
    /// written to the store (blocking: reads SQLite).
    pub fn counters(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        self.refusals.snapshot(&self.store)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.tracker.open()
    }

    /// The address of the metrics listener, when one was configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(a, _)| *a)
    }

    /// The alerts of this process, oldest first (all alerts, also of
    /// earlier runs, are in [`Store::alerts`]).
    pub fn recent_alerts(&self) -> Vec<crate::defence::Alert> {
        self.defence.recent_alerts()
    }

    /// Stop accepting, let open requests finish (up to 5 s), write the
    /// counters, then return.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let _ = self.flusher.await;
        if let Some((_, m)) = self.metrics {
            let _ = m.await;
        }
        // After the last connection ended: nothing is counted any more.
        flush_counters(&self.store, &self.refusals, &self.defence).await;
    }

    /// Serve until `signal` completes (the CLI passes Ctrl-C), then shut down
    /// as [`RunningServer::shutdown`] does.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

/// Write the in-memory refusal counters every [`COUNTER_FLUSH_MS`] until
/// the server stops ([`RunningServer::shutdown`] writes the last ones).
async fn flush_loop(
    store: Store,
    refusals: Arc<RefusalCounters>,
    defence: Arc<Defence>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(COUNTER_FLUSH_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => flush_counters(&store, &refusals, &defence).await,
        }
    }
}

/// Write the in-memory counters and the alerts raised since the last flush;
/// what cannot be written stays in memory for the next one.
async fn flush_counters(store: &Store, refusals: &Arc<RefusalCounters>, defence: &Arc<Defence>) {
    let (s, r, d) = (store.clone(), Arc::clone(refusals), Arc::clone(defence));
    let res = tokio::task::spawn_blocking(move || {
        let counted = r.flush(&s);
        let alerts = d.take_pending();
        if !alerts.is_empty()
            && let Err(e) = s.add_alerts(&alerts)
        {
            d.put_back(alerts);
            return Err(e.context("writing the alerts"));
        }
        counted.map_err(|e| e.context("writing the refusal counters"))
    })
    .await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "flush failed"),
        Err(e) => tracing::error!(error = %e, "counter task failed"),
    }
}

async fn accept_loop(
    listener: TcpListener,
    tracker: Arc<ConnTracker>,
    ctx: ConnCtx,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            res = listener.accept() => match res {
                Ok((tcp, peer)) => match tracker.admit(peer.ip()) {
                    Ok(slot) => {
                        conns.spawn(serve_conn(tcp, peer, slot, ctx.clone(), stop.clone()));
                    }
                    Err(why) => {
                        // Closed at once: nobody waits in the backlog for a
                        // place that may never come.
                        drop(tcp);
                        let (refusal, reason) = match why {
                            ConnRefusal::Global => (Refusal::ConnectionCap, "connection-cap"),
                            ConnRefusal::PerAddress => (Refusal::AddressCap, "address-cap"),
                        };
                        ctx.refusals.count(refusal);
                        tracing::debug!(%peer, reason, "connection refused");
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_millis(SHUTDOWN_DRAIN_MS), drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
    tracing::info!("outpost-cloud stopped");
}

async fn serve_conn(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: ConnSlot,
    ctx: ConnCtx,
    mut stop: watch::Receiver<bool>,
) {
    // Holds the connection's place under the caps until this task ends.
    let _slot = slot;
    let tls =
        match tokio::time::timeout(ctx.limits.handshake_timeout, ctx.acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                ctx.refusals.count(Refusal::SlowClient);
                tracing::debug!(%peer, reason = "slow-client", "TLS handshake timed out");
                return;
            }
        };
    let served = Arc::new(AtomicBool::new(false));
    let inner = TowerToHyperService::new(ctx.router);
    let svc = {
        let served = Arc::clone(&served);
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            served.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(Peer(peer));
            inner.call(req)
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.limits.header_timeout)
        .serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                // A connection that never completed a request head in time is
                // a slow client; one that served requests and then idled out
                // is not.
                if e.is_timeout() && !served.load(Ordering::Relaxed) {
                    ctx.refusals.count(Refusal::SlowClient);
                    tracing::debug!(%peer, reason = "slow-client", "request head timed out");
                } else {
                    tracing::debug!(%peer, error = %e, "connection ended with error");
                }
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn api_error(code: ErrorCode, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = (
        status,
        axum::Json(ApiError {
            error: code,
            message: message.into(),
        }),
    )
        .into_response();
    if code == ErrorCode::Unavailable {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
        );
    }
    if code == ErrorCode::RequestTimeout {
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// `429 rate-limited` with `Retry-After` = `wait` rounded up to whole
/// seconds; the connection is closed (the request body was not read).
fn rate_limited(wait: Duration, message: impl Into<String>) -> Response {
    let mut resp = api_error(ErrorCode::RateLimited, message);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}

/// Count a refusal of [`crate::defence`] and answer `429` with `Retry-After`.
fn defence_refusal(app: &App, peer: SocketAddr, why: Refused, endpoint: Endpoint) -> Response {
    match why {
        Refused::Blocked(wait) => {
            app.refusals.count(Refusal::SourceBlocked);
            tracing::debug!(%peer, endpoint = endpoint.as_str(), reason = "source-blocked", "request refused");
            rate_limited(
                wait,
                "this address is blocked for a while after repeated failed requests; retry after the time in Retry-After",
            )
        }
        Refused::RateLimited(wait) => {
            app.refusals.count(Refusal::RateLimited);
            tracing::debug!(%peer, endpoint = endpoint.as_str(), reason = "rate-limited", "request refused");
            rate_limited(
                wait,
                format!(
                    "too many {} requests; retry after the time in Retry-After",
                    endpoint.as_str()
                ),
            )
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("store task failed: {e}"))?
}

fn unavailable(err: &anyhow::Error) -> Response {
    tracing::error!(error = %err, "store error");
    api_error(
        ErrorCode::Unavailable,
        "the server could not store the request; retry later",
    )
}

/// Count `counter` and answer `code`.
async fn refuse(app: &App, counter: &'static str, code: ErrorCode, message: String) -> Response {
    let store = app.store.clone();
    if let Err(e) = blocking(move || store.count(counter)).await {
        tracing::error!(error = %e, "counting a refusal failed");
    }
    api_error(code, message)
}

enum BodyError {
    TooLarge,
    Read,
    /// Not received within [`ConnectionLimits::body_deadline`]; how many
    /// bytes had arrived.
    TimedOut(usize),
}

/// Read a request body of at most `limit` bytes, within the body deadline
/// of `limits` (a base time plus a second per `body_min_bytes_per_sec`
/// bytes received, never beyond `body_max_time`).
async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
    limits: &ConnectionLimits,
) -> Result<Bytes, BodyError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > u64::try_from(limit).unwrap_or(u64::MAX)
    {
        return Err(BodyError::TooLarge);
    }
    let start = Instant::now();
    // Grown as bytes arrive, never sized from the declared length (a client
    // could declare the limit and send nothing).
    let mut buf = Vec::new();
    loop {
        let deadline = tokio::time::Instant::from_std(limits.body_deadline(start, buf.len()));
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::TimedOut(buf.len())),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(BodyError::Read),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.len()) > limit {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// Count a body that timed out and answer `408` (closing the connection).
fn body_timed_out(app: &App, endpoint: &'static str, received: usize) -> Response {
    app.refusals.count(Refusal::SlowClient);
    tracing::warn!(
        endpoint,
        reason = "slow-client",
        received,
        "request body not received in time"
    );
    api_error(
        ErrorCode::RequestTimeout,
        "the request body did not arrive in time",
    )
}

/// Whether `given` is the enrolment token (always, for anonymous enrolment).
fn token_ok(app: &App, given: Option<&str>) -> bool {
    let Some(want) = app.token_hash else {
        return true;
    };
    let Some(given) = given else {
        return false;
    };
    let got: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    // Constant time over the digests (which also hides the token length).
    want.iter()
        .zip(got.iter())
        .fold(0u8, |a, (x, y)| a | (x ^ y))
        == 0
}

async fn enroll(
    State(app): State<App>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A source locked out for wrong tokens is refused before anything of
    // its request is read.
    if app.token_hash.is_some()
        && let Err(wait) = app.guesses.check(peer.ip(), Instant::now())
    {
        app.refusals.count(Refusal::EnrollmentRateLimited);
        tracing::debug!(%peer, reason = "enrollment-rate-limited", "enrolment refused");
        return rate_limited(
            wait,
            "too many wrong enrolment tokens from this address; retry after the time in Retry-After",
        );
    }
    if let Err(why) = app.defence.admit(peer.ip(), Endpoint::Enroll) {
        return defence_refusal(&app, peer, why, Endpoint::Enroll);
    }
    let bytes = match read_body(&headers, body, MAX_ENROLL_BYTES, &app.limits).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return api_error(ErrorCode::TooLarge, "enrolment request too large");
        }
        Err(BodyError::Read) => return api_error(ErrorCode::BadRequest, "could not read body"),
        Err(BodyError::TimedOut(n)) => return body_timed_out(&app, "enroll", n),
    };
    let req: EnrollRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(
                reason = "bad-request",
                line = e.line(),
                column = e.column(),
                "enrolment refused"
            );
            return api_error(
                ErrorCode::BadRequest,
                format!(
                    "enrolment request is not valid JSON of the expected shape (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            );
        }
    };
    if let Err(e) = req.validate() {
        tracing::info!(reason = "bad-request", "enrolment refused");
        return api_error(ErrorCode::BadRequest, e.to_string());
    }
    if !token_ok(&app, req.enrollment_token.as_deref()) {
        app.defence
            .strike(peer.ip(), Strike::WrongEnrollmentToken, None);
        match app.guesses.wrong(peer.ip(), Instant::now()) {
            Some(lockout) => tracing::warn!(
                %peer,
                reason = "unauthorized-enrollment",
                lockout_s = lockout.as_secs(),
                "enrolment refused; wrong tokens from this address are locked out"
            ),
            None => tracing::warn!(%peer, reason = "unauthorized-enrollment", "enrolment refused"),
        }
        return refuse(
            &app,
            "unauthorized-enrollment",
            ErrorCode::UnauthorizedEnrollment,
            "enrolment token missing or wrong".into(),
        )
        .await;
    }
    if app.token_hash.is_some() {
        app.guesses.right(peer.ip());
    }
    let key = match req.key() {
        Ok(k) => k,
        Err(e) => return api_error(ErrorCode::BadRequest, e.to_string()),
    };
    let new = NewDevice {
        email: req.email.clone(),
        name: req.name.clone(),
        instrument_model: req.instrument_model.clone(),
        instrument_id: req.instrument_id.clone(),
        serial: req.serial.clone(),
        device_key: key,
    };
    drop(req);
    let store = app.store.clone();
    let region = Arc::clone(&app.region);
    match blocking(move || {
        let id = store.enroll(&new)?;
        // The device is enrolled either way (a 503 here would make it enrol
        // again under a new id); without a region no staff member sees it
        // until an operator sets one (`outpost-cloud device-region`).
        if let Err(e) = crate::staff::set_region(&store, &id, &region) {
            tracing::error!(device = %id, error = %e, "setting the region of a new device failed");
        }
        Ok(id)
    })
    .await
    {
        Ok(device_id) => {
            tracing::info!(device = %device_id, "device enrolled");
            axum::Json(EnrollResponse { device_id }).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// Admit the source (rate, block), then read, parse, look up and
/// authenticate an envelope and charge its device's rate; on failure the
/// refusal response (already counted).
async fn authenticate(
    app: &App,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
    endpoint: &'static str,
) -> Result<(EnvelopeHeader, Vec<u8>), Response> {
    if let Err(why) = app.defence.admit(peer.ip(), Endpoint::Ingest) {
        return Err(defence_refusal(app, peer, why, Endpoint::Ingest));
    }
    let bytes = match read_body(headers, body, app.max_body, &app.limits).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            tracing::warn!(
                endpoint,
                reason = "too-large",
                limit = app.max_body,
                "envelope refused"
            );
            return Err(refuse(
                app,
                "too-large",
                ErrorCode::TooLarge,
                format!("body exceeds {} bytes", app.max_body),
            )
            .await);
        }
        Err(BodyError::Read) => {
            return Err(api_error(ErrorCode::BadRequest, "could not read body"));
        }
        Err(BodyError::TimedOut(n)) => return Err(body_timed_out(app, endpoint, n)),
    };
    let header = match EnvelopeHeader::parse(&bytes) {
        Ok((h, _)) => h,
        Err(ProtocolError::TooLarge { .. }) => {
            tracing::warn!(
                endpoint,
                reason = "too-large",
                size = bytes.len(),
                "envelope refused"
            );
            return Err(refuse(
                app,
                "too-large",
                ErrorCode::TooLarge,
                "envelope too large".into(),
            )
            .await);
        }
        Err(e) => {
            tracing::warn!(endpoint, reason = "bad-envelope", size = bytes.len(), error = %e, "envelope refused");
            app.defence.strike(peer.ip(), Strike::BadEnvelope, None);
            return Err(refuse(app, "bad-envelope", ErrorCode::BadEnvelope, e.to_string()).await);
        }
    };
    let (device, stream, sequence) = (
        header.device.clone(),
        header.stream.clone(),
        header.sequence,
    );
    let store = app.store.clone();
    let dev = device.clone();
    let key = match blocking(move || store.device_key(&dev)).await {
        Ok(Some(k)) => k,
        Ok(None) => {
            tracing::warn!(endpoint, %device, %stream, sequence, reason = "unknown-device", "envelope refused");
            app.defence.strike(peer.ip(), Strike::UnknownDevice, None);
            return Err(refuse(
                app,
                "unknown-device",
                ErrorCode::UnknownDevice,
                "device is not enrolled".into(),
            )
            .await);
        }
        Err(e) => return Err(unavailable(&e)),
    };
    let opened =
        tokio::task::spawn_blocking(move || open_compressed(&key, &bytes).map(|(_, c)| c)).await;
    match opened {
        Ok(Ok(compressed)) => match app.defence.admit_device(peer.ip(), &device) {
            Ok(()) => Ok((header, compressed)),
            Err(why) => {
                tracing::info!(endpoint, %device, %stream, sequence, reason = "rate-limited", "envelope refused");
                Err(defence_refusal(app, peer, why, Endpoint::Ingest))
            }
        },
        Ok(Err(e)) => {
            tracing::warn!(endpoint, %device, %stream, sequence, reason = "authentication-failed", "envelope refused");
            app.defence
                .strike(peer.ip(), Strike::AuthenticationFailed, Some(&device));
            Err(refuse(
                app,
                "authentication-failed",
                ErrorCode::AuthenticationFailed,
                e.to_string(),
            )
            .await)
        }
        Err(e) => Err(unavailable(&anyhow!("open task: {e}"))),
    }
}

/// Decompress (bounded) and parse an authenticated plaintext off the runtime.
async fn decode<T: serde::de::DeserializeOwned + Send + 'static>(
    compressed: Vec<u8>,
) -> Result<(T, Vec<u8>, Vec<u8>), ProtocolError> {
    tokio::task::spawn_blocking(move || {
        let plain = decompress_bounded(&compressed, MAX_PLAINTEXT_BYTES)?;
        let body: T = serde_json::from_slice(&plain).map_err(|e| {
            ProtocolError::BadBody(format!("line {} column {}", e.line(), e.column()))
        })?;
        Ok((body, compressed, plain))
    })
    .await
    .unwrap_or(Err(ProtocolError::Decompress))
}

async fn body_refusal(
    app: &App,
    header: &EnvelopeHeader,
    endpoint: &'static str,
    e: ProtocolError,
) -> Response {
    let (counter, code) = match e {
        ProtocolError::TooLargePlaintext { .. } => ("too-large", ErrorCode::TooLarge),
        _ => ("bad-envelope", ErrorCode::BadEnvelope),
    };
    tracing::warn!(endpoint, device = %header.device, stream = %header.stream, sequence = header.sequence, reason = counter, "envelope refused");
    refuse(app, counter, code, e.to_string()).await
}

async fn ingest(
    State(app): State<App>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (header, compressed) = match authenticate(&app, peer, &headers, body, "ingest").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (batch, compressed, plain) = match decode::<outpost_protocol::BatchBody>(compressed).await {
        Ok(x) => x,
        Err(e) => return body_refusal(&app, &header, "ingest", e).await,
    };
    if i64::try_from(header.sequence).is_err() {
        return body_refusal(
            &app,
            &header,
            "ingest",
            ProtocolError::Invalid("sequence beyond 2^63-1".into()),
        )
        .await;
    }
    let records = batch.records.len();
    drop(batch);
    let plain_len = plain.len();
    let compressed = match scan_batch(&app, peer, &header, plain, compressed, records).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let store = app.store.clone();
    let h = header.clone();
    let compressed_len = compressed.len();
    match blocking(move || store.insert_batch(&h, &compressed, records)).await {
        Ok(InsertOutcome::Stored) => {
            tracing::info!(device = %header.device, stream = %header.stream, sequence = header.sequence,
                records, compressed_len, plain_len, "batch stored");
            axum::Json(IngestAck {
                device_id: header.device,
                sequence: header.sequence,
                duplicate: false,
            })
            .into_response()
        }
        Ok(InsertOutcome::Duplicate) => {
            tracing::info!(device = %header.device, stream = %header.stream, sequence = header.sequence,
                reason = "replay", "batch already stored");
            app.defence
                .strike(peer.ip(), Strike::Replay, Some(&header.device));
            axum::Json(IngestAck {
                device_id: header.device,
                sequence: header.sequence,
                duplicate: true,
            })
            .into_response()
        }
        Ok(InsertOutcome::Conflict) => {
            tracing::warn!(device = %header.device, stream = %header.stream, sequence = header.sequence,
                reason = "sequence-conflict", "sequence already stored with other content");
            app.defence
                .strike(peer.ip(), Strike::SequenceConflict, Some(&header.device));
            api_error(
                ErrorCode::SequenceConflict,
                "this sequence is stored with other content; send the batch under a new sequence",
            )
        }
        Err(e) => unavailable(&e),
    }
}

async fn heartbeat(
    State(app): State<App>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (header, compressed) = match authenticate(&app, peer, &headers, body, "heartbeat").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if header.stream != HEARTBEAT_STREAM {
        return body_refusal(&app, &header, "heartbeat", ProtocolError::BadStream).await;
    }
    if i64::try_from(header.sequence).is_err() {
        return body_refusal(
            &app,
            &header,
            "heartbeat",
            ProtocolError::Invalid("sequence beyond 2^63-1".into()),
        )
        .await;
    }
    let (hb, _, _) = match decode::<HeartbeatBody>(compressed).await {
        Ok(x) => x,
        Err(e) => return body_refusal(&app, &header, "heartbeat", e).await,
    };
    let store = app.store.clone();
    let h = header.clone();
    match blocking(move || store.record_heartbeat(&h, &hb)).await {
        Ok(HeartbeatOutcome::Accepted) => {
            tracing::debug!(device = %header.device, sequence = header.sequence, "heartbeat");
            axum::Json(IngestAck {
                device_id: header.device,
                sequence: header.sequence,
                duplicate: false,
            })
            .into_response()
        }
        Ok(HeartbeatOutcome::Stale { last }) => {
            tracing::warn!(device = %header.device, sequence = header.sequence, last, reason = "stale-heartbeat", "heartbeat refused");
            api_error(
                ErrorCode::StaleHeartbeat,
                format!("heartbeat sequence must be greater than {last}"),
            )
        }
        Err(e) => unavailable(&e),
    }
}

/// Pass a batch's plaintext through the scanner (#18). Clean, or no
/// scanner: the compressed plaintext back, to be stored. Otherwise the
/// answer: an ack for a quarantined batch (the cloud keeps it, the device
/// may delete it), `409` for a sequence taken by other content, `503` with
/// `Retry-After` when the scanner gave no verdict (nothing stored; the
/// device keeps the batch and retries).
async fn scan_batch(
    app: &App,
    peer: SocketAddr,
    header: &EnvelopeHeader,
    plain: Vec<u8>,
    compressed: Vec<u8>,
    records: usize,
) -> Result<Vec<u8>, Response> {
    let Some(scanner) = &app.scanner else {
        return Ok(compressed);
    };
    let (device, stream, sequence) = (&header.device, &header.stream, header.sequence);
    let verdict = scanner.scan(&plain).await;
    drop(plain);
    let signature = match verdict {
        Ok(Verdict::Clean) => return Ok(compressed),
        Ok(Verdict::Infected { signature }) => signature,
        Err(e) => {
            tracing::error!(%device, %stream, sequence, reason = "scanner-unavailable",
                kind = e.kind(), error = %e, "batch not scanned; refused with retry-later");
            return Err(refuse(
                app,
                "scanner-unavailable",
                ErrorCode::Unavailable,
                "the upload scanner is unavailable; retry later".into(),
            )
            .await);
        }
    };
    let store = app.store.clone();
    let h = header.clone();
    let sig = signature.clone();
    match blocking(move || store.quarantine_batch(&h, &compressed, records, &sig)).await {
        Ok(outcome @ (InsertOutcome::Stored | InsertOutcome::Duplicate)) => {
            let duplicate = outcome == InsertOutcome::Duplicate;
            tracing::warn!(%device, %stream, sequence, %signature, records, duplicate,
                reason = "quarantined", "the scanner flagged a batch; quarantined, not stored");
            if !duplicate {
                app.defence.quarantined(peer.ip(), device, &signature);
            }
            Err(axum::Json(IngestAck {
                device_id: header.device.clone(),
                sequence,
                duplicate,
            })
            .into_response())
        }
        Ok(InsertOutcome::Conflict) => {
            tracing::warn!(%device, %stream, sequence, %signature,
                reason = "sequence-conflict", "flagged batch under a sequence taken by other content");
            Err(api_error(
                ErrorCode::SequenceConflict,
                "this sequence is stored with other content; send the batch under a new sequence",
            ))
        }
        Err(e) => Err(unavailable(&e)),
    }
}
