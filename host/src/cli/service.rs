//! `outpost service install|uninstall|start|stop|status`: the host as a
//! service of the operating system (a systemd unit on Linux, a service of
//! the service manager on Windows).

use crate::service::{self, ServiceSpec};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `outpost service`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Install and start the service for a config (Linux: a hardened
    /// systemd unit running as the system user `outpost`; Windows: a service
    /// running as the virtual account `NT SERVICE\outpost`, restarted after
    /// a failure).
    Install(InstallArgs),
    /// Stop the service and remove it (its state directory stays).
    Uninstall(UnitDirArgs),
    /// Start the installed service.
    Start,
    /// Stop the installed service (running calls end at their deadline).
    Stop,
    /// Show the service manager's view of the service.
    Status,
    /// What the Windows service manager starts (not for use from a console:
    /// `outpost run` is the same host in the foreground).
    #[command(hide = true)]
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The host config file.
    #[arg(long)]
    config: PathBuf,
}

impl Args {
    /// Whether this is the service manager starting the service (which
    /// logs to files of its own).
    pub fn is_service_run(&self) -> bool {
        matches!(self.action, Action::Run(_))
    }
}

#[derive(clap::Args, Debug)]
struct InstallArgs {
    /// The host config file [default: /etc/outpost/outpost.toml, or
    /// %ProgramData%\outpost\outpost.toml on Windows].
    #[arg(long)]
    config: Option<PathBuf>,
    /// The `outpost` binary the service runs [default: this one].
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Print the unit file instead of installing anything.
    #[arg(long)]
    print: bool,
    /// Enable the service without starting it now.
    #[arg(long)]
    no_start: bool,
    #[command(flatten)]
    dir: UnitDirArgs,
}

#[derive(clap::Args, Debug)]
struct UnitDirArgs {
    /// Where the unit file goes.
    #[arg(long, default_value = service::systemd::UNIT_DIR)]
    unit_dir: PathBuf,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    match a.action {
        Action::Install(i) => {
            let config = i.config.unwrap_or_else(service::default_config_path);
            let binary = match i.binary {
                Some(b) => b,
                None => std::env::current_exe()?,
            };
            let spec = ServiceSpec::for_config(&binary, &config)?;
            if i.print {
                print!("{}", service::systemd::unit(&spec));
                return Ok(ExitCode::SUCCESS);
            }
            #[cfg(windows)]
            {
                let installed = service::windows::install(&spec, !i.no_start)?;
                for w in &installed.warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "installed the service `{}` (runs as `{}`{}; only it, SYSTEM and Administrators may open {}; log in {})",
                    service::SERVICE_NAME,
                    service::windows::SERVICE_ACCOUNT,
                    if installed.restarts_after_failure {
                        ", restarted after a failure"
                    } else {
                        ""
                    },
                    spec.state_dir.display(),
                    spec.state_dir.join("logs").display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            #[cfg(not(windows))]
            {
                linux_only()?;
                let path = service::systemd::install(&spec, &i.dir.unit_dir, !i.no_start)?;
                println!(
                    "installed {} (runs as `{}`, writes only {})",
                    path.display(),
                    service::SERVICE_USER,
                    spec.state_dir.display()
                );
            }
        }
        Action::Run(r) => {
            #[cfg(windows)]
            service::windows::run_dispatcher(&r.config)?;
            #[cfg(not(windows))]
            {
                let _ = r;
                return Err(service::ServiceError::Unsupported(
                    "`outpost service run` is what the Windows service manager starts; systemd runs `outpost run`",
                )
                .into());
            }
        }
        Action::Uninstall(d) => {
            #[cfg(windows)]
            {
                let _ = d;
                service::windows::uninstall()?;
                println!(
                    "removed the service `{}` (the state directory stays; delete it by hand to forget this device)",
                    service::SERVICE_NAME
                );
            }
            #[cfg(not(windows))]
            {
                linux_only()?;
                let path = service::systemd::uninstall(&d.unit_dir)?;
                println!(
                    "removed {} (the state directory stays; delete it by hand to forget this device)",
                    path.display()
                );
            }
        }
        Action::Start => {
            #[cfg(windows)]
            service::windows::start()?;
            #[cfg(not(windows))]
            {
                linux_only()?;
                service::systemd::systemctl("start")?;
            }
        }
        Action::Stop => {
            #[cfg(windows)]
            service::windows::stop()?;
            #[cfg(not(windows))]
            {
                linux_only()?;
                service::systemd::systemctl("stop")?;
            }
        }
        Action::Status => {
            #[cfg(windows)]
            print!("{}", service::windows::status()?);
            #[cfg(not(windows))]
            {
                linux_only()?;
                // `systemctl status` exits non-zero for a stopped unit: show
                // what it printed either way.
                match service::systemd::systemctl("status") {
                    Ok(out) => print!("{out}"),
                    Err(service::ServiceError::Command { detail, .. }) => {
                        println!("{detail}");
                        return Ok(ExitCode::FAILURE);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(windows))]
fn linux_only() -> Result<(), service::ServiceError> {
    if cfg!(target_os = "linux") {
        Ok(())
    } else {
        Err(service::ServiceError::Unsupported(
            "`outpost service` manages a systemd unit on Linux and a service on Windows; on this system run `outpost run` under its own service manager",
        ))
    }
}
