//! `outpost inspect MODULE.wasm`: what a signed module declares, imports and
//! exports, read from the file itself.
//!
//! `outpost inspect --diff OLD.wasm NEW.wasm`: what an upgrade adds and
//! removes (capabilities, limits, world, imports), for the user approving it.
//!
//! Inspect checks no signature: the key ids it shows are what the file claims.
//! `outpost verify` decides whether a module is trusted. It never compiles
//! what it reads: imports and exports come from the validator
//! (`runtime::interfaces`), so unverified bytes never reach Cranelift.

use crate::runtime::interfaces;
use anyhow::Context;
use outpost_signing::{Manifest, VerifyError, capability_diff, inspect_unverified};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const UNVERIFIED_NOTE: &str = "key ids are read from the file and NOT verified by inspect; run `outpost verify FILE --config HOSTCONFIG` to check the signatures";

/// Arguments of `outpost inspect`.
#[derive(clap::Args, Debug)]
#[command(
    override_usage = "outpost inspect [--json] <MODULE>\n       outpost inspect [--json] --diff <OLD> <NEW>"
)]
pub struct Args {
    /// The component file (signed or not).
    #[arg(required_unless_present = "diff", conflicts_with = "diff")]
    module: Option<PathBuf>,
    /// Compare two signed modules: what NEW adds to and removes from OLD.
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
    diff: Option<Vec<PathBuf>>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Everything read from one file.
#[derive(Serialize)]
struct Report {
    file: PathBuf,
    bytes: u64,
    file_sha256: String,
    /// Whether the file has a readable signature section and manifest.
    signed: bool,
    /// Why there is no manifest (unsigned, or a malformed signed file).
    problem: Option<String>,
    /// Key ids the signatures name, in file order. Not verified.
    unverified_key_ids: Vec<String>,
    /// The SHA-256 the signatures claim to cover. Not verified.
    claimed_signed_sha256: Vec<String>,
    note: Option<&'static str>,
    manifest: Option<Manifest>,
    imports: Vec<String>,
    exports: Vec<String>,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    if let Some(files) = &a.diff {
        let [old, new] = files.as_slice() else {
            anyhow::bail!("--diff takes two files: OLD.wasm NEW.wasm");
        };
        return diff(old, new, a.json);
    }
    let file = a.module.expect("clap requires MODULE without --diff");
    let report = read(&file)?;
    if a.json {
        super::print_json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn read(file: &Path) -> anyhow::Result<Report> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    anyhow::ensure!(
        bytes.starts_with(b"\0asm"),
        "{} is not a WebAssembly file (no `\\0asm` header)",
        file.display()
    );
    let interfaces::Interfaces { imports, exports } =
        interfaces::read(&bytes).with_context(|| format!("while reading {}", file.display()))?;
    let mut report = Report {
        file: file.to_owned(),
        bytes: bytes.len() as u64,
        file_sha256: super::sha256_hex(&bytes),
        signed: false,
        problem: None,
        unverified_key_ids: Vec::new(),
        claimed_signed_sha256: Vec::new(),
        note: None,
        manifest: None,
        imports,
        exports,
    };
    match inspect_unverified(&bytes) {
        Ok(i) => {
            report.signed = true;
            report.unverified_key_ids = i.key_ids.iter().map(ToString::to_string).collect();
            report.claimed_signed_sha256 = i
                .claimed_signed_sha256
                .iter()
                .map(|h| super::hex(h))
                .collect();
            report.note = Some(UNVERIFIED_NOTE);
            report.manifest = Some(i.manifest);
        }
        Err(VerifyError::Unsigned) => {
            report.problem = Some("unsigned: no manifest/signature".to_string());
        }
        Err(e) => report.problem = Some(format!("not a valid signed module: {e}")),
    }
    Ok(report)
}

fn print_report(r: &Report) {
    println!("file         {} ({} bytes)", r.file.display(), r.bytes);
    println!("sha256       {}", r.file_sha256);
    if let Some(p) = &r.problem {
        println!("manifest     none ({p})");
    }
    if let Some(m) = &r.manifest {
        let c = &m.capabilities;
        println!("module       {} {} ({} world)", m.name, m.version, m.world);
        println!(
            "key ids      {} (claimed, NOT verified by inspect: check with `outpost verify`)",
            join(&r.unverified_key_ids)
        );
        println!("directories  {}", join(&c.directories));
        println!("endpoints    {}", join(&c.endpoints));
        println!("uplink       {}", join(&c.uplink_streams));
        println!("notify       {}", if c.notify { "yes" } else { "no" });
        println!("state quota  {} bytes", c.state_quota_bytes);
        let permissions: Vec<String> = c.permissions.iter().map(ToString::to_string).collect();
        println!("permissions  {}", join(&permissions));
        println!(
            "limits       {} MiB memory, {} ms cpu, {} ms wall per call",
            m.limits.memory_mib, m.limits.cpu_ms_per_call, m.limits.wall_ms_per_call
        );
    }
    println!("imports");
    for i in &r.imports {
        println!("  {i}");
    }
    println!("exports");
    for e in &r.exports {
        println!("  {e}");
    }
}

/// One side of a diff.
#[derive(Serialize)]
struct Side {
    file: PathBuf,
    file_sha256: String,
    name: String,
    version: String,
    world: String,
    unverified_key_ids: Vec<String>,
}

#[derive(Serialize)]
struct Diff {
    old: Side,
    new: Side,
    note: &'static str,
    /// Whether NEW asks for anything OLD did not have (the user must approve).
    asks_for_more: bool,
    world: Option<Change<String>>,
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<LimitChange>,
    imports_added: Vec<String>,
    imports_removed: Vec<String>,
    exports_added: Vec<String>,
    exports_removed: Vec<String>,
}

#[derive(Serialize)]
struct Change<T> {
    old: T,
    new: T,
}

#[derive(Serialize)]
struct LimitChange {
    field: &'static str,
    old: u64,
    new: u64,
}

fn diff(old: &Path, new: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let side = |file: &Path| -> anyhow::Result<(Report, Manifest)> {
        let mut r = read(file)?;
        let manifest = r.manifest.take().with_context(|| {
            format!(
                "cannot compare {}: {}",
                file.display(),
                r.problem.as_deref().unwrap_or("no manifest")
            )
        })?;
        Ok((r, manifest))
    };
    let (old_r, old_m) = side(old)?;
    let (new_r, new_m) = side(new)?;
    let caps = capability_diff(&old_m, &new_m);
    let set_diff = |a: &[String], b: &[String]| -> Vec<String> {
        let a: BTreeSet<&String> = a.iter().collect();
        b.iter().filter(|x| !a.contains(x)).cloned().collect()
    };
    let imports_added = set_diff(&old_r.imports, &new_r.imports);
    let to_side = |r: Report, m: Manifest| Side {
        file: r.file,
        file_sha256: r.file_sha256,
        name: m.name,
        version: m.version,
        world: m.world.to_string(),
        unverified_key_ids: r.unverified_key_ids,
    };
    let d = Diff {
        asks_for_more: caps.asks_for_more() || !imports_added.is_empty(),
        world: caps.world.map(|(o, n)| Change {
            old: o.to_string(),
            new: n.to_string(),
        }),
        added: caps.added.iter().map(ToString::to_string).collect(),
        removed: caps.removed.iter().map(ToString::to_string).collect(),
        changed: caps
            .changed
            .iter()
            .map(|c| LimitChange {
                field: c.field,
                old: c.old,
                new: c.new,
            })
            .collect(),
        imports_removed: set_diff(&new_r.imports, &old_r.imports),
        imports_added,
        exports_added: set_diff(&old_r.exports, &new_r.exports),
        exports_removed: set_diff(&new_r.exports, &old_r.exports),
        note: UNVERIFIED_NOTE,
        old: to_side(old_r, old_m),
        new: to_side(new_r, new_m),
    };
    if json {
        super::print_json(&d)?;
        return Ok(ExitCode::SUCCESS);
    }
    for (label, s) in [("old", &d.old), ("new", &d.new)] {
        println!(
            "{label}  {} {} ({} world)  {}",
            s.name,
            s.version,
            s.world,
            s.file.display()
        );
        println!(
            "     sha256 {}; key ids {} (NOT verified)",
            s.file_sha256,
            join(&s.unverified_key_ids)
        );
    }
    if d.old.name != d.new.name {
        println!(
            "WARNING: the module name changes from {} to {}",
            d.old.name, d.new.name
        );
    }
    if let Some(w) = &d.world {
        println!("world changes from {} to {}", w.old, w.new);
    }
    list("capabilities added", "+", &d.added);
    list("capabilities removed", "-", &d.removed);
    let changed: Vec<String> = d
        .changed
        .iter()
        .map(|c| format!("{}: {} -> {}", c.field, c.old, c.new))
        .collect();
    list("limits changed", "~", &changed);
    list("imports added", "+", &d.imports_added);
    list("imports removed", "-", &d.imports_removed);
    list("exports added", "+", &d.exports_added);
    list("exports removed", "-", &d.exports_removed);
    if d.asks_for_more {
        println!("the new module asks for more than the old one: approve the additions above");
    } else {
        println!("the new module asks for nothing the old one did not have");
    }
    Ok(ExitCode::SUCCESS)
}

fn list(title: &str, mark: &str, items: &[String]) {
    println!("{title}");
    if items.is_empty() {
        println!("  (none)");
    }
    for i in items {
        println!("  {mark} {i}");
    }
}

fn join(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}
