//! The `outpost` command line: argument parsing and calls into the library.
//! Errors print as `outpost: {:#}` with the chain of what was being attempted.

mod audit;
mod check_config;
mod dashboard;
mod doctor;
mod enroll;
mod firewall_rules;
mod inspect;
mod keygen;
mod notifications;
mod release;
pub(crate) mod run;
mod service;
mod sign;
mod status;
mod support;
mod tuf_client;
mod updates;
mod uplink;
mod verify;

pub use run::{Output, run, run_until, serve, start_api, stop_signal};

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
    /// Show what a module file declares, imports and exports (signatures not
    /// checked), or with --diff what an upgrade adds and removes.
    Inspect(inspect::Args),
    /// Create a publisher signing key and print its trust-store entry.
    Keygen(keygen::Args),
    /// Embed a manifest in a component and sign it.
    Sign(sign::Args),
    /// Verify a signed module as the host would (exit code 1 if refused).
    Verify(verify::Args),
    /// Check a host config: policies, manifests, grants and module linking.
    CheckConfig(check_config::Args),
    /// The running service at a glance: modules, enrolment, uploads.
    Status(status::Args),
    /// The notifications of the running service (`--watch` follows them).
    Notifications(notifications::Args),
    /// Acknowledge a notification (it stays until its cause is gone).
    Ack(notifications::ActArgs),
    /// Dismiss a notification.
    Dismiss(notifications::ActArgs),
    /// Print a one-time login link to the dashboard of the running service.
    Dashboard(dashboard::Args),
    /// Lift the quarantine of a module (it runs again at the next start).
    Release(release::Args),
    /// Register this device with the vendor's cloud (device id and key).
    Enroll(enroll::Args),
    /// Show the upload queue: batches waiting, delivered, dropped, refused.
    Uplink(uplink::Args),
    /// Check endpoints (DNS, TCP, TLS, HTTP), clock, disk, spool and modules, and say what to fix (exit code 1 if something fails).
    Doctor(doctor::Args),
    /// Print the outbound allowlist (host patterns, port) as text, JSON, nftables or PowerShell.
    FirewallRules(firewall_rules::Args),
    /// Install, remove, start, stop the host as a service (Linux: systemd).
    Service(service::Args),
    /// Module updates: check the repository, list, show, approve, reject.
    Updates(updates::Args),
    /// Remote support: request a session, see it, approve or refuse what
    /// the engineer asks for, end it.
    Support(support::Args),
    /// The hash-chained audit of remote support: show, verify.
    Audit(audit::Args),
    /// The host's TUF client behind the TUF conformance suite's client
    /// protocol (init, refresh, download); not used by the service.
    #[command(hide = true)]
    TufClient(tuf_client::Args),
}

/// Entry point of the `outpost` binary.
pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == crate::runtime::cache::COMPILE_SUBCOMMAND)
    {
        return match crate::runtime::cache::compile_child_main(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("outpost: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse_from(args);
    // The long-running service compiles modules in child processes of this
    // binary, so that the compiler's memory is never the service's.
    let service = matches!(&cli.command, Command::Run(_))
        || matches!(&cli.command, Command::Service(a) if a.is_service_run());
    if service && let Ok(exe) = std::env::current_exe() {
        crate::runtime::cache::compile_in_child_processes(exe);
    }
    // The Windows service logs to files of its own (it has no console).
    if !matches!(&cli.command, Command::Service(a) if a.is_service_run()) {
        init_tracing();
    }
    let result = match cli.command {
        Command::Run(a) => run::exec(a),
        Command::Inspect(a) => inspect::exec(a),
        Command::Keygen(a) => keygen::exec(a),
        Command::Sign(a) => sign::exec(a),
        Command::Verify(a) => verify::exec(a),
        Command::CheckConfig(a) => check_config::exec(a),
        Command::Status(a) => status::exec(a),
        Command::Notifications(a) => notifications::exec(a),
        Command::Ack(a) => notifications::act(a, false),
        Command::Dismiss(a) => notifications::act(a, true),
        Command::Dashboard(a) => dashboard::exec(a),
        Command::Release(a) => release::exec(a),
        Command::Enroll(a) => enroll::exec(a),
        Command::Uplink(a) => uplink::exec(a),
        Command::Doctor(a) => doctor::exec(a),
        Command::FirewallRules(a) => firewall_rules::exec(a),
        Command::TufClient(a) => tuf_client::exec(a),
        Command::Service(a) => service::exec(a),
        Command::Updates(a) => updates::exec(a),
        Command::Support(a) => support::exec(a),
        Command::Audit(a) => audit::exec(a),
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

/// Targets of libraries that log what modules write or send (wasmtime-wasi
/// logs the bytes of every stdout write at debug level): capped at `info`
/// whatever `OUTPOST_LOG` says, so the host log never holds module payloads.
const PAYLOAD_LOGGING_TARGETS: &[&str] = &[
    "wasmtime_wasi",
    "wasmtime_wasi_http",
    "wasmtime_wasi_io",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
];

/// The host's log filter: `spec` (the syntax of `OUTPOST_LOG`, e.g. `info`
/// or `outpost.uplink=debug`), with [`PAYLOAD_LOGGING_TARGETS`] capped at
/// `info`.
pub fn log_filter(spec: &str) -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::try_new(spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    for target in PAYLOAD_LOGGING_TARGETS {
        if let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

fn init_tracing() {
    let spec = std::env::var("OUTPOST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let filter = log_filter(&spec);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Log to files in `dir` rotated daily (`outpost.YYYY-MM-DD.log`, JSON
/// lines, the newest `keep` kept) instead of standard error: the Windows
/// service has no console. The level is `OUTPOST_LOG` (default `info`), with
/// the payload-logging targets capped as everywhere.
#[cfg(windows)]
pub(crate) fn log_to_files(dir: &std::path::Path, keep: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("outpost")
        .filename_suffix("log")
        .max_log_files(keep)
        .build(dir)?;
    let spec = std::env::var("OUTPOST_LOG").unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(log_filter(&spec))
        .with_writer(appender)
        .try_init()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Print `value` as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Longest the CLI waits at exit for blocking work of module calls (a file
/// read stuck on a FIFO or a stalled share) before it leaves without it.
pub const EXIT_GRACE_MS: u64 = 2_000;

/// Run `fut` on a fresh multi-threaded runtime, then shut the runtime down
/// without waiting more than [`EXIT_GRACE_MS`] for its blocking threads: a
/// dropped runtime would wait for them forever.
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let out = rt.block_on(fut);
    rt.shutdown_timeout(std::time::Duration::from_millis(EXIT_GRACE_MS));
    Ok(out)
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes` as 64 lowercase hex digits.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

/// A trust-store key name (`[a-z0-9-]`) derived from a key file's name:
/// `Release 2025.key.pub` → `release-2025`; `key` if nothing usable is left.
fn key_name_from_path(path: &std::path::Path) -> String {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let stem = file.split('.').next().unwrap_or("");
    let mut name = String::new();
    for c in stem.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name: String = name.trim_matches('-').chars().take(64).collect();
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        "key".to_string()
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_derived_from_file_names_are_valid() {
        for (file, want) in [
            ("release.key", "release"),
            ("dir/Release 2025.key.pub", "release-2025"),
            ("--x__y--.pub", "x-y"),
            ("...", "key"),
            ("ключ.pub", "key"),
        ] {
            let name = key_name_from_path(std::path::Path::new(file));
            assert_eq!(name, want, "{file}");
            assert!(outpost_signing::manifest::valid_name(&name), "{name}");
        }
        let long = std::path::PathBuf::from("a".repeat(100));
        assert_eq!(key_name_from_path(&long).len(), 64);
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
    }
}
