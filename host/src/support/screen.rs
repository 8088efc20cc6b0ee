//! The screen backend of a support session (#16): a VNC server started for
//! one session only, after the person approved view or control, with those
//! rights, listening on a random loopback port, and stopped (killed) when
//! the session ends. It is reached only through the end-to-end channel
//! (`pc::serve` connects to it on loopback).
//!
//! The command is `[support] screen-command` (an argument vector; `{port}`
//! is replaced by the port, `{passwdfile}` by the path of a file holding
//! the session's VNC password); when control was not approved,
//! `screen-view-only-args` are appended. On Linux the default is Debian's
//! `x11vnc` on display `:0`: `-localhost`, `-rfbport {port}`, `-once` (it
//! exits after its viewer leaves), `-shared` (a local process holding a
//! connection without the password does not shut the PC's out),
//! `-passwdfile rm:{passwdfile}`, and
//! `-viewonly` unless control was approved. Elsewhere there is no default:
//! without a configured command the broker does not offer view or control
//! at all (Windows names its own VNC server here; see ARCHITECTURE.md).
//!
//! The password: 8 characters from the OS CSPRNG, new for every start,
//! written to `passwd` in a fresh private directory (0700, the file 0600 on
//! Unix) and handed to the backend by path, never on its command line
//! (x11vnc's `rm:` deletes the file once read; the directory goes when the
//! session ends). The PC's `pc::serve` answers the backend's VNC
//! Authentication itself and offers the engineer's viewer no security, so
//! the engineer never learns it ([`outpost_support_proto::rfb`]). A
//! command without `{passwdfile}` is refused by `check-config` unless
//! `screen-without-password = true` says the backend runs without one
//! (then any local process may reach its loopback port first).
//!
//! Architecture Invariant: view-only is the backend's own setting, chosen
//! from the grant when the backend starts; the channel cannot widen it.
//!
//! Architecture Invariant: the backend's password is never on a command
//! line, in a log, an event or the audit, and never crosses the channel.

use outpost_support_proto::pc::{ScreenBackend, ScreenStarter};
use outpost_support_proto::rfb::VncPassword;
use outpost_support_proto::{Grant, Permission, Refusal, RefusalCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The default screen command on Linux (`{port}` is replaced).
#[cfg(target_os = "linux")]
pub const DEFAULT_COMMAND: Option<&[&str]> = Some(&[
    "x11vnc",
    "-display",
    ":0",
    "-localhost",
    "-rfbport",
    "{port}",
    "-once",
    "-shared",
    "-passwdfile",
    "rm:{passwdfile}",
    "-quiet",
    "-norc",
]);
/// No default screen command outside Linux.
#[cfg(not(target_os = "linux"))]
pub const DEFAULT_COMMAND: Option<&[&str]> = None;
/// Appended when control was not approved (x11vnc's flag).
pub const DEFAULT_VIEW_ONLY_ARGS: &[&str] = &["-viewonly"];
/// The placeholder for the port in the command.
pub const PORT_PLACEHOLDER: &str = "{port}";
/// The placeholder for the password file's path in the command.
pub const PASSWD_FILE_PLACEHOLDER: &str = "{passwdfile}";
/// How long the backend may take to listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the screen backend did not start.
#[derive(Debug, thiserror::Error)]
pub enum ScreenError {
    /// The password file could not be written.
    #[error("the screen backend's password file could not be written: {0}")]
    PasswordFile(std::io::Error),
    /// No free loopback port.
    #[error("no free loopback port for the screen backend: {0}")]
    Port(std::io::Error),
    /// The program could not be started.
    #[error("the screen backend {program:?} could not be started: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The program exited before it listened.
    #[error("the screen backend {program:?} exited before it listened ({status})")]
    Exited {
        /// The program.
        program: String,
        /// How it exited.
        status: std::process::ExitStatus,
    },
    /// The program did not listen in time.
    #[error("the screen backend {program:?} did not listen on 127.0.0.1:{port} within {} s", START_TIMEOUT.as_secs())]
    NotListening {
        /// The program.
        program: String,
        /// The port it was given.
        port: u16,
    },
}

/// Told of each start (`Ok`) or failure of a session's backend, and whether
/// control was approved.
pub type OnStart = Arc<dyn Fn(Result<&ScreenBackend, &ScreenError>, bool) + Send + Sync>;

/// The screen command of a PC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScreenCommand {
    argv: Vec<String>,
    view_only: Vec<String>,
}

impl ScreenCommand {
    /// The command of `[support]` (or the platform default); `None`: this PC
    /// has no screen backend, and view and control are not offered.
    pub fn of(cfg: &super::SupportConfig) -> Option<ScreenCommand> {
        let argv = match &cfg.screen_command {
            Some(a) => a.clone(),
            None => DEFAULT_COMMAND?.iter().map(|s| s.to_string()).collect(),
        };
        if argv.is_empty() {
            return None;
        }
        let view_only = match &cfg.screen_view_only_args {
            Some(a) => a.clone(),
            None => DEFAULT_VIEW_ONLY_ARGS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        Some(ScreenCommand { argv, view_only })
    }

    /// Check a configured command (`check-config`); `without_password`:
    /// `screen-without-password = true` was set.
    pub fn validate(argv: &[String], without_password: bool) -> Result<(), String> {
        if argv.is_empty() {
            return Ok(());
        }
        if argv[0].trim().is_empty() {
            return Err("support: screen-command names no program".into());
        }
        if !argv.iter().any(|a| a.contains(PORT_PLACEHOLDER)) {
            return Err(format!(
                "support: screen-command must pass the port as {PORT_PLACEHOLDER} (the host picks a free loopback port per session)"
            ));
        }
        let with_password = argv.iter().any(|a| a.contains(PASSWD_FILE_PLACEHOLDER));
        if !with_password && !without_password {
            return Err(format!(
                "support: screen-command must pass a per-session password file as {PASSWD_FILE_PLACEHOLDER} (x11vnc: -passwdfile rm:{PASSWD_FILE_PLACEHOLDER}); without one any local process can reach the backend's loopback port before the engineer: set screen-without-password = true to run it so anyway"
            ));
        }
        if with_password && without_password {
            return Err(format!(
                "support: screen-without-password = true but screen-command passes {PASSWD_FILE_PLACEHOLDER}: choose one"
            ));
        }
        Ok(())
    }

    /// Whether the backend is given a password (`{passwdfile}`).
    pub fn uses_password(&self) -> bool {
        self.argv
            .iter()
            .any(|a| a.contains(PASSWD_FILE_PLACEHOLDER))
    }

    /// The arguments (after the program) for `port` and the password file
    /// `passwd_file`, with control or view only.
    pub fn args(&self, port: u16, passwd_file: &str, control: bool) -> Vec<String> {
        let mut a: Vec<String> = self.argv[1..]
            .iter()
            .map(|s| {
                s.replace(PORT_PLACEHOLDER, &port.to_string())
                    .replace(PASSWD_FILE_PLACEHOLDER, passwd_file)
            })
            .collect();
        if !control {
            a.extend(self.view_only.iter().cloned());
        }
        a
    }

    /// The program.
    pub fn program(&self) -> &str {
        &self.argv[0]
    }

    /// Start the backend on a free loopback port with control or view
    /// only, and wait until it listens. The child is killed when the
    /// returned guard is dropped.
    pub async fn start(&self, control: bool) -> Result<ScreenBackend, ScreenError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(ScreenError::Port)?
            .port();
        let program = self.program().to_owned();
        let secret = if self.uses_password() {
            Some(PasswordFile::write(VncPassword::generate()).map_err(ScreenError::PasswordFile)?)
        } else {
            None
        };
        let passwd_path = secret
            .as_ref()
            .map(|s| s.path.to_string_lossy().into_owned())
            .unwrap_or_default();
        let child = std::process::Command::new(&program)
            .args(self.args(port, &passwd_path, control))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|source| ScreenError::Spawn {
                program: program.clone(),
                source,
            })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let password = secret.as_ref().map(|s| s.password.clone());
        let mut child = KillOnDrop(child, secret.map(|s| s.dir));
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.0.try_wait() {
                return Err(ScreenError::Exited { program, status });
            }
            // A bare connection that closes before the VNC handshake is not
            // a viewer (x11vnc's `-once` still waits for the real one).
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ScreenError::NotListening { program, port });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(ScreenBackend {
            addr,
            password,
            guard: Box::new(child),
        })
    }

    /// The starter `pc::serve` calls once the grant is known; `on_start`
    /// is told of each start or failure (the audit).
    pub fn starter(self, on_start: OnStart) -> ScreenStarter {
        let cmd = Arc::new(self);
        Arc::new(move |grant: &Grant| {
            let cmd = cmd.clone();
            let on_start = on_start.clone();
            let control = grant.allows(Permission::Control);
            Box::pin(async move {
                match cmd.start(control).await {
                    Ok(b) => {
                        on_start(Ok(&b), control);
                        Ok(b)
                    }
                    Err(e) => {
                        on_start(Err(&e), control);
                        Err(Refusal::new(RefusalCode::Internal, e.to_string()))
                    }
                }
            })
        })
    }
}

/// Kills the backend (and reaps it) when the session ends, then removes
/// the password file's directory (if the backend left the file).
struct KillOnDrop(std::process::Child, Option<tempfile::TempDir>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        drop(self.1.take());
    }
}

/// A session's password in `passwd` in a fresh private directory.
struct PasswordFile {
    password: VncPassword,
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl PasswordFile {
    /// Write `password` (one line) to a new file only this user can read,
    /// in a directory only this user can enter (0700 on Unix, set before
    /// the file is made; on Windows the temporary folder is the user's own).
    fn write(password: VncPassword) -> std::io::Result<PasswordFile> {
        use std::io::Write;
        let dir = tempfile::Builder::new()
            .prefix("outpost-screen-")
            .tempdir()?;
        #[cfg(unix)]
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let path = dir.path().join("passwd");
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&path)?;
        f.write_all(password.expose().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        Ok(PasswordFile {
            password,
            dir,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(argv: &[&str]) -> ScreenCommand {
        ScreenCommand {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            view_only: vec!["-viewonly".into()],
        }
    }

    #[test]
    fn view_only_unless_control_was_approved() {
        let c = cmd(&[
            "x11vnc",
            "-rfbport",
            "{port}",
            "-passwdfile",
            "rm:{passwdfile}",
        ]);
        assert!(c.uses_password());
        assert_eq!(
            c.args(5901, "/tmp/p/passwd", false),
            [
                "-rfbport",
                "5901",
                "-passwdfile",
                "rm:/tmp/p/passwd",
                "-viewonly"
            ]
        );
        assert_eq!(
            c.args(5901, "/tmp/p/passwd", true),
            ["-rfbport", "5901", "-passwdfile", "rm:/tmp/p/passwd"]
        );
    }

    #[test]
    fn check_config_insists_on_a_password_file_or_an_explicit_opt_out() {
        let v = |argv: &[&str], without: bool| {
            ScreenCommand::validate(
                &argv.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                without,
            )
        };
        assert!(v(&["x11vnc"], false).is_err());
        assert!(v(&[" ", "{port}", "{passwdfile}"], false).is_err());
        assert!(v(&["vnc", "-p={port}", "-f={passwdfile}"], false).is_ok());
        let e = v(&["vnc", "-p={port}"], false).unwrap_err();
        assert!(
            e.contains("{passwdfile}") && e.contains("screen-without-password"),
            "{e}"
        );
        assert!(v(&["vnc", "-p={port}"], true).is_ok());
        assert!(v(&["vnc", "-p={port}", "{passwdfile}"], true).is_err());
        // The default passes its own check.
        if let Some(d) = DEFAULT_COMMAND {
            assert!(v(d, false).is_ok());
        }
    }

    #[test]
    fn the_password_file_is_private_and_goes_with_the_session() {
        let pw = VncPassword::generate();
        let f = PasswordFile::write(pw.clone()).unwrap();
        let text = std::fs::read_to_string(&f.path).unwrap();
        assert_eq!(text, format!("{}\n", pw.expose()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&f.path), 0o600);
            assert_eq!(mode(f.dir.path()), 0o700);
        }
        let dir = f.dir.path().to_owned();
        drop(f);
        assert!(!dir.exists());
    }
}
