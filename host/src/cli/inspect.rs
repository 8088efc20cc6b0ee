//! `outpost inspect MODULE.wasm`: what a module imports, exports and declares.

use crate::runtime::{component_interfaces, new_engine};
use anyhow::Context;
use outpost_signing::Manifest;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The component file.
    module: PathBuf,
    /// Its manifest (default: the module file with extension `.toml`).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    file: PathBuf,
    bytes: u64,
    manifest: Option<Manifest>,
    imports: Vec<String>,
    exports: Vec<String>,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&a.module).with_context(|| format!("cannot read {}", a.module.display()))?;
    let engine = new_engine(16).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let component = wasmtime::component::Component::new(&engine, &bytes)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .with_context(|| format!("{} is not a valid component", a.module.display()))?;
    let (imports, exports) = component_interfaces(&engine, &component);
    let manifest_path = a
        .manifest
        .clone()
        .unwrap_or_else(|| a.module.with_extension("toml"));
    let manifest = if manifest_path.exists() {
        let text = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("cannot read manifest {}", manifest_path.display()))?;
        Some(
            Manifest::from_toml(&text)
                .with_context(|| format!("manifest {}", manifest_path.display()))?,
        )
    } else if a.manifest.is_some() {
        anyhow::bail!("manifest {} does not exist", manifest_path.display());
    } else {
        None
    };
    let report = Report {
        file: a.module,
        bytes: bytes.len() as u64,
        manifest,
        imports,
        exports,
    };
    if a.json {
        super::print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "module   {} ({} bytes)",
        report.file.display(),
        report.bytes
    );
    match &report.manifest {
        Some(m) => {
            let c = &m.capabilities;
            println!("name     {} {} ({} world)", m.name, m.version, m.world);
            println!("dirs     {}", join(&c.directories));
            println!("network  {}", join(&c.endpoints));
            println!("uplink   {}", join(&c.uplink_streams));
            println!("notify   {}", if c.notify { "yes" } else { "no" });
            println!("state    {} bytes", c.state_quota_bytes);
            println!(
                "support  {}",
                join(
                    &c.permissions
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                )
            );
            println!(
                "limits   {} MiB, {} ms cpu, {} ms wall per call",
                m.limits.memory_mib, m.limits.cpu_ms_per_call, m.limits.wall_ms_per_call
            );
        }
        None => println!("manifest (none found at {})", manifest_path.display()),
    }
    println!("imports");
    for i in &report.imports {
        println!("  {i}");
    }
    println!("exports");
    for e in &report.exports {
        println!("  {e}");
    }
    Ok(ExitCode::SUCCESS)
}

fn join(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}
