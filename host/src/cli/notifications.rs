//! `outpost notifications --config FILE [--watch] [--json]`: the active
//! list from the running service; `--watch` follows changes live.
//! `outpost ack ID` / `outpost dismiss ID`: the person acknowledges or
//! dismisses one (recorded as done through the CLI).

use crate::api::client::ApiClient;
use crate::config::Config;
use crate::store::notifications::Notification;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost notifications`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The host config file.
    #[arg(long)]
    config: PathBuf,
    /// Print JSON (one list; with --watch, one JSON line per change).
    #[arg(long)]
    json: bool,
    /// Keep running and print each change as it happens.
    #[arg(long)]
    watch: bool,
    /// Also show this many ended notifications, newest first.
    #[arg(long, default_value_t = 0)]
    history: u32,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct List {
    active: Vec<Notification>,
    history: Vec<Notification>,
}

fn print_one(n: &Notification) {
    let ack = match (&n.acknowledged_at, &n.acknowledged_by) {
        (Some(_), Some(by)) => format!(" (acknowledged via {by})"),
        _ => String::new(),
    };
    println!(
        "#{} [{}] {}{ack}\n    {} ({}/{})",
        n.id,
        n.severity,
        n.title,
        n.body.replace('\n', "\n    "),
        n.module,
        n.key
    );
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&a.config)?;
    let client = ApiClient::new(&config, "cli")?;
    let path = format!("/api/v1/notifications?history={}", a.history);
    let list: List = super::block_on(client.get(&path))??;
    if a.json && !a.watch {
        super::print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !a.json {
        if list.active.is_empty() {
            println!("no active notifications");
        }
        for n in &list.active {
            print_one(n);
        }
        if !list.history.is_empty() {
            println!("-- ended --");
            for n in &list.history {
                print_one(n);
            }
        }
    }
    if !a.watch {
        return Ok(ExitCode::SUCCESS);
    }
    let json = a.json;
    super::block_on(client.follow(|kind, data| {
        if !kind.starts_with("notification-") && kind != "resync" {
            return true;
        }
        if json {
            println!("{data}");
        } else {
            let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
            match kind {
                "notification-raised" => println!(
                    "raised       #{} [{}] {} ({}/{})",
                    v["id"],
                    s("severity"),
                    s("title"),
                    s("module"),
                    s("key")
                ),
                "notification-acknowledged" => {
                    println!("acknowledged #{} via {}", v["id"], s("client"))
                }
                "notification-cleared" => println!("ended        #{} by {}", v["id"], s("by")),
                _ => println!("(fell behind; run again for the full list)"),
            }
        }
        true
    }))??;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `outpost ack` and `outpost dismiss`.
#[derive(clap::Args, Debug)]
pub struct ActArgs {
    /// The notification's id (from `outpost notifications`).
    id: i64,
    /// The host config file.
    #[arg(long)]
    config: PathBuf,
}

/// `outpost ack ID` (`dismiss` false) or `outpost dismiss ID`.
pub fn act(a: ActArgs, dismiss: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(&a.config)?;
    let client = ApiClient::new(&config, "cli")?;
    let what = if dismiss { "dismiss" } else { "acknowledge" };
    let n: Notification =
        super::block_on(client.post(&format!("/api/v1/notifications/{}/{what}", a.id)))??;
    if dismiss {
        println!("dismissed #{}: {}", n.id, n.title);
    } else {
        println!("acknowledged #{}: {}", n.id, n.title);
    }
    Ok(ExitCode::SUCCESS)
}
