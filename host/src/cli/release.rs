//! `outpost release MODULE --config FILE`: lift a persisted quarantine.

use crate::config::Config;
use crate::store::Db;
use crate::store::quarantine::Quarantine;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost release`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The quarantined module's name.
    module: String,
    /// The host config file.
    #[arg(long)]
    config: PathBuf,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&a.config)?;
    let released = Quarantine::new(Db::open(&config.state_dir)?).release(&a.module)?;
    if released {
        println!(
            "released {}: it runs again at the next host start",
            a.module
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} is not quarantined", a.module);
        Ok(ExitCode::FAILURE)
    }
}
