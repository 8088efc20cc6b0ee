//! Ingest rate of the reference cloud (#18): records/s and batches/s with
//! the embedded SQLite store, with the intrusion defence on (the served
//! defaults) and with its request rates off; then with PostgreSQL (a fresh
//! local cluster, every commit synced) behind one node and behind two
//! nodes sharing it, in one run. Without PostgreSQL (Debian: apt-get
//! install postgresql) the PostgreSQL rows say why they are missing.
//!
//! `cargo bench -p outpost-cloud --bench ingest` (`INGEST_BATCHES`: batches
//! per device, default 200). Real TLS on 127.0.0.1, real HTTP/1.1 keep-alive
//! connections, one per device. These machines are shared and noisy: compare
//! the rows of one run, not runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use outpost_cloud::{
    DatabaseConfig, DefenceConfig, Enrollment, EnrollmentToken, RunningServer, Server,
    ServerConfig, TestPki,
};
use outpost_protocol::*;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const TOKEN: &str = "bench-enrolment-token-0123456789";
const DEVICES: usize = 8;
const RECORDS_PER_BATCH: usize = 100;

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(tls: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Sender {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let s = TlsConnector::from(Arc::clone(tls))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

async fn post(sender: &mut Sender, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    sender.ready().await.unwrap();
    let req = hyper::Request::post(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
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

fn batch(n: usize, seq: u64) -> BatchBody {
    let inst = Instrument {
        model: "XN-550-Hematology".into(),
        serial: "SN-77889900-Q".into(),
    };
    BatchBody {
        created_at: 1_700_000_000,
        records: (0..n)
            .map(|i| {
                Record::Qc(QcResult {
                    instrument: inst.clone(),
                    analyte: "HbA1c-control-analyte".into(),
                    value: format!("5.{}", (seq as usize + i) % 10),
                    unit: "%".into(),
                    reference_range: "5.1-5.9".into(),
                    flags: vec![],
                    control_lot: "LOT-2024-998877".into(),
                    control_level: "HIGH".into(),
                    run_time: Some(Timestamp {
                        seconds: 1_699_999_000 + i as i64,
                        nanoseconds: 0,
                    }),
                })
            })
            .collect(),
    }
}

#[cfg(unix)]
#[path = "../tests/api/pg.rs"]
mod pg;

struct Cloud {
    nodes: Vec<RunningServer>,
    pki: TestPki,
    _dir: tempfile::TempDir,
}

/// `nodes` servers sharing one data directory (server key) and `database`.
async fn start(defence: DefenceConfig, database: DatabaseConfig, nodes: usize) -> Cloud {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    let mut servers = Vec::new();
    for _ in 0..nodes {
        let mut cfg = ServerConfig::new(
            dir.path().join("cloud"),
            "127.0.0.1:0".parse().unwrap(),
            pki.server_cert_pem.clone(),
            pki.server_key_pem.clone(),
            Enrollment::Token(EnrollmentToken::new(TOKEN).unwrap()),
        );
        cfg.defence = defence.clone();
        cfg.database = database.clone();
        servers.push(Server::start(cfg).await.unwrap());
    }
    Cloud {
        nodes: servers,
        pki,
        _dir: dir,
    }
}

/// Enrol `DEVICES` devices, then each sends `batches` sealed batches over
/// its own keep-alive connection (device i to node i mod nodes, as a load
/// balancer spreads connections); the wall time of the sending.
async fn run(cloud: &Cloud, batches: u64) -> (Duration, u64) {
    let tls = client_config(&cloud.pki.ca_cert_pem);
    let mut devices = Vec::new();
    for d in 0..DEVICES {
        let addr = cloud.nodes[d % cloud.nodes.len()].addr();
        let key = DeviceKey::generate();
        let mut s = connect(&tls, addr).await;
        let req = EnrollRequest {
            email: "lab@example.org".into(),
            name: "Lab".into(),
            instrument_model: "XN-550".into(),
            instrument_id: "HEMA-1".into(),
            serial: "SN-1".into(),
            device_key: key.to_hex(),
            enrollment_token: Some(TOKEN.into()),
        };
        let (st, b) = post(&mut s, ENROLL_PATH, serde_json::to_vec(&req).unwrap()).await;
        assert_eq!(st, 200);
        let id = serde_json::from_slice::<EnrollResponse>(&b)
            .unwrap()
            .device_id;
        // Sealed up front: the bench measures the server.
        let envs: Vec<Vec<u8>> = (1..=batches)
            .map(|seq| seal(&key, &id, "qc", seq, &batch(RECORDS_PER_BATCH, seq)).unwrap())
            .collect();
        devices.push((s, envs));
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut s, envs) in devices {
        tasks.spawn(async move {
            let mut limited = 0u64;
            for env in envs {
                loop {
                    let (st, _) = post(&mut s, INGEST_PATH, env.clone()).await;
                    match st {
                        200 => break,
                        429 => {
                            limited += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => panic!("ingest answered {other}"),
                    }
                }
            }
            limited
        });
    }
    let mut limited = 0;
    while let Some(r) = tasks.join_next().await {
        limited += r.unwrap();
    }
    (start.elapsed(), limited)
}

fn main() {
    let batches: u64 = std::env::var("INGEST_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "outpost-cloud ingest (machine: {} cpus, shared and noisy): {DEVICES} devices x {batches} batches x {RECORDS_PER_BATCH} records, TLS on 127.0.0.1\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "| store | defence | batches/s | records/s | 429s retried |\n| --- | --- | ---: | ---: | ---: |"
    );
    #[cfg(unix)]
    let pg = pg::PgServer::start("ingest bench", pg::Durability::Full);
    #[cfg(not(unix))]
    let pg: Option<()> = None;
    // The PostgreSQL rows are added on Unix only (the bench starts a Linux server).
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut setups = vec![
        (
            "SQLite",
            "rates off",
            DefenceConfig::without_rate_limits(),
            DatabaseConfig::Sqlite,
            1,
        ),
        (
            "SQLite",
            "served defaults",
            DefenceConfig::default(),
            DatabaseConfig::Sqlite,
            1,
        ),
    ];
    #[cfg(unix)]
    if let Some(pg) = &pg {
        for (name, nodes) in [("PostgreSQL, 1 node", 1), ("PostgreSQL, 2 nodes", 2)] {
            let url = pg.database(if nodes == 1 { "one" } else { "two" });
            let database = DatabaseConfig::Postgres(outpost_cloud::PostgresConfig {
                url: url.into(),
                pool_size: 16,
                ca_pem: None,
            });
            setups.push((
                name,
                "rates off",
                DefenceConfig::without_rate_limits(),
                database,
                nodes,
            ));
        }
    }
    rt.block_on(async {
        for (store, name, defence, database, nodes) in setups {
            let cloud = start(defence, database, nodes).await;
            let (took, limited) = run(&cloud, batches).await;
            let total = batches * DEVICES as u64;
            let stored = cloud.nodes[0].store().counters().unwrap()["accepted"];
            assert_eq!(stored, total, "every batch stored once");
            let bps = total as f64 / took.as_secs_f64();
            println!(
                "| {store} | {name} | {bps:.0} | {:.0} | {limited} |",
                bps * RECORDS_PER_BATCH as f64
            );
            for node in cloud.nodes {
                node.shutdown().await;
            }
        }
    });
    if pg.is_none() {
        println!("\n(no PostgreSQL rows: PostgreSQL is not installed here)");
    }
}
