//! Host benchmarks (plain binary, prints a table). Run with
//! `cargo bench -p outpost-host --bench runtime`.
//!
//! - per-call instantiation of the notifier through its `InstancePre` on the
//!   pooling allocator: store creation, instantiation, and a whole call;
//! - host start → three modules ready, cold (compile from scratch);
//! - idle RSS and CPU of `outpost run` with the three modules (Linux only).
//!
//! These machines are noisy: compare figures from one run, not across runs.

use outpost_host::agent::Agent;
use outpost_host::config::Config;
use outpost_host::events::Events;
use outpost_host::runtime::LoadedModule;
use outpost_host::runtime::bindings::host_events::HostEvent as WitEvent;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &dir.path().join("state"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "outpost host benchmarks (medians; machine: {} cpus, shared and noisy)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| measurement | median | p10 | p90 | n |");
    println!("| --- | --- | --- | --- | --- |");

    // Start: config → database → engine → three modules verified, compiled
    // (or taken from the compiled cache) and linked. Cold = empty state dir.
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for i in 0..5 {
        let state = dir.path().join(format!("start-{i}"));
        let config_path = write_config(dir.path(), &state);
        for times in [&mut cold, &mut warm] {
            let config = Config::load(&config_path).unwrap();
            let t = Instant::now();
            let agent = rt
                .block_on(async { Agent::build(config, Events::default()) })
                .unwrap();
            times.push(t.elapsed());
            assert_eq!(agent.modules.len(), 3, "{:?}", agent.refused);
        }
    }
    row(
        "host start → 3 modules ready, cold (verify + compile)",
        &mut cold,
    );
    row(
        "host start → 3 modules ready, compiled cache (verify + load)",
        &mut warm,
    );

    let config = Config::load(&config_path).unwrap();
    let agent = rt
        .block_on(async { Agent::build(config, Events::default()) })
        .unwrap();
    let notifier: &LoadedModule = agent
        .modules
        .iter()
        .find(|m| m.name() == "notifier")
        .unwrap();
    let runtime = agent.runtime.clone();
    const N: usize = 20_000;
    let (store_t, inst_t) = rt.block_on(async {
        let mut store_t = Vec::with_capacity(N);
        let mut inst_t = Vec::with_capacity(N);
        for _ in 0..N {
            let t0 = Instant::now();
            let mut store = runtime.new_store(notifier).unwrap();
            let t1 = Instant::now();
            runtime.instantiate_in(notifier, &mut store).await.unwrap();
            let t2 = Instant::now();
            drop(store);
            store_t.push(t1 - t0);
            inst_t.push(t2 - t1);
        }
        (store_t, inst_t)
    });
    let (mut store_t, mut inst_t) = (store_t, inst_t);
    row(
        "notifier: instantiate via InstancePre (pooled)",
        &mut inst_t,
    );
    row("notifier: new store (WASI ctx, limits)", &mut store_t);

    let mut calls = rt.block_on(async {
        let mut v = Vec::with_capacity(2000);
        for i in 0..2000 {
            let ev = WitEvent::ModuleRecovered(format!("bench-{}", i % 10));
            let t = Instant::now();
            runtime.on_event(notifier, ev).await.unwrap();
            v.push(t.elapsed());
        }
        v
    });
    row(
        "notifier: whole call (store + instantiate + on-event + SQLite)",
        &mut calls,
    );
    drop(agent);

    #[cfg(target_os = "linux")]
    idle(&config_path);
}

fn row(name: &str, v: &mut [Duration]) {
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
    println!(
        "| {name} | {} | {} | {} | {} |",
        fmt(q(0.5)),
        fmt(q(0.1)),
        fmt(q(0.9)),
        v.len()
    );
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{:.2} µs", ns as f64 / 1000.0)
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1000.0)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

fn write_config(dir: &Path, state: &Path) -> PathBuf {
    let p = state.with_extension("toml");
    std::fs::create_dir_all(dir).unwrap();
    // Enrolled (offline): the collector runs and seals; the sender only ever
    // tries a closed loopback port.
    let text = outpost_artifacts::example_config(state, 300).replace(
        "# endpoint = \"https://ingest.private-cloud.example\"",
        "endpoint = \"https://127.0.0.1:9\"",
    );
    std::fs::write(&p, text).unwrap();
    outpost_host::uplink::identity::Identity {
        device_id: outpost_protocol::DeviceId::parse("bench-device").unwrap(),
        key: outpost_protocol::DeviceKey::generate(),
        server: "https://127.0.0.1:9".into(),
        enrolled_at: 0,
    }
    .save(state)
    .unwrap();
    p
}

/// Idle RSS and CPU of the real `outpost run` process.
#[cfg(target_os = "linux")]
fn idle(config: &Path) {
    let exe = env!("CARGO_BIN_EXE_outpost");
    let mut child = std::process::Command::new(exe)
        .args(["run", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Let it start, run the collector once and settle.
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
    let _ = child.kill();
    let _ = child.wait();
    let hz = 100.0; // USER_HZ on Linux
    println!();
    println!("| `outpost run`, 3 modules, idle | value |");
    println!("| --- | --- |");
    println!(
        "| RSS (VmRSS) | {:.1} MB |",
        field("VmRSS:") as f64 / 1024.0
    );
    println!(
        "| peak RSS (VmHWM) | {:.1} MB |",
        field("VmHWM:") as f64 / 1024.0
    );
    println!(
        "| CPU while idle ({idle_secs} s window) | {:.2} % of one core |",
        (cpu1 - cpu0) as f64 / hz / idle_secs as f64 * 100.0
    );
}

#[cfg(target_os = "linux")]
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
