//! `outpost release MODULE --config FILE`: lift a persisted quarantine.

use crate::api::client::{ApiClient, ClientError};
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

#[derive(serde::Deserialize)]
struct Released {
    released: bool,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&a.config)?;
    // With the service running, through its API: the module runs again at
    // once. Without it, in the database: at the next start.
    let via_api = match ApiClient::new(&config, "cli") {
        Ok(client) => {
            match super::block_on(
                client.post::<Released>(&format!("/api/v1/modules/{}/release", a.module)),
            )? {
                Ok(r) => Some(r.released),
                Err(ClientError::NotRunning(_)) => None,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClientError::NotRunning(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let (released, when) = match via_api {
        Some(r) => (r, "it runs again now"),
        None => (
            Quarantine::new(Db::open(&config.state_dir)?).release(&a.module)?,
            "it runs again at the next host start",
        ),
    };
    if released {
        println!("released {}: {when}", a.module);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} is not quarantined", a.module);
        Ok(ExitCode::FAILURE)
    }
}
