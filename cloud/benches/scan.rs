//! What upload scanning (#18) costs: ingest of N batches of ~1 MB plaintext
//! over TLS on loopback, without a scanner and with a real clamd, in one
//! run; and clamd's INSTREAM alone on the same plaintexts.
//!
//! `cargo bench -p outpost-cloud --bench scan` (BENCH_BATCHES, default 30).
//! Without clamd (Debian: apt-get install clamav-daemon) it prints why and
//! exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use outpost_cloud::{Enrollment, EnrollmentToken, Scanner, Server, ServerConfig, TestPki};
use outpost_protocol::*;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[path = "../tests/api/clamd.rs"]
mod clamd;

const TOKEN: &str = "bench-enrolment-token-5d1e2f";
/// Plaintext per batch, roughly.
const BATCH_PLAIN_BYTES: usize = 1024 * 1024;
/// Content seeds of the INSTREAM-alone and the clamd ingest runs.
const ALONE_SEED: u64 = 1 << 20;
const CLAMD_SEED: u64 = 2 << 20;
/// Uncounted batches first in each mode.
const WARMUP: usize = 3;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(ca_pem: &str, addr: SocketAddr) -> Sender {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

async fn post(s: &mut Sender, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    s.ready().await.unwrap();
    let req = hyper::Request::post(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

/// A batch of about [`BATCH_PLAIN_BYTES`] of JSON: events whose text is
/// pseudo-random hex (so it is not all zstd's work), numbered `n`.
fn big_batch(n: u64) -> BatchBody {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut text = || {
        (0..64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:016x}")
            })
            .collect::<String>()
    };
    let per_record = 1024 + 150;
    BatchBody {
        created_at: 1_700_000_000,
        records: (0..BATCH_PLAIN_BYTES / per_record)
            .map(|i| {
                Record::Event(InstrumentEvent {
                    instrument: Instrument {
                        model: "XN-550".into(),
                        serial: "SN-1".into(),
                    },
                    severity: Severity::Info,
                    code: format!("E-{i}"),
                    text: text(),
                    time: None,
                })
            })
            .collect(),
    }
}

struct Row {
    mode: &'static str,
    batches: usize,
    mb: f64,
    secs: f64,
}

async fn ingest_run(
    mode: &'static str,
    scanner: Option<Scanner>,
    total: usize,
    seed: u64,
    key: &DeviceKey,
    plain_mb: f64,
) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["localhost"]).unwrap();
    let mut cfg = ServerConfig::new(
        dir.path().join("data"),
        "127.0.0.1:0".parse().unwrap(),
        pki.server_cert_pem.clone(),
        pki.server_key_pem.clone(),
        Enrollment::Token(EnrollmentToken::new(TOKEN).unwrap()),
    );
    cfg.scanner = scanner;
    let server = Server::start(cfg).await.unwrap();
    let mut s = connect(&pki.ca_cert_pem, server.addr()).await;
    let req = EnrollRequest {
        email: "bench@example.org".into(),
        name: "Bench".into(),
        instrument_model: "XN-550".into(),
        instrument_id: "B1".into(),
        serial: "SN-1".into(),
        device_key: key.to_hex(),
        enrollment_token: Some(TOKEN.into()),
    };
    let (st, b) = post(&mut s, ENROLL_PATH, serde_json::to_vec(&req).unwrap()).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let dev = serde_json::from_slice::<EnrollResponse>(&b)
        .unwrap()
        .device_id;
    let envs: Vec<Vec<u8>> = (0..total)
        .map(|i| seal(key, &dev, "logs", i as u64 + 1, &big_batch(seed + i as u64)).unwrap())
        .collect();
    let mut start = Instant::now();
    for (i, env) in envs.into_iter().enumerate() {
        if i == WARMUP {
            start = Instant::now();
        }
        let (st, b) = post(&mut s, INGEST_PATH, env).await;
        assert_eq!(st, 200, "{mode}: {}", String::from_utf8_lossy(&b));
    }
    let secs = start.elapsed().as_secs_f64();
    let counted = total - WARMUP;
    assert_eq!(server.store().batches(None, None).unwrap().len(), total);
    server.shutdown().await;
    Row {
        mode,
        batches: counted,
        mb: plain_mb * counted as f64,
        secs,
    }
}

fn main() {
    let Some(clamd) = clamd::Clamd::start("bench scan") else {
        return;
    };
    let n: usize = std::env::var("BENCH_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let key = DeviceKey::generate();
    let placeholder = DeviceId::parse("bench-device").unwrap();
    // Each mode its own content: clamd caches the verdicts of clean
    // content by hash, so a plaintext scanned before costs little.
    let plains: Vec<Vec<u8>> = (0..n + WARMUP)
        .map(|i| serde_json::to_vec(&big_batch(ALONE_SEED + i as u64)).unwrap())
        .collect();
    let plain_mb = plains[0].len() as f64 / (1024.0 * 1024.0);
    let env_kb = seal(&key, &placeholder, "logs", 1, &big_batch(0))
        .unwrap()
        .len() as f64
        / 1024.0;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows = rt.block_on(async {
        let scanner = clamd.scanner();
        // clamd's INSTREAM alone, one connection per scan as the server does.
        let mut start = Instant::now();
        for (i, p) in plains.iter().enumerate() {
            if i == WARMUP {
                start = Instant::now();
            }
            let v = scanner.scan(p).await.unwrap();
            assert_eq!(v, outpost_cloud::Verdict::Clean);
        }
        let alone = Row {
            mode: "clamd INSTREAM alone",
            batches: n,
            mb: plain_mb * n as f64,
            secs: start.elapsed().as_secs_f64(),
        };
        let without = ingest_run("ingest, no scanner", None, n + WARMUP, 0, &key, plain_mb).await;
        let with = ingest_run(
            "ingest, clamd",
            Some(clamd.scanner()),
            n + WARMUP,
            CLAMD_SEED,
            &key,
            plain_mb,
        )
        .await;
        vec![alone, without, with]
    });
    println!(
        "scan bench: {n} batches of {plain_mb:.2} MB plaintext ({env_kb:.0} KB envelopes), {WARMUP} warm-up batches not counted; clamd 1 signature"
    );
    println!(
        "{:<22} {:>7} {:>8} {:>9} {:>11} {:>8}",
        "mode", "batches", "MB", "s", "ms/batch", "MB/s"
    );
    for r in &rows {
        println!(
            "{:<22} {:>7} {:>8.1} {:>9.3} {:>11.1} {:>8.1}",
            r.mode,
            r.batches,
            r.mb,
            r.secs,
            r.secs * 1000.0 / r.batches as f64,
            r.mb / r.secs
        );
    }
    let cost = (rows[2].secs - rows[1].secs) * 1000.0 / rows[2].mb;
    println!("scanning cost: {cost:.1} ms per MB of plaintext added to ingest");
    drop(clamd);
}
