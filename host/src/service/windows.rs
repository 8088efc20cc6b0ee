//! The Windows service (issue #17), through the `windows-service` crate.
//!
//! - `install`: a service `outpost` that starts automatically and runs
//!   `outpost service run --config FILE` under the virtual account
//!   `NT SERVICE\outpost` (least privilege: no password, no logon rights,
//!   its own SID); the service manager restarts it after a crash or an
//!   exit with an error (after 5 s, 30 s, then every 60 s; the count resets
//!   after a day). The state directory is made writable by that account
//!   and, with inheritance removed, by SYSTEM and Administrators only
//!   (`icacls` with well-known SIDs, so it works on any Windows language).
//! - `run_dispatcher`: what the service manager starts. The host runs
//!   exactly as `outpost run` does; a stop or shutdown from the service
//!   manager ends it the way SIGTERM does on Linux: calls in progress end at
//!   their deadline, the spool stays consistent, and the service reports
//!   stopped within [`super::STOP_TIMEOUT_SECS`]. With no console, its log
//!   goes to a file rotated daily in `STATE\logs` (JSON lines, the host
//!   events included), [`LOG_FILES_KEPT`] days kept.

use super::{SERVICE_NAME, ServiceError, ServiceSpec};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceSidType, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

/// The virtual service account the host runs as.
pub const SERVICE_ACCOUNT: &str = r"NT SERVICE\outpost";
/// Days of rotated log files kept in `STATE\logs`.
pub const LOG_FILES_KEPT: usize = 14;
/// The name shown in the Services console.
const DISPLAY_NAME: &str = "outpost diagnostic-support agent";
const DESCRIPTION: &str = "Collects QC results, maintenance records and logs of the lab instrument, uploads them (sealed, without patient data) to the vendor, shows instrument and setting notifications, and brokers remote support the person at this PC asks for.";

/// The error of a service manager call, with the system's own words.
fn describe(e: &windows_service::Error) -> String {
    match e {
        windows_service::Error::Winapi(io) => io.to_string(),
        other => other.to_string(),
    }
}

fn failed(command: &str, e: windows_service::Error) -> ServiceError {
    ServiceError::Command {
        command: command.to_owned(),
        detail: describe(&e),
    }
}

/// What the service is started with.
pub fn launch_arguments(spec: &ServiceSpec) -> Vec<OsString> {
    vec![
        "service".into(),
        "run".into(),
        "--config".into(),
        spec.config.clone().into_os_string(),
    ]
}

/// The state directory's access list: the service account may change it,
/// SYSTEM and Administrators have full control, nobody else has anything
/// (inherited entries removed). The arguments of `icacls`.
pub fn state_dir_acl_args(state_dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![state_dir.as_os_str().to_owned()];
    args.extend(
        [
            "/inheritance:r",
            "/grant:r",
            "*S-1-5-18:(OI)(CI)F",
            "*S-1-5-32-544:(OI)(CI)F",
            &format!("{SERVICE_ACCOUNT}:(OI)(CI)M"),
        ]
        .map(OsString::from),
    );
    args
}

fn icacls(args: &[OsString]) -> Result<(), ServiceError> {
    let command = format!(
        "icacls {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = std::process::Command::new("icacls")
        .args(args)
        .output()
        .map_err(|e| ServiceError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ServiceError::Command {
            command,
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// What an install could not set up (the service runs without it; the
/// CLI says so). Empty on Windows; Wine's service manager lacks some of it.
#[derive(Debug, Default)]
pub struct Installed {
    /// Each setting not applied, and why.
    pub warnings: Vec<String>,
    /// Whether the recovery actions (restart after a failure) are set.
    pub restarts_after_failure: bool,
}

/// Install the service for `spec` (and start it when `start`).
pub fn install(spec: &ServiceSpec, start: bool) -> Result<Installed, ServiceError> {
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(|e| failed("open the service manager (run as an administrator)", e))?;
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: spec.binary.clone(),
        launch_arguments: launch_arguments(spec),
        dependencies: vec![],
        account_name: Some(SERVICE_ACCOUNT.into()),
        account_password: None,
    };
    std::fs::create_dir_all(&spec.state_dir).map_err(|source| ServiceError::Write {
        path: spec.state_dir.clone(),
        source,
    })?;
    let service = manager
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG
                | ServiceAccess::START
                | ServiceAccess::QUERY_STATUS
                | ServiceAccess::DELETE,
        )
        .map_err(|e| failed("create the service", e))?;
    // Nothing half-installed: a step that fails removes the service again.
    // The description, SID type and recovery actions make it better, not
    // safer: where the service manager lacks them (Wine), the install goes
    // on and says what is missing; the state directory's access list is
    // required.
    let mut installed = Installed::default();
    let configured = configure(&service, spec, &mut installed);
    if let Err(e) = configured {
        let _ = service.delete();
        return Err(e);
    }
    if start {
        service
            .start(&[] as &[&OsStr])
            .map_err(|e| failed("start the service", e))?;
    }
    Ok(installed)
}

/// The service's settings after its creation: description, SID type and
/// recovery actions where the service manager has them (noted in
/// `installed` where not), then the state directory's access list.
fn configure(
    service: &windows_service::service::Service,
    spec: &ServiceSpec,
    installed: &mut Installed,
) -> Result<(), ServiceError> {
    if let Err(e) = service.set_description(DESCRIPTION) {
        installed.warnings.push(format!(
            "the service's description was not set: {}",
            describe(&e)
        ));
    }
    // Windows gives a virtual account's service its own SID; said
    // explicitly where the service manager supports it.
    if let Err(e) = service.set_config_service_sid_info(ServiceSidType::Unrestricted) {
        installed.warnings.push(format!(
            "the service SID type was not set: {}",
            describe(&e)
        ));
    }
    let recovery = service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![restart_after(5), restart_after(30), restart_after(60)]),
        })
        .and_then(|()| service.set_failure_actions_on_non_crash_failures(true));
    match recovery {
        Ok(()) => installed.restarts_after_failure = true,
        Err(e) => installed.warnings.push(format!(
            "the recovery actions were not set, so the service manager will not restart the host after a failure: {}",
            describe(&e)
        )),
    }
    icacls(&state_dir_acl_args(&spec.state_dir))
}

fn restart_after(secs: u64) -> ServiceAction {
    ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    }
}

fn open(access: ServiceAccess) -> Result<windows_service::service::Service, ServiceError> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| failed("open the service manager", e))?;
    manager
        .open_service(SERVICE_NAME, access)
        .map_err(|e| failed("open the service `outpost` (is it installed?)", e))
}

/// Stop the service (waiting up to [`super::STOP_TIMEOUT_SECS`]) and remove it.
pub fn uninstall() -> Result<(), ServiceError> {
    let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE)?;
    stop_and_wait(&service)?;
    service
        .delete()
        .map_err(|e| failed("delete the service", e))
}

/// Start the installed service.
pub fn start() -> Result<(), ServiceError> {
    open(ServiceAccess::START)?
        .start(&[] as &[&OsStr])
        .map_err(|e| failed("start the service", e))
}

/// Stop the installed service and wait until it has stopped.
pub fn stop() -> Result<(), ServiceError> {
    stop_and_wait(&open(ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)?)
}

fn stop_and_wait(service: &windows_service::service::Service) -> Result<(), ServiceError> {
    let status = service
        .query_status()
        .map_err(|e| failed("query the service", e))?;
    if status.current_state == ServiceState::Stopped {
        return Ok(());
    }
    if status.current_state != ServiceState::StopPending {
        service.stop().map_err(|e| failed("stop the service", e))?;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(super::STOP_TIMEOUT_SECS + 5);
    loop {
        let s = service
            .query_status()
            .map_err(|e| failed("query the service", e))?;
        if s.current_state == ServiceState::Stopped {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(ServiceError::Command {
                command: "stop the service".into(),
                detail: format!(
                    "still {:?} after {} s",
                    s.current_state,
                    super::STOP_TIMEOUT_SECS + 5
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The service manager's view: state, process, how it runs.
pub fn status() -> Result<String, ServiceError> {
    let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG)?;
    let s = service
        .query_status()
        .map_err(|e| failed("query the service", e))?;
    let c = service
        .query_config()
        .map_err(|e| failed("query the service's configuration", e))?;
    Ok(format!(
        "service {SERVICE_NAME}: {:?}{}\nruns: {}\nas: {}\nstart: {:?}\n",
        s.current_state,
        s.process_id
            .map(|p| format!(" (process {p})"))
            .unwrap_or_default(),
        c.executable_path.display(),
        c.account_name
            .as_deref()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_else(|| "LocalSystem".into()),
        c.start_type,
    ))
}

static CONFIG: OnceLock<PathBuf> = OnceLock::new();

windows_service::define_windows_service!(ffi_service_main, service_main);

/// Hand this process to the service manager, which then runs the host of
/// `config` as the service. Returns when the service has stopped. Outside
/// the service manager (from a console) this fails at once, saying so.
pub fn run_dispatcher(config: &Path) -> Result<(), ServiceError> {
    let _ = CONFIG.set(config.to_owned());
    windows_service::service_dispatcher::start(SERVICE_NAME, ffi_service_main).map_err(|e| {
        ServiceError::Command {
            command: "connect to the service manager".into(),
            detail: format!(
                "{} (`outpost service run` is started by the Windows service manager; from a console use `outpost run`)",
                describe(&e)
            ),
        }
    })
}

fn service_main(_arguments: Vec<OsString>) {
    if let Err(e) = run_service() {
        tracing::error!(error = %e, "the service ended with an error");
    }
}

fn status_of(state: ServiceState, exit: u32, wait: Duration) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: ServiceExitCode::Win32(exit),
        checkpoint: 0,
        wait_hint: wait,
        process_id: None,
    }
}

/// The host of the configured file, running until the service manager's
/// stop.
fn run_host(
    status: &service_control_handler::ServiceStatusHandle,
    stop_rx: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let config_path = CONFIG.get().cloned().unwrap_or_default();
    let config = crate::config::Config::load(&config_path)?;
    let _log = crate::cli::log_to_files(&config.state_dir.join("logs"), LOG_FILES_KEPT);
    tracing::info!(config = %config_path.display(), "service starting");
    status.set_service_status(status_of(ServiceState::Running, 0, Duration::ZERO))?;
    let stop = async move {
        let _ = stop_rx.await;
        tracing::info!("the service manager asked the host to stop");
    };
    crate::cli::block_on(crate::cli::run::run_until(
        config,
        crate::cli::run::Output::Log,
        stop,
    ))??;
    Ok(())
}

fn run_service() -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_tx = std::sync::Mutex::new(Some(stop_tx));
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            if let Some(tx) = stop_tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = tx.send(());
            }
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let status = service_control_handler::register(SERVICE_NAME, handler)?;
    let result = run_host(&status, stop_rx);
    let _ = status.set_service_status(status_of(
        ServiceState::StopPending,
        0,
        Duration::from_secs(super::STOP_TIMEOUT_SECS),
    ));
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "the host stopped with an error");
    } else {
        tracing::info!("service stopped");
    }
    // A non-zero exit code makes the service manager apply the recovery
    // actions (restart).
    status.set_service_status(status_of(
        ServiceState::Stopped,
        if result.is_ok() { 0 } else { 1 },
        Duration::ZERO,
    ))?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_runs_the_host_of_its_config_under_the_virtual_account() {
        let spec = ServiceSpec {
            binary: PathBuf::from(r"C:\Program Files\outpost\outpost.exe"),
            config: PathBuf::from(r"C:\ProgramData\outpost\outpost.toml"),
            state_dir: PathBuf::from(r"C:\ProgramData\outpost\state"),
            read_dirs: vec![],
        };
        assert_eq!(
            launch_arguments(&spec),
            [
                "service",
                "run",
                "--config",
                r"C:\ProgramData\outpost\outpost.toml"
            ]
            .map(OsString::from)
        );
        let acl = state_dir_acl_args(&spec.state_dir);
        let acl: Vec<_> = acl.iter().map(|a| a.to_string_lossy()).collect();
        assert_eq!(acl[0], r"C:\ProgramData\outpost\state");
        assert!(acl.contains(&"/inheritance:r".into()));
        assert!(acl.contains(&r"NT SERVICE\outpost:(OI)(CI)M".into()));
        // Nobody else: no Users, Everyone or Authenticated Users entry.
        assert!(!acl.iter().any(|a| a.contains("S-1-5-32-545")
            || a.contains("S-1-1-0")
            || a.contains("S-1-5-11")));
    }

    #[test]
    fn run_outside_the_service_manager_says_to_use_outpost_run() {
        let err = run_dispatcher(Path::new(r"C:\nowhere\outpost.toml")).unwrap_err();
        assert!(err.to_string().contains("outpost run"), "{err}");
    }
}
