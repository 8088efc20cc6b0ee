//! The `notifier` world's export: a trait and its export macro.

use crate::bindings::notifier::outpost::agent::host_events as wit;

/// A host-side happening the user may need to hear about.
pub use wit::HostEvent;

/// Details of a failed module call.
pub use wit::ModuleFailure;

/// A settings problem found by the host.
pub use wit::SettingProblem;

/// An instrument event worth telling the user about.
pub use wit::InstrumentAlert;

/// A module update that can be installed.
pub use wit::UpdateOffer;

/// An update the host took back.
pub use wit::UpdateRollback;

/// A notifier module: turns host events into notifications. Export an
/// implementation with [`export_notifier!`](crate::export_notifier).
pub trait Notifier {
    /// Handle one host event, typically with [`notify::raise`](crate::notify::raise)
    /// or [`notify::clear`](crate::notify::clear).
    fn on_event(event: HostEvent) -> Result<(), String>;
}

/// Export a type implementing [`Notifier`] as this component's
/// `outpost:agent/notify-handler` implementation.
#[macro_export]
macro_rules! export_notifier {
    ($ty:ty) => {
        const _: () = {
            // Unused in native builds, where nothing is exported.
            #[allow(dead_code)]
            struct __OutpostNotifierExport;

            impl $crate::__private::notifier::exports::outpost::agent::notify_handler::Guest
                for __OutpostNotifierExport
            {
                fn on_event(
                    event: $crate::HostEvent,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    <$ty as $crate::Notifier>::on_event(event)
                }
            }

            // Component export names (`outpost:agent/...#...`) are not valid
            // native symbol names: export only when building the component.
            #[cfg(target_arch = "wasm32")]
            $crate::__private::notifier::export_notifier_world!(
                __OutpostNotifierExport with_types_in $crate::__private::notifier
            );
        };
    };
}
