//! The CLI's side of the local API: `outpost status`, `notifications`,
//! `ack`, `dismiss`, `dashboard` talk to the running service through it,
//! with the token from the state directory.

use super::auth::{ApiToken, TokenError};
use crate::config::Config;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::time::Duration;

/// Header naming the client a token-authenticated request comes from
/// (recorded with acknowledgements and dismissals).
pub const CLIENT_HEADER: &str = "x-outpost-client";
/// Time limit of one API request of the CLI (not the event stream).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the CLI could not use the API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens where the config says the service does.
    #[error(
        "no outpost service is running at {0} (start it with `outpost run --config FILE`, or start the installed service)"
    )]
    NotRunning(SocketAddr),
    /// The token could not be read (not an administrator, no service yet).
    #[error(
        "{0} (the CLI needs the service's API token: run it as the service account or an administrator)"
    )]
    Token(#[from] TokenError),
    /// The service answered with an error.
    #[error("the service refused: {status} {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// Anything else on the way.
    #[error("cannot talk to the service at {addr}: {message}")]
    Other {
        /// Where.
        addr: SocketAddr,
        /// What went wrong.
        message: String,
    },
}

/// An HTTP client for the loopback API: no proxy, no redirects, a short
/// connect timeout. (reqwest needs a TLS configuration even for plain
/// HTTP; it gets the host's own, which this client never uses.)
pub fn plain_http_client() -> Result<reqwest::Client, String> {
    let tls = crate::net::tls_config(&[], true)?;
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())
}

/// A client of the local API of the service configured by a config file.
pub struct ApiClient {
    addr: SocketAddr,
    token: ApiToken,
    client_name: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the service `config` describes, naming itself `client_name`.
    pub fn new(config: &Config, client_name: impl Into<String>) -> Result<ApiClient, ClientError> {
        let addr = super::published_addr(&config.state_dir).unwrap_or(config.api.listen);
        let token = ApiToken::load(&config.state_dir).map_err(|e| match e {
            TokenError::Io { ref error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
                ClientError::NotRunning(addr)
            }
            other => ClientError::Token(other),
        })?;
        let http = plain_http_client().map_err(|message| ClientError::Other { addr, message })?;
        Ok(ApiClient {
            addr,
            token,
            client_name: client_name.into(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(self.token.secret())
            .header(CLIENT_HEADER, self.client_name.as_str())
    }

    fn failed(&self, e: reqwest::Error) -> ClientError {
        if e.is_connect() {
            ClientError::NotRunning(self.addr)
        } else {
            ClientError::Other {
                addr: self.addr,
                message: e.to_string(),
            }
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let res = req
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.failed(e))?;
        let status = res.status();
        let body = res.bytes().await.map_err(|e| self.failed(e))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(ClientError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Other {
            addr: self.addr,
            message: format!("unexpected answer: {e}"),
        })
    }

    /// `GET path` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` (no body) as JSON.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.request(reqwest::Method::POST, path)).await
    }

    /// `POST path` with a JSON body, answer as JSON.
    pub async fn post_json<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Other {
            addr: self.addr,
            message: e.to_string(),
        })?;
        let req = self
            .request(reqwest::Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(req).await
    }

    /// Follow `/api/v1/events`, calling `f(kind, json)` for each event until
    /// the service closes the stream or `f` returns false.
    pub async fn follow(&self, mut f: impl FnMut(&str, &str) -> bool) -> Result<(), ClientError> {
        let mut res = self
            .request(reqwest::Method::GET, "/api/v1/events")
            .send()
            .await
            .map_err(|e| self.failed(e))?;
        if !res.status().is_success() {
            return Err(ClientError::Refused {
                status: res.status().as_u16(),
                message: String::new(),
            });
        }
        let mut buf = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| self.failed(e))? {
            buf.extend_from_slice(&chunk);
            // Events end with a blank line.
            while let Some(end) = find_blank_line(&buf) {
                let block: Vec<u8> = buf.drain(..end).collect();
                let text = String::from_utf8_lossy(&block);
                let mut kind = "message";
                let mut data = String::new();
                for line in text.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = k.trim();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if !data.is_empty() && !f(kind, &data) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The end (past the blank line) of the first complete event in `buf`.
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}
