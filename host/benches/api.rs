//! Local API benchmarks (plain binary, prints a table). Run with
//! `cargo bench -p outpost-host --bench api`.
//!
//! - event published on the host's bus → received by a server-sent-events
//!   client on loopback: median and p99 (target ≤ 10 ms median);
//! - `/api/v1/status` requests per second on loopback (8 concurrent
//!   clients, in the same process as the host: they share its cores);
//! - idle RSS and CPU of the real `outpost run` with the API serving and
//!   one event stream (what the dashboard holds) open, settled after the
//!   start and idle after the host's idle trim (Linux only; target RSS
//!   ≤ 20 MB, CPU ≈ 0).
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

/// Seconds of the host's idle-trim period in this benchmark (the default is
/// 30; shorter here so the run stays short).
const IDLE_TRIM_SECS: u64 = 5;

/// Idle RSS and CPU of the real `outpost run` with the API and one event
/// stream open: once settled after the start (before the first idle trim),
/// and after idling on for a while (after the trim, with the pages an idle
/// host touches again — timers, the event stream's keep-alive, heartbeats —
/// back in).
#[cfg(target_os = "linux")]
fn idle(config: &Path) {
    let exe = env!("CARGO_BIN_EXE_outpost");
    let state = config.parent().unwrap().join("state");
    let _ = std::fs::remove_file(state.join("api.addr"));
    let started = Instant::now();
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
    let request = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
            addr.port()
        )
    };
    // One open event stream, as the dashboard keeps.
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut stream, request("/api/v1/events").as_bytes()).unwrap();
    let memory = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find(|l| l.starts_with(k))
                .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
                .unwrap_or(0) as f64
                / 1024.0
        };
        (
            field("VmRSS:"),
            field("RssAnon:"),
            field("RssFile:"),
            field("RssShmem:"),
        )
    };
    // Settled after the start, before the first trim can come (the first
    // period holds the start's CPU, so the earliest trim is at 2 periods).
    std::thread::sleep(
        Duration::from_secs(IDLE_TRIM_SECS).saturating_sub(started.elapsed())
            + Duration::from_secs(IDLE_TRIM_SECS) / 2,
    );
    let settled = memory();
    let trims_then = trims(addr, &request("/metrics"));
    std::thread::sleep(Duration::from_secs(4 * IDLE_TRIM_SECS));
    let cpu0 = cpu_ticks(pid);
    let idle_secs = 20;
    // The highest RSS seen in the window, sampled every second (between
    // trims the pages an idle host touches come back).
    let mut idle = memory();
    for _ in 0..idle_secs {
        std::thread::sleep(Duration::from_secs(1));
        let m = memory();
        if m.0 > idle.0 {
            idle = m;
        }
    }
    let cpu1 = cpu_ticks(pid);
    let trims_now = trims(addr, &request("/metrics"));
    drop(stream);
    let _ = child.kill();
    let _ = child.wait();
    let row = |what: &str, m: (f64, f64, f64, f64)| {
        println!(
            "| `outpost run`, API + one event stream, {what}: RSS (VmRSS) | {:.1} MB |",
            m.0
        );
        // Anonymous memory is the host's own; file pages are the binary's
        // and the libraries' code, shared with the page cache.
        println!(
            "| same, of which anonymous / file-backed / shared memory | {:.1} / {:.1} / {:.1} MB |",
            m.1, m.2, m.3
        );
    };
    row(
        &format!("settled after the start ({trims_then} idle trims yet)"),
        settled,
    );
    row(
        &format!(
            "idle, highest of each second from {} to {} s after the start ({trims_now} idle trims by then, period {IDLE_TRIM_SECS} s)",
            started.elapsed().as_secs() - idle_secs,
            started.elapsed().as_secs()
        ),
        idle,
    );
    println!(
        "| same, CPU while idle ({idle_secs} s window) | {:.2} % of one core |",
        (cpu1 - cpu0) as f64 / 100.0 / idle_secs as f64 * 100.0
    );
}

/// `outpost_idle_trims` from the host's `/metrics`.
#[cfg(target_os = "linux")]
fn trims(addr: std::net::SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("outpost_idle_trims "))
        .unwrap_or("?")
        .trim()
        .to_owned()
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
            "idle-trim-secs = 30\n",
            &format!("idle-trim-secs = {IDLE_TRIM_SECS}\n"),
        )
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
