//! Intrusion defence (#18): request rates per source and per device,
//! sources blocked after forgeries and replay bursts, alerts, and the
//! metrics listener — while a legitimate device keeps uploading.
//!
//! Sources are addresses of 127.0.0.0/8, which Linux and Windows route to
//! the loopback interface.
#![cfg(any(target_os = "linux", target_os = "windows"))]

use super::hardening::{GUARD, enroll_body, eventually, read_until_closed, slow_body, tls_from};
use super::*;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use outpost_cloud::{AlertKind, DefenceConfig, Rate};
use tokio::task::JoinSet;

const DEVICE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const FLOOD: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const FORGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
const GUESSER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));

/// POST `body` to `path` on a fresh connection from `source`.
async fn post_from(
    fx: &Fixture,
    source: IpAddr,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, hyper::HeaderMap, Vec<u8>), String> {
    let tls = tls_from(&fx.pki.ca_cert_pem, source, fx.addr())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    send_on(tls, fx.addr(), path, content_type, body)
        .await
        .map_err(|e| format!("request: {e}"))
}

async fn enroll_from(fx: &Fixture, source: IpAddr, key: &DeviceKey) -> DeviceId {
    let (s, _, b) = post_from(
        fx,
        source,
        ENROLL_PATH,
        "application/json",
        enroll_body(key, Some(TOKEN)),
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    serde_json::from_slice::<EnrollResponse>(&b)
        .unwrap()
        .device_id
}

async fn ingest_from(
    fx: &Fixture,
    source: IpAddr,
    envelope: Vec<u8>,
) -> (StatusCode, hyper::HeaderMap, Vec<u8>) {
    post_from(
        fx,
        source,
        INGEST_PATH,
        "application/octet-stream",
        envelope,
    )
    .await
    .unwrap()
}

fn retry_after(h: &hyper::HeaderMap) -> u64 {
    h.get("retry-after")
        .expect("a 429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The metrics page of `fx`'s metrics listener.
async fn metrics_page(fx: &Fixture, path: &str) -> String {
    let addr = fx.server.metrics_addr().expect("metrics listener");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of the metric line starting with `name` (labels included).
fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{page}"))
        .parse()
        .unwrap()
}

fn with_metrics(c: &mut ServerConfig) {
    c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
}

#[tokio::test]
async fn an_enrolment_flood_is_rate_limited_and_alerted_while_another_address_enrols() {
    let fx = start_with(|c| {
        with_metrics(c);
        c.defence.enroll_per_source = Rate::new(6, 5);
    })
    .await;
    // 30 enrolments with the right token from one address, at once.
    let mut flood = JoinSet::new();
    for _ in 0..30 {
        let (ca, addr) = (fx.pki.ca_cert_pem.clone(), fx.addr());
        flood.spawn(async move {
            let tls = tls_from(&ca, FLOOD, addr).await.unwrap();
            let key = DeviceKey::generate();
            send_on(
                tls,
                addr,
                ENROLL_PATH,
                "application/json",
                enroll_body(&key, Some(TOKEN)),
            )
            .await
            .unwrap()
        });
    }
    let (mut ok, mut limited) = (0, 0);
    while let Some(r) = flood.join_next().await {
        let (s, h, b) = r.unwrap();
        match s {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                api_error(s, &b, 429, ErrorCode::RateLimited);
                assert!((1..=10).contains(&retry_after(&h)));
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    // The burst of five (a sixth only if the test took ten seconds).
    assert!((5..=6).contains(&ok), "{ok} enrolled");
    assert_eq!(ok + limited, 30);
    // Another address is not affected: it enrols and delivers.
    let key = DeviceKey::generate();
    let dev = enroll_from(&fx, DEVICE, &key).await;
    let (s, _, _) = ingest_from(&fx, DEVICE, seal(&key, &dev, "qc", 1, &batch()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(fx.server.store().devices().unwrap().len(), ok + 1);
    // One alert for the flood (not one per refusal), naming the address.
    let alerts = fx.server.recent_alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, AlertKind::SourceRateExceeded);
    assert_eq!(alerts[0].reason, "enroll");
    assert_eq!(alerts[0].source, "127.0.0.3");
    // The operator sees it on the metrics listener.
    let page = metrics_page(&fx, "/metrics").await;
    assert_eq!(
        metric(&page, "outpost_cloud_events_total{reason=\"rate-limited\"}"),
        limited as u64
    );
    assert_eq!(
        metric(
            &page,
            "outpost_cloud_alerts_total{kind=\"source-rate-exceeded\"}"
        ),
        1
    );
    let listed: Vec<outpost_cloud::Alert> =
        serde_json::from_str(&metrics_page(&fx, "/alerts").await).unwrap();
    assert_eq!(listed, alerts);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn forged_envelopes_get_the_address_blocked_with_an_alert_naming_the_device() {
    let fx = start_with(with_metrics).await;
    let key = DeviceKey::generate();
    let dev = enroll_from(&fx, DEVICE, &key).await;
    // Someone else sends envelopes under the device's id, sealed with a key
    // of their own: each fails authentication, and the twentieth blocks
    // their address.
    let forged_key = DeviceKey::generate();
    let strikes = DefenceConfig::default().strikes_before_block;
    for seq in 1..=u64::from(strikes) {
        let forged = seal(&forged_key, &dev, "qc", seq, &batch()).unwrap();
        let (s, _, b) = ingest_from(&fx, FORGER, forged).await;
        api_error(s, &b, 400, ErrorCode::AuthenticationFailed);
    }
    // Blocked now: even a well-formed envelope from that address is refused
    // before it is read, with the time to wait.
    let genuine = seal(&key, &dev, "qc", 1, &batch()).unwrap();
    let (s, h, b) = ingest_from(&fx, FORGER, genuine.clone()).await;
    api_error(s, &b, 429, ErrorCode::RateLimited);
    assert_eq!(retry_after(&h), 60);
    // The device at its own address keeps uploading; its latency is reported.
    let mut latencies = Vec::new();
    for seq in 1..=20u64 {
        let env = seal(&key, &dev, "qc", seq, &batch()).unwrap();
        let t = Instant::now();
        let (s, _, _) = ingest_from(&fx, DEVICE, env).await;
        latencies.push(t.elapsed());
        assert_eq!(s, StatusCode::OK);
    }
    latencies.sort();
    println!(
        "device upload latency while its forger is blocked: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert_eq!(
        fx.server.store().batches(Some(&dev), None).unwrap().len(),
        20
    );
    let alerts = fx.server.recent_alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(
        (
            a.kind,
            a.reason.as_str(),
            a.source.as_str(),
            a.device.as_ref()
        ),
        (
            AlertKind::SourceBlocked,
            "authentication-failed",
            "127.0.0.4",
            Some(&dev)
        )
    );
    assert_eq!(a.block_secs, Some(60));
    let page = metrics_page(&fx, "/metrics").await;
    assert_eq!(metric(&page, "outpost_cloud_blocked_sources"), 1);
    assert_eq!(
        metric(
            &page,
            "outpost_cloud_events_total{reason=\"authentication-failed\"}"
        ),
        u64::from(strikes)
    );
    assert_eq!(
        metric(
            &page,
            "outpost_cloud_events_total{reason=\"source-blocked\"}"
        ),
        1
    );
    // The alert is kept: after a restart `outpost-cloud alerts` lists it.
    let data = fx.server.store().dir().to_path_buf();
    fx.server.shutdown().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outpost-cloud"))
        .args(["alerts", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept: Vec<outpost_cloud::Alert> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(kept, alerts);
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_outpost-cloud"))
        .args(["alerts", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("source-blocked")
            && text.contains("127.0.0.4")
            && text.contains(dev.as_str()),
        "{text}"
    );
}

#[tokio::test]
async fn an_occasional_replay_is_answered_but_a_replay_burst_blocks_the_address() {
    let fx = start().await;
    let key = DeviceKey::generate();
    let dev = enroll_from(&fx, DEVICE, &key).await;
    let env = seal(&key, &dev, "qc", 1, &batch()).unwrap();
    // A lost acknowledgement: the host sends the batch again, a few times.
    for _ in 0..4 {
        let (s, _, b) = ingest_from(&fx, DEVICE, env.clone()).await;
        assert_eq!(s, StatusCode::OK);
        let _: IngestAck = serde_json::from_slice(&b).unwrap();
    }
    // Someone who captured the envelope replays it in a burst from another
    // address: a replay weighs a quarter, so the eightieth blocks.
    let per_block = DefenceConfig::default().strikes_before_block * 4;
    let mut answered = 0;
    for _ in 0..per_block {
        let (s, _, _) = ingest_from(&fx, FORGER, env.clone()).await;
        assert_eq!(s, StatusCode::OK);
        answered += 1;
    }
    let (s, h, b) = ingest_from(&fx, FORGER, env.clone()).await;
    api_error(s, &b, 429, ErrorCode::RateLimited);
    assert!(retry_after(&h) > 0);
    assert_eq!(answered, per_block);
    // Stored once; the device itself was never blocked.
    assert_eq!(
        fx.server.store().batches(Some(&dev), None).unwrap().len(),
        1
    );
    let (s, _, _) = ingest_from(&fx, DEVICE, seal(&key, &dev, "qc", 2, &batch()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let alerts = fx.server.recent_alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (alerts[0].kind, alerts[0].reason.as_str()),
        (AlertKind::SourceBlocked, "replay")
    );
    fx.server.shutdown().await;
}

#[tokio::test]
async fn a_device_over_its_rate_is_told_to_wait_and_loses_nothing() {
    let fx = start_with(|c| c.defence.ingest_per_device = Rate::new(60, 3)).await;
    let key = DeviceKey::generate();
    let dev = enroll_from(&fx, DEVICE, &key).await;
    let mut waiting = Vec::new();
    for seq in 1..=6u64 {
        let env = seal(&key, &dev, "qc", seq, &batch()).unwrap();
        let (s, h, b) = ingest_from(&fx, DEVICE, env.clone()).await;
        match s {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => {
                api_error(s, &b, 429, ErrorCode::RateLimited);
                waiting.push((retry_after(&h), env));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        waiting.len() >= 2,
        "the burst is three: {} refused",
        waiting.len()
    );
    // As the host's uplink does: wait Retry-After, send the same batch again.
    for (wait, env) in waiting {
        assert!((1..=2).contains(&wait), "Retry-After {wait}");
        let deadline = Instant::now() + GUARD;
        let mut wait = wait;
        loop {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            let (s, h, _) = ingest_from(&fx, DEVICE, env.clone()).await;
            if s == StatusCode::OK {
                break;
            }
            assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
            assert!(Instant::now() < deadline, "never accepted");
            wait = retry_after(&h);
        }
    }
    let stored = fx.server.store().batches(Some(&dev), None).unwrap();
    assert_eq!(
        stored.iter().map(|b| b.sequence).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    let alerts = fx.server.recent_alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, AlertKind::DeviceRateExceeded);
    assert_eq!(alerts[0].device.as_ref(), Some(&dev));
    fx.server.shutdown().await;
}

/// Deliver `env` from [`DEVICE`] as the host would: retry a refused
/// connection or a `429`/`503` until it is acknowledged. Returns how long it
/// took and how many attempts failed.
async fn deliver(fx: &Fixture, env: Vec<u8>) -> (Duration, u32) {
    // Wine's socket layer is far slower under the attack's load.
    let guard = if cfg!(windows) { GUARD * 4 } else { GUARD };
    let start = Instant::now();
    let mut failed = 0;
    loop {
        let left = guard
            .checked_sub(start.elapsed())
            .unwrap_or_else(|| panic!("not delivered within {guard:?}"));
        let post = post_from(
            fx,
            DEVICE,
            INGEST_PATH,
            "application/octet-stream",
            env.clone(),
        );
        let answer = tokio::time::timeout(left, post)
            .await
            .unwrap_or_else(|_| panic!("not delivered within {guard:?}"));
        match answer {
            Ok((StatusCode::OK, _, _)) => return (start.elapsed(), failed),
            Ok((s, _, b)) => panic!("device refused: {s} {}", String::from_utf8_lossy(&b)),
            Err(_) => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn five_hundred_slow_connections_a_flood_and_a_guessing_burst_leave_a_device_uploading() {
    // Under Wine (the Windows build in CI) 500 TLS handshakes at once take
    // minutes through its socket layer; there the test holds 100.
    const SLOW: u32 = if cfg!(windows) { 100 } else { 500 };
    let fx = start_with(|c| {
        with_metrics(c);
        c.limits.handshake_timeout = Duration::from_secs(5);
        c.limits.header_timeout = Duration::from_secs(5);
        c.limits.body_timeout = Duration::from_secs(5);
        // Room for the slow connections and the flood, so that the rate
        // limits and the lock-out, not the global cap, meet the flood.
        c.limits.max_connections = 1024;
    })
    .await;
    let key = DeviceKey::generate();
    let dev = enroll_from(&fx, DEVICE, &key).await;
    let (ca, addr) = (fx.pki.ca_cert_pem.clone(), fx.addr());
    // SLOW slow-body connections, 50 from each address (under the
    // per-address cap), held open.
    let mut slow = JoinSet::new();
    let started = Instant::now();
    for i in 0..SLOW {
        let ca = ca.clone();
        let src = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (i / 50) as u8));
        slow.spawn(async move { slow_body(&ca, src, addr).await.ok() });
    }
    // An enrolment flood and a token-guessing burst at the same time.
    let mut attack = JoinSet::new();
    for i in 0..80u32 {
        let ca = ca.clone();
        let (src, token) = if i % 4 != 0 {
            (FLOOD, Some(TOKEN))
        } else {
            (GUESSER, Some("a-wrong-guess-0000000000"))
        };
        attack.spawn(async move {
            let Ok(tls) = tls_from(&ca, src, addr).await else {
                return None;
            };
            let key = DeviceKey::generate();
            send_on(
                tls,
                addr,
                ENROLL_PATH,
                "application/json",
                enroll_body(&key, token),
            )
            .await
            .ok()
            .map(|(s, _, _)| s)
        });
    }
    // Meanwhile the device uploads 20 batches, one after another.
    let mut latencies = Vec::new();
    let mut retries = 0;
    for seq in 1..=20u64 {
        let env = seal(&key, &dev, "qc", seq, &batch()).unwrap();
        let (took, failed) = deliver(&fx, env).await;
        latencies.push(took);
        retries += failed;
    }
    let mut held = Vec::new();
    while let Some(r) = slow.join_next().await {
        held.extend(r.unwrap());
    }
    let mut statuses = Vec::new();
    while let Some(r) = attack.join_next().await {
        statuses.extend(r.unwrap());
    }
    latencies.sort();
    println!(
        "device under attack: 20 batches, upload latency median {:?}, max {:?}, {retries} refused connections retried; {} of {SLOW} slow connections held",
        latencies[10],
        latencies[19],
        held.len()
    );
    assert_eq!(
        fx.server.store().batches(Some(&dev), None).unwrap().len(),
        20
    );
    // Of the flood's 60 enrolments at most its burst of 30 and one more for
    // every six seconds the test took went through, and of the guesser's 20
    // at most five were looked at (one more for each minute of lock-out that
    // ran out); the rest were told to wait.
    let took = started.elapsed().as_secs() as usize;
    let count = |want: StatusCode| statuses.iter().filter(|s| **s == want).count();
    let closed = 80 - statuses.len();
    println!(
        "attack: {} enrolled, {} wrong tokens looked at, {} told to wait, {closed} closed by the caps",
        count(StatusCode::OK),
        count(StatusCode::UNAUTHORIZED),
        count(StatusCode::TOO_MANY_REQUESTS)
    );
    let (flood_max, guess_max) = (31 + took / 6, 5 + took / 60);
    assert!(count(StatusCode::OK) <= flood_max, "{took} s: {statuses:?}");
    assert!(
        count(StatusCode::UNAUTHORIZED) <= guess_max,
        "{took} s: {statuses:?}"
    );
    assert_eq!(closed, 0, "{statuses:?}");
    assert!(
        count(StatusCode::TOO_MANY_REQUESTS) >= 80 - flood_max - guess_max,
        "{took} s: {statuses:?}"
    );
    // Every slow connection is closed by the body timeout.
    for (i, s) in held.into_iter().enumerate() {
        read_until_closed(&format!("slow connection {i}"), s).await;
    }
    eventually("all connections closed", || {
        fx.server.open_connections() == 0
    })
    .await;
    let page = metrics_page(&fx, "/metrics").await;
    assert!(metric(&page, "outpost_cloud_events_total{reason=\"slow-client\"}") > 0);
    fx.server.shutdown().await;
}
