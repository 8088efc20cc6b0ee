//! End-to-end tests of the reference cloud over real TLS on 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use outpost_cloud::{Enrollment, EnrollmentToken, RunningServer, Server, ServerConfig, TestPki};
use outpost_protocol::*;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[path = "api/clamd.rs"]
mod clamd;
#[path = "api/hardening.rs"]
mod hardening;
#[path = "api/scan.rs"]
mod scan;

#[path = "api/defence.rs"]
mod defence;
#[cfg(unix)]
#[path = "api/pg.rs"]
mod pg;
#[cfg(unix)]
#[path = "api/postgres.rs"]
mod postgres;
#[path = "api/staff.rs"]
mod staff;

const EMAIL: &str = "greta.hansen@example-hospital.org";
const NAME: &str = "Greta Hansen-Lindqvist";
const MODEL: &str = "XN-550-Hematology";
const INSTRUMENT_ID: &str = "HEMA-ROOM-7-LEFT";
const SERIAL: &str = "SN-77889900-Q";
const RECORD_TEXT: &str = "aspiration pressure out of range at probe two";
const ANALYTE: &str = "HbA1c-control-analyte";
const LOT: &str = "LOT-2024-998877";
/// The enrolment token of the test servers.
const TOKEN: &str = "test-enrolment-token-3f9a1c";

struct Fixture {
    pki: TestPki,
    server: RunningServer,
    _dir: tempfile::TempDir,
}

fn config(pki: &TestPki, dir: &Path) -> ServerConfig {
    ServerConfig::new(
        dir.to_path_buf(),
        "127.0.0.1:0".parse().unwrap(),
        pki.server_cert_pem.clone(),
        pki.server_key_pem.clone(),
        Enrollment::Token(EnrollmentToken::new(TOKEN).unwrap()),
    )
}

async fn start_with(f: impl FnOnce(&mut ServerConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    let mut cfg = config(&pki, &dir.path().join("data"));
    f(&mut cfg);
    let server = Server::start(cfg).await.unwrap();
    Fixture {
        pki,
        server,
        _dir: dir,
    }
}

async fn start() -> Fixture {
    start_with(|_| {}).await
}

fn client_config(ca_pem: &str, tls12_only: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// POST over a fresh TLS connection; returns status, body and the negotiated
/// TLS version.
async fn post_with(
    ca_pem: &str,
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    tls12_only: bool,
) -> (StatusCode, Vec<u8>, Option<rustls::ProtocolVersion>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = TlsConnector::from(client_config(ca_pem, tls12_only));
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let version = tls.get_ref().1.protocol_version();
    let (status, _, body) = send_on(tls, addr, path, content_type, body).await.unwrap();
    (status, body, version)
}

/// One POST on an established TLS connection; status, headers and body.
async fn send_on(
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, hyper::HeaderMap, Vec<u8>), hyper::Error> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(path)
        .header("host", format!("localhost:{}", addr.port()))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, headers, body))
}

impl Fixture {
    fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let ct = if path == ENROLL_PATH {
            "application/json"
        } else {
            "application/octet-stream"
        };
        let (s, b, _) = post_with(&self.pki.ca_cert_pem, self.addr(), path, ct, body, false).await;
        (s, b)
    }

    async fn enroll_with(&self, key: &DeviceKey, token: Option<&str>) -> (StatusCode, Vec<u8>) {
        self.post(ENROLL_PATH, hardening::enroll_body(key, token))
            .await
    }

    async fn enroll(&self, key: &DeviceKey) -> DeviceId {
        let (s, b) = self.enroll_with(key, Some(TOKEN)).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        serde_json::from_slice::<EnrollResponse>(&b)
            .unwrap()
            .device_id
    }

    fn counter(&self, reason: &str) -> u64 {
        self.server.counters().unwrap()[reason]
    }
}

fn api_error(status: StatusCode, body: &[u8], want_status: u16, want: ErrorCode) {
    assert_eq!(
        status.as_u16(),
        want_status,
        "{}",
        String::from_utf8_lossy(body)
    );
    let e: ApiError = serde_json::from_slice(body).unwrap();
    assert_eq!(e.error, want);
}

fn inst() -> Instrument {
    Instrument {
        model: MODEL.into(),
        serial: SERIAL.into(),
    }
}

fn batch() -> BatchBody {
    BatchBody {
        created_at: 1_700_000_000,
        records: vec![
            Record::Qc(QcResult {
                instrument: inst(),
                analyte: ANALYTE.into(),
                value: "5.43".into(),
                unit: "%".into(),
                reference_range: "5.1-5.9".into(),
                flags: vec![],
                control_lot: LOT.into(),
                control_level: "HIGH".into(),
                run_time: Some(Timestamp {
                    seconds: 1_699_999_000,
                    nanoseconds: 0,
                }),
            }),
            Record::Event(InstrumentEvent {
                instrument: inst(),
                severity: Severity::Error,
                code: "E-1203".into(),
                text: RECORD_TEXT.into(),
                time: None,
            }),
        ],
    }
}

#[tokio::test]
async fn enroll_ingest_and_read_back() {
    let fx = start().await;
    let key = DeviceKey::generate();
    let dev = fx.enroll(&key).await;
    assert_eq!(dev.as_str().len(), 32);

    let env = seal(&key, &dev, "qc", 1, &batch()).unwrap();
    let (s, b) = fx.post(INGEST_PATH, env).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let ack: IngestAck = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        ack,
        IngestAck {
            device_id: dev.clone(),
            sequence: 1,
            duplicate: false
        }
    );

    let stored = fx.server.store().batches(Some(&dev), None).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].body, batch());
    assert_eq!(stored[0].stream, "qc");
    assert_eq!(stored[0].sequence, 1);
    assert!(
        fx.server
            .store()
            .batches(None, Some("logs"))
            .unwrap()
            .is_empty()
    );

    let devices = fx.server.store().devices().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device_id, dev);
    assert_eq!(devices[0].email, EMAIL);
    assert_eq!(devices[0].serial, SERIAL);
    assert_eq!(fx.counter("accepted"), 1);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn duplicate_is_acked_counted_as_replay_and_stored_once_and_a_conflict_is_409() {
    let fx = start().await;
    let key = DeviceKey::generate();
    let dev = fx.enroll(&key).await;
    let env = seal(&key, &dev, "qc", 5, &batch()).unwrap();
    assert_eq!(fx.post(INGEST_PATH, env.clone()).await.0, StatusCode::OK);
    // The same envelope again (a lost ack, or a replay): acknowledged as a
    // duplicate, counted, stored once.
    let (s, b) = fx.post(INGEST_PATH, env).await;
    assert_eq!(s, StatusCode::OK);
    let ack: IngestAck = serde_json::from_slice(&b).unwrap();
    assert!(ack.duplicate && ack.sequence == 5 && ack.device_id == dev);
    // Same sequence, other content (a restored device database): a conflict,
    // the first is kept, and the device is told to renumber.
    let other = BatchBody {
        created_at: 1,
        records: vec![],
    };
    let (s, b) = fx
        .post(INGEST_PATH, seal(&key, &dev, "qc", 5, &other).unwrap())
        .await;
    api_error(s, &b, 409, ErrorCode::SequenceConflict);
    let stored = fx.server.store().batches(None, None).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].body, batch());
    assert_eq!(fx.counter("replay"), 1);
    assert_eq!(fx.counter("sequence-conflict"), 1);
    assert_eq!(fx.counter("accepted"), 1);
}

#[tokio::test]
async fn tampered_wrong_key_unknown_device_and_garbage_are_refused_and_counted() {
    let fx = start().await;
    let key = DeviceKey::generate();
    let dev = fx.enroll(&key).await;

    let mut env = seal(&key, &dev, "qc", 1, &batch()).unwrap();
    let last = env.len() - 20; // a ciphertext byte
    env[last] ^= 0x01;
    let (s, b) = fx.post(INGEST_PATH, env).await;
    api_error(s, &b, 400, ErrorCode::AuthenticationFailed);

    let wrong = seal(&DeviceKey::generate(), &dev, "qc", 2, &batch()).unwrap();
    let (s, b) = fx.post(INGEST_PATH, wrong).await;
    api_error(s, &b, 400, ErrorCode::AuthenticationFailed);

    let stranger = DeviceId::parse("not-enrolled-device").unwrap();
    let (s, b) = fx
        .post(
            INGEST_PATH,
            seal(&key, &stranger, "qc", 1, &batch()).unwrap(),
        )
        .await;
    api_error(s, &b, 401, ErrorCode::UnknownDevice);

    let (s, b) = fx
        .post(INGEST_PATH, b"GARBAGE-not-an-envelope".to_vec())
        .await;
    api_error(s, &b, 400, ErrorCode::BadEnvelope);

    // A heartbeat body on the ingest endpoint authenticates but is no batch.
    let hb = HeartbeatBody {
        online: true,
        software: vec![],
        queued_batches: 0,
        dropped: 0,
    };
    let (s, b) = fx
        .post(INGEST_PATH, seal_heartbeat(&key, &dev, 9, &hb).unwrap())
        .await;
    api_error(s, &b, 400, ErrorCode::BadEnvelope);

    assert_eq!(fx.counter("authentication-failed"), 2);
    assert_eq!(fx.counter("unknown-device"), 1);
    assert_eq!(fx.counter("bad-envelope"), 2);
    assert_eq!(fx.counter("accepted"), 0);
    assert!(fx.server.store().batches(None, None).unwrap().is_empty());
}

#[tokio::test]
async fn oversize_body_is_413() {
    let fx = start_with(|c| c.max_body_bytes = 1024).await;
    let key = DeviceKey::generate();
    let dev = fx.enroll(&key).await;
    let mut body = batch();
    body.records[1] = Record::Event(InstrumentEvent {
        instrument: inst(),
        severity: Severity::Info,
        code: "X".into(),
        // Random hex (≈ 4 bits per character after compression) so the
        // envelope exceeds 1 KiB.
        text: (0..64).map(|_| DeviceKey::generate().to_hex()).collect(),
        time: None,
    });
    let env = seal(&key, &dev, "qc", 1, &body).unwrap();
    assert!(env.len() > 1024);
    let (s, b) = fx.post(INGEST_PATH, env).await;
    api_error(s, &b, 413, ErrorCode::TooLarge);
    assert_eq!(fx.counter("too-large"), 1);
}

#[tokio::test]
async fn enrollment_token_is_enforced() {
    let fx = start().await;
    let key = DeviceKey::generate();
    let (s, b) = fx.enroll_with(&key, None).await;
    api_error(s, &b, 401, ErrorCode::UnauthorizedEnrollment);
    let wrong = format!("{}x", &TOKEN[..TOKEN.len() - 1]);
    let (s, b) = fx.enroll_with(&key, Some(&wrong)).await;
    api_error(s, &b, 401, ErrorCode::UnauthorizedEnrollment);
    let (s, _) = fx.enroll_with(&key, Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(fx.counter("unauthorized-enrollment"), 2);
    assert_eq!(fx.server.store().devices().unwrap().len(), 1);

    // Malformed requests are 400 bad-request.
    let (s, b) = fx.post(ENROLL_PATH, b"{\"email\":1}".to_vec()).await;
    api_error(s, &b, 400, ErrorCode::BadRequest);
    let mut req = serde_json::to_value(EnrollRequest {
        email: "not-an-email".into(),
        name: NAME.into(),
        instrument_model: MODEL.into(),
        instrument_id: INSTRUMENT_ID.into(),
        serial: SERIAL.into(),
        device_key: key.to_hex(),
        enrollment_token: Some(TOKEN.into()),
    })
    .unwrap();
    let (s, b) = fx
        .post(ENROLL_PATH, serde_json::to_vec(&req).unwrap())
        .await;
    api_error(s, &b, 400, ErrorCode::BadRequest);
    req["email"] = EMAIL.into();
    req["device-key"] = "abc".into();
    let (s, b) = fx
        .post(ENROLL_PATH, serde_json::to_vec(&req).unwrap())
        .await;
    api_error(s, &b, 400, ErrorCode::BadRequest);
}

#[tokio::test]
async fn heartbeat_accepted_then_stale_refused() {
    let fx = start().await;
    let key = DeviceKey::generate();
    let dev = fx.enroll(&key).await;
    let hb = |q| HeartbeatBody {
        online: true,
        software: vec![SoftwareStatus {
            instrument: inst(),
            component: "analyzer-firmware".into(),
            version: "4.2.1".into(),
            state: InstallState::Installed,
        }],
        queued_batches: q,
        dropped: 0,
    };
    let (s, b) = fx
        .post(
            HEARTBEAT_PATH,
            seal_heartbeat(&key, &dev, 1_000, &hb(3)).unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (s, b) = fx
        .post(
            HEARTBEAT_PATH,
            seal_heartbeat(&key, &dev, 999, &hb(4)).unwrap(),
        )
        .await;
    api_error(s, &b, 409, ErrorCode::StaleHeartbeat);
    let (s, b) = fx
        .post(
            HEARTBEAT_PATH,
            seal_heartbeat(&key, &dev, 1_000, &hb(5)).unwrap(),
        )
        .await;
    api_error(s, &b, 409, ErrorCode::StaleHeartbeat);
    let (s, _) = fx
        .post(
            HEARTBEAT_PATH,
            seal_heartbeat(&key, &dev, 2_000, &hb(6)).unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let st = fx.server.store().status(&dev).unwrap().unwrap();
    assert_eq!(st.last_sequence, 2_000);
    assert_eq!(st.heartbeat, hb(6));
    assert_eq!(fx.counter("stale-heartbeat"), 2);
    assert_eq!(fx.counter("heartbeat"), 2);

    // A batch envelope on the heartbeat endpoint is refused.
    let (s, b) = fx
        .post(
            HEARTBEAT_PATH,
            seal(&key, &dev, "qc", 3_000, &batch()).unwrap(),
        )
        .await;
    api_error(s, &b, 400, ErrorCode::BadEnvelope);
    // A forged heartbeat (wrong key) is refused.
    let (s, b) = fx
        .post(
            HEARTBEAT_PATH,
            seal_heartbeat(&DeviceKey::generate(), &dev, 9_000, &hb(0)).unwrap(),
        )
        .await;
    api_error(s, &b, 400, ErrorCode::AuthenticationFailed);
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn database_files_hold_no_plaintext() {
    let fx = start().await;
    let key = DeviceKey::generate();
    let dev = fx.enroll(&key).await;
    for seq in 1..=3 {
        let env = seal(&key, &dev, "qc", seq, &batch()).unwrap();
        assert_eq!(fx.post(INGEST_PATH, env).await.0, StatusCode::OK);
    }
    let hb = HeartbeatBody {
        online: true,
        software: vec![SoftwareStatus {
            instrument: inst(),
            component: "analyzer-firmware".into(),
            version: "4.2.1".into(),
            state: InstallState::Installed,
        }],
        queued_batches: 0,
        dropped: 0,
    };
    let (s, _) = fx
        .post(HEARTBEAT_PATH, seal_heartbeat(&key, &dev, 10, &hb).unwrap())
        .await;
    assert_eq!(s, StatusCode::OK);

    let dir = fx.server.store().dir().to_path_buf();
    let mut all = std::fs::read(dir.join("cloud.db")).unwrap();
    let wal = dir.join("cloud.db-wal");
    assert!(wal.exists());
    all.extend(std::fs::read(&wal).unwrap());
    assert!(
        contains(&all, dev.as_str()),
        "sanity: device id is plaintext"
    );
    let key_hex = key.to_hex();
    for secret in [
        EMAIL,
        NAME,
        MODEL,
        INSTRUMENT_ID,
        SERIAL,
        RECORD_TEXT,
        ANALYTE,
        LOT,
        "analyzer-firmware",
        key_hex.as_str(),
    ] {
        assert!(
            !contains(&all, secret),
            "{secret} found in the database files"
        );
    }
    // The raw device key bytes are not there either.
    assert!(!all.windows(32).any(|w| w == key.as_bytes()));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The read-back API still sees everything.
    assert_eq!(fx.server.store().batches(None, None).unwrap().len(), 3);
}

#[test]
fn a_data_dir_given_another_server_key_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = outpost_cloud::Store::open(&data).unwrap();
    store.add_counts(&[("accepted", 1)]).expect("a first write");
    drop(store);
    // The key is lost and a new one made (or another server's copied in):
    // the rows would no longer open, so the store does not start.
    std::fs::remove_file(data.join("server.key")).unwrap();
    let e = format!("{:#}", outpost_cloud::Store::open(&data).err().unwrap());
    assert!(e.contains("is not the key the rows"), "{e}");
    assert!(e.contains("server.key"), "{e}");
}

#[tokio::test]
async fn restart_on_same_data_dir_keeps_everything_readable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    let key = DeviceKey::generate();

    let server = Server::start(config(&pki, &data)).await.unwrap();
    let fx = Fixture {
        pki: pki.clone(),
        server,
        _dir: tempfile::tempdir().unwrap(),
    };
    let dev = fx.enroll(&key).await;
    let env1 = seal(&key, &dev, "qc", 1, &batch()).unwrap();
    assert_eq!(fx.post(INGEST_PATH, env1.clone()).await.0, StatusCode::OK);
    fx.server.shutdown().await;

    let server = Server::start(config(&pki, &data)).await.unwrap();
    let fx = Fixture {
        pki,
        server,
        _dir: tempfile::tempdir().unwrap(),
    };
    // The device key was decrypted with the persisted server key.
    let env2 = seal(&key, &dev, "qc", 2, &batch()).unwrap();
    assert_eq!(fx.post(INGEST_PATH, env2).await.0, StatusCode::OK);
    let (s, b) = fx.post(INGEST_PATH, env1).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let ack: IngestAck = serde_json::from_slice(&b).unwrap();
    assert!(ack.duplicate);
    let stored = fx.server.store().batches(Some(&dev), Some("qc")).unwrap();
    assert_eq!(
        stored.iter().map(|b| b.sequence).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(stored.iter().all(|b| b.body == batch()));
    assert_eq!(fx.server.store().devices().unwrap()[0].name, NAME);
    assert_eq!(fx.counter("accepted"), 2);
    assert_eq!(fx.counter("replay"), 1);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn tls12_client_connects_and_plain_http_fails() {
    let fx = start().await;
    let key = DeviceKey::generate();
    let (s, _, v) = post_with(
        &fx.pki.ca_cert_pem,
        fx.addr(),
        ENROLL_PATH,
        "application/json",
        hardening::enroll_body(&key, Some(TOKEN)),
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, Some(rustls::ProtocolVersion::TLSv1_2));
    let (_, _, v) = post_with(
        &fx.pki.ca_cert_pem,
        fx.addr(),
        ENROLL_PATH,
        "application/json",
        b"{}".to_vec(),
        false,
    )
    .await;
    assert_eq!(v, Some(rustls::ProtocolVersion::TLSv1_3));

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut tcp = TcpStream::connect(fx.addr()).await.unwrap();
    tcp.write_all(b"POST /v1/enroll HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .expect("server closes the connection");
    assert!(
        !buf.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );

    // A client that does not trust the test CA fails the handshake.
    let other = TestPki::generate(&["localhost"]).unwrap();
    let tcp = TcpStream::connect(fx.addr()).await.unwrap();
    let connector = TlsConnector::from(client_config(&other.ca_cert_pem, false));
    assert!(
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn test_pki_write_and_cli_readback() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_outpost-cloud");
    let pki_dir = dir.path().join("pki");
    let out = std::process::Command::new(bin)
        .args(["test-pki", "--out"])
        .arg(&pki_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(pki_dir.join(f)).unwrap();
    let pki = TestPki {
        ca_cert_pem: read("ca.pem"),
        server_cert_pem: read("server.pem"),
        server_key_pem: read("server.key.pem"),
    };
    assert!(pki.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));

    // Serve with the CLI-written PKI, store one batch, then read back via the CLI.
    let data = dir.path().join("data");
    let server = Server::start(config(&pki, &data)).await.unwrap();
    let fx = Fixture {
        pki,
        server,
        _dir: tempfile::tempdir().unwrap(),
    };
    let key = DeviceKey::generate();
    let dev = fx.enroll(&key).await;
    let env = seal(&key, &dev, "qc", 77, &batch()).unwrap();
    assert_eq!(fx.post(INGEST_PATH, env).await.0, StatusCode::OK);
    fx.server.shutdown().await;

    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let table = run(&["batches"]);
    assert!(
        table.contains(dev.as_str()) && table.contains("77"),
        "{table}"
    );
    assert!(table.contains("event,qc"), "{table}");
    let json: Vec<serde_json::Value> = serde_json::from_str(&run(&["batches", "--json"])).unwrap();
    assert_eq!(json[0]["body"]["records"][1]["text"], RECORD_TEXT);
    let devices: Vec<serde_json::Value> =
        serde_json::from_str(&run(&["devices", "--json"])).unwrap();
    assert_eq!(devices[0]["email"], EMAIL);
    let stats: serde_json::Value = serde_json::from_str(&run(&["stats", "--json"])).unwrap();
    assert_eq!(stats["accepted"], 1);
    for reason in [
        "slow-client",
        "connection-cap",
        "address-cap",
        "enrollment-rate-limited",
    ] {
        assert_eq!(stats[reason], 0, "{reason}");
    }
}
