//! `outpost audit show|verify`: the hash-chained audit of remote support
//! (#16), read from the state database directly (works without the
//! service).

use crate::config::Config;
use crate::store::Db;
use crate::support::audit::AuditChain;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost audit`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Show the latest entries (of one support session with --session).
    Show(Show),
    /// Check the whole chain; names the first bad entry (exit code 1).
    Verify(Common),
}

#[derive(clap::Args, Debug)]
struct Common {
    /// The host config file.
    #[arg(long)]
    config: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct Show {
    /// Only this support session's entries.
    #[arg(long)]
    session: Option<String>,
    /// At most this many (the latest).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[command(flatten)]
    common: Common,
}

fn chain(c: &Common) -> anyhow::Result<AuditChain> {
    let config = Config::load(&c.config)?;
    Ok(AuditChain::new(Db::open(&config.state_dir)?))
}

/// The device's checkpoint key, if the device is enrolled.
fn checkpoint_key(c: &Common) -> anyhow::Result<Option<ed25519_dalek::VerifyingKey>> {
    let config = Config::load(&c.config)?;
    match crate::uplink::identity::Identity::load(&config.state_dir) {
        Ok(id) => Ok(Some(
            crate::support::audit::checkpoint_key(id.key.as_bytes()).verifying_key(),
        )),
        Err(crate::uplink::identity::IdentityError::NotEnrolled(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    match a.cmd {
        Cmd::Show(s) => {
            let session = s
                .session
                .as_deref()
                .map(|id| id.replace('-', "").to_uppercase());
            let entries = chain(&s.common)?.entries(session.as_deref(), s.limit)?;
            if s.common.json {
                super::print_json(&entries)?;
            } else {
                for e in &entries {
                    let at = crate::net::format_rfc3339(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_millis(e.at_ms.max(0) as u64),
                    );
                    let session = if e.session.is_empty() {
                        "-"
                    } else {
                        &e.session
                    };
                    println!(
                        "{:>6}  {at}  {:<18} {session:<14} {}",
                        e.seq, e.kind, e.detail
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify(c) => {
            let key = checkpoint_key(&c)?;
            let v = chain(&c)?.verify(key.as_ref())?;
            if c.json {
                super::print_json(&v)?;
            } else {
                match &v.first_bad {
                    None => {
                        println!("audit chain intact: {} entries, head {}", v.entries, v.head);
                        match key {
                            Some(_) => println!(
                                "{} signed checkpoint(s) verified, up to entry {}",
                                v.checkpoints, v.checkpointed_seq
                            ),
                            None => println!(
                                "checkpoints not checked: this device is not enrolled (no device key)"
                            ),
                        }
                    }
                    Some(b) => println!("audit chain BROKEN at entry {}: {}", b.seq, b.problem),
                }
            }
            Ok(if v.first_bad.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
