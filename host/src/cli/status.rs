//! `outpost status --config FILE [--json]`: the running service at a glance,
//! through its local API.

use crate::api::client::ApiClient;
use crate::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The host config file.
    #[arg(long)]
    config: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&a.config)?;
    let client = ApiClient::new(&config, "cli")?;
    let s: serde_json::Value = super::block_on(client.get("/api/v1/status"))??;
    if a.json {
        super::print_json(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    println!("outpost {}", text(&s["agent"]["version"]));
    if s["enrolment"]["enrolled"].as_bool() == Some(true) {
        println!("device     {}", text(&s["enrolment"]["device_id"]));
    } else {
        println!("device     not enrolled (run `outpost enroll`)");
    }
    let u = &s["uplink"];
    println!(
        "uplink     {} batch(es) waiting ({} bytes), {} delivered, {} dropped, {} refused",
        u["waiting_batches"], u["waiting_bytes"], u["delivered"], u["dropped"], u["refused"]
    );
    for m in s["modules"].as_array().into_iter().flatten() {
        let problem = m["last_error"]
            .as_str()
            .map(|e| format!(" — last problem: {e}"))
            .unwrap_or_default();
        println!(
            "module     {} ({}) {}: {} ok, {} failed{problem}",
            text(&m["name"]),
            text(&m["world"]),
            text(&m["state"]),
            m["calls_ok"],
            m["calls_failed"]
        );
    }
    for r in s["refused_modules"].as_array().into_iter().flatten() {
        println!(
            "module     {} REFUSED: {}",
            text(&r["module"]),
            text(&r["reason"])
        );
    }
    println!(
        "notices    {} active",
        s["notifications"]["active"].as_u64().unwrap_or(0)
    );
    Ok(ExitCode::SUCCESS)
}
