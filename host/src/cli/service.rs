//! `outpost service install|uninstall|start|stop|status`: the host as a
//! service of the operating system (a systemd unit on Linux).

use crate::service::{self, ServiceError, ServiceSpec};
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
    /// systemd unit running as the system user `outpost`).
    Install(InstallArgs),
    /// Stop the service and remove it (its state directory stays).
    Uninstall(UnitDirArgs),
    /// Start the installed service.
    Start,
    /// Stop the installed service (running calls end at their deadline).
    Stop,
    /// Show the service manager's view of the service.
    Status,
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
            linux_only()?;
            let path = service::systemd::install(&spec, &i.dir.unit_dir, !i.no_start)?;
            println!(
                "installed {} (runs as `{}`, writes only {})",
                path.display(),
                service::SERVICE_USER,
                spec.state_dir.display()
            );
        }
        Action::Uninstall(d) => {
            linux_only()?;
            let path = service::systemd::uninstall(&d.unit_dir)?;
            println!(
                "removed {} (the state directory stays; delete it by hand to forget this device)",
                path.display()
            );
        }
        Action::Start => {
            linux_only()?;
            service::systemd::systemctl("start")?;
        }
        Action::Stop => {
            linux_only()?;
            service::systemd::systemctl("stop")?;
        }
        Action::Status => {
            linux_only()?;
            // `systemctl status` exits non-zero for a stopped unit: show
            // what it printed either way.
            match service::systemd::systemctl("status") {
                Ok(out) => print!("{out}"),
                Err(ServiceError::Command { detail, .. }) => {
                    println!("{detail}");
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn linux_only() -> Result<(), ServiceError> {
    if cfg!(target_os = "linux") {
        Ok(())
    } else {
        Err(ServiceError::Unsupported(
            "`outpost service` manages a systemd unit; the Windows service is not built yet (issue #17): run `outpost run` meanwhile",
        ))
    }
}
