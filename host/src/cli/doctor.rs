//! `outpost doctor --config FILE [--json]`: check what this PC needs to do
//! its job (endpoints, clock, disk, spool, modules) and say what to change.
//! Exit status 1 when any check fails; warnings alone give 0.

use crate::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost doctor`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The host config file.
    #[arg(long)]
    config: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&a.config)?;
    let report = super::block_on(crate::diagnose::doctor(&config))?;
    if a.json {
        super::print_json(&report)?;
    } else {
        use std::io::Write as _;
        std::io::stdout()
            .lock()
            .write_all(report.to_text().as_bytes())?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
