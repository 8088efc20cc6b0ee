//! `outpost run --config FILE`: the foreground service.

use crate::agent::Agent;
use crate::config::Config;
use crate::events::{Events, HostEvent};
use crate::supervisor::Supervisor;
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Arguments of `outpost run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The host config file.
    #[arg(long)]
    config: PathBuf,
    /// Print events as JSON lines.
    #[arg(long)]
    json: bool,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    seconds: Option<u64>,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&a.config)?;
    super::block_on(run(config, a.json, a.seconds))??;
    Ok(ExitCode::SUCCESS)
}

/// Run a host from `config`, printing its events to stdout, until Ctrl-C or
/// `seconds` elapse.
pub async fn run(config: Config, json: bool, seconds: Option<u64>) -> anyhow::Result<()> {
    let events = Events::default();
    let rx = events.subscribe();
    let path = config.path.clone();
    let agent = Agent::build(config, events.clone())
        .with_context(|| format!("while starting the host from {}", path.display()))?;
    let supervisor = Arc::new(Supervisor::start(&agent, events.clone()));
    let api = start_api(&agent, &supervisor, &events).await;
    let result = serve(rx, json, seconds).await;
    if let Some(api) = api {
        api.shutdown().await;
    }
    drop(supervisor);
    result
}

/// Start the local API of `agent` if its config enables it. A failure to
/// start it (port in use, ...) is a setting problem, not the end of the
/// host: collection and uploads go on without it.
pub async fn start_api(
    agent: &Agent,
    supervisor: &Arc<Supervisor>,
    events: &Events,
) -> Option<crate::api::RunningApi> {
    let api = &agent.config.api;
    if !api.enabled {
        return None;
    }
    let ctx = crate::api::ApiContext {
        supervisor: supervisor.clone(),
        services: agent.runtime.services().clone(),
        events: events.clone(),
        agent: crate::api::AgentFacts::of(agent),
    };
    match crate::api::start(ctx, api.listen, &agent.config.state_dir, Default::default()).await {
        Ok(running) => Some(running),
        Err(e) => {
            tracing::error!(error = %e, "local API not started");
            events.emit(HostEvent::problem(
                crate::events::Setting::ApiUnavailable,
                format!("the local API (dashboard, `outpost status`) is not available: {e}"),
            ));
            None
        }
    }
}

/// Print events from `rx` until Ctrl-C or `seconds` elapse (the caller keeps
/// its supervisor alive meanwhile).
pub async fn serve(
    mut rx: broadcast::Receiver<HostEvent>,
    json: bool,
    seconds: Option<u64>,
) -> anyhow::Result<()> {
    let stop = async {
        match seconds {
            Some(s) => tokio::time::sleep(std::time::Duration::from_secs(s)).await,
            None => shutdown_signal().await,
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            ev = rx.recv() => match ev {
                Ok(ev) => print_event(&ev, json)?,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            },
        }
    }
    Ok(())
}

/// Ctrl-C, or what a service manager sends to stop the host: SIGTERM on
/// Unix (systemd's `KillSignal`), console close and shutdown on Windows.
/// After it the supervisor is dropped: calls in progress end at their
/// deadline, and the process leaves within [`super::EXIT_GRACE_MS`].
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_close, ctrl_shutdown};
        match (ctrl_close(), ctrl_shutdown()) {
            (Ok(mut close), Ok(mut shutdown)) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = close.recv() => {}
                    _ = shutdown.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_event(ev: &HostEvent, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, ev)?;
        writeln!(out)?;
        return Ok(());
    }
    let line = match ev {
        HostEvent::ModuleReady { module, world } => format!("ready       {module} ({world})"),
        HostEvent::ModuleRefused { module, reason } => format!("REFUSED     {module}: {reason}"),
        HostEvent::CallSucceeded {
            module,
            call,
            summary,
        } => format!("ok          {module}.{call} {summary}"),
        HostEvent::ModuleFailed {
            module,
            reason,
            consecutive,
        } => {
            format!("FAILED      {module}: {reason} (#{consecutive} in a row)")
        }
        HostEvent::ModuleRestarting { module, after_ms } => {
            format!("restart     {module} in {after_ms} ms")
        }
        HostEvent::ModuleRecovered { module } => format!("recovered   {module}"),
        HostEvent::ModuleQuarantined { module, failures } => {
            format!("QUARANTINE  {module} after {failures} consecutive failures")
        }
        HostEvent::SettingProblem {
            setting,
            severity,
            text,
        } => format!("SETTING     [{severity}] {setting}: {text}"),
        HostEvent::SettingResolved { setting } => format!("resolved    {setting}"),
        HostEvent::InstrumentAlert {
            model,
            serial,
            severity,
            code,
            text,
        } => {
            format!("instrument  {model} {serial} {severity} {code}: {text}")
        }
        HostEvent::NotificationRaised {
            id: _,
            module,
            key,
            severity,
            title,
        } => {
            format!("notify      [{severity}] {title} ({module}/{key})")
        }
        HostEvent::NotificationCleared {
            module, key, by, ..
        } => format!("cleared     {module}/{key} (by {by})"),
        HostEvent::NotificationAcknowledged {
            module,
            key,
            client,
            ..
        } => format!("acked       {module}/{key} (via {client})"),
        HostEvent::ModuleReleased { module } => format!("released    {module}"),
        HostEvent::RequestRefused {
            module,
            authority,
            reason,
        } => {
            format!("DENIED      {module} -> {authority}: {reason}")
        }
        HostEvent::DeadLettered {
            id,
            source,
            module,
            stream,
            reason,
            field,
            repeated,
        } => {
            let field = field
                .as_deref()
                .map(|f| format!(", field {f}"))
                .unwrap_or_default();
            let again = if *repeated { " (again)" } else { "" };
            format!(
                "DEAD-LETTER {id} {module}/{stream} refused by the {source}: {reason}{field}{again}"
            )
        }
    };
    writeln!(out, "{line}")?;
    Ok(())
}
