//! The sender against failing and hostile servers, then against the reference
//! cloud.
//!
//! What a lab relies on: whatever the network does (server down, 5xx, resets,
//! silence, a wrong certificate, an outdated TLS server), a batch leaves the
//! spool only once the cloud has stored it; nothing is sent to a server whose
//! identity was not verified over TLS 1.2+; once the cloud is reachable
//! everything arrives, each batch stored exactly once even when it was sent
//! twice; a device the cloud refuses keeps its data; uploads respect the
//! bandwidth cap.
//!
//! Enrolment against the same kind of servers says exactly why it failed
//! and reads no more than the answer cap (`uplink_faults/enrolment.rs`); the
//! sender's own loop backs off, tells the operator once and recovers
//! (`uplink_faults/backoff.rs`).
//!
//! Every server binds 127.0.0.1 only. Timing assertions are lower bounds,
//! except a generous upper bound where the point of the test is "it gives up".

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use outpost_cloud::{
    Enrollment, EnrollmentToken, RunningServer, Server as Cloud, ServerConfig, Store, TestPki,
};
use outpost_host::events::Events;
use outpost_host::store::Db;
use outpost_host::store::spool::Spool;
use outpost_host::uplink::Uplink;
use outpost_host::uplink::enroll::{Registration, enroll};
use outpost_host::uplink::identity::Identity;
use outpost_host::uplink::sender::{Outcome, Sender, SenderConfig, TokenBucket, classify};
use outpost_protocol::{
    self as p, DeviceId, DeviceKey, Instrument, InstrumentEvent, QcResult, Record, Severity,
    Timestamp,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest any single drain may take before the test calls it hung.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The device side.
// ---------------------------------------------------------------------------

/// What the device queued: the sequence the spool gave it and the plaintext.
#[derive(Clone, Debug)]
struct Queued {
    seq: u64,
    stream: String,
    records: Vec<Record>,
}

/// A device: a state directory with its database, the uplink over it, and the
/// batches queued so far.
struct Device {
    _dir: tempfile::TempDir,
    uplink: Arc<Uplink>,
    events: Events,
    queued: Vec<Queued>,
}

impl Device {
    fn new(identity: Identity) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let events = Events::default();
        let uplink = Arc::new(Uplink::new(Spool::new(db), events.clone()));
        uplink.set_identity(Some(identity));
        Device {
            _dir: dir,
            uplink,
            events,
            queued: Vec::new(),
        }
    }

    fn enqueue(&mut self, stream: &str, records: Vec<Record>) -> u64 {
        let seq = self
            .uplink
            .enqueue("collector", stream, records.clone())
            .unwrap();
        self.queued.push(Queued {
            seq,
            stream: stream.to_owned(),
            records,
        });
        seq
    }

    /// Queue `n` small batches, alternating instrument events and QC results.
    fn enqueue_small(&mut self, n: usize) {
        for i in 0..n {
            if i % 2 == 0 {
                self.enqueue(
                    "events",
                    vec![
                        event("W-0412", "reagent low"),
                        event("E-1203", &format!("aspiration error, retry {i}")),
                    ],
                );
            } else {
                self.enqueue(
                    "qc",
                    vec![qc("WBC", "7.1", i as i64), qc("RBC", "4.52", i as i64)],
                );
            }
        }
    }

    /// Batches waiting and their bytes.
    fn pending(&self) -> (u64, u64) {
        self.uplink.spool().pending().unwrap()
    }

    /// Sequences in the spool, oldest first.
    fn spooled(&self) -> Vec<u64> {
        self.uplink
            .spool()
            .list()
            .unwrap()
            .iter()
            .map(|b| b.seq as u64)
            .collect()
    }

    fn queued_seqs(&self) -> Vec<u64> {
        self.queued.iter().map(|q| q.seq).collect()
    }

    /// The spool still holds every batch queued, byte for byte as sealed.
    fn assert_nothing_deleted(&self, before: &[(u64, Vec<u8>)], what: &str) {
        assert_eq!(
            self.spooled(),
            self.queued_seqs(),
            "{what}: every batch must still be in the spool"
        );
        for (seq, body) in before {
            assert_eq!(
                &self.uplink.spool().body(*seq as i64).unwrap(),
                body,
                "{what}: batch {seq} changed in the spool"
            );
        }
        let counters = self.uplink.spool().counters().unwrap();
        assert_eq!(
            counters.get("delivered").copied().unwrap_or(0),
            0,
            "{what}: nothing may count as delivered: {counters:?}"
        );
    }

    /// Every spooled envelope, for [`Device::assert_nothing_deleted`].
    fn envelopes(&self) -> Vec<(u64, Vec<u8>)> {
        self.spooled()
            .into_iter()
            .map(|s| (s, self.uplink.spool().body(s as i64).unwrap()))
            .collect()
    }

    fn sender(&self, tls: &rustls::ClientConfig, cfg: SenderConfig) -> Sender {
        Sender::new(self.uplink.clone(), self.events.clone(), tls, cfg).unwrap()
    }
}

fn instrument() -> Instrument {
    Instrument {
        model: "XN-550".into(),
        serial: "SN-1".into(),
    }
}

fn event(code: &str, text: &str) -> Record {
    Record::Event(InstrumentEvent {
        instrument: instrument(),
        severity: Severity::Warning,
        code: code.into(),
        text: text.into(),
        time: Some(Timestamp {
            seconds: 1_719_496_447,
            nanoseconds: 0,
        }),
    })
}

fn qc(analyte: &str, value: &str, i: i64) -> Record {
    Record::Qc(QcResult {
        instrument: instrument(),
        analyte: analyte.into(),
        value: value.into(),
        unit: "10*3/uL".into(),
        reference_range: "6.5-7.5".into(),
        flags: vec![],
        control_lot: "LOT4711".into(),
        control_level: "1".into(),
        run_time: Some(Timestamp {
            seconds: 1_719_496_447 + i,
            nanoseconds: 0,
        }),
    })
}

/// `len` pseudo-random lowercase letters: text that does not compress much
/// (so envelopes have a predictable size) and that no PHI rule matches.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// Sender settings for tests: short retry delays, a generous rate.
fn config(endpoints: Vec<String>) -> SenderConfig {
    SenderConfig {
        endpoints,
        bytes_per_sec: 100 << 20,
        heartbeat_interval: Duration::from_secs(3600),
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        request_timeout: Duration::from_secs(10),
        software: vec![],
    }
}

/// One drain with a generous bucket.
async fn drain(sender: &mut Sender) -> (Option<Outcome>, u64) {
    let mut bucket = TokenBucket::new(100 << 20);
    tokio::time::timeout(DRAIN_LIMIT, sender.drain(&mut bucket))
        .await
        .expect("drain hung")
}

fn transient(outcome: &Option<Outcome>, what: &str) -> String {
    match outcome {
        Some(Outcome::Transient(reason)) => reason.clone(),
        Some(Outcome::Network(e)) => e.to_string(),
        other => panic!("{what}: expected a transient failure, got {other:?}"),
    }
}

/// A device identity the cloud never issued (for servers that are not the cloud).
fn fake_identity(server: &str) -> Identity {
    Identity {
        device_id: DeviceId::parse("fake-device-0001").unwrap(),
        key: DeviceKey::generate(),
        server: server.to_owned(),
        enrolled_at: 1_719_496_447,
    }
}

/// A test PKI for 127.0.0.1 and the host's TLS configuration trusting only its CA.
fn pki() -> (TestPki, Arc<rustls::ClientConfig>) {
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    let tls = client_tls(&pki);
    (pki, tls)
}

fn client_tls(pki: &TestPki) -> Arc<rustls::ClientConfig> {
    outpost_host::net::tls_config(&[pki.ca_cert_pem.as_bytes().to_vec()], true).unwrap()
}

// ---------------------------------------------------------------------------
// The reference cloud.
// ---------------------------------------------------------------------------

/// The enrolment token of the test clouds.
const CLOUD_TOKEN: &str = "uplink-faults-enrolment-token";

async fn start_cloud(pki: &TestPki, dir: &Path) -> RunningServer {
    Cloud::start(ServerConfig::new(
        dir.to_path_buf(),
        "127.0.0.1:0".parse().unwrap(),
        pki.server_cert_pem.clone(),
        pki.server_key_pem.clone(),
        Enrollment::Token(EnrollmentToken::new(CLOUD_TOKEN).unwrap()),
    ))
    .await
    .unwrap()
}

fn url(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

async fn enrolled(server: &str, tls: &rustls::ClientConfig) -> Identity {
    enroll(
        server,
        tls,
        &Registration {
            email: "lab-it@example.org".into(),
            name: "Lab IT".into(),
            instrument_model: "XN-550".into(),
            instrument_id: "HEM-1".into(),
            serial: "SN-1".into(),
            token: Some(CLOUD_TOKEN.into()),
        },
    )
    .await
    .unwrap()
}

fn cloud_counter(store: &Store, name: &str) -> u64 {
    store.counters().unwrap().get(name).copied().unwrap_or(0)
}

/// The cloud holds exactly `queued` for `device`: same sequences, streams and
/// records, each once.
fn assert_cloud_holds(store: &Store, device: &DeviceId, queued: &[Queued]) {
    let stored = store.batches(Some(device), None).unwrap();
    let got: Vec<u64> = stored.iter().map(|b| b.sequence).collect();
    let want: Vec<u64> = queued.iter().map(|q| q.seq).collect();
    assert_eq!(got, want, "the cloud must hold each batch exactly once");
    for (s, q) in stored.iter().zip(queued) {
        assert_eq!(&s.device, device);
        assert_eq!(s.stream, q.stream, "batch {}", q.seq);
        assert_eq!(s.body.records, q.records, "batch {}", q.seq);
    }
}

// ---------------------------------------------------------------------------
// Failing servers.
// ---------------------------------------------------------------------------

/// What a fake server does with each connection.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Complete TLS and answer every request with `status` (hyper).
    Answer {
        status: u16,
        retry_after: Option<&'static str>,
        content_type: &'static str,
        body: &'static str,
    },
    /// Accept TCP and close at once (FIN).
    CloseOnAccept,
    /// Accept TCP and reset at once (RST).
    ResetOnAccept,
    /// Read the ClientHello, then close.
    CloseAfterHello,
    /// Complete TLS, read the request head, then drop the connection.
    DropMidRequest,
    /// Complete TLS, read the whole request, then drop without answering.
    DropAfterRequest,
    /// Accept TCP and never say anything.
    SilentTcp,
    /// Complete TLS, read the request, never answer.
    SilentHttp,
}

fn answer(status: u16) -> Behaviour {
    Behaviour::Answer {
        status,
        retry_after: None,
        content_type: "application/json",
        body: "",
    }
}

/// What a fake server saw.
#[derive(Default)]
struct Stats {
    /// TCP connections accepted.
    accepted: AtomicUsize,
    /// TLS handshakes completed.
    handshakes: AtomicUsize,
    /// HTTP request heads received.
    requests: AtomicUsize,
    /// Complete request bodies received.
    bodies: Mutex<Vec<Vec<u8>>>,
}

impl Stats {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }
}

struct FakeServer {
    url: String,
    stats: Arc<Stats>,
}

/// A loopback server with certificate `cert_pem`/`key_pem` (TLS 1.2/1.3)
/// behaving as `behaviour` on every connection.
async fn fake_server(cert_pem: &str, key_pem: &str, behaviour: Behaviour) -> FakeServer {
    let acceptor =
        tokio_rustls::TlsAcceptor::from(outpost_cloud::tls_config(cert_pem, key_pem).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(Stats::default());
    let st = stats.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            st.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(tcp, acceptor.clone(), behaviour, st.clone()));
        }
    });
    FakeServer {
        url: url(addr),
        stats,
    }
}

async fn serve(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    behaviour: Behaviour,
    st: Arc<Stats>,
) {
    let mut tcp = tcp;
    match behaviour {
        Behaviour::CloseOnAccept => return drop(tcp),
        Behaviour::ResetOnAccept => {
            let _ = tcp.set_zero_linger();
            return drop(tcp);
        }
        Behaviour::CloseAfterHello => {
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            return drop(tcp);
        }
        Behaviour::SilentTcp => return hold(tcp).await,
        _ => {}
    }
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    st.handshakes.fetch_add(1, Ordering::SeqCst);
    match behaviour {
        Behaviour::Answer {
            status,
            retry_after,
            content_type,
            body,
        } => {
            let st = st.clone();
            let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let st = st.clone();
                async move {
                    st.requests.fetch_add(1, Ordering::SeqCst);
                    let got = match BodyExt::collect(req.into_body()).await {
                        Ok(c) => c.to_bytes().to_vec(),
                        Err(_) => Vec::new(),
                    };
                    st.bodies.lock().unwrap().push(got);
                    let mut resp = hyper::Response::builder()
                        .status(status)
                        .header("content-type", content_type);
                    if let Some(ra) = retry_after {
                        resp = resp.header("retry-after", ra);
                    }
                    Ok::<_, std::convert::Infallible>(
                        resp.body(http_body_util::Full::new(bytes::Bytes::from_static(
                            body.as_bytes(),
                        )))
                        .unwrap(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        }
        Behaviour::DropMidRequest => {
            if read_head(&mut tls).await.is_some() {
                st.requests.fetch_add(1, Ordering::SeqCst);
            }
            drop(tls);
        }
        Behaviour::DropAfterRequest => {
            if let Some(body) = read_request(&mut tls, &st).await {
                st.bodies.lock().unwrap().push(body);
            }
            drop(tls);
        }
        Behaviour::SilentHttp => {
            if let Some(body) = read_request(&mut tls, &st).await {
                st.bodies.lock().unwrap().push(body);
            }
            hold(tls).await;
        }
        Behaviour::CloseOnAccept
        | Behaviour::ResetOnAccept
        | Behaviour::CloseAfterHello
        | Behaviour::SilentTcp => unreachable!(),
    }
}

/// Keep a connection open, saying nothing, far longer than any test runs.
async fn hold<T>(conn: T) {
    tokio::time::sleep(Duration::from_secs(300)).await;
    drop(conn);
}

/// One HTTP/1.1 request head and the bytes read after it.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Option<(String, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..i]).into_owned();
            return Some((head, got[i + 4..].to_vec()));
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A whole request (head counted in `st`); returns its body.
async fn read_request<S: AsyncRead + Unpin>(s: &mut S, st: &Stats) -> Option<Vec<u8>> {
    let (head, mut body) = read_head(s).await?;
    st.requests.fetch_add(1, Ordering::SeqCst);
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut buf = [0u8; 8192];
    while body.len() < len {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    Some(body)
}

/// A loopback URL on which nothing listens.
async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    url(addr)
}

/// A server that speaks only an old TLS version (`minor` 1 = TLS 1.0, 2 = TLS
/// 1.1): it answers the ClientHello with a ServerHello of that version
/// (TLS_RSA_WITH_AES_128_CBC_SHA), as such a server does, and records every
/// byte the client sent.
struct OldTls {
    url: String,
    accepted: Arc<AtomicUsize>,
    from_client: Arc<Mutex<Vec<u8>>>,
}

async fn old_tls_server(minor: u8) -> OldTls {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let from_client = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (accepted.clone(), from_client.clone());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // The ClientHello: one whole record.
                let mut got = Vec::new();
                while got.len() < 5 || got.len() < 5 + u16::from_be_bytes([got[3], got[4]]) as usize
                {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock().unwrap().extend_from_slice(&got);
                let mut hello = vec![0x03, minor]; // server_version
                hello.extend_from_slice(&[0x42; 32]); // random
                hello.push(0); // session id
                hello.extend_from_slice(&[0x00, 0x2f]); // cipher suite
                hello.push(0); // compression
                let mut hs = vec![0x02, 0, 0, hello.len() as u8];
                hs.extend_from_slice(&hello);
                let mut rec = vec![0x16, 0x03, minor, 0, hs.len() as u8];
                rec.extend_from_slice(&hs);
                let _ = tcp.write_all(&rec).await;
                // Whatever the client says next, until it hangs up.
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    OldTls {
        url: url(addr),
        accepted,
        from_client,
    }
}

/// The content types of the TLS records in `bytes`.
fn record_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 5 {
        types.push(bytes[0]);
        let len = u16::from_be_bytes([bytes[3], bytes[4]]) as usize;
        bytes = &bytes[(5 + len).min(bytes.len())..];
    }
    types
}

/// A TCP proxy to `upstream` for one connection that loses the cloud's answer:
/// it relays the TLS handshake and the request, withholds everything the
/// cloud sends once the request body went through (more than `threshold`
/// bytes from the client), and cuts the device off as soon as the cloud has
/// stored the batch. The device never hears its acknowledgement.
async fn lost_ack_proxy(upstream: SocketAddr, store: Store, threshold: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let accepted_before = cloud_counter(&store, "accepted");
        let server = TcpStream::connect(upstream).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let sent = Arc::new(AtomicUsize::new(0));
        let sent_up = sent.clone();
        let up = tokio::spawn(async move {
            let mut buf = [0u8; 16384];
            while let Ok(n) = cr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sent_up.fetch_add(n, Ordering::SeqCst);
                if sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            // Keep both halves alive until aborted.
            std::future::pending::<()>().await;
            drop((cr, sw));
        });
        let down = tokio::spawn(async move {
            let mut buf = [0u8; 16384];
            while let Ok(n) = sr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if sent.load(Ordering::SeqCst) < threshold && cw.write_all(&buf[..n]).await.is_err()
                {
                    break;
                }
            }
            std::future::pending::<()>().await;
            drop((sr, cw));
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while cloud_counter(&store, "accepted") == accepted_before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        up.abort();
        down.abort();
    });
    url(addr)
}

// ---------------------------------------------------------------------------
// 1. Server down.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_is_transient_and_keeps_every_batch() {
    let (_pki, tls) = pki();
    let endpoint = closed_port_url().await;
    let mut dev = Device::new(fake_identity(&endpoint));
    dev.enqueue_small(5);
    let before = dev.envelopes();
    let pending = dev.pending();

    let mut sender = dev.sender(&tls, config(vec![endpoint.clone()]));
    for attempt in 0..2 {
        let (outcome, delivered) = drain(&mut sender).await;
        let reason = transient(&outcome, "connection refused");
        assert_eq!(delivered, 0, "attempt {attempt}: {reason}");
        assert_eq!(dev.pending(), pending, "attempt {attempt}");
        dev.assert_nothing_deleted(&before, "server down");
    }
}

// ---------------------------------------------------------------------------
// 2. Server errors and "retry later".
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_retry_later_keep_every_batch() {
    let (pki, tls) = pki();
    let cert = (&pki.server_cert_pem[..], &pki.server_key_pem[..]);
    let mut dev = Device::new(fake_identity("https://127.0.0.1"));
    dev.enqueue_small(4);
    let before = dev.envelopes();
    let oldest = before[0].1.clone();

    // 500: transient; one request (the oldest batch), then the sender stops.
    let s500 = fake_server(cert.0, cert.1, answer(500)).await;
    let mut sender = dev.sender(&tls, config(vec![s500.url.clone()]));
    let (outcome, delivered) = drain(&mut sender).await;
    let reason = transient(&outcome, "HTTP 500");
    assert!(reason.contains("500"), "{reason}");
    assert_eq!(delivered, 0);
    assert_eq!(s500.stats.requests(), 1, "no retry storm within one drain");
    assert_eq!(
        s500.stats.bodies(),
        vec![oldest.clone()],
        "the oldest batch goes first, as sealed"
    );
    dev.assert_nothing_deleted(&before, "500");

    // 429 with Retry-After: 7 → wait 7 s.
    let s429 = fake_server(
        cert.0,
        cert.1,
        Behaviour::Answer {
            status: 429,
            retry_after: Some("7"),
            content_type: "application/json",
            body: r#"{"error":"rate-limited","message":"slow down"}"#,
        },
    )
    .await;
    let mut sender = dev.sender(&tls, config(vec![s429.url.clone()]));
    let (outcome, delivered) = drain(&mut sender).await;
    assert_eq!(outcome, Some(Outcome::RetryAfter(Duration::from_secs(7))));
    assert_eq!(delivered, 0);
    assert_eq!(s429.stats.requests(), 1);
    dev.assert_nothing_deleted(&before, "429");

    // 503 with Retry-After → wait that long.
    let s503ra = fake_server(
        cert.0,
        cert.1,
        Behaviour::Answer {
            status: 503,
            retry_after: Some("120"),
            content_type: "application/json",
            body: r#"{"error":"unavailable","message":"maintenance"}"#,
        },
    )
    .await;
    let mut sender = dev.sender(&tls, config(vec![s503ra.url.clone()]));
    let (outcome, delivered) = drain(&mut sender).await;
    assert_eq!(outcome, Some(Outcome::RetryAfter(Duration::from_secs(120))));
    assert_eq!(delivered, 0);
    dev.assert_nothing_deleted(&before, "503 with Retry-After");

    // 503 without Retry-After → the ordinary back-off.
    let s503 = fake_server(cert.0, cert.1, answer(503)).await;
    let mut sender = dev.sender(&tls, config(vec![s503.url.clone()]));
    let (outcome, delivered) = drain(&mut sender).await;
    let reason = transient(&outcome, "HTTP 503 without Retry-After");
    assert!(reason.contains("503"), "{reason}");
    assert_eq!(delivered, 0);
    dev.assert_nothing_deleted(&before, "503");

    // Other 5xx (bad gateway from a proxy, gateway timeout): transient too.
    for status in [502, 504] {
        let s = fake_server(cert.0, cert.1, answer(status)).await;
        let mut sender = dev.sender(&tls, config(vec![s.url.clone()]));
        let (outcome, delivered) = drain(&mut sender).await;
        let reason = transient(&outcome, &format!("HTTP {status}"));
        assert!(reason.contains(&status.to_string()), "{reason}");
        assert_eq!(delivered, 0);
        dev.assert_nothing_deleted(&before, &format!("HTTP {status}"));
    }
}

/// A `200` is only an acknowledgement if it is the cloud's: a TLS-inspecting
/// hospital proxy (whose CA the operator added to `extra-ca-files`) or a
/// misdirected endpoint answering `200` with a block page has stored nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_that_is_not_the_clouds_acknowledgement_deletes_nothing() {
    let (pki, tls) = pki();
    let mut dev = Device::new(fake_identity("https://127.0.0.1"));
    dev.enqueue_small(4);
    let before = dev.envelopes();

    let portal = fake_server(
        &pki.server_cert_pem,
        &pki.server_key_pem,
        Behaviour::Answer {
            status: 200,
            retry_after: None,
            content_type: "text/html",
            body: "<html><body><h1>Access to this site is blocked by policy</h1></body></html>",
        },
    )
    .await;
    let mut sender = dev.sender(&tls, config(vec![portal.url.clone()]));
    let (outcome, delivered) = drain(&mut sender).await;
    assert_eq!(
        (delivered, dev.pending().0),
        (0, 4),
        "a 200 without an ingest acknowledgement of the batch's sequence deleted \
         data nobody stored (outcome {outcome:?})"
    );
    assert!(
        matches!(
            outcome,
            Some(Outcome::Transient(_) | Outcome::Network(_) | Outcome::Rejected(_))
        ),
        "{outcome:?}"
    );
    dev.assert_nothing_deleted(&before, "200 block page");
}

// ---------------------------------------------------------------------------
// 3. Reset connections.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_dropped_connections_keep_every_batch() {
    let (pki, tls) = pki();
    let mut dev = Device::new(fake_identity("https://127.0.0.1"));
    dev.enqueue_small(3);
    let before = dev.envelopes();
    let oldest = before[0].1.clone();

    for behaviour in [
        Behaviour::CloseOnAccept,
        Behaviour::ResetOnAccept,
        Behaviour::CloseAfterHello,
        Behaviour::DropMidRequest,
        Behaviour::DropAfterRequest,
    ] {
        let what = format!("{behaviour:?}");
        let s = fake_server(&pki.server_cert_pem, &pki.server_key_pem, behaviour).await;
        let mut sender = dev.sender(&tls, config(vec![s.url.clone()]));
        let (outcome, delivered) = drain(&mut sender).await;
        transient(&outcome, &what);
        assert_eq!(delivered, 0, "{what}");
        assert!(s.stats.accepted() >= 1, "{what}: the sender connected");
        dev.assert_nothing_deleted(&before, &what);
        match behaviour {
            Behaviour::DropMidRequest => {
                assert!(s.stats.requests() >= 1, "{what}: the request had begun");
            }
            Behaviour::DropAfterRequest => {
                // The whole batch reached the server, the answer did not: it
                // stays in the spool (the cloud would deduplicate the resend).
                assert!(
                    s.stats.bodies().contains(&oldest),
                    "{what}: the oldest batch was sent whole"
                );
            }
            _ => assert_eq!(s.stats.handshakes(), 0, "{what}"),
        }
    }
}

// ---------------------------------------------------------------------------
// 4. A server that never answers.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out_and_keeps_every_batch() {
    let (pki, tls) = pki();
    let mut dev = Device::new(fake_identity("https://127.0.0.1"));
    dev.enqueue_small(3);
    let before = dev.envelopes();

    for behaviour in [Behaviour::SilentHttp, Behaviour::SilentTcp] {
        let what = format!("{behaviour:?}");
        let s = fake_server(&pki.server_cert_pem, &pki.server_key_pem, behaviour).await;
        let mut cfg = config(vec![s.url.clone()]);
        cfg.request_timeout = Duration::from_secs(1);
        let mut sender = dev.sender(&tls, cfg);
        let started = Instant::now();
        let (outcome, delivered) = drain(&mut sender).await;
        let took = started.elapsed();
        let reason = transient(&outcome, &what);
        assert!(
            reason.to_lowercase().contains("timed out") || reason.contains("timeout"),
            "{what}: the reason names the timeout: {reason}"
        );
        // The point is that it gives up: 1 s timeout, generous margin.
        assert!(took < Duration::from_secs(20), "{what}: took {took:?}");
        assert_eq!(delivered, 0, "{what}");
        dev.assert_nothing_deleted(&before, &what);
        if let Behaviour::SilentHttp = behaviour {
            assert_eq!(s.stats.requests(), 1, "{what}: one request, not retried");
        }
    }
}

// ---------------------------------------------------------------------------
// 5. A certificate the device must not trust.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_certificate_sends_nothing() {
    let (pki, tls) = pki();
    let mut dev = Device::new(fake_identity("https://127.0.0.1"));
    dev.enqueue_small(3);
    let before = dev.envelopes();

    // A certificate for another name, from the CA the device trusts.
    let other_name = TestPki::generate(&["other.example"]).unwrap();
    let trusts_other = client_tls(&other_name);
    // A certificate for the right name, from a CA the device does not trust.
    let stranger = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();

    for (what, server_pki, client) in [
        ("certificate for other.example", &other_name, &trusts_other),
        ("certificate from an untrusted CA", &stranger, &tls),
    ] {
        let s = fake_server(
            &server_pki.server_cert_pem,
            &server_pki.server_key_pem,
            answer(200),
        )
        .await;
        let mut sender = dev.sender(client, config(vec![s.url.clone()]));
        let (outcome, delivered) = drain(&mut sender).await;
        let reason = transient(&outcome, what);
        assert!(
            reason.to_lowercase().contains("certificate"),
            "{what}: the reason names the certificate problem: {reason}"
        );
        assert_eq!(delivered, 0, "{what}");
        assert!(s.stats.accepted() >= 1, "{what}: the sender connected");
        assert_eq!(s.stats.handshakes(), 0, "{what}: no TLS session");
        assert_eq!(s.stats.requests(), 0, "{what}: the server saw no request");
        dev.assert_nothing_deleted(&before, what);
    }
    // Sanity: the same fake server with the trusted certificate does get the
    // request (the assertions above are not vacuous).
    let good = fake_server(&pki.server_cert_pem, &pki.server_key_pem, answer(500)).await;
    let mut sender = dev.sender(&tls, config(vec![good.url.clone()]));
    let (outcome, _) = drain(&mut sender).await;
    transient(&outcome, "trusted server answering 500");
    assert_eq!(good.stats.requests(), 1);
}

// ---------------------------------------------------------------------------
// 6. Outdated TLS.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_0_and_1_1_servers_are_refused_before_any_request() {
    let (_pki, tls) = pki();
    let mut dev = Device::new(fake_identity("https://127.0.0.1"));
    dev.enqueue_small(3);
    let before = dev.envelopes();

    for (what, minor) in [("TLS 1.0", 1u8), ("TLS 1.1", 2u8)] {
        let old = old_tls_server(minor).await;
        let mut sender = dev.sender(&tls, config(vec![old.url.clone()]));
        let (outcome, delivered) = drain(&mut sender).await;
        transient(&outcome, what);
        assert_eq!(delivered, 0, "{what}");
        assert_eq!(
            old.accepted.load(Ordering::SeqCst),
            1,
            "{what}: one attempt"
        );
        dev.assert_nothing_deleted(&before, what);
        // Give the server's reader a moment to collect the client's last words.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let bytes = old.from_client.lock().unwrap().clone();
        let types = record_types(&bytes);
        assert_eq!(types.first(), Some(&0x16), "{what}: a ClientHello first");
        assert!(
            types.iter().all(|t| *t == 0x16 || *t == 0x15),
            "{what}: only handshake and alert records, never application data: {types:?}"
        );
        assert!(
            !bytes.windows(4).any(|w| w == b"POST"),
            "{what}: no request in the clear"
        );
    }
}

// ---------------------------------------------------------------------------
// 7. After outages, the real cloud gets everything exactly once.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_outages_everything_reaches_the_cloud_exactly_once() {
    let (pki, tls) = pki();
    let cloud_dir = tempfile::tempdir().unwrap();
    let cloud = start_cloud(&pki, cloud_dir.path()).await;
    let cloud_url = url(cloud.addr());
    let id = enrolled(&cloud_url, &tls).await;
    let device = id.device_id.clone();
    assert!(
        cloud
            .store()
            .devices()
            .unwrap()
            .iter()
            .any(|d| d.device_id == device)
    );
    let mut dev = Device::new(id);
    dev.enqueue_small(6);
    let before = dev.envelopes();

    // A flaky path first: 500s, resets, an answer that never comes.
    for behaviour in [
        answer(500),
        Behaviour::ResetOnAccept,
        Behaviour::DropAfterRequest,
    ] {
        let what = format!("{behaviour:?}");
        let s = fake_server(&pki.server_cert_pem, &pki.server_key_pem, behaviour).await;
        let mut sender = dev.sender(&tls, config(vec![s.url.clone()]));
        let (outcome, delivered) = drain(&mut sender).await;
        transient(&outcome, &what);
        assert_eq!(delivered, 0, "{what}");
        dev.assert_nothing_deleted(&before, &what);
    }
    assert!(
        cloud
            .store()
            .batches(Some(&device), None)
            .unwrap()
            .is_empty()
    );

    // The first endpoint is down: the sender fails over to the next one.
    let down = closed_port_url().await;
    let mut sender = dev.sender(&tls, config(vec![down, cloud_url.clone()]));
    let (outcome, delivered) = drain(&mut sender).await;
    transient(&outcome, "first endpoint down");
    assert_eq!(delivered, 0);
    dev.assert_nothing_deleted(&before, "first endpoint down");

    let (outcome, delivered) = drain(&mut sender).await;
    assert_eq!(outcome, None, "delivered to the second endpoint");
    assert_eq!(delivered, 6);
    assert_eq!(dev.pending(), (0, 0), "the spool is empty");
    assert_cloud_holds(cloud.store(), &device, &dev.queued);
    assert_eq!(cloud_counter(cloud.store(), "accepted"), 6);
    assert_eq!(cloud_counter(cloud.store(), "replay"), 0);
    let counters = dev.uplink.spool().counters().unwrap();
    assert_eq!(counters.get("queued"), Some(&6));
    assert_eq!(counters.get("delivered"), Some(&6));

    // Nothing left: a further drain sends nothing.
    let (outcome, delivered) = drain(&mut sender).await;
    assert_eq!((outcome, delivered), (None, 0));
    assert_eq!(cloud_counter(cloud.store(), "accepted"), 6);

    // What is queued next goes too, after the earlier ones.
    dev.enqueue_small(2);
    let (outcome, delivered) = drain(&mut sender).await;
    assert_eq!((outcome, delivered), (None, 2));
    assert_cloud_holds(cloud.store(), &device, &dev.queued);
    cloud.shutdown().await;
}

// ---------------------------------------------------------------------------
// 8. Sent twice, stored once.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_twice_is_stored_once_and_counts_as_acknowledged() {
    let (pki, tls) = pki();
    let cloud_dir = tempfile::tempdir().unwrap();
    let cloud = start_cloud(&pki, cloud_dir.path()).await;
    let cloud_url = url(cloud.addr());
    let id = enrolled(&cloud_url, &tls).await;
    let device = id.device_id.clone();
    let mut dev = Device::new(id);
    // The first batch is a few KB, so that its body alone outweighs the
    // client's side of the TLS handshake (the proxy tells them apart by size).
    let first = dev.enqueue(
        "events",
        vec![
            event("W-0412", "reagent low"),
            event("E-1203", &noise(1, 4000)),
        ],
    );
    dev.enqueue_small(2);
    let envelope = dev.uplink.spool().body(first as i64).unwrap();
    assert!(envelope.len() > 2000, "{}", envelope.len());
    let before = dev.envelopes();

    // The acknowledgement is lost on the way back: the cloud stored the
    // batch, the device does not know it.
    let proxy = lost_ack_proxy(cloud.addr(), cloud.store().clone(), envelope.len()).await;
    let mut sender = dev.sender(&tls, config(vec![proxy]));
    let (outcome, delivered) = drain(&mut sender).await;
    transient(&outcome, "acknowledgement lost");
    assert_eq!(delivered, 0);
    dev.assert_nothing_deleted(&before, "acknowledgement lost");
    let stored = cloud.store().batches(Some(&device), None).unwrap();
    assert_eq!(
        stored.iter().map(|b| b.sequence).collect::<Vec<_>>(),
        vec![first],
        "the cloud did store the first batch"
    );

    // The device sends it again: the cloud answers with its ack marked
    // `duplicate`, which the device takes as its acknowledgement; then the rest.
    let mut sender = dev.sender(&tls, config(vec![cloud_url.clone()]));
    let (outcome, delivered) = drain(&mut sender).await;
    assert_eq!((outcome, delivered), (None, 3));
    assert_eq!(dev.pending(), (0, 0));
    assert_cloud_holds(cloud.store(), &device, &dev.queued);
    assert_eq!(cloud_counter(cloud.store(), "replay"), 1);
    assert_eq!(cloud_counter(cloud.store(), "accepted"), 3);

    // The same envelope posted once more, by hand: a 200 ack marked
    // `duplicate`, counted as a replay, still stored once.
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .build()
        .unwrap();
    let response = client
        .post(format!("{cloud_url}{}", p::INGEST_PATH))
        .header("content-type", "application/octet-stream")
        .body(envelope)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.bytes().await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let ack: p::IngestAck = serde_json::from_slice(&body).unwrap();
    assert!(ack.duplicate && ack.sequence == first && ack.device_id == device);
    assert!(outpost_host::uplink::sender::acknowledges(
        &body, &device, first
    ));
    assert_eq!(
        classify(status, retry_after.as_deref(), &body),
        Outcome::Acked
    );
    assert_eq!(cloud_counter(cloud.store(), "replay"), 2);
    assert_eq!(cloud_counter(cloud.store(), "accepted"), 3);
    assert_cloud_holds(cloud.store(), &device, &dev.queued);
    cloud.shutdown().await;
}

// ---------------------------------------------------------------------------
// 9. A device the cloud refuses.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_the_cloud_refuses_keeps_its_data() {
    let (pki, tls) = pki();
    let cloud_dir = tempfile::tempdir().unwrap();
    let cloud = start_cloud(&pki, cloud_dir.path()).await;
    let cloud_url = url(cloud.addr());

    // Never enrolled.
    let mut stranger = Device::new(fake_identity(&cloud_url));
    stranger.enqueue_small(3);
    let before = stranger.envelopes();
    let mut sender = stranger.sender(&tls, config(vec![cloud_url.clone()]));
    let (outcome, delivered) = drain(&mut sender).await;
    match &outcome {
        Some(Outcome::Rejected(reason)) => {
            assert!(reason.contains("unknown-device"), "{reason}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(delivered, 0);
    stranger.assert_nothing_deleted(&before, "unknown device");
    assert_eq!(cloud_counter(cloud.store(), "unknown-device"), 1);
    assert!(cloud.store().batches(None, None).unwrap().is_empty());

    // An enrolled device id with another key (e.g. a restored PC with a stale
    // identity file): authentication fails, rejected, data kept.
    let real = enrolled(&cloud_url, &tls).await;
    let mut impostor = Device::new(Identity {
        device_id: real.device_id.clone(),
        key: DeviceKey::generate(),
        server: cloud_url.clone(),
        enrolled_at: real.enrolled_at,
    });
    impostor.enqueue_small(2);
    let before = impostor.envelopes();
    let mut sender = impostor.sender(&tls, config(vec![cloud_url.clone()]));
    let (outcome, delivered) = drain(&mut sender).await;
    match &outcome {
        Some(Outcome::Rejected(reason)) => {
            assert!(reason.contains("authentication-failed"), "{reason}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(delivered, 0);
    impostor.assert_nothing_deleted(&before, "wrong key");
    assert!(cloud.store().batches(None, None).unwrap().is_empty());
    cloud.shutdown().await;
}

// ---------------------------------------------------------------------------
// 10. Bandwidth cap.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_paced_to_the_bandwidth_cap() {
    const RATE: u64 = 20_000;
    let (pki, tls) = pki();
    let cloud_dir = tempfile::tempdir().unwrap();
    let cloud = start_cloud(&pki, cloud_dir.path()).await;
    let cloud_url = url(cloud.addr());
    let id = enrolled(&cloud_url, &tls).await;
    let device = id.device_id.clone();
    let mut dev = Device::new(id);
    for i in 0..18u64 {
        dev.enqueue(
            "events",
            (0..3)
                .map(|j| event("E-1203", &noise(i * 10 + j + 7, 3000)))
                .collect(),
        );
    }
    let (batches, bytes) = dev.pending();
    assert!(bytes >= 80_000, "about 100 KB of envelopes: {bytes}");

    let mut cfg = config(vec![cloud_url.clone()]);
    cfg.bytes_per_sec = RATE;
    let mut sender = dev.sender(&tls, cfg);
    let mut bucket = TokenBucket::new(RATE);
    let started = Instant::now();
    let (outcome, delivered) = tokio::time::timeout(DRAIN_LIMIT, sender.drain(&mut bucket))
        .await
        .expect("drain hung");
    let took = started.elapsed();
    assert_eq!((outcome, delivered), (None, batches));
    assert_cloud_holds(cloud.store(), &device, &dev.queued);

    // One second of burst, then the rate: the last batch cannot leave before
    // (bytes - burst) / rate. Lower bound only.
    let floor = (bytes - RATE) as f64 / RATE as f64;
    assert!(
        took.as_secs_f64() >= floor - 0.05,
        "{bytes} bytes at {RATE} B/s took {took:?}, at least {floor:.2} s expected"
    );
    cloud.shutdown().await;
}

#[path = "uplink_faults/backoff.rs"]
mod backoff;
#[path = "uplink_faults/enrolment.rs"]
mod enrolment;
