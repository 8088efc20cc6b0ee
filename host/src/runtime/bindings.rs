//! Host bindings generated from `wit/` (the single WIT source).
//!
//! One `bindgen!` per world. The collector's generates the shared `outpost:agent`
//! interfaces; the other worlds reuse them through `with`, so each host trait is
//! implemented once. WASI and wasi:http map to wasmtime-wasi's own bindings.
#![allow(missing_docs, clippy::all)]

pub mod collector {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "outpost:agent/collector",
        imports: { default: trappable },
        exports: { default: async },
        require_store_data_send: true,
        additional_derives: [serde::Serialize],
        with: {
            "wasi": wasmtime_wasi::p2::bindings,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        },
    });
}

pub mod notifier {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "outpost:agent/notifier",
        imports: { default: trappable },
        exports: { default: async },
        require_store_data_send: true,
        additional_derives: [serde::Serialize],
        with: {
            "wasi": wasmtime_wasi::p2::bindings,
            "outpost:agent/types": super::collector::outpost::agent::types,
            "outpost:agent/host-info": super::collector::outpost::agent::host_info,
            "outpost:agent/log": super::collector::outpost::agent::log,
            "outpost:agent/state": super::collector::outpost::agent::state,
        },
    });
}

pub mod session_policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "outpost:agent/session-policy",
        imports: { default: trappable },
        exports: { default: async },
        require_store_data_send: true,
        additional_derives: [serde::Serialize],
        with: {
            "wasi": wasmtime_wasi::p2::bindings,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "outpost:agent/types": super::collector::outpost::agent::types,
            "outpost:agent/host-info": super::collector::outpost::agent::host_info,
            "outpost:agent/log": super::collector::outpost::agent::log,
            "outpost:agent/state": super::collector::outpost::agent::state,
        },
    });
}

pub use collector::outpost::agent::{host_info, log, state, types, uplink};
pub use notifier::exports::outpost::agent::notify_handler;
pub use notifier::outpost::agent::{host_events, notify};
