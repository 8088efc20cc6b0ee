//! Assembling a host from its config: database, TLS, runtime, modules.
//!
//! A module that cannot be loaded is refused (with an event naming why) and the
//! host carries on with the others.

use crate::config::{Config, ModuleConfig};
use crate::events::{Events, HostEvent};
use crate::grants::Grant;
use crate::runtime::{LoadedModule, Runtime, Services};
use crate::store::Db;
use anyhow::Context;
use outpost_signing::Manifest;
use std::sync::Arc;

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
}

/// Read a module's manifest and compute its grant under `config`'s policies.
pub fn grant_for(config: &Config, m: &ModuleConfig) -> anyhow::Result<(Manifest, Grant)> {
    let path = m.manifest_path();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read manifest {} of module `{}`",
            path.display(),
            m.name
        )
    })?;
    let manifest = Manifest::from_toml(&text)
        .with_context(|| format!("manifest {} of module `{}`", path.display(), m.name))?;
    let mut policies = vec![&config.policy];
    if let Some(p) = &m.policy {
        policies.push(p);
    }
    let grant = Grant::new(&manifest, &policies, &config.directories)?;
    Ok((manifest, grant))
}

impl Agent {
    /// Open the state, build the runtime and load every configured module.
    /// Must run inside a tokio runtime.
    pub fn build(config: Config, events: Events) -> anyhow::Result<Agent> {
        let db = Db::open(&config.state_dir)?;
        let mut pems = Vec::new();
        for f in &config.network.extra_ca_files {
            pems.push(
                std::fs::read(f).with_context(|| format!("cannot read CA file {}", f.display()))?,
            );
        }
        let tls = crate::net::tls_config(&pems, config.network.only_extra_cas)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("network settings in {}", config.path.display()))?;
        let services = Services::new(db, events.clone(), config.instruments.clone(), tls);
        let runtime = Arc::new(
            Runtime::new(services, config.policy.max_memory_mib)
                .map_err(|e| anyhow::anyhow!("cannot start the component runtime: {e:#}"))?,
        );
        for (name, path) in &config.directories {
            if !path.is_dir() {
                events.emit(HostEvent::SettingProblem {
                    code: format!("directory-missing:{name}"),
                    text: format!(
                        "logical directory `{name}` points to {}, which is not a directory",
                        path.display()
                    ),
                });
            }
        }
        let mut modules = Vec::new();
        let mut refused = Vec::new();
        for m in &config.modules {
            let loaded = grant_for(&config, m).and_then(|(manifest, grant)| {
                Ok(runtime.load(&m.name, &m.file, &manifest, grant)?)
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
                    events.emit(HostEvent::ModuleRefused {
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
        })
    }
}
