//! The local API: the one door between the running host and the people and
//! programs on the PC — the dashboard, the CLI, lab IT's scripts, and later
//! update approvals and support-session approvals (each a further resource
//! under `/api/v1/`, behind the same guard).
//!
//! HTTP/1.1 on a loopback address only (`[api] listen`, refused otherwise),
//! JSON under `/api/v1/`, a server-sent-events stream of changes
//! (`/api/v1/events`), Prometheus metrics (`/metrics`), the dashboard's
//! embedded page (`/`), and the OpenAPI document (`/api/v1/openapi.json`,
//! kept in the repository as `host/src/api/openapi.json`). Who may call it
//! and from where: [`auth`].

pub mod auth;
pub mod client;
mod dashboard;
mod routes;
mod support;

pub use routes::{AgentFacts, ModuleFacts};

use crate::events::{Events, HostEvent};
use crate::runtime::Services;
use crate::supervisor::Supervisor;
use auth::{ApiToken, Sessions};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The OpenAPI document of this API (also served at `/api/v1/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");
/// Default listen address of the local API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Server-sent-events streams open at once; more are refused (503).
pub const MAX_EVENT_STREAMS: usize = 32;
/// Interval of the keep-alive comment on an idle event stream.
pub const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The address is not a loopback address.
    #[error(
        "the local API may only listen on a loopback address (127.0.0.1 or ::1); `{0}` is not one ([api] listen)"
    )]
    NotLoopback(SocketAddr),
    /// Binding failed (address in use, ...).
    #[error("cannot listen on {addr} for the local API: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The token could not be read or made.
    #[error(transparent)]
    Token(#[from] auth::TokenError),
}

/// Check that `addr` is a loopback address (the API serves nothing else).
pub fn check_listen(addr: SocketAddr) -> Result<(), ApiError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(ApiError::NotLoopback(addr))
    }
}

/// What the API reads and acts on.
pub struct ApiContext {
    /// The running supervisor (module health, release).
    pub supervisor: Arc<Supervisor>,
    /// The host's services (notifications, spool, uplink).
    pub services: Arc<Services>,
    /// The event bus (the `/api/v1/events` stream).
    pub events: Events,
    /// Facts about the agent fixed at start.
    pub agent: routes::AgentFacts,
    /// The remote-support broker (`/api/v1/support/...`); None answers 503.
    pub support: Option<Arc<crate::support::Broker>>,
    /// The host's configuration (installing updates).
    pub config: crate::config::Config,
}

/// Settings of a running API that tests may change.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// How long a login code stays valid.
    pub login_code_ttl: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            login_code_ttl: Duration::from_secs(auth::LOGIN_CODE_TTL_SECS),
        }
    }
}

pub(crate) struct Shared {
    ctx: ApiContext,
    token: ApiToken,
    sessions: Sessions,
    hosts: Vec<String>,
    origins: Vec<String>,
    port: u16,
    streams: std::sync::atomic::AtomicUsize,
}

/// A running API; dropping it stops it.
pub struct RunningApi {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningApi {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting and end open connections.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }
}

impl Drop for RunningApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start the API on `listen` (a loopback address) with the token of
/// `state_dir`. Must run inside a tokio runtime.
pub async fn start(
    ctx: ApiContext,
    listen: SocketAddr,
    state_dir: &std::path::Path,
    options: ApiOptions,
) -> Result<RunningApi, ApiError> {
    check_listen(listen)?;
    let token = ApiToken::load_or_create(state_dir)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| ApiError::Bind {
            addr: listen,
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| ApiError::Bind {
        addr: listen,
        error,
    })?;
    // Tell the CLI where the service really listens (port 0 in a config
    // means any free port).
    write_addr(state_dir, addr).map_err(|error| ApiError::Bind {
        addr: listen,
        error,
    })?;
    let hosts = auth::allowed_hosts(addr.port());
    let origins = hosts.iter().map(|h| format!("http://{h}")).collect();
    let shared = Arc::new(Shared {
        ctx,
        token,
        sessions: Sessions::new(options.login_code_ttl),
        hosts,
        origins,
        port: addr.port(),
        streams: Default::default(),
    });
    let app = router(shared);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(target: "outpost.api", error = %e, "local API stopped");
        }
    });
    tracing::info!(target: "outpost.api", %addr, "local API listening");
    Ok(RunningApi {
        addr,
        stop: Some(stop),
        task,
    })
}

/// File in the state directory naming the address the running API listens on.
pub const ADDR_FILE: &str = "api.addr";

fn write_addr(state_dir: &std::path::Path, addr: SocketAddr) -> std::io::Result<()> {
    let path = state_dir.join(ADDR_FILE);
    let tmp = state_dir.join(format!("{ADDR_FILE}.tmp"));
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, path)
}

/// The address the service of `state_dir` last said it listens on, if any.
pub fn published_addr(state_dir: &std::path::Path) -> Option<SocketAddr> {
    std::fs::read_to_string(state_dir.join(ADDR_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|a: &SocketAddr| a.ip().is_loopback())
}

fn router(shared: Arc<Shared>) -> Router {
    routes::routes()
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The client name recorded with what it does (`dashboard`, `cli`, ...).
    pub client: String,
    /// How it proved itself.
    pub via: Via,
}

/// How a caller proved itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The API token (programs).
    Token,
    /// A dashboard session cookie (the browser).
    Session,
}

/// An error answer: `{"error": code, "message": text}`.
#[derive(Serialize)]
pub(crate) struct ErrorBody {
    error: &'static str,
    message: String,
}

pub(crate) fn refuse(
    status: StatusCode,
    error: &'static str,
    message: impl Into<String>,
) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error,
            message: message.into(),
        }),
    )
        .into_response()
}

/// Paths anyone on the PC may fetch: the dashboard shell (which shows the
/// login hint until it is logged in), its assets, the login exchange and
/// the API's description.
fn public(method: &Method, path: &str) -> bool {
    method == Method::GET
        && (path == "/"
            || path.starts_with("/assets/")
            || path == "/login"
            || path == "/api/v1/openapi.json")
}

/// Every request passes here first: Host (DNS rebinding), then who is
/// calling, then, for a state-changing request made with the cookie, its
/// Origin. Answers never carry CORS headers.
async fn guard(State(s): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !s.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        s.ctx.services.metrics.api_request("refused-host");
        tracing::warn!(target: "outpost.api", "request refused: Host is not the loopback name and port of the API");
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "host-not-allowed",
            format!(
                "this API answers only to 127.0.0.1:{0}, localhost:{0} or [::1]:{0}",
                s.port
            ),
        );
    }
    if method == Method::OPTIONS {
        s.ctx.services.metrics.api_request("refused-method");
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "no cross-origin requests",
        );
    }
    let caller = authenticate(&s, req.headers());
    if caller.is_none() && !public(&method, &path) {
        s.ctx.services.metrics.api_request("refused-auth");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "log in with the URL `outpost dashboard` prints, or send the API token",
        );
    }
    let safe = matches!(method, Method::GET | Method::HEAD);
    if !safe
        && let Some(Caller {
            via: Via::Session, ..
        }) = &caller
    {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        if !origin.is_some_and(|o| s.origins.iter().any(|a| a.eq_ignore_ascii_case(o))) {
            s.ctx.services.metrics.api_request("refused-origin");
            tracing::warn!(target: "outpost.api", "request refused: state change with the session cookie from another origin");
            return refuse(
                StatusCode::FORBIDDEN,
                "cross-origin",
                "state-changing requests with the dashboard session must come from the dashboard itself",
            );
        }
    }
    if let Some(c) = caller {
        req.extensions_mut().insert(c);
    }
    let res = next.run(req).await;
    s.ctx.services.metrics.api_request(
        if res.status().is_success() || res.status().is_redirection() {
            "ok"
        } else {
            "error"
        },
    );
    res
}

fn authenticate(s: &Shared, headers: &HeaderMap) -> Option<Caller> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|a| a.to_str().ok())
    {
        let given = auth.strip_prefix("Bearer ").unwrap_or("");
        if s.token.matches(given) {
            let client = headers
                .get(client::CLIENT_HEADER)
                .and_then(|c| c.to_str().ok());
            return Some(Caller {
                client: auth::client_name(client),
                via: Via::Token,
            });
        }
        return None;
    }
    let cookie = headers.get(header::COOKIE)?.to_str().ok()?;
    let id = auth::session_from_cookie(cookie)?;
    s.sessions.valid(id).then(|| Caller {
        client: "dashboard".into(),
        via: Via::Session,
    })
}

/// What `/api/v1/events` sends: each host event as `event: <kind>` with its
/// JSON, and `resync` when the stream fell behind (the client refetches).
pub(crate) fn sse_event(ev: &HostEvent) -> axum::response::sse::Event {
    axum::response::sse::Event::default()
        .event(ev.kind())
        .data(serde_json::to_string(ev).unwrap_or_else(|_| "{}".into()))
}
