//! `outpost doctor` and `outpost firewall-rules`, run as lab IT would: the
//! real binary against loopback servers with test CAs made here (the
//! reference cloud, rustls servers with wrong names, expired certificates,
//! an unknown issuer, a skewed clock; `openssl s_server` offering TLS 1.0
//! only), a closed port and a name under `.invalid` (RFC 6761: never
//! resolves); and the allowlist of the example config in every format.

use super::harness::env;
use outpost_cloud::{Enrollment, EnrollmentToken, RunningServer, Server, ServerConfig, TestPki};
use outpost_host::config::Config;
use outpost_host::store::Db;
use outpost_host::store::quarantine::Quarantine;
use outpost_host::store::spool::Spool;
use outpost_host::uplink::enroll::{Registration, enroll};
use serde_json::Value;
use std::ffi::OsStr;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The outcome of one `outpost` run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\nstderr: {}", self.stdout, self.stderr))
    }
}

fn outpost<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .env("OUTPOST_LOG", "error")
        // The checks connect directly; a proxy in the test's environment
        // would add a warning of its own.
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .expect("the outpost binary runs");
    Run {
        code: out.status.code().expect("exited normally"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `outpost doctor --config CONFIG --json`: exit code and report.
fn doctor(config: &Path) -> (i32, Value) {
    let run = outpost([
        "doctor".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--json".as_ref(),
    ]);
    let json = run.json();
    (run.code, json)
}

/// The finding of `check` on `subject`; panics naming what the report holds.
fn finding<'a>(report: &'a Value, subject: &str, check: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"] == subject && f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding for {subject} in {report:#}"))
}

/// Assert `check` on `subject` has `status`, its detail contains `detail`
/// and its fix contains `fix` (when given).
#[track_caller]
fn expect(
    report: &Value,
    subject: &str,
    check: &str,
    status: &str,
    detail: &str,
    fix: Option<&str>,
) {
    let f = finding(report, subject, check);
    assert_eq!(f["status"], status, "{f:#}");
    let d = f["detail"].as_str().unwrap();
    assert!(d.contains(detail), "{detail:?} not in {d:?}");
    match fix {
        Some(want) => {
            let got = f["fix"]
                .as_str()
                .unwrap_or_else(|| panic!("no fix in {f:#}"));
            assert!(got.contains(want), "{want:?} not in fix {got:?}");
        }
        None => assert!(f.get("fix").is_none(), "unexpected fix in {f:#}"),
    }
}

/// A certificate authority made for one test, and leaves it issues.
struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A date: year, month, day.
type Ymd = (i32, u8, u8);

/// A leaf: chain DER for rustls, and the PEMs for openssl.
struct Leaf {
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key_der: Vec<u8>,
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `names`, valid from `valid.0` to `valid.1` (y, m, d) or,
    /// without dates, rcgen's default (1975 to 4096).
    fn leaf(&self, names: &[&str], valid: Option<(Ymd, Ymd)>) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        if let Some(((y1, m1, d1), (y2, m2, d2))) = valid {
            params.not_before = rcgen::date_time_ymd(y1, m1, d1);
            params.not_after = rcgen::date_time_ymd(y2, m2, d2);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A loopback HTTPS server (TLS 1.2/1.3, rustls) answering every request
/// with `404` and a `Date` header `date_offset_secs` from this PC's clock.
struct TlsServer {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tls_server(leaf: &Leaf, date_offset_secs: i64) -> TlsServer {
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        leaf.chain.clone(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf.key_der.clone().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = env()
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = env().rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let now = SystemTime::now();
                let date = if date_offset_secs >= 0 {
                    now + Duration::from_secs(date_offset_secs as u64)
                } else {
                    now - Duration::from_secs(date_offset_secs.unsigned_abs())
                };
                let answer = format!(
                    "HTTP/1.1 404 Not Found\r\ndate: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    httpdate::fmt_http_date(date)
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    TlsServer { port, task }
}

/// A site: a state directory and a config uploading to `endpoint`, trusting
/// only `ca_pem`; `extra` is appended to the config.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Site {
    fn new(endpoint: &str, ca_pem: &str, extra: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
        let config = dir.path().join("outpost.toml");
        std::fs::write(
            &config,
            format!(
                "state-dir = \"state\"\n[network]\nextra-ca-files = [\"ca.pem\"]\nonly-extra-cas = true\n[uplink]\nendpoint = \"{endpoint}\"\n{extra}"
            ),
        )
        .unwrap();
        Site { dir, config }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A device identity as if enrolled with `server` (no cloud involved).
    fn enrolled_with(&self, server: &str) {
        outpost_host::uplink::identity::Identity {
            device_id: outpost_protocol::DeviceId::parse("doctor-device").unwrap(),
            key: outpost_protocol::DeviceKey::generate(),
            server: server.into(),
            enrolled_at: 0,
        }
        .save(&self.state())
        .unwrap();
    }
}

/// The reference cloud on 127.0.0.1 with its test PKI.
struct Cloud {
    server: Option<RunningServer>,
    ca_pem: String,
    url: String,
    _dir: tempfile::TempDir,
}

const CLOUD_TOKEN: &str = "doctor-tests-enrolment-token";

impl Cloud {
    fn start() -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
        let cfg = ServerConfig::new(
            dir.path().join("data"),
            "127.0.0.1:0".parse().unwrap(),
            pki.server_cert_pem.clone(),
            pki.server_key_pem.clone(),
            Enrollment::Token(EnrollmentToken::new(CLOUD_TOKEN).unwrap()),
        );
        let server = env().rt.block_on(Server::start(cfg)).unwrap();
        let url = format!("https://127.0.0.1:{}", server.addr().port());
        Cloud {
            server: Some(server),
            ca_pem: pki.ca_cert_pem.clone(),
            url,
            _dir: dir,
        }
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            env().rt.block_on(s.shutdown());
        }
    }
}

#[test]
fn doctor_passes_against_the_reference_cloud() {
    let cloud = Cloud::start();
    let site = Site::new(&cloud.url, &cloud.ca_pem, "");
    // Enrol for real, as `outpost enroll` does.
    let config = Config::load(&site.config).unwrap();
    let tls = outpost_host::agent::tls_for(&config).unwrap();
    let id = env()
        .rt
        .block_on(enroll(
            &cloud.url,
            &tls,
            &Registration {
                email: "lab.it@hospital.example".into(),
                name: "Lab IT".into(),
                instrument_model: "XN-550".into(),
                instrument_id: "HEM-01".into(),
                serial: "SN-20431".into(),
                token: Some(CLOUD_TOKEN.into()),
            },
        ))
        .unwrap();
    id.save(&site.state()).unwrap();

    let (code, report) = doctor(&site.config);
    let subject = cloud.url.trim_start_matches("https://");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["summary"]["fail"], 0, "{report:#}");
    expect(&report, subject, "dns", "ok", "an IP address", None);
    expect(
        &report,
        subject,
        "tcp",
        "ok",
        &format!("connected to {subject}"),
        None,
    );
    expect(&report, subject, "tls", "ok", "TLS 1.3 (TLS13_", None);
    let tls = &finding(&report, subject, "tls")["tls"];
    assert_eq!(tls["version"], "TLS 1.3");
    assert_eq!(
        tls["chain"][0]["names"],
        serde_json::json!(["localhost", "127.0.0.1"])
    );
    expect(
        &report,
        subject,
        "http",
        "ok",
        "answered HTTP 404 to GET /",
        None,
    );
    assert_eq!(
        finding(&report, subject, "http")["needed-by"],
        serde_json::json!(["uplink"])
    );
    expect(
        &report,
        "this PC",
        "clock",
        "ok",
        &format!("of the clock of {subject}"),
        None,
    );
    expect(
        &report,
        "this PC",
        "enrolment",
        "ok",
        &format!("with {}", cloud.url),
        None,
    );
    // The agent never ran here: no database yet, and the doctor made none.
    expect(
        &report,
        "this PC",
        "database",
        "warn",
        "no state database",
        Some("start the agent"),
    );
    assert!(!site.state().join("outpost.db").exists());
}

/// Run the doctor against `server` (trusting `ca`): exit status 1, TCP
/// fine, HTTP and clock not checked; `check` looks at the TLS finding.
fn failing_tls(server: &TlsServer, ca: &Ca, check: impl Fn(&Value, &str)) {
    let url = format!("https://127.0.0.1:{}", server.port);
    let site = Site::new(&url, &ca.pem, "");
    site.enrolled_with(&url);
    let (code, report) = doctor(&site.config);
    let subject = format!("127.0.0.1:{}", server.port);
    assert_eq!(code, 1, "{report:#}");
    check(&report, &subject);
    expect(&report, &subject, "tcp", "ok", "connected to", None);
    expect(
        &report,
        &subject,
        "http",
        "skipped",
        "not checked: the TLS handshake failed",
        None,
    );
    expect(
        &report,
        "this PC",
        "clock",
        "skipped",
        "no server answered",
        None,
    );
}

/// One bad server per case: what the report says and the fix it gives.
#[test]
fn doctor_names_each_tls_failure_and_its_fix() {
    let ca = Ca::new("doctor test CA");
    let wrong_name = tls_server(&ca.leaf(&["other.example"], None), 0);
    failing_tls(&wrong_name, &ca, |r, s| {
        expect(
            r,
            s,
            "tls",
            "fail",
            "TLS refused: the server's certificate is not valid for 127.0.0.1 (it names other.example)",
            Some(
                "a DNS entry (hosts file, local DNS override) or a proxy sends 127.0.0.1 elsewhere",
            ),
        )
    });
    let expired = tls_server(
        &ca.leaf(&["127.0.0.1"], Some(((2020, 1, 1), (2021, 1, 2)))),
        0,
    );
    failing_tls(&expired, &ca, |r, s| {
        expect(
            r,
            s,
            "tls",
            "fail",
            "the server's certificate expired on 2021-01-02T00:00:00Z; the certificate presented is for 127.0.0.1, issued by CN=doctor test CA, valid 2020-01-01T00:00:00Z to 2021-01-02T00:00:00Z",
            Some(
                "if the certificate comes from your organisation's TLS inspection (the certificate presented is issued by CN=doctor test CA), renew it there or exempt 127.0.0.1 from inspection",
            ),
        );
        let chain = &finding(r, s, "tls")["tls"]["chain"];
        assert_eq!(chain[0]["not-after"], "2021-01-02T00:00:00Z");
    });
    // A TLS-inspecting proxy's own CA, which this PC does not trust.
    let proxy_ca = Ca::new("Inspecting Proxy CA");
    let inspected = tls_server(&proxy_ca.leaf(&["127.0.0.1"], None), 0);
    failing_tls(&inspected, &ca, |r, s| {
        expect(
            r,
            s,
            "tls",
            "fail",
            "issued by an unknown certificate authority",
            Some(
                "(the certificate presented is issued by CN=Inspecting Proxy CA), exempt 127.0.0.1 from inspection (the host seals its uploads end to end anyway) or add that CA's certificate (PEM) to `[network] extra-ca-files`",
            ),
        )
    });
}

#[test]
fn doctor_in_words_for_a_closed_port_and_a_name_that_does_not_resolve() {
    let ca = Ca::new("doctor test CA");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("https://127.0.0.1:{closed}");
    let site = Site::new(&url, &ca.pem, "");
    site.enrolled_with(&url);
    let (code, report) = doctor(&site.config);
    let subject = format!("127.0.0.1:{closed}");
    assert_eq!(code, 1, "{report:#}");
    expect(
        &report,
        &subject,
        "tcp",
        "fail",
        &format!("cannot reach {subject}: connection refused"),
        Some(&format!(
            "allow outbound TCP from this PC to 127.0.0.1 port {closed} in the firewall (`outpost firewall-rules --config {}` writes every rule this PC needs)",
            site.config.display()
        )),
    );
    expect(
        &report,
        &subject,
        "tls",
        "skipped",
        "no TCP connection",
        None,
    );

    // RFC 6761: a name under .invalid never resolves.
    let site = Site::new("https://outpost-doctor-test.invalid", &ca.pem, "");
    let (code, report) = doctor(&site.config);
    let subject = "outpost-doctor-test.invalid:443";
    assert_eq!(code, 1, "{report:#}");
    expect(
        &report,
        subject,
        "dns",
        "fail",
        "cannot reach outpost-doctor-test.invalid:443: its name does not resolve",
        Some(
            "make outpost-doctor-test.invalid resolvable on this PC: check the PC's DNS server settings",
        ),
    );
    for check in ["tcp", "tls", "http"] {
        expect(
            &report,
            subject,
            check,
            "skipped",
            "the name does not resolve",
            None,
        );
    }
    expect(
        &report,
        "this PC",
        "enrolment",
        "fail",
        "this device is not enrolled",
        Some("outpost enroll"),
    );

    // The same in plain words.
    let run = outpost([
        "doctor".as_ref(),
        "--config".as_ref(),
        site.config.as_os_str(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("outpost-doctor-test.invalid:443 (needed by uplink)\n  FAIL  dns       cannot reach outpost-doctor-test.invalid:443: its name does not resolve"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("                  fix: make outpost-doctor-test.invalid resolvable"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("FAIL, "), "{}", run.stdout);
    assert!(
        run.stdout
            .trim_end()
            .ends_with("something is broken, see FAIL above (exit status 1)"),
        "{}",
        run.stdout
    );
}

#[test]
fn doctor_warns_about_a_clock_two_hours_off() {
    let ca = Ca::new("doctor test CA");
    let server = tls_server(&ca.leaf(&["127.0.0.1"], None), -2 * 3600);
    let url = format!("https://127.0.0.1:{}", server.port);
    let site = Site::new(&url, &ca.pem, "");
    site.enrolled_with(&url);
    let (code, report) = doctor(&site.config);
    let subject = format!("127.0.0.1:{}", server.port);
    expect(&report, &subject, "tls", "ok", "TLS 1.3", None);
    expect(&report, &subject, "http", "ok", "answered HTTP 404", None);
    expect(
        &report,
        "this PC",
        "clock",
        "warn",
        &format!("this PC's clock is 2 h 0 min ahead of the clock of {subject}"),
        Some("turn on time synchronisation (NTP, or the Windows Time service)"),
    );
    // A warning alone does not fail the run.
    assert_eq!(report["summary"]["fail"], 0, "{report:#}");
    assert_eq!(code, 0);
}

/// A server that offers TLS 1.0 only, as old appliances and inspecting
/// proxies do: OpenSSL's `s_server -tls1`. Skipped (saying why) where
/// `openssl` is not installed.
#[test]
fn doctor_reports_a_tls_1_0_only_server() {
    if Command::new("openssl").arg("version").output().is_err() {
        println!(
            "SKIPPED doctor_reports_a_tls_1_0_only_server: no `openssl` command on this machine (Debian package `openssl`)"
        );
        return;
    }
    let ca = Ca::new("doctor test CA");
    let leaf = ca.leaf(&["127.0.0.1"], None);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &leaf.key_pem).unwrap();
    // OpenSSL 3 allows TLS 1.0 only at security level 0. Its stdin stays
    // open (s_server ends at end of input).
    let mut child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            "127.0.0.1:0",
            "-tls1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ])
        .arg("-cert")
        .arg(dir.path().join("cert.pem"))
        .arg("-key")
        .arg(dir.path().join("key.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("ACCEPT 127.0.0.1:")
                .map(|p| p.trim().parse().unwrap())
        })
        .expect("openssl s_server prints the address it listens on");
    let url = format!("https://127.0.0.1:{port}");
    let site = Site::new(&url, &ca.pem, "");
    site.enrolled_with(&url);
    let (code, report) = doctor(&site.config);
    child.kill().unwrap();
    child.wait().unwrap();
    let subject = format!("127.0.0.1:{port}");
    assert_eq!(code, 1, "{report:#}");
    expect(
        &report,
        &subject,
        "tls",
        "fail",
        "TLS refused: no common protocol version: the server does not offer TLS 1.2 or 1.3",
        Some(
            "If a proxy or firewall between this PC and 127.0.0.1 inspects TLS, exempt 127.0.0.1 from inspection or turn on TLS 1.2 and 1.3 there",
        ),
    );
}

/// Say on the real stderr (the test harness captures `println!` of passing
/// tests) that a check was skipped, and why.
fn skipped(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {why}");
}

/// A key the tests sign modules with, and its `[[trust.keys]]` entry.
fn publisher() -> (outpost_signing::SigningKey, String) {
    let key = outpost_signing::generate_signing_key();
    let entry = format!(
        "[[trust.keys]]\nname = \"doctor-publisher\"\npublic-key = \"{}\"\n",
        outpost_signing::public_key_to_hex(&key.verifying_key())
    );
    (key, entry)
}

/// The collector component signed over a manifest asking for `endpoints`.
fn signed_collector(key: &outpost_signing::SigningKey, name: &str, endpoints: &[&str]) -> Vec<u8> {
    let list = endpoints
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let manifest = super::harness::manifest(
        name,
        "collector",
        &format!("endpoints = [{list}]"),
        super::harness::DEFAULT_LIMITS,
    );
    outpost_signing::sign::sign(&env().raw(outpost_artifacts::COLLECTOR), &manifest, &[key])
        .unwrap()
}

#[test]
fn doctor_reports_module_states_the_spool_and_wildcards() {
    let ca = Ca::new("doctor test CA");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let module_endpoint = format!("127.0.0.1:{closed}");
    let (key, trust) = publisher();
    let url = "https://outpost-doctor-cloud.invalid";
    let modules = format!(
        "[policy]\nendpoints = [\"*.vendor.example:443\", \"api.vendor.example:443\", \"{module_endpoint}\"]\n{trust}\n[[module]]\nname = \"reader\"\nfile = \"reader.wasm\"\n[[module]]\nname = \"stuck\"\nfile = \"stuck.wasm\"\n[[module]]\nname = \"missing\"\nfile = \"missing.wasm\"\n"
    );
    let site = Site::new(url, &ca.pem, &modules);
    let dir = site.dir.path();
    std::fs::write(
        dir.join("reader.wasm"),
        signed_collector(&key, "reader", &["*.vendor.example:443", &module_endpoint]),
    )
    .unwrap();
    let stuck = signed_collector(&key, "stuck", &[]);
    std::fs::write(dir.join("stuck.wasm"), &stuck).unwrap();
    site.enrolled_with(url);
    // The state of an agent that ran: `stuck` quarantined, one batch waiting
    // for two hours.
    let db = Db::open(&site.state()).unwrap();
    let stuck_sha = {
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(&stuck);
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    Quarantine::new(db.clone())
        .add("stuck", &stuck_sha, "trap: unreachable")
        .unwrap();
    Spool::new(db.clone())
        .append("reader", "qc", 1, 1 << 20, None, |_| Ok(vec![0u8; 2048]))
        .unwrap();
    let two_hours_ago = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 7200;
    let conn = rusqlite::Connection::open(site.state().join("outpost.db")).unwrap();
    conn.execute("UPDATE uplink_outbox SET created_at = ?1", [two_hours_ago])
        .unwrap();
    drop(conn);
    drop(db);

    let (code, report) = doctor(&site.config);
    assert_eq!(code, 1, "{report:#}");
    expect(
        &report,
        "module reader",
        "module",
        "ok",
        &format!(
            "version 0.1.0, collector world, signed by doctor-publisher; endpoints: *.vendor.example:443, {module_endpoint}; not quarantined"
        ),
        None,
    );
    expect(
        &report,
        "module stuck",
        "module",
        "fail",
        "after repeated failures; last failure: trap: unreachable",
        Some(&format!(
            "fix the cause, then `outpost release stuck --config {}`",
            site.config.display()
        )),
    );
    expect(
        &report,
        "module missing",
        "module",
        "fail",
        "the host refuses it: cannot read module file",
        Some(&format!(
            "install the module file at {}",
            dir.join("missing.wasm").display()
        )),
    );
    // The module's endpoints are checked too; a wildcard cannot be.
    expect(
        &report,
        "*.vendor.example:443",
        "dns",
        "skipped",
        "a DNS wildcard (any name below vendor.example) is no single name to test; names below it in this config: none",
        None,
    );
    expect(
        &report,
        &module_endpoint,
        "tcp",
        "fail",
        "connection refused",
        Some("allow outbound TCP"),
    );
    assert_eq!(
        finding(&report, &module_endpoint, "tcp")["needed-by"],
        serde_json::json!(["module reader"])
    );
    expect(
        &report,
        "this PC",
        "spool",
        "warn",
        "1 batch(es) waiting, 2 KiB of 256 MiB (0 %)",
        Some("make the uplink endpoints reachable"),
    );
    let spool = finding(&report, "this PC", "spool")["detail"]
        .as_str()
        .unwrap();
    assert!(
        spool.contains("the oldest has waited 2 h 0 min: uploads are not going through"),
        "{spool}"
    );
    expect(
        &report,
        "this PC",
        "database",
        "ok",
        "passes SQLite's integrity check",
        None,
    );
}

/// `examples/outpost.toml` with the workspace's signed modules, so that
/// every module verifies and its grant counts.
fn example_site() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        outpost_artifacts::example_config(&dir.path().join("state"), 300),
    )
    .unwrap();
    (dir, config)
}

/// `outpost firewall-rules --format FORMAT` with the config path replaced by
/// `CONFIG`; asserts exit code `code`.
fn firewall_rules(config: &Path, format: &str, extra: &[&str], code: i32) -> String {
    let mut args: Vec<&OsStr> = vec![
        "firewall-rules".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--format".as_ref(),
        format.as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let run = outpost(args);
    assert_eq!(
        run.code, code,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let shown = config.display().to_string();
    // JSON escapes the backslashes of a Windows path.
    run.stdout
        .replace(&shown.replace('\\', "\\\\"), "CONFIG")
        .replace(&shown, "CONFIG")
}

const EXAMPLE_TEXT: &str = "\
# outbound allowlist of outpost, from CONFIG (region global)
# Every connection is HTTPS (TLS over TCP) from this PC; nothing comes in.
# This PC also needs DNS (UDP and TCP port 53 to its DNS server) to find these names.
ingest.outpost-cloud.example:443    tcp  needed by uplink
ingest-2.outpost-cloud.example:443  tcp  needed by uplink
";

const EXAMPLE_JSON: &str = r#"{
  "config": "CONFIG",
  "uplink": "region global",
  "rules": [
    {
      "host": "ingest.outpost-cloud.example",
      "port": 443,
      "protocol": "tcp",
      "kind": "name",
      "needed-by": [
        "uplink"
      ]
    },
    {
      "host": "ingest-2.outpost-cloud.example",
      "port": 443,
      "protocol": "tcp",
      "kind": "name",
      "needed-by": [
        "uplink"
      ]
    }
  ],
  "not-included": []
}
"#;

const EXAMPLE_NFTABLES: &str = r#"#!/usr/sbin/nft -f
# outbound allowlist of outpost, from CONFIG (region global)
# Every connection is HTTPS (TLS over TCP) from this PC; nothing comes in.
# This PC also needs DNS (UDP and TCP port 53 to its DNS server) to find these names.
#
# nftables matches addresses, not names. Each name below has a set for its
# IPv4 and one for its IPv6 addresses, empty as written here: fill them from
# DNS after loading this file, and again regularly (addresses change).
# For example, from cron (one transaction, so no connection is dropped meanwhile):
#   { echo "flush set inet outpost outpost_1_v4"; getent ahostsv4 ingest.outpost-cloud.example | cut -d' ' -f1 | sort -u | sed 's/.*/add element inet outpost outpost_1_v4 { & }/'; } | nft -f -
# and the same for outpost_1_v6 with `getent ahostsv6` (leaving out ::ffff: addresses).
# A wildcard (*.name) cannot be looked up: fill its sets with the addresses of
# the names below it that you allow.
#
# Loading this file changes no traffic: the chain outpost_allow accepts these
# connections and nothing else, and nothing jumps to it yet. In the output
# chain of your ruleset, before its final drop, add
#   jump outpost_allow
# A jump reaches only chains of its own table: write this file with
# `outpost firewall-rules --format nftables --nft-table NAME` to add the sets
# and the chain to your table inet NAME (here: inet outpost).
table inet outpost {
	# 1: ingest.outpost-cloud.example:443, needed by uplink
	set outpost_1_v4 {
		type ipv4_addr
		flags interval
	}
	set outpost_1_v6 {
		type ipv6_addr
		flags interval
	}
	# 2: ingest-2.outpost-cloud.example:443, needed by uplink
	set outpost_2_v4 {
		type ipv4_addr
		flags interval
	}
	set outpost_2_v6 {
		type ipv6_addr
		flags interval
	}
	chain outpost_allow {
		ip daddr @outpost_1_v4 tcp dport 443 accept comment "ingest.outpost-cloud.example:443 needed by uplink"
		ip6 daddr @outpost_1_v6 tcp dport 443 accept comment "ingest.outpost-cloud.example:443 needed by uplink"
		ip daddr @outpost_2_v4 tcp dport 443 accept comment "ingest-2.outpost-cloud.example:443 needed by uplink"
		ip6 daddr @outpost_2_v6 tcp dport 443 accept comment "ingest-2.outpost-cloud.example:443 needed by uplink"
	}
}
"#;

const EXAMPLE_POWERSHELL: &str = r#"# outbound allowlist of outpost, from CONFIG (region global)
# Every connection is HTTPS (TLS over TCP) from this PC; nothing comes in.
# This PC also needs DNS (UDP and TCP port 53 to its DNS server) to find these names.
#
# Windows Defender Firewall matches addresses, not names: this script looks
# each name up now (Resolve-DnsName) and allows the addresses it gets. They can
# change: run the script again regularly (for example as a scheduled task). It
# replaces the rules it made before (group 'outpost') only once every name
# resolved. Outbound rules matter only where outbound traffic is blocked by
# default. To allow these connections to the agent alone, add
# -Program 'C:\Program Files\outpost\outpost.exe' (its real path) to each rule.
#Requires -RunAsAdministrator
$ErrorActionPreference = 'Stop'

function Resolve-OutpostName([string]$Name) {
    $addresses = @(Resolve-DnsName -Name $Name -Type A_AAAA -DnsOnly |
        Where-Object { $_.IPAddress } | ForEach-Object { $_.IPAddress } | Sort-Object -Unique)
    if ($addresses.Count -eq 0) { throw "outpost: $Name does not resolve" }
    return $addresses
}

$a1 = Resolve-OutpostName 'ingest.outpost-cloud.example'
$a2 = Resolve-OutpostName 'ingest-2.outpost-cloud.example'

Remove-NetFirewallRule -Group 'outpost' -ErrorAction SilentlyContinue
New-NetFirewallRule -Group 'outpost' -DisplayName 'outpost: ingest.outpost-cloud.example:443 (uplink)' -Direction Outbound -Action Allow -Protocol TCP -RemotePort 443 -RemoteAddress $a1 | Out-Null
New-NetFirewallRule -Group 'outpost' -DisplayName 'outpost: ingest-2.outpost-cloud.example:443 (uplink)' -Direction Outbound -Action Allow -Protocol TCP -RemotePort 443 -RemoteAddress $a2 | Out-Null

Write-Output 'outpost: 2 outbound rule(s) written (group outpost)'
"#;

#[test]
fn firewall_rules_for_the_example_config_in_every_format() {
    let (_dir, config) = example_site();
    for (format, want) in [
        ("text", EXAMPLE_TEXT),
        ("json", EXAMPLE_JSON),
        ("nftables", EXAMPLE_NFTABLES),
        ("powershell", EXAMPLE_POWERSHELL),
    ] {
        let got = firewall_rules(&config, format, &[], 0);
        assert_eq!(got, want, "--format {format}:\n{got}");
    }
    nft_check(
        "the example config",
        &firewall_rules(&config, "nftables", &[], 0),
    );
}

#[test]
fn firewall_rules_list_module_grants_wildcards_and_addresses() {
    let (key, trust) = publisher();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("reader.wasm"),
        signed_collector(
            &key,
            "reader",
            &[
                "*.vendor.example:443",
                "api.vendor.example:443",
                "10.20.30.40:8443",
                "[2001:db8::5]:443",
            ],
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("second.wasm"),
        signed_collector(&key, "second", &["api.vendor.example:443"]),
    )
    .unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        format!(
            "state-dir = \"state\"\n[uplink]\nregion = \"china\"\n[policy]\nendpoints = [\"*.vendor.example:443\", \"api.vendor.example:443\", \"10.20.30.40:8443\", \"[2001:db8::5]:443\"]\n{trust}\n[[module]]\nname = \"reader\"\nfile = \"reader.wasm\"\n[[module]]\nname = \"second\"\nfile = \"second.wasm\"\n"
        ),
    )
    .unwrap();
    let text = firewall_rules(&config, "text", &[], 0);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "ingest.outpost-cloud.example.cn:443    tcp  needed by uplink",
            "ingest-2.outpost-cloud.example.cn:443  tcp  needed by uplink",
            "*.vendor.example:443                   tcp  needed by module reader (DNS wildcard: any name below vendor.example; names below it in this config: api.vendor.example:443)",
            "api.vendor.example:443                 tcp  needed by module reader, module second",
            "10.20.30.40:8443                       tcp  needed by module reader",
            "[2001:db8::5]:443                      tcp  needed by module reader",
        ],
        "{text}"
    );
    let json: Value = serde_json::from_str(&firewall_rules(&config, "json", &[], 0)).unwrap();
    assert_eq!(json["uplink"], "region china");
    assert_eq!(json["rules"][2]["kind"], "wildcard");
    assert_eq!(
        json["rules"][2]["names-known-below"],
        serde_json::json!(["api.vendor.example:443"])
    );
    assert_eq!(json["rules"][4]["kind"], "address");
    assert_eq!(json["rules"][4]["port"], 8443);

    let nft = firewall_rules(&config, "nftables", &["--nft-table", "filter"], 0);
    for line in [
        "table inet filter {",
        "\t# 3: *.vendor.example:443, needed by module reader (DNS wildcard: any name below vendor.example; names below it in this config: api.vendor.example:443)",
        "\t\tip daddr @outpost_3_v4 tcp dport 443 accept comment \"*.vendor.example:443 needed by module reader\"",
        "\t\tip6 daddr @outpost_4_v6 tcp dport 443 accept comment \"api.vendor.example:443 needed by module reader, module second\"",
        "\t\tip daddr 10.20.30.40 tcp dport 8443 accept comment \"10.20.30.40:8443 needed by module reader\"",
        "\t\tip6 daddr 2001:db8::5 tcp dport 443 accept comment \"[2001:db8::5]:443 needed by module reader\"",
    ] {
        assert!(nft.lines().any(|l| l == line), "{line:?} not in\n{nft}");
    }
    assert!(
        !nft.contains("outpost_5_v4"),
        "an address needs no set:\n{nft}"
    );
    nft_check("module grants", &nft);

    let ps = firewall_rules(&config, "powershell", &[], 0);
    for line in [
        "$a4 = Resolve-OutpostName 'api.vendor.example'",
        "New-NetFirewallRule -Group 'outpost' -DisplayName 'outpost: 10.20.30.40:8443 (module reader)' -Direction Outbound -Action Allow -Protocol TCP -RemotePort 8443 -RemoteAddress '10.20.30.40' | Out-Null",
        "New-NetFirewallRule -Group 'outpost' -DisplayName 'outpost: [2001:db8::5]:443 (module reader)' -Direction Outbound -Action Allow -Protocol TCP -RemotePort 443 -RemoteAddress '2001:db8::5' | Out-Null",
        "# *.vendor.example:443 (needed by module reader) is a DNS wildcard, which Windows Defender Firewall",
        "Write-Output 'outpost: 5 outbound rule(s) written (group outpost)'",
    ] {
        assert!(ps.lines().any(|l| l == line), "{line:?} not in\n{ps}");
    }
    assert!(!ps.contains("Resolve-OutpostName 'vendor.example'"), "{ps}");

    // A module the host would refuse is left out, said so, and the exit
    // status says the list may be short.
    std::fs::write(dir.path().join("second.wasm"), b"not a module").unwrap();
    let text = firewall_rules(&config, "text", &[], 1);
    assert!(
        text.contains("# NOT INCLUDED: module second, which the host would refuse"),
        "{text}"
    );
    assert!(text.contains("needed by module reader\n"), "{text}");

    let run = outpost([
        "firewall-rules".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--format".as_ref(),
        "nftables".as_ref(),
        "--nft-table".as_ref(),
        "x; flush ruleset".as_ref(),
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("is not a table name"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

/// `nft -c -f` on `ruleset` where nft is installed and may talk to the
/// kernel (checked first with a ruleset known to be good); otherwise print
/// why the check was skipped.
fn nft_check(what: &str, ruleset: &str) {
    let Ok(dir) = tempfile::tempdir() else {
        panic!("no scratch directory");
    };
    let run = |text: &str| {
        let file = dir.path().join("rules.nft");
        std::fs::write(&file, text).unwrap();
        Command::new("nft").arg("-c").arg("-f").arg(&file).output()
    };
    match run("table inet outpost_probe {\n\tchain c {\n\t\ttcp dport 443 accept\n\t}\n}\n") {
        Err(e) => {
            println!(
                "SKIPPED nft -c -f of {what}: no `nft` command on this machine ({e}; Debian package `nftables`)"
            );
            return;
        }
        Ok(out) if !out.status.success() => {
            skipped(&format!(
                "nft -c -f of {what}: nft cannot check even a known-good ruleset here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return;
        }
        Ok(_) => {}
    }
    let out = run(ruleset).unwrap();
    assert!(
        out.status.success(),
        "nft -c -f refused the {what} ruleset: {}\n{ruleset}",
        String::from_utf8_lossy(&out.stderr)
    );
}
