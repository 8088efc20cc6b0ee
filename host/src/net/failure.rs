//! Why a request to a server failed, in words for the operator.
//!
//! One classification for every HTTPS client of the host (enrolment, the
//! uplink sender, `outpost doctor`): a [`ConnectError`] says whether
//! the server was reached at all, and when TLS failed, a [`TlsFailure`] says
//! why (no common version or cipher, expired certificate with its date,
//! unknown issuer with the config key that fixes it, wrong name with the
//! name expected). reqwest wraps the rustls and I/O errors several layers
//! deep; [`ConnectError::from_reqwest`] walks the chain to find them.
//!
//! Answers are read through [`read_answer`], which caps their size
//! ([`MAX_ANSWER_BYTES`]) and tells a stalled body (a timeout) from a broken
//! or oversized one.

use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, SystemTime};

/// Most bytes of a server's answer read (enrolment, ingest and heartbeat
/// answers are small JSON documents); a longer answer is refused, not cut.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The server a request went to, and the time the request was given.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    /// The server as configured (`https://host[:port]`).
    pub server: &'a str,
    /// The request's whole time limit (connect, send, answer).
    pub timeout: Duration,
}

/// Why a TLS handshake with a reached server failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server offers only protocol versions below TLS 1.2.
    NoCommonVersion,
    /// The server ended the handshake: no cipher suite (or version, or key
    /// exchange) in common.
    NoCommonCipher,
    /// The server's certificate expired (on this date, when known).
    Expired {
        /// The certificate's `notAfter`.
        not_after: Option<SystemTime>,
    },
    /// The server's certificate is not valid yet (from this date, when known).
    NotYetValid {
        /// The certificate's `notBefore`.
        not_before: Option<SystemTime>,
    },
    /// The certificate chain does not lead to a trusted CA.
    UnknownIssuer,
    /// The certificate names a trusted CA as its issuer but that CA did not
    /// sign it (another CA of the same name, or a forgery).
    BadSignature,
    /// The certificate does not name the server that was asked for.
    WrongName {
        /// The name (or address) this host connected to.
        expected: Option<String>,
        /// The names the certificate gives.
        presented: Vec<String>,
    },
    /// The certificate was revoked.
    Revoked,
    /// Another certificate problem (rustls's words).
    BadCertificate(String),
    /// The server sent an alert other than the ones above.
    Alert(String),
    /// The connection closed during the handshake without a TLS alert.
    ClosedDuringHandshake,
    /// Anything else rustls reported.
    Other(String),
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::NoCommonVersion => f.write_str(
                "no common protocol version: the server does not offer TLS 1.2 or 1.3",
            ),
            TlsFailure::NoCommonCipher => f.write_str(
                "no common cipher suite or protocol version: the server ended the handshake (this host needs TLS 1.2 or 1.3 with a current cipher suite)",
            ),
            TlsFailure::Expired { not_after: Some(t) } => {
                write!(f, "the server's certificate expired on {}", format_rfc3339(*t))
            }
            TlsFailure::Expired { not_after: None } => {
                f.write_str("the server's certificate has expired")
            }
            TlsFailure::NotYetValid {
                not_before: Some(t),
            } => write!(
                f,
                "the server's certificate is not valid before {} (is this PC's clock right?)",
                format_rfc3339(*t)
            ),
            TlsFailure::NotYetValid { not_before: None } => f.write_str(
                "the server's certificate is not valid yet (is this PC's clock right?)",
            ),
            TlsFailure::UnknownIssuer => f.write_str(
                "the server's certificate is issued by an unknown certificate authority; if the server uses a private CA, add that CA's certificate to `[network] extra-ca-files` in the host config",
            ),
            TlsFailure::BadSignature => f.write_str(
                "the server's certificate names a trusted certificate authority as its issuer, but that authority did not sign it (another CA of the same name?); if the server uses a private CA, add that CA's certificate to `[network] extra-ca-files` in the host config",
            ),
            TlsFailure::WrongName {
                expected,
                presented,
            } => {
                match expected {
                    Some(e) => write!(f, "the server's certificate is not valid for {e}")?,
                    None => f.write_str(
                        "the server's certificate is not valid for the name this host asked for",
                    )?,
                }
                if presented.is_empty() {
                    f.write_str(" (it names no host)")
                } else {
                    write!(f, " (it names {})", presented.join(", "))
                }
            }
            TlsFailure::Revoked => f.write_str("the server's certificate was revoked"),
            TlsFailure::BadCertificate(why) => {
                write!(f, "the server's certificate is not acceptable: {why}")
            }
            TlsFailure::Alert(alert) => write!(f, "the server ended the handshake ({alert})"),
            TlsFailure::ClosedDuringHandshake => f.write_str(
                "the connection was closed during the handshake without a TLS alert (a firewall or proxy that filters by server name, or a server that speaks no TLS version this host offers)",
            ),
            TlsFailure::Other(why) => f.write_str(why),
        }
    }
}

/// `DnsName("a.example")` / `IpAddress(1.2.3.4)` (webpki's rendering of a
/// subject alternative name) → `a.example` / `1.2.3.4`.
fn plain_name(presented: &str) -> String {
    let inner = presented
        .strip_prefix("DnsName(\"")
        .and_then(|s| s.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|s| s.strip_suffix(')'))
        });
    inner.unwrap_or(presented).to_owned()
}

impl TlsFailure {
    /// Classify a rustls error.
    pub fn from_rustls(e: &rustls::Error) -> TlsFailure {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        use rustls::{PeerIncompatible as P, PeerMisbehaved as M};
        let time = |t: &rustls::pki_types::UnixTime| {
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs()))
        };
        match e {
            E::InvalidCertificate(c) => match c {
                C::UnknownIssuer => TlsFailure::UnknownIssuer,
                C::Expired => TlsFailure::Expired { not_after: None },
                C::ExpiredContext { not_after, .. } => TlsFailure::Expired {
                    not_after: time(not_after),
                },
                C::NotValidYet => TlsFailure::NotYetValid { not_before: None },
                C::NotValidYetContext { not_before, .. } => TlsFailure::NotYetValid {
                    not_before: time(not_before),
                },
                C::NotValidForName => TlsFailure::WrongName {
                    expected: None,
                    presented: Vec::new(),
                },
                C::NotValidForNameContext {
                    expected,
                    presented,
                } => TlsFailure::WrongName {
                    expected: Some(expected.to_str().into_owned()),
                    presented: presented.iter().map(|p| plain_name(p)).collect(),
                },
                C::Revoked => TlsFailure::Revoked,
                C::BadSignature => TlsFailure::BadSignature,
                _ => TlsFailure::BadCertificate(e.to_string()),
            },
            E::PeerIncompatible(
                P::ServerDoesNotSupportTls12Or13
                | P::ServerTlsVersionIsDisabledByOurConfig
                | P::SupportedVersionsExtensionRequired,
            )
            | E::AlertReceived(A::ProtocolVersion) => TlsFailure::NoCommonVersion,
            E::PeerIncompatible(
                P::NoCipherSuitesInCommon | P::NoKxGroupsInCommon | P::NoSignatureSchemesInCommon,
            )
            | E::PeerMisbehaved(M::SelectedUnofferedCipherSuite)
            | E::AlertReceived(A::HandshakeFailure | A::InsufficientSecurity) => {
                TlsFailure::NoCommonCipher
            }
            E::AlertReceived(a) => TlsFailure::Alert(format!("{a:?}")),
            other => TlsFailure::Other(other.to_string()),
        }
    }
}

/// Why a request to a server brought no usable answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The server's name did not resolve.
    #[error("cannot reach {server}: its name does not resolve ({reason})")]
    Dns {
        /// The server.
        server: String,
        /// The resolver's words.
        reason: String,
    },
    /// Nothing listens at the server's address (or a firewall refused).
    #[error("cannot reach {server}: connection refused")]
    Refused {
        /// The server.
        server: String,
    },
    /// No TCP connection within the time limit.
    #[error("cannot reach {server}: no connection within {after:?}")]
    ConnectTimeout {
        /// The server.
        server: String,
        /// The limit.
        after: Duration,
    },
    /// Another failure before the server was reached.
    #[error("cannot reach {server}: {reason}")]
    Unreachable {
        /// The server.
        server: String,
        /// What failed.
        reason: String,
    },
    /// The server was reached, the TLS handshake failed.
    #[error("server {server} reached, TLS refused: {failure}")]
    Tls {
        /// The server.
        server: String,
        /// Why.
        failure: TlsFailure,
    },
    /// Connected, but no answer came within the time limit.
    #[error("server {server} reached, but it did not answer within {after:?} (timeout)")]
    NoAnswer {
        /// The server.
        server: String,
        /// The limit.
        after: Duration,
    },
    /// The answer started, then stalled until the time limit.
    #[error(
        "server {server} started its answer, then stopped sending it: timed out after {after:?}"
    )]
    BodyTimeout {
        /// The server.
        server: String,
        /// The limit.
        after: Duration,
    },
    /// The answer is longer than this host reads.
    #[error(
        "the answer of server {server} is larger than {limit} bytes, the most this host reads of an answer"
    )]
    BodyTooLarge {
        /// The server.
        server: String,
        /// The cap ([`MAX_ANSWER_BYTES`]).
        limit: usize,
    },
    /// The answer broke off (connection closed or reset mid-body).
    #[error("server {server} broke off its answer: {reason}")]
    BodyBroken {
        /// The server.
        server: String,
        /// What failed.
        reason: String,
    },
    /// Anything else, with the whole error chain.
    #[error("request to {server} failed: {reason}")]
    Other {
        /// The server.
        server: String,
        /// The error chain.
        reason: String,
    },
}

/// The errors in `e`'s chain, `e` first; an `io::Error`'s wrapped error is
/// visited too (its `source()` skips it).
fn chain<'a>(e: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = vec![e];
    let mut cur = e;
    while out.len() < 16 {
        let next = cur
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn StdError + 'static))
            .or_else(|| cur.source());
        match next {
            Some(n) => {
                out.push(n);
                cur = n;
            }
            None => break,
        }
    }
    out
}

/// The chain's messages joined, each once (wrappers often repeat their
/// cause's text).
fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut text = String::new();
    for link in chain(e) {
        let s = link.to_string();
        if s.is_empty() || text.contains(&s) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&s);
    }
    text
}

impl ConnectError {
    /// Classify a reqwest error from sending a request (before its answer's
    /// headers arrived).
    pub fn from_reqwest(e: &reqwest::Error, target: &Target<'_>) -> ConnectError {
        let server = target.server.to_owned();
        let links = chain(e);
        if let Some(tls) = links.iter().find_map(|l| l.downcast_ref::<rustls::Error>()) {
            return ConnectError::Tls {
                server,
                failure: TlsFailure::from_rustls(tls),
            };
        }
        let io_kind = links
            .iter()
            .find_map(|l| l.downcast_ref::<std::io::Error>())
            .map(|io| io.kind());
        if e.is_timeout() || io_kind == Some(std::io::ErrorKind::TimedOut) {
            return if e.is_connect() {
                ConnectError::ConnectTimeout {
                    server,
                    after: target.timeout,
                }
            } else {
                ConnectError::NoAnswer {
                    server,
                    after: target.timeout,
                }
            };
        }
        let reason = chain_text(e);
        if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
            return ConnectError::Refused { server };
        }
        if e.is_connect() {
            if links.iter().any(|l| l.to_string().starts_with("dns error")) {
                return ConnectError::Dns { server, reason };
            }
            return ConnectError::Unreachable { server, reason };
        }
        ConnectError::Other { server, reason }
    }

    /// Classify a failed TCP connection attempt to `target`.
    pub fn from_connect_io(e: &std::io::Error, target: &Target<'_>) -> ConnectError {
        let server = target.server.to_owned();
        match e.kind() {
            std::io::ErrorKind::ConnectionRefused => ConnectError::Refused { server },
            std::io::ErrorKind::TimedOut => ConnectError::ConnectTimeout {
                server,
                after: target.timeout,
            },
            _ => ConnectError::Unreachable {
                server,
                reason: chain_text(e),
            },
        }
    }

    /// Classify a failed TLS handshake over a connected socket (tokio-rustls
    /// carries the rustls error inside an `io::Error`).
    pub fn from_handshake_io(e: &std::io::Error, target: &Target<'_>) -> ConnectError {
        let server = target.server.to_owned();
        if let Some(tls) = chain(e)
            .iter()
            .find_map(|l| l.downcast_ref::<rustls::Error>())
        {
            return ConnectError::Tls {
                server,
                failure: TlsFailure::from_rustls(tls),
            };
        }
        use std::io::ErrorKind as K;
        match e.kind() {
            K::TimedOut => ConnectError::NoAnswer {
                server,
                after: target.timeout,
            },
            K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                ConnectError::Tls {
                    server,
                    failure: TlsFailure::ClosedDuringHandshake,
                }
            }
            _ => ConnectError::Other {
                server,
                reason: chain_text(e),
            },
        }
    }

    /// Whether the server was reached and refused TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, ConnectError::Tls { .. })
    }
}

/// Read a whole answer, at most `limit` bytes (an announced or actual longer
/// one is refused before it is held in memory), telling a stalled body
/// (timeout) from a broken one. Dropping the response on error closes the
/// connection.
pub async fn read_answer(
    mut response: reqwest::Response,
    limit: usize,
    target: &Target<'_>,
) -> Result<Vec<u8>, ConnectError> {
    let too_large = || ConnectError::BodyTooLarge {
        server: target.server.to_owned(),
        limit,
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                use std::io::ErrorKind as K;
                let kinds: Vec<K> = chain(&e)
                    .iter()
                    .filter_map(|l| l.downcast_ref::<std::io::Error>())
                    .map(|io| io.kind())
                    .collect();
                let timed_out = e.is_timeout() || kinds.contains(&K::TimedOut);
                let cut = kinds.iter().any(|k| {
                    matches!(
                        k,
                        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted
                    )
                });
                return Err(if timed_out {
                    ConnectError::BodyTimeout {
                        server: target.server.to_owned(),
                        after: target.timeout,
                    }
                } else {
                    ConnectError::BodyBroken {
                        server: target.server.to_owned(),
                        reason: if cut {
                            "the connection closed before the answer was complete".to_owned()
                        } else {
                            chain_text(&e)
                        },
                    }
                });
            }
        }
    }
}

/// `t` as RFC 3339 in UTC, to the second (`2021-01-02T00:00:00Z`).
pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        let at = |s: u64| format_rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_609_545_600), "2021-01-02T00:00:00Z");
        assert_eq!(at(1_719_496_447), "2024-06-27T13:54:07Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn socket_errors_of_a_direct_connection_are_classified() {
        use std::io::{Error, ErrorKind};
        let target = Target {
            server: "a.example:443",
            timeout: Duration::from_secs(5),
        };
        let refused = ConnectError::from_connect_io(&ErrorKind::ConnectionRefused.into(), &target);
        assert_eq!(
            refused.to_string(),
            "cannot reach a.example:443: connection refused"
        );
        assert!(matches!(
            ConnectError::from_connect_io(&ErrorKind::TimedOut.into(), &target),
            ConnectError::ConnectTimeout { .. }
        ));
        let unreachable = ConnectError::from_connect_io(
            &Error::new(ErrorKind::HostUnreachable, "no route to host"),
            &target,
        );
        assert_eq!(
            unreachable.to_string(),
            "cannot reach a.example:443: no route to host"
        );
        // tokio-rustls carries the rustls error inside an io::Error.
        let alert = Error::new(
            ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion),
        );
        assert_eq!(
            ConnectError::from_handshake_io(&alert, &target),
            ConnectError::Tls {
                server: "a.example:443".into(),
                failure: TlsFailure::NoCommonVersion
            }
        );
        for kind in [ErrorKind::UnexpectedEof, ErrorKind::ConnectionReset] {
            assert_eq!(
                ConnectError::from_handshake_io(&kind.into(), &target),
                ConnectError::Tls {
                    server: "a.example:443".into(),
                    failure: TlsFailure::ClosedDuringHandshake
                },
                "{kind:?}"
            );
        }
    }

    #[test]
    fn rustls_errors_become_operator_words() {
        use rustls::pki_types::{ServerName, UnixTime};
        use rustls::{AlertDescription, CertificateError, Error, PeerIncompatible};
        let cases: Vec<(Error, &str)> = vec![
            (
                CertificateError::UnknownIssuer.into(),
                "the server's certificate is issued by an unknown certificate authority; if the server uses a private CA, add that CA's certificate to `[network] extra-ca-files` in the host config",
            ),
            (
                CertificateError::ExpiredContext {
                    time: UnixTime::since_unix_epoch(Duration::from_secs(1_719_496_447)),
                    not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_609_545_600)),
                }
                .into(),
                "the server's certificate expired on 2021-01-02T00:00:00Z",
            ),
            (
                CertificateError::NotValidForNameContext {
                    expected: ServerName::try_from("127.0.0.1").unwrap(),
                    presented: vec![
                        "DnsName(\"other.example\")".into(),
                        "IpAddress(10.1.2.3)".into(),
                    ],
                }
                .into(),
                "the server's certificate is not valid for 127.0.0.1 (it names other.example, 10.1.2.3)",
            ),
            (
                PeerIncompatible::ServerDoesNotSupportTls12Or13.into(),
                "no common protocol version: the server does not offer TLS 1.2 or 1.3",
            ),
            (
                CertificateError::BadSignature.into(),
                "the server's certificate names a trusted certificate authority as its issuer, but that authority did not sign it (another CA of the same name?); if the server uses a private CA, add that CA's certificate to `[network] extra-ca-files` in the host config",
            ),
            (
                Error::AlertReceived(AlertDescription::HandshakeFailure),
                "no common cipher suite or protocol version: the server ended the handshake (this host needs TLS 1.2 or 1.3 with a current cipher suite)",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(TlsFailure::from_rustls(&err).to_string(), want, "{err:?}");
        }
    }
}
