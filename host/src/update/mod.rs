//! Module updates over TUF (issue #15): the updater.
//!
//! A check:
//! 1. reads the update clock: `max(now, highest time seen)` from the state
//!    database (it never goes backwards; tough itself also refuses a system
//!    clock that stepped back behind its datastore's last time);
//! 2. loads the repository with `tough` from the trusted root of `[updates]
//!    root` over [`HttpsTransport`] (the host's TLS settings, proxy as the
//!    uplink, timeouts and byte caps), with tough's verification: signatures
//!    and thresholds, expiry, rollback (versions never go down against the
//!    datastore in `STATE/updates/tuf`), mix-and-match (snapshot and targets
//!    hashes and lengths), metadata size caps ([`LIMITS`]); then checks
//!    every role's expiry once more against the update clock;
//! 3. for each target whose `outpost` custom metadata names a module this PC
//!    runs (and, if it lists models, a model attached here), with a version
//!    above the installed one: downloads it within its metadata length and
//!    hash (tough), verifies the module signature with the host's trust store
//!    ([`outpost_signing::verify`], as the agent does, with the version
//!    ledger), checks that the signed manifest's name, version and capability
//!    digest equal the metadata's, computes the capability diff against the
//!    installed manifest and records an offer (`available`), or records it as
//!    `refused` with the reason.
//!
//! A repository-level failure refuses the whole check and records nothing.

pub mod install;
pub mod offers;
pub mod transport;

use crate::config::Config;
use crate::store::versions::Versions;
use crate::store::{Db, DbError};
use offers::{NewOffer, Offer, OfferState, Offers};
use outpost_signing::manifest::Manifest;
use outpost_signing::verify::{Expectation, verify};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tough::{ExpirationEnforcement, Limits, RepositoryLoader, TargetName};
pub use transport::{FetchError, HttpsTransport};

/// Caps on metadata sizes (tough refuses larger files).
pub const LIMITS: Limits = Limits {
    max_root_size: 512 * 1024,
    max_targets_size: 4 * 1024 * 1024,
    max_timestamp_size: 64 * 1024,
    max_snapshot_size: 512 * 1024,
    max_root_updates: 64,
};

/// Default time one request may take.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 60;
/// Default time between scheduled checks.
pub const DEFAULT_CHECK_INTERVAL_SECS: u64 = 6 * 3600;

/// `[updates]` in the host configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UpdatesConfig {
    /// The trusted TUF root (`1.root.json` from the key ceremony), shipped
    /// with the configuration.
    pub root: PathBuf,
    /// The repository's base URL, e.g. `https://eu.cloud.example/v1/updates`
    /// (metadata under `/metadata/`, targets under `/targets/`); it must be
    /// on one of the uplink's endpoints (the region's set).
    pub repository: String,
    /// Install an update that asks for nothing more without asking.
    #[serde(default)]
    pub auto_install_without_new_capabilities: bool,
    /// Seconds between scheduled checks.
    #[serde(default = "default_interval")]
    pub check_interval_secs: u64,
    /// Seconds one request may take.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
}

fn default_interval() -> u64 {
    DEFAULT_CHECK_INTERVAL_SECS
}
fn default_timeout() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_SECS
}

/// The origin (`https://host:port`) of an `https://` URL, port made explicit.
fn origin(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    if u.scheme() != "https" || !u.username().is_empty() || u.password().is_some() {
        return None;
    }
    Some(format!(
        "https://{}:{}",
        u.host_str()?.to_ascii_lowercase(),
        u.port_or_known_default()?
    ))
}

impl UpdatesConfig {
    /// Check the settings: an `https://` repository without query or
    /// fragment on one of `endpoints` (the uplink's, i.e. the region's
    /// set), positive interval and timeout.
    pub fn validate(&self, endpoints: &[String]) -> Result<(), String> {
        let Some(o) = origin(&self.repository) else {
            return Err(format!(
                "updates: repository {:?} must be an https:// URL without user info",
                self.repository
            ));
        };
        let u = url::Url::parse(&self.repository).map_err(|e| e.to_string())?;
        if u.query().is_some() || u.fragment().is_some() {
            return Err("updates: repository must have no query or fragment".into());
        }
        if !endpoints
            .iter()
            .any(|e| origin(e).as_deref() == Some(o.as_str()))
        {
            return Err(format!(
                "updates: repository {:?} is not on one of the uplink endpoints ({})",
                self.repository,
                endpoints.join(", ")
            ));
        }
        if self.check_interval_secs == 0 || self.request_timeout_secs == 0 {
            return Err(
                "updates: check-interval-secs and request-timeout-secs must be above zero".into(),
            );
        }
        Ok(())
    }

    fn base(&self) -> String {
        self.repository.trim_end_matches('/').to_owned()
    }
}

/// Why a check failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// No `[updates]` section.
    #[error("no [updates] section in the configuration")]
    NotConfigured,
    /// The trusted root could not be read.
    #[error("cannot read the trusted update root {path}: {error}")]
    Root {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// TLS settings or HTTP client.
    #[error("update client: {0}")]
    Client(String),
    /// tough refused the repository (signature, expiry, rollback, hashes,
    /// lengths, sizes, transport).
    #[error("update repository refused: {0}")]
    Repository(String),
    /// Metadata expired against the update clock.
    #[error(
        "update repository refused: {role} metadata expired at {expires} (update clock {clock})"
    )]
    Expired {
        /// Which role.
        role: &'static str,
        /// Its expiry (RFC 3339).
        expires: String,
        /// The update clock (RFC 3339).
        clock: String,
    },
    /// The state database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Writing the downloaded file.
    #[error("cannot store a downloaded update in {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

/// Load and verify a repository as the updater does: tough from the trusted
/// `root` over `transport` with [`LIMITS`], the datastore `store` (rollback
/// protection), `enforcement` of expiry against the system clock, then every
/// top-level role's expiry once more against `clock` (seconds since the
/// epoch: the update clock, which never goes backwards). Shared with the
/// conformance client (`outpost tuf-client`).
pub async fn load_repository(
    root: &[u8],
    metadata: url::Url,
    targets: url::Url,
    transport: HttpsTransport,
    store: &Path,
    clock: i64,
    enforcement: ExpirationEnforcement,
) -> Result<tough::Repository, UpdateError> {
    let repo = RepositoryLoader::new(&root, metadata, targets)
        .transport(transport)
        .limits(LIMITS)
        .datastore(store)
        .expiration_enforcement(enforcement)
        .load()
        .await
        .map_err(|e| UpdateError::Repository(error_chain(&e)))?;
    for (role, expires) in [
        ("root", repo.root().signed.expires),
        ("targets", repo.targets().signed.expires),
        ("snapshot", repo.snapshot().signed.expires),
        ("timestamp", repo.timestamp().signed.expires),
    ] {
        if expires.timestamp() <= clock {
            return Err(UpdateError::Expired {
                role,
                expires: expires.to_rfc3339(),
                clock: rfc3339(clock),
            });
        }
    }
    Ok(repo)
}

/// What one check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Offers recorded or found again (available, approved, …).
    pub offers: Vec<Offer>,
    /// Offers refused in this check (also recorded, state `refused`).
    pub refused: Vec<Offer>,
    /// Targets that apply to no module or model of this PC, or are not newer.
    pub skipped: usize,
}

/// Our custom metadata of a target.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ModuleTarget {
    module: String,
    version: String,
    capability_digest: String,
    #[serde(default)]
    models: Vec<String>,
}

/// The updater of one host configuration.
pub struct Updater {
    events: Option<crate::events::Events>,
    config: Config,
    updates: UpdatesConfig,
    offers: Offers,
    versions: Versions,
    tls: std::sync::Arc<rustls::ClientConfig>,
}

pub(crate) fn semver(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
    let r = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(r)
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| secs.to_string())
}

impl Updater {
    /// The updater of `config` (which must have `[updates]`) over `db`.
    pub fn new(config: &Config, db: Db) -> Result<Updater, UpdateError> {
        let updates = config.updates.clone().ok_or(UpdateError::NotConfigured)?;
        let tls =
            crate::agent::tls_for(config).map_err(|e| UpdateError::Client(format!("{e:#}")))?;
        Ok(Updater {
            events: None,
            config: config.clone(),
            updates,
            offers: Offers::new(db.clone()),
            versions: Versions::new(db),
            tls,
        })
    }

    /// Publish an [`HostEvent::UpdateAvailable`] on `events` for each new
    /// offer.
    ///
    /// [`HostEvent::UpdateAvailable`]: crate::events::HostEvent::UpdateAvailable
    pub fn with_events(mut self, events: crate::events::Events) -> Updater {
        self.events = Some(events);
        self
    }

    /// The offers table.
    pub fn offers(&self) -> &Offers {
        &self.offers
    }

    /// Where tough keeps the last trusted metadata (rollback protection).
    pub fn datastore(&self) -> PathBuf {
        self.config.state_dir.join("updates").join("tuf")
    }

    /// Where verified downloads wait for a decision.
    pub fn downloads(&self) -> PathBuf {
        self.config.state_dir.join("updates").join("downloads")
    }

    /// The installed manifest of `module` (verified from its file as the
    /// agent loads it).
    fn installed(&self, module: &str) -> Option<Manifest> {
        let m = self.config.modules.iter().find(|m| m.name == module)?;
        let m = install::effective(&self.config, m);
        crate::agent::verify_module(&self.config, &self.versions, &m)
            .ok()
            .map(|v| v.manifest().clone())
    }

    /// Check the repository once; see the module documentation.
    pub async fn check(&self) -> Result<CheckReport, UpdateError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let clock = self.offers.clock(now)?;
        let root_path = &self.updates.root;
        let root = std::fs::read(root_path).map_err(|error| UpdateError::Root {
            path: root_path.clone(),
            error,
        })?;
        let base = self.updates.base();
        let transport = HttpsTransport::new(
            &self.tls,
            &format!("{base}/"),
            Duration::from_secs(self.updates.request_timeout_secs),
            crate::agent::MAX_MODULE_FILE_BYTES,
        )
        .map_err(|e| UpdateError::Client(e.to_string()))?;
        let parse =
            |s: String| url::Url::parse(&s).map_err(|e| UpdateError::Client(format!("{s}: {e}")));
        let store = self.datastore();
        std::fs::create_dir_all(&store).map_err(|error| UpdateError::Io {
            path: store.clone(),
            error,
        })?;
        let repo = load_repository(
            &root,
            parse(format!("{base}/metadata/"))?,
            parse(format!("{base}/targets/"))?,
            transport,
            &store,
            clock,
            ExpirationEnforcement::Safe,
        )
        .await?;
        let models: Vec<&str> = self
            .config
            .instruments
            .iter()
            .map(|i| i.model.as_str())
            .collect();
        let mut report = CheckReport::default();
        let mut targets: Vec<(TargetName, ModuleTarget)> = Vec::new();
        for (name, target) in repo.targets().signed.targets_iter() {
            let custom = target
                .custom
                .get("outpost")
                .cloned()
                .and_then(|v| serde_json::from_value::<ModuleTarget>(v).ok());
            match custom {
                Some(c) => targets.push((name.clone(), c)),
                None => report.skipped += 1,
            }
        }
        targets.sort_by(|a, b| a.0.raw().cmp(b.0.raw()));
        for (name, custom) in targets {
            if !custom.models.is_empty()
                && !custom.models.iter().any(|m| models.contains(&m.as_str()))
            {
                report.skipped += 1;
                continue;
            }
            let Some(installed) = self.installed(&custom.module) else {
                report.skipped += 1;
                continue;
            };
            let (Some(to), Some(from)) = (semver(&custom.version), semver(&installed.version))
            else {
                report.skipped += 1;
                continue;
            };
            let highest = self.versions.highest(&custom.module)?;
            if to <= from || highest.is_some_and(|h| to <= h) {
                report.skipped += 1;
                continue;
            }
            match self
                .fetch_and_verify(&repo, &name, &custom, &installed)
                .await
            {
                Ok(offer) => report.offers.push(offer),
                Err(Refusal { sha256, reason }) => {
                    let (offer, _) = self.offers.record(&NewOffer {
                        module: &custom.module,
                        from_version: Some(&installed.version),
                        to_version: &custom.version,
                        target: name.raw(),
                        file_sha256: sha256.as_deref().unwrap_or("-"),
                        file_path: None,
                        diff_digest: None,
                        diff_text: None,
                        adds_capabilities: false,
                        state: OfferState::Refused,
                        reason: Some(&reason),
                    })?;
                    tracing::warn!(module = %custom.module, version = %custom.version, reason = %reason, "update refused");
                    report.refused.push(offer);
                }
            }
        }
        Ok(report)
    }

    async fn fetch_and_verify(
        &self,
        repo: &tough::Repository,
        name: &TargetName,
        custom: &ModuleTarget,
        installed: &Manifest,
    ) -> Result<Offer, Refusal> {
        use tough::IntoVec;
        let refuse = |reason: String| Refusal {
            sha256: None,
            reason,
        };
        let stream = repo
            .read_target(name)
            .await
            .map_err(|e| refuse(format!("download refused: {}", error_chain(&e))))?
            .ok_or_else(|| refuse("target vanished from the metadata".into()))?;
        let bytes = stream
            .into_vec()
            .await
            .map_err(|e| refuse(format!("download refused: {}", error_chain(&e))))?;
        let expect = Expectation {
            name: &custom.module,
            highest_installed: self
                .versions
                .highest(&custom.module)
                .map_err(|e| refuse(e.to_string()))?,
            now: SystemTime::now(),
        };
        let verified = verify(bytes, &self.config.trust, &expect)
            .map_err(|e| refuse(format!("module signature refused: {e}")))?;
        let sha = verified.file_sha256_hex();
        let refuse = |reason: String| Refusal {
            sha256: Some(sha.clone()),
            reason,
        };
        let m = verified.manifest();
        if m.version != custom.version {
            return Err(refuse(format!(
                "the signed manifest says version {}, the repository {}",
                m.version, custom.version
            )));
        }
        let digest = outpost_signing::capability_digest(m);
        if digest != custom.capability_digest {
            return Err(refuse(
                "the signed manifest's capability digest differs from the repository's".into(),
            ));
        }
        if semver(&m.version) <= semver(&installed.version) {
            return Err(refuse(format!(
                "version {} is not higher than the installed {}",
                m.version, installed.version
            )));
        }
        let diff = outpost_signing::capability_diff(installed, m);
        let dir = self.downloads();
        let path = dir.join(format!("{sha}.wasm"));
        write_atomic(&path, verified.bytes()).map_err(|e| refuse(e.to_string()))?;
        let path_text = path.to_string_lossy().into_owned();
        let diff_text = diff.canonical_text();
        let diff_digest = diff.digest();
        let (offer, new) = self
            .offers
            .record(&NewOffer {
                module: &custom.module,
                from_version: Some(&installed.version),
                to_version: &m.version,
                target: name.raw(),
                file_sha256: &sha,
                file_path: Some(&path_text),
                diff_digest: Some(&diff_digest),
                diff_text: Some(&diff_text),
                adds_capabilities: diff.asks_for_more(),
                state: OfferState::Available,
                reason: None,
            })
            .map_err(|e| refuse(e.to_string()))?;
        if new && let Some(events) = &self.events {
            events.emit(crate::events::HostEvent::UpdateAvailable {
                offer: offer.id,
                module: offer.module.clone(),
                from_version: installed.version.clone(),
                to_version: offer.to_version.clone(),
                adds_capabilities: offer.adds_capabilities,
                changes: diff_text.lines().map(describe).collect(),
            });
        }
        Ok(offer)
    }
}

/// Check on a schedule inside the running host (`outpost run`): at start,
/// then every `check-interval-secs`. New offers are announced on `events`;
/// one that adds nothing installs at once where
/// `auto-install-without-new-capabilities = true` (effective at the next
/// start). A failed check is logged and tried again at the next interval.
/// `None` without `[updates]`.
pub fn spawn_schedule(
    config: &Config,
    db: Db,
    events: crate::events::Events,
) -> Option<tokio::task::JoinHandle<()>> {
    let updates = config.updates.clone()?;
    let config = config.clone();
    Some(tokio::spawn(async move {
        let interval = Duration::from_secs(updates.check_interval_secs);
        loop {
            match Updater::new(&config, db.clone()) {
                Ok(updater) => match updater.with_events(events.clone()).check().await {
                    Ok(report) => {
                        tracing::info!(
                            target: "outpost.update",
                            offers = report.offers.len(),
                            refused = report.refused.len(),
                            "update check done"
                        );
                        if updates.auto_install_without_new_capabilities {
                            for o in report.offers.iter().filter(|o| {
                                o.state == OfferState::Available && !o.adds_capabilities
                            }) {
                                let (config, db, events, id) =
                                    (config.clone(), db.clone(), events.clone(), o.id);
                                let res = tokio::task::spawn_blocking(move || {
                                    install::install(&config, &db, &events, id, "host:auto")
                                })
                                .await;
                                match res {
                                    Ok(Ok(_)) => {
                                        tracing::info!(target: "outpost.update", offer = id, "update installed automatically; effective at the next start")
                                    }
                                    Ok(Err(e)) => {
                                        tracing::warn!(target: "outpost.update", offer = id, "automatic install failed: {e}")
                                    }
                                    Err(e) => {
                                        tracing::warn!(target: "outpost.update", offer = id, "automatic install failed: {e}")
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(target: "outpost.update", "update check failed: {e}"),
                },
                Err(e) => {
                    tracing::warn!(target: "outpost.update", "update check not possible: {e}")
                }
            }
            tokio::time::sleep(interval).await;
        }
    }))
}

/// An offer with its diff in plain words and its decisions.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct OfferView {
    /// The stored offer.
    #[serde(flatten)]
    pub offer: Offer,
    /// Each diff line in plain words.
    pub changes: Vec<String>,
    /// The decisions, oldest first.
    pub audit: Vec<offers::AuditEntry>,
}

impl OfferView {
    /// The view of `offer` with its audit entries.
    pub fn of(offers: &Offers, offer: Offer) -> Result<OfferView, DbError> {
        let changes = offer
            .diff_text
            .as_deref()
            .unwrap_or("")
            .lines()
            .map(describe)
            .collect();
        let audit = offers.audit(offer.id)?;
        Ok(OfferView {
            offer,
            changes,
            audit,
        })
    }
}

/// One line of a stored capability diff (`+ endpoint files.example:443`) in
/// plain words for the person deciding.
pub fn describe(line: &str) -> String {
    let (sign, rest) = line.split_at(line.find(' ').unwrap_or(line.len()));
    let rest = rest.trim();
    let what = |item: &str| -> String {
        let (kind, arg) = item.split_once(' ').unwrap_or((item, ""));
        match kind {
            "endpoint" => format!("connect to {arg} over HTTPS"),
            "directory" => format!("read the directory “{arg}”"),
            "uplink" => format!(
                "send records to the vendor on the stream “{}”",
                arg.trim_start_matches("stream ")
            ),
            "notify" => "show notifications on this PC".into(),
            "state" => "keep data of its own on this PC".into(),
            "permission" => match arg {
                "file-transfer" => "transfer files during remote support".into(),
                "control" => "use keyboard and mouse during remote support".into(),
                "view" => "see the screen during remote support".into(),
                other => format!("use the remote-support permission “{other}”"),
            },
            _ => item.to_owned(),
        }
    };
    match sign {
        "+" => format!("may {}", what(rest)),
        "-" => format!("no longer may {}", what(rest)),
        "~" => {
            let mut p = rest.split_whitespace();
            let (field, old, new) = (
                p.next().unwrap_or(""),
                p.next().unwrap_or(""),
                p.nth(1).unwrap_or(""),
            );
            format!("{field} changes from {old} to {new}")
        }
        "world" => format!("becomes a different kind of module ({rest})"),
        _ => line.to_owned(),
    }
}

struct Refusal {
    sha256: Option<String>,
    reason: String,
}

/// An error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Write `bytes` to `path`: temporary file in the same directory, fsync,
/// rename, fsync of the directory where the platform allows it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("path without a directory"))?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
