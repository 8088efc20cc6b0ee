//! The per-call store data: a WASI context that inherits nothing, the network
//! grant, memory and CPU accounting, and the host services a module may reach.

use super::Services;
use super::stdio::{LogStream, Stream};
use crate::grants::Grant;
use crate::net::GrantedHttp;
use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Most wasm tables elements a store may grow to.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// What every call of one module shares (built once at load).
pub struct ModuleCtx {
    /// Module name.
    pub name: Arc<str>,
    /// The grant.
    pub grant: Arc<Grant>,
    /// Host services.
    pub services: Arc<Services>,
    /// Largest linear memory any call of this module has grown to, in bytes.
    pub peak_memory_bytes: std::sync::atomic::AtomicUsize,
}

/// Store data for one call.
pub struct HostState {
    pub(crate) module: Arc<ModuleCtx>,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: GrantedHttp,
    pub(crate) memory: MemoryCap,
    pub(crate) cpu_ticks_used: u64,
    pub(crate) cpu_ticks_max: u64,
    pub(crate) cpu_exceeded: bool,
}

impl HostState {
    /// Fresh store data for one call of `module`.
    ///
    /// The WASI context denies by default: no environment variables, no
    /// arguments, stdin closed, stdout/stderr to the host log tagged with the
    /// module, TCP, UDP and name lookup refused, and preopens only for the
    /// granted logical directories (`/NAME`), read-only.
    pub fn new(module: Arc<ModuleCtx>, cpu_ticks_max: u64) -> std::io::Result<HostState> {
        let grant = &module.grant;
        let mut b = WasiCtxBuilder::new();
        b.stdout(LogStream::new(module.name.clone(), Stream::Stdout))
            .stderr(LogStream::new(module.name.clone(), Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .allow_blocking_current_thread(true);
        for (name, path) in &grant.directories {
            b.preopened_dir(path, format!("/{name}"), FsPerms::ReadOnly)
                .map_err(|e| {
                    std::io::Error::other(format!(
                        "cannot open directory `{name}` ({}): {e}",
                        path.display()
                    ))
                })?;
        }
        let hooks = GrantedHttp::new(
            module.name.clone(),
            grant.endpoints.clone().into(),
            module.services.tls.clone(),
            module.services.events.clone(),
        );
        let memory = MemoryCap::new(grant.limits.memory_bytes);
        Ok(HostState {
            wasi: b.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks,
            memory,
            cpu_ticks_used: 0,
            cpu_ticks_max,
            cpu_exceeded: false,
            module,
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Memory limiter that remembers whether it refused a growth, so a failed
/// call can be reported as "memory limit" rather than a bare trap.
pub struct MemoryCap {
    max_bytes: usize,
    pub(crate) denied: bool,
    /// Largest memory size granted during this call.
    pub(crate) peak: usize,
}

impl MemoryCap {
    fn new(max_bytes: usize) -> Self {
        MemoryCap {
            max_bytes,
            denied: false,
            peak: 0,
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
