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
    run_until(
        config,
        if json { Output::Json } else { Output::Text },
        stop_signal(seconds),
    )
    .await
}

/// Completes after `seconds`, or (without) at Ctrl-C or what a service
/// manager sends to stop a console process. The signal handlers are
/// installed when this is called (in a runtime), not when the future is
/// first polled: a stop that arrives while the host is still starting is
/// kept and ends it cleanly once started, instead of killing it.
pub fn stop_signal(seconds: Option<u64>) -> impl std::future::Future<Output = ()> {
    let signals = match seconds {
        Some(_) => None,
        None => Some(shutdown_signal()),
    };
    async move {
        match (seconds, signals) {
            (Some(s), _) => tokio::time::sleep(std::time::Duration::from_secs(s)).await,
            (None, Some(signals)) => signals.await,
            (None, None) => std::future::pending().await,
        }
    }
}

/// Where a running host's events go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// One line per event on stdout, for a person.
    Text,
    /// One JSON object per event on stdout.
    Json,
    /// The host log (a service without a console): JSON at info level,
    /// target `outpost.event`.
    Log,
}

/// Run a host from `config` until `stop` completes (a signal, the Windows
/// service manager's stop, a timer); then calls in progress end at their
/// deadline and the spool stays consistent.
pub async fn run_until(
    config: Config,
    output: Output,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let events = Events::default();
    let rx = events.subscribe();
    let path = config.path.clone();
    let agent = Agent::build(config, events.clone())
        .with_context(|| format!("while starting the host from {}", path.display()))?;
    let supervisor = Arc::new(Supervisor::start(&agent, events.clone()));
    let api = start_api(&agent, &supervisor, &events).await;
    let updates = crate::update::spawn_schedule(
        &agent.config,
        agent.runtime.services().db.clone(),
        events.clone(),
    );
    let idle_trim = agent.config.supervisor.idle_trim_secs;
    if idle_trim > 0
        && let Err(e) = crate::trim::spawn(std::time::Duration::from_secs(idle_trim))
    {
        tracing::warn!(error = %e, "cannot start the idle trim; memory is not handed back when idle");
    }
    let result = serve(rx, output, stop).await;
    if let Some(u) = updates {
        u.abort();
    }
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
    let support = match crate::support::Broker::new(
        &agent.config,
        agent.runtime.services().db.clone(),
        supervisor.clone(),
        events.clone(),
        Arc::new(crate::support::SystemClock),
    ) {
        Ok(b) => {
            let b = match agent.runtime.services().uplink.identity() {
                Some(id) => {
                    b.with_checkpoint_key(crate::support::audit::checkpoint_key(id.key.as_bytes()))
                }
                None => b,
            };
            let b = Arc::new(b);
            b.spawn_timer();
            // The audit goes to the cloud as the never-dropped stream
            // `support-audit` (entries wait while not enrolled).
            crate::support::upload::AuditUpload::new(
                agent.runtime.services().db.clone(),
                agent.runtime.services().uplink.clone(),
            )
            .spawn();
            match crate::support::link::Link::from_config(
                &agent.config.support,
                agent.runtime.services().tls.clone(),
                agent.runtime.services().uplink.clone(),
            ) {
                Ok(Some(link)) => {
                    b.spawn_link(link);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "remote support relay not usable"),
            }
            Some(b)
        }
        Err(e) => {
            tracing::error!(error = %e, "remote support not available");
            None
        }
    };
    let ctx = crate::api::ApiContext {
        support,
        supervisor: supervisor.clone(),
        services: agent.runtime.services().clone(),
        events: events.clone(),
        agent: crate::api::AgentFacts::of(agent),
        config: agent.config.clone(),
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

/// Hand events from `rx` to their output until `stop` completes (the caller
/// keeps its supervisor alive meanwhile). Lines are written by a thread of
/// their own: a stdout nobody reads (a full pipe) never stalls the host;
/// what cannot be written then is counted and said once it can.
pub async fn serve(
    mut rx: broadcast::Receiver<HostEvent>,
    output: Output,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let printer = Printer::start(output);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    // The output was closed (`outpost run | head`): stop.
                    if !printer.print(&ev) {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => printer.lost(n),
                Err(_) => break,
            },
        }
    }
    printer.finish()
}

/// Lines waiting for the output thread at most.
const PRINT_QUEUE: usize = 4096;

/// Writes event lines on a thread of its own.
struct Printer {
    output: Output,
    tx: Option<std::sync::mpsc::SyncSender<String>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    skipped: std::cell::Cell<u64>,
}

impl Printer {
    fn start(output: Output) -> Printer {
        let (tx, thread) = if output == Output::Log {
            (None, None)
        } else {
            let (tx, rx) = std::sync::mpsc::sync_channel::<String>(PRINT_QUEUE);
            let thread = std::thread::Builder::new()
                .name("outpost-print".into())
                .spawn(move || -> std::io::Result<()> {
                    for line in rx {
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "{line}")?;
                        out.flush()?;
                    }
                    Ok(())
                })
                .ok();
            (Some(tx), thread)
        };
        Printer {
            output,
            tx,
            thread,
            skipped: std::cell::Cell::new(0),
        }
    }

    /// Queue `ev`; false once the output is closed.
    fn print(&self, ev: &HostEvent) -> bool {
        let line = match self.output {
            Output::Log => {
                let json = serde_json::to_string(ev).unwrap_or_default();
                tracing::info!(target: "outpost.event", kind = ev.kind(), event = %json);
                return true;
            }
            Output::Json => serde_json::to_string(ev).unwrap_or_default(),
            Output::Text => event_line(ev),
        };
        self.send(line)
    }

    fn lost(&self, n: u64) {
        self.skipped.set(self.skipped.get() + n);
    }

    fn send(&self, line: String) -> bool {
        use std::sync::mpsc::TrySendError;
        let Some(tx) = &self.tx else { return true };
        let skipped = self.skipped.get();
        if skipped > 0 {
            let note = match self.output {
                Output::Json => {
                    format!("{{\"event\":\"output-skipped\",\"events\":{skipped}}}")
                }
                _ => format!("skipped     {skipped} event(s): the output was not read fast enough"),
            };
            match tx.try_send(note) {
                Ok(()) => self.skipped.set(0),
                Err(TrySendError::Full(_)) => {
                    self.skipped.set(skipped + 1);
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        match tx.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.skipped.set(self.skipped.get() + 1);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Wait for the lines queued (at most [`super::EXIT_GRACE_MS`]); an
    /// output that was closed (a broken pipe) is an error.
    fn finish(mut self) -> anyhow::Result<()> {
        drop(self.tx.take());
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_millis(super::EXIT_GRACE_MS);
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if thread.is_finished() {
            match thread.join() {
                Ok(r) => r?,
                Err(_) => anyhow::bail!("the output thread panicked"),
            }
        }
        Ok(())
    }
}

/// Ctrl-C, or what a service manager sends to stop the host: SIGTERM on
/// Unix (systemd's `KillSignal`), console close and shutdown on Windows.
/// The handlers are installed now; the future completes at the first of
/// them. After it the supervisor is dropped: calls in progress end at their
/// deadline, and the process leaves within [`super::EXIT_GRACE_MS`].
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    /// The next delivery of a registered signal; never, if it could not be
    /// registered.
    #[cfg(any(unix, windows))]
    macro_rules! next {
        ($signal:expr) => {
            async move {
                match $signal {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
        };
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            tokio::select! {
                _ = next!(int) => {}
                _ = next!(term) => tracing::info!("SIGTERM: stopping"),
            }
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_c, ctrl_close, ctrl_shutdown};
        let (c, close, shutdown) = (ctrl_c().ok(), ctrl_close().ok(), ctrl_shutdown().ok());
        async move {
            tokio::select! {
                _ = next!(c) => {}
                _ = next!(close) => {}
                _ = next!(shutdown) => {}
            }
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// One event for a person.
fn event_line(ev: &HostEvent) -> String {
    match ev {
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
        HostEvent::UpdateAvailable {
            offer,
            module,
            from_version,
            to_version,
            adds_capabilities,
            ..
        } => format!(
            "update      {module} {from_version} -> {to_version}{} (outpost updates show {offer})",
            if *adds_capabilities {
                ", asks for more: needs approval"
            } else {
                ""
            }
        ),
        HostEvent::UpdateDecided {
            module,
            to_version,
            decision,
            client,
            ..
        } => format!("update      {module} {to_version} {decision} (via {client})"),
        HostEvent::UpdateInstalled {
            module, to_version, ..
        } => format!("update      {module} {to_version} installed; loaded at its next call"),
        HostEvent::UpdateRolledBack {
            module,
            failed_version,
            restored_version,
            reason,
            ..
        } => format!(
            "ROLLED BACK {module} {failed_version} failed in service ({reason}); {restored_version} runs again"
        ),
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
        HostEvent::SupportRequested { session, .. } => {
            format!("support     request {session} waiting for an engineer")
        }
        HostEvent::SupportApprovalNeeded {
            session,
            engineer,
            offered,
            ..
        } => format!(
            "support     {session}: {engineer} asks for {} (outpost support approve {session} ...)",
            offered.join(", ")
        ),
        HostEvent::SupportSessionStarted {
            session,
            engineer,
            permissions,
        } => format!(
            "support     {session} started: {engineer} with {}",
            permissions.join(", ")
        ),
        HostEvent::SupportSessionEnded { session, reason } => {
            format!("support     {session} ended: {reason}")
        }
        HostEvent::SupportRefused { session, reason } => {
            format!("support     {session} attempt refused: {reason}")
        }
    }
}
