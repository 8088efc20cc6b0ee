//! `outpost updates check|list|show|approve|reject|install`: module updates
//! over TUF.
//!
//! `approve`, `reject` and `install` go through the running service's
//! local API when it runs (so the service announces the decision and loads
//! an installed update at once); without a running service they write the
//! state database directly (SQLite in WAL mode) and an install takes effect
//! at the next start. `check`, `list` and `show` read the database. Decisions
//! are recorded with the client `cli:<user>`.

use crate::api::client::{ApiClient, ClientError};
use crate::config::Config;
use crate::store::Db;
use crate::update::offers::{Offer, Offers};
use crate::update::{OfferView, Updater};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost updates`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Check the update repository now (TUF verification, downloads, module
    /// signatures) and list what it offers.
    Check(Common),
    /// List every update offer, newest first.
    List(Common),
    /// Show one offer: versions, what it adds in plain words, decisions.
    Show(One),
    /// Approve an offer: records the exact capability diff shown by `show`.
    Approve(One),
    /// Reject an offer.
    Reject(One),
    /// Install an approved offer (or one adding nothing, where the policy
    /// allows): staged, health-checked, switched atomically; a running
    /// service loads it at once, a stopped one at its next start.
    Install(One),
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
struct One {
    /// The offer's id (from `outpost updates list`).
    id: i64,
    #[command(flatten)]
    common: Common,
}

fn client() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let user: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    format!("cli:{user}")
}

fn line(o: &Offer) -> String {
    format!(
        "{:>4}  {:<16} {:>9} -> {:<9} {:<10} {}",
        o.id,
        o.module,
        o.from_version.as_deref().unwrap_or("-"),
        o.to_version,
        o.state.as_str(),
        if o.adds_capabilities {
            "asks for more"
        } else {
            o.reason.as_deref().unwrap_or("")
        }
    )
}

fn print_view(v: &OfferView) {
    let o = &v.offer;
    println!(
        "offer {}: {} {} -> {} ({})",
        o.id,
        o.module,
        o.from_version.as_deref().unwrap_or("-"),
        o.to_version,
        o.state.as_str()
    );
    if let Some(r) = &o.reason {
        println!("reason: {r}");
    }
    if v.changes.is_empty() {
        println!("changes: none (asks for nothing more)");
    } else {
        println!("changes:");
        for c in &v.changes {
            println!("  - {c}");
        }
    }
    if let Some(d) = &o.diff_digest {
        println!("diff digest: {d}");
    }
    println!("file sha256: {}", o.file_sha256);
    for a in &v.audit {
        println!(
            "decision: {} by {} at {}",
            a.decision,
            a.client,
            crate::net::format_rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(a.at.max(0) as u64)
            )
        );
    }
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    match a.cmd {
        Cmd::Check(c) => {
            let config = Config::load(&c.config)?;
            let db = Db::open(&config.state_dir)?;
            let updater = Updater::new(&config, db)?;
            let report = super::block_on(updater.check())??;
            if c.json {
                #[derive(Serialize)]
                struct Report<'a> {
                    offers: &'a [Offer],
                    refused: &'a [Offer],
                    skipped: usize,
                }
                super::print_json(&Report {
                    offers: &report.offers,
                    refused: &report.refused,
                    skipped: report.skipped,
                })?;
            } else {
                for o in report.offers.iter().chain(&report.refused) {
                    println!("{}", line(o));
                }
                println!(
                    "{} offer(s), {} refused, {} not applicable",
                    report.offers.len(),
                    report.refused.len(),
                    report.skipped
                );
            }
            Ok(if report.refused.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::List(c) => {
            let config = Config::load(&c.config)?;
            let offers = Offers::new(Db::open(&config.state_dir)?);
            let list = offers.list()?;
            if c.json {
                super::print_json(&list)?;
            } else {
                for o in &list {
                    println!("{}", line(o));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show(one) => {
            let config = Config::load(&one.common.config)?;
            let offers = Offers::new(Db::open(&config.state_dir)?);
            let Some(o) = offers.get(one.id)? else {
                anyhow::bail!("no update offer {}", one.id);
            };
            let view = OfferView::of(&offers, o)?;
            if one.common.json {
                super::print_json(&view)?;
            } else {
                print_view(&view);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Install(one) => {
            let config = Config::load(&one.common.config)?;
            let (view, when) = match through_service(&config, one.id, "install")? {
                Some(view) => (view, "installed; the running service loaded it"),
                None => {
                    let db = Db::open(&config.state_dir)?;
                    let events = crate::events::Events::default();
                    let o =
                        crate::update::install::install(&config, &db, &events, one.id, &client())?;
                    (
                        OfferView::of(&Offers::new(db), o)?,
                        "installed; the host loads it at its next start",
                    )
                }
            };
            if one.common.json {
                super::print_json(&view)?;
            } else {
                print_view(&view);
                println!("{when}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Approve(one) => decide(one, true),
        Cmd::Reject(one) => decide(one, false),
    }
}

/// `POST /api/v1/updates/{id}/{action}` on the running service; `None`
/// when no service runs (the caller then works on the database).
fn through_service(config: &Config, id: i64, action: &str) -> anyhow::Result<Option<OfferView>> {
    let api = match ApiClient::new(config, client()) {
        Ok(api) => api,
        Err(ClientError::NotRunning(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match super::block_on(api.post::<OfferView>(&format!("/api/v1/updates/{id}/{action}")))? {
        Ok(view) => Ok(Some(view)),
        Err(ClientError::NotRunning(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn decide(one: One, approve: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(&one.common.config)?;
    let action = if approve { "approve" } else { "reject" };
    let view = match through_service(&config, one.id, action)? {
        Some(view) => view,
        None => {
            let offers = Offers::new(Db::open(&config.state_dir)?);
            let o = offers.decide(one.id, approve, &client())?;
            OfferView::of(&offers, o)?
        }
    };
    if one.common.json {
        super::print_json(&view)?;
    } else {
        print_view(&view);
    }
    Ok(ExitCode::SUCCESS)
}
