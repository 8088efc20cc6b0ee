//! Queue typed device records for upload (`outpost:agent/uplink`, collector world).
//!
//! The host checks each batch for patient data, seals it with the device key and
//! uploads it; a module never sees a key or a connection. Only the typed records
//! below can be queued.

use crate::bindings::collector::outpost::agent::uplink as wit;

/// One record of a batch: one of the typed device-data arms below.
pub use wit::Record;

/// A quality-control or calibration result (never a patient sample).
pub use wit::QcResult;

/// A maintenance action recorded by the instrument or operator software.
pub use wit::MaintenanceEvent;

/// An event the instrument or its software reported.
pub use wit::InstrumentEvent;

/// Version and install state of one software component.
pub use wit::SoftwareStatus;

/// Install state of a software component.
pub use wit::InstallState;

/// Online status ping.
pub use wit::Heartbeat;

/// Why a batch was not queued (nothing of it was queued).
pub use wit::UplinkError;

/// Queue `batch` on `stream` (a stream the module's grant names). Returns the
/// batch's sequence number once it is durably stored on the PC.
pub fn enqueue(stream: &str, batch: &[Record]) -> Result<u64, UplinkError> {
    wit::enqueue(stream, batch)
}

/// One entry of the module's own state, written with a batch.
pub use wit::StateEntry;

/// Queue `batch` on `stream` and set the state entry `key` = `value` in the
/// same durable transaction (for example the cursor saying how far the
/// batch's input file was read): after a crash either both happened or
/// neither, so a restarted module neither re-sends nor skips.
pub fn enqueue_with_state(
    stream: &str,
    batch: &[Record],
    key: &str,
    value: &[u8],
) -> Result<u64, UplinkError> {
    wit::enqueue_with_state(
        stream,
        batch,
        &StateEntry {
            key: key.to_owned(),
            value: value.to_vec(),
        },
    )
}

/// Tell the host that this call stopped before it read all the input
/// waiting (a per-call budget ran out): the host calls `collect` again at
/// once, within the operator's CPU share for draining, instead of after the
/// collection interval.
pub fn backlog_waiting() {
    wit::backlog_waiting()
}
