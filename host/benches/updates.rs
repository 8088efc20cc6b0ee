//! Update channel benchmarks (#15; plain binary, prints a table). Run with
//! `cargo bench -p outpost-host --bench updates`.
//!
//! The real reference cloud serves a real TUF repository (tough, consistent
//! snapshots) over TLS on loopback; the host's updater reaches it through a
//! byte-counting TCP relay, so "bytes on the wire" are TLS bytes in each
//! direction, handshakes included (one new connection per check).
//!
//! - refresh with nothing new: timestamp, snapshot and targets verified,
//!   nothing downloaded;
//! - refresh with one new 3 MB target: the metadata plus the module, its
//!   length and hashes checked by tough, its signature by the host;
//! - install + health check of that target: verify again, stage, compile and
//!   link in a fresh runtime, one call of the export, switch, ledger.
//!
//! These machines are noisy: compare figures from one run, not across runs.

use outpost_cloud::repo::{self, Expiry};
use outpost_cloud::{Enrollment, EnrollmentToken, Server, ServerConfig, TestPki};
use outpost_host::config::Config;
use outpost_host::store::Db;
use outpost_host::update::Updater;
use outpost_signing::{Manifest, SigningKey};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const NOTHING_NEW_SAMPLES: usize = 20;
const TARGET_SAMPLES: usize = 5;
const TARGET_BYTES: usize = 3 * 1024 * 1024;

const CAPS: &str = "directories = [\"instrument-logs\"]\nendpoints = [\"api.vendor.example:443\"]\n\
uplink-streams = [\"heartbeat\", \"events\", \"qc\", \"maintenance\", \"software\"]\n\
state-quota-bytes = 65536";

/// The collector component padded with a custom section to `size` bytes and
/// signed as `version`.
fn module(key: &SigningKey, version: &str, size: usize) -> Vec<u8> {
    let mut raw = std::fs::read(outpost_artifacts::COLLECTOR).unwrap();
    let name = b"outpost-bench-padding";
    let pad = size.saturating_sub(raw.len() + name.len() + 8);
    let mut section = Vec::with_capacity(pad + 32);
    leb128(&mut section, name.len() as u64);
    section.extend_from_slice(name);
    section.resize(section.len() + pad, 0x5a);
    raw.push(0); // custom section id
    leb128(&mut raw, section.len() as u64);
    raw.extend_from_slice(&section);
    let m = Manifest::from_toml(&format!(
        "name = \"collector\"\nversion = \"{version}\"\nworld = \"collector\"\n\
         [capabilities]\n{CAPS}\n[limits]\nmemory-mib = 64\ncpu-ms-per-call = 5000\nwall-ms-per-call = 20000\n"
    ))
    .unwrap();
    outpost_signing::sign::sign(&raw, &m, &[key]).unwrap()
}

fn leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A TCP relay on loopback to `to`, counting bytes each way.
async fn counting_relay(to: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<[AtomicU64; 2]>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let counts: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = l.accept().await else {
                return;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                if let Ok((up, down)) =
                    tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await
                {
                    c[0].fetch_add(up, Ordering::Relaxed);
                    c[1].fetch_add(down, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, counts)
}

struct Sample {
    ms: f64,
    up: u64,
    down: u64,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn row(what: &str, samples: &[Sample]) {
    let ms = median(samples.iter().map(|s| s.ms).collect());
    let min = samples.iter().map(|s| s.ms).fold(f64::INFINITY, f64::min);
    let up = median(samples.iter().map(|s| s.up as f64).collect());
    let down = median(samples.iter().map(|s| s.down as f64).collect());
    println!(
        "| {what:<40} | {:>3} | {ms:>9.1} | {min:>9.1} | {up:>10.0} | {down:>12.0} |",
        samples.len()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = outpost_signing::generate_signing_key();

    repo::keygen(&d.join("keys")).unwrap();
    let load = |r| repo::load_key(&d.join("keys"), r).unwrap();
    let (root, targets, snapshot, timestamp) = (
        load("root"),
        load("targets"),
        load("snapshot"),
        load("timestamp"),
    );
    let repo_dir = d.join("repo");
    let now = chrono::Utc::now();
    repo::init(
        &repo_dir,
        &root,
        &targets,
        &snapshot,
        &timestamp,
        Expiry::default(),
        now,
    )
    .unwrap();
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    pki.write(&d.join("pki")).unwrap();
    let mut cfg = ServerConfig::new(
        d.join("cloud"),
        "127.0.0.1:0".parse().unwrap(),
        pki.server_cert_pem.clone(),
        pki.server_key_pem.clone(),
        Enrollment::Token(EnrollmentToken::new("bench-token-0123456789abcdef").unwrap()),
    );
    cfg.updates_repo = Some(repo_dir.clone());
    let server = rt.block_on(Server::start(cfg)).unwrap();
    let (relay, counts) = rt.block_on(counting_relay(server.addr()));
    let url = format!("https://127.0.0.1:{}", relay.port());
    let v1 = module(&key, "1.0.0", 0);
    std::fs::write(d.join("collector-1.0.0.wasm"), &v1).unwrap();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let p = |p: &Path| p.display().to_string().replace('\\', "/");
    let text = format!(
        "state-dir = \"{state}\"\n\
         [[instrument]]\nmodel = \"XN-550\"\nserial = \"SN-1\"\n\
         [[trust.keys]]\nname = \"bench-publisher\"\npublic-key = \"{pk}\"\n\
         [network]\nextra-ca-files = [\"{ca}\"]\nonly-extra-cas = true\n\
         [uplink]\nendpoint = \"{url}\"\n\
         [updates]\nroot = \"{root}\"\nrepository = \"{url}/v1/updates\"\nrequest-timeout-secs = 30\n\
         [directories]\ninstrument-logs = \"{logs}\"\n\
         [policy]\ndirectories = [\"instrument-logs\"]\nendpoints = [\"api.vendor.example:443\"]\n\
         uplink-streams = [\"heartbeat\", \"events\", \"qc\", \"maintenance\", \"software\"]\n\
         max-state-quota-bytes = 65536\nmax-memory-mib = 256\nmax-cpu-ms-per-call = 60000\nmax-wall-ms-per-call = 60000\n\
         [[module]]\nname = \"collector\"\nfile = \"{file}\"\n",
        state = p(&d.join("state")),
        pk = outpost_signing::public_key_to_hex(&key.verifying_key()),
        ca = p(&d.join("pki/ca.pem")),
        root = p(&repo_dir.join("metadata/1.root.json")),
        logs = p(&d.join("logs")),
        file = p(&d.join("collector-1.0.0.wasm")),
    );
    std::fs::write(d.join("outpost.toml"), text).unwrap();
    let config = Config::load(&d.join("outpost.toml")).unwrap();
    let db = Db::open(&config.state_dir).unwrap();
    let updater = Updater::new(&config, db.clone()).unwrap();
    let events = outpost_host::events::Events::default();
    let counted = |f: &mut dyn FnMut()| -> Sample {
        let (u0, d0) = (
            counts[0].load(Ordering::Relaxed),
            counts[1].load(Ordering::Relaxed),
        );
        let t = Instant::now();
        f();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        // The relay adds a connection's bytes when it closes.
        std::thread::sleep(Duration::from_millis(50));
        Sample {
            ms,
            up: counts[0].load(Ordering::Relaxed) - u0,
            down: counts[1].load(Ordering::Relaxed) - d0,
        }
    };

    println!(
        "outpost update benchmarks (machine: {} cpus, shared and noisy; TLS on loopback through a counting relay)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    // Warm-up: the first check trusts the root and caches metadata.
    rt.block_on(updater.check()).unwrap();
    let mut nothing = Vec::new();
    for _ in 0..NOTHING_NEW_SAMPLES {
        nothing.push(counted(&mut || {
            let r = rt.block_on(updater.check()).unwrap();
            assert!(r.offers.is_empty(), "{r:?}");
        }));
    }
    let mut refresh = Vec::new();
    let mut install = Vec::new();
    let mut target_len = 0;
    for i in 0..TARGET_SAMPLES {
        let version = format!("{}.0.0", i + 2);
        let bytes = module(&key, &version, TARGET_BYTES);
        target_len = bytes.len();
        let f = d.join("upload.wasm");
        std::fs::write(&f, &bytes).unwrap();
        repo::add(&repo_dir, &f, &[]).unwrap();
        repo::publish(
            &repo_dir,
            &targets,
            &snapshot,
            &timestamp,
            Expiry::default(),
            chrono::Utc::now(),
        )
        .unwrap();
        let mut id = 0;
        refresh.push(counted(&mut || {
            let r = rt.block_on(updater.check()).unwrap();
            id = r
                .offers
                .iter()
                .find(|o| o.to_version == version)
                .expect("offered")
                .id;
        }));
        // Adds nothing: the operator's policy may install it without asking.
        let mut cfg = config.clone();
        cfg.updates
            .as_mut()
            .unwrap()
            .auto_install_without_new_capabilities = true;
        install.push(counted(&mut || {
            outpost_host::update::install::install(&cfg, &db, &events, id, "bench").unwrap();
        }));
    }
    println!(
        "| {:<40} | {:>3} | {:>9} | {:>9} | {:>10} | {:>12} |",
        "step", "n", "median ms", "min ms", "bytes up", "bytes down"
    );
    println!(
        "|{:-<42}|-----|-----------|-----------|------------|--------------|",
        ""
    );
    row("refresh, nothing new", &nothing);
    row(
        &format!("refresh + one {:.1} MB target", target_len as f64 / 1e6),
        &refresh,
    );
    row("install + health check (no network)", &install);
    rt.block_on(server.shutdown());
}
