//! tough's [`Transport`] over the host's own HTTPS client: the rustls
//! configuration of `[network]` (TLS 1.2/1.3, ring, built-in and extra CAs),
//! the system proxy as reqwest reads it (as the uplink), no redirects,
//! HTTPS only (plain HTTP to loopback only in the conformance client's
//! [`HttpsTransport::with_loopback_http`]), a connect and a whole-request
//! timeout, and a byte cap on every
//! answer (tough's own caps — metadata sizes, a target's length — come on
//! top).

use bytes::Bytes;
use std::time::Duration;
use tough::{Transport, TransportError, TransportErrorKind};

type TransportStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, TransportError>> + Send>>;
use url::Url;

/// The transport.
#[derive(Clone, Debug)]
pub struct HttpsTransport {
    client: reqwest::Client,
    /// Every URL fetched must start with this (the repository's base URL).
    base: String,
    /// Largest answer body accepted, whatever tough asks for.
    max_bytes: u64,
    /// Plain HTTP to a loopback host is allowed (the conformance client
    /// only; the updater never sets it).
    loopback_http: bool,
}

/// Why a fetch was refused before or while talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is outside the configured repository.
    #[error("{url} is outside the update repository")]
    OutsideRepository {
        /// The URL tough asked for.
        url: String,
    },
    /// The server answered with a status other than 200 or 404.
    #[error("HTTP status {status}")]
    Status {
        /// The status code.
        status: u16,
    },
    /// The answer is larger than the cap.
    #[error("answer larger than {max} bytes")]
    TooLarge {
        /// The cap.
        max: u64,
    },
    /// Connection, TLS, timeout or body error.
    #[error("{0}")]
    Http(#[from] reqwest::Error),
}

impl HttpsTransport {
    /// A transport for the repository at `base` (`https://…/`), over `tls`.
    pub fn new(
        tls: &rustls::ClientConfig,
        base: &str,
        timeout: Duration,
        max_bytes: u64,
    ) -> Result<HttpsTransport, reqwest::Error> {
        Self::build(tls, base, timeout, max_bytes, false)
    }

    /// A transport that also speaks plain HTTP, to loopback hosts only
    /// (`localhost`, `127.0.0.0/8`, `::1`): for `outpost tuf-client`, which
    /// the TUF conformance suite drives against its own HTTP server on
    /// loopback. The updater never uses it.
    pub fn with_loopback_http(
        tls: &rustls::ClientConfig,
        base: &str,
        timeout: Duration,
        max_bytes: u64,
    ) -> Result<HttpsTransport, reqwest::Error> {
        Self::build(tls, base, timeout, max_bytes, true)
    }

    /// The one client setup: no redirects, timeouts, our user agent; HTTPS
    /// only with the system proxy, or (`loopback_http`) no proxy and plain
    /// HTTP allowed by [`Transport::fetch`] to loopback hosts only.
    fn build(
        tls: &rustls::ClientConfig,
        base: &str,
        timeout: Duration,
        max_bytes: u64,
        loopback_http: bool,
    ) -> Result<HttpsTransport, reqwest::Error> {
        let builder = reqwest::Client::builder().use_preconfigured_tls(tls.clone());
        let builder = if loopback_http {
            builder.no_proxy()
        } else {
            builder.https_only(true)
        };
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(15)))
            .timeout(timeout)
            .user_agent(concat!("outpost/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut base = base.to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        Ok(HttpsTransport {
            client,
            base,
            max_bytes,
            loopback_http,
        })
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

fn other(url: &Url, e: FetchError) -> TransportError {
    TransportError::new_with_cause(TransportErrorKind::Other, url, e)
}

#[async_trait::async_trait]
impl Transport for HttpsTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let plain_ok = self.loopback_http && url.scheme() == "http" && is_loopback(&url);
        if url.scheme() != "https" && !plain_ok {
            return Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url,
            ));
        }
        if !url.as_str().starts_with(&self.base) {
            return Err(other(
                &url,
                FetchError::OutsideRepository {
                    url: url.to_string(),
                },
            ));
        }
        let resp = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| other(&url, e.into()))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(TransportError::new(TransportErrorKind::FileNotFound, url)),
            status => return Err(other(&url, FetchError::Status { status })),
        }
        let max = self.max_bytes;
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(other(&url, FetchError::TooLarge { max }));
        }
        let stream = futures_util::stream::unfold(
            (Some(resp), 0u64, url),
            move |(resp, seen, url)| async move {
                let mut resp = resp?;
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        let seen = seen + chunk.len() as u64;
                        if seen > max {
                            let e = other(&url, FetchError::TooLarge { max });
                            return Some((Err(e), (None, seen, url)));
                        }
                        Some((Ok::<Bytes, _>(chunk), (Some(resp), seen, url)))
                    }
                    Ok(None) => None,
                    Err(e) => {
                        let e = other(&url, e.into());
                        Some((Err(e), (None, seen, url)))
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport() -> HttpsTransport {
        let tls = crate::net::tls_config(&[], false).unwrap();
        HttpsTransport::new(
            &tls,
            "https://updates.example/v1/updates",
            Duration::from_secs(5),
            1024,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn refuses_other_schemes_and_urls_outside_the_repository_before_connecting() {
        let t = transport();
        let e = t
            .fetch(Url::parse("http://updates.example/v1/updates/metadata/1.root.json").unwrap())
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), TransportErrorKind::UnsupportedUrlScheme);
        for outside in [
            "https://other.example/v1/updates/metadata/1.root.json",
            "https://updates.example/v1/other/1.root.json",
            "https://updates.example/v1/updatesX/1.root.json",
        ] {
            let e = t.fetch(Url::parse(outside).unwrap()).await.err().unwrap();
            assert_eq!(e.kind(), TransportErrorKind::Other, "{outside}");
            assert!(
                e.to_string().contains("outside the update repository"),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn the_conformance_transport_speaks_plain_http_to_loopback_only() {
        let tls = crate::net::tls_config(&[], false).unwrap();
        let t = HttpsTransport::with_loopback_http(
            &tls,
            "http://updates.example/repo",
            Duration::from_secs(5),
            1024,
        )
        .unwrap();
        let e = t
            .fetch(Url::parse("http://updates.example/repo/metadata/1.root.json").unwrap())
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), TransportErrorKind::UnsupportedUrlScheme);
        let t = HttpsTransport::with_loopback_http(
            &tls,
            "http://127.0.0.1:9/repo",
            Duration::from_secs(5),
            1024,
        )
        .unwrap();
        // Allowed: it is loopback; nothing listens on port 9 (discard), so
        // the connection fails rather than the scheme check.
        let e = t
            .fetch(Url::parse("http://127.0.0.1:9/repo/metadata/1.root.json").unwrap())
            .await
            .err()
            .unwrap();
        assert_ne!(e.kind(), TransportErrorKind::UnsupportedUrlScheme);
    }
}
