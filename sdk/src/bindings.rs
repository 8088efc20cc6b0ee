//! Generated bindings. Not part of the public API: module authors use the
//! hand-written wrappers at the crate root. Public (but hidden) only because the
//! export macros expand in the module's crate and must reach these paths.
//!
//! Layout: the interfaces every world shares are generated once, in [`wasi`]
//! (the WASI sandbox baseline plus `wasi:http/outgoing-handler`) and [`agent`]
//! (`outpost:agent` types, host-info, log, state). Each world's own bindings,
//! behind its cargo feature, remap those shared interfaces with `with:` and
//! generate only what is unique to the world. Unused imports are dropped by
//! `wit-component` when the component is built, so a module's component imports
//! only what its code calls.

/// WASI 0.2 interfaces of the `sandbox` world and `wasi:http/outgoing-handler`.
pub mod wasi {
    wit_bindgen::generate!({
        path: "../wit",
        inline: "
            package outpost:sdk-wasi;
            world wasi-imports {
                include outpost:agent/sandbox@0.3.0;
                import wasi:http/outgoing-handler@0.2.12;
            }
        ",
        world: "outpost:sdk-wasi/wasi-imports",
        generate_all,
    });
}

/// `outpost:agent` interfaces every world imports.
pub mod agent {
    wit_bindgen::generate!({
        path: "../wit",
        inline: "
            package outpost:sdk-agent;
            world agent-imports {
                import outpost:agent/host-info@0.3.0;
                import outpost:agent/log@0.3.0;
                import outpost:agent/state@0.3.0;
            }
        ",
        world: "outpost:sdk-agent/agent-imports",
        generate_all,
        additional_derives: [PartialEq, Eq],
    });
}

/// Generates one world's bindings, remapping the shared interfaces.
/// (Unused when the crate is built with no world feature, as a bare
/// `cargo check` of the workspace for another target does.)
#[allow(unused_macros)]
macro_rules! generate_world {
    ($world:literal, $export_macro:literal, $module:literal, { $($extra:tt)* }) => {
        wit_bindgen::generate!({
            path: "../wit",
            world: $world,
            with: {
                "wasi:cli/environment@0.2.12": crate::bindings::wasi::wasi::cli::environment,
                "wasi:cli/exit@0.2.12": crate::bindings::wasi::wasi::cli::exit,
                "wasi:cli/stdin@0.2.12": crate::bindings::wasi::wasi::cli::stdin,
                "wasi:cli/stdout@0.2.12": crate::bindings::wasi::wasi::cli::stdout,
                "wasi:cli/stderr@0.2.12": crate::bindings::wasi::wasi::cli::stderr,
                "wasi:clocks/monotonic-clock@0.2.12": crate::bindings::wasi::wasi::clocks::monotonic_clock,
                "wasi:clocks/wall-clock@0.2.12": crate::bindings::wasi::wasi::clocks::wall_clock,
                "wasi:random/random@0.2.12": crate::bindings::wasi::wasi::random::random,
                "wasi:io/error@0.2.12": crate::bindings::wasi::wasi::io::error,
                "wasi:io/poll@0.2.12": crate::bindings::wasi::wasi::io::poll,
                "wasi:io/streams@0.2.12": crate::bindings::wasi::wasi::io::streams,
                "wasi:filesystem/types@0.2.12": crate::bindings::wasi::wasi::filesystem::types,
                "wasi:filesystem/preopens@0.2.12": crate::bindings::wasi::wasi::filesystem::preopens,
                "wasi:sockets/network@0.2.12": crate::bindings::wasi::wasi::sockets::network,
                "wasi:sockets/instance-network@0.2.12": crate::bindings::wasi::wasi::sockets::instance_network,
                "wasi:sockets/tcp-create-socket@0.2.12": crate::bindings::wasi::wasi::sockets::tcp_create_socket,
                "wasi:sockets/tcp@0.2.12": crate::bindings::wasi::wasi::sockets::tcp,
                "wasi:sockets/udp-create-socket@0.2.12": crate::bindings::wasi::wasi::sockets::udp_create_socket,
                "wasi:sockets/udp@0.2.12": crate::bindings::wasi::wasi::sockets::udp,
                "wasi:sockets/ip-name-lookup@0.2.12": crate::bindings::wasi::wasi::sockets::ip_name_lookup,
                "outpost:agent/types@0.3.0": crate::bindings::agent::outpost::agent::types,
                "outpost:agent/host-info@0.3.0": crate::bindings::agent::outpost::agent::host_info,
                "outpost:agent/log@0.3.0": crate::bindings::agent::outpost::agent::log,
                "outpost:agent/state@0.3.0": crate::bindings::agent::outpost::agent::state,
                $($extra)*
            },
            generate_all,
            additional_derives: [PartialEq, Eq],
            pub_export_macro: true,
            export_macro_name: $export_macro,
            default_bindings_module: $module,
        });
    };
}

/// Bindings of the `collector` world.
#[cfg(feature = "collector")]
pub mod collector {
    generate_world!("outpost:agent/collector@0.3.0", "export_collector_world", "outpost_sdk::bindings::collector", {
        "wasi:http/types@0.2.12": crate::bindings::wasi::wasi::http::types,
        "wasi:http/outgoing-handler@0.2.12": crate::bindings::wasi::wasi::http::outgoing_handler,
    });
}

/// Bindings of the `notifier` world.
#[cfg(feature = "notifier")]
pub mod notifier {
    generate_world!(
        "outpost:agent/notifier@0.3.0",
        "export_notifier_world",
        "outpost_sdk::bindings::notifier",
        {}
    );
}

/// Bindings of the `session-policy` world.
#[cfg(feature = "session-policy")]
pub mod session_policy {
    generate_world!("outpost:agent/session-policy@0.3.0", "export_session_policy_world", "outpost_sdk::bindings::session_policy", {
        "wasi:http/types@0.2.12": crate::bindings::wasi::wasi::http::types,
        "wasi:http/outgoing-handler@0.2.12": crate::bindings::wasi::wasi::http::outgoing_handler,
    });
}
