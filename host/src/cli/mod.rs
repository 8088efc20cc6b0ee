//! The `outpost` command line: argument parsing and calls into the library.
//! Errors print as `outpost: {:#}` with the chain of what was being attempted.

mod check_config;
mod inspect;
mod notifications;
mod run;

pub use run::{run, serve};

use clap::{Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;

/// outpost: diagnostic-support agent for lab-instrument controller PCs.
#[derive(Parser, Debug)]
#[command(name = "outpost", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent in the foreground until interrupted (Ctrl-C).
    Run(run::Args),
    /// Show a module's imports, exports and manifest.
    Inspect(inspect::Args),
    /// Check a host config: policies, manifests, grants and module linking.
    CheckConfig(check_config::Args),
    /// List the active notifications.
    Notifications(notifications::Args),
}

/// Entry point of the `outpost` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run(a) => run::exec(a),
        Command::Inspect(a) => inspect::exec(a),
        Command::CheckConfig(a) => check_config::exec(a),
        Command::Notifications(a) => notifications::exec(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("outpost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Print `value` as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
