//! `outpost keygen -o KEYFILE [--name NAME]`: a new Ed25519 publisher key.
//!
//! Writes three new files (never overwriting any of them):
//! - `KEYFILE`: the secret key (mode 0600 on Unix; keep it on the build machine);
//! - `KEYFILE.pub`: the public key in outpost's text format;
//! - `KEYFILE.wasmsign2.pub`: the same public key in the raw 33-byte form the
//!   `wasmsign2` CLI reads with `-K`.
//!
//! and prints the `[[trust.keys]]` entry to paste into a host config.

use anyhow::Context;
use outpost_signing::{
    generate_signing_key, key_id, public_key_to_hex, save_public_key, save_signing_key,
    wasmsign2_public_key_bytes,
};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `outpost keygen`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The secret key file to create; `.pub` and `.wasmsign2.pub` files are
    /// written beside it. Existing files are never overwritten.
    #[arg(short = 'o', long = "output", value_name = "KEYFILE")]
    output: PathBuf,
    /// The key's name in the trust store snippet (a-z, 0-9, '-'; default:
    /// derived from the file name).
    #[arg(long)]
    name: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    name: String,
    key_id: String,
    public_key: String,
    secret_key_file: PathBuf,
    public_key_file: PathBuf,
    wasmsign2_public_key_file: PathBuf,
    trust_snippet: String,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let name = match a.name {
        Some(n) => {
            anyhow::ensure!(
                outpost_signing::manifest::valid_name(&n),
                "key name {n:?} must be 1..=64 bytes of a-z, 0-9 and '-', not starting or ending with '-'"
            );
            n
        }
        None => super::key_name_from_path(&a.output),
    };
    let public_file = with_suffix(&a.output, ".pub");
    let wasmsign2_file = with_suffix(&a.output, ".wasmsign2.pub");
    // Check all three first so a refusal leaves nothing half-written.
    for f in [&a.output, &public_file, &wasmsign2_file] {
        anyhow::ensure!(
            !f.exists(),
            "key file {} exists already; refusing to overwrite it",
            f.display()
        );
    }

    let key = generate_signing_key();
    let public = key.verifying_key();
    save_signing_key(&a.output, &key).context("while writing the secret key")?;
    save_public_key(&public_file, &public).context("while writing the public key")?;
    write_new(&wasmsign2_file, &wasmsign2_public_key_bytes(&public))
        .context("while writing the wasmsign2 public key")?;

    let public_hex = public_key_to_hex(&public);
    let report = Report {
        trust_snippet: format!(
            "[[trust.keys]]\nname = \"{name}\"\npublic-key = \"{public_hex}\"\n"
        ),
        name,
        key_id: key_id(&public).to_string(),
        public_key: public_hex,
        secret_key_file: a.output,
        public_key_file: public_file,
        wasmsign2_public_key_file: wasmsign2_file,
    };
    if a.json {
        super::print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "secret key         {} (mode 0600; keep it off controller PCs)",
        report.secret_key_file.display()
    )?;
    writeln!(
        out,
        "public key         {}",
        report.public_key_file.display()
    )?;
    writeln!(
        out,
        "wasmsign2 pub key  {}",
        report.wasmsign2_public_key_file.display()
    )?;
    writeln!(out, "key id             {}", report.key_id)?;
    writeln!(out, "public key hex     {}", report.public_key)?;
    writeln!(out)?;
    writeln!(out, "trust it in a host config with:")?;
    writeln!(out)?;
    write!(out, "{}", report.trust_snippet)?;
    Ok(ExitCode::SUCCESS)
}

/// `path` with `suffix` appended to its file name (`k.key` → `k.key.pub`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
