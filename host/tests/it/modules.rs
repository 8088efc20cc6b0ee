//! The workspace's three modules, loaded from their own manifests and called.

use super::harness::{batch_json, env, permissive};
use outpost_host::grants::Grant;
use outpost_host::runtime::LoadedModule;
use outpost_host::runtime::bindings::collector::exports::outpost::agent::collect::Trigger;
use outpost_host::runtime::bindings::host_events::HostEvent as WitEvent;
use outpost_host::runtime::bindings::session_policy::exports::outpost::agent::policy::{
    Permission, SupportRequest,
};
use outpost_signing::Manifest;
use std::sync::Arc;

fn load_own(wasm: &'static str, manifest: &str) -> Arc<LoadedModule> {
    let e = env();
    let m = Manifest::from_toml(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    let verified = e.verified(wasm, &m);
    let grant = Grant::new(&verified, &[&permissive(&m)], &e.dirs()).unwrap();
    Arc::new(e.runtime.load(&verified, grant).unwrap())
}

#[test]
fn collector_queues_heartbeats_and_new_log_events_once() {
    let e = env();
    let m = load_own(
        outpost_artifacts::COLLECTOR,
        outpost_artifacts::COLLECTOR_MANIFEST,
    );
    let log = e.root.join("instrument-logs/collector-test.log");
    std::fs::write(
        &log,
        "2026-11-01 10:00:01 ERROR E-1203 aspiration failure\n",
    )
    .unwrap();
    let before = e.runtime.services().spool.list().unwrap().len();
    let r1 =
        e.rt.block_on(e.runtime.collect(&m, Trigger::Startup))
            .unwrap();
    assert!(r1.files_scanned >= 2, "{r1:?}");
    assert!(
        r1.records_queued >= 2,
        "a heartbeat and the error line: {r1:?}"
    );
    let batches = e.runtime.services().spool.list().unwrap();
    let new: Vec<_> = batches[before..]
        .iter()
        .filter(|b| b.module == "collector")
        .collect();
    assert!(new.iter().any(|b| b.stream == "heartbeat"));
    let event_bodies: Vec<String> = new
        .iter()
        .filter(|b| b.stream == "events")
        .map(|b| batch_json(b.seq))
        .collect();
    assert!(
        event_bodies.iter().any(|b| b.contains("E-1203")),
        "{event_bodies:?}"
    );

    // Second pass: the cursor means the same line is not queued again.
    let before = e.runtime.services().spool.list().unwrap().len();
    e.rt.block_on(e.runtime.collect(&m, Trigger::Schedule))
        .unwrap();
    let again = e.runtime.services().spool.list().unwrap();
    assert!(
        again[before..]
            .iter()
            .all(|b| { b.stream != "events" || !batch_json(b.seq).contains("E-1203") })
    );
}

#[test]
fn notifier_turns_host_events_into_notifications() {
    let e = env();
    let m = load_own(
        outpost_artifacts::NOTIFIER,
        outpost_artifacts::NOTIFIER_MANIFEST,
    );
    let centre = &e.runtime.services().notifications;
    e.rt.block_on(
        e.runtime
            .on_event(&m, WitEvent::ModuleQuarantined("flaky".into())),
    )
    .unwrap();
    let active = centre.active(Some("notifier")).unwrap();
    let n = active
        .iter()
        .find(|n| n.key == "module:flaky")
        .expect("raised");
    assert_eq!(n.severity, "error");
    e.rt.block_on(
        e.runtime
            .on_event(&m, WitEvent::ModuleRecovered("flaky".into())),
    )
    .unwrap();
    assert!(
        centre
            .active(Some("notifier"))
            .unwrap()
            .iter()
            .all(|n| n.key != "module:flaky")
    );
}

/// The module decides from the request; the patient-data rule is the
/// host's (`it::supervisor`, `it::updates::patient_data_*`), so the module
/// itself offers what was asked either way.
#[test]
fn session_policy_offers_what_was_asked_and_denies_an_anonymous_request() {
    let e = env();
    let m = load_own(
        outpost_artifacts::SESSION_POLICY,
        outpost_artifacts::SESSION_POLICY_MANIFEST,
    );
    let ask = |holds: bool| SupportRequest {
        engineer_id: "engineer@vendor.example".into(),
        engineer_name: "Ada".into(),
        engineer_regions: vec!["eu".into()],
        certifications: vec!["privacy-training".into()],
        credential_expires: i64::MAX,
        pc_region: "eu".into(),
        instrument_models: Vec::new(),
        now: 0,
        local_minute_of_day: 600,
        local_weekday: 0,
        permissions: vec![Permission::View, Permission::FileTransfer],
        pc_holds_patient_data: holds,
    };
    for holds in [true, false] {
        let d = e.rt.block_on(e.runtime.evaluate(&m, ask(holds))).unwrap();
        assert!(d.allow, "{}", d.reason);
        assert_eq!(d.offer, vec![Permission::View, Permission::FileTransfer]);
    }
    let anonymous = SupportRequest {
        engineer_id: String::new(),
        ..ask(false)
    };
    let d = e.rt.block_on(e.runtime.evaluate(&m, anonymous)).unwrap();
    assert!(!d.allow && d.offer.is_empty());
}

#[test]
fn a_resolved_setting_clears_the_notification_it_raised() {
    use outpost_host::runtime::bindings::host_events::SettingProblem;
    use outpost_host::runtime::bindings::types::Severity;
    let e = env();
    let m = load_own(
        outpost_artifacts::NOTIFIER,
        outpost_artifacts::NOTIFIER_MANIFEST,
    );
    let centre = &e.runtime.services().notifications;
    let code = outpost_host::events::Setting::UplinkTlsRefused.code();
    e.rt.block_on(e.runtime.on_event(
        &m,
        WitEvent::SettingProblem(SettingProblem {
            code: code.clone(),
            severity: Severity::Error,
            text: "server reached, TLS refused".into(),
        }),
    ))
    .unwrap();
    let key = format!("setting:{code}");
    let active = centre.active(Some("notifier")).unwrap();
    let n = active.iter().find(|n| n.key == key).expect("raised");
    assert_eq!(n.severity, "error", "at the host's severity");
    e.rt.block_on(e.runtime.on_event(&m, WitEvent::SettingResolved(code)))
        .unwrap();
    let active = centre.active(Some("notifier")).unwrap();
    assert!(active.iter().all(|n| n.key != key), "cleared: {active:?}");
    assert!(
        active.iter().all(|n| !n.key.contains("recovered")),
        "no notification about the recovery itself: {active:?}"
    );
}

#[test]
fn notification_changes_go_out_as_device_status_without_the_body() {
    let e = env();
    let m = load_own(
        outpost_artifacts::NOTIFIER,
        outpost_artifacts::NOTIFIER_MANIFEST,
    );
    let spool = &e.runtime.services().spool;
    let before = spool.list().unwrap().last().map(|b| b.seq).unwrap_or(0);
    e.rt.block_on(
        e.runtime
            .on_event(&m, WitEvent::ModuleQuarantined("status-probe".into())),
    )
    .unwrap();
    e.rt.block_on(
        e.runtime
            .on_event(&m, WitEvent::ModuleRecovered("status-probe".into())),
    )
    .unwrap();
    let mine: Vec<String> = spool
        .list()
        .unwrap()
        .into_iter()
        .filter(|b| b.seq > before && b.stream == "notifications")
        .map(|b| batch_json(b.seq))
        .filter(|json| json.contains("module:status-probe"))
        .collect();
    assert_eq!(mine.len(), 2, "raised and cleared: {mine:?}");
    assert!(
        mine[0].contains("\"kind\":\"notification\"") && mine[0].contains("\"state\":\"raised\"")
    );
    assert!(
        mine[0].contains("Module status-probe stopped"),
        "the title goes out"
    );
    assert!(
        !mine[0].contains("quarantined. Contact"),
        "the body does not"
    );
    assert!(mine[1].contains("\"state\":\"cleared\"") && mine[1].contains("\"by\":\"module\""));
}
