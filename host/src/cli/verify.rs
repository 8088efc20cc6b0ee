//! `outpost verify FILE (--config HOSTCONFIG | --public-key PUB …) [--name NAME]`:
//! verify a signed module exactly as the host would before loading it.
//!
//! With `--config`, the config's `[trust]` table is the trust store and the
//! highest installed version is read from its state database if that exists
//! (the state is never created). With `--public-key` (and `--development-key`),
//! the given keys are the whole trust store and no version is installed.

use crate::config::Config;
use crate::store::versions::Versions;
use crate::store::{DB_FILE, Db};
use anyhow::Context;
use outpost_signing::{
    Expectation, TrustStore, TrustedKey, VerifyingKey, inspect_unverified, load_public_key,
    public_key_from_wasmsign2, verify,
};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `outpost verify`.
#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("trust")
        .required(true)
        .multiple(true)
        .args(["config", "public_keys", "development_keys"])
))]
pub struct Args {
    /// The signed component.
    file: PathBuf,
    /// Verify against this host config's `[trust]` table and installed versions.
    #[arg(long, value_name = "HOSTCONFIG", conflicts_with_all = ["public_keys", "development_keys", "allow_development_key"])]
    config: Option<PathBuf>,
    /// Trust this public key (`outpost keygen`'s `.pub` file, or a raw
    /// 33-byte wasmsign2 public key); repeat for several keys.
    #[arg(long = "public-key", value_name = "PUB")]
    public_keys: Vec<PathBuf>,
    /// Trust this public key as a development key, refused unless
    /// `--allow-development-key` is given (as `development = true` in a config).
    #[arg(long = "development-key", value_name = "PUB")]
    development_keys: Vec<PathBuf>,
    /// Accept signatures by development keys (`allow-development-key = true`).
    #[arg(long)]
    allow_development_key: bool,
    /// The name the module is installed under (default: the module configured
    /// with this file in `--config`, else the name in the file's manifest).
    #[arg(long)]
    name: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    file: PathBuf,
    ok: bool,
    /// The name verified against.
    name: String,
    highest_installed: Option<String>,
    /// Set when verified.
    version: Option<String>,
    world: Option<String>,
    signers: Vec<SignerReport>,
    file_sha256: Option<String>,
    /// The verifier's refusal, when not verified.
    error: Option<String>,
}

#[derive(Serialize)]
struct SignerReport {
    name: String,
    key_id: String,
    development: bool,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let config = a.config.as_deref().map(Config::load).transpose()?;
    let trust = match &config {
        Some(c) => c.trust.clone(),
        None => cli_trust_store(&a)?,
    };

    // What the file claims (unverified) only supplies a default name; the
    // verifier below checks everything, that name included. A file without a
    // readable manifest has the structural fault the verifier would report.
    let name = match a
        .name
        .clone()
        .or_else(|| config.as_ref().and_then(|c| configured_name(c, &a.file)))
    {
        Some(n) => Ok(n),
        None => inspect_unverified(&bytes).map(|i| i.manifest.name),
    };
    let mut highest_installed = None;
    let (name, result) = match name {
        Ok(name) => {
            if let Some(c) = &config {
                highest_installed = installed_version(c, &name)?;
            }
            let expect = Expectation {
                name: &name,
                highest_installed,
                now: std::time::SystemTime::now(),
            };
            let result = verify(bytes, &trust, &expect);
            (name, result)
        }
        Err(e) => (String::new(), Err(e)),
    };
    let mut report = Report {
        file: a.file,
        ok: result.is_ok(),
        name,
        highest_installed: highest_installed.map(|(x, y, z)| format!("{x}.{y}.{z}")),
        version: None,
        world: None,
        signers: Vec::new(),
        file_sha256: None,
        error: None,
    };
    match result {
        Ok(v) => {
            report.version = Some(v.manifest().version.clone());
            report.world = Some(v.manifest().world.to_string());
            report.file_sha256 = Some(v.file_sha256_hex());
            report.signers = v
                .signers()
                .iter()
                .map(|s| SignerReport {
                    name: s.name.clone(),
                    key_id: s.key_id.to_string(),
                    development: s.development,
                })
                .collect();
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    let code = if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if a.json {
        super::print_json(&report)?;
        return Ok(code);
    }
    println!("file       {}", report.file.display());
    if let Some(v) = &report.highest_installed {
        println!("installed  {} {v} (highest before)", report.name);
    }
    if let Some(error) = &report.error {
        if !report.name.is_empty() {
            println!("expected   {}", report.name);
        }
        println!("REFUSED: {error}");
        return Ok(code);
    }
    println!(
        "module     {} {} ({} world)",
        report.name,
        report.version.as_deref().unwrap_or_default(),
        report.world.as_deref().unwrap_or_default()
    );
    for s in &report.signers {
        let dev = if s.development {
            " DEVELOPMENT KEY"
        } else {
            ""
        };
        println!("signer     {} ({}){dev}", s.name, s.key_id);
    }
    println!(
        "sha256     {}",
        report.file_sha256.as_deref().unwrap_or_default()
    );
    println!("OK");
    Ok(code)
}

/// The trust store made of `--public-key` and `--development-key` files.
fn cli_trust_store(a: &Args) -> anyhow::Result<TrustStore> {
    let mut trust = TrustStore::new();
    trust.set_allow_development_key(a.allow_development_key);
    let files = a
        .public_keys
        .iter()
        .map(|p| (p, false))
        .chain(a.development_keys.iter().map(|p| (p, true)));
    for (path, development) in files {
        let key = read_public_key(path)?;
        let base = super::key_name_from_path(path);
        let mut name = base.clone();
        let mut n = 2;
        while trust.keys().iter().any(|k| k.name() == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        trust
            .add_key(TrustedKey::new(&name, key).with_development(development))
            .with_context(|| format!("cannot trust public key {}", path.display()))?;
    }
    Ok(trust)
}

/// An outpost public key file, or a raw wasmsign2 one (33 bytes, `0x01` first).
fn read_public_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read public key {}", path.display()))?;
    if bytes.len() == 33 && bytes[0] == 0x01 {
        return public_key_from_wasmsign2(&bytes)
            .with_context(|| format!("wasmsign2 public key {}", path.display()));
    }
    Ok(load_public_key(path)?)
}

/// The name of the module configured with `file`, if any.
fn configured_name(config: &Config, file: &Path) -> Option<String> {
    let canonical = |p: &Path| std::fs::canonicalize(p).ok();
    let wanted = canonical(file)?;
    config
        .modules
        .iter()
        .find(|m| canonical(&m.file).as_ref() == Some(&wanted))
        .map(|m| m.name.clone())
}

/// The highest version of `name` recorded in the config's state, without
/// creating the state if it does not exist.
fn installed_version(config: &Config, name: &str) -> anyhow::Result<Option<(u64, u64, u64)>> {
    if !config.state_dir.join(DB_FILE).exists() {
        return Ok(None);
    }
    let db = Db::open(&config.state_dir)?;
    Versions::new(db)
        .highest(name)
        .with_context(|| format!("while reading installed versions of module `{name}`"))
}
