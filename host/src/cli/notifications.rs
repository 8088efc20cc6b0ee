//! `outpost notifications --config FILE`: the active list.

use crate::config::Config;
use crate::store::Db;
use crate::store::notifications::Notifications;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost notifications`.
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
    let list = Notifications::new(Db::open(&config.state_dir)?).active(None)?;
    if a.json {
        super::print_json(&list)?;
    } else if list.is_empty() {
        println!("no active notifications");
    } else {
        for n in list {
            println!(
                "[{}] {} ({}/{})\n    {}",
                n.severity, n.title, n.module, n.key, n.body
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
