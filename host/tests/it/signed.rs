//! Signed modules through the whole loader: trust store, development key,
//! persisted version ledger, thresholds and the compiled-module cache.

use super::harness::{OFFLINE_UPLINK, env, offline_identity, path};
use outpost_host::agent::Agent;
use outpost_host::config::Config;
use outpost_host::events::{Events, HostEvent};
use outpost_host::runtime::CacheOutcome;
use outpost_host::runtime::bindings::collector::exports::outpost::agent::collect::Trigger;
use outpost_signing::Manifest;
use std::path::{Path, PathBuf};

/// A state dir plus a config with one collector module at `file`.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        Site {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, module_file: &Path, trust: &str) -> Config {
        let text = format!(
            r#"
state-dir = "state"
[directories]
instrument-logs = "{logs}"
[policy]
directories = ["instrument-logs"]
uplink-streams = ["heartbeat", "events", "qc", "maintenance", "software"]
max-state-quota-bytes = 1048576
[trust]
{trust}
[[module]]
name = "collector"
file = "{file}"
{OFFLINE_UPLINK}"#,
            logs = path(&env().root.join("instrument-logs")),
            file = path(module_file),
        );
        let p = self.file("outpost.toml");
        std::fs::write(&p, text).unwrap();
        if !self.file("state/device.json").exists() {
            offline_identity(&self.file("state"));
        }
        Config::load(&p).unwrap()
    }

    /// Build an agent; returns it and the events it published while loading.
    fn build(&self, config: Config) -> (Agent, Vec<HostEvent>) {
        let events = Events::default();
        let mut rx = events.subscribe();
        let agent = env()
            .rt
            .block_on(async { Agent::build(config, events) })
            .unwrap();
        let seen = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        (agent, seen)
    }
}

fn test_key_trust() -> String {
    format!(
        "[[trust.keys]]\nname = \"test-publisher\"\npublic-key = \"{}\"\n",
        outpost_signing::public_key_to_hex(&env().key.verifying_key())
    )
}

fn collector_manifest(version: &str) -> Manifest {
    let text = std::fs::read_to_string(outpost_artifacts::COLLECTOR_MANIFEST)
        .unwrap()
        .replace("version = \"0.1.0\"", &format!("version = \"{version}\""));
    Manifest::from_toml(&text).unwrap()
}

fn refusal(agent: &Agent) -> String {
    assert!(
        agent.modules.is_empty(),
        "expected the module to be refused"
    );
    agent.refused[0].reason.clone()
}

#[test]
fn an_unsigned_component_is_refused_naming_the_file() {
    let site = Site::new();
    let (agent, _) =
        site.build(site.config(Path::new(outpost_artifacts::COLLECTOR), &test_key_trust()));
    let why = refusal(&agent);
    assert!(why.contains(outpost_artifacts::COLLECTOR), "{why}");
    assert!(
        why.contains("unsigned") || why.contains("signature"),
        "{why}"
    );
}

#[test]
fn the_development_key_runs_only_when_the_config_says_so_and_then_warns() {
    let site = Site::new();
    let dev = format!(
        "[[trust.keys]]\nname = \"workspace-development\"\npublic-key = \"{}\"\ndevelopment = true\n",
        outpost_artifacts::DEV_PUBLIC_KEY_HEX
    );
    let signed = Path::new(outpost_artifacts::COLLECTOR_SIGNED);
    let (agent, _) = site.build(site.config(signed, &dev));
    let why = refusal(&agent);
    assert!(why.contains("development"), "{why}");

    let (agent, events) =
        site.build(site.config(signed, &format!("allow-development-key = true\n{dev}")));
    assert_eq!(agent.modules.len(), 1, "{:?}", agent.refused);
    assert!(events.iter().any(|e| matches!(e,
        HostEvent::SettingProblem { setting, .. } if setting.code() == "development-key:collector")));
}

#[test]
fn a_lower_version_than_ever_installed_is_refused_across_restarts() {
    let e = env();
    let site = Site::new();
    let v2 = site.file("collector-0.2.0.wasm");
    let v1 = site.file("collector-0.1.0.wasm");
    std::fs::write(
        &v2,
        e.signed(outpost_artifacts::COLLECTOR, &collector_manifest("0.2.0")),
    )
    .unwrap();
    std::fs::write(
        &v1,
        e.signed(outpost_artifacts::COLLECTOR, &collector_manifest("0.1.0")),
    )
    .unwrap();
    let (agent, _) = site.build(site.config(&v2, &test_key_trust()));
    assert_eq!(agent.modules.len(), 1, "{:?}", agent.refused);
    drop(agent);
    // A new host process on the same state: 0.1.0 is a downgrade.
    let (agent, _) = site.build(site.config(&v1, &test_key_trust()));
    let why = refusal(&agent);
    assert!(why.contains("0.1.0") && why.contains("0.2.0"), "{why}");
    // Reinstalling the same version is fine.
    let (agent, _) = site.build(site.config(&v2, &test_key_trust()));
    assert_eq!(agent.modules.len(), 1);
}

#[test]
fn a_threshold_of_two_signers_is_enforced() {
    let e = env();
    let site = Site::new();
    let file = site.file("collector.wasm");
    std::fs::write(
        &file,
        e.signed(outpost_artifacts::COLLECTOR, &collector_manifest("0.1.0")),
    )
    .unwrap();
    let second = outpost_signing::generate_signing_key();
    let trust = format!(
        "{}[[trust.keys]]\nname = \"security-review\"\npublic-key = \"{}\"\n[trust.thresholds]\ncollector = 2\n",
        test_key_trust(),
        outpost_signing::public_key_to_hex(&second.verifying_key())
    );
    let (agent, _) = site.build(site.config(&file, &trust));
    let why = refusal(&agent);
    assert!(
        why.contains("threshold") || why.contains("signers"),
        "{why}"
    );

    let both = outpost_signing::sign::sign(
        &e.raw(outpost_artifacts::COLLECTOR),
        &collector_manifest("0.1.0"),
        &[&e.key, &second],
    )
    .unwrap();
    std::fs::write(&file, both).unwrap();
    let (agent, _) = site.build(site.config(&file, &trust));
    assert_eq!(agent.modules.len(), 1, "{:?}", agent.refused);
}

#[test]
fn the_compiled_cache_is_used_only_for_verified_files_with_a_valid_mac() {
    let e = env();
    let site = Site::new();
    let file = site.file("collector.wasm");
    std::fs::write(
        &file,
        e.signed(outpost_artifacts::COLLECTOR, &collector_manifest("0.1.0")),
    )
    .unwrap();
    let config = || site.config(&file, &test_key_trust());

    let (agent, _) = site.build(config());
    assert_eq!(agent.modules[0].cache, CacheOutcome::Miss);
    drop(agent);
    let (agent, _) = site.build(config());
    assert_eq!(agent.modules[0].cache, CacheOutcome::Hit);
    drop(agent);

    // Edit the cache entry: refused, recompiled, and the module still works.
    let cache_dir = site.file("state/cache");
    let entry = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("a cache entry");
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&entry, &bytes).unwrap();
    let (agent, _) = site.build(config());
    assert_eq!(agent.modules[0].cache, CacheOutcome::Rejected);
    let report =
        e.rt.block_on(agent.runtime.collect(&agent.modules[0], Trigger::Schedule))
            .unwrap();
    assert!(report.records_queued >= 1);
    drop(agent);
    let (agent, _) = site.build(config());
    assert_eq!(
        agent.modules[0].cache,
        CacheOutcome::Hit,
        "the replaced entry is valid"
    );
    drop(agent);

    // The signed file no longer verifies: refused before the cache is consulted.
    let entry_before = std::fs::read(&entry).unwrap();
    let mut signed = std::fs::read(&file).unwrap();
    let last = signed.len() - 1;
    signed[last] ^= 1;
    std::fs::write(&file, signed).unwrap();
    let (agent, _) = site.build(config());
    let why = refusal(&agent);
    assert!(why.contains("refused"), "{why}");
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        entry_before,
        "cache entry untouched"
    );
}
