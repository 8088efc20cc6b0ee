//! The systemd unit `outpost service install` writes on Linux, and the
//! `systemctl` calls behind `outpost service start|stop|status|uninstall`.
//!
//! The unit runs the host as the system user [`SERVICE_USER`] with a
//! read-only view of the whole file system except its state directory,
//! no home directories (read-only when an instrument folder lives under
//! one), private `/tmp` and devices, no new privileges, no capabilities, the
//! address families the uplink and the local API use, and the
//! `@system-service` system-call set minus privileged and resource-control
//! calls. `MemoryDenyWriteExecute` stays off: Wasmtime's JIT maps the code it
//! compiles executable, which that option forbids.

use super::{
    SERVICE_NAME, SERVICE_USER, STOP_TIMEOUT_SECS, ServiceError, ServiceSpec, run_command,
};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Where units an administrator installs live.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The hardening options every unit carries (checked by the tests and by
/// `systemd-analyze security`).
pub const HARDENING: &[&str] = &[
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "RemoveIPC=yes",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    "SystemCallErrorNumber=EPERM",
    "UMask=0077",
];

/// The unit file for `spec`.
pub fn unit(spec: &ServiceSpec) -> String {
    let path = |p: &Path| p.to_str().expect("checked by ServiceSpec").to_owned();
    let mut u = String::new();
    let _ = writeln!(
        u,
        "# Written by `outpost service install`; `outpost service uninstall` removes it.\n\
         [Unit]\n\
         Description=outpost diagnostic-support agent (lab-instrument controller PC)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=exec\n\
         ExecStart={} run --config {}\n\
         User={SERVICE_USER}\n\
         Group={SERVICE_USER}\n\
         Restart=on-failure\n\
         RestartSec=5s\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec={STOP_TIMEOUT_SECS}s\n\
         Environment=OUTPOST_LOG=info",
        path(&spec.binary),
        path(&spec.config),
    );
    let _ = writeln!(u, "ReadWritePaths={}", path(&spec.state_dir));
    // Instrument folders under /home stay visible (read-only); otherwise
    // home directories are hidden altogether.
    let under_home = spec
        .read_dirs
        .iter()
        .chain([&spec.state_dir, &spec.config])
        .any(|d| {
            ["/home", "/root", "/run/user"]
                .iter()
                .any(|h| d.starts_with(h))
        });
    let _ = writeln!(
        u,
        "ProtectHome={}",
        if under_home { "read-only" } else { "yes" }
    );
    for opt in HARDENING {
        let _ = writeln!(u, "{opt}");
    }
    let _ = writeln!(u, "\n[Install]\nWantedBy=multi-user.target");
    u
}

/// The unit file's path in `unit_dir`.
pub fn unit_path(unit_dir: &Path) -> PathBuf {
    unit_dir.join(format!("{SERVICE_NAME}.service"))
}

/// Write the unit into `unit_dir` (atomically: temporary file, fsync,
/// rename) and return its path.
pub fn write_unit(spec: &ServiceSpec, unit_dir: &Path) -> Result<PathBuf, ServiceError> {
    let dest = unit_path(unit_dir);
    let err = |source| ServiceError::Write {
        path: dest.clone(),
        source,
    };
    let tmp = unit_dir.join(format!(".{SERVICE_NAME}.service.tmp"));
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(unit(spec).as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, &dest).map_err(err)?;
    Ok(dest)
}

/// Install: the system user (when missing), the state directory owned by
/// it (0700), the unit, then `systemctl enable --now`.
pub fn install(spec: &ServiceSpec, unit_dir: &Path, start: bool) -> Result<PathBuf, ServiceError> {
    if run_command("id", &["-u", SERVICE_USER]).is_err() {
        run_command(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
        )?;
    }
    let state = spec.state_dir.to_str().expect("checked by ServiceSpec");
    std::fs::create_dir_all(&spec.state_dir).map_err(|source| ServiceError::Write {
        path: spec.state_dir.clone(),
        source,
    })?;
    run_command(
        "chown",
        &["-R", &format!("{SERVICE_USER}:{SERVICE_USER}"), state],
    )?;
    run_command("chmod", &["0700", state])?;
    let path = write_unit(spec, unit_dir)?;
    run_command("systemctl", &["daemon-reload"])?;
    let unit = format!("{SERVICE_NAME}.service");
    if start {
        run_command("systemctl", &["enable", "--now", &unit])?;
    } else {
        run_command("systemctl", &["enable", &unit])?;
    }
    Ok(path)
}

/// Uninstall: stop and disable the unit and remove its file. The state
/// directory (device identity, spool) stays.
pub fn uninstall(unit_dir: &Path) -> Result<PathBuf, ServiceError> {
    let unit = format!("{SERVICE_NAME}.service");
    // Not running or not enabled is fine here.
    let _ = run_command("systemctl", &["disable", "--now", &unit]);
    let path = unit_path(unit_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ServiceError::Write { path, source }),
    }
    run_command("systemctl", &["daemon-reload"])?;
    Ok(path)
}

/// `systemctl start|stop|status outpost.service`.
pub fn systemctl(verb: &str) -> Result<String, ServiceError> {
    run_command("systemctl", &[verb, &format!("{SERVICE_NAME}.service")])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(read: &str) -> ServiceSpec {
        ServiceSpec {
            binary: "/usr/local/bin/outpost".into(),
            config: "/etc/outpost/outpost.toml".into(),
            state_dir: "/var/lib/outpost".into(),
            read_dirs: vec![read.into()],
        }
    }

    #[test]
    fn the_unit_runs_the_host_hardened_with_only_the_state_writable() {
        let u = unit(&spec("/srv/analyzer/logs"));
        assert!(
            u.contains("ExecStart=/usr/local/bin/outpost run --config /etc/outpost/outpost.toml\n")
        );
        assert!(u.contains("User=outpost\n"));
        assert!(u.contains("ReadWritePaths=/var/lib/outpost\n"));
        assert!(u.contains("ProtectHome=yes\n"));
        for opt in HARDENING {
            assert!(u.contains(&format!("{opt}\n")), "{opt}");
        }
        assert!(
            !u.contains("MemoryDenyWriteExecute"),
            "the JIT needs it off"
        );
    }

    #[test]
    fn an_instrument_folder_under_home_stays_readable() {
        let u = unit(&spec("/home/lab/analyzer"));
        assert!(u.contains("ProtectHome=read-only\n"));
    }

    // Unix only: on Windows `/srv/...` is not an absolute path (no drive),
    // so the good path below would be refused there too; a unit file is a
    // Linux thing anyway.
    #[cfg(unix)]
    #[test]
    fn paths_a_unit_cannot_carry_are_refused() {
        for bad in ["/srv/with space", "/srv/50%", "/srv/$HOME", "relative/dir"] {
            assert!(spec(bad).check().is_err(), "{bad}");
        }
        assert!(spec("/srv/analyzer-1/logs_2").check().is_ok());
    }
}
