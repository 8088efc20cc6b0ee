//! `outpost enroll`: register this device with the vendor's cloud.

use crate::config::Config;
use crate::uplink::enroll::{Registration, enroll};
use crate::uplink::identity::Identity;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost enroll`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The host config file (state directory, CA files, uplink region).
    #[arg(long)]
    config: PathBuf,
    /// Enrolment server (`https://...`); default: the config's uplink endpoint
    /// or the first endpoint of its region.
    #[arg(long)]
    server: Option<String>,
    /// Registrant's e-mail.
    #[arg(long)]
    email: String,
    /// Registrant's name.
    #[arg(long)]
    name: String,
    /// Instrument model.
    #[arg(long)]
    instrument_model: String,
    /// Instrument id (the lab's own).
    #[arg(long)]
    instrument_id: String,
    /// Instrument serial number.
    #[arg(long)]
    serial: String,
    /// Enrolment token, if the vendor gave one.
    #[arg(long)]
    token: Option<String>,
    /// Replace an existing identity. Refused while batches sealed under the
    /// old identity are still waiting (they can only be delivered under it).
    #[arg(long)]
    force: bool,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&a.config)?;
    if Identity::path(&config.state_dir).exists() && !a.force {
        anyhow::bail!(
            "this device is already enrolled ({}); use --force to enrol again",
            Identity::path(&config.state_dir).display()
        );
    }
    if a.force {
        let spool = crate::store::spool::Spool::new(crate::store::Db::open(&config.state_dir)?);
        let (waiting, _) = spool.pending()?;
        anyhow::ensure!(
            waiting == 0,
            "{waiting} batch(es) sealed under the current identity are still waiting to be delivered; re-enrolling now would strand them (see `outpost uplink`)"
        );
    }
    let server = a
        .server
        .clone()
        .unwrap_or_else(|| config.uplink.endpoints()[0].clone());
    let tls = crate::agent::tls_for(&config)?;
    let reg = Registration {
        email: a.email,
        name: a.name,
        instrument_model: a.instrument_model,
        instrument_id: a.instrument_id,
        serial: a.serial,
        token: a.token,
    };
    let identity = super::block_on(enroll(&server, &tls, &reg))??;
    identity.save(&config.state_dir)?;
    println!(
        "enrolled with {server} as device {}; identity in {}",
        identity.device_id,
        Identity::path(&config.state_dir).display()
    );
    Ok(ExitCode::SUCCESS)
}
