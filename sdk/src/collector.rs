//! The `collector` world's export: a trait and its export macro.

use crate::bindings::collector::exports::outpost::agent::collect as wit;

/// Why the host called [`Collector::collect`]: schedule, file change or startup.
pub use wit::Trigger;

/// What one collection pass did (counts only).
pub use wit::CollectReport;

/// A collector module: the host calls [`collect`](Collector::collect) on its
/// schedule, each time in a fresh sandbox. Export an implementation with
/// [`export_collector!`](crate::export_collector).
///
/// ```
/// use outpost_sdk::{CollectReport, Collector, Trigger};
///
/// struct Mine;
///
/// impl Collector for Mine {
///     fn collect(_trigger: Trigger) -> Result<CollectReport, String> {
///         outpost_sdk::log::info("collecting");
///         Ok(CollectReport::empty())
///     }
/// }
///
/// outpost_sdk::export_collector!(Mine);
/// ```
pub trait Collector {
    /// Run one collection pass: read granted directories, queue records on the
    /// uplink, and report the counts. An `Err` is logged by the host and counts
    /// as a failed call.
    fn collect(trigger: Trigger) -> Result<CollectReport, String>;
}

impl CollectReport {
    /// A report with all counts zero.
    pub fn empty() -> Self {
        CollectReport {
            files_scanned: 0,
            records_queued: 0,
            malformed: 0,
        }
    }
}

/// Export a type implementing [`Collector`] as this component's
/// `outpost:agent/collect` implementation. Use once, at the crate root of a
/// `cdylib` built for `wasm32-wasip2`.
#[macro_export]
macro_rules! export_collector {
    ($ty:ty) => {
        const _: () = {
            // Unused in native builds, where nothing is exported.
            #[allow(dead_code)]
            struct __OutpostCollectorExport;

            impl $crate::__private::collector::exports::outpost::agent::collect::Guest
                for __OutpostCollectorExport
            {
                fn collect(
                    trigger: $crate::Trigger,
                ) -> ::core::result::Result<$crate::CollectReport, ::std::string::String> {
                    <$ty as $crate::Collector>::collect(trigger)
                }
            }

            // Component export names (`outpost:agent/...#...`) are not valid
            // native symbol names: export only when building the component.
            #[cfg(target_arch = "wasm32")]
            $crate::__private::collector::export_collector_world!(
                __OutpostCollectorExport with_types_in $crate::__private::collector
            );
        };
    };
}
