//! `outpost uplink --config FILE`: the upload queue at a glance.

use crate::config::Config;
use crate::store::Db;
use crate::store::spool::Spool;
use crate::uplink::identity::Identity;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost uplink`.
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
    let spool = Spool::new(Db::open(&config.state_dir)?);
    let device = Identity::load(&config.state_dir)
        .map(|i| i.device_id.to_string())
        .map_err(|e| e.to_string());
    let (batches, bytes) = spool.pending()?;
    let counters = spool.counters()?;
    if a.json {
        let v = serde_json::json!({
            "device": device.as_ref().ok(),
            "not-enrolled": device.as_ref().err(),
            "endpoints": config.uplink.endpoints(),
            "waiting-batches": batches,
            "waiting-bytes": bytes,
            "counters": counters,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        match &device {
            Ok(d) => println!("device: {d}"),
            Err(e) => println!("device: {e}"),
        }
        println!("endpoints: {}", config.uplink.endpoints().join(", "));
        println!("waiting: {batches} batch(es), {bytes} bytes");
        for (k, v) in &counters {
            println!("{k}: {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
