//! The relay's hello protocol (TLS, then length-prefixed JSON frames of at
//! most [`MAX_HELLO_BYTES`]) and the clients of both roles. After the hello
//! the relay forwards the frames of the end-to-end channel unchanged.
//!
//! PC: `register-pc {device, session}` → relay `nonce` → PC `proof` (HMAC-
//! SHA256 under the device's enrolled envelope key over [`register_mac`]'s
//! input) → relay `registered` … later `paired {peer}`.
//! Engineer: `connect {session}` → relay `paired {peer}` or `error`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use outpost_protocol::{DeviceId, DeviceKey};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::frame::{FrameError, read_frame, write_frame};

/// Largest hello frame.
pub const MAX_HELLO_BYTES: usize = 1024;
/// Longest session id.
pub const MAX_SESSION_ID_LEN: usize = 64;
/// Time to connect to the relay and finish TLS.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Domain separation of the PC's registration proof.
pub const REGISTER_CONTEXT: &[u8] = b"outpost-relay/v1 register\0";

/// Why the relay refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelayErrorCode {
    /// The hello was malformed or out of order.
    BadHello,
    /// The device is not enrolled or its proof is wrong.
    BadProof,
    /// No PC waits under this session id (unknown, used or expired).
    UnknownSession,
    /// The session id is already registered.
    DuplicateSession,
    /// A cap was reached (pending sessions of the device, or in total).
    Busy,
}

/// One hello message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RelayMsg {
    /// PC → relay: wait for an engineer under `session`.
    RegisterPc {
        /// The enrolled device id.
        device: String,
        /// The session id.
        session: String,
    },
    /// Relay → PC: prove the device key over this nonce (hex, 32 bytes).
    Nonce {
        /// Hex nonce.
        nonce: String,
    },
    /// PC → relay: the HMAC (hex).
    Proof {
        /// Hex HMAC-SHA256.
        mac: String,
    },
    /// Relay → PC: registered, waiting for the engineer.
    Registered,
    /// Engineer → relay: pair me with the PC of `session`.
    Connect {
        /// The session id.
        session: String,
    },
    /// Relay → both: paired; from now on bytes are forwarded. `peer` is the
    /// other side's address as the relay saw it (for the PC's audit).
    Paired {
        /// The other side's address.
        peer: String,
    },
    /// Relay → either: refused.
    Error {
        /// What kind.
        code: RelayErrorCode,
        /// In words.
        message: String,
    },
}

/// Why talking to the relay failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Connecting or TLS failed.
    #[error("connecting to the relay {addr}: {source}")]
    Connect {
        /// The relay address.
        addr: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A hello frame failed.
    #[error("relay hello: {0}")]
    Frame(#[from] FrameError),
    /// The relay said no.
    #[error("the relay refused ({code:?}): {message}")]
    Refused {
        /// Its code.
        code: RelayErrorCode,
        /// Its message.
        message: String,
    },
    /// The relay (or a client) broke the hello protocol.
    #[error("relay hello: {0}")]
    Protocol(String),
    /// Stopped while waiting.
    #[error("stopped while waiting for the engineer")]
    Stopped,
}

/// Check a session id: 1 to 64 ASCII letters, digits and `-`.
pub fn validate_session_id(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > MAX_SESSION_ID_LEN
        || !s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
    {
        return Err(format!(
            "a session id is 1 to {MAX_SESSION_ID_LEN} ASCII letters, digits or '-'"
        ));
    }
    Ok(())
}

/// The registration proof: HMAC-SHA256 under the device's enrolled envelope
/// key over the context, the relay's nonce and the session id.
pub fn register_mac(key: &DeviceKey, nonce: &[u8; 32], session: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(REGISTER_CONTEXT);
    mac.update(nonce);
    mac.update(session.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Check a registration proof in constant time.
pub fn verify_register_mac(key: &DeviceKey, nonce: &[u8; 32], session: &str, mac: &[u8]) -> bool {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC takes keys of any length");
    m.update(REGISTER_CONTEXT);
    m.update(nonce);
    m.update(session.as_bytes());
    m.verify_slice(mac).is_ok()
}

/// A fresh random nonce.
pub fn new_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    OsRng.fill_bytes(&mut n);
    n
}

/// Send one hello message.
pub async fn send<S: AsyncWrite + Unpin>(s: &mut S, m: &RelayMsg) -> Result<(), FrameError> {
    let body = serde_json::to_vec(m).unwrap_or_default();
    write_frame(s, &body).await?;
    s.flush().await?;
    Ok(())
}

/// Receive one hello message (malformed JSON is a [`RelayError::Protocol`]).
pub async fn recv<S: AsyncRead + Unpin>(s: &mut S) -> Result<RelayMsg, RelayError> {
    let mut buf = Vec::new();
    read_frame(s, &mut buf, MAX_HELLO_BYTES).await?;
    serde_json::from_slice(&buf)
        .map_err(|_| RelayError::Protocol("a malformed hello message".into()))
}

/// Where the relay is and how to trust it.
#[derive(Clone)]
pub struct RelayTarget {
    /// `host:port` to connect to.
    pub addr: String,
    /// The name its certificate must carry.
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// TLS client configuration (the roots that may sign the relay's
    /// certificate).
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for RelayTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayTarget")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A TLS client configuration trusting exactly the CA certificates in
/// `ca_pem` (ring provider, TLS 1.3 and 1.2).
pub fn client_tls(ca_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use anyhow::Context;
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the CA PEM")?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in the CA PEM");
    }
    for c in certs {
        roots.add(c).context("adding a CA certificate")?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .context("TLS versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

impl RelayTarget {
    /// A target at `addr` whose certificate must name `server_name`.
    pub fn new(
        addr: impl Into<String>,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Self> {
        Ok(RelayTarget {
            addr: addr.into(),
            server_name: rustls::pki_types::ServerName::try_from(server_name.to_owned())
                .map_err(|_| anyhow::anyhow!("{server_name:?} is not a valid server name"))?,
            tls,
        })
    }

    /// Connect and finish TLS.
    pub async fn connect(&self) -> Result<TlsStream<TcpStream>, RelayError> {
        let err = |source| RelayError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let fut = async {
            let tcp = TcpStream::connect(&self.addr).await.map_err(err)?;
            let _ = tcp.set_nodelay(true);
            TlsConnector::from(self.tls.clone())
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(err)
        };
        tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), fut)
            .await
            .map_err(|_| {
                err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out",
                ))
            })?
    }
}

fn refused_or(m: RelayMsg, expected: &str) -> RelayError {
    match m {
        RelayMsg::Error { code, message } => RelayError::Refused { code, message },
        _ => RelayError::Protocol(format!("expected {expected}")),
    }
}

/// PC: connect, register `session` for `device` and return the stream,
/// waiting for an engineer (see [`wait_paired`]).
pub async fn register_pc(
    target: &RelayTarget,
    device: &DeviceId,
    key: &DeviceKey,
    session: &str,
) -> Result<TlsStream<TcpStream>, RelayError> {
    validate_session_id(session).map_err(RelayError::Protocol)?;
    let mut s = target.connect().await?;
    send(
        &mut s,
        &RelayMsg::RegisterPc {
            device: device.as_str().to_owned(),
            session: session.to_owned(),
        },
    )
    .await?;
    let nonce = match recv(&mut s).await? {
        RelayMsg::Nonce { nonce } => {
            let b = hex::decode(nonce).map_err(|_| RelayError::Protocol("nonce not hex".into()))?;
            <[u8; 32]>::try_from(b.as_slice())
                .map_err(|_| RelayError::Protocol("nonce not 32 bytes".into()))?
        }
        other => return Err(refused_or(other, "a nonce")),
    };
    let mac = register_mac(key, &nonce, session);
    send(
        &mut s,
        &RelayMsg::Proof {
            mac: hex::encode(mac),
        },
    )
    .await?;
    match recv(&mut s).await? {
        RelayMsg::Registered => Ok(s),
        other => Err(refused_or(other, "registered")),
    }
}

/// PC: wait on a registered stream until the relay pairs an engineer;
/// returns the engineer's address as the relay saw it.
pub async fn wait_paired<S: AsyncRead + Unpin>(s: &mut S) -> Result<String, RelayError> {
    match recv(s).await? {
        RelayMsg::Paired { peer } => Ok(peer),
        other => Err(refused_or(other, "paired")),
    }
}

/// Engineer: connect and ask for the PC of `session`.
pub async fn connect_engineer(
    target: &RelayTarget,
    session: &str,
) -> Result<TlsStream<TcpStream>, RelayError> {
    validate_session_id(session).map_err(RelayError::Protocol)?;
    let mut s = target.connect().await?;
    send(
        &mut s,
        &RelayMsg::Connect {
            session: session.to_owned(),
        },
    )
    .await?;
    match recv(&mut s).await? {
        RelayMsg::Paired { .. } => Ok(s),
        other => Err(refused_or(other, "paired")),
    }
}

/// Read one byte without consuming a frame: used by the relay to notice a
/// pending PC that went away. Returns `Ok(false)` on a clean close.
pub async fn peer_sent_or_closed<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<bool> {
    let mut b = [0u8; 1];
    Ok(s.read(&mut b).await? != 0)
}

/// A peer address for [`RelayMsg::Paired`].
pub fn peer_text(a: SocketAddr) -> String {
    a.to_string()
}
