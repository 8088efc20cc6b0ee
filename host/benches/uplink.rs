//! Uplink throughput, size and memory (issue #5; plain binary, prints a
//! table). Run with
//! `cargo bench -p outpost-host --bench uplink [-- --queued N] [--corpus-mib M] [--batches B]`
//! (defaults: 1,000,000 queued records, a 20 MiB corpus, 500 batches).
//!
//! Everything runs in this process over loopback: the reference cloud
//! (`outpost-cloud`, real TLS, its own SQLite store), the host's uplink
//! (`Uplink::enqueue` → guard → JSON → zstd → AES-GCM → durable SQLite spool)
//! and the host's `Sender`. Measured:
//! 1. `enqueue` → spool: records/s and batches/s, batches of 100 QC or event
//!    records, each a durable commit; plus the CPU part alone (guard, JSON,
//!    zstd, AES-GCM, no SQLite) for comparison;
//! 2. spool → cloud with `Sender::drain`: unlimited bandwidth, then the default
//!    cap (steady state: the bucket's one-second burst is spent first);
//! 3. bytes on the wire ÷ raw input bytes for a generated mixed corpus parsed
//!    by `outpost-collector-core` (the wire bytes are counted by a TCP relay
//!    between the sender and the cloud: TLS handshake, TLS records, HTTP
//!    request lines, headers and bodies, client → cloud);
//! 4. 1 M queued records: RSS before/after enqueueing and after draining,
//!    and the drain rate;
//! 5. the full path (enqueue + drain of 1.) against a plain reqwest POST of the
//!    same envelopes to a minimal hyper + rustls server that reads the body
//!    and answers 200.
//!
//! The cloud shares the 2 cores with the device side here, and its own
//! durable insert is part of every upload: compare ratios within one run.

use outpost_cloud::{Enrollment, EnrollmentToken, RunningServer, Server, ServerConfig, TestPki};
use outpost_collector_core as core;
use outpost_host::config::UplinkConfig;
use outpost_host::events::Events;
use outpost_host::store::Db;
use outpost_host::store::spool::Spool;
use outpost_host::uplink::enroll::{Registration, enroll};
use outpost_host::uplink::sender::{Sender, SenderConfig, TokenBucket};
use outpost_host::uplink::{EnqueueError, Uplink, guard};
use outpost_protocol as p;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "common/corpus.rs"]
mod corpus;
#[path = "common/wire.rs"]
mod wire;
use corpus::{ANALYTES, Rng, generate};
use wire::{stream_of, to_wire};

/// Records per `enqueue`, as the collector module queues them.
const PER_BATCH: usize = 100;
/// "Unlimited" bandwidth for the uncapped drains (1 TB/s).
const UNLIMITED: u64 = 1 << 40;
/// Longest time spent enqueueing, then draining, the 1 M records.
const BIG_BUDGET: Duration = Duration::from_secs(75);
/// Length of the capped drain, at the cap.
const CAPPED_SECS: f64 = 6.0;
/// Batches queued before the RSS baseline of 4.
const WARM_UP: u64 = 10;

struct Args {
    queued: u64,
    corpus_mib: u64,
    batches: u64,
}

fn args() -> Args {
    let mut a = Args {
        queued: 1_000_000,
        corpus_mib: 20,
        batches: 500,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for w in argv.windows(2) {
        let v = || {
            w[1].parse::<u64>()
                .unwrap_or_else(|_| panic!("{} wants a number", w[0]))
        };
        match w[0].as_str() {
            "--queued" => a.queued = v(),
            "--corpus-mib" => a.corpus_mib = v(),
            "--batches" => a.batches = v(),
            _ => {}
        }
    }
    a
}

/// One row of the result table.
struct Row {
    what: String,
    value: String,
    target: String,
}

fn row(rows: &mut Vec<Row>, what: impl Into<String>, value: impl Into<String>, target: &str) {
    rows.push(Row {
        what: what.into(),
        value: value.into(),
        target: target.into(),
    });
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let lab = Lab::start(&rt);
    let mut rows = Vec::new();

    // 4 first, in a fresh heap: later phases would leave freed memory that the
    // 1 M records could reuse, hiding growth.
    million(&lab, &args, &mut rows);
    let full_vs_plain = throughput(&lab, &args, &mut rows);
    corpus(&lab, &args, &mut rows);

    // Every batch sent reached the cloud's store.
    let accepted = lab
        .server
        .store()
        .counters()
        .unwrap()
        .get("accepted")
        .copied()
        .unwrap_or(0);
    assert_eq!(accepted, lab.delivered.load(Ordering::Relaxed));

    println!(
        "\noutpost uplink benchmarks (machine: {} cpus, shared and noisy: compare ratios within one run; \
         cloud, relay and device side share the cpus; every batch is one durable SQLite commit on the \
         device, one at the cloud, and one more on the device when acknowledged)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| measurement | value | target |");
    println!("| --- | --- | --- |");
    for r in &rows {
        println!("| {} | {} | {} |", r.what, r.value, r.target);
    }
    println!("\n{full_vs_plain}");
    rt.block_on(async move { lab.server.shutdown().await });
}

/// The reference cloud on loopback and what it takes to talk to it.
struct Lab<'rt> {
    rt: &'rt tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    pki: TestPki,
    token: EnrollmentToken,
    server: RunningServer,
    tls: Arc<rustls::ClientConfig>,
    url: String,
    devices: AtomicU64,
    delivered: AtomicU64,
}

impl<'rt> Lab<'rt> {
    fn start(rt: &'rt tokio::runtime::Runtime) -> Lab<'rt> {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
        let token = EnrollmentToken::generate();
        let mut cfg = ServerConfig::new(
            dir.path().join("cloud"),
            "127.0.0.1:0".parse().unwrap(),
            pki.server_cert_pem.clone(),
            pki.server_key_pem.clone(),
            Enrollment::Token(token.clone()),
        );
        // The bench measures throughput, not the cloud's rate limits.
        cfg.defence = outpost_cloud::DefenceConfig::without_rate_limits();
        let server = rt.block_on(Server::start(cfg)).unwrap();
        let tls =
            outpost_host::net::tls_config(&[pki.ca_cert_pem.clone().into_bytes()], true).unwrap();
        let url = format!("https://127.0.0.1:{}", server.addr().port());
        Lab {
            rt,
            dir,
            pki,
            token,
            server,
            tls,
            url,
            devices: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        }
    }

    /// A freshly enrolled device with its own state directory and spool.
    fn device(&self) -> Arc<Uplink> {
        let n = self.devices.fetch_add(1, Ordering::Relaxed);
        let reg = Registration {
            email: "lab@example.org".into(),
            name: "Bench Lab".into(),
            instrument_model: "XN-550".into(),
            instrument_id: format!("bench-{n}"),
            serial: format!("BD63454{n}"),
            token: Some(self.token.expose().to_owned()),
        };
        let identity = self
            .rt
            .block_on(enroll(&self.url, &self.tls, &reg))
            .unwrap();
        let db = Db::open(&self.dir.path().join(format!("device-{n}"))).unwrap();
        let uplink = Arc::new(Uplink::new(Spool::new(db), Events::default()));
        uplink.set_identity(Some(identity));
        uplink
    }

    fn sender(&self, uplink: &Arc<Uplink>, endpoint: &str, bytes_per_sec: u64) -> Sender {
        let _guard = self.rt.enter();
        Sender::new(
            uplink.clone(),
            Events::default(),
            &self.tls,
            SenderConfig {
                endpoints: vec![endpoint.to_owned()],
                bytes_per_sec,
                heartbeat_interval: Duration::from_secs(3600),
                retry_initial: Duration::from_millis(100),
                retry_max: Duration::from_secs(1),
                request_timeout: Duration::from_secs(30),
                software: Vec::new(),
            },
        )
        .unwrap()
    }

    /// Drain `uplink` completely through `sender`; returns the time taken.
    fn drain(&self, uplink: &Uplink, sender: &mut Sender, bucket: &mut TokenBucket) -> Duration {
        let (batches, _) = uplink.spool().pending().unwrap();
        let t = Instant::now();
        let (outcome, delivered) = self.rt.block_on(sender.drain(bucket));
        let d = t.elapsed();
        assert_eq!(outcome, None, "drain failed");
        assert_eq!(delivered, batches);
        self.delivered.fetch_add(delivered, Ordering::Relaxed);
        d
    }
}

// ---------------------------------------------------------------------------
// 4. One million queued records.

fn million(lab: &Lab, args: &Args, rows: &mut Vec<Row>) {
    let want = args.queued.div_ceil(PER_BATCH as u64);
    eprintln!("4. enqueueing {want} batches of {PER_BATCH} records...");
    let uplink = lab.device();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let rss_cold = rss();
    // Warm-up: one-time costs (the guard's regexes, SQLite's page cache and
    // statement cache) are not growth with the queue.
    let warm = WARM_UP.min(want);
    let mut done = 0u64;
    while done < warm {
        let (stream, records) = synthetic_batch(&mut rng, done);
        uplink.enqueue("collector", stream, records).unwrap();
        done += 1;
    }
    let rss0 = rss();
    let t = Instant::now();
    let mut first_k = None;
    let mut last_k = Instant::now();
    let mut last_k_time = Duration::ZERO;
    while done < want && t.elapsed() < BIG_BUDGET {
        let (stream, records) = synthetic_batch(&mut rng, done);
        uplink.enqueue("collector", stream, records).unwrap();
        done += 1;
        if (done - warm).is_multiple_of(1000) {
            last_k_time = last_k.elapsed();
            last_k = Instant::now();
            first_k.get_or_insert(last_k_time);
            eprintln!(
                "   {done} batches, {:.1?}, last 1000 in {last_k_time:.1?}",
                t.elapsed()
            );
        }
    }
    let enqueue_time = t.elapsed();
    let rss1 = rss();
    let records = done * PER_BATCH as u64;
    let enqueued = done - warm;
    let (_, spool_bytes) = uplink.spool().pending().unwrap();

    eprintln!("4. draining {done} batches...");
    let mut sender = lab.sender(&uplink, &lab.url, UNLIMITED);
    let mut bucket = TokenBucket::new(UNLIMITED);
    let t = Instant::now();
    let drained = lab
        .rt
        .block_on(async { tokio::time::timeout(BIG_BUDGET, sender.drain(&mut bucket)).await });
    let drain_time = t.elapsed();
    let delivered = match drained {
        Ok((outcome, n)) => {
            assert_eq!(outcome, None, "drain failed");
            n
        }
        // Out of time: what the spool says was acknowledged.
        Err(_) => uplink
            .spool()
            .counters()
            .unwrap()
            .get("delivered")
            .copied()
            .unwrap_or(0),
    };
    lab.delivered.fetch_add(delivered, Ordering::Relaxed);
    drop(sender);
    let rss2 = rss();

    let reached = if done == want {
        format!("{records} records")
    } else {
        format!(
            "{records} of {} records (stopped after {BIG_BUDGET:?})",
            want * PER_BATCH as u64
        )
    };
    row(
        rows,
        format!("4. queue {reached}: enqueue time"),
        format!(
            "{enqueue_time:.1?} ({:.0} records/s; first 1000 batches {}, last 1000 {})",
            (enqueued * PER_BATCH as u64) as f64 / enqueue_time.as_secs_f64(),
            first_k.map_or("-".into(), |d| format!("{d:.2?}")),
            if done >= 2000 {
                format!("{last_k_time:.2?}")
            } else {
                "-".into()
            },
        ),
        "",
    );
    row(
        rows,
        "4. spool size with them queued",
        format!(
            "{:.1} MiB ({:.0} B per batch)",
            spool_bytes as f64 / 1048576.0,
            spool_bytes as f64 / done.max(1) as f64
        ),
        "",
    );
    let growth = match (rss_cold, rss0, rss1) {
        (Some(c), Some(a), Some(b)) => {
            let mb = (b as f64 - a as f64) / 1e6;
            let miss = if mb > 5.0 { ", missed" } else { "" };
            format!(
                "{mb:+.1} MB ({:.1} → {:.1} MB){miss}; from cold, before the first batch: {:+.1} MB",
                a as f64 / 1e6,
                b as f64 / 1e6,
                (b as f64 - c as f64) / 1e6
            )
        }
        _ => "n/a".into(),
    };
    row(
        rows,
        format!("4. RSS growth while queueing (from after a {WARM_UP}-batch warm-up)"),
        growth,
        "≤ +5 MB",
    );
    let drain_note = if delivered == done {
        String::new()
    } else {
        format!(" ({delivered} of {done} batches within {BIG_BUDGET:?})")
    };
    row(
        rows,
        "4. drain of the queue to the cloud (uncapped)",
        format!(
            "{:.0} records/s, {:.0} batches/s, {drain_time:.1?}{drain_note}",
            (delivered * PER_BATCH as u64) as f64 / drain_time.as_secs_f64(),
            delivered as f64 / drain_time.as_secs_f64()
        ),
        "",
    );
    row(
        rows,
        "4. RSS after draining",
        match (rss0, rss2) {
            (Some(a), Some(b)) => format!(
                "{:.1} MB ({:+.1} MB from before queueing)",
                b as f64 / 1e6,
                (b as f64 - a as f64) / 1e6
            ),
            _ => "n/a".into(),
        },
        "",
    );
}

#[cfg(target_os = "linux")]
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(not(target_os = "linux"))]
fn rss() -> Option<u64> {
    None
}

// ---------------------------------------------------------------------------
// 1, 2 and 5: throughput.

/// Returns the full-path vs plain-POST paragraph.
fn throughput(lab: &Lab, args: &Args, rows: &mut Vec<Row>) -> String {
    let n = args.batches.max(1);
    eprintln!("1. enqueueing {n} batches...");
    let uplink = lab.device();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let batches: Vec<(&str, Vec<p::Record>)> =
        (0..n).map(|i| synthetic_batch(&mut rng, i)).collect();
    let records = n * PER_BATCH as u64;

    // The CPU part alone: what enqueue does before SQLite.
    let id = uplink.identity().unwrap();
    let t = Instant::now();
    for (i, (stream, recs)) in batches.iter().enumerate() {
        guard::check(recs).unwrap();
        let body = p::BatchBody {
            created_at: 1_764_000_000,
            records: recs.clone(),
        };
        let json = serde_json::to_vec(&body).unwrap();
        let c = p::compress(&json).unwrap();
        std::hint::black_box(
            p::seal_compressed(&id.key, &id.device_id, stream, i as u64 + 1, &c).unwrap(),
        );
    }
    let cpu = t.elapsed();
    let t = Instant::now();
    for (_, recs) in &batches {
        guard::check(recs).unwrap();
    }
    let guard_time = t.elapsed();

    let t = Instant::now();
    for (stream, recs) in batches.clone() {
        uplink.enqueue("collector", stream, recs).unwrap();
    }
    let enqueue = t.elapsed();
    row(
        rows,
        format!("1. enqueue → spool ({n} batches of {PER_BATCH} QC/event records)"),
        format!(
            "{:.0} records/s, {:.0} batches/s ({:.2?} per batch)",
            records as f64 / enqueue.as_secs_f64(),
            n as f64 / enqueue.as_secs_f64(),
            enqueue / n as u32
        ),
        "",
    );
    row(
        rows,
        "1. of which guard + JSON + zstd + AES-GCM (no SQLite)",
        format!(
            "{:.0} records/s ({:.2?} per batch, {:.0} % of enqueue; the PHI guard alone {:.2?} per batch)",
            records as f64 / cpu.as_secs_f64(),
            cpu / n as u32,
            100.0 * cpu.as_secs_f64() / enqueue.as_secs_f64(),
            guard_time / n as u32
        ),
        "",
    );

    // The same envelopes, for the plain POST of 5.
    let envelopes: Vec<Vec<u8>> = uplink
        .spool()
        .list()
        .unwrap()
        .iter()
        .map(|b| uplink.spool().body(b.seq).unwrap())
        .collect();
    let env_bytes: u64 = envelopes.iter().map(|e| e.len() as u64).sum();

    eprintln!("2. draining uncapped...");
    let mut sender = lab.sender(&uplink, &lab.url, UNLIMITED);
    let drain = lab.drain(&uplink, &mut sender, &mut TokenBucket::new(UNLIMITED));
    drop(sender);
    row(
        rows,
        "2. spool → cloud over TLS, uncapped",
        format!(
            "{:.0} records/s, {:.0} batches/s ({:.2} Mbit/s of envelopes, {:.0} B per envelope)",
            records as f64 / drain.as_secs_f64(),
            n as f64 / drain.as_secs_f64(),
            env_bytes as f64 * 8.0 / drain.as_secs_f64() / 1e6,
            env_bytes as f64 / n as f64
        ),
        "",
    );

    // Capped: enough batches for CAPPED_SECS at the default cap.
    let mbit = UplinkConfig::default().bandwidth_mbit;
    let cap = (mbit * 1e6 / 8.0) as u64;
    let per_env = env_bytes as f64 / n as f64;
    let m = ((CAPPED_SECS * cap as f64 / per_env).ceil() as u64).clamp(1, 20_000);
    eprintln!("2. enqueueing {m} batches for the capped drain...");
    for i in 0..m {
        let (stream, recs) = synthetic_batch(&mut rng, i);
        uplink.enqueue("collector", stream, recs).unwrap();
    }
    let (_, capped_bytes) = uplink.spool().pending().unwrap();
    eprintln!("2. draining at {mbit} Mbit/s...");
    let mut sender = lab.sender(&uplink, &lab.url, cap);
    let mut bucket = TokenBucket::new(cap);
    // Steady state: spend the one-second burst first.
    let _ = bucket.take(cap);
    let capped = lab.drain(&uplink, &mut sender, &mut bucket);
    drop(sender);
    let eff = capped_bytes as f64 * 8.0 / capped.as_secs_f64() / 1e6;
    let uncapped_mbit = env_bytes as f64 * 8.0 / drain.as_secs_f64() / 1e6;
    let miss = if (eff - mbit).abs() > 0.1 * mbit {
        ", missed"
    } else {
        ""
    };
    row(
        rows,
        format!("2. spool → cloud at the default cap ({mbit} Mbit/s, burst spent first)"),
        format!(
            "{eff:.2} Mbit/s of envelopes, {:.0} records/s ({m} batches in {capped:.1?}){}",
            (m * PER_BATCH as u64) as f64 / capped.as_secs_f64(),
            if uncapped_mbit < 1.5 * mbit {
                format!(
                    "; note: uncapped, this machine only reaches {uncapped_mbit:.2} Mbit/s ({:.1}× the cap)",
                    uncapped_mbit / mbit
                )
            } else {
                String::new()
            }
        ),
        &format!("≈ {mbit} Mbit/s (±10 %{miss})"),
    );

    // 5. Plain HTTPS POST of the same envelopes.
    eprintln!("5. plain POSTs...");
    let plain_server = PlainServer::start(lab);
    let plain = plain_posts(lab, &plain_server, &envelopes);
    // The host's side alone: the same batches again, drained by the Sender
    // to the plain server (no cloud work).
    for (stream, recs) in batches.clone() {
        uplink.enqueue("collector", stream, recs).unwrap();
    }
    let mut sender = lab.sender(&uplink, &plain_server.url(), UNLIMITED);
    let (outcome, delivered) = lab
        .rt
        .block_on(sender.drain(&mut TokenBucket::new(UNLIMITED)));
    assert_eq!((outcome, delivered), (None, n));
    let t = Instant::now();
    // (timed on a second round, so that the connection is warm as in `plain`)
    for (stream, recs) in batches.clone() {
        uplink.enqueue("collector", stream, recs).unwrap();
    }
    let re_enqueue = t.elapsed();
    let t = Instant::now();
    let (outcome, delivered) = lab
        .rt
        .block_on(sender.drain(&mut TokenBucket::new(UNLIMITED)));
    let host_drain = t.elapsed();
    assert_eq!((outcome, delivered), (None, n));
    drop(sender);
    plain_server.task.abort();
    let full = enqueue + drain;
    row(
        rows,
        "5. full path (enqueue + seal + spool + Sender + cloud), same batches as 1",
        format!(
            "{full:.2?} ({:.0} records/s)",
            records as f64 / full.as_secs_f64()
        ),
        "",
    );
    row(
        rows,
        "5. plain reqwest POST of the same envelopes to a hyper+rustls server (reads the body, answers 200 + ack)",
        format!(
            "{plain:.2?} ({:.0} records/s, {:.2?} per request)",
            records as f64 / plain.as_secs_f64(),
            plain / n as u32
        ),
        "",
    );
    row(
        rows,
        "5. overhead full ÷ plain",
        format!(
            "{:.1}× (drain alone ÷ plain: {:.1}×)",
            full.as_secs_f64() / plain.as_secs_f64(),
            drain.as_secs_f64() / plain.as_secs_f64()
        ),
        "",
    );
    row(
        rows,
        "5. host side only: enqueue + Sender drain to the plain 200 server",
        format!(
            "{:.2?} ({:.1}× plain; drain alone {:.1}× plain)",
            re_enqueue + host_drain,
            (re_enqueue + host_drain).as_secs_f64() / plain.as_secs_f64(),
            host_drain.as_secs_f64() / plain.as_secs_f64()
        ),
        "",
    );
    format!(
        "per batch of {PER_BATCH}: full path = enqueue {:.2?} + drain to the reference cloud {:.2?}; \
         Sender drain to the plain server {:.2?}; plain reqwest POST {:.2?}",
        enqueue / n as u32,
        drain / n as u32,
        host_drain / n as u32,
        plain / n as u32
    )
}

/// A minimal HTTPS server on loopback (hyper + rustls, the cloud's TLS
/// settings) that reads each request body and answers 200 with the
/// `IngestAck` the sender requires, built from the envelope's cleartext
/// header (no decryption, no storage).
struct PlainServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PlainServer {
    fn start(lab: &Lab) -> PlainServer {
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::TokioIo;

        let server_tls =
            outpost_cloud::tls_config(&lab.pki.server_cert_pem, &lab.pki.server_key_pem).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_tls);
        let listener = lab
            .rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let task = lab.rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        |req: http::Request<hyper::body::Incoming>| async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            // The acknowledgement the sender insists on, from
                            // the envelope's cleartext header (no key, no store).
                            let ack = p::EnvelopeHeader::parse(&body)
                                .ok()
                                .map(|(h, _)| p::IngestAck {
                                    device_id: h.device,
                                    sequence: h.sequence,
                                    duplicate: false,
                                })
                                .and_then(|a| serde_json::to_vec(&a).ok())
                                .unwrap_or_default();
                            Ok::<_, hyper::Error>(http::Response::new(Full::new(
                                bytes::Bytes::from(ack),
                            )))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        PlainServer { addr, task }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

/// POST every envelope with a plain reqwest client, one after the other like
/// the sender; returns the time taken.
fn plain_posts(lab: &Lab, server: &PlainServer, envelopes: &[Vec<u8>]) -> Duration {
    let url = format!("{}{}", server.url(), p::INGEST_PATH);
    let _guard = lab.rt.enter();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*lab.tls).clone())
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let round = || {
        lab.rt.block_on(async {
            for e in envelopes {
                let r = client
                    .post(&url)
                    .header("content-type", "application/octet-stream")
                    .body(e.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }
        })
    };
    // Timed on a second round, with the connection warm, as the Sender's.
    round();
    let t = Instant::now();
    round();
    t.elapsed()
}

// ---------------------------------------------------------------------------
// 3. Bytes on the wire for a mixed corpus.

fn corpus(lab: &Lab, args: &Args, rows: &mut Vec<Row>) {
    let target = args.corpus_mib << 20;
    let files = generate(target);
    let raw: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    eprintln!(
        "3. parsing {} files, {:.1} MiB...",
        files.len(),
        raw as f64 / 1048576.0
    );
    let fallback = core::Instrument {
        model: "XN-550".into(),
        serial: "BD634545".into(),
    };
    let t = Instant::now();
    let mut by_stream: BTreeMap<&'static str, Vec<p::Record>> = BTreeMap::new();
    let mut n_records = 0u64;
    for (ext, bytes) in &files {
        for r in parse_file(ext, bytes, &fallback) {
            let w = to_wire(r);
            n_records += 1;
            by_stream.entry(stream_of(&w)).or_default().push(w);
        }
    }
    let parse = t.elapsed();
    drop(files);

    eprintln!("3. enqueueing {n_records} records...");
    let uplink = lab.device();
    let mut queued = 0u64;
    let mut refused: Vec<(&str, &[p::Record])> = Vec::new();
    let mut per_stream = String::new();
    let t = Instant::now();
    for (stream, records) in &by_stream {
        let _ = write!(per_stream, "{stream} {}, ", records.len());
        for chunk in records.chunks(PER_BATCH) {
            match uplink.enqueue("collector", stream, chunk.to_vec()) {
                Ok(_) => queued += 1,
                Err(EnqueueError::Guard(_)) => refused.push((stream, chunk)),
                Err(e) => panic!("enqueue failed: {e}"),
            }
        }
    }
    let enqueue = t.elapsed();
    // What the refused batches hold: each record checked alone (a violation
    // names the field and the kind of identifier, never the value), and the
    // size they would have had sealed.
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut refused_records = 0u64;
    let mut bad_records = 0u64;
    let mut refused_env_bytes = 0u64;
    let id = uplink.identity().unwrap();
    for (stream, chunk) in &refused {
        refused_records += chunk.len() as u64;
        for r in chunk.iter() {
            if let Err(v) = guard::check(std::slice::from_ref(r)) {
                bad_records += 1;
                *kinds
                    .entry(format!("{} `{}`: {}", r.kind(), v.field, v.finding))
                    .or_default() += 1;
            }
        }
        let body = p::BatchBody {
            created_at: 1_764_000_000,
            records: chunk.to_vec(),
        };
        let c = p::compress(&serde_json::to_vec(&body).unwrap()).unwrap();
        refused_env_bytes += p::seal_compressed(&id.key, &id.device_id, stream, 1, &c)
            .unwrap()
            .len() as u64;
    }
    let (_, env_bytes) = uplink.spool().pending().unwrap();

    eprintln!("3. draining {queued} batches through the counting relay...");
    let relay = lab.rt.block_on(Relay::start(lab.server.addr()));
    let endpoint = format!("https://127.0.0.1:{}", relay.addr.port());
    let mut sender = lab.sender(&uplink, &endpoint, UNLIMITED);
    let drain = lab.drain(&uplink, &mut sender, &mut TokenBucket::new(UNLIMITED));
    drop(sender);
    let up = relay.up.load(Ordering::Relaxed);
    let down = relay.down.load(Ordering::Relaxed);
    let conns = relay.conns.load(Ordering::Relaxed);
    relay.task.abort();

    row(
        rows,
        format!(
            "3. corpus: {:.1} MiB raw (logs/ASTM/HL7/CSV) → {n_records} records",
            raw as f64 / 1048576.0
        ),
        format!(
            "{} ({parse:.2?} to parse; {queued} batches queued in {enqueue:.2?}, sent in {drain:.2?})",
            per_stream.trim_end_matches(", ")
        ),
        "",
    );
    if !refused.is_empty() {
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        row(
            rows,
            "3. batches refused by the host's PHI guard (not sent, not in the ratios below)",
            format!(
                "{} batches, {refused_records} records; {bad_records} of those records fail the guard alone ({}), the rest were refused with them",
                refused.len(),
                kinds.join("; ")
            ),
            "0",
        );
    }
    row(
        rows,
        "3. envelope bytes ÷ raw input bytes",
        format!(
            "{:.4} ({:.2} MiB of envelopes)",
            env_bytes as f64 / raw as f64,
            env_bytes as f64 / 1048576.0
        ),
        "",
    );
    let ratio = up as f64 / raw as f64;
    row(
        rows,
        "3. bytes on the wire ÷ raw input bytes (all TCP payload device → cloud: TLS handshake + records, HTTP request lines + headers + bodies)",
        format!(
            "{ratio:.4} ({:.2} MiB up over {conns} connection(s); HTTP/TLS overhead {:.0} B per request; responses {:.2} MiB down){}",
            up as f64 / 1048576.0,
            (up as f64 - env_bytes as f64) / queued.max(1) as f64,
            down as f64 / 1048576.0,
            if ratio > 0.2 { ", missed" } else { "" }
        ),
        "≤ 0.2",
    );
    if !refused.is_empty() {
        // As if the refused batches had been sent: their sealed size plus
        // this run's measured overhead per request.
        let per_request = (up as f64 - env_bytes as f64) / queued.max(1) as f64;
        let est = up as f64 + refused_env_bytes as f64 + per_request * refused.len() as f64;
        row(
            rows,
            "3. the same, estimated as if the refused batches had been sent",
            format!(
                "{:.4} ({:.2} MiB of envelopes refused){}",
                est / raw as f64,
                refused_env_bytes as f64 / 1048576.0,
                if est / raw as f64 > 0.2 {
                    ", missed"
                } else {
                    ""
                }
            ),
            "≤ 0.2",
        );
    }
}

/// A loopback TCP relay that counts the bytes passing each way.
struct Relay {
    addr: SocketAddr,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    conns: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let conns = Arc::new(AtomicU64::new(0));
        let (u, d, c) = (up.clone(), down.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                c.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, u.clone()));
                tokio::spawn(pump(sr, cw, d.clone()));
            }
        });
        Relay {
            addr,
            up,
            down,
            conns,
            task,
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Parse one file natively the way the collector module reads it (message by
/// message for transcripts, chunks of 5000 lines for logs, whole CSV files).
fn parse_file(ext: &str, bytes: &[u8], fallback: &core::Instrument) -> Vec<core::Record> {
    match ext {
        "astm" | "hl7" => {
            let ends = if ext == "astm" {
                core::astm::message_ends(bytes)
            } else {
                core::hl7::message_ends(bytes)
            };
            let mut start = 0;
            let mut out = Vec::new();
            for end in ends.into_iter().chain([bytes.len()]) {
                if end <= start {
                    continue;
                }
                let unit = &bytes[start..end];
                out.extend(if ext == "astm" {
                    core::astm::parse(unit, fallback).records
                } else {
                    core::hl7::parse(unit, fallback).records
                });
                start = end;
            }
            out
        }
        "log" => bytes
            .chunk_by(|a, _| *a != b'\n')
            .collect::<Vec<_>>()
            .chunks(5000)
            .flat_map(|lines| core::logs::parse(&lines.concat(), fallback).records)
            .collect(),
        "csv" => core::csvjson::parse_csv(bytes, fallback).records,
        other => panic!("unexpected file kind {other}"),
    }
}

// ---------------------------------------------------------------------------
// Synthetic QC and event batches (for 1, 2, 4 and 5).

fn instrument() -> p::Instrument {
    p::Instrument {
        model: "XN-550".into(),
        serial: "BD634545".into(),
    }
}

/// Batch `i`: 100 QC results (even `i`, stream `qc`) or 100 instrument events
/// (odd `i`, stream `events`), as an analyser produces them.
fn synthetic_batch(rng: &mut Rng, i: u64) -> (&'static str, Vec<p::Record>) {
    let base = 1_764_300_000 + i as i64 * 600;
    if i.is_multiple_of(2) {
        let lot = format!("LOT{}", 4000 + rng.below(1000));
        let level = (1 + rng.below(3)).to_string();
        let records = (0..PER_BATCH)
            .map(|k| {
                let v = rng.below(2000);
                p::Record::Qc(p::QcResult {
                    instrument: instrument(),
                    analyte: ANALYTES[k % ANALYTES.len()].into(),
                    value: format!("{}.{:02}", v / 100, v % 100),
                    unit: "10*3/uL".into(),
                    reference_range: "4.0-10.0".into(),
                    flags: match v {
                        0..400 => vec!["L".into()],
                        1000.. => vec!["H".into()],
                        _ => Vec::new(),
                    },
                    control_lot: lot.clone(),
                    control_level: level.clone(),
                    run_time: Some(p::Timestamp {
                        seconds: base + (k / ANALYTES.len()) as i64 * 45,
                        nanoseconds: 0,
                    }),
                })
            })
            .collect();
        ("qc", records)
    } else {
        let records = (0..PER_BATCH)
            .map(|k| {
                let (severity, code, text) = match rng.below(5) {
                    0 => (
                        p::Severity::Warning,
                        format!("E-{}", 1000 + rng.below(9000)),
                        format!(
                            "reagent probe pressure {} kPa out of range 30-45",
                            rng.below(90)
                        ),
                    ),
                    1 => (
                        p::Severity::Error,
                        format!("E-{}", 1000 + rng.below(9000)),
                        format!(
                            "aspiration error on rack {} position {}",
                            rng.below(50),
                            rng.below(10)
                        ),
                    ),
                    2 => (
                        p::Severity::Notice,
                        String::new(),
                        format!("QC level {} within limits", 1 + rng.below(3)),
                    ),
                    _ => (
                        p::Severity::Info,
                        String::new(),
                        format!(
                            "[REDACTED:id] aspirated, rack {}, result sent to LIS",
                            rng.below(50)
                        ),
                    ),
                };
                p::Record::Event(p::InstrumentEvent {
                    instrument: instrument(),
                    severity,
                    code,
                    text,
                    time: Some(p::Timestamp {
                        seconds: base + k as i64 * 5,
                        nanoseconds: rng.below(1000) as u32 * 1_000_000,
                    }),
                })
            })
            .collect();
        ("events", records)
    }
}
