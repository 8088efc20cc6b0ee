//! Running as a service (issue #17): what the service manager is told about
//! the host, and the commands behind `outpost service`.
//!
//! On Linux the host runs as a systemd unit (`systemd.rs`) under its own
//! system user, with the sandboxing options systemd offers switched on and
//! only the state directory writable. On Windows (`windows.rs`) it is a
//! service of the service manager under the virtual account
//! `NT SERVICE\outpost`, restarted after a failure, its state directory
//! closed to everyone but that account, SYSTEM and Administrators.

pub mod systemd;
#[cfg(windows)]
pub mod windows;

use crate::config::Config;
use std::path::{Path, PathBuf};

/// The account the service runs as on Linux.
pub const SERVICE_USER: &str = "outpost";
/// The unit / service name.
pub const SERVICE_NAME: &str = "outpost";
/// How long the service manager waits for a clean stop before it kills the
/// host: longer than the longest call deadline the policy allows is not
/// needed, because `outpost run` cuts running calls at their deadline and
/// leaves after [`crate::cli::EXIT_GRACE_MS`].
pub const STOP_TIMEOUT_SECS: u64 = 30;

/// Default config file of an installed host.
pub fn default_config_path() -> PathBuf {
    if cfg!(windows) {
        program_data().join("outpost").join("outpost.toml")
    } else {
        PathBuf::from("/etc/outpost/outpost.toml")
    }
}

/// Default state directory of an installed host.
pub fn default_state_dir() -> PathBuf {
    if cfg!(windows) {
        program_data().join("outpost").join("state")
    } else {
        PathBuf::from("/var/lib/outpost")
    }
}

fn program_data() -> PathBuf {
    std::env::var_os("ProgramData")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
}

/// What the service needs to know about the host it runs.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// The `outpost` binary (absolute).
    pub binary: PathBuf,
    /// The config file (absolute).
    pub config: PathBuf,
    /// The state directory: the only place the service writes.
    pub state_dir: PathBuf,
    /// The instrument folders the config maps (read-only for the service).
    pub read_dirs: Vec<PathBuf>,
}

/// Why a service command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A path the service manager must be given is not absolute or not UTF-8.
    #[error("{what} {path} must be an absolute path in UTF-8 for the service manager")]
    BadPath {
        /// Which path.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A path holds characters the service manager's configuration cannot
    /// carry safely.
    #[error(
        "{what} {path} holds a character the service configuration cannot carry ({})",
        if cfg!(windows) { "a quote or a control character" } else { "whitespace, quote, backslash, `%`, `$` or a control character" }
    )]
    UnsafePath {
        /// Which path.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// The config file could not be loaded.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A system command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and error output, or why it could not start.
        detail: String,
    },
    /// This platform has no service support yet.
    #[error("{0}")]
    Unsupported(&'static str),
}

impl ServiceSpec {
    /// The spec for the config at `config` run by `binary`.
    pub fn for_config(binary: &Path, config: &Path) -> Result<ServiceSpec, ServiceError> {
        let cfg = Config::load(config)?;
        let config = std::path::absolute(config).map_err(|_| ServiceError::BadPath {
            what: "config file",
            path: config.to_owned(),
        })?;
        let spec = ServiceSpec {
            binary: binary.to_owned(),
            config,
            state_dir: cfg.state_dir.clone(),
            read_dirs: cfg.directories.values().cloned().collect(),
        };
        spec.check()?;
        Ok(spec)
    }

    fn check(&self) -> Result<(), ServiceError> {
        let mut paths = vec![
            ("binary", &self.binary),
            ("config file", &self.config),
            ("state directory", &self.state_dir),
        ];
        paths.extend(self.read_dirs.iter().map(|p| ("instrument folder", p)));
        for (what, path) in paths {
            let Some(text) = path.to_str().filter(|_| path.is_absolute()) else {
                return Err(ServiceError::BadPath {
                    what,
                    path: path.clone(),
                });
            };
            // A unit file's quoting and specifiers make these unsafe; the
            // Windows service manager gets each argument quoted, so there
            // only a quote or a control character is refused.
            let unsafe_char = |c: char| {
                if cfg!(windows) {
                    c.is_control() || c == '"'
                } else {
                    c.is_whitespace()
                        || c.is_control()
                        || matches!(c, '"' | '\'' | '\\' | '%' | '$')
                }
            };
            if text.chars().any(unsafe_char) {
                return Err(ServiceError::UnsafePath {
                    what,
                    path: path.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Run `program args`, returning its standard output, or an error with its
/// exit status and standard error.
pub(crate) fn run_command(program: &str, args: &[&str]) -> Result<String, ServiceError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| ServiceError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ServiceError::Command {
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}
