//! Outbound HTTP for modules: `wasi:http` only, checked against the grant.
//!
//! Order of checks, each failing closed with `HttpRequestDenied`:
//! 1. scheme must be `https`;
//! 2. `host:port` must match an endpoint pattern of the grant — before any DNS
//!    lookup or connection;
//! 3. after resolution, every address must be publicly routable, unless the
//!    grant names that exact IP literal (the PC sits on a hospital LAN: a name
//!    that resolves to a private or loopback address is refused);
//! 4. the connection goes to the checked address (no second lookup); TLS by
//!    rustls, 1.2 minimum, certificates always verified.
//!
//! Every refusal is logged with module and authority (never path or query) and
//! published as a host event.

use crate::events::{Events, HostEvent};
use http_body_util::BodyExt;
use outpost_signing::manifest::{EndpointPattern, HostPattern};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
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

/// Build the TLS client configuration: TLS 1.2 and 1.3 only, web PKI roots
/// plus the operator's extra CAs (or only those).
pub fn tls_config(
    extra_ca_pems: &[Vec<u8>],
    only_extra: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Whether `ip` is an address a module may only reach when granted literally:
/// loopback, private, link-local, unspecified, shared (CGNAT), multicast,
/// broadcast, documentation, unique-local and their IPv4-mapped forms.
pub fn is_restricted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_restricted(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b)
        }
    }
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
        let host = uri.host().unwrap_or("").to_owned();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let refusal = Refusal {
            module: self.module.clone(),
            // Module-supplied: cut, PHI-checked and escaped before it is
            // logged or published.
            authority: crate::untrusted::clean(
                &format!("{host}:{port}"),
                crate::untrusted::MAX_AUTHORITY_BYTES,
            )
            .into_owned(),
            events: self.events.clone(),
        };
        Box::new(async move {
            if !https {
                return Err(refusal.refuse("scheme is not https"));
            }
            if bare_host.is_empty() {
                return Err(refusal.refuse("no host"));
            }
            let matching: Vec<&EndpointPattern> = endpoints
                .iter()
                .filter(|p| p.matches(&bare_host, port))
                .collect();
            if matching.is_empty() {
                return Err(refusal.refuse("endpoint not granted"));
            }
            let granted_literal = |ip: IpAddr| {
                matching
                    .iter()
                    .any(|p| matches!(p.host, HostPattern::Ip(g) if g == ip))
            };
            let connect_timeout = options
                .and_then(|o| o.connect_timeout)
                .unwrap_or(Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS));
            let first_byte_timeout = options
                .and_then(|o| o.first_byte_timeout)
                .unwrap_or(Duration::from_millis(DEFAULT_FIRST_BYTE_TIMEOUT_MS));

            let addrs: Vec<SocketAddr> = if let Ok(ip) = bare_host.parse::<IpAddr>() {
                vec![SocketAddr::new(ip, port)]
            } else {
                match tokio::time::timeout(
                    connect_timeout,
                    tokio::net::lookup_host((bare_host.as_str(), port)),
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
                }
            };
            if addrs.is_empty() {
                return Err(HttpError::DestinationNotFound);
            }
            if let Some(bad) = addrs
                .iter()
                .find(|a| is_restricted(a.ip()) && !granted_literal(a.ip()))
            {
                return Err(refusal.refuse(&format!(
                    "resolves to restricted address {} not granted as a literal",
                    bad.ip()
                )));
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
            let server_name = match bare_host.parse::<IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::from(ip),
                Err(_) => rustls::pki_types::ServerName::try_from(bare_host.clone())
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
                    tracing::warn!(target: "outpost.net", module = %refusal.module, authority = %refusal.authority, error = %e, "tls handshake failed");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_restricted(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_restricted(ip.parse().unwrap()), "{ip}");
        }
    }
}
