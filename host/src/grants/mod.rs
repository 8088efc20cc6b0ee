//! Operator policy and the effective grant: manifest ∩ policy.
//!
//! Architecture Invariant: a grant starts empty. Everything a module can do is
//! something its manifest declared *and* every applicable policy allows. A
//! manifest that asks for more is refused whole, naming every excess; limits are
//! the one exception: they are capped to the policy, never raised.

mod imports;

pub use imports::{ImportError, check_imports};

use outpost_signing::manifest::{EndpointPattern, Manifest, Permission, World};
use outpost_signing::verify::VerifiedModule;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

/// Default policy cap on linear memory per call.
pub const DEFAULT_MAX_MEMORY_MIB: u32 = 64;
/// Default policy cap on CPU per call.
pub const DEFAULT_MAX_CPU_MS_PER_CALL: u32 = 5_000;
/// Default policy cap on wall-clock time per call.
pub const DEFAULT_MAX_WALL_MS_PER_CALL: u32 = 30_000;
/// Highest memory cap any policy may set (the pooling allocator reserves this per slot).
pub const HARD_MAX_MEMORY_MIB: u32 = 1024;

/// What the operator allows modules to be granted. The default allows nothing
/// but the default limits.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Policy {
    /// Logical directories that may be granted.
    pub directories: Vec<String>,
    /// Endpoint patterns (`host:port`) a module's endpoints must fall within.
    pub endpoints: Vec<String>,
    /// Uplink streams that may be granted.
    pub uplink_streams: Vec<String>,
    /// Whether the notification right may be granted.
    pub notify: bool,
    /// Largest state quota that may be granted (bytes).
    pub max_state_quota_bytes: u64,
    /// Remote-support permissions a session policy may offer.
    pub permissions: Vec<Permission>,
    /// Memory cap per call (MiB); a manifest asking more is capped.
    pub max_memory_mib: u32,
    /// CPU per call (ms); a manifest asking more is capped.
    pub max_cpu_ms_per_call: u32,
    /// Wall-clock per call (ms); a manifest asking more is capped.
    pub max_wall_ms_per_call: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            directories: Vec::new(),
            endpoints: Vec::new(),
            uplink_streams: Vec::new(),
            notify: false,
            max_state_quota_bytes: 0,
            permissions: Vec::new(),
            max_memory_mib: DEFAULT_MAX_MEMORY_MIB,
            max_cpu_ms_per_call: DEFAULT_MAX_CPU_MS_PER_CALL,
            max_wall_ms_per_call: DEFAULT_MAX_WALL_MS_PER_CALL,
        }
    }
}

impl Policy {
    /// Check the policy's own shape (endpoint syntax, limit ranges).
    pub fn validate(&self) -> Result<(), String> {
        for e in &self.endpoints {
            EndpointPattern::parse(e).map_err(|e| format!("policy: {e}"))?;
        }
        if self.max_memory_mib == 0 || self.max_memory_mib > HARD_MAX_MEMORY_MIB {
            return Err(format!(
                "policy: max-memory-mib must be 1..={HARD_MAX_MEMORY_MIB}"
            ));
        }
        if self.max_cpu_ms_per_call == 0 || self.max_wall_ms_per_call == 0 {
            return Err(
                "policy: max-cpu-ms-per-call and max-wall-ms-per-call must be above zero".into(),
            );
        }
        Ok(())
    }

    fn endpoint_patterns(&self) -> Vec<EndpointPattern> {
        self.endpoints
            .iter()
            .filter_map(|e| EndpointPattern::parse(e).ok())
            .collect()
    }
}

/// One capability a manifest asked for that a policy does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Excess {
    /// A logical directory.
    Directory(String),
    /// A logical directory the policy allows but `[directories]` maps to no path.
    UnmappedDirectory(String),
    /// An endpoint pattern.
    Endpoint(String),
    /// An uplink stream.
    UplinkStream(String),
    /// The notification right.
    Notify,
    /// A state quota above the policy's maximum.
    StateQuota {
        /// Bytes asked.
        asked: u64,
        /// Bytes allowed.
        allowed: u64,
    },
    /// A remote-support permission.
    Permission(Permission),
}

impl fmt::Display for Excess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Excess::Directory(d) => write!(f, "directory `{d}`"),
            Excess::UnmappedDirectory(d) => {
                write!(f, "directory `{d}` (no path for it in [directories])")
            }
            Excess::Endpoint(e) => write!(f, "endpoint `{e}`"),
            Excess::UplinkStream(s) => write!(f, "uplink stream `{s}`"),
            Excess::Notify => write!(f, "notification right"),
            Excess::StateQuota { asked, allowed } => {
                write!(f, "state quota {asked} bytes (policy allows {allowed})")
            }
            Excess::Permission(p) => write!(f, "permission `{p}`"),
        }
    }
}

/// A manifest asked for more than the operator's policy allows.
#[derive(Debug, thiserror::Error)]
#[error("module `{module}` asks for more than the policy allows: {}", list(.excess))]
pub struct GrantError {
    /// The module.
    pub module: String,
    /// Every excess capability.
    pub excess: Vec<Excess>,
}

fn list(items: &[Excess]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Effective per-call limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimits {
    /// Linear memory cap, bytes.
    pub memory_bytes: usize,
    /// CPU per call, ms (epoch-based).
    pub cpu_ms: u32,
    /// Wall-clock per call, ms.
    pub wall_ms: u32,
}

/// The effective grant of one module: what it may do, nothing more.
///
/// Only [`Grant::new`] makes one, from a [`VerifiedModule`] (so from a
/// manifest read out of signed bytes) and the operator's policies; the fields
/// are private, so nothing can widen a grant after it was computed, and the
/// grant remembers the signed file it was computed for
/// ([`Grant::file_sha256`]), which the loader checks.
#[derive(Clone, Debug)]
pub struct Grant {
    module: String,
    version: String,
    world: World,
    file_sha256: [u8; 32],
    directories: BTreeMap<String, PathBuf>,
    endpoints: Vec<EndpointPattern>,
    uplink_streams: BTreeSet<String>,
    notify: bool,
    state_quota_bytes: u64,
    permissions: BTreeSet<Permission>,
    limits: CallLimits,
}

impl Grant {
    /// The verified module's manifest ∩ every policy in `policies`. `dirs`
    /// maps logical names to paths. A manifest asking for anything a policy
    /// does not allow is refused whole, naming every excess; limits are
    /// capped to the policies.
    pub fn new(
        verified: &VerifiedModule,
        policies: &[&Policy],
        dirs: &BTreeMap<String, PathBuf>,
    ) -> Result<Grant, GrantError> {
        intersect(verified.manifest(), verified.file_sha256(), policies, dirs)
    }

    /// Module name.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// Module version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The module's world.
    pub fn world(&self) -> World {
        self.world
    }

    /// SHA-256 of the signed file the grant was computed for.
    pub fn file_sha256(&self) -> &[u8; 32] {
        &self.file_sha256
    }

    /// Granted logical directories and the real paths behind them.
    pub fn directories(&self) -> &BTreeMap<String, PathBuf> {
        &self.directories
    }

    /// Granted endpoint patterns.
    pub fn endpoints(&self) -> &[EndpointPattern] {
        &self.endpoints
    }

    /// Granted uplink streams.
    pub fn uplink_streams(&self) -> &BTreeSet<String> {
        &self.uplink_streams
    }

    /// Whether the notification right is granted.
    pub fn notify(&self) -> bool {
        self.notify
    }

    /// State quota (bytes); 0 means no state interface.
    pub fn state_quota_bytes(&self) -> u64 {
        self.state_quota_bytes
    }

    /// Permissions a session policy may offer.
    pub fn permissions(&self) -> &BTreeSet<Permission> {
        &self.permissions
    }

    /// Per-call limits.
    pub fn limits(&self) -> CallLimits {
        self.limits
    }

    /// A grant that allows nothing: the documented default, for tests.
    #[cfg(test)]
    pub(crate) fn empty(module: &str, world: World) -> Grant {
        Grant {
            module: module.to_owned(),
            version: "0.0.0".to_owned(),
            world,
            file_sha256: [0; 32],
            directories: BTreeMap::new(),
            endpoints: Vec::new(),
            uplink_streams: BTreeSet::new(),
            notify: false,
            state_quota_bytes: 0,
            permissions: BTreeSet::new(),
            limits: CallLimits {
                memory_bytes: 16 << 20,
                cpu_ms: 100,
                wall_ms: 1000,
            },
        }
    }
}

/// `manifest` ∩ every policy in `policies` (see [`Grant::new`]).
fn intersect(
    manifest: &Manifest,
    file_sha256: [u8; 32],
    policies: &[&Policy],
    dirs: &BTreeMap<String, PathBuf>,
) -> Result<Grant, GrantError> {
    let caps = &manifest.capabilities;
    let mut excess = Vec::new();
    let mut directories = BTreeMap::new();
    for d in &caps.directories {
        if policies.iter().any(|p| !p.directories.contains(d)) {
            excess.push(Excess::Directory(d.clone()));
        } else if let Some(path) = dirs.get(d) {
            directories.insert(d.clone(), path.clone());
        } else {
            excess.push(Excess::UnmappedDirectory(d.clone()));
        }
    }
    let mut endpoints = Vec::new();
    for e in &caps.endpoints {
        let pat = EndpointPattern::parse(e).expect("validated manifest");
        if policies.iter().all(|p| {
            p.endpoint_patterns()
                .iter()
                .any(|allowed| pat.is_within(allowed))
        }) {
            endpoints.push(pat);
        } else {
            excess.push(Excess::Endpoint(e.clone()));
        }
    }
    for s in &caps.uplink_streams {
        if policies.iter().any(|p| !p.uplink_streams.contains(s)) {
            excess.push(Excess::UplinkStream(s.clone()));
        }
    }
    if caps.notify && policies.iter().any(|p| !p.notify) {
        excess.push(Excess::Notify);
    }
    let allowed_quota = policies
        .iter()
        .map(|p| p.max_state_quota_bytes)
        .min()
        .unwrap_or(0);
    if caps.state_quota_bytes > allowed_quota {
        excess.push(Excess::StateQuota {
            asked: caps.state_quota_bytes,
            allowed: allowed_quota,
        });
    }
    for perm in &caps.permissions {
        if policies.iter().any(|p| !p.permissions.contains(perm)) {
            excess.push(Excess::Permission(*perm));
        }
    }
    if !excess.is_empty() {
        return Err(GrantError {
            module: manifest.name.clone(),
            excess,
        });
    }
    let cap =
        |asked: u32, f: fn(&Policy) -> u32| policies.iter().map(|p| f(p)).fold(asked, u32::min);
    let limits = CallLimits {
        memory_bytes: (cap(manifest.limits.memory_mib, |p| p.max_memory_mib) as usize) << 20,
        cpu_ms: cap(manifest.limits.cpu_ms_per_call, |p| p.max_cpu_ms_per_call),
        wall_ms: cap(manifest.limits.wall_ms_per_call, |p| p.max_wall_ms_per_call),
    };
    Ok(Grant {
        module: manifest.name.clone(),
        version: manifest.version.clone(),
        world: manifest.world,
        file_sha256,
        directories,
        endpoints,
        uplink_streams: caps.uplink_streams.iter().cloned().collect(),
        notify: caps.notify,
        state_quota_bytes: caps.state_quota_bytes,
        permissions: caps.permissions.iter().copied().collect(),
        limits,
    })
}

/// A grant as the CLI and the local API show it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GrantSummary {
    /// world.
    pub world: String,
    /// directories.
    pub directories: Vec<String>,
    /// endpoints.
    pub endpoints: Vec<String>,
    /// uplink streams.
    pub uplink_streams: Vec<String>,
    /// notify.
    pub notify: bool,
    /// state quota bytes.
    pub state_quota_bytes: u64,
    /// permissions.
    pub permissions: Vec<String>,
    /// memory mib.
    pub memory_mib: usize,
    /// cpu ms.
    pub cpu_ms: u32,
    /// wall ms.
    pub wall_ms: u32,
}

impl From<&Grant> for GrantSummary {
    fn from(g: &Grant) -> Self {
        GrantSummary {
            world: g.world().to_string(),
            directories: g.directories().keys().cloned().collect(),
            endpoints: g.endpoints().iter().map(ToString::to_string).collect(),
            uplink_streams: g.uplink_streams().iter().cloned().collect(),
            notify: g.notify(),
            state_quota_bytes: g.state_quota_bytes(),
            permissions: g.permissions().iter().map(ToString::to_string).collect(),
            memory_mib: g.limits().memory_bytes >> 20,
            cpu_ms: g.limits().cpu_ms,
            wall_ms: g.limits().wall_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(caps: &str) -> Manifest {
        Manifest::from_toml(&format!(
            "name = \"m\"\nversion = \"1.0.0\"\nworld = \"collector\"\n[capabilities]\n{caps}\n[limits]\nmemory-mib = 128\ncpu-ms-per-call = 100\nwall-ms-per-call = 100000\n"
        ))
        .unwrap()
    }

    fn dirs() -> BTreeMap<String, PathBuf> {
        [("logs".to_string(), PathBuf::from("/var/logs"))].into()
    }

    #[test]
    fn default_policy_grants_nothing_and_names_every_excess() {
        let m = manifest(
            "directories = [\"logs\"]\nendpoints = [\"api.v.example:443\"]\nuplink-streams = [\"qc\"]\nstate-quota-bytes = 10",
        );
        let err = intersect(&m, [0; 32], &[&Policy::default()], &dirs()).unwrap_err();
        let text = err.to_string();
        for needle in [
            "directory `logs`",
            "endpoint `api.v.example:443`",
            "uplink stream `qc`",
            "state quota 10 bytes",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(text.starts_with("module `m`"));
    }

    #[test]
    fn grant_is_manifest_within_every_policy_and_limits_are_capped() {
        let m = manifest(
            "directories = [\"logs\"]\nendpoints = [\"eu.v.example:443\"]\nstate-quota-bytes = 10",
        );
        let global = Policy {
            directories: vec!["logs".into()],
            endpoints: vec!["*.v.example:443".into()],
            max_state_quota_bytes: 100,
            ..Policy::default()
        };
        let g = intersect(&m, [0; 32], &[&global], &dirs()).unwrap();
        assert_eq!(g.directories["logs"], PathBuf::from("/var/logs"));
        assert_eq!(g.endpoints.len(), 1);
        assert_eq!(
            g.limits.memory_bytes,
            (DEFAULT_MAX_MEMORY_MIB as usize) << 20
        );
        assert_eq!(g.limits.cpu_ms, 100);
        assert_eq!(g.limits.wall_ms, DEFAULT_MAX_WALL_MS_PER_CALL);

        let narrower = Policy {
            endpoints: vec!["us.v.example:443".into()],
            ..global.clone()
        };
        let err = intersect(&m, [0; 32], &[&global, &narrower], &dirs()).unwrap_err();
        assert_eq!(
            err.excess,
            vec![Excess::Endpoint("eu.v.example:443".into())]
        );
    }

    #[test]
    fn a_granted_directory_needs_a_path() {
        let m = manifest("directories = [\"logs\"]");
        let p = Policy {
            directories: vec!["logs".into()],
            ..Policy::default()
        };
        let err = intersect(&m, [0; 32], &[&p], &BTreeMap::new()).unwrap_err();
        assert_eq!(err.excess, vec![Excess::UnmappedDirectory("logs".into())]);
    }
}
