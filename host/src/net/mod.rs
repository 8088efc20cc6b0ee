//! Outbound HTTP for modules: `wasi:http` only, checked against the grant.
//!
//! Order of checks, each failing closed with `HttpRequestDenied`:
//! 1. scheme must be `https`;
//! 2. the host is read strictly ([`RequestHost::parse`]): an IP literal only
//!    in its standard spelling, no other spelling of an address (`127.1`,
//!    `0x7f.0.0.1`, `2130706433`), no trailing dot;
//! 3. `host:port` must match an endpoint pattern of the grant — before any
//!    DNS lookup or connection. A name matches name patterns only; an IP
//!    literal matches only the identical IP-literal pattern, and is connected
//!    to as is, never looked up;
//! 4. after resolution, every address of a name must be publicly routable
//!    ([`is_restricted`]: the IANA special-purpose registries and more). A
//!    restricted address is reached only by a request for that literal
//!    address under a grant naming it (the PC sits on a hospital LAN: a name
//!    that resolves to a private or loopback address is refused);
//! 5. the connection goes to the checked address (no second lookup); TLS by
//!    rustls, 1.2 minimum, certificates always verified.
//!
//! Every refusal is logged with module and authority (never path or query) and
//! published as a host event.

mod failure;
mod restricted;

pub use failure::{
    ConnectError, MAX_ANSWER_BYTES, Target, TlsFailure, format_rfc3339, read_answer,
};
pub use restricted::{Block, is_restricted, restricted_block};

use crate::events::{Events, HostEvent};
use http_body_util::BodyExt;
use outpost_signing::manifest::{EndpointPattern, RequestHost};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// Connect timeout when the module sets none.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// First-byte timeout when the module sets none.
pub const DEFAULT_FIRST_BYTE_TIMEOUT_MS: u64 = 30_000;

/// The TLS versions every HTTPS client of the host speaks: 1.3 and 1.2.
pub const TLS_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider of every HTTPS client of the host (ring).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trust anchors: web PKI roots plus the operator's extra CAs (or only
/// those).
pub fn root_store(
    extra_ca_pems: &[Vec<u8>],
    only_extra: bool,
) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    if !only_extra {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for pem in extra_ca_pems {
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("bad CA certificate PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("unusable CA certificate: {e}"))?;
        }
    }
    Ok(roots)
}

/// Build the TLS client configuration: [`TLS_VERSIONS`] only, the trust
/// anchors of [`root_store`], certificates always verified.
pub fn tls_config(
    extra_ca_pems: &[Vec<u8>],
    only_extra: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = root_store(extra_ca_pems, only_extra)?;
    let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(TLS_VERSIONS)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The per-call network grant: installed as the store's `WasiHttpHooks`.
pub struct GrantedHttp {
    module: Arc<str>,
    endpoints: Arc<[EndpointPattern]>,
    tls: Arc<rustls::ClientConfig>,
    events: Events,
}

impl GrantedHttp {
    /// Hooks for `module` with its granted `endpoints`.
    pub fn new(
        module: Arc<str>,
        endpoints: Arc<[EndpointPattern]>,
        tls: Arc<rustls::ClientConfig>,
        events: Events,
    ) -> Self {
        GrantedHttp {
            module,
            endpoints,
            tls,
            events,
        }
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>;

struct Refusal {
    module: Arc<str>,
    authority: String,
    events: Events,
}

impl Refusal {
    fn refuse(&self, reason: &str) -> HttpError {
        tracing::warn!(target: "outpost.net", module = %self.module, authority = %self.authority, reason, "outbound request refused");
        self.events.emit(HostEvent::RequestRefused {
            module: self.module.to_string(),
            authority: self.authority.clone(),
            reason: reason.to_owned(),
        });
        HttpError::HttpRequestDenied
    }
}

impl WasiHttpHooks for GrantedHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let endpoints = self.endpoints.clone();
        let tls = self.tls.clone();
        let uri = request.uri().clone();
        let raw_host = uri.host().unwrap_or("").to_owned();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let refusal = Refusal {
            module: self.module.clone(),
            // Module-supplied: cut, PHI-checked and escaped before it is
            // logged or published.
            authority: crate::untrusted::clean(
                &format!("{raw_host}:{port}"),
                crate::untrusted::MAX_AUTHORITY_BYTES,
            )
            .into_owned(),
            events: self.events.clone(),
        };
        Box::new(async move {
            if !https {
                return Err(refusal.refuse("scheme is not https"));
            }
            let host = match RequestHost::parse(&raw_host) {
                Ok(h) => h,
                Err(e) => return Err(refusal.refuse(&e.to_string())),
            };
            if !endpoints.iter().any(|p| p.matches_host(&host, port)) {
                return Err(refusal.refuse("endpoint not granted"));
            }
            let connect_timeout = options
                .and_then(|o| o.connect_timeout)
                .unwrap_or(Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS));
            let first_byte_timeout = options
                .and_then(|o| o.first_byte_timeout)
                .unwrap_or(Duration::from_millis(DEFAULT_FIRST_BYTE_TIMEOUT_MS));

            // An IP literal matched an identical literal grant: that address,
            // restricted or not, and no lookup. A name is looked up, and every
            // address it resolves to must be unrestricted.
            let addrs: Vec<SocketAddr> = match &host {
                RequestHost::Ip(ip) => vec![SocketAddr::new(*ip, port)],
                RequestHost::Name(name) => {
                    let addrs: Vec<SocketAddr> = match tokio::time::timeout(
                        connect_timeout,
                        tokio::net::lookup_host((name.as_str(), port)),
                    )
                    .await
                    {
                        Ok(Ok(a)) => a.collect(),
                        Ok(Err(_)) => {
                            return Err(HttpError::DnsError {
                                rcode: Some("lookup failed".into()),
                                info_code: None,
                            });
                        }
                        Err(_) => return Err(HttpError::DnsTimeout),
                    };
                    if let Some((bad, block)) = addrs
                        .iter()
                        .find_map(|a| restricted_block(a.ip()).map(|b| (a.ip(), b)))
                    {
                        return Err(refusal.refuse(&format!(
                            "resolves to restricted address {bad} ({}, {}) not granted as a literal",
                            block.name, block.prefix
                        )));
                    }
                    addrs
                }
            };
            if addrs.is_empty() {
                return Err(HttpError::DestinationNotFound);
            }

            let tcp = match tokio::time::timeout(
                connect_timeout,
                tokio::net::TcpStream::connect(addrs.as_slice()),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(HttpError::Connect(e)),
                Err(_) => return Err(HttpError::ConnectionTimeout),
            };
            let server_name = match &host {
                RequestHost::Ip(ip) => rustls::pki_types::ServerName::from(*ip),
                RequestHost::Name(name) => rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|_| HttpError::HttpRequestUriInvalid)?,
            };
            let tls_stream = match tokio::time::timeout(
                connect_timeout,
                tokio_rustls::TlsConnector::from(tls).connect(server_name, tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let why = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                        .map(|r| TlsFailure::from_rustls(r).to_string())
                        .unwrap_or_else(|| e.to_string());
                    tracing::warn!(target: "outpost.net", module = %refusal.module, authority = %refusal.authority, reason = %why, "server reached, TLS refused");
                    return Err(HttpError::Tls(e));
                }
                Err(_) => return Err(HttpError::ConnectionTimeout),
            };
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls_stream))
                    .await
                    .map_err(HttpError::from)?;

            let mut request = request;
            *request.uri_mut() = http::Uri::builder()
                .path_and_query(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
                .build()
                .map_err(|_| HttpError::HttpRequestUriInvalid)?;

            let send = tokio::time::timeout(first_byte_timeout, sender.send_request(request));
            let mut send = std::pin::pin!(send);
            let mut conn = Some(conn);
            let response = std::future::poll_fn(|cx| match send.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(r),
                Poll::Pending => {
                    if let Some(c) = conn.as_mut()
                        && let Poll::Ready(res) = Pin::new(c).poll(cx)
                    {
                        conn = None;
                        if let Err(e) = res {
                            return Poll::Ready(Ok(Err(e)));
                        }
                    }
                    Poll::Pending
                }
            })
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)?
            .map_err(HttpError::from)?;
            let response = response.map(|b| b.map_err(HttpError::from).boxed_unsync());
            let io: IoFuture = Box::new(async move {
                match conn {
                    Some(c) => c.await.map_err(HttpError::from),
                    None => Ok(()),
                }
            });
            Ok((response, io))
        })
    }
}
