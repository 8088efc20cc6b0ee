//! The per-call store data: a WASI context that inherits nothing, the network
//! grant, memory and CPU accounting, and the host services a module may reach.

use super::Services;
use super::stdio::{LogStream, ModuleOutput, OutputBudget, SharedBudget, Stream};
use crate::grants::Grant;
use crate::net::GrantedHttp;
use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Most wasm table elements a store may hold, over all its tables.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Most host-side resources (open files and directories, streams,
/// pollables, wasi:http requests, header maps, bodies) one call may hold at
/// once. Each open file is a descriptor of the host process, so this also
/// caps the descriptors a module can take from the others.
pub const MAX_HOST_RESOURCES_PER_CALL: usize = 128;
/// Most bytes one wasi:http header map (`fields`) may hold in memory. With
/// [`MAX_HOST_RESOURCES_PER_CALL`], header maps of one call stay under 2 MiB.
pub const MAX_HTTP_FIELDS_BYTES: usize = 16 * 1024;

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
    /// Output budget per minute and what was cut, across calls.
    pub output: Arc<ModuleOutput>,
}

/// Store data for one call.
pub struct HostState {
    pub(crate) module: Arc<ModuleCtx>,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: GrantedHttp,
    pub(crate) output: SharedBudget,
    pub(crate) memory: MemoryCap,
    pub(crate) cpu_ticks_used: u64,
    pub(crate) cpu_ticks_max: u64,
    pub(crate) cpu_exceeded: bool,
    /// Notification raises and clears made in this call.
    pub(crate) notify_changes: u32,
    /// The module said more input is waiting (`uplink.backlog-waiting`).
    pub(crate) backlog_waiting: bool,
    /// The warning, error and critical events of the batches queued in
    /// this call, one per instrument and code (`runtime::host::batch_alerts`):
    /// raised as alerts when the call ends, whatever its outcome.
    pub(crate) alerts: Vec<super::bindings::uplink::InstrumentEvent>,
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
        let output = OutputBudget::new(module.name.clone(), module.output.clone());
        let mut b = WasiCtxBuilder::new();
        b.stdout(LogStream::new(output.clone(), Stream::Stdout))
            .stderr(LogStream::new(output.clone(), Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        // Not `allow_blocking_current_thread`: file calls then run on the
        // async worker itself, and a FIFO or a stalled network share in a
        // granted folder blocks that worker — the wall-clock timeout never
        // fires and every other module on it stops. File calls go to tokio's
        // blocking pool instead (a few tens of µs each).
        for (name, path) in grant.directories() {
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
            grant.endpoints().into(),
            module.services.tls.clone(),
            module.services.events.clone(),
        );
        let memory = MemoryCap::new(grant.limits().memory_bytes);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HOST_RESOURCES_PER_CALL);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_HTTP_FIELDS_BYTES);
        Ok(HostState {
            wasi: b.build(),
            table,
            http,
            hooks,
            output,
            memory,
            cpu_ticks_used: 0,
            cpu_ticks_max,
            cpu_exceeded: false,
            notify_changes: 0,
            backlog_waiting: false,
            alerts: Vec::new(),
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

/// The store's limiter: linear memory and table elements are counted per
/// call over every memory and table of the component together (a component
/// may hold several core instances, each with its own memories), so a module
/// with eight memories gets its grant once, not eight times. Remembers
/// whether it refused a growth, so a failed call can be reported as "memory
/// limit" rather than a bare trap.
pub struct MemoryCap {
    max_bytes: usize,
    /// Bytes of all linear memories of the store together.
    total_bytes: usize,
    /// Elements of all tables of the store together.
    total_elements: usize,
    /// The growth just allowed, taken back if the allocation then fails.
    pending: Pending,
    pub(crate) denied: bool,
    /// Largest total memory granted during this call.
    pub(crate) peak: usize,
}

#[derive(Clone, Copy)]
enum Pending {
    None,
    Memory(usize),
    Table(usize),
}

impl MemoryCap {
    pub(crate) fn new(max_bytes: usize) -> Self {
        MemoryCap {
            max_bytes,
            total_bytes: 0,
            total_elements: 0,
            pending: Pending::None,
            denied: false,
            peak: 0,
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Called with `current == 0` when a memory is created.
        let added = desired.saturating_sub(current);
        let total = self.total_bytes.saturating_add(added);
        if total > self.max_bytes {
            self.denied = true;
            self.pending = Pending::None;
            return Ok(false);
        }
        self.total_bytes = total;
        self.pending = Pending::Memory(added);
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        if let Pending::Memory(added) = std::mem::replace(&mut self.pending, Pending::None) {
            self.total_bytes -= added;
        }
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let added = desired.saturating_sub(current);
        let total = self.total_elements.saturating_add(added);
        if total > MAX_TABLE_ELEMENTS {
            self.pending = Pending::None;
            return Ok(false);
        }
        self.total_elements = total;
        self.pending = Pending::Table(added);
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        if let Pending::Table(added) = std::mem::replace(&mut self.pending, Pending::None) {
            self.total_elements -= added;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_count_together() {
        let mut cap = MemoryCap::new(10 << 20);
        // Two memories created at 4 MiB each: 8 MiB in all.
        assert!(cap.memory_growing(0, 4 << 20, None).unwrap());
        assert!(cap.memory_growing(0, 4 << 20, None).unwrap());
        // Growing the first by 4 MiB more would make 12 MiB: refused.
        assert!(!cap.memory_growing(4 << 20, 8 << 20, None).unwrap());
        assert!(cap.denied);
        // A growth allowed and then failed by the allocator is taken back.
        assert!(cap.memory_growing(4 << 20, 6 << 20, None).unwrap());
        cap.memory_grow_failed(wasmtime::Error::msg("slot"))
            .unwrap();
        assert!(cap.memory_growing(4 << 20, 6 << 20, None).unwrap());
        assert_eq!(cap.peak, 10 << 20);
        assert!(cap.table_growing(0, MAX_TABLE_ELEMENTS / 2, None).unwrap());
        assert!(cap.table_growing(0, MAX_TABLE_ELEMENTS / 2, None).unwrap());
        assert!(!cap.table_growing(0, 1, None).unwrap());
    }
}
