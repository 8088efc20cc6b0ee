//! `outpost sign --key K [--key K2 …] --manifest M.toml IN.wasm -o OUT.wasm`:
//! embed a manifest in an unsigned component and sign it with one or more keys.

use anyhow::Context;
use outpost_signing::{Manifest, SigningKey, key_id, load_signing_key, sign};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost sign`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A secret key file (from `outpost keygen`); repeat for several signers.
    #[arg(long = "key", value_name = "KEYFILE", required = true)]
    keys: Vec<PathBuf>,
    /// The module's manifest (TOML): name, version, world, capabilities, limits.
    #[arg(long, value_name = "MANIFEST")]
    manifest: PathBuf,
    /// The unsigned component.
    input: PathBuf,
    /// The signed component to write (replaced if it exists).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    file: PathBuf,
    module: String,
    version: String,
    world: String,
    key_ids: Vec<String>,
    file_sha256: String,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.manifest)
        .with_context(|| format!("cannot read manifest {}", a.manifest.display()))?;
    let manifest = Manifest::from_toml(&text)
        .with_context(|| format!("manifest {} is refused", a.manifest.display()))?;
    let keys = a
        .keys
        .iter()
        .map(|p| load_signing_key(p).context("while loading a signing key"))
        .collect::<anyhow::Result<Vec<SigningKey>>>()?;
    let component = std::fs::read(&a.input)
        .with_context(|| format!("cannot read component {}", a.input.display()))?;
    let signed = sign(&component, &manifest, &keys.iter().collect::<Vec<_>>())
        .with_context(|| format!("cannot sign {}", a.input.display()))?;
    std::fs::write(&a.output, &signed)
        .with_context(|| format!("cannot write {}", a.output.display()))?;

    let report = Report {
        file: a.output,
        module: manifest.name.clone(),
        version: manifest.version.clone(),
        world: manifest.world.to_string(),
        key_ids: keys
            .iter()
            .map(|k| key_id(&k.verifying_key()).to_string())
            .collect(),
        file_sha256: super::sha256_hex(&signed),
    };
    if a.json {
        super::print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "signed {} {} ({} world) -> {}",
        report.module,
        report.version,
        report.world,
        report.file.display()
    );
    for (id, path) in report.key_ids.iter().zip(&a.keys) {
        println!("  key    {id} ({})", path.display());
    }
    println!("  sha256 {}", report.file_sha256);
    Ok(ExitCode::SUCCESS)
}
