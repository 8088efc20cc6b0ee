//! The screen backend of a support session (#16): a VNC server started for
//! one session only, after the person approved view or control, with those
//! rights, listening on a random loopback port, and stopped (killed) when
//! the session ends. It is reached only through the end-to-end channel
//! (`pc::serve` connects to it on loopback).
//!
//! The command is `[support] screen-command` (an argument vector; `{port}`
//! is replaced by the port); when control was not approved,
//! `screen-view-only-args` are appended. On Linux the default is Debian's
//! `x11vnc` on display `:0`: `-localhost`, `-rfbport {port}`, `-once` (it
//! exits after its viewer leaves), `-nopw`, and `-viewonly` unless control
//! was approved. Elsewhere there is no default: without a configured
//! command the broker does not offer view or control at all (Windows names
//! its own VNC server here; see ARCHITECTURE.md).
//!
//! Architecture Invariant: view-only is the backend's own setting, chosen
//! from the grant when the backend starts; the channel cannot widen it.

use outpost_support_proto::pc::{ScreenBackend, ScreenStarter};
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
    "-nopw",
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
/// How long the backend may take to listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the screen backend did not start.
#[derive(Debug, thiserror::Error)]
pub enum ScreenError {
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

    /// Check a configured command (`check-config`).
    pub fn validate(argv: &[String]) -> Result<(), String> {
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
        Ok(())
    }

    /// The arguments (after the program) for `port`, with control or view
    /// only.
    pub fn args(&self, port: u16, control: bool) -> Vec<String> {
        let mut a: Vec<String> = self.argv[1..]
            .iter()
            .map(|s| s.replace(PORT_PLACEHOLDER, &port.to_string()))
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
        let child = std::process::Command::new(&program)
            .args(self.args(port, control))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|source| ScreenError::Spawn {
                program: program.clone(),
                source,
            })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = KillOnDrop(child);
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

/// Kills the backend (and reaps it) when the session ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
        let c = cmd(&["x11vnc", "-rfbport", "{port}", "-localhost"]);
        assert_eq!(
            c.args(5901, false),
            ["-rfbport", "5901", "-localhost", "-viewonly"]
        );
        assert_eq!(c.args(5901, true), ["-rfbport", "5901", "-localhost"]);
        assert!(ScreenCommand::validate(&["x11vnc".into()]).is_err());
        assert!(ScreenCommand::validate(&[" ".into(), "{port}".into()]).is_err());
        assert!(ScreenCommand::validate(&["vnc".into(), "-p={port}".into()]).is_ok());
    }
}
