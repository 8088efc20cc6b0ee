//! The store on a real PostgreSQL server (#18): the same behaviour as on
//! SQLite, rows sealed before they reach the database, two ingest nodes
//! storing every batch once, and a node killed mid-stream losing nothing.
//! Linux only (the server is a Linux process); skipped with a message when
//! PostgreSQL is not installed, unless OUTPOST_REQUIRE_POSTGRES=1 (CI).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use outpost_cloud::store::InsertOutcome;
use outpost_cloud::{DatabaseConfig, HeartbeatOutcome, PostgresConfig, Store};
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use super::pg::{Durability, PgServer};
use super::*;

fn pg_config(url: &str) -> DatabaseConfig {
    DatabaseConfig::Postgres(PostgresConfig {
        url: Zeroizing::new(url.to_owned()),
        pool_size: 8,
        ca_pem: None,
    })
}

fn header(dev: &DeviceId, stream: &str, sequence: u64) -> EnvelopeHeader {
    EnvelopeHeader {
        device: dev.clone(),
        stream: stream.into(),
        sequence,
    }
}

fn new_device(key: &DeviceKey) -> outpost_cloud::NewDevice {
    outpost_cloud::NewDevice {
        email: EMAIL.into(),
        name: NAME.into(),
        instrument_model: MODEL.into(),
        instrument_id: INSTRUMENT_ID.into(),
        serial: SERIAL.into(),
        device_key: key.clone(),
    }
}

/// Every store operation the server uses, with the answers a device and an
/// operator rely on; the same on both engines.
fn exercise(store: &Store) -> DeviceId {
    let key = DeviceKey::generate();
    let dev = store.enroll(&new_device(&key)).unwrap();
    assert_eq!(
        store.device_key(&dev).unwrap().unwrap().to_hex(),
        key.to_hex()
    );
    assert!(store.device_key(&DeviceId::generate()).unwrap().is_none());

    let plain = compress(&serde_json::to_vec(&batch()).unwrap()).unwrap();
    let other = compress(b"{\"created-at\":1,\"records\":[]}").unwrap();
    let h = header(&dev, "qc", 5);
    assert_eq!(
        store.insert_batch(&h, &plain, 2).unwrap(),
        InsertOutcome::Stored
    );
    assert_eq!(
        store.insert_batch(&h, &plain, 2).unwrap(),
        InsertOutcome::Duplicate
    );
    assert_eq!(
        store.insert_batch(&h, &other, 0).unwrap(),
        InsertOutcome::Conflict
    );
    // A quarantined sequence is taken for clean batches, and a stored one
    // for flagged batches.
    let q = header(&dev, "qc", 6);
    assert_eq!(
        store.quarantine_batch(&q, &plain, 2, "Test.Sig").unwrap(),
        InsertOutcome::Stored
    );
    assert_eq!(
        store.insert_batch(&q, &plain, 2).unwrap(),
        InsertOutcome::Conflict
    );
    assert_eq!(
        store.quarantine_batch(&h, &plain, 2, "Test.Sig").unwrap(),
        InsertOutcome::Conflict
    );
    let stored = store.batches(Some(&dev), Some("qc")).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].sequence, &stored[0].body), (5, &batch()));
    assert!(store.batches(None, Some("logs")).unwrap().is_empty());
    let quarantined = store.quarantined(Some(&dev)).unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!((quarantined[0].sequence, quarantined[0].records), (6, 2));

    let hb = HeartbeatBody {
        online: true,
        software: vec![],
        queued_batches: 3,
        dropped: 0,
    };
    let mut hh = header(&dev, "heartbeat", 10);
    assert_eq!(
        store.record_heartbeat(&hh, &hb).unwrap(),
        HeartbeatOutcome::Accepted
    );
    hh.sequence = 9;
    assert_eq!(
        store.record_heartbeat(&hh, &hb).unwrap(),
        HeartbeatOutcome::Stale { last: 10 }
    );
    let status = store.status(&dev).unwrap().unwrap();
    assert_eq!(
        (status.last_sequence, status.heartbeat.queued_batches),
        (10, 3)
    );

    let counters = store.counters().unwrap();
    for (reason, n) in [
        ("accepted", 1),
        ("replay", 1),
        ("sequence-conflict", 3),
        ("quarantined", 1),
        ("heartbeat", 1),
        ("stale-heartbeat", 1),
        ("source-blocked", 0),
    ] {
        assert_eq!(counters[reason], n, "{reason}");
    }
    store
        .add_counts(&[("slow-client", 4), ("slow-client", 1)])
        .unwrap();
    assert_eq!(store.counters().unwrap()["slow-client"], 5);

    let alert = outpost_cloud::Alert {
        at: 1_700_000_000,
        kind: outpost_cloud::AlertKind::SourceBlocked,
        reason: "authentication-failed".into(),
        source: "192.0.2.7".into(),
        device: Some(dev.clone()),
        block_secs: Some(60),
    };
    store.add_alerts(&[alert.clone(), alert.clone()]).unwrap();
    assert_eq!(store.alerts(1).unwrap(), vec![alert]);
    assert_eq!(
        store.alert_counts().unwrap()[&outpost_cloud::AlertKind::SourceBlocked],
        2
    );

    outpost_cloud::staff::db::set_region(store, &dev, "eu-north").unwrap();
    outpost_cloud::staff::db::set_region(store, &dev, "eu-west").unwrap();
    assert_eq!(
        outpost_cloud::staff::db::region_of(store, &dev)
            .unwrap()
            .as_deref(),
        Some("eu-west")
    );
    let devices = store.devices().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(
        (devices[0].email.as_str(), devices[0].name.as_str()),
        (EMAIL, NAME)
    );
    dev
}

#[test]
fn the_store_behaves_the_same_on_sqlite_and_postgres_and_seals_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&dir.path().join("sqlite")).unwrap();
    exercise(&sqlite);

    let Some(pg) = PgServer::start("postgres store", Durability::Off) else {
        return;
    };
    let url = pg.database("behaviour");
    let data = dir.path().join("pg");
    let store = Store::open_with(&data, &pg_config(&url)).unwrap();
    assert!(
        !data.join("cloud.db").exists(),
        "no SQLite file beside PostgreSQL"
    );
    assert!(
        store
            .describe()
            .contains(&format!("127.0.0.1:{}/behaviour", pg.port))
    );
    assert!(!store.describe().contains(pg.password()));
    let dev = exercise(&store);

    // A second node opening the same database (the schema exists) sees it all.
    let again = Store::open_with(&data, &pg_config(&url)).unwrap();
    assert_eq!(again.batches(Some(&dev), None).unwrap().len(), 1);

    // The database holds sealed rows only: the raw bytes of every sealed
    // column (printable bytes as they are) and every other column hold the
    // device id (routing) but none of the personal or record text.
    let mut dump = String::new();
    for table in ["devices", "batches", "device_status", "quarantine"] {
        dump += &pg
            .psql(
                "behaviour",
                &format!(
                    "SELECT string_agg(encode(sealed, 'escape') || device_id, ' ') FROM {table}"
                ),
            )
            .unwrap();
    }
    for table in [
        "counters",
        "alerts",
        "device_region",
        "staff_audit",
        "staff_known_location",
    ] {
        dump += &pg
            .psql(
                "behaviour",
                &format!("SELECT string_agg(t::text, ' ') FROM {table} t"),
            )
            .unwrap();
    }
    assert!(
        dump.contains(dev.as_str()),
        "sanity: the device id is routing data"
    );
    assert!(
        dump.contains("eu-west"),
        "sanity: the region is routing data"
    );
    for secret in [EMAIL, NAME, MODEL, SERIAL, RECORD_TEXT, ANALYTE, LOT] {
        assert!(!dump.contains(secret), "{secret} is in the database");
    }

    // The key stays with the nodes: a node with another server key is
    // refused at start, naming the key file, and its key opens no row.
    let e = format!(
        "{:#}",
        Store::open_with(&dir.path().join("stranger"), &pg_config(&url))
            .err()
            .unwrap()
    );
    assert!(
        e.contains("server.key") && e.contains("is not the key the rows"),
        "{e}"
    );
    let stranger = Store::open(&dir.path().join("stranger")).unwrap();
    assert!(
        stranger.devices().unwrap().is_empty(),
        "its own SQLite store"
    );
}

#[test]
fn a_wrong_password_or_database_is_named_at_start_without_the_password() {
    let Some(pg) = PgServer::start("postgres refusals", Durability::Off) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wrong = pg
        .url("postgres")
        .replace(pg.password(), "not-the-password");
    let e = format!(
        "{:#}",
        Store::open_with(dir.path(), &pg_config(&wrong))
            .err()
            .unwrap()
    );
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(!e.contains("not-the-password"), "{e}");
    let e = format!(
        "{:#}",
        Store::open_with(dir.path(), &pg_config(&pg.url("nosuchdb")))
            .err()
            .unwrap()
    );
    assert!(e.contains("nosuchdb"), "{e}");
    assert!(!e.contains(pg.password()), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_given_the_same_batches_at_once_store_each_once() {
    let Some(pg) = PgServer::start("two nodes", Durability::Off) else {
        return;
    };
    let url = pg.database("twonodes");
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut cfg = config(&pki, &dir.path().join("data"));
        cfg.database = pg_config(&url);
        cfg.defence = outpost_cloud::DefenceConfig::without_rate_limits();
        nodes.push(Server::start(cfg).await.unwrap());
    }
    let (a, b) = (nodes[0].addr(), nodes[1].addr());
    let fx = Fixture {
        pki,
        server: nodes.remove(0),
        _dir: tempfile::tempdir().unwrap(),
    };
    let other = nodes.remove(0);
    let key = DeviceKey::generate();
    let dev = fx.enroll(&key).await;
    const N: u64 = 120;
    let ca = fx.pki.ca_cert_pem.clone();
    // Both copies of each sequence race, 16 sequences at a time (32
    // connections, under the per-address cap).
    let mut duplicates: BTreeMap<u64, u32> = BTreeMap::new();
    for chunk in (1..=N).collect::<Vec<_>>().chunks(16) {
        let mut sends = tokio::task::JoinSet::new();
        for &seq in chunk {
            let env = seal(&key, &dev, "qc", seq, &batch()).unwrap();
            for addr in [a, b] {
                let (ca, env) = (ca.clone(), env.clone());
                sends.spawn(async move {
                    let (s, body, _) = post_with(
                        &ca,
                        addr,
                        INGEST_PATH,
                        "application/octet-stream",
                        env,
                        false,
                    )
                    .await;
                    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
                    serde_json::from_slice::<IngestAck>(&body).unwrap()
                });
            }
        }
        while let Some(ack) = sends.join_next().await {
            let ack = ack.unwrap();
            *duplicates.entry(ack.sequence).or_default() += u32::from(ack.duplicate);
        }
    }
    // Each sequence: one node stored it, the other answered "duplicate".
    assert_eq!(duplicates.len(), N as usize);
    assert!(duplicates.values().all(|d| *d == 1), "{duplicates:?}");
    let stored = fx.server.store().batches(Some(&dev), None).unwrap();
    assert_eq!(
        stored.iter().map(|b| b.sequence).collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>()
    );
    other.shutdown().await;
    let counters = fx.server.store().counters().unwrap();
    assert_eq!((counters["accepted"], counters["replay"]), (N, N));
    assert_eq!(counters["sequence-conflict"], 0);
    fx.server.shutdown().await;
}

/// A node of the fleet: the real `outpost-cloud serve` process.
struct Node {
    child: Child,
    addr: SocketAddr,
}

fn spawn_node(dir: &Path, url_file: &Path) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_outpost-cloud"))
        .arg("serve")
        .arg("--data")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0", "--dangerous-no-scanner"])
        .arg("--cert")
        .arg(dir.join("pki/server.pem"))
        .arg("--key")
        .arg(dir.join("pki/server.key.pem"))
        .arg("--enrollment-token-file")
        .arg(dir.join("token"))
        .arg("--database-url-file")
        .arg(url_file)
        .env_remove("OUTPOST_CLOUD_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on https://")
        .unwrap_or_else(|| panic!("node printed {line:?}"))
        .parse()
        .unwrap();
    Node { child, addr }
}

/// A TCP load balancer on loopback: each connection goes to the next node
/// in turn, skipping nodes that refuse the connection.
async fn balancer(nodes: Vec<SocketAddr>) -> (SocketAddr, std::sync::Arc<[AtomicUsize; 2]>) {
    balancer_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), nodes)
}

/// [`balancer`] on a listener bound before the nodes started.
fn balancer_on(
    listener: TcpListener,
    nodes: Vec<SocketAddr>,
) -> (SocketAddr, std::sync::Arc<[AtomicUsize; 2]>) {
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let counts = std::sync::Arc::clone(&served);
    tokio::spawn(async move {
        let next = AtomicUsize::new(0);
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let start = next.fetch_add(1, Ordering::Relaxed);
            let mut upstream = None;
            for i in 0..nodes.len() {
                let n = (start + i) % nodes.len();
                if let Ok(s) = tokio::net::TcpStream::connect(nodes[n]).await {
                    counts[n].fetch_add(1, Ordering::Relaxed);
                    upstream = Some(s);
                    break;
                }
            }
            if let Some(mut up) = upstream {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                });
            }
        }
    });
    (addr, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_loses_nothing_the_device_retries_land_on_the_other() {
    let Some(pg) = PgServer::start("node killed", Durability::Off) else {
        return;
    };
    let url = pg.database("killnode");
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    pki.write(&dir.path().join("pki")).unwrap();
    let url_file = dir.path().join("database-url");
    for (file, text) in [
        (dir.path().join("token"), TOKEN),
        (url_file.clone(), url.as_str()),
    ] {
        std::fs::write(&file, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut a = spawn_node(dir.path(), &url_file);
    let mut b = spawn_node(dir.path(), &url_file);
    let (lb, served) = balancer(vec![a.addr, b.addr]).await;
    let key = DeviceKey::generate();
    let dev = {
        let (s, body, _) = post_with(
            &pki.ca_cert_pem,
            lb,
            ENROLL_PATH,
            "application/json",
            super::hardening::enroll_body(&key, Some(TOKEN)),
            false,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        serde_json::from_slice::<EnrollResponse>(&body)
            .unwrap()
            .device_id
    };
    const N: u64 = 200;
    let mut retries = 0u32;
    let mut killed_at = None;
    for seq in 1..=N {
        let env = seal(&key, &dev, "qc", seq, &batch()).unwrap();
        if seq == N / 2 {
            // Node A dies holding half of this batch: the device's send
            // breaks, and its resend goes through the balancer to node B.
            let tcp = TcpStream::connect(a.addr).await.unwrap();
            let mut tls = TlsConnector::from(client_config(&pki.ca_cert_pem, false))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let head = format!(
                "POST {INGEST_PATH} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
                env.len()
            );
            tls.write_all(head.as_bytes()).await.unwrap();
            tls.write_all(&env[..env.len() / 2]).await.unwrap();
            tls.flush().await.unwrap();
            a.child.kill().unwrap();
            a.child.wait().unwrap();
            killed_at = Some(seq);
            let _ = tls.write_all(&env[env.len() / 2..]).await;
            let mut answer = Vec::new();
            let read = tls.read_to_end(&mut answer).await;
            assert!(
                read.is_err() || !answer.starts_with(b"HTTP/1.1 200"),
                "a killed node acknowledged"
            );
            retries += 1;
        }
        // The device's rule: resend until acknowledged.
        let mut attempt = 0;
        loop {
            match try_post(&pki.ca_cert_pem, lb, env.clone()).await {
                Some(StatusCode::OK) => break,
                other => {
                    attempt += 1;
                    retries += 1;
                    assert!(attempt < 20, "sequence {seq} never acknowledged: {other:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    assert_eq!(killed_at, Some(N / 2));
    let store = Store::open_with(&dir.path().join("data"), &pg_config(&url)).unwrap();
    let stored = tokio::task::spawn_blocking(move || store.batches(None, None).unwrap())
        .await
        .unwrap();
    assert_eq!(
        stored.iter().map(|b| b.sequence).collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>(),
        "every batch stored exactly once"
    );
    assert!(stored.iter().all(|b| b.body == batch()));
    // Node B took every connection after the kill.
    let after_kill_b = served[1].load(Ordering::Relaxed);
    assert!(after_kill_b as u64 >= N / 2, "node B served {after_kill_b}");
    eprintln!("node A killed at sequence {}; {retries} resends", N / 2);

    // The operator's CLI reads the fleet's database.
    let out = Command::new(env!("CARGO_BIN_EXE_outpost-cloud"))
        .args(["stats", "--json", "--data"])
        .arg(dir.path().join("data"))
        .arg("--database-url-file")
        .arg(&url_file)
        .env_remove("OUTPOST_CLOUD_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: BTreeMap<String, u64> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["accepted"], N);
    let _ = b.child.kill();
    let _ = b.child.wait();
}

/// One send through a fresh connection; the status, or `None` when the
/// connection broke.
async fn try_post(ca: &str, addr: SocketAddr, env: Vec<u8>) -> Option<StatusCode> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let tls = TlsConnector::from(client_config(ca, false))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    let (s, _, _) = tokio::time::timeout(
        Duration::from_secs(10),
        send_on(tls, addr, INGEST_PATH, "application/octet-stream", env),
    )
    .await
    .ok()?
    .ok()?;
    Some(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staff_sign_in_and_session_span_the_nodes_behind_the_balancer() {
    let Some(pg) = PgServer::start("staff across nodes", Durability::Off) else {
        return;
    };
    let url = pg.database("staffnodes");
    // The balancer's address is the staff base URL: the provider sends the
    // browser back there, to whichever node the balancer picks.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let Some(provider) = super::staff::Provider::start(&format!("{base}/staff/callback"), &[])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut cfg = config(&pki, &dir.path().join("data"));
        cfg.database = pg_config(&url);
        cfg.region = "eu".into();
        cfg.staff = Some(outpost_cloud::StaffConfig::new(
            &provider.issuer,
            super::staff::CLIENT_ID,
            super::staff::CLIENT_SECRET,
            &base,
        ));
        nodes.push(Server::start(cfg).await.unwrap());
    }
    let (_, served) = balancer_on(listener, vec![nodes[0].addr(), nodes[1].addr()]);
    let key = DeviceKey::generate();
    let (s, body, _) = post_with(
        &pki.ca_cert_pem,
        nodes[1].addr(),
        ENROLL_PATH,
        "application/json",
        super::hardening::enroll_body(&key, Some(TOKEN)),
        false,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let dev = serde_json::from_slice::<EnrollResponse>(&body)
        .unwrap()
        .device_id;

    // Every request of the browser is a new connection: the balancer
    // alternates nodes, so the sign-in starts on one and its callback lands
    // on the other.
    let mut alice = super::staff::Browser::new(&pki.ca_cert_pem);
    let (r, _) = alice
        .follow(&format!("{base}/staff/login?login_hint=alice"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let authority = base.trim_start_matches("https://").to_owned();
    let session = alice.jar[&authority][outpost_cloud::staff::SESSION_COOKIE].clone();
    for _ in 0..4 {
        let r = alice.get(&format!("{base}/staff/devices")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(r.text().contains(dev.as_str()), "{}", r.text());
    }
    let (a, b) = (
        served[0].load(Ordering::Relaxed),
        served[1].load(Ordering::Relaxed),
    );
    assert!(
        a >= 3 && b >= 3,
        "the balancer sent {a} and {b} connections"
    );
    // Signing out on one node ends the session on every node.
    let r = alice.request("POST", &format!("{base}/staff/logout")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    // The cookie as it was before sign-out, replayed on both nodes.
    alice
        .jar
        .entry(authority)
        .or_default()
        .insert(outpost_cloud::staff::SESSION_COOKIE.into(), session);
    for _ in 0..2 {
        let r = alice.get(&format!("{base}/staff/devices")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
        assert!(r.text().contains("no staff session"), "{}", r.text());
    }
    // The audit, written by both nodes, has the whole story once.
    let audit = outpost_cloud::staff::audit_entries(nodes[0].store()).unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "sign-in",
            "list-devices",
            "list-devices",
            "list-devices",
            "list-devices",
            "sign-out"
        ]
    );
    for n in nodes {
        n.shutdown().await;
    }
}
