//! Assembling a host from its config: database, TLS, runtime, modules.
//!
//! A module that cannot be loaded is refused (with an event naming why) and the
//! host carries on with the others.

use crate::config::{Config, ModuleConfig};
use crate::events::{Events, HostEvent, Setting};
use crate::grants::{Grant, GrantError};
use crate::runtime::{Cache, LoadError, LoadedModule, Runtime, Services};
use crate::store::Db;
use crate::store::versions::Versions;
use anyhow::Context;
use outpost_signing::verify::{Expectation, VerifiedModule, verify};
use std::sync::Arc;

/// Largest signed module file the host reads (bytes).
pub const MAX_MODULE_FILE_BYTES: u64 = 64 << 20;

/// A module the host refused to load, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Refused {
    /// Module name from the config.
    pub module: String,
    /// The reason, naming the file, capability or import.
    pub reason: String,
}

/// A configured host with its modules loaded.
pub struct Agent {
    /// The configuration it was built from.
    pub config: Config,
    /// The runtime.
    pub runtime: Arc<Runtime>,
    /// Modules that loaded.
    pub modules: Vec<Arc<LoadedModule>>,
    /// Modules that were refused.
    pub refused: Vec<Refused>,
    /// Problems found while starting (setting problems, refused modules), so
    /// the supervisor can hand them to the notifier, which was not yet running.
    pub startup_problems: Vec<HostEvent>,
    /// (component, version) of the host and every loaded module, for heartbeats.
    pub software: Vec<(String, String)>,
}

/// The module's grant: its verified manifest ∩ the global policy ∩ its own.
pub fn grant_for(
    config: &Config,
    m: &ModuleConfig,
    verified: &VerifiedModule,
) -> Result<Grant, GrantError> {
    let mut policies = vec![&config.policy];
    if let Some(p) = &m.policy {
        policies.push(p);
    }
    Grant::new(verified, &policies, &config.directories)
}

/// Read and verify a module's signed file against the config's trust store and
/// the installed-version ledger. Nothing else produces a [`VerifiedModule`].
pub fn verify_module(
    config: &Config,
    versions: &Versions,
    m: &ModuleConfig,
) -> anyhow::Result<VerifiedModule> {
    let what = || format!("module file {} of module `{}`", m.file.display(), m.name);
    let len = std::fs::metadata(&m.file)
        .with_context(|| format!("cannot read {}", what()))?
        .len();
    if len > MAX_MODULE_FILE_BYTES {
        anyhow::bail!(
            "{} is {len} bytes, more than the {MAX_MODULE_FILE_BYTES} accepted",
            what()
        );
    }
    let bytes = std::fs::read(&m.file).with_context(|| format!("cannot read {}", what()))?;
    let expect = Expectation {
        name: &m.name,
        highest_installed: versions.highest(&m.name)?,
        now: std::time::SystemTime::now(),
    };
    verify(bytes, &config.trust, &expect).map_err(|error| {
        LoadError::Verify {
            module: m.name.clone(),
            path: m.file.clone(),
            error: Box::new(error),
        }
        .into()
    })
}

/// Verify, grant and load module `name` as [`Agent::build`] does (the file
/// an installed update put in place, else the config's `file`), and move the
/// version ledger up to it: for the supervisor's reload of an installed or
/// rolled-back update in a running host. Blocking (compiles).
pub fn load_named(config: &Config, runtime: &Runtime, name: &str) -> anyhow::Result<LoadedModule> {
    let m = config
        .modules
        .iter()
        .find(|m| m.name == name)
        .with_context(|| format!("module `{name}` is not configured"))?;
    let m = crate::update::install::effective(config, m);
    let versions = Versions::new(runtime.services().db.clone());
    let verified = verify_module(config, &versions, &m)?;
    let grant = grant_for(config, &m, &verified)?;
    let loaded = runtime.load(&verified, grant)?;
    versions.record(
        &m.name,
        verified.manifest().semver(),
        &verified.file_sha256_hex(),
    )?;
    Ok(loaded)
}

/// The PEM bytes of `config`'s `[network] extra-ca-files`, in order.
pub fn extra_ca_pems(config: &Config) -> anyhow::Result<Vec<Vec<u8>>> {
    config
        .network
        .extra_ca_files
        .iter()
        .map(|f| std::fs::read(f).with_context(|| format!("cannot read CA file {}", f.display())))
        .collect()
}

/// The TLS client configuration of `config`'s `[network]` (built-in roots
/// and/or `extra-ca-files`; TLS 1.2 minimum).
pub fn tls_for(config: &Config) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pems = extra_ca_pems(config)?;
    crate::net::tls_config(&pems, config.network.only_extra_cas)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("network settings in {}", config.path.display()))
}

impl Agent {
    /// Open the state, build the runtime and load every configured module.
    /// Must run inside a tokio runtime.
    pub fn build(config: Config, events: Events) -> anyhow::Result<Agent> {
        let db = Db::open(&config.state_dir)?;
        let tls = tls_for(&config)?;
        let services = Services::new(db.clone(), events.clone(), config.instruments.clone(), tls);
        if config.trust.allow_development_key() {
            tracing::warn!(
                "DEVELOPMENT KEYS ALLOWED: [trust] allow-development-key = true in {}; modules signed with the workspace development key will run. Never use this on a production PC.",
                config.path.display()
            );
        }
        let cache = match Cache::open(&config.state_dir.join("cache")) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "compiled-module cache unavailable; compiling every start");
                None
            }
        };
        let versions = Versions::new(db.clone());
        let runtime = Arc::new(
            Runtime::new(services, config.policy.max_memory_mib, cache)
                .map_err(|e| anyhow::anyhow!("cannot start the component runtime: {e:#}"))?,
        );
        let mut startup_problems = Vec::new();
        let mut problem = |e: HostEvent| {
            events.emit(e.clone());
            startup_problems.push(e);
        };
        for (name, path) in &config.directories {
            if !path.is_dir() {
                problem(HostEvent::problem(
                    Setting::DirectoryMissing(name.clone()),
                    format!(
                        "logical directory `{name}` points to {}, which is not a directory",
                        path.display()
                    ),
                ));
            }
        }
        let uplink = &runtime.services().uplink;
        uplink.set_max_bytes(config.uplink.spool_max_mib << 20);
        match crate::uplink::identity::Identity::load(&config.state_dir) {
            Ok(id) => {
                tracing::info!(device = %id.device_id, "device identity loaded");
                let endpoints = config.uplink.endpoints();
                if !endpoints
                    .iter()
                    .any(|e| e.trim_end_matches('/') == id.server)
                {
                    problem(HostEvent::problem(
                        Setting::UplinkEndpointMismatch,
                        format!(
                            "this device enrolled with {} but uploads go to {}; the cloud there may not know the device",
                            id.server,
                            endpoints.join(", ")
                        ),
                    ));
                }
                uplink.set_identity(Some(id));
            }
            Err(e) => {
                let setting = match e {
                    crate::uplink::identity::IdentityError::NotEnrolled(_) => {
                        Setting::DeviceNotEnrolled
                    }
                    _ => Setting::DeviceIdentityUnusable,
                };
                tracing::warn!(
                    "{e}; nothing is collected or uploaded until the device is enrolled"
                );
                problem(HostEvent::problem(
                    setting,
                    format!("{e}; nothing is collected or uploaded until then"),
                ));
            }
        }
        let mut software = vec![(
            "outpost-host".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        )];
        let mut modules = Vec::new();
        let mut refused = Vec::new();
        if config.updates.is_some()
            && let Err(e) = crate::update::install::reconcile(&config, &db)
        {
            tracing::warn!("finishing an interrupted module update failed: {e}");
        }
        for m in &config.modules {
            // An installed update replaces the config's file.
            let m = &crate::update::install::effective(&config, m);
            let loaded = verify_module(&config, &versions, m).and_then(|verified| {
                let grant = grant_for(&config, m, &verified)?;
                let loaded = runtime.load(&verified, grant)?;
                versions.record(&m.name, verified.manifest().semver(), &verified.file_sha256_hex())?;
                software.push((m.name.clone(), verified.manifest().version.clone()));
                if let Some(dev) = verified.signers().iter().find(|s| s.development) {
                    tracing::warn!(module = %m.name, key = %dev.name, "module signed with a DEVELOPMENT key is running");
                    problem(HostEvent::problem(
                        Setting::DevelopmentKey(m.name.clone()),
                        format!(
                            "module `{}` is signed with the development key `{}`; allowed only because allow-development-key = true",
                            m.name, dev.name
                        ),
                    ));
                }
                Ok(loaded)
            });
            match loaded {
                Ok(l) => {
                    events.emit(HostEvent::ModuleReady {
                        module: m.name.clone(),
                        world: l.world().to_string(),
                    });
                    modules.push(Arc::new(l));
                }
                Err(e) => {
                    let reason = format!("{e:#}");
                    tracing::error!(module = %m.name, "module refused: {reason}");
                    problem(HostEvent::ModuleRefused {
                        module: m.name.clone(),
                        reason: reason.clone(),
                    });
                    refused.push(Refused {
                        module: m.name.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(Agent {
            config,
            runtime,
            modules,
            refused,
            startup_problems,
            software,
        })
    }
}
