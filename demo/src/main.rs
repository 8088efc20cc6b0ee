//! `cargo run -p outpost-demo`: the whole agent on one machine, on the bundled
//! sample data. Builds the workspace's modules (through `outpost-artifacts`),
//! writes a host config under `target/outpost-demo/`, asks the session policy
//! one sample support request, then runs the host in the foreground like
//! `outpost run --config target/outpost-demo/outpost.toml` would.

use anyhow::Context;
use clap::Parser;
use outpost_host::agent::Agent;
use outpost_host::config::Config;
use outpost_host::events::Events;
use outpost_host::runtime::bindings::session_policy::exports::outpost::agent::policy::{
    Permission, SupportRequest,
};
use outpost_host::supervisor::Supervisor;
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
    // Start from a fresh database each run so the demo shows the whole flow
    // (the compiled-module cache in state/cache is kept).
    for f in ["outpost.db", "outpost.db-wal", "outpost.db-shm"] {
        let _ = std::fs::remove_file(work.join("state").join(f));
    }
    std::fs::create_dir_all(&work)?;
    let config_path = write_config(&work, args.interval)?;
    eprintln!(
        "outpost demo: config {} (run it yourself with `cargo run --bin outpost -- run --config {}`)",
        config_path.display(),
        config_path.display()
    );
    let config = Config::load(&config_path)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async move {
            let events = Events::default();
            let rx = events.subscribe();
            let agent = Agent::build(config.clone(), events.clone())?;
            let supervisor = Supervisor::start(&agent, events);
            let request = SupportRequest {
                requester: "support.engineer@vendor.example".into(),
                region: "eu".into(),
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
            let result = outpost_host::cli::serve(rx, args.json, args.seconds).await;
            drop(supervisor);
            result
        })
        .context("while running the demo")
}

fn write_config(work: &Path, interval: u64) -> anyhow::Result<PathBuf> {
    let path = work.join("outpost.toml");
    std::fs::write(
        &path,
        outpost_artifacts::example_config(&work.join("state"), interval),
    )?;
    Ok(path)
}
