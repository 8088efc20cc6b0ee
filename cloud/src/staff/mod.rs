//! The staff read-back API (issue #18): HTTPS routes under `/staff/` on the
//! fleet server, off unless configured ([`StaffConfig`]).
//!
//! * Sign-in through OpenID Connect ([`oidc`]): `GET /staff/login` sends
//!   the browser to the provider (authorization code, PKCE S256, state,
//!   nonce; the state is also bound to the browser by a short-lived
//!   cookie); `GET /staff/callback` exchanges the code, validates the ID
//!   token and authorises from its claims (support role, region(s),
//!   privacy training; a missing or false claim is a `403` naming it).
//! * Session: a random opaque id in a `__Host-` cookie (`Secure; HttpOnly;
//!   SameSite=Strict`), the session kept sealed in the database with an
//!   expiry ([`shared`]: every node sees it); `POST /staff/logout` ends it.
//! * Data: `GET /staff/devices` (device id, model, instrument id, region,
//!   last seen: no contact data, no serial), `GET
//!   /staff/devices/{id}/batches`, `GET /staff/devices/{id}/status`. A
//!   device outside the staff member's regions is a `404`, as an unknown one.
//! * Audit ([`db`]): every sign-in (success or failure), sign-out and data
//!   access, with subject and issuer, route, device, peer address and
//!   outcome, written before any data is sent (no audit, no data).

pub mod cli;
pub mod db;
pub mod http;
pub mod newloc;
pub mod oidc;
pub(crate) mod shared;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use openidconnect::{ClientId, ClientSecret, IssuerUrl, RedirectUrl};
use outpost_protocol::DeviceId;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::server::Peer;
use crate::store::Store;
use db::AuditEntry;
use oidc::{ClaimNames, Expected, Identity, Oidc, Pending, SignInError};
use shared::Kind;

pub use db::{DEFAULT_REGION, audit_entries, region_of, set_region};

/// Session lifetime unless configured.
pub const DEFAULT_SESSION_TTL_SECS: u64 = 8 * 3600;
/// How long a started sign-in may take to come back.
pub const LOGIN_TTL_SECS: u64 = 600;
/// Most sign-ins in progress at once (beyond: `503`).
pub const MAX_PENDING_LOGINS: usize = 10_000;
/// Most sessions at once (beyond: `503`).
pub const MAX_SESSIONS: usize = 10_000;
/// Longest `login_hint` passed on to the provider.
const MAX_LOGIN_HINT_CHARS: usize = 256;

/// The session cookie.
pub const SESSION_COOKIE: &str = "__Host-outpost-staff";
/// The cookie binding a started sign-in to its browser (`SameSite=Lax`: the
/// provider's redirect back is a cross-site navigation).
pub const LOGIN_COOKIE: &str = "__Host-outpost-login";
/// The cookie binding a held sign-in to its browser (`SameSite=Lax`: the
/// link is opened from a mail program).
pub const HOLD_COOKIE: &str = "__Host-outpost-hold";

/// Staff sign-in configuration.
#[derive(Clone)]
pub struct StaffConfig {
    /// The OpenID provider's issuer URL (https; http only on loopback).
    pub issuer: String,
    /// This server's client id at the provider.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Zeroizing<String>,
    /// This server's public base URL as staff browsers reach it
    /// (`https://host:port`); the redirect URI is `<base>/staff/callback`.
    pub base_url: String,
    /// Extra CA certificates (PEM) trusted for the provider, besides the
    /// public web roots.
    pub provider_ca_pem: Option<String>,
    /// The authorisation claims' names.
    pub claims: ClaimNames,
    /// Session lifetime.
    pub session_ttl: Duration,
    /// The new-location check: where to send the confirmation mail;
    /// `None`: off (every valid sign-in gets a session at once).
    pub new_location: Option<newloc::MailConfig>,
}

impl std::fmt::Debug for StaffConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaffConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("base_url", &self.base_url)
            .field("claims", &self.claims)
            .field("session_ttl", &self.session_ttl)
            .field("new_location", &self.new_location)
            .finish_non_exhaustive()
    }
}

impl StaffConfig {
    /// A configuration with the default claim names
    /// ([`ClaimNames::default`]), a session lifetime of
    /// [`DEFAULT_SESSION_TTL_SECS`] and no extra CA.
    pub fn new(issuer: &str, client_id: &str, client_secret: &str, base_url: &str) -> Self {
        StaffConfig {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: Zeroizing::new(client_secret.to_owned()),
            base_url: base_url.trim_end_matches('/').to_owned(),
            provider_ca_pem: None,
            claims: ClaimNames::default(),
            session_ttl: Duration::from_secs(DEFAULT_SESSION_TTL_SECS),
            new_location: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Session {
    identity: Identity,
}

#[derive(Serialize, Deserialize)]
struct PendingLogin {
    pending: Pending,
    /// SHA-256 of the login cookie's value.
    browser: [u8; 32],
}

#[derive(Clone)]
struct Staff {
    store: Store,
    oidc: Arc<Oidc>,
    session_ttl: Duration,
    /// The new-location check's mail settings, if on.
    mail: Option<Arc<newloc::MailConfig>>,
    /// This server's public base URL.
    base_url: String,
    /// Sign-in rates and strikes.
    guard: SignInGuard,
}

/// What limits sign-ins: the server's [`crate::defence::Defence`] (a rate
/// per source address, strikes for refused callbacks) and its in-memory
/// refusal counters.
#[derive(Clone)]
pub(crate) struct SignInGuard {
    pub(crate) defence: Arc<crate::defence::Defence>,
    pub(crate) refusals: Arc<crate::limits::RefusalCounters>,
}

/// The `/staff/` routes (they need the [`Peer`] request extension the
/// server sets).
pub(crate) fn router(
    cfg: &StaffConfig,
    store: Store,
    guard: SignInGuard,
) -> anyhow::Result<Router> {
    use anyhow::Context;
    let issuer = IssuerUrl::new(cfg.issuer.clone()).context("the OIDC issuer URL")?;
    let issuer_url = url::Url::parse(&cfg.issuer).context("the OIDC issuer URL")?;
    let loopback = match issuer_url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        _ => false,
    };
    if issuer_url.scheme() != "https" && !(issuer_url.scheme() == "http" && loopback) {
        anyhow::bail!(
            "the OIDC issuer {} must be https (plain http only on a loopback address)",
            cfg.issuer
        );
    }
    if !cfg.base_url.starts_with("https://") {
        anyhow::bail!("the staff base URL {} must be https", cfg.base_url);
    }
    if cfg.client_id.is_empty() || cfg.client_secret.is_empty() {
        anyhow::bail!("the OIDC client id and client secret must not be empty");
    }
    let redirect = RedirectUrl::new(format!("{}/staff/callback", cfg.base_url))
        .context("the staff base URL")?;
    let http = http::ProviderHttp::new(cfg.provider_ca_pem.as_deref())?;
    let oidc = Oidc::new(
        http,
        Expected {
            issuer,
            client_id: ClientId::new(cfg.client_id.clone()),
            claims: cfg.claims.clone(),
        },
        ClientSecret::new(cfg.client_secret.to_string()),
        redirect,
    );
    let staff = Staff {
        store,
        oidc: Arc::new(oidc),
        session_ttl: cfg.session_ttl,
        mail: cfg.new_location.clone().map(Arc::new),
        base_url: cfg.base_url.clone(),
        guard,
    };
    Ok(Router::new()
        .route("/staff/login", get(login))
        .route("/staff/callback", get(callback))
        .route("/staff/confirm", get(confirm))
        .route("/staff/logout", post(logout))
        .route("/staff/devices", get(list_devices))
        .route("/staff/devices/{device}/batches", get(device_batches))
        .route("/staff/devices/{device}/status", get(device_status))
        .with_state(staff))
}

fn json_error(status: StatusCode, msg: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct E {
        error: String,
    }
    let mut r = (status, Json(E { error: msg.into() })).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!("staff store task failed: {e}"))?
}

impl Staff {
    /// Keep `value` in the shared staff state under `key` for `ttl_secs`;
    /// the `503` naming `full` when `max` rows of the kind are kept, or
    /// naming the store when it failed.
    async fn keep<T: Serialize + Send + 'static>(
        &self,
        kind: Kind,
        key: [u8; 32],
        ttl_secs: u64,
        value: T,
        max: usize,
        full: &str,
    ) -> Result<(), Response> {
        let store = self.store.clone();
        match blocking(move || shared::put(&store, kind, &key, ttl_secs, &value, max)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(json_error(StatusCode::SERVICE_UNAVAILABLE, full)),
            Err(e) => {
                tracing::error!(error = %e, ?kind, "keeping staff state failed");
                Err(json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unavailable",
                ))
            }
        }
    }

    /// Remove what the shared staff state keeps under `key`; `Err` (logged)
    /// when the store failed.
    async fn forget(&self, kind: Kind, key: [u8; 32]) -> Result<(), ()> {
        let store = self.store.clone();
        blocking(move || shared::remove(&store, kind, &key))
            .await
            .map_err(|e| tracing::error!(error = %e, ?kind, "removing staff state failed"))
    }

    /// The sign-in rate of the source address (login and callback share
    /// it); the `429` when over it or blocked. Counted in memory, not
    /// audited: a flood costs no writes.
    fn admit(&self, peer: SocketAddr) -> Result<(), Box<Response>> {
        let Err(why) = self
            .guard
            .defence
            .admit(peer.ip(), crate::defence::Endpoint::SignIn)
        else {
            return Ok(());
        };
        let (counter, message) = match why {
            crate::defence::Refused::Blocked(_) => (
                crate::limits::Refusal::SourceBlocked,
                "this address is blocked for a while after repeated failed requests; retry after the time in Retry-After",
            ),
            crate::defence::Refused::RateLimited(_) => (
                crate::limits::Refusal::RateLimited,
                "too many sign-ins from this address; retry after the time in Retry-After",
            ),
        };
        self.guard.refusals.count(counter);
        tracing::info!(%peer, reason = "rate-limited", "staff sign-in refused");
        let wait = why.wait();
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut r = json_error(StatusCode::TOO_MANY_REQUESTS, message);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        Err(Box::new(no_store(r)))
    }

    /// Write one audit row; `Err` is the response to send instead of data.
    async fn audit(&self, e: AuditEntry) -> Result<(), Response> {
        let store = self.store.clone();
        blocking(move || db::audit(&store, &e)).await.map_err(|e| {
            tracing::error!(error = %e, "staff audit write failed");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the staff audit could not be written; nothing is served without it",
            )
        })
    }

    /// An audit row: `outcome`, by `who`, no device, no detail (set those
    /// fields after where they apply).
    fn entry(
        &self,
        who: Option<&Identity>,
        action: &str,
        route: &str,
        peer: SocketAddr,
        outcome: &str,
    ) -> AuditEntry {
        AuditEntry {
            id: 0,
            at: 0,
            issuer: who.map(|w| w.issuer.clone()),
            subject: who.map(|w| w.subject.clone()),
            action: action.into(),
            route: route.into(),
            device: None,
            peer: peer.ip().to_string(),
            outcome: outcome.into(),
            detail: None,
        }
    }

    /// The signed-in staff member, or the `401`.
    async fn session(&self, headers: &HeaderMap) -> Result<Identity, Box<Response>> {
        let unauth = || {
            Box::new(json_error(
                StatusCode::UNAUTHORIZED,
                "no staff session: sign in at /staff/login",
            ))
        };
        let key = digest(cookie(headers, SESSION_COOKIE).ok_or_else(unauth)?);
        let store = self.store.clone();
        let found = blocking(move || shared::get::<Session>(&store, Kind::Session, &key))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "reading a staff session failed");
                Box::new(json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unavailable",
                ))
            })?;
        match found {
            Some(Ok(s)) => Ok(s.identity),
            Some(Err(shared::Expired)) => Err(Box::new(json_error(
                StatusCode::UNAUTHORIZED,
                "the staff session expired: sign in again at /staff/login",
            ))),
            None => Err(unauth()),
        }
    }

    /// The device named in the path if `who` may see it; else the `404`
    /// (audited).
    async fn visible_device(
        &self,
        who: &Identity,
        raw: &str,
        action: &str,
        route: &str,
        peer: SocketAddr,
    ) -> Result<DeviceId, Response> {
        let not_found = || json_error(StatusCode::NOT_FOUND, "no such device");
        let dev = match DeviceId::parse(raw) {
            Ok(d) => d,
            Err(_) => {
                self.audit(self.entry(Some(who), action, route, peer, "not-found"))
                    .await?;
                return Err(not_found());
            }
        };
        let store = self.store.clone();
        let d = dev.clone();
        let region = blocking(move || db::region_of(&store, &d))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "reading a device region failed");
                json_error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable")
            })?;
        let visible = region.is_some_and(|r| who.regions.contains(&r));
        if !visible {
            self.audit(AuditEntry {
                device: Some(dev.as_str().to_owned()),
                ..self.entry(Some(who), action, route, peer, "not-found")
            })
            .await?;
            return Err(not_found());
        }
        Ok(dev)
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    login_hint: Option<String>,
}

async fn login(
    State(st): State<Staff>,
    Extension(Peer(peer)): Extension<Peer>,
    Query(q): Query<LoginQuery>,
) -> Response {
    // Starting a sign-in keeps a row: the same rate as the callback.
    if let Err(r) = st.admit(peer) {
        return *r;
    }
    if let Some(h) = &q.login_hint
        && (h.chars().count() > MAX_LOGIN_HINT_CHARS || h.chars().any(char::is_control))
    {
        return json_error(
            StatusCode::BAD_REQUEST,
            "login_hint is too long or malformed",
        );
    }
    let (url, state, pending) = match st.oidc.begin(q.login_hint.as_deref()).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "staff sign-in could not start");
            return json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
    };
    let browser = random_token();
    let login = PendingLogin {
        pending,
        browser: digest(&browser),
    };
    if let Err(r) = st
        .keep(
            Kind::Login,
            digest(&state),
            LOGIN_TTL_SECS,
            login,
            MAX_PENDING_LOGINS,
            "too many sign-ins in progress; retry later",
        )
        .await
    {
        return r;
    }
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={browser}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={LOGIN_TTL_SECS}"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    no_store(r)
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct SignedIn {
    subject: String,
    regions: BTreeSet<String>,
    expires_in_secs: u64,
}

async fn callback(
    State(st): State<Staff>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    const ROUTE: &str = "/staff/callback";
    if let Err(r) = st.admit(peer) {
        return *r;
    }
    let result = finish_sign_in(&st, &headers, &q).await;
    let clear_login = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
    ))
    .ok();
    let mut resp = match result {
        Ok(identity) => match &st.mail {
            None => start_session(&st, &identity, peer, ROUTE, None).await,
            Some(mail) => check_location(&st, mail, identity, peer, &headers).await,
        },
        Err((who, e)) => {
            let status = match e {
                SignInError::Forbidden(_) => StatusCode::FORBIDDEN,
                SignInError::Provider(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            };
            tracing::warn!(%peer, reason = %e, "staff sign-in refused");
            // Forged, replayed or foreign callbacks count against the
            // source; a provider outage or missing claims do not.
            if status == StatusCode::UNAUTHORIZED {
                st.guard
                    .defence
                    .strike(peer.ip(), crate::defence::Strike::SignInFailed, None);
            }
            if let Err(r) = st
                .audit(AuditEntry {
                    detail: Some(e.to_string()),
                    ..st.entry(who.as_ref(), "sign-in", ROUTE, peer, "refused")
                })
                .await
            {
                return r;
            }
            json_error(status, format!("sign-in refused: {e}"))
        }
    };
    if let Some(v) = clear_login {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    no_store(resp)
}

/// Create a session for `identity`, audit the sign-in and answer with the
/// session cookie.
async fn start_session(
    st: &Staff,
    identity: &Identity,
    peer: SocketAddr,
    route: &str,
    detail: Option<String>,
) -> Response {
    let id = random_token();
    let key = digest(&id);
    let session = Session {
        identity: identity.clone(),
    };
    if let Err(r) = st
        .keep(
            Kind::Session,
            key,
            st.session_ttl.as_secs(),
            session,
            MAX_SESSIONS,
            "too many staff sessions; retry later",
        )
        .await
    {
        return r;
    }
    if let Err(r) = st
        .audit(AuditEntry {
            detail,
            ..st.entry(Some(identity), "sign-in", route, peer, "ok")
        })
        .await
    {
        let _ = st.forget(Kind::Session, key).await;
        return r;
    }
    tracing::info!(%peer, "staff sign-in");
    let mut r = Json(SignedIn {
        subject: identity.subject.clone(),
        regions: identity.regions.clone(),
        expires_in_secs: st.session_ttl.as_secs(),
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        st.session_ttl.as_secs()
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// A sign-in held for its e-mail confirmation.
#[derive(Serialize, Deserialize)]
struct Held {
    identity: Identity,
    network: String,
    agent: String,
    /// SHA-256 of the hold cookie's value.
    browser: [u8; 32],
}

fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A validated sign-in: straight to a session from a known network and
/// user agent, else held and the link mailed (`202`).
async fn check_location(
    st: &Staff,
    mail: &Arc<newloc::MailConfig>,
    identity: Identity,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Response {
    const ROUTE: &str = "/staff/callback";
    let network = newloc::network_of(peer.ip());
    let agent = newloc::agent_digest(&user_agent(headers));
    let (store, who, n, a) = (
        st.store.clone(),
        identity.clone(),
        network.clone(),
        agent.clone(),
    );
    let known = match blocking(move || newloc::is_known(&store, &who, &n, &a)).await {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "reading known staff locations failed");
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable");
        }
    };
    if known {
        return start_session(st, &identity, peer, ROUTE, None).await;
    }
    let refuse = |why: &str| AuditEntry {
        detail: Some(why.to_owned()),
        ..st.entry(Some(&identity), "sign-in", ROUTE, peer, "refused")
    };
    let Some(email) = identity.email.clone() else {
        let why = "new network or browser, and the ID token has no e-mail address to confirm it";
        if let Err(r) = st.audit(refuse(why)).await {
            return r;
        }
        return json_error(StatusCode::FORBIDDEN, format!("sign-in refused: {why}"));
    };
    let token = random_token();
    let browser = random_token();
    let key = digest(&token);
    let held = Held {
        identity: identity.clone(),
        network: network.clone(),
        agent,
        browser: digest(&browser),
    };
    if let Err(r) = st
        .keep(
            Kind::Held,
            key,
            newloc::HOLD_TTL_SECS,
            held,
            MAX_PENDING_LOGINS,
            "too many sign-ins waiting for confirmation; retry later",
        )
        .await
    {
        return r;
    }
    let link = format!("{}/staff/confirm?token={token}", st.base_url);
    if let Err(e) = newloc::send_link(mail, &email, &link, &network).await {
        let _ = st.forget(Kind::Held, key).await;
        tracing::error!(error = %format!("{e:#}"), "sending the sign-in confirmation failed");
        if let Err(r) = st
            .audit(refuse("the confirmation mail could not be sent"))
            .await
        {
            return r;
        }
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "sign-in held, but the confirmation mail could not be sent; retry later",
        );
    }
    if let Err(r) = st
        .audit(AuditEntry {
            detail: Some(format!("new network or browser ({network}); link mailed")),
            ..st.entry(Some(&identity), "sign-in", ROUTE, peer, "held")
        })
        .await
    {
        return r;
    }
    tracing::info!(%peer, "staff sign-in held for e-mail confirmation");
    let mut r = (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "held": "this network or browser is new for the account: open the link sent by e-mail, in this browser"
        })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{HOLD_COOKIE}={browser}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        newloc::HOLD_TTL_SECS
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct ConfirmQuery {
    token: Option<String>,
}

async fn confirm(
    State(st): State<Staff>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    Query(q): Query<ConfirmQuery>,
) -> Response {
    const ROUTE: &str = "/staff/confirm";
    // Taken out whatever happens next: a link works once, on any node.
    let held = match q.token.as_deref() {
        None => None,
        Some(t) => {
            let (store, key) = (st.store.clone(), digest(t));
            match blocking(move || shared::take::<Held>(&store, Kind::Held, &key)).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "reading a held staff sign-in failed");
                    return json_error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable");
                }
            }
        }
    };
    let ok = held.filter(|h| cookie(&headers, HOLD_COOKIE).is_some_and(|c| digest(c) == h.browser));
    let Some(h) = ok else {
        let why = "the confirmation link is wrong, expired, already used or not this browser's";
        tracing::warn!(%peer, "staff sign-in confirmation refused");
        if let Err(r) = st
            .audit(AuditEntry {
                detail: Some(why.into()),
                ..st.entry(None, "sign-in", ROUTE, peer, "refused")
            })
            .await
        {
            return r;
        }
        return json_error(StatusCode::UNAUTHORIZED, format!("sign-in refused: {why}"));
    };
    let (store, who, n, a) = (st.store.clone(), h.identity.clone(), h.network, h.agent);
    if let Err(e) = blocking(move || newloc::remember(&store, &who, &n, &a)).await {
        tracing::error!(error = %e, "storing a known staff location failed");
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable");
    }
    let mut r = start_session(
        &st,
        &h.identity,
        peer,
        ROUTE,
        Some("confirmed by e-mail".into()),
    )
    .await;
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{HOLD_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    no_store(r)
}

async fn finish_sign_in(
    st: &Staff,
    headers: &HeaderMap,
    q: &CallbackQuery,
) -> Result<Identity, (Option<Identity>, SignInError)> {
    let state = q.state.as_deref().ok_or((None, SignInError::State))?;
    // The state is taken out whatever happens next: it is used once, on
    // any node.
    let (store, key) = (st.store.clone(), digest(state));
    let pending = blocking(move || shared::take::<PendingLogin>(&store, Kind::Login, &key))
        .await
        .map_err(|e| {
            (
                None,
                SignInError::Provider(format!("the store is unavailable: {e}")),
            )
        })?
        .ok_or((None, SignInError::State))?;
    // Both sides are SHA-256 digests: comparing them leaks nothing of the
    // cookie.
    let browser_ok = cookie(headers, LOGIN_COOKIE).is_some_and(|c| digest(c) == pending.browser);
    if !browser_ok {
        return Err((None, SignInError::State));
    }
    if let Some(err) = &q.error {
        let err: String = err.chars().take(64).filter(|c| !c.is_control()).collect();
        return Err((None, SignInError::ProviderRefused(err)));
    }
    let code = q.code.as_deref().ok_or((
        None,
        SignInError::Exchange("no code in the callback".into()),
    ))?;
    st.oidc
        .finish(code, pending.pending)
        .await
        .map_err(|e| (None, e))
}

async fn logout(
    State(st): State<Staff>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let who = match st.session(&headers).await {
        Ok(w) => w,
        Err(r) => return *r,
    };
    if let Some(id) = cookie(&headers, SESSION_COOKIE)
        && st.forget(Kind::Session, digest(id)).await.is_err()
    {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable");
    }
    if let Err(r) = st
        .audit(st.entry(Some(&who), "sign-out", "/staff/logout", peer, "ok"))
        .await
    {
        return r;
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    no_store(r)
}

/// A device as support staff see it in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StaffDevice {
    /// The device id.
    pub device_id: String,
    /// Instrument model.
    pub instrument_model: String,
    /// The lab's instrument identifier.
    pub instrument_id: String,
    /// The device's region.
    pub region: String,
    /// Last accepted heartbeat, unix seconds.
    pub last_seen: Option<i64>,
}

async fn list_devices(
    State(st): State<Staff>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let who = match st.session(&headers).await {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let store = st.store.clone();
    let regions = who.regions.clone();
    let list = blocking(move || {
        let mut out = Vec::new();
        for d in store.devices()? {
            let Some(region) = db::region_of(&store, &d.device_id)? else {
                continue;
            };
            if !regions.contains(&region) {
                continue;
            }
            let last_seen = store.status(&d.device_id)?.map(|s| s.last_seen);
            out.push(StaffDevice {
                device_id: d.device_id.as_str().to_owned(),
                instrument_model: d.instrument_model.clone(),
                instrument_id: d.instrument_id.clone(),
                region,
                last_seen,
            });
        }
        Ok(out)
    })
    .await;
    let list = match list {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "listing devices for staff failed");
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable");
        }
    };
    if let Err(r) = st
        .audit(AuditEntry {
            detail: Some(format!("{} devices", list.len())),
            ..st.entry(Some(&who), "list-devices", "/staff/devices", peer, "ok")
        })
        .await
    {
        return r;
    }
    no_store(Json(list).into_response())
}

async fn device_batches(
    State(st): State<Staff>,
    Extension(Peer(peer)): Extension<Peer>,
    Path(device): Path<String>,
    headers: HeaderMap,
) -> Response {
    read_device(st, peer, device, headers, "read-batches", "batches").await
}

async fn device_status(
    State(st): State<Staff>,
    Extension(Peer(peer)): Extension<Peer>,
    Path(device): Path<String>,
    headers: HeaderMap,
) -> Response {
    read_device(st, peer, device, headers, "read-status", "status").await
}

async fn read_device(
    st: Staff,
    peer: SocketAddr,
    device: String,
    headers: HeaderMap,
    action: &str,
    what: &str,
) -> Response {
    let who = match st.session(&headers).await {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let route = format!("/staff/devices/{{device}}/{what}");
    let dev = match st.visible_device(&who, &device, action, &route, peer).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let store = st.store.clone();
    let d = dev.clone();
    let body = if what == "batches" {
        blocking(move || Ok(serde_json::to_value(store.batches(Some(&d), None)?)?)).await
    } else {
        blocking(move || Ok(serde_json::to_value(store.status(&d)?)?)).await
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "reading device data for staff failed");
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable");
        }
    };
    if let Err(r) = st
        .audit(AuditEntry {
            device: Some(dev.as_str().to_owned()),
            ..st.entry(Some(&who), action, &route, peer, "ok")
        })
        .await
    {
        return r;
    }
    no_store(Json(body).into_response())
}
