//! File change → record in the spool (issue #17), with the collect
//! interval at an hour so that only the change can have called the
//! collector. Run with `cargo bench -p outpost-host --bench watch`
//! (`WATCH_SAMPLES`, default 40).
//!
//! The host runs in this process (the real agent and supervisor, the real
//! collector module, the real `notify` watcher); a line is appended to an
//! instrument log in the granted folder, and the time until the spool
//! (`STATE/outpost.db`, read on a second connection) holds one more batch is
//! one sample. Samples are spaced beyond `min-change-interval-ms` so that each
//! measures a trigger, not the rate limit. The uplink points at a closed
//! port: batches stay in the spool. Includes the watcher's debounce
//! (`outpost_host::watch::DEBOUNCE`).
//!
//! These machines are noisy: compare figures from one run, not across runs.

use outpost_host::agent::Agent;
use outpost_host::config::Config;
use outpost_host::events::Events;
use outpost_host::supervisor::Supervisor;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOUR: u64 = 3600;

fn main() {
    let samples: usize = std::env::var("WATCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config_path = write_config(dir.path(), &logs);
    let config = Config::load(&config_path).unwrap();
    let spacing = Duration::from_millis(config.supervisor.min_change_interval_ms + 300);
    let state = config.state_dir.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "outpost file change → spool (machine: {} cpus, {}, shared and noisy); interval {HOUR} s, debounce {:?}, samples spaced {spacing:?}\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::OS,
        outpost_host::watch::DEBOUNCE,
    );
    let mut latencies = rt.block_on(async {
        let events = Events::default();
        let agent = Agent::build(config, events.clone()).unwrap();
        let supervisor = Arc::new(Supervisor::start(&agent, events));
        // The start-up collection (the folder is empty: it spools nothing).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let db = rusqlite::Connection::open_with_flags(
            state.join(outpost_host::store::DB_FILE),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let batches = || -> i64 {
            db.query_row("SELECT count(*) FROM uplink_outbox", [], |r| r.get(0))
                .unwrap()
        };
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join("analyzer.log"))
            .unwrap();
        let mut out = Vec::new();
        for i in 0..samples {
            let before = batches();
            let written = Instant::now();
            writeln!(
                log,
                "2026-12-04 10:{:02}:{:02} ERROR XN-550 SN-20431 E-{} Aspiration error on sampler",
                (i / 60) % 60,
                i % 60,
                1200 + i
            )
            .unwrap();
            log.flush().unwrap();
            loop {
                if batches() > before {
                    out.push(written.elapsed());
                    break;
                }
                assert!(
                    written.elapsed() < Duration::from_secs(60),
                    "sample {i}: nothing spooled within a minute"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(spacing.saturating_sub(written.elapsed())).await;
        }
        drop(supervisor);
        out
    });
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!("| samples | median | p99 | max |\n| ---: | ---: | ---: | ---: |");
    println!(
        "| {} | {:.0} ms | {:.0} ms | {:.0} ms |",
        latencies.len(),
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3
    );
    println!("\ntarget (#17): median ≤ 2 s");
}

fn write_config(dir: &Path, logs: &Path) -> PathBuf {
    let state = dir.join("state");
    let text = outpost_artifacts::example_config(&state, HOUR)
        .lines()
        .map(|l| match l.split_once('=').map(|(k, _)| k.trim()) {
            Some("instrument-logs") => format!("instrument-logs = {logs:?}"),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("enabled = true\nlisten", "enabled = false\nlisten")
        .replace(
            "# endpoint = \"https://ingest.private-cloud.example\"",
            "endpoint = \"https://127.0.0.1:9\"",
        );
    let p = dir.join("outpost.toml");
    std::fs::write(&p, text).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    outpost_host::uplink::identity::Identity {
        device_id: outpost_protocol::DeviceId::parse("bench-device").unwrap(),
        key: outpost_protocol::DeviceKey::generate(),
        server: "https://127.0.0.1:9".into(),
        enrolled_at: 0,
    }
    .save(&state)
    .unwrap();
    p
}
