//! The module update repository (issue #15): a TUF repository made and
//! re-signed with `tough`, and its read-only HTTP routes.
//!
//! Layout of a repository directory:
//!
//! * `metadata/` — served at `/v1/updates/metadata/`: `N.root.json`,
//!   `N.targets.json`, `N.snapshot.json` (consistent snapshots) and
//!   `timestamp.json`;
//! * `targets/` — served at `/v1/updates/targets/`: `<sha256>.<name>`;
//! * `staging/` — modules added but not yet published (never served).
//!
//! Roles and keys: root, targets, snapshot and timestamp each have their own
//! Ed25519 key (a PKCS#8 file `<role>.key`, one key per role, threshold 1).
//! The root key signs `1.root.json` once, at `init`, and is then kept offline;
//! `publish` needs the targets, snapshot and timestamp keys, and
//! `publish --timestamp-only` needs only the timestamp key (the one key a
//! server holds online, because the timestamp expires within a day).
//!
//! Every target is a signed module file (`outpost-signing` format) named
//! `<module>-<version>.wasm`, with custom metadata under `"outpost"`:
//! `module`, `version`, `capability-digest`
//! ([`outpost_signing::capability_digest`]) and `models` (instrument models it
//! applies to; empty means all). Files are written to a temporary directory
//! and renamed into place, `timestamp.json` last, so a client never sees a
//! timestamp naming a snapshot that is not there yet.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail, ensure};
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Duration as ChronoDuration, Timelike, Utc};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use tough::editor::RepositoryEditor;
use tough::editor::signed::SignedRole;
use tough::key_source::KeySource;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::Key;
use tough::schema::{
    Hashes, KeyHolder, Metafile, RoleKeys, RoleType, Root, Signed, Snapshot, Target, Targets,
    Timestamp,
};
use tough::sign::Sign;

/// The TUF specification version written into every role.
pub const SPEC_VERSION: &str = "1.0.0";
/// Path prefix of the metadata files.
pub const METADATA_PATH: &str = "/v1/updates/metadata";
/// Path prefix of the target files.
pub const TARGETS_PATH: &str = "/v1/updates/targets";
/// Key under which a target's custom metadata carries ours.
pub const CUSTOM_KEY: &str = "outpost";
/// Largest file name the routes serve.
const MAX_FILE_NAME: usize = 255;

/// The four top-level roles, in the order of their key files.
pub const ROLES: [&str; 4] = ["root", "targets", "snapshot", "timestamp"];

/// How long each role's metadata stays valid from a publish.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    /// Root (written once at `init`).
    pub root: ChronoDuration,
    /// Targets.
    pub targets: ChronoDuration,
    /// Snapshot.
    pub snapshot: ChronoDuration,
    /// Timestamp: short, re-signed often with the online key.
    pub timestamp: ChronoDuration,
}

impl Default for Expiry {
    fn default() -> Self {
        Expiry {
            root: ChronoDuration::days(365),
            targets: ChronoDuration::days(90),
            snapshot: ChronoDuration::days(7),
            timestamp: ChronoDuration::days(1),
        }
    }
}

/// Our custom metadata of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ModuleTarget {
    /// Module name (the manifest's).
    pub module: String,
    /// Module version (the manifest's).
    pub version: String,
    /// [`outpost_signing::capability_digest`] of the manifest.
    pub capability_digest: String,
    /// Instrument models the module applies to (empty: all).
    pub models: Vec<String>,
}

/// `t` without its fraction of a second. The TUF specification writes
/// `expires` as `YYYY-MM-DDTHH:MM:SSZ`; other clients (python-tuf) refuse a
/// fraction, so every expiry is computed from whole seconds.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// The target name of a module version.
pub fn target_name(module: &str, version: &str) -> String {
    format!("{module}-{version}.wasm")
}

/// An in-memory Ed25519 key for tough's signing.
#[derive(Clone)]
pub struct RoleKey {
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for RoleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoleKey(..)")
    }
}

impl RoleKey {
    /// A new random key.
    pub fn generate() -> anyhow::Result<RoleKey> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| anyhow!("generating an Ed25519 key failed"))?;
        Ok(RoleKey {
            pkcs8: doc.as_ref().to_vec(),
        })
    }

    /// Read a PKCS#8 key file.
    pub fn load(path: &Path) -> anyhow::Result<RoleKey> {
        let meta = std::fs::metadata(path).with_context(|| format!("key {}", path.display()))?;
        ensure!(meta.len() <= 1024, "key {} is too large", path.display());
        let pkcs8 = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| anyhow!("{} is not an Ed25519 PKCS#8 key", path.display()))?;
        Ok(RoleKey { pkcs8 })
    }

    fn pair(&self) -> Ed25519KeyPair {
        Ed25519KeyPair::from_pkcs8(&self.pkcs8).expect("checked when loaded")
    }

    /// The TUF public key.
    pub fn tuf_key(&self) -> Key {
        self.pair().tuf_key()
    }

    /// The TUF key id (hex).
    pub fn key_id(&self) -> anyhow::Result<Decoded<Hex>> {
        self.tuf_key().key_id().map_err(|e| anyhow!("key id: {e}"))
    }

    /// The raw public key bytes.
    pub fn public(&self) -> Vec<u8> {
        self.pair().public_key().as_ref().to_vec()
    }

    /// Write the key file (new file only; 0600 on Unix).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        write_new_private(path, &self.pkcs8)
    }

    fn source(&self) -> Box<dyn KeySource> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl KeySource for RoleKey {
    async fn as_sign(
        &self,
    ) -> Result<Box<dyn Sign>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(Box::new(self.pair()))
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Err("outpost role keys are not written through tough".into())
    }
}

fn write_new_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {} (an existing file is kept)", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Write `bytes` to `path` atomically: temporary file in the same directory,
/// fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().context("path without a directory")?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .map_err(|e| anyhow!("renaming into {}: {}", path.display(), e.error))?;
    Ok(())
}

/// `keygen`: one key file per role in `dir` (`root.key`, `targets.key`,
/// `snapshot.key`, `timestamp.key`); existing files are never overwritten.
pub fn keygen(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for role in ROLES {
        RoleKey::generate()?.save(&dir.join(format!("{role}.key")))?;
    }
    Ok(())
}

/// Load the key of `role` from `keys`.
pub fn load_key(keys: &Path, role: &str) -> anyhow::Result<RoleKey> {
    RoleKey::load(&keys.join(format!("{role}.key")))
}

fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn nz(v: u64) -> anyhow::Result<NonZeroU64> {
    NonZeroU64::new(v).context("version 0")
}

/// `init`: create the repository in `repo` with version 1 of root (signed by
/// `root`, listing the public keys of all four roles, consistent snapshots)
/// and publish an empty set of targets.
pub fn init(
    repo: &Path,
    root: &RoleKey,
    targets: &RoleKey,
    snapshot: &RoleKey,
    timestamp: &RoleKey,
    expiry: Expiry,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let now = whole_seconds(now);
    let meta = repo.join("metadata");
    ensure!(
        !meta.join("1.root.json").exists(),
        "{} already holds a repository",
        repo.display()
    );
    for d in ["metadata", "targets", "staging"] {
        std::fs::create_dir_all(repo.join(d))?;
    }
    let mut keys = HashMap::new();
    let mut roles = HashMap::new();
    for (role, key) in [
        (RoleType::Root, root),
        (RoleType::Targets, targets),
        (RoleType::Snapshot, snapshot),
        (RoleType::Timestamp, timestamp),
    ] {
        let id = key.key_id()?;
        keys.insert(id.clone(), key.tuf_key());
        roles.insert(
            role,
            RoleKeys {
                keyids: vec![id],
                threshold: nz(1)?,
                _extra: HashMap::new(),
            },
        );
    }
    let root_role = Root {
        spec_version: SPEC_VERSION.into(),
        consistent_snapshot: true,
        version: nz(1)?,
        expires: now + expiry.root,
        keys,
        roles,
        _extra: HashMap::new(),
    };
    let signed = rt()?.block_on(SignedRole::new(
        root_role.clone(),
        &KeyHolder::Root(root_role),
        &[root.source()],
        &SystemRandom::new(),
    ))?;
    write_atomic(&meta.join("1.root.json"), signed.buffer())?;
    publish(repo, targets, snapshot, timestamp, expiry, now)?;
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// The newest `N.root.json` of the repository (path and version).
fn latest_root(meta: &Path) -> anyhow::Result<(PathBuf, u64)> {
    let mut v = 1;
    ensure!(
        meta.join("1.root.json").exists(),
        "no repository in {} (run `repo init`)",
        meta.display()
    );
    while meta.join(format!("{}.root.json", v + 1)).exists() {
        v += 1;
    }
    Ok((meta.join(format!("{v}.root.json")), v))
}

/// The published state: timestamp, snapshot and targets as the metadata
/// directory has them now.
struct Current {
    timestamp: Signed<Timestamp>,
    snapshot_version: u64,
    targets: Signed<Targets>,
}

fn current(meta: &Path) -> anyhow::Result<Option<Current>> {
    let ts_path = meta.join("timestamp.json");
    if !ts_path.exists() {
        return Ok(None);
    }
    let timestamp: Signed<Timestamp> = read_json(&ts_path)?;
    let snapshot_version = timestamp
        .signed
        .meta
        .get("snapshot.json")
        .context("timestamp.json names no snapshot")?
        .version
        .get();
    let snapshot: Signed<Snapshot> =
        read_json(&meta.join(format!("{snapshot_version}.snapshot.json")))?;
    let targets_version = snapshot
        .signed
        .meta
        .get("targets.json")
        .context("snapshot names no targets.json")?
        .version
        .get();
    let targets: Signed<Targets> =
        read_json(&meta.join(format!("{targets_version}.targets.json")))?;
    Ok(Some(Current {
        timestamp,
        snapshot_version,
        targets,
    }))
}

/// What `add` found in a module file.
#[derive(Debug, Clone)]
pub struct Added {
    /// Target name in the repository.
    pub target: String,
    /// Our custom metadata.
    pub custom: ModuleTarget,
}

/// `add`: check that `module` is a well-formed signed module file and stage
/// it (with its custom metadata) for the next `publish`. The signature is
/// checked by every host against its own trust store, not here.
pub fn add(repo: &Path, module: &Path, models: &[String]) -> anyhow::Result<Added> {
    let bytes = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let inspection = outpost_signing::inspect_unverified(&bytes)
        .with_context(|| format!("{} is not a signed outpost module", module.display()))?;
    ensure!(
        !inspection.key_ids.is_empty(),
        "{} carries no signature",
        module.display()
    );
    let m = &inspection.manifest;
    let custom = ModuleTarget {
        module: m.name.clone(),
        version: m.version.clone(),
        capability_digest: outpost_signing::capability_digest(m),
        models: models.to_vec(),
    };
    let name = target_name(&m.name, &m.version);
    let meta = repo.join("metadata");
    latest_root(&meta)?;
    if let Some(cur) = current(&meta)? {
        let already = cur
            .targets
            .signed
            .targets
            .keys()
            .any(|t| t.raw() == name.as_str());
        ensure!(
            !already,
            "{name} is already published; versions are immutable"
        );
    }
    let staging = repo.join("staging");
    std::fs::create_dir_all(&staging)?;
    write_atomic(&staging.join(&name), &bytes)?;
    write_atomic(
        &staging.join(format!("{name}.custom.json")),
        &serde_json::to_vec_pretty(&custom)?,
    )?;
    Ok(Added {
        target: name,
        custom,
    })
}

/// What a publish wrote.
#[derive(Debug, Clone)]
pub struct Published {
    /// Targets version (unchanged by a timestamp-only publish).
    pub targets_version: u64,
    /// Snapshot version.
    pub snapshot_version: u64,
    /// Timestamp version.
    pub timestamp_version: u64,
    /// Target names newly published.
    pub added: Vec<String>,
}

/// `publish`: sign a new targets (the published ones plus the staged ones),
/// snapshot and timestamp, and move them and the staged files into place.
pub fn publish(
    repo: &Path,
    targets_key: &RoleKey,
    snapshot_key: &RoleKey,
    timestamp_key: &RoleKey,
    expiry: Expiry,
    now: DateTime<Utc>,
) -> anyhow::Result<Published> {
    let now = whole_seconds(now);
    let meta = repo.join("metadata");
    let (root_path, _) = latest_root(&meta)?;
    let cur = current(&meta)?;
    let staging = repo.join("staging");
    let mut staged = Vec::new();
    if staging.exists() {
        for entry in std::fs::read_dir(&staging)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .context("staged file with a non-UTF-8 name")?
                .to_owned();
            if name.ends_with(".wasm") {
                let custom: ModuleTarget = read_json(&staging.join(format!("{name}.custom.json")))?;
                staged.push((name, path, custom));
            }
        }
    }
    staged.sort_by(|a, b| a.0.cmp(&b.0));
    let rt = rt()?;
    let (targets_version, snapshot_version, timestamp_version) = match &cur {
        Some(c) => (
            c.targets.signed.version.get() + 1,
            c.snapshot_version + 1,
            c.timestamp.signed.version.get() + 1,
        ),
        None => (1, 1, 1),
    };
    let signed = rt.block_on(async {
        let mut editor = RepositoryEditor::new(&root_path).await?;
        if let Some(c) = &cur {
            editor.targets(c.targets.clone())?;
        }
        for (name, path, custom) in &staged {
            let mut target = Target::from_path(path).await?;
            target
                .custom
                .insert(CUSTOM_KEY.into(), serde_json::to_value(custom)?);
            editor.add_target(name.as_str(), target)?;
        }
        editor
            .targets_version(nz(targets_version)?)?
            .targets_expires(now + expiry.targets)?
            .snapshot_version(nz(snapshot_version)?)
            .snapshot_expires(now + expiry.snapshot)
            .timestamp_version(nz(timestamp_version)?)
            .timestamp_expires(now + expiry.timestamp);
        let keys = [
            targets_key.source(),
            snapshot_key.source(),
            timestamp_key.source(),
        ];
        anyhow::Ok(editor.sign(&keys).await?)
    })?;
    // Targets first (content-addressed names), then the versioned metadata,
    // then timestamp.json: each by temp file + rename.
    let targets_dir = repo.join("targets");
    std::fs::create_dir_all(&targets_dir)?;
    let mut added = Vec::new();
    for (name, path, _) in &staged {
        let bytes = std::fs::read(path)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        write_atomic(
            &targets_dir.join(format!("{}.{name}", hex::encode(digest.as_ref()))),
            &bytes,
        )?;
        added.push(name.clone());
    }
    let tmp = tempfile::tempdir_in(repo)?;
    rt.block_on(signed.write(tmp.path()))?;
    let mut last = None;
    for entry in std::fs::read_dir(tmp.path())? {
        let path = entry?.path();
        let name = path.file_name().context("file name")?.to_owned();
        if name == "timestamp.json" {
            last = Some(path);
            continue;
        }
        if meta.join(&name).exists() {
            // 1.root.json is written back unchanged by tough; versioned
            // files are immutable.
            continue;
        }
        write_atomic(&meta.join(&name), &std::fs::read(&path)?)?;
    }
    let ts = last.context("tough wrote no timestamp.json")?;
    write_atomic(&meta.join("timestamp.json"), &std::fs::read(&ts)?)?;
    for (name, path, _) in &staged {
        std::fs::remove_file(path)?;
        std::fs::remove_file(staging.join(format!("{name}.custom.json")))?;
    }
    Ok(Published {
        targets_version,
        snapshot_version,
        timestamp_version,
        added,
    })
}

/// `publish --timestamp-only`: re-sign the timestamp (next version, new
/// expiry, same snapshot) with only the timestamp key.
pub fn publish_timestamp(
    repo: &Path,
    timestamp_key: &RoleKey,
    expiry: Expiry,
    now: DateTime<Utc>,
) -> anyhow::Result<Published> {
    let now = whole_seconds(now);
    let meta = repo.join("metadata");
    let (root_path, _) = latest_root(&meta)?;
    let root: Signed<Root> = read_json(&root_path)?;
    let cur = current(&meta)?.context("nothing published yet: run `repo publish`")?;
    let mut ts = cur.timestamp.signed.clone();
    ts.version = nz(ts.version.get() + 1)?;
    ts.expires = now + expiry.timestamp;
    let version = ts.version.get();
    let signed = rt()?.block_on(SignedRole::new(
        ts,
        &KeyHolder::Root(root.signed),
        &[timestamp_key.source()],
        &SystemRandom::new(),
    ))?;
    write_atomic(&meta.join("timestamp.json"), signed.buffer())?;
    Ok(Published {
        targets_version: cur.targets.signed.version.get(),
        snapshot_version: cur.snapshot_version,
        timestamp_version: version,
        added: Vec::new(),
    })
}

/// Sign `timestamp` exactly as given with the timestamp key, for tools and
/// tests that need a specific (even hostile) timestamp: returns the
/// serialised signed file.
pub fn sign_timestamp(
    repo: &Path,
    timestamp: Timestamp,
    timestamp_key: &RoleKey,
) -> anyhow::Result<Vec<u8>> {
    let (root_path, _) = latest_root(&repo.join("metadata"))?;
    let root: Signed<Root> = read_json(&root_path)?;
    let signed = rt()?.block_on(SignedRole::new(
        timestamp,
        &KeyHolder::Root(root.signed),
        &[timestamp_key.source()],
        &SystemRandom::new(),
    ))?;
    Ok(signed.buffer().clone())
}

/// The metadata of a published file in the form the timestamp lists it.
pub fn metafile_for(bytes: &[u8], version: u64) -> anyhow::Result<Metafile> {
    Ok(Metafile {
        hashes: Some(Hashes {
            sha256: ring::digest::digest(&ring::digest::SHA256, bytes)
                .as_ref()
                .to_vec()
                .into(),
            _extra: HashMap::new(),
        }),
        length: Some(bytes.len() as u64),
        version: nz(version)?,
        _extra: HashMap::new(),
    })
}

/// The published targets with our custom metadata (for `repo list`).
pub fn list(repo: &Path) -> anyhow::Result<Vec<(String, u64, ModuleTarget)>> {
    let Some(cur) = current(&repo.join("metadata"))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (name, t) in &cur.targets.signed.targets {
        let custom = t
            .custom
            .get(CUSTOM_KEY)
            .cloned()
            .context("target without outpost metadata")?;
        out.push((
            name.raw().to_owned(),
            t.length,
            serde_json::from_value(custom)?,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Read-only routes serving `repo` at [`METADATA_PATH`] and [`TARGETS_PATH`].
pub fn router(repo: PathBuf) -> Router {
    Router::new()
        .route(&format!("{METADATA_PATH}/{{file}}"), get(metadata_file))
        .route(&format!("{TARGETS_PATH}/{{file}}"), get(target_file))
        .with_state(std::sync::Arc::new(repo))
}

/// A file name the routes serve: `[A-Za-z0-9._-]`, not starting with a dot.
fn servable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

async fn serve_file(path: PathBuf, content_type: &'static str) -> Response {
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut r = bytes.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "update repository read failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn metadata_file(
    State(repo): State<std::sync::Arc<PathBuf>>,
    UrlPath(file): UrlPath<String>,
) -> Response {
    if !servable(&file) || !file.ends_with(".json") {
        return StatusCode::NOT_FOUND.into_response();
    }
    serve_file(repo.join("metadata").join(file), "application/json").await
}

async fn target_file(
    State(repo): State<std::sync::Arc<PathBuf>>,
    UrlPath(file): UrlPath<String>,
) -> Response {
    if !servable(&file) {
        return StatusCode::NOT_FOUND.into_response();
    }
    serve_file(repo.join("targets").join(file), "application/octet-stream").await
}

/// Refuse a repository directory that cannot be served.
pub fn check_servable(repo: &Path) -> anyhow::Result<()> {
    let meta = repo.join("metadata");
    latest_root(&meta)?;
    if !meta.join("timestamp.json").exists() {
        bail!(
            "{} has no timestamp.json: run `repo publish`",
            repo.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servable_names() {
        assert!(servable("1.root.json"));
        assert!(servable("ab12.collector-1.0.0.wasm"));
        for bad in ["", ".hidden", "..", "a/b", "a\\b", "a%2fb", "a b"] {
            assert!(!servable(bad), "{bad:?}");
        }
    }
}
