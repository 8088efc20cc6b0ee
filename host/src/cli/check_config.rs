//! `outpost check-config FILE`: parse the config, compute every module's grant
//! and compile and link each module, without running anything.

use crate::agent::{grant_for, verify_module};
use crate::config::Config;
use crate::grants::GrantSummary;
use crate::runtime::{Runtime, Services};
use crate::store::versions::Versions;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost check-config`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The host config file.
    config: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ModuleCheck {
    module: String,
    /// The file checked: an installed update's, else the config's `file`.
    file: PathBuf,
    /// Whether `file` is an installed update rather than the config's.
    installed_update: bool,
    ok: bool,
    error: Option<String>,
    grant: Option<GrantSummary>,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&a.config)?;
    let checks = super::block_on(check(&config))??;
    let all_ok = checks.iter().all(|c| c.ok);
    if a.json {
        super::print_json(&checks)?;
    } else {
        println!("config {} parses", config.path.display());
        for (name, path) in &config.directories {
            let note = if path.is_dir() { "" } else { "  (MISSING)" };
            println!("  directory {name} = {}{note}", path.display());
        }
        for c in &checks {
            if c.installed_update {
                println!(
                    "  module {}: checking the installed update {}",
                    c.module,
                    c.file.display()
                );
            }
            match (&c.grant, &c.error) {
                (Some(g), None) => println!(
                    "  module {}: ok ({} world; dirs [{}], endpoints [{}], streams [{}], notify {}, state {} B, permissions [{}]; {} MiB, {} ms cpu, {} ms wall)",
                    c.module,
                    g.world,
                    g.directories.join(", "),
                    g.endpoints.join(", "),
                    g.uplink_streams.join(", "),
                    g.notify,
                    g.state_quota_bytes,
                    g.permissions.join(", "),
                    g.memory_mib,
                    g.cpu_ms,
                    g.wall_ms
                ),
                (_, Some(e)) => println!("  module {}: REFUSED: {e}", c.module),
                _ => {}
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn check(config: &Config) -> anyhow::Result<Vec<ModuleCheck>> {
    // A scratch database for the runtime's services: checking a config never
    // writes to the real state. The version ledger is read from the real state
    // when it exists, so a downgrade shows up here too.
    let scratch = tempfile_dir()?;
    let db = crate::store::Db::open(&scratch)?;
    let ledger_db = if config.state_dir.join(crate::store::DB_FILE).exists() {
        crate::store::Db::open(&config.state_dir)?
    } else {
        db.clone()
    };
    let versions = Versions::new(ledger_db);
    let services = Services::new(
        db,
        crate::events::Events::default(),
        config.instruments.clone(),
        crate::net::tls_config(&[], false).map_err(anyhow::Error::msg)?,
    );
    let runtime = Runtime::new(services, config.policy.max_memory_mib, None)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let mut out = Vec::new();
    for m in &config.modules {
        // What the host would load: an installed update's file if there is one.
        let configured = &m.file;
        let m = &crate::update::install::effective(config, m);
        let (file, installed_update) = (m.file.clone(), &m.file != configured);
        let res = verify_module(config, &versions, m).and_then(|verified| {
            let grant = grant_for(config, m, &verified)?;
            let summary = GrantSummary::from(&grant);
            runtime.load(&verified, grant)?;
            Ok(summary)
        });
        out.push(match res {
            Ok(g) => ModuleCheck {
                module: m.name.clone(),
                file,
                installed_update,
                ok: true,
                error: None,
                grant: Some(g),
            },
            Err(e) => ModuleCheck {
                module: m.name.clone(),
                file,
                installed_update,
                ok: false,
                error: Some(format!("{e:#}")),
                grant: None,
            },
        });
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(out)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("outpost-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
