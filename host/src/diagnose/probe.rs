//! One endpoint, step by step: DNS, TCP, TLS (version, chain, name,
//! expiry), HTTP, and the server's `Date`.
//!
//! The TLS step uses the host's own settings: [`crate::net::TLS_VERSIONS`],
//! [`crate::net::crypto_provider`] and the trust anchors of
//! [`crate::net::root_store`] from the config's `[network]`. Its verifier is
//! rustls's webpki verifier wrapped so that it also keeps a copy of the chain
//! the server presented: when verification fails, the report can say who
//! issued the certificate (a TLS-inspecting proxy shows up by name).
//! Verification itself is the webpki verifier's, unchanged.

use super::inventory::{Allowlist, Need, Part};
use super::{Finding, Status};
use crate::config::Config;
use crate::net::{ConnectError, Target, TlsFailure, format_rfc3339, restricted_block};
use outpost_signing::manifest::{EndpointPattern, HostPattern, RequestHost};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Longest wait for the resolver.
pub const DNS_TIMEOUT_MS: u64 = 5_000;
/// Longest wait for one TCP connection attempt.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Longest wait for the TLS handshake.
pub const TLS_TIMEOUT_MS: u64 = 10_000;
/// Longest wait for the answer's head to the `GET`.
pub const HTTP_TIMEOUT_MS: u64 = 10_000;
/// A certificate that expires within this many days is a warning.
pub const CERT_EXPIRY_WARN_DAYS: u64 = 14;
/// Most addresses named in a DNS finding.
const MAX_ADDRESSES_SHOWN: usize = 6;

/// The TLS session and the chain the server presented.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TlsFacts {
    /// `TLS 1.3`, `TLS 1.2` (when the handshake completed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The negotiated cipher suite (when the handshake completed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<String>,
    /// The certificates as presented, the server's own first.
    pub chain: Vec<CertFacts>,
}

/// One certificate, as far as a person checking a chain needs it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CertFacts {
    /// The subject (`CN=…, O=…`).
    pub subject: String,
    /// The issuer.
    pub issuer: String,
    /// DNS names and addresses of its subject alternative names.
    pub names: Vec<String>,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// End of validity, for computing.
    #[serde(skip)]
    pub not_after_time: SystemTime,
}

impl CertFacts {
    /// Read a DER certificate; `None` if it does not parse.
    pub fn parse(der: &[u8]) -> Option<CertFacts> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let time = |t: &x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            if secs >= 0 {
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
            } else {
                SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            }
        };
        let not_before = time(&cert.validity().not_before);
        let not_after = time(&cert.validity().not_after);
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            names.push(std::net::Ipv4Addr::from(a).to_string());
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            names.push(std::net::Ipv6Addr::from(a).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(CertFacts {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            names,
            not_before: format_rfc3339(not_before),
            not_after: format_rfc3339(not_after),
            not_after_time: not_after,
        })
    }

    /// `for a.example, b.example, issued by CN=…, valid 2026-… to 2027-…`.
    pub fn describe(&self) -> String {
        let names = if self.names.is_empty() {
            format!("for {} (no alternative names)", or_empty(&self.subject))
        } else {
            format!("for {}", self.names.join(", "))
        };
        format!(
            "{names}, issued by {}, valid {} to {}",
            or_empty(&self.issuer),
            self.not_before,
            self.not_after
        )
    }
}

fn or_empty(name: &str) -> &str {
    if name.is_empty() { "(no name)" } else { name }
}

/// The server's `Date` and this PC's clock when the answer arrived.
#[derive(Clone, Debug)]
pub struct ServerDate {
    /// The endpoint that answered.
    pub endpoint: String,
    /// Whether it is one of the vendor's uplink endpoints.
    pub uplink: bool,
    /// The server's `Date` header.
    pub server: SystemTime,
    /// This PC's clock when the answer's head arrived.
    pub local: SystemTime,
}

/// rustls's webpki verifier, keeping a copy of the chain it was shown.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.clear();
            seen.push(end_entity.clone().into_owned());
            seen.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The webpki verifier over `config`'s trust anchors, as the host's
/// [`crate::net::tls_config`] builds it.
pub fn verifier(config: &Config) -> Result<Arc<WebPkiServerVerifier>, String> {
    let pems = crate::agent::extra_ca_pems(config).map_err(|e| format!("{e:#}"))?;
    let roots = crate::net::root_store(&pems, config.network.only_extra_cas)?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::net::crypto_provider())
        .build()
        .map_err(|e| match e {
            rustls::client::VerifierBuilderError::NoRootAnchors => {
                "no trusted certificate authority: `only-extra-cas = true` and `extra-ca-files` holds no certificate".to_owned()
            }
            other => other.to_string(),
        })
}

/// Probe every endpoint of `allowlist` (at once), appending findings in the
/// allowlist's order; returns the `Date`s the servers sent.
pub async fn probe_all(
    config: &Config,
    allowlist: &Allowlist,
    findings: &mut Vec<Finding>,
) -> Vec<ServerDate> {
    let verifier = verifier(config);
    let config_path = Arc::new(config.path.display().to_string());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, need) in allowlist.needs.iter().enumerate() {
        let need = need.clone();
        let verifier = verifier.clone();
        let config_path = config_path.clone();
        let known = match &need.endpoint.host {
            HostPattern::Wildcard(_) => allowlist.known_names_under(&need.endpoint),
            _ => Vec::new(),
        };
        tasks.spawn(async move {
            let out = probe(&need, verifier, &config_path, &known).await;
            (i, out)
        });
    }
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(r) => results.push(r),
            Err(e) => findings.push(Finding::new(
                "network",
                "probe",
                Status::Fail,
                format!("an endpoint check ended abnormally: {e}"),
            )),
        }
    }
    results.sort_by_key(|(i, _)| *i);
    let mut dates = Vec::new();
    for (_, (f, date)) in results {
        findings.extend(f);
        dates.extend(date);
    }
    dates
}

/// Findings of one endpoint.
struct Steps<'a> {
    subject: String,
    needed_by: Vec<String>,
    host: String,
    port: u16,
    config_path: &'a str,
    findings: Vec<Finding>,
}

impl Steps<'_> {
    fn push(&mut self, check: &'static str, status: Status, detail: String, fix: Option<String>) {
        let mut f = Finding::new(self.subject.clone(), check, status, detail);
        f.fix = fix;
        f.needed_by = self.needed_by.clone();
        self.findings.push(f);
    }

    fn skip(&mut self, checks: &[&'static str], why: &str) {
        for c in checks {
            self.push(c, Status::Skipped, format!("not checked: {why}"), None);
        }
    }

    fn fail(&mut self, check: &'static str, e: &ConnectError, chain: Option<&[CertFacts]>) {
        let mut detail = e.to_string();
        if let Some(ee) = chain.and_then(|c| c.first()) {
            detail.push_str(&format!("; the certificate presented is {}", ee.describe()));
        }
        let fix = fix_for(e, &self.host, self.port, chain, self.config_path);
        self.push(check, Status::Fail, detail, Some(fix));
    }
}

/// Test one endpoint. A wildcard has no single name to test and is reported
/// as not checked, with the names below it that the config knows (`known`).
async fn probe(
    need: &Need,
    verifier: Result<Arc<WebPkiServerVerifier>, String>,
    config_path: &str,
    known: &[String],
) -> (Vec<Finding>, Option<ServerDate>) {
    let endpoint = &need.endpoint;
    let mut steps = Steps {
        subject: endpoint.to_string(),
        needed_by: need.needed_by.iter().map(ToString::to_string).collect(),
        host: String::new(),
        port: endpoint.port,
        config_path,
        findings: Vec::new(),
    };
    let host = match &endpoint.host {
        HostPattern::Wildcard(suffix) => {
            let names = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            steps.push(
                "dns",
                Status::Skipped,
                format!(
                    "not checked: a DNS wildcard (any name below {suffix}) is no single name to test; names below it in this config: {names}"
                ),
                None,
            );
            return (steps.findings, None);
        }
        HostPattern::Exact(name) => RequestHost::Name(name.clone()),
        HostPattern::Ip(ip) => RequestHost::Ip(*ip),
    };
    steps.host = host.to_string();
    let server = steps.subject.clone();

    // DNS
    let addrs = match &host {
        RequestHost::Ip(ip) => {
            steps.push(
                "dns",
                Status::Ok,
                "an IP address: no name to look up".into(),
                None,
            );
            vec![SocketAddr::new(*ip, endpoint.port)]
        }
        RequestHost::Name(name) => match resolve(name, endpoint.port, &server).await {
            Ok(addrs) => {
                steps.push("dns", Status::Ok, resolved_text(&addrs), None);
                if need.for_module() {
                    restricted_check(&mut steps, name, endpoint, &addrs);
                }
                addrs
            }
            Err(e) => {
                steps.fail("dns", &e, None);
                steps.skip(&["tcp", "tls", "http"], "the name does not resolve");
                return (steps.findings, None);
            }
        },
    };

    // TCP
    let tcp = match connect(&addrs, &server).await {
        Ok((tcp, addr)) => {
            let more = if addrs.len() > 1 {
                " (the first address that answered)"
            } else {
                ""
            };
            steps.push(
                "tcp",
                Status::Ok,
                format!("connected to {addr}{more}"),
                None,
            );
            tcp
        }
        Err(e) => {
            steps.fail("tcp", &e, None);
            steps.skip(&["tls", "http"], "no TCP connection");
            return (steps.findings, None);
        }
    };

    // TLS
    let verifier = match verifier {
        Ok(v) => v,
        Err(why) => {
            steps.push(
                "tls",
                Status::Fail,
                format!("cannot check TLS: {why}"),
                Some(format!(
                    "correct `[network] extra-ca-files` / `only-extra-cas` in {config_path}"
                )),
            );
            steps.skip(&["http"], "no TLS settings");
            return (steps.findings, None);
        }
    };
    let recording = Arc::new(Recording {
        inner: verifier,
        seen: Mutex::new(Vec::new()),
    });
    let tls = match handshake(&host, tcp, recording.clone(), &server).await {
        Ok(tls) => tls,
        Err(e) => {
            let chain = seen_chain(&recording);
            steps.fail("tls", &e, Some(&chain));
            steps.findings.last_mut().expect("just pushed").tls = Some(TlsFacts {
                version: None,
                cipher_suite: None,
                chain,
            });
            steps.skip(&["http"], "the TLS handshake failed");
            return (steps.findings, None);
        }
    };
    let facts = {
        let (_, conn) = tls.get_ref();
        TlsFacts {
            version: conn.protocol_version().map(version_name),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite())),
            chain: seen_chain(&recording),
        }
    };
    let (status, detail, fix) = tls_ok_text(&facts, &steps.host);
    steps.push("tls", status, detail, fix);
    steps.findings.last_mut().expect("just pushed").tls = Some(facts);

    // HTTP
    let path = need.path.as_deref().unwrap_or("/");
    let authority = if endpoint.port == 443 {
        steps.host.clone()
    } else {
        format!("{}:{}", steps.host, endpoint.port)
    };
    let date = match get(tls, &authority, path, &server).await {
        Ok((status, date, local)) => {
            let (st, fix) = if status >= 500 {
                (
                    Status::Warn,
                    Some("nothing to change on this PC: the server reported a problem of its own; if it persists, tell the vendor's support".to_owned()),
                )
            } else {
                (Status::Ok, None)
            };
            steps.push(
                "http",
                st,
                format!(
                    "the server answered HTTP {status} to GET {path} (any answer shows that HTTPS gets through)"
                ),
                fix,
            );
            date.map(|server| ServerDate {
                endpoint: steps.subject.clone(),
                uplink: need.needed_by.contains(&Part::Uplink),
                server,
                local,
            })
        }
        Err(e) => {
            steps.fail("http", &e, None);
            None
        }
    };
    (steps.findings, date)
}

fn resolved_text(addrs: &[SocketAddr]) -> String {
    let mut shown: Vec<String> = addrs
        .iter()
        .take(MAX_ADDRESSES_SHOWN)
        .map(|a| a.ip().to_string())
        .collect();
    if addrs.len() > MAX_ADDRESSES_SHOWN {
        shown.push(format!("and {} more", addrs.len() - MAX_ADDRESSES_SHOWN));
    }
    format!("resolves to {}", shown.join(", "))
}

/// A module's request to a name is refused when the name resolves to a
/// restricted address (the PC sits on a hospital LAN): say so before the
/// module finds out.
fn restricted_check(
    steps: &mut Steps<'_>,
    name: &str,
    endpoint: &EndpointPattern,
    addrs: &[SocketAddr],
) {
    let Some((addr, block)) = addrs
        .iter()
        .find_map(|a| restricted_block(a.ip()).map(|b| (a.ip(), b)))
    else {
        return;
    };
    let literal = match addr {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{}", endpoint.port),
        v4 => format!("{v4}:{}", endpoint.port),
    };
    steps.push(
        "dns",
        Status::Fail,
        format!(
            "{name} resolves to {addr}, in {} ({}): the host refuses a module's request to a name that resolves to a private, loopback or other restricted address",
            block.prefix, block.name
        ),
        Some(format!(
            "if the server really is on the local network, grant its address as a literal (`{literal}`) in the module's manifest and in `[policy] endpoints`; otherwise correct the DNS entry for {name} (a local DNS override or hosts-file entry?)"
        )),
    );
}

async fn resolve(name: &str, port: u16, server: &str) -> Result<Vec<SocketAddr>, ConnectError> {
    let dns = |reason: String| ConnectError::Dns {
        server: server.to_owned(),
        reason,
    };
    let lookup = tokio::net::lookup_host((name, port));
    match tokio::time::timeout(Duration::from_millis(DNS_TIMEOUT_MS), lookup).await {
        Err(_) => Err(dns(format!(
            "no answer from the DNS server within {} s",
            DNS_TIMEOUT_MS / 1000
        ))),
        Ok(Err(e)) => Err(dns(e.to_string())),
        Ok(Ok(found)) => {
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for a in found {
                if !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
            if addrs.is_empty() {
                Err(dns("the DNS server returned no address".into()))
            } else {
                Ok(addrs)
            }
        }
    }
}

async fn connect(
    addrs: &[SocketAddr],
    server: &str,
) -> Result<(tokio::net::TcpStream, SocketAddr), ConnectError> {
    let target = Target {
        server,
        timeout: Duration::from_millis(CONNECT_TIMEOUT_MS),
    };
    let mut first_error = None;
    for addr in addrs {
        let attempt = tokio::net::TcpStream::connect(addr);
        let e = match tokio::time::timeout(target.timeout, attempt).await {
            Ok(Ok(tcp)) => return Ok((tcp, *addr)),
            Ok(Err(e)) => ConnectError::from_connect_io(&e, &target),
            Err(_) => ConnectError::ConnectTimeout {
                server: server.to_owned(),
                after: target.timeout,
            },
        };
        first_error.get_or_insert(e);
    }
    Err(first_error.unwrap_or_else(|| ConnectError::Unreachable {
        server: server.to_owned(),
        reason: "no address to connect to".into(),
    }))
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn handshake(
    host: &RequestHost,
    tcp: tokio::net::TcpStream,
    verifier: Arc<Recording>,
    server: &str,
) -> Result<TlsStream, ConnectError> {
    let target = Target {
        server,
        timeout: Duration::from_millis(TLS_TIMEOUT_MS),
    };
    let other = |reason: String| ConnectError::Other {
        server: server.to_owned(),
        reason,
    };
    let config = rustls::ClientConfig::builder_with_provider(crate::net::crypto_provider())
        .with_protocol_versions(crate::net::TLS_VERSIONS)
        .map_err(|e| other(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = match host {
        RequestHost::Name(n) => {
            ServerName::try_from(n.clone()).map_err(|e| other(e.to_string()))?
        }
        RequestHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(target.timeout, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(ConnectError::from_handshake_io(&e, &target)),
        Err(_) => Err(ConnectError::NoAnswer {
            server: server.to_owned(),
            after: target.timeout,
        }),
    }
}

fn seen_chain(r: &Recording) -> Vec<CertFacts> {
    r.seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|c| CertFacts::parse(c))
        .collect()
}

fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".into(),
        other => format!("{other:?}"),
    }
}

/// The TLS finding of a completed handshake: a warning when the certificate
/// expires within [`CERT_EXPIRY_WARN_DAYS`].
fn tls_ok_text(facts: &TlsFacts, host: &str) -> (Status, String, Option<String>) {
    let session = format!(
        "{} ({})",
        facts.version.as_deref().unwrap_or("TLS"),
        facts
            .cipher_suite
            .as_deref()
            .unwrap_or("cipher suite unknown")
    );
    let Some(ee) = facts.chain.first() else {
        return (Status::Ok, format!("{session}; certificate verified"), None);
    };
    let left = ee
        .not_after_time
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let days = left.as_secs() / 86_400;
    let detail = format!(
        "{session}; certificate verified: {} ({days} days left)",
        ee.describe()
    );
    if days < CERT_EXPIRY_WARN_DAYS {
        (
            Status::Warn,
            detail,
            Some(format!(
                "the certificate of {host} expires in {days} days: if it is issued by your organisation (TLS inspection), renew it there; otherwise tell the vendor's support"
            )),
        )
    } else {
        (Status::Ok, detail, None)
    }
}

/// `GET path` over the TLS stream; the status, the `Date` header and this
/// PC's clock when the head arrived. The body is not read.
async fn get(
    tls: TlsStream,
    authority: &str,
    path: &str,
    server: &str,
) -> Result<(u16, Option<SystemTime>, SystemTime), ConnectError> {
    let other = |reason: String| ConnectError::Other {
        server: server.to_owned(),
        reason,
    };
    let after = Duration::from_millis(HTTP_TIMEOUT_MS);
    let no_answer = || ConnectError::NoAnswer {
        server: server.to_owned(),
        after,
    };
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(
            http::header::USER_AGENT,
            concat!("outpost-doctor/", env!("CARGO_PKG_VERSION")),
        )
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| other(e.to_string()))?;
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| other(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let answer = sender.send_request(request).await;
        let local = SystemTime::now();
        driver.abort();
        let answer = answer.map_err(|e| ConnectError::BodyBroken {
            server: server.to_owned(),
            reason: if e.is_incomplete_message() || e.is_canceled() {
                "the connection closed before an answer came".to_owned()
            } else {
                e.to_string()
            },
        })?;
        let date = answer
            .headers()
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        Ok((answer.status().as_u16(), date, local))
    };
    tokio::time::timeout(after, exchange)
        .await
        .map_err(|_| no_answer())?
}

/// What to change for `e`, in words for lab IT.
pub fn fix_for(
    e: &ConnectError,
    host: &str,
    port: u16,
    chain: Option<&[CertFacts]>,
    config_path: &str,
) -> String {
    let rules =
        format!("`outpost firewall-rules --config {config_path}` writes every rule this PC needs");
    let issuer = chain
        .and_then(|c| c.first())
        .map(|c| or_empty(&c.issuer).to_owned());
    match e {
        ConnectError::Dns { .. } => format!(
            "make {host} resolvable on this PC: check the PC's DNS server settings, and that this DNS server answers for names outside your network (lab networks often resolve only internal names: ask for {host} to be forwarded); DNS itself must be allowed from this PC to its DNS server (UDP and TCP port 53)"
        ),
        ConnectError::Refused { .. } => format!(
            "allow outbound TCP from this PC to {host} port {port} in the firewall ({rules}); a firewall that rejects and a server that is down look the same from here: if the firewall already allows it, tell the vendor's support"
        ),
        ConnectError::ConnectTimeout { .. } => format!(
            "a firewall probably drops the connection: allow outbound TCP from this PC to {host} port {port} ({rules})"
        ),
        ConnectError::Unreachable { .. } => format!(
            "this PC has no route to {host}: check its network connection and default gateway (for an IPv6 address, its IPv6 connectivity), then allow outbound TCP to {host} port {port} ({rules})"
        ),
        ConnectError::NoAnswer { .. }
        | ConnectError::BodyTimeout { .. }
        | ConnectError::BodyBroken { .. } => format!(
            "something between this PC and {host} accepts the connection but does not pass it on (a proxy or firewall that filters by name or content): allow HTTPS to {host} port {port} there"
        ),
        ConnectError::Tls { failure, .. } => {
            tls_fix(failure, host, port, issuer.as_deref(), config_path)
        }
        ConnectError::BodyTooLarge { .. } | ConnectError::Other { .. } => format!(
            "check that nothing between this PC and {host} port {port} changes the traffic; if the problem stays, tell the vendor's support and attach `outpost doctor --json`"
        ),
    }
}

fn tls_fix(
    failure: &TlsFailure,
    host: &str,
    port: u16,
    issuer: Option<&str>,
    config_path: &str,
) -> String {
    let issued_by = issuer
        .map(|i| format!(" (the certificate presented is issued by {i})"))
        .unwrap_or_default();
    match failure {
        TlsFailure::NoCommonVersion | TlsFailure::NoCommonCipher => format!(
            "the host needs TLS 1.2 or 1.3 with a current cipher suite. If a proxy or firewall between this PC and {host} inspects TLS, exempt {host} from inspection or turn on TLS 1.2 and 1.3 there; if {host} itself offers only older TLS, tell the vendor's support"
        ),
        TlsFailure::Expired { .. } => format!(
            "if the certificate comes from your organisation's TLS inspection{issued_by}, renew it there or exempt {host} from inspection; if it is the vendor's, tell the vendor's support. If the dates look wrong, check this PC's clock"
        ),
        TlsFailure::NotYetValid { .. } => "set this PC's clock right: turn on time synchronisation (NTP, or the Windows Time service) with your time server".to_owned(),
        TlsFailure::UnknownIssuer | TlsFailure::BadSignature => format!(
            "if the certificate comes from your organisation's TLS-inspecting proxy or firewall{issued_by}, exempt {host} from inspection (the host seals its uploads end to end anyway) or add that CA's certificate (PEM) to `[network] extra-ca-files` in {config_path}; otherwise something between this PC and {host} impersonates the server: tell your network team"
        ),
        TlsFailure::WrongName { presented, .. } => {
            let names = if presented.is_empty() {
                "other names".to_owned()
            } else {
                presented.join(", ")
            };
            format!(
                "{host} is answered by a server whose certificate is for {names}: a DNS entry (hosts file, local DNS override) or a proxy sends {host} elsewhere. Check what {host} resolves to on this PC, and exempt {host} port {port} from redirection and TLS inspection"
            )
        }
        TlsFailure::ClosedDuringHandshake => format!(
            "allow HTTPS to {host} port {port} in any firewall or proxy that filters by server name (SNI); if nothing filters it, tell the vendor's support"
        ),
        TlsFailure::Revoked
        | TlsFailure::BadCertificate(_)
        | TlsFailure::Alert(_)
        | TlsFailure::Other(_) => format!(
            "check that nothing between this PC and {host} port {port} intercepts TLS{issued_by}; if nothing does, tell the vendor's support and attach `outpost doctor --json`"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps() -> Steps<'static> {
        Steps {
            subject: "lab-server.example:443".into(),
            needed_by: vec!["module reader".into()],
            host: "lab-server.example".into(),
            port: 443,
            config_path: "/etc/outpost.toml",
            findings: Vec::new(),
        }
    }

    #[test]
    fn a_module_name_resolving_to_a_restricted_address_is_a_failure() {
        let endpoint = EndpointPattern::parse("lab-server.example:443").unwrap();
        let mut s = steps();
        let public: Vec<SocketAddr> = vec!["93.184.215.14:443".parse().unwrap()];
        restricted_check(&mut s, "lab-server.example", &endpoint, &public);
        assert!(s.findings.is_empty());
        let private: Vec<SocketAddr> = vec![
            "93.184.215.14:443".parse().unwrap(),
            "10.1.2.3:443".parse().unwrap(),
        ];
        restricted_check(&mut s, "lab-server.example", &endpoint, &private);
        let f = &s.findings[0];
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.detail
                .starts_with("lab-server.example resolves to 10.1.2.3, in 10.0.0.0/8"),
            "{}",
            f.detail
        );
        assert!(
            f.fix
                .as_deref()
                .unwrap()
                .contains("grant its address as a literal (`10.1.2.3:443`)"),
            "{:?}",
            f.fix
        );
    }

    fn cert(days_left: u64) -> CertFacts {
        let not_after = SystemTime::now() + Duration::from_secs(days_left * 86_400 + 3_600);
        CertFacts {
            subject: "CN=ingest.example".into(),
            issuer: "CN=Vendor CA".into(),
            names: vec!["ingest.example".into()],
            not_before: "2026-01-01T00:00:00Z".into(),
            not_after: format_rfc3339(not_after),
            not_after_time: not_after,
        }
    }

    #[test]
    fn a_certificate_close_to_expiry_is_a_warning() {
        let facts = |days| TlsFacts {
            version: Some("TLS 1.3".into()),
            cipher_suite: Some("TLS13_AES_128_GCM_SHA256".into()),
            chain: vec![cert(days)],
        };
        let (status, detail, fix) = tls_ok_text(&facts(90), "ingest.example");
        assert_eq!(status, Status::Ok);
        assert!(
            detail.starts_with("TLS 1.3 (TLS13_AES_128_GCM_SHA256); certificate verified: for ingest.example, issued by CN=Vendor CA, valid 2026-01-01T00:00:00Z to "),
            "{detail}"
        );
        assert!(detail.ends_with("(90 days left)"), "{detail}");
        assert!(fix.is_none());
        let (status, detail, fix) =
            tls_ok_text(&facts(CERT_EXPIRY_WARN_DAYS - 1), "ingest.example");
        assert_eq!(status, Status::Warn, "{detail}");
        assert!(
            fix.unwrap()
                .starts_with("the certificate of ingest.example expires in 13 days")
        );
    }

    #[test]
    fn certificates_are_read_for_people() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["a.example".to_owned(), "10.0.0.5".to_owned()])
                .unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 2);
        params.not_after = rcgen::date_time_ymd(2027, 3, 4);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "a.example");
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let c = CertFacts::parse(&der).unwrap();
        assert_eq!(c.names, ["a.example", "10.0.0.5"]);
        assert_eq!(
            c.describe(),
            "for a.example, 10.0.0.5, issued by CN=a.example, valid 2026-01-02T00:00:00Z to 2027-03-04T00:00:00Z"
        );
        assert!(CertFacts::parse(b"not a certificate").is_none());
    }
}
