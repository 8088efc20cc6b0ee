//! `outpost support request|status|approve|refuse|end`: remote support
//! (#16) through the running service's local API (the broker lives in the
//! service: the relay hands it the engineer's attempts).

use crate::api::client::ApiClient;
use crate::config::Config;
use crate::support::Permission;
use serde::Deserialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost support`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Ask for remote support: prints a session id and a one-time password
    /// to read out to the vendor's engineer (any earlier unused one is retired).
    Request(Common),
    /// Show the support sessions (or one), newest first.
    Status(Maybe),
    /// Accept the listed permissions of a session waiting for approval
    /// (view, control, file-transfer); every other offered one is refused.
    Approve(Approve),
    /// Refuse every permission of a session waiting for approval.
    Refuse(One),
    /// End a session now (or withdraw a request).
    End(One),
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
struct Maybe {
    /// A session id.
    id: Option<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
struct One {
    /// The session id.
    id: String,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
struct Approve {
    /// The session id.
    id: String,
    /// Permissions to accept: view, control, file-transfer.
    #[arg(required = true)]
    permissions: Vec<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Deserialize, serde::Serialize)]
struct Created {
    session: serde_json::Value,
    password: String,
}

fn ms(t: i64) -> String {
    crate::net::format_rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.max(0) as u64),
    )
}

fn names(ps: &[Permission]) -> String {
    if ps.is_empty() {
        "-".into()
    } else {
        ps.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// A session in plain words.
fn print_session(v: &serde_json::Value) -> anyhow::Result<()> {
    let v: SessionLine = serde_json::from_value(v.clone())?;
    println!("session {} ({})", v.id, v.state);
    if let Some(e) = &v.engineer {
        println!(
            "  engineer: {} ({}), regions {}",
            v.display_name.as_deref().unwrap_or(""),
            e,
            v.regions.join(", ")
        );
    }
    if v.state == "awaiting-approval" {
        println!("  asks for: {}", names(&v.offered));
        println!(
            "  answer:   outpost support approve {} PERMISSION... | outpost support refuse {}",
            v.id, v.id
        );
    }
    if !v.permissions.is_empty() {
        println!("  granted:  {}", names(&v.permissions));
    }
    if let Some(t) = v.locked_until_ms {
        println!("  locked until {} after wrong passwords", ms(t));
    }
    if let Some(r) = &v.end_reason {
        println!("  ended:    {r}");
    }
    Ok(())
}

/// The fields of [`SessionView`] the text output uses.
#[derive(Deserialize)]
struct SessionLine {
    id: String,
    state: String,
    engineer: Option<String>,
    display_name: Option<String>,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    offered: Vec<Permission>,
    #[serde(default)]
    permissions: Vec<Permission>,
    locked_until_ms: Option<i64>,
    end_reason: Option<String>,
}

fn client(c: &Common) -> anyhow::Result<ApiClient> {
    let config = Config::load(&c.config)?;
    Ok(ApiClient::new(&config, "cli")?)
}

fn path(id: &str) -> String {
    let id: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    format!("/api/v1/support/sessions/{id}")
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    match a.cmd {
        Cmd::Request(c) => {
            let api = client(&c)?;
            let created: Created = super::block_on(
                api.post_json("/api/v1/support/sessions", &serde_json::json!({})),
            )??;
            if c.json {
                super::print_json(&created)?;
            } else {
                let id = created.session["id"].as_str().unwrap_or("");
                let until = created.session["expires_at_ms"].as_i64().unwrap_or(0);
                println!("Read these out to the vendor's support engineer:");
                println!("  session:  {id}");
                println!("  password: {}", created.password);
                println!(
                    "Valid once, until {}. You approve what the engineer may do when they connect.",
                    ms(until)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status(m) => {
            let api = client(&m.common)?;
            let list: Vec<serde_json::Value> = match &m.id {
                Some(id) => vec![super::block_on(api.get(&path(id)))??],
                None => super::block_on(api.get("/api/v1/support/sessions"))??,
            };
            if m.common.json {
                if m.id.is_some() {
                    super::print_json(&list[0])?;
                } else {
                    super::print_json(&list)?;
                }
            } else if list.is_empty() {
                println!("no support sessions");
            } else {
                for v in &list {
                    print_session(v)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Approve(ap) => {
            let mut accept = Vec::new();
            for p in &ap.permissions {
                let Some(p) = Permission::parse(p) else {
                    anyhow::bail!("unknown permission {p:?} (view, control, file-transfer)");
                };
                accept.push(p);
            }
            answer(&ap.id, &ap.common, accept)
        }
        Cmd::Refuse(one) => answer(&one.id, &one.common, Vec::new()),
        Cmd::End(one) => {
            let api = client(&one.common)?;
            let v: serde_json::Value =
                super::block_on(api.post(&format!("{}/end", path(&one.id))))??;
            output(&v, one.common.json)
        }
    }
}

fn answer(id: &str, c: &Common, accept: Vec<Permission>) -> anyhow::Result<ExitCode> {
    let api = client(c)?;
    let v: serde_json::Value = super::block_on(api.post_json(
        &format!("{}/approvals", path(id)),
        &serde_json::json!({ "accept": accept }),
    ))??;
    output(&v, c.json)
}

fn output(v: &serde_json::Value, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        super::print_json(v)?;
    } else {
        print_session(v)?;
    }
    Ok(ExitCode::SUCCESS)
}
