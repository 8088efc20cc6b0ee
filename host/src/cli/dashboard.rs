//! `outpost dashboard --config FILE`: a one-time login URL for the
//! dashboard of the running service (valid once, for two minutes).

use crate::api::client::ApiClient;
use crate::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost dashboard`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The host config file.
    #[arg(long)]
    config: PathBuf,
}

#[derive(serde::Deserialize)]
struct LoginCode {
    url: String,
    expires_in_secs: u64,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&a.config)?;
    let client = ApiClient::new(&config, "cli")?;
    let code: LoginCode = super::block_on(client.post("/api/v1/login-codes"))??;
    println!(
        "Open this link in a browser on this PC (it works once, for {} s):",
        code.expires_in_secs
    );
    println!("{}", code.url);
    Ok(ExitCode::SUCCESS)
}
