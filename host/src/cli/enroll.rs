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
    /// File holding the enrolment token the vendor gave (read once, trimmed).
    /// The token may also come from the `OUTPOST_ENROLLMENT_TOKEN`
    /// environment variable; never as a command-line value, which every
    /// user of the PC can read in the process list.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Refused: a token on the command line shows in the process list.
    #[arg(long, hide = true)]
    token: Option<String>,
    /// Replace an existing identity. Refused while batches sealed under the
    /// old identity are still waiting (they can only be delivered under it).
    #[arg(long)]
    force: bool,
}

/// Environment variable that may carry the enrolment token.
pub const TOKEN_ENV: &str = "OUTPOST_ENROLLMENT_TOKEN";

/// The enrolment token from `--token-file` or [`TOKEN_ENV`], if any.
fn token(a: &Args) -> anyhow::Result<Option<String>> {
    anyhow::ensure!(
        a.token.is_none(),
        "--token is refused: a token on the command line can be read by every user of this PC in the process list; put it in a file and pass --token-file FILE, or set {TOKEN_ENV}"
    );
    let from_env = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty());
    match (&a.token_file, from_env) {
        (Some(_), Some(_)) => {
            anyhow::bail!("the enrolment token is given twice: --token-file and {TOKEN_ENV}")
        }
        (Some(f), None) => {
            let text = std::fs::read_to_string(f).map_err(|e| {
                anyhow::anyhow!("cannot read the enrolment token file {}: {e}", f.display())
            })?;
            let t = text.trim().to_owned();
            anyhow::ensure!(
                !t.is_empty(),
                "the enrolment token file {} is empty",
                f.display()
            );
            Ok(Some(t))
        }
        (None, Some(t)) => Ok(Some(t.trim().to_owned())),
        (None, None) => Ok(None),
    }
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let token = token(&a)?;
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
        token,
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
