//! The operator's host configuration (TOML).
//!
//! Every relative path is resolved against the directory of the config file.
//! Unknown keys are refused so a typo never silently widens or narrows a policy.

use crate::grants::Policy;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default interval between scheduled collector runs.
pub const DEFAULT_COLLECT_INTERVAL_SECS: u64 = 300;
/// Default number of consecutive failures before a module is quarantined.
pub const DEFAULT_MAX_CONSECUTIVE_FAILURES: u32 = 5;
/// Default first restart delay after a failure.
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 1_000;
/// Default cap of the restart delay.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 300_000;
/// Default share of one CPU a collector draining a backlog may use, percent.
pub const DEFAULT_DRAIN_CPU_PERCENT: u32 = 80;

/// Errors reading or checking a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("config {path} is not valid: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The whole host configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Where the host keeps its database and caches.
    pub state_dir: PathBuf,
    /// Facts about this site.
    #[serde(default)]
    pub site: Site,
    /// Instruments attached to this PC (reported to modules by `host-info`).
    #[serde(default, rename = "instrument")]
    pub instruments: Vec<Instrument>,
    /// Logical directory name → real path. Modules only ever see the names.
    #[serde(default)]
    pub directories: BTreeMap<String, PathBuf>,
    /// The operator's policy for every module (deny by default).
    #[serde(default)]
    pub policy: Policy,
    /// Publisher keys, revocations and signature thresholds. Empty by default:
    /// with no trusted key, every module is refused.
    #[serde(default)]
    pub trust: outpost_signing::trust::TrustStore,
    /// Outbound network settings.
    #[serde(default)]
    pub network: Network,
    /// Scheduling, restart and quarantine.
    #[serde(default)]
    pub supervisor: SupervisorConfig,
    /// Uploads to the vendor's cloud.
    #[serde(default)]
    pub uplink: UplinkConfig,
    /// The local API (dashboard, CLI).
    #[serde(default)]
    pub api: ApiConfig,
    /// Module updates over TUF (none: this PC never looks for updates).
    #[serde(default)]
    pub updates: Option<crate::update::UpdatesConfig>,
    /// Remote support (`[support]`): trusted authorities, region, timeouts.
    #[serde(default)]
    pub support: crate::support::SupportConfig,
    /// Modules to run.
    #[serde(default, rename = "module")]
    pub modules: Vec<ModuleConfig>,
    /// The directory the config file lives in (paths resolve against it).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The config file itself.
    #[serde(skip)]
    pub path: PathBuf,
}

/// Facts about this site that change what modules may do.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Site {
    /// Whether this PC holds patient data (file transfer is then never
    /// offered). Defaults to `true`: an operator must say it does not.
    pub holds_patient_data: bool,
}

impl Default for Site {
    fn default() -> Self {
        Site {
            holds_patient_data: true,
        }
    }
}

/// An instrument attached to the PC.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Instrument {
    /// Model name.
    pub model: String,
    /// Serial number.
    pub serial: String,
}

/// Outbound network settings for modules' `wasi:http` requests.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Network {
    /// PEM files with extra trust anchors (in addition to the built-in web PKI roots).
    #[serde(default)]
    pub extra_ca_files: Vec<PathBuf>,
    /// Use only `extra-ca-files`, not the built-in roots (private PKI).
    #[serde(default)]
    pub only_extra_cas: bool,
}

/// The vendor's regional endpoint sets (HTTPS, port 443). A device uses one
/// set; within it, the next endpoint is tried when one cannot be reached.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Region {
    /// Everywhere except mainland China.
    #[default]
    Global,
    /// Mainland China (data stays in the China region).
    China,
}

impl Region {
    /// The endpoint set of this region.
    pub fn endpoints(self) -> &'static [&'static str] {
        match self {
            Region::Global => &[
                "https://ingest.outpost-cloud.example:443",
                "https://ingest-2.outpost-cloud.example:443",
            ],
            Region::China => &[
                "https://ingest.outpost-cloud.example.cn:443",
                "https://ingest-2.outpost-cloud.example.cn:443",
            ],
        }
    }
}

/// The local API: loopback only.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the API (and the dashboard) while the host runs.
    pub enabled: bool,
    /// Where it listens: a loopback address and port (anything else is
    /// refused when the config is read).
    pub listen: std::net::SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            listen: crate::api::DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
        }
    }
}

/// Upload settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// Which of the vendor's endpoint sets to use.
    pub region: Region,
    /// Use this base URL instead of the region's set (a private cloud, or the
    /// reference cloud on loopback for a demo). Must be `https://`.
    pub endpoint: Option<String>,
    /// Upload bandwidth cap in Mbit/s (token bucket; 6 recommended).
    pub bandwidth_mbit: f64,
    /// Bound of the spool, in MiB (see the drop policy in the README).
    pub spool_max_mib: u64,
    /// Seconds between heartbeats.
    pub heartbeat_interval_secs: u64,
    /// First retry delay after a failed upload.
    pub retry_initial_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// Timeout of one upload request.
    pub request_timeout_secs: u64,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            region: Region::Global,
            endpoint: None,
            bandwidth_mbit: 6.0,
            spool_max_mib: 256,
            heartbeat_interval_secs: 300,
            retry_initial_ms: 1000,
            retry_max_ms: 300_000,
            request_timeout_secs: 30,
        }
    }
}

impl UplinkConfig {
    /// The endpoints to try, in order.
    pub fn endpoints(&self) -> Vec<String> {
        match &self.endpoint {
            Some(e) => vec![e.clone()],
            None => self
                .region
                .endpoints()
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(e) = &self.endpoint
            && !e.starts_with("https://")
        {
            return Err(format!("uplink: endpoint {e:?} must start with https://"));
        }
        if !(self.bandwidth_mbit > 0.0 && self.bandwidth_mbit.is_finite()) {
            return Err("uplink: bandwidth-mbit must be above zero".into());
        }
        if self.spool_max_mib > (1 << 20) {
            return Err("uplink: spool-max-mib is above 1 TiB".into());
        }
        if self.spool_max_mib == 0
            || self.heartbeat_interval_secs == 0
            || self.retry_initial_ms == 0
            || self.retry_max_ms < self.retry_initial_ms
            || self.request_timeout_secs == 0
        {
            return Err("uplink: spool-max-mib, heartbeat-interval-secs, retry-initial-ms and request-timeout-secs must be above zero, retry-max-ms at least retry-initial-ms".into());
        }
        Ok(())
    }
}

/// Supervisor settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// Seconds between scheduled collector runs.
    pub collect_interval_secs: u64,
    /// Consecutive failures before quarantine.
    pub max_consecutive_failures: u32,
    /// First restart delay after a failure.
    pub backoff_initial_ms: u64,
    /// Cap of the restart delay.
    pub backoff_max_ms: u64,
    /// Call a collector soon after one of its granted directories changes
    /// (the interval stays the fallback).
    pub watch_directories: bool,
    /// At most one change-triggered call per this many milliseconds (counted
    /// from the start of the previous call), however many changes arrive.
    pub min_change_interval_ms: u64,
    /// While a collector says more input is waiting, it is called again at
    /// once, paced so that its calls take at most this share of one CPU's
    /// time, percent (1..=100; 100: back to back), counted in the process's
    /// CPU time (`supervisor::drain_pause`).
    pub drain_cpu_percent: u32,
    /// After a period of this many seconds in which the host used under 1 %
    /// of a CPU, it hands back memory it does not need to wait (`trim.rs`):
    /// once per idle stretch. 0: never.
    pub idle_trim_secs: u64,
}

/// Default of `[supervisor] idle-trim-secs`.
pub const DEFAULT_IDLE_TRIM_SECS: u64 = 30;

/// Default of `[supervisor] min-change-interval-ms`.
pub const DEFAULT_MIN_CHANGE_INTERVAL_MS: u64 = 2_000;
/// The smallest `min-change-interval-ms` accepted.
pub const MIN_CHANGE_INTERVAL_FLOOR_MS: u64 = 100;

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            collect_interval_secs: DEFAULT_COLLECT_INTERVAL_SECS,
            max_consecutive_failures: DEFAULT_MAX_CONSECUTIVE_FAILURES,
            backoff_initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            watch_directories: true,
            min_change_interval_ms: DEFAULT_MIN_CHANGE_INTERVAL_MS,
            drain_cpu_percent: DEFAULT_DRAIN_CPU_PERCENT,
            idle_trim_secs: DEFAULT_IDLE_TRIM_SECS,
        }
    }
}

/// One module to run.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ModuleConfig {
    /// The name the operator installed the module under; must equal the manifest's.
    pub name: String,
    /// The signed component file (its manifest is inside, covered by the signature).
    pub file: PathBuf,
    /// A narrower policy for this module only (intersected with the global one).
    #[serde(default)]
    pub policy: Option<Policy>,
}

impl Config {
    /// Read and check a config file; relative paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text, path)
    }

    /// Parse config text as if it were read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let mut cfg: Config = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_owned();
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        cfg.state_dir = abs(&cfg.state_dir);
        for p in cfg.directories.values_mut() {
            *p = abs(p);
        }
        for p in &mut cfg.network.extra_ca_files {
            *p = abs(p);
        }
        for m in &mut cfg.modules {
            m.file = abs(&m.file);
        }
        if let Some(u) = &mut cfg.updates {
            u.root = abs(&u.root);
        }
        for name in cfg.directories.keys() {
            if !outpost_signing::manifest::valid_name(name) {
                return Err(invalid(format!(
                    "directory name {name:?} must be a logical name of a-z, 0-9 and '-'"
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &cfg.modules {
            if !seen.insert(m.name.clone()) {
                return Err(invalid(format!("module {:?} is listed twice", m.name)));
            }
        }
        let s = &cfg.supervisor;
        if s.collect_interval_secs == 0
            || s.max_consecutive_failures == 0
            || s.backoff_initial_ms == 0
        {
            return Err(invalid(
                "supervisor: collect-interval-secs, max-consecutive-failures and backoff-initial-ms must be above zero".into(),
            ));
        }
        if s.min_change_interval_ms < MIN_CHANGE_INTERVAL_FLOOR_MS {
            return Err(invalid(format!(
                "supervisor: min-change-interval-ms must be at least {MIN_CHANGE_INTERVAL_FLOOR_MS}"
            )));
        }
        if !(1..=100).contains(&s.drain_cpu_percent) {
            return Err(invalid(
                "supervisor: drain-cpu-percent must be 1 to 100".into(),
            ));
        }
        cfg.policy.validate().map_err(invalid)?;
        cfg.uplink.validate().map_err(invalid)?;
        if let Some(u) = &cfg.updates {
            u.validate(&cfg.uplink.endpoints()).map_err(invalid)?;
        }
        cfg.support.validate().map_err(invalid)?;
        crate::api::check_listen(cfg.api.listen).map_err(|e| invalid(e.to_string()))?;
        for m in &cfg.modules {
            if let Some(p) = &m.policy {
                p.validate()
                    .map_err(|e| invalid(format!("module {:?}: {e}", m.name)))?;
            }
        }
        cfg.base_dir = base;
        cfg.path = path.to_owned();
        Ok(cfg)
    }
}
