//! The host's metrics, in the Prometheus text format (`/metrics` on the
//! local API): module calls and failures, call duration, instantiation
//! time, API requests; and, read at each scrape, the spool's depth and its
//! counters (bytes sent, delivered, dropped, PHI-guard refusals), the dead
//! letters held (`uplink_dead_letters{source}`), active
//! notifications, module text withheld, idle trims and the process's
//! resident memory. Names and labels only — never a payload.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the call-duration histogram buckets.
const CALL_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Upper bounds (seconds) of the instantiation histogram buckets.
const INSTANTIATE_BUCKETS: [f64; 8] = [
    0.000_005, 0.00001, 0.000_025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    module: String,
    call: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    module: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

/// The host's metrics (one per process, shared by the runtime and the API).
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<ModuleLabels, Histogram>,
    instantiate_seconds: Histogram,
    api_requests: Family<OutcomeLabels, Counter>,
    spool_batches: Gauge,
    spool_bytes: Gauge,
    uplink: Family<NameLabels, Gauge>,
    dead_letters: Family<SourceLabels, Gauge>,
    notifications_active: Gauge,
    module_text_withheld: Gauge,
    idle_trims: Gauge,
    resident_bytes: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty metrics, registered under `outpost_`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("outpost");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "module_calls",
            "Module calls by module, call and outcome (ok or the failure kind)",
            calls.clone(),
        );
        let call_seconds = Family::<ModuleLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(CALL_BUCKETS)
        });
        registry.register(
            "module_call_seconds",
            "Duration of module calls, instantiation included",
            call_seconds.clone(),
        );
        let instantiate_seconds = Histogram::new(INSTANTIATE_BUCKETS);
        registry.register(
            "instantiate_seconds",
            "Time to instantiate a module for one call",
            instantiate_seconds.clone(),
        );
        let api_requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Local API requests by outcome (ok, error, refused-host, refused-auth, refused-origin, refused-method)",
            api_requests.clone(),
        );
        let spool_batches = Gauge::default();
        registry.register(
            "spool_batches",
            "Sealed batches waiting for the cloud",
            spool_batches.clone(),
        );
        let spool_bytes = Gauge::default();
        registry.register(
            "spool_bytes",
            "Bytes of sealed batches waiting for the cloud",
            spool_bytes.clone(),
        );
        let uplink = Family::<NameLabels, Gauge>::default();
        registry.register(
            "uplink_counter",
            "The uplink's persisted counters (queued, delivered, bytes-sent, dropped:<stream>, guard-refused, spool-full, ...), since the state directory was made",
            uplink.clone(),
        );
        let dead_letters = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "uplink_dead_letters",
            "Dead letters held now (outpost uplink dead-letters): records the PHI guard refused (source=guard), batches the cloud refused (source=cloud)",
            dead_letters.clone(),
        );
        let notifications_active = Gauge::default();
        registry.register(
            "notifications_active",
            "Active notifications",
            notifications_active.clone(),
        );
        let module_text_withheld = Gauge::default();
        registry.register(
            "module_text_withheld",
            "Module texts (errors, log lines, notification texts) the PHI guard withheld since start",
            module_text_withheld.clone(),
        );
        let idle_trims = Gauge::default();
        registry.register(
            "idle_trims",
            "Times the idle host handed back memory it did not need (trim.rs) since start",
            idle_trims.clone(),
        );
        let resident_bytes = Gauge::default();
        registry.register(
            "process_resident_bytes",
            "Resident memory of the host process (VmRSS on Linux, the working set on Windows)",
            resident_bytes.clone(),
        );
        Metrics {
            registry,
            calls,
            call_seconds,
            instantiate_seconds,
            api_requests,
            spool_batches,
            spool_bytes,
            uplink,
            dead_letters,
            notifications_active,
            module_text_withheld,
            idle_trims,
            resident_bytes,
        }
    }

    /// A module call ended: `outcome` is `ok` or the failure kind.
    pub fn call(&self, module: &str, call: &str, outcome: &str, seconds: f64) {
        self.calls
            .get_or_create(&CallLabels {
                module: module.to_owned(),
                call: call.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.call_seconds
            .get_or_create(&ModuleLabels {
                module: module.to_owned(),
            })
            .observe(seconds);
    }

    /// One instantiation took `seconds`.
    pub fn instantiated(&self, seconds: f64) {
        self.instantiate_seconds.observe(seconds);
    }

    /// One API request ended with `outcome`.
    pub fn api_request(&self, outcome: &str) {
        self.api_requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the gauges read from `services` now.
    pub fn render(&self, services: &crate::runtime::Services) -> String {
        if let Ok((batches, bytes)) = services.spool.pending() {
            self.spool_batches.set(batches as i64);
            self.spool_bytes.set(bytes as i64);
        }
        if let Ok(counters) = services.spool.counters() {
            for (name, value) in counters {
                self.uplink
                    .get_or_create(&NameLabels { name })
                    .set(value as i64);
            }
        }
        if let Ok((guard, cloud)) = services.spool.dead_letters().counts() {
            for (source, n) in [("guard", guard), ("cloud", cloud)] {
                self.dead_letters
                    .get_or_create(&SourceLabels { source })
                    .set(n as i64);
            }
        }
        if let Ok(active) = services.notifications.active(None) {
            self.notifications_active.set(active.len() as i64);
        }
        self.module_text_withheld
            .set(crate::untrusted::withheld_total() as i64);
        self.idle_trims.set(crate::trim::trims_total() as i64);
        if let Some(b) = crate::trim::resident_bytes() {
            self.resident_bytes.set(b as i64);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
