//! Loading and running components.
//!
//! One [`wasmtime::Engine`] with the pooling allocator and epoch interruption.
//! Each module is compiled once and pre-linked into an `InstancePre` against a
//! linker that holds only the interfaces its grant covers. Every call gets a
//! fresh `Store` and instance (see ARCHITECTURE.md: "a store per call"), so a
//! trap, a deadline or a memory-limit hit ends that call and leaves nothing
//! behind.

pub mod bindings;
pub mod cache;
mod host;
pub mod interfaces;
pub mod sandbox;
pub mod stdio;

pub use cache::{Cache, CacheOutcome};
pub use host::severity_name;
pub use sandbox::{HostState, ModuleCtx};

use crate::config::Instrument;
use crate::events::Events;
use crate::grants::{Grant, ImportError, check_imports};
use crate::store::Db;
use crate::store::notifications::Notifications;
use crate::store::spool::Spool;
use bindings::collector::exports::outpost::agent::collect::{CollectReport, Trigger};
use bindings::host_events::HostEvent as WitHostEvent;
use bindings::session_policy::exports::outpost::agent::policy::{Decision, SupportRequest};
use outpost_signing::manifest::World;
use outpost_signing::verify::VerifiedModule;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline,
};

/// Epoch tick period; CPU deadlines are counted in these ticks.
pub const EPOCH_TICK_MS: u64 = 10;
/// Concurrent instances the pooling allocator holds.
pub const POOL_INSTANCES: u32 = 32;
/// Bytes of each pooled memory and table slot kept resident between calls.
pub const KEEP_RESIDENT_BYTES: usize = 2 << 20;
/// Most wasm stack a call may use.
pub const MAX_WASM_STACK_BYTES: usize = 1 << 20;

/// What the host offers to modules, shared by all calls.
pub struct Services {
    /// The embedded database.
    pub db: Db,
    /// The notification centre.
    pub notifications: Notifications,
    /// The uplink spool (sealed envelopes).
    pub spool: Spool,
    /// The uplink: PHI guard, sealing, spool (see [`crate::uplink`]).
    pub uplink: Arc<crate::uplink::Uplink>,
    /// The event bus.
    pub events: Events,
    /// Instruments for `host-info`.
    pub instruments: Vec<Instrument>,
    /// TLS client configuration for modules' HTTPS.
    pub tls: Arc<rustls::ClientConfig>,
    /// The host's metrics.
    pub metrics: crate::metrics::Metrics,
}

impl Services {
    /// Services over `db`.
    pub fn new(
        db: Db,
        events: Events,
        instruments: Vec<Instrument>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Arc<Services> {
        let spool = Spool::new(db.clone());
        Arc::new(Services {
            notifications: Notifications::new(db.clone()),
            uplink: Arc::new(crate::uplink::Uplink::new(spool.clone(), events.clone())),
            spool,
            db,
            events,
            instruments,
            tls,
            metrics: crate::metrics::Metrics::new(),
        })
    }
}

impl Services {
    /// Report a notification change to the vendor's cloud as device status
    /// (stream `notifications`), when the device is enrolled: module, key,
    /// severity, title (already checked by the PHI guard when it was kept),
    /// what happened and by whom — never the body. Best effort: a failure
    /// is logged (and the spool raises its own problems); it never fails
    /// the module's call or the person's action.
    pub fn report_notification(
        &self,
        n: &crate::store::notifications::Notification,
        state: outpost_protocol::NotificationState,
        by: &str,
    ) {
        use outpost_protocol as p;
        if self.uplink.identity().is_none() {
            return;
        }
        let severity = match n.severity.as_str() {
            "debug" => p::Severity::Debug,
            "info" => p::Severity::Info,
            "notice" => p::Severity::Notice,
            "warning" => p::Severity::Warning,
            "error" => p::Severity::Error,
            _ => p::Severity::Critical,
        };
        let instrument = self
            .instruments
            .first()
            .map(|i| p::Instrument {
                model: i.model.clone(),
                serial: i.serial.clone(),
            })
            .unwrap_or(p::Instrument {
                model: String::new(),
                serial: String::new(),
            });
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let record = p::Record::Notification(p::NotificationStatus {
            instrument,
            module: n.module.clone(),
            key: n.key.clone(),
            severity,
            state,
            title: n.title.clone(),
            by: by.to_owned(),
            time: p::Timestamp {
                seconds: now.as_secs() as i64,
                nanoseconds: now.subsec_nanos(),
            },
        });
        if let Err(e) =
            self.uplink
                .enqueue(NOTIFICATIONS_MODULE, NOTIFICATIONS_STREAM, vec![record])
        {
            tracing::warn!(target: "outpost.uplink", error = %e, "notification status not queued");
        }
    }
}

/// The uplink stream of notification status (the host's own, droppable
/// like events when the spool is full).
pub const NOTIFICATIONS_STREAM: &str = "notifications";
/// The module name the host's own notification status is queued under.
pub const NOTIFICATIONS_MODULE: &str = "outpost-host";

/// Why a module could not be loaded. Each names the module or file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The signed file did not verify (signature, trust, manifest, version).
    #[error("module `{module}` ({path}) refused: {error}")]
    Verify {
        /// Module name as installed.
        module: String,
        /// File.
        path: PathBuf,
        /// The verifier's reason (boxed: it is large, and this error is
        /// on every load path).
        error: Box<outpost_signing::verify::VerifyError>,
    },
    /// Not a valid component for this engine.
    #[error("module `{module}` is not a valid component: {message}")]
    Compile {
        /// Module.
        module: String,
        /// Compiler message.
        message: String,
    },
    /// Imports outside its world or grant.
    #[error(transparent)]
    Imports(#[from] ImportError),
    /// Linking or export checking failed.
    #[error("module `{module}` cannot be linked as a {world} module: {message}")]
    Link {
        /// Module.
        module: String,
        /// World.
        world: World,
        /// Linker message.
        message: String,
    },
}

/// Why one call failed. The host carries on in every case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The CPU budget of the call ran out.
    #[error("cpu deadline of {0} ms exceeded")]
    CpuDeadline(u32),
    /// The wall-clock budget of the call ran out.
    #[error("wall-clock deadline of {0} ms exceeded")]
    WallDeadline(u32),
    /// The module tried to grow memory past its cap and then failed.
    #[error("memory limit of {0} MiB reached")]
    MemoryLimit(usize),
    /// The module trapped (panic, stack overflow, unreachable, ...).
    #[error("trap: {0}")]
    Trap(String),
    /// A sandbox for the call could not be set up.
    #[error("cannot start call: {0}")]
    Setup(String),
    /// The module returned an error result.
    #[error("module error: {0}")]
    Module(String),
}

impl CallError {
    /// The failure's kind, as a metrics label and for summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::CpuDeadline(_) => "cpu-deadline",
            CallError::WallDeadline(_) => "wall-deadline",
            CallError::MemoryLimit(_) => "memory-limit",
            CallError::Trap(_) => "trap",
            CallError::Setup(_) => "setup",
            CallError::Module(_) => "module-error",
        }
    }
}

enum WorldPre {
    Collector(bindings::collector::CollectorPre<HostState>),
    Notifier(bindings::notifier::NotifierPre<HostState>),
    SessionPolicy(bindings::session_policy::SessionPolicyPre<HostState>),
}

/// A compiled, linked module ready to be called.
pub struct LoadedModule {
    ctx: Arc<ModuleCtx>,
    pre: WorldPre,
    /// The component's imports (names), for `inspect` and diagnostics.
    pub imports: Vec<String>,
    /// The component's exports (names).
    pub exports: Vec<String>,
    /// What the compiled-module cache did when it was loaded.
    pub cache: CacheOutcome,
    /// SHA-256 (hex) of the signed file it was loaded from.
    pub file_sha256: String,
}

/// A component compiled from a [`VerifiedModule`]'s bytes; only
/// [`Runtime::compile`] makes one.
pub struct CompiledModule {
    component: Component,
    cache: CacheOutcome,
    file_sha256: String,
}

impl LoadedModule {
    /// The module's name.
    pub fn name(&self) -> &str {
        &self.ctx.name
    }

    /// The module's grant.
    pub fn grant(&self) -> &Grant {
        &self.ctx.grant
    }

    /// The module's world.
    pub fn world(&self) -> World {
        self.ctx.grant.world()
    }

    /// The largest linear memory any call of this module has used so far, in
    /// bytes (memory grows in 64 KiB pages and a store lives for one call).
    pub fn peak_memory_bytes(&self) -> usize {
        self.ctx.peak_memory_bytes.load(Ordering::Relaxed)
    }
}

/// Keeps the epoch ticking only while calls run, so an idle host does not
/// wake up at all.
///
/// The ticker is a dedicated OS thread, not a tokio task: a guest spinning in
/// `loop {}` never yields, so a task scheduled on the worker thread that runs
/// it (or on a current-thread runtime) would never tick, and neither the CPU
/// deadline nor the wall-clock timeout would fire.
struct Ticker {
    state: std::sync::Mutex<TickerState>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct TickerState {
    /// Calls running now.
    active: usize,
    /// The runtime is gone: the thread ends.
    closed: bool,
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Arc<Ticker>> {
        let ticker = Arc::new(Ticker {
            state: std::sync::Mutex::new(TickerState::default()),
            wake: std::sync::Condvar::new(),
        });
        let t = ticker.clone();
        std::thread::Builder::new()
            .name("outpost-epoch".into())
            .spawn(move || {
                loop {
                    {
                        let mut st = t.state.lock().unwrap_or_else(|p| p.into_inner());
                        while st.active == 0 && !st.closed {
                            st = t.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                        }
                        if st.closed {
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(EPOCH_TICK_MS));
                    engine.increment_epoch();
                }
            })?;
        Ok(ticker)
    }

    fn update(&self, f: impl FnOnce(&mut TickerState)) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut st);
        drop(st);
        self.wake.notify_one();
    }
}

struct TickGuard(Arc<Ticker>);

impl Drop for TickGuard {
    fn drop(&mut self) {
        self.0.update(|s| s.active -= 1);
    }
}

/// The component runtime.
pub struct Runtime {
    engine: Engine,
    services: Arc<Services>,
    ticker: Arc<Ticker>,
    cache: Option<Cache>,
    max_memory_mib: u32,
}

/// Names of a component's imports and exports.
pub fn component_interfaces(engine: &Engine, component: &Component) -> (Vec<String>, Vec<String>) {
    let ty = component.component_type();
    let imports = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
    let exports = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
    (imports, exports)
}

/// An engine configured like the host's (pooling allocator, epochs).
pub fn new_engine(max_memory_mib: u32) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 16)
        .total_memories(POOL_INSTANCES * 4)
        .total_tables(POOL_INSTANCES * 16)
        .total_stacks(POOL_INSTANCES)
        .max_core_instances_per_component(32)
        .max_memories_per_component(8)
        .max_tables_per_component(32)
        .max_memory_size((max_memory_mib as usize) << 20)
        // Keep a slot's first pages resident between calls and reset only the
        // pages a call dirtied (PAGEMAP_SCAN on Linux >= 6.7; elsewhere the
        // portable madvise/memset path): the next call then takes no page
        // faults on its stack and heap.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES);
    let mut cfg = wasmtime::Config::new();
    #[cfg(feature = "profiling")]
    if std::env::var_os("OUTPOST_PERFMAP").is_some() {
        cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    cfg.wasm_component_model(true)
        .epoch_interruption(true)
        // Pool slots reserve the full 4 GiB address range of a 32-bit memory,
        // so a memory never moves when it grows; saying so lets Cranelift keep
        // the heap base in a register across loops instead of reloading it.
        .memory_may_move(false)
        .max_wasm_stack(MAX_WASM_STACK_BYTES)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&cfg)
}

impl Runtime {
    /// A runtime whose memory slots allow up to `max_memory_mib` per module.
    /// Starts the epoch ticker thread (idle while no call runs).
    pub fn new(
        services: Arc<Services>,
        max_memory_mib: u32,
        cache: Option<Cache>,
    ) -> wasmtime::Result<Runtime> {
        let engine = new_engine(max_memory_mib)?;
        let ticker = Ticker::start(engine.clone())
            .map_err(|e| wasmtime::Error::msg(format!("cannot start the epoch thread: {e}")))?;
        Ok(Runtime {
            engine,
            services,
            ticker,
            cache,
            max_memory_mib,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The host services.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Compile a verified module (through the cache when the runtime has one).
    /// This is the only way to get a [`CompiledModule`]: unverified bytes never
    /// reach the compiler.
    pub fn compile(&self, verified: &VerifiedModule) -> Result<CompiledModule, LoadError> {
        let name = &verified.manifest().name;
        let compiled = match &self.cache {
            Some(cache) => cache.get_or_compile(&self.engine, self.max_memory_mib, verified),
            None => {
                Component::new(&self.engine, verified.bytes()).map(|c| (c, CacheOutcome::Disabled))
            }
        };
        let (component, cache) = compiled.map_err(|e| LoadError::Compile {
            module: name.clone(),
            message: format!("{e:#}"),
        })?;
        Ok(CompiledModule {
            component,
            cache,
            file_sha256: verified.file_sha256_hex(),
        })
    }

    /// Compile and link a verified module under `grant` (which must be the
    /// grant computed from this module's manifest).
    pub fn load(&self, verified: &VerifiedModule, grant: Grant) -> Result<LoadedModule, LoadError> {
        if *grant.file_sha256() != verified.file_sha256() {
            return Err(LoadError::Link {
                module: verified.manifest().name.clone(),
                world: verified.manifest().world,
                message: format!(
                    "grant was computed for another file (`{}`, {} world)",
                    grant.module(),
                    grant.world()
                ),
            });
        }
        let compiled = self.compile(verified)?;
        self.link(compiled, grant)
    }

    /// Link a compiled module under `grant`.
    pub fn link(&self, compiled: CompiledModule, grant: Grant) -> Result<LoadedModule, LoadError> {
        let component = compiled.component;
        let (imports, exports) = component_interfaces(&self.engine, &component);
        check_imports(imports.iter().map(String::as_str), &grant)?;
        let link_err = |e: wasmtime::Error| LoadError::Link {
            module: grant.module().to_owned(),
            world: grant.world(),
            message: format!("{e:#}"),
        };
        let linker = self.linker_for(&grant).map_err(link_err)?;
        let instance_pre = linker.instantiate_pre(&component).map_err(link_err)?;
        let pre = match grant.world() {
            World::Collector => WorldPre::Collector(
                bindings::collector::CollectorPre::new(instance_pre).map_err(link_err)?,
            ),
            World::Notifier => WorldPre::Notifier(
                bindings::notifier::NotifierPre::new(instance_pre).map_err(link_err)?,
            ),
            World::SessionPolicy => WorldPre::SessionPolicy(
                bindings::session_policy::SessionPolicyPre::new(instance_pre).map_err(link_err)?,
            ),
        };
        Ok(LoadedModule {
            ctx: Arc::new(ModuleCtx {
                name: grant.module().into(),
                grant: Arc::new(grant),
                services: self.services.clone(),
                peak_memory_bytes: AtomicUsize::new(0),
                output: Default::default(),
            }),
            pre,
            imports,
            exports,
            cache: compiled.cache,
            file_sha256: compiled.file_sha256,
        })
    }

    /// A linker with the sandbox baseline plus exactly the interfaces the grant covers.
    fn linker_for(&self, grant: &Grant) -> wasmtime::Result<Linker<HostState>> {
        use bindings::{host_events, host_info, log, notify, state, types, uplink};
        let mut l = Linker::<HostState>::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut l)?;
        types::add_to_linker::<_, HasSelf<_>>(&mut l, |s| s)?;
        host_info::add_to_linker::<_, HasSelf<_>>(&mut l, |s| s)?;
        log::add_to_linker::<_, HasSelf<_>>(&mut l, |s| s)?;
        if grant.state_quota_bytes() > 0 {
            state::add_to_linker::<_, HasSelf<_>>(&mut l, |s| s)?;
        }
        match grant.world() {
            World::Collector => {
                if !grant.uplink_streams().is_empty() {
                    uplink::add_to_linker::<_, HasSelf<_>>(&mut l, |s| s)?;
                }
            }
            World::Notifier => {
                host_events::add_to_linker::<_, HasSelf<_>>(&mut l, |s| s)?;
                if grant.notify() {
                    notify::add_to_linker::<_, HasSelf<_>>(&mut l, |s| s)?;
                }
            }
            World::SessionPolicy => {}
        }
        if !grant.endpoints().is_empty() && grant.world() != World::Notifier {
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut l)?;
        }
        Ok(l)
    }

    /// A fresh store for one call of `m`: WASI context, limits, epoch deadline.
    pub fn new_store(&self, m: &LoadedModule) -> Result<Store<HostState>, CallError> {
        let limits = m.ctx.grant.limits();
        let cpu_ticks = u64::from(limits.cpu_ms).div_ceil(EPOCH_TICK_MS).max(1);
        let data = HostState::new(m.ctx.clone(), cpu_ticks)
            .map_err(|e| CallError::Setup(e.to_string()))?;
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| &mut s.memory);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            s.cpu_ticks_used += 1;
            if s.cpu_ticks_used > s.cpu_ticks_max {
                s.cpu_exceeded = true;
                return Err(Trap::Interrupt.into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
        Ok(store)
    }

    fn tick(&self) -> TickGuard {
        self.ticker.update(|s| s.active += 1);
        TickGuard(self.ticker.clone())
    }

    /// Call `collect` on a collector module.
    #[tracing::instrument(name = "outpost.call.collect", skip_all, fields(module = m.name()))]
    pub async fn collect(
        &self,
        m: &LoadedModule,
        trigger: Trigger,
    ) -> Result<CollectReport, CallError> {
        self.collect_reporting_backlog(m, trigger)
            .await
            .map(|(report, _)| report)
    }

    /// [`Runtime::collect`], and whether the module said more input is
    /// waiting (`uplink.backlog-waiting`) in a call that succeeded.
    pub async fn collect_reporting_backlog(
        &self,
        m: &LoadedModule,
        trigger: Trigger,
    ) -> Result<(CollectReport, bool), CallError> {
        let WorldPre::Collector(pre) = &m.pre else {
            return Err(CallError::Setup(format!(
                "module `{}` is not a collector",
                m.name()
            )));
        };
        let mut store = self.new_store(m)?;
        let _tick = self.tick();
        let wall = m.ctx.grant.limits().wall_ms;
        let started = std::time::Instant::now();
        let res = tokio::time::timeout(Duration::from_millis(wall.into()), async {
            let t0 = std::time::Instant::now();
            let inst = pre.instantiate_async(&mut store).await?;
            self.services
                .metrics
                .instantiated(t0.elapsed().as_secs_f64());
            inst.outpost_agent_collect()
                .call_collect(&mut store, trigger)
                .await
        })
        .await;
        let out = finish(res, &store, wall, started).and_then(|r| r.map_err(module_error));
        self.record(m, "collect", &out, started);
        // The alerts of the batches the call queued, whatever its outcome
        // (a batch queued before a trap is in the spool all the same).
        for alert in host::take_alerts(store.data_mut()) {
            self.services.events.emit(alert);
        }
        let backlog = store.data().backlog_waiting;
        out.map(|report| (report, backlog))
    }

    /// Count a finished call in the metrics.
    fn record<T>(
        &self,
        m: &LoadedModule,
        call: &str,
        out: &Result<T, CallError>,
        started: std::time::Instant,
    ) {
        let outcome = match out {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.services
            .metrics
            .call(m.name(), call, outcome, started.elapsed().as_secs_f64());
    }

    /// Deliver a host event to a notifier module.
    #[tracing::instrument(name = "outpost.call.on_event", skip_all, fields(module = m.name()))]
    pub async fn on_event(&self, m: &LoadedModule, event: WitHostEvent) -> Result<(), CallError> {
        let WorldPre::Notifier(pre) = &m.pre else {
            return Err(CallError::Setup(format!(
                "module `{}` is not a notifier",
                m.name()
            )));
        };
        let mut store = self.new_store(m)?;
        let _tick = self.tick();
        let wall = m.ctx.grant.limits().wall_ms;
        let started = std::time::Instant::now();
        let res = tokio::time::timeout(Duration::from_millis(wall.into()), async {
            let t0 = std::time::Instant::now();
            let inst = pre.instantiate_async(&mut store).await?;
            self.services
                .metrics
                .instantiated(t0.elapsed().as_secs_f64());
            inst.outpost_agent_notify_handler()
                .call_on_event(&mut store, &event)
                .await
        })
        .await;
        let out = finish(res, &store, wall, started).and_then(|r| r.map_err(module_error));
        self.record(m, "on-event", &out, started);
        out
    }

    /// Ask a session-policy module to decide a support request. The decision is
    /// narrowed to the permissions the grant allows before it is returned.
    #[tracing::instrument(name = "outpost.call.evaluate", skip_all, fields(module = m.name()))]
    pub async fn evaluate(
        &self,
        m: &LoadedModule,
        request: SupportRequest,
    ) -> Result<Decision, CallError> {
        let WorldPre::SessionPolicy(pre) = &m.pre else {
            return Err(CallError::Setup(format!(
                "module `{}` is not a session policy",
                m.name()
            )));
        };
        let mut store = self.new_store(m)?;
        let _tick = self.tick();
        let wall = m.ctx.grant.limits().wall_ms;
        let started = std::time::Instant::now();
        let requested = request.permissions.clone();
        let res = tokio::time::timeout(Duration::from_millis(wall.into()), async {
            let t0 = std::time::Instant::now();
            let inst = pre.instantiate_async(&mut store).await?;
            self.services
                .metrics
                .instantiated(t0.elapsed().as_secs_f64());
            inst.outpost_agent_policy()
                .call_evaluate(&mut store, &request)
                .await
        })
        .await;
        let out = finish(res, &store, wall, started);
        self.record(m, "evaluate", &out, started);
        let mut decision = out?;
        let granted = &m.ctx.grant.permissions();
        decision
            .offer
            .retain(|p| requested.contains(p) && granted.contains(&policy_permission(*p)));
        if !decision.allow {
            decision.offer.clear();
        }
        Ok(decision)
    }

    /// One harmless call of `m`'s export, as an update's health check does
    /// (over a throwaway state): `collect(startup)` for a collector, a
    /// `module-recovered` event for a notifier, a view-only request from
    /// nobody for a session policy. Any trap, deadline or error result is a
    /// failure.
    pub async fn health_call(&self, m: &LoadedModule) -> Result<(), CallError> {
        match &m.pre {
            WorldPre::Collector(_) => self.collect(m, Trigger::Startup).await.map(|_| ()),
            WorldPre::Notifier(_) => {
                self.on_event(
                    m,
                    WitHostEvent::ModuleRecovered("outpost-health-check".into()),
                )
                .await
            }
            WorldPre::SessionPolicy(_) => self
                .evaluate(
                    m,
                    SupportRequest {
                        engineer_id: "outpost-health-check".into(),
                        engineer_name: String::new(),
                        engineer_regions: Vec::new(),
                        certifications: Vec::new(),
                        credential_expires: 0,
                        pc_region: String::new(),
                        instrument_models: Vec::new(),
                        now: 0,
                        local_minute_of_day: 0,
                        local_weekday: 0,
                        permissions: Vec::new(),
                        pc_holds_patient_data: true,
                    },
                )
                .await
                .map(|_| ()),
        }
    }

    /// Instantiate `m` into `store` without calling it: the per-call fixed
    /// cost, for benchmarks.
    pub async fn instantiate_in(
        &self,
        m: &LoadedModule,
        store: &mut Store<HostState>,
    ) -> Result<(), CallError> {
        let r = match &m.pre {
            WorldPre::Collector(p) => p.instance_pre().instantiate_async(store).await,
            WorldPre::Notifier(p) => p.instance_pre().instantiate_async(store).await,
            WorldPre::SessionPolicy(p) => p.instance_pre().instantiate_async(store).await,
        };
        r.map(|_| ())
            .map_err(|e| CallError::Setup(format!("{e:#}")))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.update(|s| s.closed = true);
    }
}

/// A module's error result as the host keeps it: cut, PHI-checked, escaped.
fn module_error(text: String) -> CallError {
    CallError::Module(
        crate::untrusted::clean(&text, crate::untrusted::MAX_ERROR_TEXT_BYTES).into_owned(),
    )
}

fn policy_permission(
    p: bindings::session_policy::exports::outpost::agent::policy::Permission,
) -> outpost_signing::Permission {
    use bindings::session_policy::exports::outpost::agent::policy::Permission as P;
    match p {
        P::View => outpost_signing::Permission::View,
        P::Control => outpost_signing::Permission::Control,
        P::FileTransfer => outpost_signing::Permission::FileTransfer,
    }
}

/// Turn the outcome of a call into a [`CallError`] that says what happened.
///
/// A call that returned but took longer than its wall-clock budget (a host
/// call that blocked past it) is a [`CallError::WallDeadline`] too: the
/// budget is what the operator granted, whatever the module got done.
fn finish<R>(
    res: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
    store: &Store<HostState>,
    wall_ms: u32,
    started: std::time::Instant,
) -> Result<R, CallError> {
    let data = store.data();
    data.module
        .peak_memory_bytes
        .fetch_max(data.memory.peak, Ordering::Relaxed);
    match res {
        Err(_) => Err(CallError::WallDeadline(wall_ms)),
        Ok(Ok(_)) if started.elapsed() > Duration::from_millis(wall_ms.into()) => {
            Err(CallError::WallDeadline(wall_ms))
        }
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            if data.cpu_exceeded {
                Err(CallError::CpuDeadline(data.module.grant.limits().cpu_ms))
            } else if data.memory.denied {
                Err(CallError::MemoryLimit(
                    data.module.grant.limits().memory_bytes >> 20,
                ))
            } else if let Some(trap) = e.downcast_ref::<Trap>() {
                Err(CallError::Trap(trap.to_string()))
            } else {
                // Host faults (a full resource table, ...) and guest exits:
                // the root cause, not the backtrace context around it. It
                // may quote the module (names from its custom sections).
                let text = e.root_cause().to_string();
                let first = text.lines().next().unwrap_or("");
                Err(CallError::Trap(
                    crate::untrusted::clean(first, crate::untrusted::MAX_ERROR_TEXT_BYTES)
                        .into_owned(),
                ))
            }
        }
    }
}
