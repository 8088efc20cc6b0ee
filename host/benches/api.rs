//! Local API benchmarks (plain binary, prints a table). Run with
//! `cargo bench -p outpost-host --bench api`.
//!
//! - event published on the host's bus → received by a server-sent-events
//!   client on loopback: median and p99 (target ≤ 10 ms median);
//! - `/api/v1/status` requests per second on loopback (8 concurrent
//!   clients, in the same process as the host: they share its cores);
//! - idle RSS and CPU of the real `outpost run` with the API serving and
//!   one event stream (what the dashboard holds) open (Linux only; target
//!   RSS ≤ 20 MB, CPU ≈ 0).
//!
//! These machines are noisy: compare figures from one run, not across runs.

use outpost_host::agent::Agent;
use outpost_host::config::Config;
use outpost_host::events::{Events, HostEvent, Setting};
use outpost_host::supervisor::Supervisor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LATENCY_SAMPLES: usize = 2000;
const STATUS_CLIENTS: usize = 8;
const STATUS_SECONDS: u64 = 5;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "outpost local API benchmarks (machine: {} cpus, shared and noisy)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    rt.block_on(in_process(&config));
    #[cfg(target_os = "linux")]
    idle(&config);
}

async fn in_process(config_path: &Path) {
    let config = Config::load(config_path).unwrap();
    let events = Events::default();
    let agent = Agent::build(config, events.clone()).unwrap();
    let supervisor = Arc::new(Supervisor::start(&agent, events.clone()));
    let api = outpost_host::cli::start_api(&agent, &supervisor, &events)
        .await
        .expect("the API starts");
    let token = std::fs::read_to_string(agent.config.state_dir.join("api.token"))
        .unwrap()
        .trim()
        .to_owned();
    let base = format!("http://127.0.0.1:{}", api.addr().port());
    let client = outpost_host::api::client::plain_http_client().unwrap();

    // Latency: publish, then wait for the stream to deliver it.
    let mut res = client
        .get(format!("{base}/api/v1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    let mut lat = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES + 50 {
        let t0 = Instant::now();
        events.emit(HostEvent::SettingResolved {
            setting: Setting::DirectoryMissing(format!("bench-{i}")),
        });
        let want = format!("bench-{i}\"");
        loop {
            if let Some(pos) = buf.find(&want) {
                buf.drain(..pos + want.len());
                break;
            }
            let chunk = res.chunk().await.unwrap().expect("stream open");
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
        if i >= 50 {
            lat.push(t0.elapsed());
        }
    }
    drop(res);
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!("| measurement | value |");
    println!("| --- | --- |");
    println!(
        "| event → SSE client, median ({LATENCY_SAMPLES} events) | {:.3} ms |",
        pct(0.5).as_secs_f64() * 1e3
    );
    println!(
        "| event → SSE client, p99 | {:.3} ms |",
        pct(0.99).as_secs_f64() * 1e3
    );

    // Throughput of /api/v1/status.
    let stop = Instant::now() + Duration::from_secs(STATUS_SECONDS);
    let mut tasks = Vec::new();
    for _ in 0..STATUS_CLIENTS {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                let r = client
                    .get(format!("{base}/api/v1/status"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
                let _ = r.bytes().await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    println!(
        "| `/api/v1/status`, {STATUS_CLIENTS} clients in-process | {:.0} requests/s |",
        total as f64 / STATUS_SECONDS as f64
    );
    api.shutdown().await;
    drop(supervisor);
}

/// Idle RSS and CPU of the real `outpost run` with the API and one event
/// stream open.
#[cfg(target_os = "linux")]
fn idle(config: &Path) {
    let exe = env!("CARGO_BIN_EXE_outpost");
    let state = config.parent().unwrap().join("state");
    let _ = std::fs::remove_file(state.join("api.addr"));
    let mut child = std::process::Command::new(exe)
        .args(["run", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        if let Some(a) = outpost_host::api::published_addr(&state) {
            break a;
        }
        assert!(Instant::now() < deadline, "the API did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let token = std::fs::read_to_string(state.join("api.token"))
        .unwrap()
        .trim()
        .to_owned();
    // One open event stream, as the dashboard keeps.
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!(
            "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\n\r\n",
            addr.port()
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let cpu0 = cpu_ticks(pid);
    let idle_secs = 20;
    std::thread::sleep(Duration::from_secs(idle_secs));
    let cpu1 = cpu_ticks(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
            .unwrap_or(0)
    };
    drop(stream);
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "| `outpost run` idle, API + one event stream: RSS (VmRSS) | {:.1} MB |",
        field("VmRSS:") as f64 / 1024.0
    );
    // Anonymous memory is the host's own; file pages are the binary's code
    // and the compiled modules mapped from the cache, shared with the page
    // cache and given back under pressure.
    println!(
        "| same, of which anonymous / file-backed / shared memory | {:.1} / {:.1} / {:.1} MB |",
        field("RssAnon:") as f64 / 1024.0,
        field("RssFile:") as f64 / 1024.0,
        field("RssShmem:") as f64 / 1024.0
    );
    println!(
        "| same, CPU while idle ({idle_secs} s window) | {:.2} % of one core |",
        (cpu1 - cpu0) as f64 / 100.0 / idle_secs as f64 * 100.0
    );
}

#[cfg(target_os = "linux")]
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The example config with its API on a free port and an offline identity.
fn write_config(dir: &Path) -> PathBuf {
    let state = dir.join("state");
    let text = outpost_artifacts::example_config(&state, 3600)
        .replace("listen = \"127.0.0.1:8787\"", "listen = \"127.0.0.1:0\"")
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
