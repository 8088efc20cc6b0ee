//! `outpost tuf-client`: the host's TUF client behind the command-line
//! protocol of the TUF conformance suite (theupdateframework/tuf-conformance,
//! `CLIENT-CLI.md`), so that the public suite can be run against the same
//! verification the updater uses ([`crate::update::load_repository`]: tough
//! with [`crate::update::LIMITS`], a datastore for rollback protection, and
//! the expiry check against a clock):
//!
//! ```text
//! outpost tuf-client --metadata-dir D init TRUSTED_ROOT
//! outpost tuf-client --metadata-dir D --metadata-url U [--days-in-future N] refresh
//! outpost tuf-client --metadata-dir D --metadata-url U --target-name P \
//!     --target-base-url T --target-dir O download
//! ```
//!
//! `D` holds the trusted metadata under unversioned names (`root.json`,
//! `timestamp.json`, `snapshot.json`, `targets.json`, delegated roles).
//! Exit code 0 on success, 1 on any failure. It speaks HTTPS with the
//! built-in roots, and plain HTTP to loopback hosts only (the suite's server);
//! `--days-in-future` moves the clock forward (expiry is then checked against
//! that clock only, for the four top-level roles, as the updater's second
//! check does). The product never runs it: it reads no config and touches no
//! state but `D` and `O`.

use crate::update::{HttpsTransport, load_repository};
use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tough::{ExpirationEnforcement, TargetName};

/// Arguments of `outpost tuf-client`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the trusted metadata lives.
    #[arg(long)]
    metadata_dir: PathBuf,
    /// The repository's metadata URL.
    #[arg(long)]
    metadata_url: Option<String>,
    /// download: the target path.
    #[arg(long)]
    target_name: Option<String>,
    /// download: the repository's target URL.
    #[arg(long)]
    target_base_url: Option<String>,
    /// download: where verified targets are written.
    #[arg(long)]
    target_dir: Option<PathBuf>,
    /// Pretend the clock is this many days ahead.
    #[arg(long, default_value_t = 0)]
    days_in_future: u32,
    #[command(subcommand)]
    op: Op,
}

#[derive(clap::Subcommand, Debug)]
enum Op {
    /// Trust TRUSTED_ROOT (copied into the metadata directory; no requests).
    Init {
        /// The initial root.json.
        trusted_root: PathBuf,
    },
    /// Update the top-level metadata.
    Refresh,
    /// Refresh, then download one target (verified length and hashes).
    Download,
}

const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer accepted (a target is further capped by its length).
const MAX_BYTES: u64 = 512 * 1024 * 1024;

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    match super::block_on(run(a))? {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("outpost tuf-client: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

fn slash(u: &str) -> String {
    if u.ends_with('/') {
        u.to_owned()
    } else {
        format!("{u}/")
    }
}

async fn run(a: Args) -> anyhow::Result<()> {
    let root_file = a.metadata_dir.join("root.json");
    if let Op::Init { trusted_root } = &a.op {
        std::fs::create_dir_all(&a.metadata_dir)?;
        let bytes = std::fs::read(trusted_root)
            .with_context(|| format!("reading {}", trusted_root.display()))?;
        crate::update::write_atomic(&root_file, &bytes)?;
        return Ok(());
    }
    let metadata = slash(
        a.metadata_url
            .as_deref()
            .context("--metadata-url is required")?,
    );
    let targets = slash(a.target_base_url.as_deref().unwrap_or(&metadata));
    let root = std::fs::read(&root_file)
        .with_context(|| format!("no trusted root in {} (run init)", root_file.display()))?;
    let trusted_version = root_version(&root)?;
    // One base for both URLs: their common prefix up to the last '/'.
    let base = common_base(&metadata, &targets);
    // HTTPS with the built-in roots; plain HTTP to loopback only.
    let tls = crate::net::tls_config(&[], false).map_err(anyhow::Error::msg)?;
    let transport = HttpsTransport::with_loopback_http(&tls, &base, TIMEOUT, MAX_BYTES)?;
    let now = chrono::Utc::now().timestamp();
    let (clock, enforcement) = match a.days_in_future {
        0 => (now, ExpirationEnforcement::Safe),
        d => (now + i64::from(d) * 86_400, ExpirationEnforcement::Unsafe),
    };
    let repo = load_repository(
        &root,
        url::Url::parse(&metadata)?,
        url::Url::parse(&targets)?,
        transport.clone(),
        &a.metadata_dir,
        clock,
        enforcement,
    )
    .await?;
    // tough keeps no root in its datastore: keep the newest trusted one,
    // byte for byte as served (tough verified that version).
    let version = repo.root().signed.version.get();
    if version != trusted_version {
        let url = url::Url::parse(&format!("{metadata}{version}.root.json"))?;
        let bytes = fetch(&transport, url).await?;
        if root_version(&bytes)? != version {
            bail!("{version}.root.json changed while it was read");
        }
        crate::update::write_atomic(&root_file, &bytes)?;
    }
    if let Op::Download = a.op {
        let name = a
            .target_name
            .as_deref()
            .context("--target-name is required")?;
        let dir = a
            .target_dir
            .as_deref()
            .context("--target-dir is required")?;
        download(&repo, name, dir).await?;
    }
    Ok(())
}

fn root_version(bytes: &[u8]) -> anyhow::Result<u64> {
    let v: serde_json::Value = serde_json::from_slice(bytes).context("root.json is not JSON")?;
    v["signed"]["version"]
        .as_u64()
        .context("root.json has no signed.version")
}

fn common_base(a: &str, b: &str) -> String {
    let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let prefix = &a[..n];
    match prefix.rfind('/') {
        Some(i) => prefix[..=i].to_owned(),
        None => prefix.to_owned(),
    }
}

async fn fetch(t: &HttpsTransport, url: url::Url) -> anyhow::Result<Vec<u8>> {
    use futures_util::StreamExt;
    use tough::Transport;
    let mut s = t.fetch(url).await?;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// The file name of target `name` in the target directory: percent-encoded,
/// so a path never leaves the directory.
fn local_name(name: &str) -> String {
    let s: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    match s.replace("..", "%2E%2E") {
        d if d == "." || d.is_empty() => format!("%2E{d}"),
        s => s,
    }
}

async fn download(repo: &tough::Repository, name: &str, dir: &Path) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let target_name = TargetName::new(name)?;
    let target = repo
        .targets()
        .signed
        .find_target(&target_name)
        .with_context(|| format!("target {name} is not in the repository"))?
        .clone();
    std::fs::create_dir_all(dir)?;
    let path = dir.join(local_name(name));
    // Already here with the right hash: nothing to download.
    if let Ok(have) = std::fs::read(&path)
        && have.len() as u64 == target.length
        && Sha256::digest(&have).as_slice() == target.hashes.sha256.as_ref()
    {
        return Ok(());
    }
    let mut stream = repo
        .read_target(&target_name)
        .await?
        .with_context(|| format!("target {name} is not in the repository"))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    crate::update::write_atomic(&path, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_stay_in_the_directory() {
        assert_eq!(local_name("file1.txt"), "file1.txt");
        assert_eq!(local_name("a/b.txt"), "a%2Fb.txt");
        assert_eq!(local_name("../x"), "%2E%2E%2Fx");
        assert_eq!(local_name(".."), "%2E%2E");
    }

    #[test]
    fn the_base_is_the_common_directory() {
        assert_eq!(
            common_base("http://h:1/r/metadata/", "http://h:1/r/targets/"),
            "http://h:1/r/"
        );
        assert_eq!(
            common_base("http://h:1/r/metadata/", "http://h:1/r/metadata/"),
            "http://h:1/r/metadata/"
        );
    }
}
