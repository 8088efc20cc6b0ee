//! What a hostile client may cost the cloud (issue #20): slow and silent
//! connections, connection floods, enrolment-token guessing; enrolment
//! tokens by default; realistic test-PKI lifetimes.

use super::*;

use std::ffi::OsString;
use std::io::{BufRead, Read};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use outpost_cloud::{ConnectionLimits, EnrollGuessLimit};
use tokio::io::AsyncRead;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;

/// Longest a test waits for something that should happen within a few
/// seconds; reaching it fails the test.
pub(super) const GUARD: Duration = Duration::from_secs(30);
/// A body that is declared but never (fully) sent.
const DECLARED_BODY_BYTES: usize = 100_000;

const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));

/// Wait for `cond`, checking every 20 ms, for at most [`GUARD`].
pub(super) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < GUARD, "not within {GUARD:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP connection from `source` (an address of 127.0.0.0/8).
pub(super) async fn connect_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source, 0))?;
    sock.connect(addr).await
}

/// A TLS connection from `source`, trusting `ca`.
pub(super) async fn tls_from(
    ca: &str,
    source: IpAddr,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = connect_from(source, addr).await?;
    TlsConnector::from(client_config(ca, false))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A request head declaring a [`DECLARED_BODY_BYTES`] body and the first
/// four bytes of it, then nothing: the slow-body attack.
pub(super) async fn slow_body(
    ca: &str,
    source: IpAddr,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut tls = tls_from(ca, source, addr).await?;
    let head = format!(
        "POST {INGEST_PATH} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/octet-stream\r\ncontent-length: {DECLARED_BODY_BYTES}\r\n\r\nOPE1"
    );
    tls.write_all(head.as_bytes()).await?;
    tls.flush().await?;
    Ok(tls)
}

/// Read until the server closes the connection (EOF or an error); what was
/// read. Fails the test if that takes longer than [`GUARD`].
pub(super) async fn read_until_closed(what: &str, mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(GUARD, read)
        .await
        .unwrap_or_else(|_| panic!("{what}: the server kept the connection open"));
    got
}

pub(super) fn enroll_body(key: &DeviceKey, token: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&EnrollRequest {
        email: EMAIL.into(),
        name: NAME.into(),
        instrument_model: MODEL.into(),
        instrument_id: INSTRUMENT_ID.into(),
        serial: SERIAL.into(),
        device_key: key.to_hex(),
        enrollment_token: token.map(str::to_owned),
    })
    .unwrap()
}

/// A device at `source` enrols (with the test token) and delivers a batch,
/// each on a connection of its own; an error names the step that failed.
async fn device_enrols_and_ingests(fx: &Fixture, source: IpAddr) -> Result<DeviceId, String> {
    let ca = &fx.pki.ca_cert_pem;
    let key = DeviceKey::generate();
    let tls = tls_from(ca, source, fx.addr())
        .await
        .map_err(|e| format!("enrol: connect: {e}"))?;
    let (s, _, b) = send_on(
        tls,
        fx.addr(),
        ENROLL_PATH,
        "application/json",
        enroll_body(&key, Some(TOKEN)),
    )
    .await
    .map_err(|e| format!("enrol: {e}"))?;
    if s != StatusCode::OK {
        return Err(format!("enrol: HTTP {s}"));
    }
    let dev = serde_json::from_slice::<EnrollResponse>(&b)
        .unwrap()
        .device_id;
    let tls = tls_from(ca, source, fx.addr())
        .await
        .map_err(|e| format!("ingest: connect: {e}"))?;
    let env = seal(&key, &dev, "qc", 1, &batch()).unwrap();
    let (s, _, b) = send_on(tls, fx.addr(), INGEST_PATH, "application/octet-stream", env)
        .await
        .map_err(|e| format!("ingest: {e}"))?;
    if s != StatusCode::OK {
        return Err(format!("ingest: HTTP {s}"));
    }
    let ack: IngestAck = serde_json::from_slice(&b).unwrap();
    assert_eq!(ack.device_id, dev);
    Ok(dev)
}

fn short_timeouts(secs: u64) -> ConnectionLimits {
    ConnectionLimits {
        handshake_timeout: Duration::from_secs(secs),
        header_timeout: Duration::from_secs(secs),
        body_timeout: Duration::from_secs(secs),
        body_min_bytes_per_sec: 1024,
        body_max_time: Duration::from_secs(secs.max(20)),
        ..ConnectionLimits::default()
    }
}

#[tokio::test]
async fn slow_bodies_and_silent_connections_are_closed_by_the_timeouts() {
    let fx = start_with(|c| c.limits = short_timeouts(2)).await;
    let (ca, addr) = (fx.pki.ca_cert_pem.clone(), fx.addr());
    // A TCP connection that never starts TLS.
    let silent_tcp = connect_from(ATTACKER, addr).await.unwrap();
    // TLS, then no request head.
    let silent_tls = tls_from(&ca, ATTACKER, addr).await.unwrap();
    // A head and 4 bytes of a 100 000-byte body, then nothing.
    let stalled = slow_body(&ca, ATTACKER, addr).await.unwrap();
    // The same, then one byte every 100 ms: never idle for long, so a
    // per-read idle timeout would keep it for ever; far below the minimum
    // rate of 1 KiB/s.
    let trickle = slow_body(&ca, ATTACKER, addr).await.unwrap();
    let (trickle_r, mut trickle_w) = tokio::io::split(trickle);
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if trickle_w.write_all(b"x").await.is_err() || trickle_w.flush().await.is_err() {
                break;
            }
        }
    });

    assert!(read_until_closed("silent TCP", silent_tcp).await.is_empty());
    read_until_closed("silent TLS", silent_tls).await;
    for (what, got) in [
        (
            "stalled body",
            read_until_closed("stalled body", stalled).await,
        ),
        (
            "trickled body",
            read_until_closed("trickled body", trickle_r).await,
        ),
    ] {
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 408") && text.contains("request-timeout"),
            "{what}: {text}"
        );
    }
    writer.abort();
    eventually("four slow clients counted", || {
        fx.counter("slow-client") == 4
    })
    .await;
    eventually("all connections closed", || {
        fx.server.open_connections() == 0
    })
    .await;
    // Nothing was stored, and a device is served as before.
    assert!(fx.server.store().batches(None, None).unwrap().is_empty());
    device_enrols_and_ingests(&fx, ATTACKER).await.unwrap();
    fx.server.shutdown().await;
}

// A second loopback address for the legitimate device: Linux and Windows
// route all of 127.0.0.0/8 to the loopback interface (macOS only 127.0.0.1).
#[cfg(any(target_os = "linux", target_os = "windows"))]
const DEVICE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

#[cfg(any(target_os = "linux", target_os = "windows"))]
#[tokio::test]
async fn three_hundred_slow_connections_do_not_lock_out_a_device() {
    const ATTACK: usize = 300;
    let fx = start_with(|c| {
        c.limits = ConnectionLimits {
            max_connections: 64,
            max_connections_per_address: 16,
            ..short_timeouts(3)
        }
    })
    .await;
    let (ca, addr) = (fx.pki.ca_cert_pem.clone(), fx.addr());
    // 300 slow-body connections at once from one address.
    let mut attack = JoinSet::new();
    for _ in 0..ATTACK {
        let ca = ca.clone();
        attack.spawn(async move { slow_body(&ca, ATTACKER, addr).await.ok() });
    }
    let mut held = Vec::new();
    while let Some(r) = attack.join_next().await {
        held.extend(r.unwrap());
    }
    assert!(held.len() < ATTACK, "the per-address cap admitted all");
    // A device at another address enrols and delivers while the attack
    // goes on (each attacker connection it holds lasts the body timeout).
    let device = tokio::time::timeout(GUARD, device_enrols_and_ingests(&fx, DEVICE))
        .await
        .expect("the device was served within the guard");
    let dev = device.unwrap();
    assert_eq!(
        fx.server.store().batches(Some(&dev), None).unwrap().len(),
        1
    );
    // Every held attacker connection is closed by the body timeout.
    for (i, s) in held.into_iter().enumerate() {
        read_until_closed(&format!("attacker connection {i}"), s).await;
    }
    // Each attacker connection was refused at once by the address cap or
    // admitted and then timed out: counted once either way.
    eventually("every attacker connection counted once", || {
        fx.counter("address-cap") + fx.counter("slow-client") == ATTACK as u64
    })
    .await;
    assert!(fx.counter("address-cap") > 0);
    assert!(fx.counter("slow-client") >= 16);
    assert_eq!(fx.counter("connection-cap"), 0);
    eventually("all connections closed", || {
        fx.server.open_connections() == 0
    })
    .await;
    fx.server.shutdown().await;
}

#[cfg(any(target_os = "linux", target_os = "windows"))]
#[tokio::test]
async fn connections_beyond_the_caps_are_closed_at_once() {
    // Timeouts far beyond the guard: anything closed within the guard was
    // closed by a cap, not by a timeout.
    let fx = start_with(|c| {
        c.limits = ConnectionLimits {
            max_connections: 8,
            max_connections_per_address: 4,
            ..short_timeouts(120)
        }
    })
    .await;
    let (ca, addr) = (fx.pki.ca_cert_pem.clone(), fx.addr());
    let other = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(slow_body(&ca, ATTACKER, addr).await.unwrap());
    }
    // A fifth connection from the same address is closed at once.
    let fifth = tokio::time::timeout(GUARD, slow_body(&ca, ATTACKER, addr)).await;
    assert!(matches!(fifth, Ok(Err(_))), "fifth connection was admitted");
    eventually("address-cap counted", || fx.counter("address-cap") == 1).await;
    // The device at another address is served meanwhile.
    device_enrols_and_ingests(&fx, DEVICE).await.unwrap();
    eventually("the device's connections closed", || {
        fx.server.open_connections() == 4
    })
    .await;
    // Four more from a second address fill the global cap ...
    for _ in 0..4 {
        held.push(slow_body(&ca, DEVICE, addr).await.unwrap());
    }
    assert_eq!(fx.server.open_connections(), 8);
    // ... so a third address is closed at once.
    let third = tokio::time::timeout(GUARD, slow_body(&ca, other, addr)).await;
    assert!(
        matches!(third, Ok(Err(_))),
        "connection beyond the global cap"
    );
    eventually("connection-cap counted", || {
        fx.counter("connection-cap") == 1
    })
    .await;
    // A place freed is a place taken: the third address gets in once one
    // held connection is gone.
    drop(held.pop());
    let start = Instant::now();
    let mut refused = 0;
    let admitted = loop {
        match slow_body(&ca, other, addr).await {
            Ok(s) => break s,
            Err(_) => refused += 1,
        }
        assert!(start.elapsed() < GUARD, "the freed place was not reused");
    };
    eventually("refusals counted", || {
        fx.counter("connection-cap") == 1 + refused
    })
    .await;
    assert_eq!(fx.counter("address-cap"), 1);
    assert_eq!(fx.counter("slow-client"), 0);
    drop(admitted);
    drop(held);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn wrong_tokens_lock_the_address_out_with_a_growing_retry_after() {
    let fx = start_with(|c| {
        c.enroll_guesses = EnrollGuessLimit {
            wrong_before_lockout: 3,
            lockout: Duration::from_secs(1),
            max_lockout: Duration::from_secs(60),
            forget_after: Duration::from_secs(3600),
        }
    })
    .await;
    let key = DeviceKey::generate();
    let guess = "guessed-token-000000000";
    for _ in 0..3 {
        let (s, b) = fx.enroll_with(&key, Some(guess)).await;
        api_error(s, &b, 401, ErrorCode::UnauthorizedEnrollment);
    }
    let post = |token: &'static str| {
        let (ca, addr, body) = (
            fx.pki.ca_cert_pem.clone(),
            fx.addr(),
            enroll_body(&key, Some(token)),
        );
        async move {
            let tls = tls_from(&ca, ATTACKER, addr).await.unwrap();
            send_on(tls, addr, ENROLL_PATH, "application/json", body)
                .await
                .unwrap()
        }
    };
    let retry_after = |h: &hyper::HeaderMap| -> u64 {
        h.get("retry-after")
            .expect("Retry-After")
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    // Locked out: even the right token is refused, without being looked at.
    let (s, h, b) = post(TOKEN).await;
    api_error(s, &b, 429, ErrorCode::RateLimited);
    assert_eq!(retry_after(&h), 1);
    assert_eq!(fx.counter("enrollment-rate-limited"), 1);
    assert_eq!(fx.counter("unauthorized-enrollment"), 3);
    assert!(fx.server.store().devices().unwrap().is_empty());
    // As a client honouring Retry-After would: wait, guess again, and the
    // next lock-out is twice as long.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (s, _, b) = post(guess).await;
    api_error(s, &b, 401, ErrorCode::UnauthorizedEnrollment);
    let (s, h, b) = post(TOKEN).await;
    api_error(s, &b, 429, ErrorCode::RateLimited);
    assert_eq!(retry_after(&h), 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // After it, the right token enrols and clears the address's record.
    let (s, _, b) = post(TOKEN).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (s, _, b) = post(guess).await;
    api_error(s, &b, 401, ErrorCode::UnauthorizedEnrollment);
    let (s, _, b) = post(guess).await;
    api_error(s, &b, 401, ErrorCode::UnauthorizedEnrollment);
    assert_eq!(fx.counter("enrollment-rate-limited"), 2);
    assert_eq!(fx.counter("unauthorized-enrollment"), 6);
    assert_eq!(fx.server.store().devices().unwrap().len(), 1);
    // The refusals reach the store for `outpost-cloud stats`.
    let store = fx.server.store().clone();
    fx.server.shutdown().await;
    assert_eq!(store.counters().unwrap()["enrollment-rate-limited"], 2);
}

#[tokio::test]
async fn anonymous_enrollment_only_when_asked_for_by_name() {
    let fx = start_with(|c| c.enrollment = Enrollment::DangerousAnonymous).await;
    let (s, b) = fx.enroll_with(&DeviceKey::generate(), None).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    // No lock-out without a token to guess.
    for _ in 0..8 {
        let (s, _) = fx.enroll_with(&DeviceKey::generate(), Some("x")).await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(fx.counter("enrollment-rate-limited"), 0);
}

/// Run `outpost-cloud` with `args` (and the token variable set to `env`, or
/// unset) until it exits; its status and stderr. Fails the test if it does
/// not exit within [`GUARD`] (a server that started when it should not).
fn run_cloud(args: &[OsString], env: Option<&str>) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_outpost-cloud"));
    cmd.args(args)
        .env_remove(outpost_cloud::token::ENROLLMENT_TOKEN_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(v) = env {
        cmd.env(outpost_cloud::token::ENROLLMENT_TOKEN_ENV, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    match rx.recv_timeout(GUARD) {
        Ok(err) => (child.wait().unwrap().success(), err),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("outpost-cloud {args:?} did not exit");
        }
    }
}

/// A running `outpost-cloud serve`, killed on drop.
struct ServeProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ServeProcess {
    fn start(args: &[OsString], env: Option<&str>) -> ServeProcess {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_outpost-cloud"));
        cmd.args(args)
            .env_remove(outpost_cloud::token::ENROLLMENT_TOKEN_ENV)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if let Some(v) = env {
            cmd.env(outpost_cloud::token::ENROLLMENT_TOKEN_ENV, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(GUARD) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("outpost-cloud serve did not say where it listens");
            }
        };
        let Some(addr) = line.trim().strip_prefix("listening on https://") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("outpost-cloud serve: {line:?}");
        };
        ServeProcess {
            addr: addr.parse().unwrap(),
            child,
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn serve_needs_a_token_from_a_file_or_the_environment_never_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    pki.write(&pki_dir).unwrap();
    let data = dir.path().join("data");
    let base: Vec<OsString> = vec![
        "serve".into(),
        "--data".into(),
        data.clone().into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--cert".into(),
        pki_dir.join("server.pem").into(),
        "--key".into(),
        pki_dir.join("server.key.pem").into(),
        // Upload scanning is tested in api/scan.rs.
        "--dangerous-no-scanner".into(),
    ];
    let with = |extra: &[&std::ffi::OsStr]| -> Vec<OsString> {
        let mut v = base.clone();
        v.extend(extra.iter().map(|s| s.to_os_string()));
        v
    };
    let os = std::ffi::OsStr::new;

    // No token at all: refuses to start, and says how to give one.
    let (ok, err) = run_cloud(&with(&[]), None);
    assert!(!ok);
    assert!(
        err.contains("no enrolment token")
            && err.contains("--enrollment-token-file")
            && err.contains("OUTPOST_CLOUD_ENROLLMENT_TOKEN")
            && err.contains("--dangerous-allow-anonymous-enrollment"),
        "{err}"
    );
    // A token on the command line is refused, naming why.
    let (ok, err) = run_cloud(&with(&[os("--enrollment-token"), os(TOKEN)]), None);
    assert!(!ok);
    assert!(
        err.contains("process list") && !err.contains(TOKEN),
        "{err}"
    );

    // `new-token` writes a random token to a new file, never over one.
    let token_file = dir.path().join("token");
    let new_token: Vec<OsString> = vec![
        "new-token".into(),
        "--out".into(),
        token_file.clone().into(),
    ];
    let (ok, err) = run_cloud(&new_token, None);
    assert!(ok, "{err}");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim().to_owned();
    assert_eq!(token.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (ok, _) = run_cloud(&new_token, None);
    assert!(!ok, "new-token overwrote a file");
    let file_args = with(&[os("--enrollment-token-file"), token_file.as_os_str()]);

    // Contradictions and bad tokens are refused before anything starts.
    let (ok, err) = run_cloud(&file_args, Some(TOKEN));
    assert!(!ok && err.contains("given twice"), "{err}");
    let mut anon_and_file = file_args.clone();
    anon_and_file.push("--dangerous-allow-anonymous-enrollment".into());
    let (ok, err) = run_cloud(&anon_and_file, None);
    assert!(!ok && err.contains("contradicts"), "{err}");
    let (ok, err) = run_cloud(&with(&[]), Some("short"));
    assert!(!ok && err.contains("at least 16"), "{err}");
    let short_file = dir.path().join("short-token");
    std::fs::write(&short_file, "abc\n").unwrap();
    let short_args = with(&[os("--enrollment-token-file"), short_file.as_os_str()]);
    let (ok, err) = run_cloud(&short_args, None);
    assert!(!ok && err.contains("at least 16"), "{err}");

    // From the file: the right token enrols, a wrong one does not.
    let key = DeviceKey::generate();
    {
        let server = ServeProcess::start(&file_args, None);
        let post = |t: &str| {
            post_with(
                &pki.ca_cert_pem,
                server.addr,
                ENROLL_PATH,
                "application/json",
                enroll_body(&key, Some(t)),
                false,
            )
        };
        let (s, b, _) = post(TOKEN).await;
        api_error(s, &b, 401, ErrorCode::UnauthorizedEnrollment);
        let (s, b, _) = post(&token).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    }
    // From the environment.
    {
        let server = ServeProcess::start(&with(&[]), Some(TOKEN));
        let (s, b, _) = post_with(
            &pki.ca_cert_pem,
            server.addr,
            ENROLL_PATH,
            "application/json",
            enroll_body(&DeviceKey::generate(), Some(TOKEN)),
            false,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    }
    // Anonymous, when asked for by name.
    {
        let server =
            ServeProcess::start(&with(&[os("--dangerous-allow-anonymous-enrollment")]), None);
        let (s, b, _) = post_with(
            &pki.ca_cert_pem,
            server.addr,
            ENROLL_PATH,
            "application/json",
            enroll_body(&DeviceKey::generate(), None),
            false,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    }
}

/// Seconds of the validity window of each certificate in `pem`.
fn validity(pem: &str) -> (i64, i64) {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    )
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The test PKI's windows: made between `made_from` and `made_to` (unix
/// seconds), both certificates start an hour before, the CA lasts a year,
/// the server certificate 90 days (≤ 397) inside the CA's window.
fn check_lifetimes(pki: &TestPki, made_from: i64, made_to: i64) {
    use outpost_cloud::pki::{CA_VALIDITY_DAYS, NOT_BEFORE_SKEW_SECS, SERVER_CERT_VALIDITY_DAYS};
    const DAY: i64 = 86_400;
    let (ca_from, ca_to) = validity(&pki.ca_cert_pem);
    let (leaf_from, leaf_to) = validity(&pki.server_cert_pem);
    for from in [ca_from, leaf_from] {
        assert!(
            (made_from - NOT_BEFORE_SKEW_SECS..=made_to - NOT_BEFORE_SKEW_SECS).contains(&from),
            "not-before {from} is not an hour before {made_from}..={made_to}"
        );
    }
    assert_eq!(CA_VALIDITY_DAYS, 365);
    assert_eq!(SERVER_CERT_VALIDITY_DAYS, 90);
    assert_eq!(ca_to - ca_from, 365 * DAY + NOT_BEFORE_SKEW_SECS);
    assert_eq!(leaf_to - leaf_from, 90 * DAY + NOT_BEFORE_SKEW_SECS);
    assert!(leaf_to - leaf_from <= 397 * DAY);
    assert!(ca_from <= leaf_from && leaf_to <= ca_to);
}

#[test]
fn test_pki_certificates_have_realistic_lifetimes() {
    let before = unix_now();
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    check_lifetimes(&pki, before, unix_now());

    // The same for what `outpost-cloud test-pki` writes.
    let dir = tempfile::tempdir().unwrap();
    let before = unix_now();
    let (ok, err) = run_cloud(
        &["test-pki".into(), "--out".into(), dir.path().into()],
        None,
    );
    assert!(ok, "{err}");
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    let written = TestPki {
        ca_cert_pem: read("ca.pem"),
        server_cert_pem: read("server.pem"),
        server_key_pem: read("server.key.pem"),
    };
    check_lifetimes(&written, before, unix_now());
}
