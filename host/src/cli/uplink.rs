//! `outpost uplink --config FILE`: the upload queue at a glance, and
//! `outpost uplink dead-letters`: what the guard or the cloud refused (list,
//! retry, discard; each action audited).

use crate::config::Config;
use crate::events::Events;
use crate::store::Db;
use crate::store::deadletter::{DeadLetter, DeadLetterId};
use crate::store::spool::Spool;
use crate::uplink::Uplink;
use crate::uplink::identity::Identity;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost uplink`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The host config file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<UplinkCommand>,
}

#[derive(clap::Subcommand, Debug)]
enum UplinkCommand {
    /// What the PHI guard or the cloud refused, kept aside (redacted view:
    /// id, source, module, stream, when, reason, field, size).
    DeadLetters(DeadLetterArgs),
}

#[derive(clap::Args, Debug)]
struct DeadLetterArgs {
    #[command(subcommand)]
    action: Option<DeadLetterAction>,
}

#[derive(clap::Subcommand, Debug)]
enum DeadLetterAction {
    /// Forget dead letters for good (audited).
    Discard(Targets),
    /// Check dead letters with the guard again and queue those it passes
    /// (audited); the others stay, with the reason.
    Retry(Targets),
}

#[derive(clap::Args, Debug)]
struct Targets {
    /// Dead-letter ids as listed (`g12`, `c1733…`).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    ids: Vec<String>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let Some(config_path) = a.config.as_ref() else {
        anyhow::bail!("--config FILE is required");
    };
    let config = Config::load(config_path)?;
    let spool = Spool::new(Db::open(&config.state_dir)?);
    match a.command {
        None => overview(&config, &spool, a.json),
        Some(UplinkCommand::DeadLetters(d)) => match d.action {
            None => list(&spool, a.json),
            Some(DeadLetterAction::Discard(t)) => act(&config, spool, t, a.json, Action::Discard),
            Some(DeadLetterAction::Retry(t)) => act(&config, spool, t, a.json, Action::Retry),
        },
    }
}

fn overview(config: &Config, spool: &Spool, json: bool) -> anyhow::Result<ExitCode> {
    let device = Identity::load(&config.state_dir)
        .map(|i| i.device_id.to_string())
        .map_err(|e| e.to_string());
    let (batches, bytes) = spool.pending()?;
    let counters = spool.counters()?;
    let (guard_held, cloud_held) = spool.dead_letters().counts()?;
    if json {
        let v = serde_json::json!({
            "device": device.as_ref().ok(),
            "not-enrolled": device.as_ref().err(),
            "endpoints": config.uplink.endpoints(),
            "waiting-batches": batches,
            "waiting-bytes": bytes,
            "dead-letters": { "guard": guard_held, "cloud": cloud_held },
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
        println!(
            "dead letters: {guard_held} refused by the guard, {cloud_held} refused by the cloud (`outpost uplink dead-letters`)"
        );
        for (k, v) in &counters {
            println!("{k}: {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(spool: &Spool, json: bool) -> anyhow::Result<ExitCode> {
    let letters = spool.dead_letters().list()?;
    if json {
        let audit = spool.dead_letters().audit(100)?;
        let v = serde_json::json!({ "dead-letters": letters, "audit": audit });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if letters.is_empty() {
        println!("no dead letters");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:<6} {:<16} {:<12} {:<20} {:<24} {:>7} {:>8}",
        "ID", "BY", "MODULE", "STREAM", "WHEN (UTC)", "REASON", "RECORDS", "BYTES"
    );
    for d in &letters {
        println!("{}", line(d));
    }
    Ok(ExitCode::SUCCESS)
}

fn line(d: &DeadLetter) -> String {
    let reason = match &d.field {
        Some(f) => format!("{} in {f}", d.reason),
        None => d.reason.clone(),
    };
    let again = if d.refusals > 1 {
        format!(" (x{})", d.refusals)
    } else {
        String::new()
    };
    format!(
        "{:<22} {:<6} {:<16} {:<12} {:<20} {:<24} {:>7} {:>8}",
        d.id.to_string(),
        d.source.to_string(),
        d.module,
        d.stream,
        utc(d.at),
        format!("{reason}{again}"),
        d.records,
        d.bytes
    )
}

/// Unix seconds as `YYYY-MM-DD hh:mm:ss`.
fn utc(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    let s = crate::net::format_rfc3339(t);
    s.trim_end_matches('Z').replace('T', " ")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Discard,
    Retry,
}

/// The operator, as audited: the account running the command.
fn who() -> String {
    let user = ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let user: String = user.chars().filter(|c| !c.is_control()).take(64).collect();
    format!("{user} (cli)")
}

fn act(
    config: &Config,
    spool: Spool,
    t: Targets,
    json: bool,
    action: Action,
) -> anyhow::Result<ExitCode> {
    let store = spool.dead_letters();
    let ids: Vec<DeadLetterId> = if t.all {
        store.list()?.into_iter().map(|d| d.id).collect()
    } else {
        t.ids.iter().map(|s| s.parse()).collect::<Result<_, _>>()?
    };
    let uplink = match action {
        Action::Retry => {
            let identity = Identity::load(&config.state_dir)
                .context("while loading the device identity to reseal dead letters")?;
            let uplink = Uplink::new(spool, Events::default());
            uplink.set_identity(Some(identity));
            uplink.set_max_bytes(config.uplink.spool_max_mib << 20);
            Some(uplink)
        }
        Action::Discard => None,
    };
    let who = who();
    let mut results = Vec::new();
    let mut failed = false;
    for id in ids {
        let outcome = match &uplink {
            None => match store.discard(id, &who)? {
                true => Ok("discarded".to_string()),
                false => Err(format!("no dead letter {id}")),
            },
            Some(u) => u
                .retry_dead_letter(id, &who)
                .map(|seq| format!("queued as batch {seq}"))
                .map_err(|e| e.to_string()),
        };
        failed |= outcome.is_err();
        results.push((id, outcome));
    }
    if json {
        let v: Vec<_> = results
            .iter()
            .map(|(id, o)| match o {
                Ok(done) => serde_json::json!({ "id": id, "ok": true, "outcome": done }),
                Err(why) => serde_json::json!({ "id": id, "ok": false, "outcome": why }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if results.is_empty() {
        println!("no dead letters");
    } else {
        for (id, o) in &results {
            match o {
                Ok(done) => println!("{id}: {done}"),
                Err(why) => println!("{id}: kept: {why}"),
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
