//! The supervisor restarts a failing module with back-off, quarantines it after
//! repeated failures, and keeps the other modules running.

use super::harness::{OFFLINE_UPLINK, env, offline_identity, path};
use outpost_host::agent::Agent;
use outpost_host::config::Config;
use outpost_host::events::{Events, HostEvent};
use outpost_host::store::Db;
use outpost_host::store::state::ModuleState;
use outpost_host::supervisor::Supervisor;

#[test]
fn repeated_failure_quarantines_while_others_carry_on() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    // Every module file is signed by the test publisher; the flaky one is the
    // escapes fixture under its own name, set to panic on every call.
    let sign_to = |wasm: &'static str, manifest_text: String, file: &str| {
        let m = outpost_signing::Manifest::from_toml(&manifest_text).unwrap();
        let p = dir.path().join(file);
        std::fs::write(&p, e.signed(wasm, &m)).unwrap();
        path(&p)
    };
    let flaky = sign_to(
        outpost_artifacts::FIXTURE_ESCAPES,
        std::fs::read_to_string(outpost_artifacts::FIXTURE_ESCAPES_MANIFEST)
            .unwrap()
            .replace("name = \"fixture-escapes\"", "name = \"flaky\"")
            .replace("endpoints = []", "endpoints = [\"unused.invalid:443\"]"),
        "flaky.wasm",
    );
    let collector = sign_to(
        outpost_artifacts::COLLECTOR,
        std::fs::read_to_string(outpost_artifacts::COLLECTOR_MANIFEST).unwrap(),
        "collector.wasm",
    );
    let notifier = sign_to(
        outpost_artifacts::NOTIFIER,
        std::fs::read_to_string(outpost_artifacts::NOTIFIER_MANIFEST).unwrap(),
        "notifier.wasm",
    );
    let config_path = dir.path().join("outpost.toml");
    let text = format!(
        r#"
state-dir = "state"
[directories]
instrument-logs = "{logs}"
missing = "{missing}"
[policy]
directories = ["instrument-logs"]
endpoints = ["unused.invalid:443"]
uplink-streams = ["heartbeat", "events", "qc", "maintenance", "software"]
notify = true
max-state-quota-bytes = 1048576
[supervisor]
collect-interval-secs = 3600
max-consecutive-failures = 3
backoff-initial-ms = 10
backoff-max-ms = 40
[[trust.keys]]
name = "test-publisher"
public-key = "{key}"
[[module]]
name = "flaky"
file = "{flaky}"
[[module]]
name = "collector"
file = "{collector}"
[[module]]
name = "notifier"
file = "{notifier}"
{OFFLINE_UPLINK}"#,
        logs = path(&e.root.join("instrument-logs")),
        key = outpost_signing::public_key_to_hex(&e.key.verifying_key()),
        missing = path(&dir.path().join("no-such-folder")),
    );
    std::fs::write(&config_path, text).unwrap();
    let config = Config::load(&config_path).unwrap();
    offline_identity(&config.state_dir);
    ModuleState::new(Db::open(&config.state_dir).unwrap(), "flaky", 65536)
        .set("escape", b"panic")
        .unwrap();

    e.rt.block_on(async {
        let events = Events::default();
        let mut rx = events.subscribe();
        let agent = Agent::build(config, events.clone()).unwrap();
        assert!(agent.refused.is_empty(), "{:?}", agent.refused);
        let sup = Supervisor::start(&agent, events);
        let mut flaky = Vec::new();
        let mut collector_ok = false;
        let mut notified = false;
        let mut setting_notified = false;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while !(collector_ok
            && notified
            && setting_notified
            && flaky.contains(&"module-quarantined"))
        {
            let ev = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("events in time")
                .unwrap();
            match &ev {
                ev if ev.module() == Some("flaky") => flaky.push(ev.kind()),
                HostEvent::CallSucceeded { module, call, .. }
                    if module == "collector" && call == "collect" =>
                {
                    collector_ok = true
                }
                HostEvent::NotificationRaised { module, key, .. }
                    if module == "notifier" && key == "module:flaky" =>
                {
                    notified = true
                }
                // Found before the notifier ran, handed to it at start.
                HostEvent::NotificationRaised { module, key, .. }
                    if module == "notifier" && key == "setting:directory-missing:missing" =>
                {
                    setting_notified = true
                }
                _ => {}
            }
        }
        assert_eq!(
            flaky,
            [
                "module-ready",
                "module-failed",
                "module-restarting",
                "module-failed",
                "module-restarting",
                "module-failed",
                "module-quarantined"
            ]
        );
        let health = sup.health();
        assert!(health["flaky"].quarantined);
        assert_eq!(health["flaky"].calls_failed, 3);
        assert!(health["collector"].calls_ok >= 1);
        // Quarantined means no further calls.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(sup.health()["flaky"].calls_failed, 3);
        // The notifier's notification about the quarantine is in the centre.
        let active = agent
            .runtime
            .services()
            .notifications
            .active(Some("notifier"))
            .unwrap();
        assert!(
            active
                .iter()
                .any(|n| n.key == "module:flaky" && n.severity == "error"),
            "{active:?}"
        );
        drop(sup);
        drop(agent);

        // The quarantine outlives the process: a restarted host does not call
        // the module and says so, until the operator releases it.
        let restarted = Events::default();
        let mut rx = restarted.subscribe();
        let agent = Agent::build(Config::load(&config_path).unwrap(), restarted.clone()).unwrap();
        let sup = Supervisor::start(&agent, restarted);
        let said = std::iter::from_fn(|| rx.try_recv().ok()).any(
            |e| matches!(e, HostEvent::SettingProblem { setting, .. } if setting.code() == "quarantined:flaky"),
        );
        assert!(said, "restart reports the quarantine");
        assert!(sup.health()["flaky"].quarantined);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            sup.health()["flaky"].calls_failed,
            0,
            "not called after restart"
        );
        drop(sup);
        let db = agent.runtime.services().db.clone();
        assert!(
            outpost_host::store::quarantine::Quarantine::new(db)
                .release("flaky")
                .unwrap()
        );
        drop(agent);
        let agent = Agent::build(Config::load(&config_path).unwrap(), Events::default()).unwrap();
        let sup = Supervisor::start(&agent, Events::default());
        assert!(!sup.health()["flaky"].quarantined, "released");
    });
}

#[test]
fn support_requests_take_the_patient_data_flag_from_the_host_config() {
    use outpost_host::runtime::bindings::session_policy::exports::outpost::agent::policy::{
        Permission, SupportRequest,
    };
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("session-policy.wasm");
    let manifest = outpost_signing::Manifest::from_toml(
        &std::fs::read_to_string(outpost_artifacts::SESSION_POLICY_MANIFEST).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &file,
        e.signed(outpost_artifacts::SESSION_POLICY, &manifest),
    )
    .unwrap();
    let config_path = dir.path().join("outpost.toml");
    // No [site] table: the PC is taken to hold patient data.
    std::fs::write(
        &config_path,
        format!(
            "state-dir = \"state\"\n[policy]\nmax-state-quota-bytes = 1048576\npermissions = [\"view\", \"control\", \"file-transfer\"]\n[[trust.keys]]\nname = \"test-publisher\"\npublic-key = \"{}\"\n[[module]]\nname = \"session-policy\"\nfile = \"{}\"\n",
            outpost_signing::public_key_to_hex(&e.key.verifying_key()),
            path(&file)
        ),
    )
    .unwrap();
    e.rt.block_on(async {
        let events = Events::default();
        let agent = Agent::build(Config::load(&config_path).unwrap(), events.clone()).unwrap();
        assert!(agent.refused.is_empty(), "{:?}", agent.refused);
        let sup = Supervisor::start(&agent, events);
        // The requester claims the PC holds no patient data; the host knows better.
        let d = sup
            .evaluate_support_request(SupportRequest {
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
                pc_holds_patient_data: false,
            })
            .await;
        assert!(d.allow, "{}", d.reason);
        assert_eq!(d.offer, vec![Permission::View]);
    });
}

/// Issue #19: a backlog larger than one call (the collector stops at 20,000
/// records or 2 MiB per call) drains without waiting the collection interval
/// (an hour here): the collector says more is waiting and the supervisor
/// calls it again at once, then sleeps once it has caught up.
#[test]
fn a_backlog_larger_than_one_call_drains_without_waiting_the_interval() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    const LINES: usize = 45_000;
    let mut text = String::with_capacity(LINES * 70);
    for i in 0..LINES {
        text.push_str(&format!(
            "2026-11-29 10:00:00 INFO I-0001 backlog line {i:06} of the drain test\n"
        ));
    }
    std::fs::write(logs.join("instrument.log"), &text).unwrap();
    let collector = dir.path().join("collector.wasm");
    std::fs::write(
        &collector,
        e.signed(
            outpost_artifacts::COLLECTOR,
            &outpost_signing::Manifest::from_toml(
                &std::fs::read_to_string(outpost_artifacts::COLLECTOR_MANIFEST).unwrap(),
            )
            .unwrap(),
        ),
    )
    .unwrap();
    let config_path = dir.path().join("outpost.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
state-dir = "state"
[directories]
instrument-logs = "{logs}"
[policy]
directories = ["instrument-logs"]
uplink-streams = ["heartbeat", "events", "qc", "maintenance", "software"]
max-state-quota-bytes = 1048576
[supervisor]
collect-interval-secs = 3600
drain-cpu-percent = 100
[[trust.keys]]
name = "test-publisher"
public-key = "{key}"
[[module]]
name = "collector"
file = "{collector}"
{OFFLINE_UPLINK}"#,
            logs = path(&logs),
            key = outpost_signing::public_key_to_hex(&e.key.verifying_key()),
            collector = path(&collector),
        ),
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    offline_identity(&config.state_dir);
    e.rt.block_on(async {
        let events = Events::default();
        let mut rx = events.subscribe();
        let agent = Agent::build(config, events.clone()).unwrap();
        assert!(agent.refused.is_empty(), "{:?}", agent.refused);
        let spool = agent.runtime.services().spool.clone();
        let queued = || -> i64 {
            spool
                .list()
                .unwrap()
                .iter()
                .filter(|b| b.stream == "events")
                .map(|b| b.records)
                .sum()
        };
        let sup = Supervisor::start(&agent, events);
        let mut calls = Vec::new();
        // Far below the interval: only calls made at once can get there.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(300);
        while queued() < LINES as i64 {
            let ev = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("drained {} of {LINES} in time", queued()));
            if let Ok(HostEvent::CallSucceeded {
                module, summary, ..
            }) = &ev
                && module == "collector"
            {
                calls.push(summary.clone());
            }
        }
        assert_eq!(queued(), LINES as i64, "each line once");
        // Caught up: the call that queued the last lines (its event may
        // still be on its way) says nothing more waits, and then the
        // collector sleeps its interval.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let more: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|ev| match ev {
                HostEvent::CallSucceeded {
                    module, summary, ..
                } if module == "collector" => Some(summary),
                _ => None,
            })
            .collect();
        calls.extend(more);
        assert!(calls.len() >= 3, "several calls: {calls:?}");
        let (last, drained) = calls.split_last().unwrap();
        assert!(
            drained.iter().all(|c| c.ends_with(" backlog")),
            "every call but the last said more was waiting: {calls:?}"
        );
        assert!(
            !last.ends_with(" backlog"),
            "the last call found nothing more: {calls:?}"
        );
        let before = sup.health()["collector"].calls_ok;
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(
            sup.health()["collector"].calls_ok,
            before,
            "asleep once caught up"
        );
        drop(sup);
    });
}
