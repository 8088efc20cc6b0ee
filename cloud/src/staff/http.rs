//! The HTTP client the OpenID Connect library talks to the provider with:
//! hyper over tokio-rustls (ring provider), one connection per request,
//! bounded in time and size, redirects never followed. Plain `http` only to
//! a loopback address (a provider on the same machine, e.g. in tests).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Deadline of one request to the provider (connect, TLS, request, body).
pub const PROVIDER_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Largest response body read from the provider.
pub const MAX_PROVIDER_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why a request to the OpenID provider failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderHttpError {
    /// The URL is not one this client may call.
    #[error("provider URL {0} refused: only https, or http to a loopback address")]
    Scheme(String),
    /// The URL has no host.
    #[error("provider URL {0} has no host")]
    NoHost(String),
    /// Connecting, TLS or HTTP failed.
    #[error("request to the provider at {url} failed: {why}")]
    Io {
        /// The URL requested.
        url: String,
        /// What failed.
        why: String,
    },
    /// No answer within [`PROVIDER_REQUEST_TIMEOUT_MS`].
    #[error("request to the provider at {0} timed out")]
    Timeout(String),
    /// The body exceeded [`MAX_PROVIDER_RESPONSE_BYTES`].
    #[error("response of the provider at {0} is too large")]
    TooLarge(String),
}

/// The client (cheap to clone).
#[derive(Clone)]
pub struct ProviderHttp {
    tls: TlsConnector,
}

impl ProviderHttp {
    /// A client trusting the public web roots plus the CA certificates in
    /// `extra_ca_pem` (for a provider under a private CA).
    pub fn new(extra_ca_pem: Option<&str>) -> anyhow::Result<ProviderHttp> {
        let cfg = crate::pki::client_tls(extra_ca_pem, "provider")?;
        Ok(ProviderHttp {
            tls: TlsConnector::from(Arc::new(cfg)),
        })
    }

    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, ProviderHttpError> {
        let url = req.uri().to_string();
        tokio::time::timeout(
            Duration::from_millis(PROVIDER_REQUEST_TIMEOUT_MS),
            self.send_inner(req),
        )
        .await
        .map_err(|_| ProviderHttpError::Timeout(url))?
    }

    async fn send_inner(&self, req: HttpRequest) -> Result<HttpResponse, ProviderHttpError> {
        let url = req.uri().to_string();
        let host = req
            .uri()
            .host()
            .ok_or_else(|| ProviderHttpError::NoHost(url.clone()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = match req.uri().scheme_str() {
            Some("https") => true,
            Some("http") if is_loopback(&host) => false,
            _ => return Err(ProviderHttpError::Scheme(url)),
        };
        let port = req.uri().port_u16().unwrap_or(if tls { 443 } else { 80 });
        let io_err = |why: String| ProviderHttpError::Io {
            url: url.clone(),
            why,
        };
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| io_err(e.to_string()))?;
        if tls {
            let name = ServerName::try_from(host.clone()).map_err(|e| io_err(e.to_string()))?;
            let stream = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| io_err(format!("TLS: {e}")))?;
            exchange(stream, req, &url).await
        } else {
            exchange(tcp, req, &url).await
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

async fn exchange<S>(io: S, req: HttpRequest, url: &str) -> Result<HttpResponse, ProviderHttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io_err = |why: String| ProviderHttpError::Io {
        url: url.to_owned(),
        why,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| io_err(e.to_string()))?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    parts.uri = path
        .parse()
        .map_err(|e: http::uri::InvalidUri| io_err(e.to_string()))?;
    parts.headers.insert(
        http::header::HOST,
        http::HeaderValue::from_str(&authority).map_err(|e| io_err(e.to_string()))?,
    );
    let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| io_err(e.to_string()))?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_PROVIDER_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ProviderHttpError::TooLarge(url.to_owned())
            } else {
                io_err(e.to_string())
            }
        })?
        .to_bytes()
        .to_vec();
    conn.abort();
    Ok(http::Response::from_parts(parts, body))
}

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = ProviderHttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse, ProviderHttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
