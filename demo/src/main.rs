//! `cargo run -p outpost-demo`: the whole system on one machine, on the
//! bundled sample data:
//! 1. the reference cloud (`outpost-cloud`) starts on 127.0.0.1 with a test CA
//!    and an enrolment token generated for this run;
//! 2. the device enrols with it, presenting the token (`outpost enroll
//!    --token` does the same);
//! 3. the agent runs with the workspace's signed modules (built through
//!    `outpost-artifacts`), asks the session policy one sample support
//!    request, collects, seals and uploads;
//! 4. every few seconds the demo prints what has arrived in the cloud's
//!    (encrypted-at-rest) store, per stream.
//!
//! Everything lives under `target/outpost-demo/`; the host config there works
//! with `outpost run --config target/outpost-demo/outpost.toml` while the demo
//! (and its cloud) runs.

use anyhow::Context;
use clap::Parser;
use outpost_cloud::{Enrollment, EnrollmentToken, Server, ServerConfig, TestPki};
use outpost_host::agent::Agent;
use outpost_host::config::Config;
use outpost_host::events::Events;
use outpost_host::runtime::bindings::session_policy::exports::outpost::agent::policy::{
    Permission, SupportRequest,
};
use outpost_host::supervisor::Supervisor;
use outpost_host::uplink::enroll::{Registration, enroll};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(about = "Run outpost on the bundled sample data")]
struct Args {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
    /// Seconds between collector runs.
    #[arg(long, default_value_t = 15)]
    interval: u64,
    /// Print events as JSON lines.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let work = root.join("target/outpost-demo");
    // Start from a fresh device, queue and cloud each run so the demo shows
    // the whole flow (the compiled-module cache in state/cache is kept).
    for f in [
        "outpost.db",
        "outpost.db-wal",
        "outpost.db-shm",
        "device.json",
    ] {
        let _ = std::fs::remove_file(work.join("state").join(f));
    }
    let _ = std::fs::remove_dir_all(work.join("cloud"));
    std::fs::create_dir_all(&work)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(demo(work, args))
        .context("while running the demo")
}

async fn demo(work: PathBuf, args: Args) -> anyhow::Result<()> {
    // 1. The reference cloud on loopback, with a CA and an enrolment token
    //    made for this run.
    let pki = TestPki::generate(&["localhost", "127.0.0.1"])?;
    pki.write(&work.join("pki"))?;
    let token = EnrollmentToken::generate();
    let cloud = Server::start(ServerConfig::new(
        work.join("cloud"),
        "127.0.0.1:0".parse()?,
        pki.server_cert_pem.clone(),
        pki.server_key_pem.clone(),
        Enrollment::Token(token.clone()),
    ))
    .await?;
    let server = format!("https://127.0.0.1:{}", cloud.addr().port());
    eprintln!(
        "reference cloud: {server} (data in {})",
        work.join("cloud").display()
    );

    // 2. Enrol.
    let config_path = write_config(&work, args.interval, &server)?;
    let config = Config::load(&config_path)?;
    let tls = outpost_host::agent::tls_for(&config)?;
    let identity = enroll(
        &server,
        &tls,
        &Registration {
            email: "lab.it@hospital.example".into(),
            name: "Lab IT".into(),
            instrument_model: "XN-550".into(),
            instrument_id: "HEM-01".into(),
            serial: "SN-20431".into(),
            token: Some(token.expose().to_owned()),
        },
    )
    .await?;
    identity.save(&config.state_dir)?;
    eprintln!(
        "enrolled as device {} (identity in {}); config {}",
        identity.device_id,
        config.state_dir.join("device.json").display(),
        config_path.display()
    );

    // 3. The agent.
    let events = Events::default();
    let rx = events.subscribe();
    let agent = Agent::build(config.clone(), events.clone())?;
    let supervisor = std::sync::Arc::new(Supervisor::start(&agent, events.clone()));
    // The local API and dashboard (port 8787, or any free one if taken).
    let api = outpost_host::cli::start_api(&agent, &supervisor, &events).await;
    if api.is_some() {
        let client = outpost_host::api::client::ApiClient::new(&agent.config, "demo")?;
        #[derive(serde::Deserialize)]
        struct Code {
            url: String,
        }
        match client.post::<Code>("/api/v1/login-codes").await {
            Ok(c) => eprintln!(
                "dashboard: {} (one-time link; later ones: `cargo run --bin outpost -- dashboard --config {}`)",
                c.url,
                agent.config.path.display()
            ),
            Err(e) => eprintln!("dashboard: not available ({e})"),
        }
    }
    // The claims the broker presents after verifying a credential (the demo
    // asks the policy directly; `outpost support request` starts the real flow).
    let request = SupportRequest {
        engineer_id: "support.engineer@vendor.example".into(),
        engineer_name: "Demo Engineer".into(),
        engineer_regions: vec!["eu".into()],
        certifications: vec!["privacy-training".into()],
        credential_expires: outpost_host::store::now_secs() + 3600,
        pc_region: "eu".into(),
        instrument_models: config.instruments.iter().map(|i| i.model.clone()).collect(),
        now: outpost_host::store::now_secs(),
        local_minute_of_day: 12 * 60,
        local_weekday: 0,
        permissions: vec![
            Permission::View,
            Permission::Control,
            Permission::FileTransfer,
        ],
        pc_holds_patient_data: config.site.holds_patient_data,
    };
    let d = supervisor.evaluate_support_request(request).await;
    println!(
        "support request (view, control, file-transfer) -> allow={} offer={:?}: {}",
        d.allow, d.offer, d.reason
    );

    // 4. What arrives in the cloud, every few seconds.
    let store = cloud.store().clone();
    let report = tokio::spawn(async move {
        let mut last = String::new();
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            let line =
                arrived(&store).unwrap_or_else(|e| format!("cannot read the cloud store: {e:#}"));
            if line != last {
                println!("cloud: {line}");
                last = line;
            }
        }
    });
    let output = if args.json {
        outpost_host::cli::Output::Json
    } else {
        outpost_host::cli::Output::Text
    };
    let result =
        outpost_host::cli::serve(rx, output, outpost_host::cli::stop_signal(args.seconds)).await;
    report.abort();
    if let Some(api) = api {
        api.shutdown().await;
    }
    drop(supervisor);
    println!("cloud, at the end: {}", arrived(cloud.store())?);
    cloud.shutdown().await;
    result
}

/// "N batches (R records) from D device(s): stream=count, ...; refused: ..."
fn arrived(store: &outpost_cloud::Store) -> anyhow::Result<String> {
    let batches = store.batches(None, None)?;
    let mut per_stream = std::collections::BTreeMap::<String, usize>::new();
    for b in &batches {
        *per_stream.entry(b.stream.clone()).or_default() += b.body.records.len();
    }
    let records: usize = per_stream.values().sum();
    let refused: Vec<String> = store
        .counters()?
        .into_iter()
        .filter(|(k, v)| *v > 0 && k != "accepted" && k != "heartbeat")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Ok(format!(
        "{} batch(es), {records} record(s) from {} device(s) [{}]; agent heartbeats {}; refused: {}",
        batches.len(),
        store.devices()?.len(),
        per_stream
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect::<Vec<_>>()
            .join(", "),
        store.counters()?.get("heartbeat").copied().unwrap_or(0),
        if refused.is_empty() {
            "none".to_owned()
        } else {
            refused.join(", ")
        }
    ))
}

/// `port` if nothing listens on it, else 0 (any free port).
fn free_port_or_any(port: u16) -> u16 {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => port,
        Err(_) => 0,
    }
}

fn write_config(work: &Path, interval: u64, server: &str) -> anyhow::Result<PathBuf> {
    let path = work.join("outpost.toml");
    let text = outpost_artifacts::example_config(&work.join("state"), interval)
        // Upload to the reference cloud on loopback, trusting only the CA
        // made for this run.
        .replace(
            "# endpoint = \"https://ingest.private-cloud.example\"",
            &format!("endpoint = \"{server}\""),
        )
        .replace(
            "heartbeat-interval-secs = 300",
            "heartbeat-interval-secs = 10",
        )
        // Port 8787 if free, any other otherwise (`outpost` finds it in the
        // state directory).
        .replace(
            "listen = \"127.0.0.1:8787\"",
            &format!("listen = \"127.0.0.1:{}\"", free_port_or_any(8787)),
        )
        .replace(
            "extra-ca-files = []",
            &format!(
                "extra-ca-files = [{:?}]\nonly-extra-cas = true",
                work.join("pki/ca.pem")
            ),
        );
    anyhow::ensure!(
        text.contains(server) && text.contains("only-extra-cas"),
        "examples/outpost.toml changed: the demo cannot point it at the loopback cloud"
    );
    std::fs::write(&path, text)?;
    Ok(path)
}
