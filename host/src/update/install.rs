//! Installing an update offer: atomic, checked before the switch, and
//! consistent after a crash at any step.
//!
//! Layout: `STATE/modules/<name>/<sha256>.wasm` (verified module files, named
//! by content) and `STATE/modules/<name>/current` (the file name the host
//! loads instead of the config's `file`; written by temp file + fsync +
//! rename, so it names the old file or the new one, never neither). The
//! previous file stays for rollback and is named in `previous`.
//!
//! Steps, each a crash-injection point for tests (`OUTPOST_CRASH_AT=<step>`
//! aborts the process right after it):
//! 1. the offer must be approved for the diff it has *now* (recomputed
//!    against what is installed now; an approval of another diff is void), or
//!    add nothing while `auto-install-without-new-capabilities = true`;
//! 2. the downloaded file verifies again (trust store, ledger) and is the
//!    offer's file (SHA-256);
//! 3. `staged`: the file is written into `STATE/modules/<name>/`;
//! 4. `checked`: health check — the module's grant under the operator's
//!    policy, compile and link in a fresh runtime, as the host will load it,
//!    and one call of its export over a throwaway state;
//!    on failure the staged file is removed, the offer is `failed` with the
//!    reason (audit, event) and the old version stays;
//! 5. `switched`: `current` names the new file;
//! 6. `recorded`: the version ledger moves up, the offer is `installed`
//!    (audit entry with the diff digest).
//!
//! [`reconcile`] (run before every install and at host start) finishes a
//! switch whose ledger or offer update a crash interrupted.

use super::offers::{DecisionError, Offer, OfferState, Offers};
use super::write_atomic;
use crate::config::{Config, ModuleConfig};
use crate::store::versions::Versions;
use crate::store::{Db, DbError};
use outpost_signing::verify::{Expectation, VerifiedModule, verify};
use std::path::{Path, PathBuf};

/// Age after which [`reconcile`] removes a staged file no install switched
/// to (an install in another process may be between staging and switching).
pub const STALE_STAGED_SECS: u64 = 3600;

/// Environment variable naming the step after which an install aborts the
/// process (tests of crash consistency only).
pub const CRASH_ENV: &str = "OUTPOST_CRASH_AT";

/// Why an install did not happen.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// No such offer.
    #[error("no update offer {0}")]
    NotFound(i64),
    /// The module is not configured on this PC.
    #[error("module `{0}` is not configured on this PC")]
    UnknownModule(String),
    /// The offer is in a state that cannot be installed.
    #[error(
        "update offer {id} is {state}; only an approved offer (or one adding nothing, where the policy allows) installs"
    )]
    NotInstallable {
        /// Offer id.
        id: i64,
        /// Its state.
        state: &'static str,
    },
    /// It asks for more and was not approved.
    #[error(
        "update offer {0} asks for more than the installed version: approve it first (`outpost updates show {0}`)"
    )]
    NeedsApproval(i64),
    /// The diff changed since the approval.
    #[error(
        "the capability diff of update offer {0} changed since it was approved: the approval is void; approve it again"
    )]
    ApprovalVoid(i64),
    /// The staged file did not verify or is not the offer's.
    #[error("the downloaded file of update offer {id} is refused: {reason}")]
    File {
        /// Offer id.
        id: i64,
        /// Why.
        reason: String,
    },
    /// The health check failed: nothing switched.
    #[error("update offer {id} failed its health check and was not installed: {reason}")]
    HealthCheck {
        /// Offer id.
        id: i64,
        /// Why.
        reason: String,
    },
    /// A rollback found nothing it may roll back to.
    #[error("cannot roll back module `{module}`: {reason}")]
    NoRollback {
        /// Module name.
        module: String,
        /// Why.
        reason: String,
    },
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A file operation.
    #[error("{what} {path}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

impl From<DecisionError> for InstallError {
    fn from(e: DecisionError) -> Self {
        match e {
            DecisionError::NotFound(id) => InstallError::NotFound(id),
            DecisionError::NotAvailable { id, state } => InstallError::NotInstallable { id, state },
            DecisionError::Db(e) => InstallError::Db(e),
        }
    }
}

fn crash_point(step: &str) {
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == step) {
        eprintln!("{CRASH_ENV}={step}: aborting");
        std::process::abort();
    }
}

/// The directory of a module's installed files.
pub fn module_dir(config: &Config, module: &str) -> PathBuf {
    config.state_dir.join("modules").join(module)
}

/// The file an update installed for `module`, if any (what `current`
/// names, when that file exists).
pub fn installed_file(config: &Config, module: &str) -> Option<PathBuf> {
    let dir = module_dir(config, module);
    let name = std::fs::read_to_string(dir.join("current")).ok()?;
    let name = name.trim();
    let ok = name.len() == 64 + 5
        && name.ends_with(".wasm")
        && name[..64].bytes().all(|b| b.is_ascii_hexdigit());
    let path = dir.join(name);
    (ok && path.is_file()).then_some(path)
}

/// `m` with its `file` replaced by the installed update's, if there is one.
pub fn effective(config: &Config, m: &ModuleConfig) -> ModuleConfig {
    let mut m = m.clone();
    if let Some(f) = installed_file(config, &m.name) {
        m.file = f;
    }
    m
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> InstallError + 'a {
    move |error| InstallError::Io {
        what,
        path: path.to_owned(),
        error,
    }
}

/// Finish what a crash interrupted: an offer whose file `current` names is
/// installed (ledger and offer state); a staged file no `current` or
/// `previous` names is removed once older than [`STALE_STAGED_SECS`].
pub fn reconcile(config: &Config, db: &Db) -> Result<(), InstallError> {
    let offers = Offers::new(db.clone());
    let versions = Versions::new(db.clone());
    for m in &config.modules {
        let dir = module_dir(config, &m.name);
        let Some(current) = installed_file(config, &m.name) else {
            continue;
        };
        let sha = current
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        for o in offers.list()? {
            if o.module == m.name && o.file_sha256 == sha && o.state != OfferState::Installed {
                if let Some(v) = semver(&o.to_version) {
                    versions.record(&m.name, v, &sha)?;
                }
                offers.mark(o.id, OfferState::Installed, None, "host")?;
            }
        }
        let previous = std::fs::read_to_string(dir.join("previous")).unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let p = e.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                // Only leftovers older than STALE_STAGED_SECS: another
                // process may be between staging and switching right now.
                let stale = e
                    .metadata()
                    .and_then(|md| md.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > STALE_STAGED_SECS);
                if name.ends_with(".wasm") && p != current && name != previous.trim() && stale {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
    Ok(())
}

fn semver(v: &str) -> Option<(u64, u64, u64)> {
    super::semver(v)
}

/// Install offer `id` (see the module documentation). `client` is recorded
/// in the audit table.
pub fn install(
    config: &Config,
    db: &Db,
    events: &crate::events::Events,
    id: i64,
    client: &str,
) -> Result<Offer, InstallError> {
    reconcile(config, db)?;
    let offers = Offers::new(db.clone());
    let versions = Versions::new(db.clone());
    let offer = offers.get(id)?.ok_or(InstallError::NotFound(id))?;
    if !matches!(offer.state, OfferState::Approved | OfferState::Available) {
        return Err(InstallError::NotInstallable {
            id,
            state: offer.state.as_str(),
        });
    }
    let m = config
        .modules
        .iter()
        .find(|m| m.name == offer.module)
        .ok_or_else(|| InstallError::UnknownModule(offer.module.clone()))?;
    let current = effective(config, m);
    let installed = crate::agent::verify_module(config, &versions, &current).map_err(|e| {
        InstallError::File {
            id,
            reason: format!("the installed version does not verify: {e:#}"),
        }
    })?;
    // 2. The downloaded file, verified again.
    let file_refused = |reason: String| InstallError::File { id, reason };
    let path = offer
        .file_path
        .as_deref()
        .map(PathBuf::from)
        .ok_or_else(|| file_refused("no downloaded file (refused offer)".into()))?;
    let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
    let expect = Expectation {
        name: &offer.module,
        highest_installed: versions.highest(&offer.module)?,
        now: std::time::SystemTime::now(),
    };
    let verified = verify(bytes, &config.trust, &expect)
        .map_err(|e| file_refused(format!("signature: {e}")))?;
    if verified.file_sha256_hex() != offer.file_sha256 {
        return Err(file_refused("not the file the offer was made for".into()));
    }
    if semver(&verified.manifest().version) <= semver(&installed.manifest().version) {
        return Err(file_refused(format!(
            "version {} is not higher than the installed {}",
            verified.manifest().version,
            installed.manifest().version
        )));
    }
    // 1. Authorisation, for the diff as it is now.
    let diff = outpost_signing::capability_diff(installed.manifest(), verified.manifest());
    let digest = diff.digest();
    match offer.state {
        OfferState::Approved => {
            if !offers.approval_holds(id, &digest)? {
                return Err(InstallError::ApprovalVoid(id));
            }
        }
        OfferState::Available => {
            let auto = config
                .updates
                .as_ref()
                .is_some_and(|u| u.auto_install_without_new_capabilities);
            if diff.asks_for_more() || offer.diff_digest.as_deref() != Some(digest.as_str()) {
                return Err(InstallError::NeedsApproval(id));
            }
            if !auto {
                return Err(InstallError::NeedsApproval(id));
            }
        }
        other => {
            return Err(InstallError::NotInstallable {
                id,
                state: other.as_str(),
            });
        }
    }
    // 3. Stage.
    let dir = module_dir(config, &offer.module);
    let staged = dir.join(format!("{}.wasm", offer.file_sha256));
    write_atomic(&staged, verified.bytes()).map_err(io("staging", &staged))?;
    crash_point("staged");
    // 4. Health check.
    if let Err(reason) = health_check(config, m, &verified) {
        let _ = std::fs::remove_file(&staged);
        offers.mark(id, OfferState::Failed, Some(&reason), client)?;
        events.emit(crate::events::HostEvent::ModuleRefused {
            module: offer.module.clone(),
            reason: format!(
                "update to {} failed its health check; {} stays installed: {reason}",
                offer.to_version,
                installed.manifest().version
            ),
        });
        return Err(InstallError::HealthCheck { id, reason });
    }
    crash_point("checked");
    // 5. Switch: keep the previous file for rollback.
    if let Some(prev) = installed_file(config, &offer.module) {
        let name = prev
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let p = dir.join("previous");
        write_atomic(&p, name.as_bytes()).map_err(io("writing", &p))?;
    }
    let cur = dir.join("current");
    if !staged.is_file() {
        return Err(InstallError::Io {
            what: "the staged file vanished before the switch",
            path: staged,
            error: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    write_atomic(&cur, format!("{}.wasm\n", offer.file_sha256).as_bytes())
        .map_err(io("switching", &cur))?;
    crash_point("switched");
    // 6. Ledger and offer.
    versions.record(
        &offer.module,
        verified.manifest().semver(),
        &verified.file_sha256_hex(),
    )?;
    let done = offers.mark(id, OfferState::Installed, None, client)?;
    crash_point("recorded");
    events.emit(crate::events::HostEvent::UpdateInstalled {
        offer: id,
        module: offer.module.clone(),
        to_version: offer.to_version.clone(),
    });
    Ok(done)
}

/// What [`roll_back`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolledBack {
    /// The file that runs again (the previous installed file, or the
    /// config's `file` when the failed update was the first).
    pub file: PathBuf,
    /// Its version.
    pub version: String,
}

/// Roll back `module`, whose running file (SHA-256 `failed_sha256`, an
/// installed update) failed in service: the version ledger returns to the
/// version before it (first, so that a crash between the two steps leaves
/// the failed version loadable and the rollback repeatable), then `current`
/// names the previous file again by an atomic rename (or is removed when the
/// previous version was the config's `file`); the update's offer becomes
/// `failed` with `reason` (audit entry) and an `update-rolled-back` event
/// says so. Only the exact file that ran before is restored, verified again
/// against the trust store.
pub fn roll_back(
    config: &Config,
    db: &Db,
    events: &crate::events::Events,
    module: &str,
    failed_sha256: &str,
    reason: &str,
) -> Result<RolledBack, InstallError> {
    let refuse = |reason: &str| InstallError::NoRollback {
        module: module.to_owned(),
        reason: reason.to_owned(),
    };
    let m = config
        .modules
        .iter()
        .find(|m| m.name == module)
        .ok_or_else(|| InstallError::UnknownModule(module.to_owned()))?;
    let dir = module_dir(config, module);
    let running = installed_file(config, module)
        .ok_or_else(|| refuse("the running version is not an installed update"))?;
    if running.file_stem().and_then(|s| s.to_str()) != Some(failed_sha256) {
        return Err(refuse("the failed file is no longer the installed one"));
    }
    let previous = std::fs::read_to_string(dir.join("previous")).unwrap_or_default();
    let previous = previous.trim();
    let restored = if previous.is_empty() {
        m.file.clone()
    } else {
        dir.join(previous)
    };
    let offers = Offers::new(db.clone());
    let failed = offers
        .list()?
        .into_iter()
        .find(|o| o.module == module && o.file_sha256 == failed_sha256);
    let bytes = std::fs::read(&restored).map_err(io("reading", &restored))?;
    // Verified as at load, except for the ledger, which names the failed version.
    let expect = Expectation {
        name: module,
        highest_installed: None,
        now: std::time::SystemTime::now(),
    };
    let verified = verify(bytes, &config.trust, &expect)
        .map_err(|e| refuse(&format!("the previous version does not verify: {e}")))?;
    let versions = Versions::new(db.clone());
    versions.roll_back_to(
        module,
        verified.manifest().semver(),
        &verified.file_sha256_hex(),
    )?;
    crash_point("rollback-ledger");
    let cur = dir.join("current");
    if previous.is_empty() {
        std::fs::remove_file(&cur).map_err(io("removing", &cur))?;
    } else {
        write_atomic(&cur, format!("{previous}\n").as_bytes()).map_err(io("switching", &cur))?;
        let _ = std::fs::remove_file(dir.join("previous"));
    }
    let failed_version = failed
        .as_ref()
        .map(|o| o.to_version.clone())
        .unwrap_or_default();
    if let Some(o) = &failed {
        offers.mark(
            o.id,
            OfferState::Failed,
            Some(&format!("failed in service and rolled back: {reason}")),
            "host",
        )?;
    }
    let version = verified.manifest().version.clone();
    events.emit(crate::events::HostEvent::UpdateRolledBack {
        offer: failed.as_ref().map(|o| o.id).unwrap_or(0),
        module: module.to_owned(),
        failed_version,
        restored_version: version.clone(),
        reason: reason.to_owned(),
    });
    Ok(RolledBack {
        file: restored,
        version,
    })
}

/// Grant under the operator's policy, compile and link in a fresh runtime
/// over a throwaway state (a scratch database, its own event bus, no device
/// identity, so nothing is queued for upload), then one call of the
/// module's export within its wall-clock limit ([`Runtime::health_call`]).
///
/// [`Runtime::health_call`]: crate::runtime::Runtime::health_call
fn health_check(
    config: &Config,
    m: &ModuleConfig,
    verified: &VerifiedModule,
) -> Result<(), String> {
    let grant = crate::agent::grant_for(config, m, verified).map_err(|e| e.to_string())?;
    let tls = crate::agent::tls_for(config).map_err(|e| format!("{e:#}"))?;
    let scratch = tempfile::Builder::new()
        .prefix("update-health-")
        .tempdir_in(&config.state_dir)
        .map_err(|e| format!("scratch state: {e}"))?;
    let db = Db::open(scratch.path()).map_err(|e| e.to_string())?;
    let services = crate::runtime::Services::new(
        db,
        crate::events::Events::default(),
        config.instruments.clone(),
        tls,
    );
    // Its own thread and runtime: install() may be called from async code.
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let runtime =
                    crate::runtime::Runtime::new(services, config.policy.max_memory_mib, None)
                        .map_err(|e| format!("{e:#}"))?;
                let loaded = runtime.load(verified, grant).map_err(|e| e.to_string())?;
                runtime
                    .health_call(&loaded)
                    .await
                    .map_err(|e| format!("the health-check call failed: {e}"))
            })
        })
        .join()
        .map_err(|_| "the health check panicked".to_owned())?
    })
}

/// Whether the person at this PC authorised a capability for the module
/// file that runs now (see [`authorisation`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorisation {
    /// Offer `offer` (version `version`) added it, the person approved that
    /// exact diff, and every version installed since kept it.
    Approved {
        /// The offer whose approval covers it.
        offer: i64,
        /// Its version.
        version: String,
    },
    /// Not authorised; why, in words for the audit trail and the person.
    Refused(&'static str),
}

/// Whether `item` (a capability diff item such as `permission
/// file-transfer`) was authorised on this PC for `module`, whose running file
/// has SHA-256 `running_sha256`. Yes only when that file is the one an
/// update installed (`current`), it has an install record, and the latest
/// installed version whose diff mentions `item` added it with an approval
/// of exactly that diff (the stored diff text hashes to the approved digest).
/// A file installed by hand (the config's `file`) is never authorised.
pub fn authorisation(
    config: &Config,
    db: &Db,
    module: &str,
    running_sha256: &str,
    item: &str,
) -> Result<Authorisation, DbError> {
    let current = installed_file(config, module);
    let current_sha = current
        .as_deref()
        .and_then(|p| p.file_stem())
        .and_then(|s| s.to_str());
    if current_sha != Some(running_sha256) {
        return Ok(Authorisation::Refused(
            "the running version was not installed through an update authorised on this PC",
        ));
    }
    let mut installed: Vec<Offer> = Offers::new(db.clone())
        .list()?
        .into_iter()
        .filter(|o| o.module == module && o.state == OfferState::Installed)
        .collect();
    installed.sort_by_key(|o| (semver(&o.to_version), o.id));
    let Some(pos) = installed
        .iter()
        .position(|o| o.file_sha256 == running_sha256)
    else {
        return Ok(Authorisation::Refused(
            "there is no install record for the running version",
        ));
    };
    let (added, removed) = (format!("+ {item}"), format!("- {item}"));
    let last = installed[..=pos].iter().rev().find_map(|o| {
        let text = o.diff_text.as_deref()?;
        text.lines()
            .find(|l| *l == added || *l == removed)
            .map(|l| (o, l == added))
    });
    Ok(match last {
        Some((o, true))
            if o.approved_digest.as_deref().is_some_and(|d| {
                d == outpost_signing::diff_text_digest(o.diff_text.as_deref().unwrap_or(""))
            }) =>
        {
            Authorisation::Approved {
                offer: o.id,
                version: o.to_version.clone(),
            }
        }
        Some((_, true)) => Authorisation::Refused(
            "the update that added it was installed without the person approving that diff",
        ),
        _ => Authorisation::Refused("no update authorised on this PC added it"),
    })
}
