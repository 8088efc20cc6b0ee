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

/// The cache entry of the collector after one in-process build: its path
/// and the engine's memory limit it was compiled for.
fn compiled_entry(site: &Site, config: Config) -> (PathBuf, u32) {
    let max = config.policy.max_memory_mib;
    let (agent, _) = site.build(config);
    assert_eq!(agent.modules[0].cache, CacheOutcome::Miss);
    drop(agent);
    let entry = std::fs::read_dir(site.file("state/cache"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("a cache entry");
    (entry, max)
}

/// `outpost __compile-module CACHE MAX NAME` with `stdin` as its input.
fn compile_child(cache: &Path, max: u32, name: &str, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .arg("__compile-module")
        .arg(cache)
        .arg(max.to_string())
        .arg(name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The child may refuse before reading: a closed pipe is its answer.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn cache_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_entry_compiled_by_the_child_process_loads_and_runs_in_the_service() {
    let e = env();
    let site = Site::new();
    let file = site.file("collector.wasm");
    let manifest = collector_manifest("0.1.0");
    std::fs::write(&file, e.signed(outpost_artifacts::COLLECTOR, &manifest)).unwrap();
    let config = || site.config(&file, &test_key_trust());
    let (entry, max) = compiled_entry(&site, config());
    let name = entry.file_name().unwrap().to_str().unwrap().to_owned();
    let in_process = std::fs::read(&entry).unwrap();
    std::fs::remove_file(&entry).unwrap();

    let bytes = e.verified(outpost_artifacts::COLLECTOR, &manifest);
    let out = compile_child(entry.parent().unwrap(), max, &name, bytes.bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same code as the service's own compile, MAC'd with the same key.
    assert_eq!(std::fs::read(&entry).unwrap(), in_process);
    let (agent, _) = site.build(config());
    assert_eq!(agent.modules[0].cache, CacheOutcome::Hit);
    let report =
        e.rt.block_on(agent.runtime.collect(&agent.modules[0], Trigger::Schedule))
            .unwrap();
    assert!(report.records_queued >= 1);
}

#[test]
fn the_child_compiler_refuses_another_engine_and_bad_input_and_writes_nothing() {
    let e = env();
    let site = Site::new();
    let file = site.file("collector.wasm");
    let manifest = collector_manifest("0.1.0");
    std::fs::write(&file, e.signed(outpost_artifacts::COLLECTOR, &manifest)).unwrap();
    let (entry, max) = compiled_entry(&site, site.config(&file, &test_key_trust()));
    let cache = entry.parent().unwrap().to_owned();
    let name = entry.file_name().unwrap().to_str().unwrap().to_owned();
    std::fs::remove_file(&entry).unwrap();
    let before = cache_files(&cache);
    let bytes = e.verified(outpost_artifacts::COLLECTOR, &manifest);

    // A name made by an engine with other settings (another build, other
    // code-generation settings): the service would never load such an entry.
    let mut forged = name.clone();
    let last = forged.len() - ".cwasm".len() - 1;
    let digit = if name.as_bytes()[last] == b'0' {
        "1"
    } else {
        "0"
    };
    forged.replace_range(last..=last, digit);
    let other = compile_child(&cache, max, &forged, bytes.bytes());
    assert!(!other.status.success());
    let why = String::from_utf8_lossy(&other.stderr);
    assert!(why.contains("not for this binary's engine"), "{why}");
    let nonsense = compile_child(&cache, max, "../../elsewhere.cwasm", bytes.bytes());
    assert!(!nonsense.status.success());
    let why = String::from_utf8_lossy(&nonsense.stderr);
    assert!(why.contains("does not start with a file hash"), "{why}");

    // Not a component: the compiler's error, no entry, no temporary file.
    let garbage = compile_child(&cache, max, &name, b"\0asm not really a component");
    assert!(!garbage.status.success());
    assert!(!String::from_utf8_lossy(&garbage.stderr).is_empty());
    // Arguments missing.
    let usage = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .arg("__compile-module")
        .output()
        .unwrap();
    assert!(!usage.status.success());
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage"));
    assert_eq!(cache_files(&cache), before);
}

#[test]
fn outpost_run_compiles_modules_in_a_child_process() {
    let e = env();
    let site = Site::new();
    let file = site.file("collector.wasm");
    std::fs::write(
        &file,
        e.signed(outpost_artifacts::COLLECTOR, &collector_manifest("0.1.0")),
    )
    .unwrap();
    site.config(&file, &test_key_trust());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["run", "--seconds", "1", "--config"])
        .arg(site.file("outpost.toml"))
        .env("OUTPOST_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("compiled in a child process"), "{log}");
    assert!(!log.contains("compiling in the service"), "{log}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("collector"),
        "the module ran"
    );
}
