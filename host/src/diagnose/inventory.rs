//! The configured modules as the host would load them (signature, grant),
//! and the outbound allowlist: every endpoint the host and the modules need.

use crate::agent::{grant_for, verify_module};
use crate::config::{Config, Region};
use crate::grants::GrantError;
use crate::runtime::LoadError;
use crate::store::Db;
use crate::store::versions::Versions;
use outpost_signing::manifest::{EndpointPattern, HostPattern};
use std::fmt;
use std::path::{Path, PathBuf};

/// A configured module, verified and granted as at host start (nothing
/// compiled, nothing run).
#[derive(Clone, Debug)]
pub struct ModuleInfo {
    /// The name in the config.
    pub name: String,
    /// The signed file.
    pub file: PathBuf,
    /// Ready to load, or refused and why.
    pub outcome: Result<Ready, Refusal>,
}

/// A module whose signature verified and whose grant was computed.
#[derive(Clone, Debug)]
pub struct Ready {
    /// The manifest's version.
    pub version: String,
    /// SHA-256 (hex) of the signed file (what a quarantine is bound to).
    pub file_sha256: String,
    /// The module's world.
    pub world: String,
    /// The effective grant's endpoints (manifest ∩ policies).
    pub endpoints: Vec<EndpointPattern>,
    /// The trust-store names of the keys that signed it.
    pub signers: Vec<String>,
    /// The development key it is signed with, if any.
    pub development_key: Option<String>,
}

/// Why the host would refuse a module.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// Which kind of problem.
    pub kind: RefusalKind,
    /// The host's words, naming the file, key or capability.
    pub reason: String,
}

/// The kinds of refusal, each with its own fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The signed file could not be read.
    Unreadable,
    /// Signature, trust store, name or version check failed.
    Signature,
    /// The manifest asks for more than the policy allows.
    Policy,
    /// Anything else (the version ledger could not be read).
    Other,
}

/// A scratch directory removed when dropped (a version ledger when the state
/// database does not exist yet: the doctor never creates the real one).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("outpost-diagnose-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The state database of `config` if it exists (never created here).
pub fn existing_db(config: &Config) -> Option<Result<Db, crate::store::DbError>> {
    config
        .state_dir
        .join(crate::store::DB_FILE)
        .is_file()
        .then(|| Db::open(&config.state_dir))
}

/// Verify every configured module (the file an installed update put in place,
/// else the config's `file`) against the trust store and the installed
/// versions, and compute its grant, as `Agent::build` does before compiling.
pub fn modules(config: &Config) -> Vec<ModuleInfo> {
    let refuse_all = |reason: String| {
        config
            .modules
            .iter()
            .map(|m| ModuleInfo {
                name: m.name.clone(),
                file: m.file.clone(),
                outcome: Err(Refusal {
                    kind: RefusalKind::Other,
                    reason: reason.clone(),
                }),
            })
            .collect()
    };
    let mut _scratch = None;
    let db = match existing_db(config) {
        Some(Ok(db)) => db,
        Some(Err(e)) => return refuse_all(format!("cannot read the installed versions: {e}")),
        None => {
            let opened = Scratch::new()
                .map_err(|e| e.to_string())
                .and_then(|s| Db::open(&s.0).map(|db| (s, db)).map_err(|e| e.to_string()));
            match opened {
                Ok((s, db)) => {
                    _scratch = Some(s);
                    db
                }
                Err(e) => return refuse_all(format!("cannot open a scratch version ledger: {e}")),
            }
        }
    };
    let versions = Versions::new(db);
    config
        .modules
        .iter()
        // What the host would load: an installed update's file if there is one.
        .map(|m| crate::update::install::effective(config, m))
        .map(|m| {
            let m = &m;
            let outcome = verify_module(config, &versions, m)
                .and_then(|verified| {
                    let grant = grant_for(config, m, &verified)?;
                    let signers = verified.signers();
                    Ok(Ready {
                        version: verified.manifest().version.clone(),
                        file_sha256: verified.file_sha256_hex(),
                        world: grant.world().to_string(),
                        endpoints: grant.endpoints().to_vec(),
                        signers: signers.iter().map(|s| s.name.clone()).collect(),
                        development_key: signers
                            .iter()
                            .find(|s| s.development)
                            .map(|s| s.name.clone()),
                    })
                })
                .map_err(|e| refusal(&e));
            ModuleInfo {
                name: m.name.clone(),
                file: m.file.clone(),
                outcome,
            }
        })
        .collect()
}

fn refusal(e: &anyhow::Error) -> Refusal {
    let kind = if e.downcast_ref::<LoadError>().is_some() {
        RefusalKind::Signature
    } else if e.downcast_ref::<GrantError>().is_some() {
        RefusalKind::Policy
    } else if e
        .chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some())
    {
        RefusalKind::Unreadable
    } else {
        RefusalKind::Other
    };
    Refusal {
        kind,
        reason: format!("{e:#}"),
    }
}

/// A part of the host that needs an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// The host's uploads and heartbeats to the vendor's cloud.
    Uplink,
    /// A module's grant.
    Module(String),
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Uplink => f.write_str("uplink"),
            Part::Module(m) => write!(f, "module {m}"),
        }
    }
}

/// One endpoint pattern and what needs it.
#[derive(Clone, Debug)]
pub struct Need {
    /// `host:port`, `*.suffix:port` or `address:port`.
    pub endpoint: EndpointPattern,
    /// Who needs it, in config order.
    pub needed_by: Vec<Part>,
    /// For an uplink endpoint, the path of its base URL (`/` mostly).
    pub path: Option<String>,
}

impl Need {
    /// Whether a module needs it (a module's name must resolve to public
    /// addresses only, unlike the host's own uplink).
    pub fn for_module(&self) -> bool {
        self.needed_by.iter().any(|p| matches!(p, Part::Module(_)))
    }

    /// `uplink, module collector`.
    pub fn needed_by_text(&self) -> String {
        self.needed_by
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An uplink endpoint in the config that is not a usable URL.
#[derive(Debug, thiserror::Error)]
#[error("uplink endpoint {endpoint:?} is not a usable https URL: {reason}")]
pub struct AllowlistError {
    /// The endpoint as configured.
    pub endpoint: String,
    /// What is wrong.
    pub reason: String,
}

/// The outbound allowlist: every endpoint the host's uplink and every module
/// that would load need, merged, in config order.
#[derive(Clone, Debug)]
pub struct Allowlist {
    /// `global`, `china` or the configured endpoint.
    pub uplink: String,
    /// Each endpoint pattern once.
    pub needs: Vec<Need>,
    /// Modules left out because the host would refuse them: (name, reason).
    pub refused: Vec<(String, String)>,
}

/// `global`, `china`, or the configured `[uplink] endpoint`.
pub fn uplink_label(config: &Config) -> String {
    match (&config.uplink.endpoint, config.uplink.region) {
        (Some(e), _) => format!("endpoint {e}"),
        (None, Region::Global) => "region global".to_owned(),
        (None, Region::China) => "region china".to_owned(),
    }
}

/// The `host:port` pattern and base path of an uplink URL.
pub fn uplink_endpoint(url: &str) -> Result<(EndpointPattern, String), AllowlistError> {
    let bad = |reason: String| AllowlistError {
        endpoint: url.to_owned(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if parsed.scheme() != "https" {
        return Err(bad("the scheme must be https".into()));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| bad("it names no host".into()))?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    let pattern = EndpointPattern::parse(&format!("{host}:{port}")).map_err(bad)?;
    Ok((pattern, parsed.path().to_owned()))
}

impl Allowlist {
    /// The allowlist of `config` with its `modules` (from [`modules`]).
    pub fn new(config: &Config, modules: &[ModuleInfo]) -> Result<Allowlist, AllowlistError> {
        let mut list = Allowlist {
            uplink: uplink_label(config),
            needs: Vec::new(),
            refused: Vec::new(),
        };
        for url in config.uplink.endpoints() {
            let (endpoint, path) = uplink_endpoint(&url)?;
            list.add(endpoint, Part::Uplink, Some(path));
        }
        for m in modules {
            match &m.outcome {
                Ok(ready) => {
                    for e in &ready.endpoints {
                        list.add(e.clone(), Part::Module(m.name.clone()), None);
                    }
                }
                Err(r) => list.refused.push((m.name.clone(), r.reason.clone())),
            }
        }
        Ok(list)
    }

    fn add(&mut self, endpoint: EndpointPattern, part: Part, path: Option<String>) {
        match self.needs.iter_mut().find(|n| n.endpoint == endpoint) {
            Some(n) => {
                if !n.needed_by.contains(&part) {
                    n.needed_by.push(part);
                }
                if n.path.is_none() {
                    n.path = path;
                }
            }
            None => self.needs.push(Need {
                endpoint,
                needed_by: vec![part],
                path,
            }),
        }
    }

    /// The exact names in this allowlist that the wildcard `*.suffix:port`
    /// covers: the concrete names the config knows below a wildcard.
    pub fn known_names_under(&self, wildcard: &EndpointPattern) -> Vec<String> {
        self.needs
            .iter()
            .filter(|n| matches!(n.endpoint.host, HostPattern::Exact(_)))
            .filter(|n| n.endpoint.is_within(wildcard))
            .map(|n| n.endpoint.to_string())
            .collect()
    }
}

/// The config file's path in a comment line: control characters (a newline
/// would end the comment) shown as `?`.
pub fn path_for_comment(p: &Path) -> String {
    p.display()
        .to_string()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uplink_urls_become_endpoint_patterns() {
        for (url, want, path) in [
            (
                "https://ingest.outpost-cloud.example:443",
                "ingest.outpost-cloud.example:443",
                "/",
            ),
            ("https://Cloud.Example", "cloud.example:443", "/"),
            ("https://127.0.0.1:8443/base/", "127.0.0.1:8443", "/base/"),
            ("https://[::1]:9", "[::1]:9", "/"),
        ] {
            let (p, got_path) = uplink_endpoint(url).unwrap();
            assert_eq!(p.to_string(), want, "{url}");
            assert_eq!(got_path, path, "{url}");
        }
        for bad in ["http://a.example", "https://", "not a url"] {
            assert!(uplink_endpoint(bad).is_err(), "{bad}");
        }
    }
}
