//! When the uplink raises a setting problem. The problems themselves are
//! kinds of [`crate::events::Setting`] (`UplinkUnreachable`,
//! `UplinkTlsRefused`, `UplinkRejected`, `UplinkDeadLetter(stream)`,
//! `UplinkGuardRefused(module)`, `UplinkDropped(stream)`, `UplinkSpoolFull`,
//! `UplinkSpoolUnwritable`); each that can go away is resolved with a
//! `HostEvent::SettingResolved` of the same kind.

/// Failed attempts in a row (each after its back-off) before
/// `UplinkUnreachable` or `UplinkTlsRefused` is raised: one lost heartbeat
/// is not worth a notification, three in a row are.
pub const FAILURES_BEFORE_PROBLEM: u32 = 3;
