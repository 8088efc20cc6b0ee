//! Upload scanning (issue #18) against a real clamd, and against fake
//! scanner peers that misbehave.

use super::*;

use std::time::Duration;

use outpost_cloud::{ClamdAddr, ClamdConfig, Scanner};
use tokio::net::TcpListener;

use super::clamd::{Clamd, SIGNATURE, eicar};

/// A batch whose event text carries the EICAR test string.
fn infected() -> BatchBody {
    let mut b = batch();
    b.records.push(Record::Event(InstrumentEvent {
        instrument: inst(),
        severity: Severity::Warning,
        code: "E-7".into(),
        text: format!("attachment: {}", eicar()),
        time: None,
    }));
    b
}

async fn start_scanning(scanner: Scanner) -> Fixture {
    start_with(|c| c.scanner = Some(scanner)).await
}

impl Fixture {
    fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// POST an envelope to ingest; status, `Retry-After`, body.
    async fn ingest(&self, env: Vec<u8>) -> (StatusCode, Option<String>, Vec<u8>) {
        let tcp = TcpStream::connect(self.addr()).await.unwrap();
        let tls = TlsConnector::from(client_config(&self.pki.ca_cert_pem, false))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (s, h, b) = send_on(
            tls,
            self.addr(),
            INGEST_PATH,
            "application/octet-stream",
            env,
        )
        .await
        .unwrap();
        let retry = h.get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        (s, retry, b)
    }
}

fn ack(s: StatusCode, b: &[u8]) -> IngestAck {
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(b));
    serde_json::from_slice(b).unwrap()
}

fn retry_later(s: StatusCode, retry: Option<String>, b: &[u8]) {
    api_error(s, b, 503, ErrorCode::Unavailable);
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!(secs >= 1);
}

/// Every file of the data directory, concatenated.
fn data_files(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            all.extend(std::fs::read(p).unwrap());
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Run the CLI; (success, stdout).
fn cli(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outpost-cloud"))
        .args(args)
        .env_remove(outpost_cloud::token::ENROLLMENT_TOKEN_ENV)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_flagged_batch_is_quarantined_acked_once_never_served_and_a_clean_one_is_stored() {
    let Some(clamd) = Clamd::start("scan: quarantine") else {
        return;
    };
    let fx = start_scanning(clamd.scanner()).await;
    let key = DeviceKey::generate();
    let dev = fx.enroll(&key).await;

    // The flagged batch: acknowledged (the device may delete it; the cloud
    // keeps it), not stored as a batch.
    let bad = seal(&key, &dev, "logs", 1, &infected()).unwrap();
    let (s, _, b) = fx.ingest(bad.clone()).await;
    let a = ack(s, &b);
    assert!(a.device_id == dev && a.sequence == 1 && !a.duplicate);
    // Sent again (a lost ack): acknowledged as a duplicate, one row.
    let (s, _, b) = fx.ingest(bad).await;
    assert!(ack(s, &b).duplicate);
    // A clean batch: stored as before.
    let (s, _, b) = fx
        .ingest(seal(&key, &dev, "qc", 2, &batch()).unwrap())
        .await;
    assert!(!ack(s, &b).duplicate);
    // Other content under the quarantined sequence: a conflict, as for a
    // stored one; and a flagged batch under a stored sequence too.
    let (s, _, b) = fx
        .ingest(seal(&key, &dev, "logs", 1, &batch()).unwrap())
        .await;
    api_error(s, &b, 409, ErrorCode::SequenceConflict);
    let (s, _, b) = fx
        .ingest(seal(&key, &dev, "qc", 2, &infected()).unwrap())
        .await;
    api_error(s, &b, 409, ErrorCode::SequenceConflict);

    let stored = fx.server.store().batches(None, None).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].sequence, &stored[0].body), (2, &batch()));
    let q = fx.server.store().quarantined(None).unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(
        (&q[0].device, q[0].stream.as_str(), q[0].sequence),
        (&dev, "logs", 1)
    );
    assert!(q[0].signature.starts_with(SIGNATURE), "{}", q[0].signature);
    assert_eq!(q[0].records, 3);
    assert_eq!(fx.counter("quarantined"), 1);
    assert_eq!(fx.counter("accepted"), 1);
    assert_eq!(fx.counter("replay"), 1);
    assert_eq!(fx.counter("sequence-conflict"), 2);
    assert_eq!(fx.counter("scanner-unavailable"), 0);
    // One alert for the operator (not for the resend), naming the device
    // and the signature.
    let alerts = fx.server.recent_alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, outpost_cloud::AlertKind::BatchQuarantined);
    assert_eq!(alerts[0].device.as_ref(), Some(&dev));
    assert!(
        alerts[0].reason.starts_with(SIGNATURE),
        "{}",
        alerts[0].reason
    );
    let data = fx.data_dir();
    fx.server.shutdown().await;

    // At rest: neither the test string nor any record text in the clear.
    let files = data_files(&data);
    for needle in [
        &b"EICAR-STANDARD"[..],
        b"X5O!P%@AP",
        RECORD_TEXT.as_bytes(),
        b"attachment:",
    ] {
        assert!(
            !contains(&files, needle),
            "{:?} at rest",
            String::from_utf8_lossy(needle)
        );
    }

    // The CLI: `quarantine` lists it without content, `batches` does not.
    let d = data.as_os_str();
    let os = std::ffi::OsStr::new;
    let (ok, out, err) = cli(&[os("quarantine"), os("--data"), d, os("--json")]);
    assert!(ok, "{err}");
    let listed: Vec<outpost_cloud::QuarantineEntry> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed, q);
    assert!(
        !out.contains("EICAR") && !out.contains(RECORD_TEXT),
        "{out}"
    );
    let (ok, out, err) = cli(&[os("quarantine"), os("--data"), d]);
    assert!(
        ok && out.contains(SIGNATURE) && out.contains(dev.as_str()),
        "{out}{err}"
    );
    let (ok, out, err) = cli(&[os("batches"), os("--data"), d, os("--json")]);
    assert!(ok, "{err}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["sequence"], 2);
    let (ok, out, _) = cli(&[os("stats"), os("--data"), d, os("--json")]);
    assert!(ok);
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["quarantined"], 1);
    drop(clamd);
}

#[tokio::test]
async fn scanner_down_means_retry_later_nothing_stored_and_the_same_envelope_is_stored_once_it_is_back()
 {
    let Some(mut clamd) = Clamd::start("scan: scanner down") else {
        return;
    };
    let fx = start_scanning(clamd.scanner()).await;
    let key = DeviceKey::generate();
    let dev = fx.enroll(&key).await;
    let env = seal(&key, &dev, "qc", 7, &batch()).unwrap();
    let bad = seal(&key, &dev, "logs", 8, &infected()).unwrap();

    clamd.stop();
    for e in [&env, &bad] {
        let (s, retry, b) = fx.ingest(e.clone()).await;
        retry_later(s, retry, &b);
    }
    assert!(fx.server.store().batches(None, None).unwrap().is_empty());
    assert!(fx.server.store().quarantined(None).unwrap().is_empty());
    assert_eq!(fx.counter("scanner-unavailable"), 2);
    assert_eq!(fx.counter("accepted"), 0);

    clamd.restart();
    let (s, _, b) = fx.ingest(env).await;
    assert!(!ack(s, &b).duplicate);
    let (s, _, b) = fx.ingest(bad).await;
    assert!(!ack(s, &b).duplicate);
    let stored = fx.server.store().batches(None, None).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].sequence, &stored[0].body), (7, &batch()));
    assert_eq!(fx.server.store().quarantined(None).unwrap().len(), 1);
    assert_eq!(fx.counter("accepted"), 1);
    assert_eq!(fx.counter("quarantined"), 1);
    assert_eq!(fx.counter("scanner-unavailable"), 2);
    fx.server.shutdown().await;
}

/// A fake scanner on 127.0.0.1 doing `act` with each connection.
async fn fake_peer(
    act: fn(TcpStream) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(act(s));
        }
    });
    addr
}

#[tokio::test]
async fn a_scanner_that_stalls_closes_early_or_answers_garbage_means_retry_later() {
    let stall = fake_peer(|mut s| {
        Box::pin(async move {
            let mut buf = [0u8; 4096];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            // Read everything, never answer; the scanner's deadline ends it.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        })
    })
    .await;
    let closes = fake_peer(|s| Box::pin(async move { drop(s) })).await;
    let garbage = fake_peer(|mut s| {
        Box::pin(async move {
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n\0").await;
        })
    })
    .await;
    let unused = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    for (name, addr) in [
        ("stall", stall),
        ("closes", closes),
        ("garbage", garbage),
        ("refused", unused),
    ] {
        let scanner = Scanner::Clamd(ClamdConfig {
            reply_timeout: Duration::from_millis(300),
            ..ClamdConfig::new(ClamdAddr::Tcp(addr))
        });
        let fx = start_scanning(scanner).await;
        let key = DeviceKey::generate();
        let dev = fx.enroll(&key).await;
        for seq in 1..=2 {
            let (s, retry, b) = fx
                .ingest(seal(&key, &dev, "qc", seq, &batch()).unwrap())
                .await;
            assert_eq!(s.as_u16(), 503, "{name}: {}", String::from_utf8_lossy(&b));
            retry_later(s, retry, &b);
        }
        assert!(
            fx.server.store().batches(None, None).unwrap().is_empty(),
            "{name}"
        );
        assert!(
            fx.server.store().quarantined(None).unwrap().is_empty(),
            "{name}"
        );
        assert_eq!(fx.counter("scanner-unavailable"), 2, "{name}");
        fx.server.shutdown().await;
    }
}

#[test]
fn serve_needs_a_scanner_or_says_it_runs_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    TestPki::generate(&["localhost"])
        .unwrap()
        .write(&pki_dir)
        .unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let (data, cert, key) = (
        dir.path().join("data"),
        pki_dir.join("server.pem"),
        pki_dir.join("server.key.pem"),
    );
    let os = std::ffi::OsStr::new;
    let base = [
        os("serve"),
        os("--data"),
        data.as_os_str(),
        os("--listen"),
        os("127.0.0.1:0"),
        os("--cert"),
        cert.as_os_str(),
        os("--key"),
        key.as_os_str(),
        os("--enrollment-token-file"),
        token.as_os_str(),
    ];
    let run = |extra: &[&std::ffi::OsStr]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        cli(&args)
    };
    let (ok, _, err) = run(&[]);
    assert!(
        !ok && err.contains("no upload scanner")
            && err.contains("--clamd-addr")
            && err.contains("--dangerous-no-scanner"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        os("--clamd-addr"),
        os("127.0.0.1:3310"),
        os("--dangerous-no-scanner"),
    ]);
    assert!(!ok && err.contains("contradicts"), "{err}");
    let (ok, _, err) = run(&[
        os("--clamd-addr"),
        os("127.0.0.1:3310"),
        os("--clamd-socket"),
        os("/nonexistent/clamd.ctl"),
    ]);
    assert!(!ok && err.contains("both given"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_local_socket_reaches_clamd_too() {
    let Some(clamd) = Clamd::start("scan: local socket") else {
        return;
    };
    let scanner = clamd.socket_scanner();
    scanner.ping().await.unwrap();
    let plain = serde_json::to_vec(&infected()).unwrap();
    match scanner.scan(&plain).await.unwrap() {
        outpost_cloud::Verdict::Infected { signature } => {
            assert!(signature.starts_with(SIGNATURE), "{signature}")
        }
        v => panic!("{v:?}\n{}", clamd.log()),
    }
    let clean = serde_json::to_vec(&batch()).unwrap();
    assert_eq!(
        scanner.scan(&clean).await.unwrap(),
        outpost_cloud::Verdict::Clean
    );
    drop(clamd);
}
