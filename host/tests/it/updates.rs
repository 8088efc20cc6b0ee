//! Module updates over TUF (#15): the real reference cloud serves a real
//! tough repository made by its publisher over TLS with a test CA; the host's
//! updater checks it. Hostile variants change the served files on disk.

use super::harness::{DEFAULT_LIMITS, env, manifest, path};
use chrono::{Duration as Days, Utc};
use outpost_cloud::repo::{self, Expiry, RoleKey};
use outpost_cloud::{Enrollment, EnrollmentToken, RunningServer, Server, ServerConfig, TestPki};
use outpost_host::config::Config;
use outpost_host::store::Db;
use outpost_host::update::offers::OfferState;
use outpost_host::update::{CheckReport, UpdateError, Updater};
use outpost_signing::{Manifest, SigningKey};
use std::path::{Path, PathBuf};
use std::process::Command;

const V1_CAPS: &str =
    "directories = [\"instrument-logs\"]\nendpoints = [\"api.vendor.example:443\"]";
const V2_CAPS: &str = "directories = [\"instrument-logs\"]\nendpoints = [\"api.vendor.example:443\", \"files.vendor.example:443\"]";

/// What every test collector asks for besides `caps` (its world imports
/// state and uplink).
const BASE_CAPS: &str = "uplink-streams = [\"heartbeat\", \"events\", \"qc\", \"maintenance\", \"software\"]\nstate-quota-bytes = 65536";

fn collector(version: &str, caps: &str) -> Manifest {
    let caps = format!("{caps}\n{BASE_CAPS}");
    let mut m = manifest("collector", "collector", &caps, DEFAULT_LIMITS);
    m.version = version.into();
    m
}

fn signed_by(key: &SigningKey, m: &Manifest) -> Vec<u8> {
    outpost_signing::sign::sign(&env().raw(outpost_artifacts::COLLECTOR), m, &[key]).unwrap()
}

struct Keys {
    root: RoleKey,
    targets: RoleKey,
    snapshot: RoleKey,
    timestamp: RoleKey,
}

/// A repository, the cloud serving it, and a host configured to check it
/// with collector 1.0.0 installed.
struct Site {
    dir: tempfile::TempDir,
    keys: Keys,
    server: Option<RunningServer>,
    config: Config,
}

impl Site {
    fn new() -> Site {
        Self::new_at(Utc::now())
    }

    /// The repository created (and first published) at `t`.
    fn new_at(t: chrono::DateTime<Utc>) -> Site {
        Self::build(
            t,
            "collector",
            &signed_by(&env().key, &collector("1.0.0", V1_CAPS)),
        )
    }

    /// The repository created at `t`, and a host with version 1.0.0 of
    /// `module` (the signed file `v1`) installed by hand.
    fn build(t: chrono::DateTime<Utc>, module: &str, v1: &[u8]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        repo::keygen(&d.join("keys")).unwrap();
        let load = |r| repo::load_key(&d.join("keys"), r).unwrap();
        let keys = Keys {
            root: load("root"),
            targets: load("targets"),
            snapshot: load("snapshot"),
            timestamp: load("timestamp"),
        };
        repo::init(
            &d.join("repo"),
            &keys.root,
            &keys.targets,
            &keys.snapshot,
            &keys.timestamp,
            Expiry::default(),
            t,
        )
        .unwrap();
        let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
        pki.write(&d.join("pki")).unwrap();
        let mut cfg = ServerConfig::new(
            d.join("cloud"),
            "127.0.0.1:0".parse().unwrap(),
            pki.server_cert_pem.clone(),
            pki.server_key_pem.clone(),
            Enrollment::Token(EnrollmentToken::new("update-tests-token-0123456789").unwrap()),
        );
        cfg.updates_repo = Some(d.join("repo"));
        let server = env().rt.block_on(Server::start(cfg)).unwrap();
        let url = format!("https://127.0.0.1:{}", server.addr().port());
        let file = d.join(format!("{module}-1.0.0.wasm"));
        std::fs::write(&file, v1).unwrap();
        let text = format!(
            "state-dir = \"{state}\"\n\
             [[instrument]]\nmodel = \"XN-550\"\nserial = \"SN-1\"\n\
             [[trust.keys]]\nname = \"test-publisher\"\npublic-key = \"{key}\"\n\
             [network]\nextra-ca-files = [\"{ca}\"]\nonly-extra-cas = true\n\
             [uplink]\nendpoint = \"{url}\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\n\
             [updates]\nroot = \"{root}\"\nrepository = \"{url}/v1/updates\"\nrequest-timeout-secs = 10\n\
             [directories]\ninstrument-logs = \"{logs}\"\n\
             [policy]\ndirectories = [\"instrument-logs\"]\nnotify = true\n\
             endpoints = [\"api.vendor.example:443\", \"files.vendor.example:443\"]\n\
             uplink-streams = [\"heartbeat\", \"events\", \"qc\", \"maintenance\", \"software\"]\n\
             max-state-quota-bytes = 65536\n\
             permissions = [\"view\", \"control\", \"file-transfer\"]\n\
             max-memory-mib = 256\nmax-cpu-ms-per-call = 60000\nmax-wall-ms-per-call = 60000\n\
             [[module]]\nname = \"{module}\"\nfile = \"{file}\"\n",
            logs = path(&env().root.join("instrument-logs")),
            state = path(&d.join("state")),
            key = outpost_signing::public_key_to_hex(&env().key.verifying_key()),
            ca = path(&d.join("pki/ca.pem")),
            root = path(&d.join("repo/metadata/1.root.json")),
            file = path(&file),
        );
        std::fs::write(d.join("outpost.toml"), &text).unwrap();
        let config = Config::load(&d.join("outpost.toml")).unwrap();
        Site {
            dir,
            keys,
            server: Some(server),
            config,
        }
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn meta(&self, file: &str) -> PathBuf {
        self.repo().join("metadata").join(file)
    }

    /// Stage `bytes` as a module file and publish at `t` with `expiry`.
    fn publish_module_at(
        &self,
        bytes: &[u8],
        models: &[&str],
        t: chrono::DateTime<Utc>,
        expiry: Expiry,
    ) -> repo::Published {
        let f = self.dir.path().join("upload.wasm");
        std::fs::write(&f, bytes).unwrap();
        let models: Vec<String> = models.iter().map(|s| s.to_string()).collect();
        repo::add(&self.repo(), &f, &models).unwrap();
        self.publish_at(t, expiry)
    }

    fn publish_module(&self, bytes: &[u8]) -> repo::Published {
        self.publish_module_at(bytes, &[], Utc::now(), Expiry::default())
    }

    fn publish_at(&self, t: chrono::DateTime<Utc>, expiry: Expiry) -> repo::Published {
        repo::publish(
            &self.repo(),
            &self.keys.targets,
            &self.keys.snapshot,
            &self.keys.timestamp,
            expiry,
            t,
        )
        .unwrap()
    }

    fn updater(&self) -> Updater {
        let db = Db::open(&self.config.state_dir).unwrap();
        Updater::new(&self.config, db).unwrap()
    }

    fn check(&self) -> Result<CheckReport, UpdateError> {
        env().rt.block_on(self.updater().check())
    }

    /// The served target file of `name`.
    fn target_file(&self, name: &str) -> PathBuf {
        std::fs::read_dir(self.repo().join("targets"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(&format!(".{name}")))
            .unwrap()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            env().rt.block_on(s.shutdown());
        }
    }
}

fn refused_message(r: Result<CheckReport, UpdateError>) -> String {
    match r {
        Ok(report) => panic!("check accepted the repository: {report:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn new_endpoint_is_offered_with_exactly_that_difference() {
    let site = Site::new();
    let v2 = signed_by(&env().key, &collector("2.0.0", V2_CAPS));
    site.publish_module(&v2);
    let report = site.check().unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(report.offers.len(), 1, "{report:?}");
    let o = &report.offers[0];
    assert_eq!(o.module, "collector");
    assert_eq!(o.from_version.as_deref(), Some("1.0.0"));
    assert_eq!(o.to_version, "2.0.0");
    assert_eq!(o.target, "collector-2.0.0.wasm");
    assert_eq!(o.state, OfferState::Available);
    assert!(o.adds_capabilities);
    assert_eq!(
        o.diff_text.as_deref(),
        Some("+ endpoint files.vendor.example:443\n")
    );
    let stored = std::fs::read(o.file_path.as_ref().unwrap()).unwrap();
    assert_eq!(stored, v2, "the downloaded file is the published one");
    // A second check finds the same offer, not a second one.
    let again = site.check().unwrap();
    assert_eq!(again.offers.len(), 1);
    assert_eq!(again.offers[0].id, o.id);
    assert_eq!(site.updater().offers().list().unwrap().len(), 1);
}

#[test]
fn approval_records_the_digest_and_a_changed_diff_voids_it() {
    let site = Site::new();
    site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    let o = site.check().unwrap().offers.remove(0);
    let updater = site.updater();
    let approved = updater.offers().decide(o.id, true, "cli:test").unwrap();
    assert_eq!(approved.state, OfferState::Approved);
    assert_eq!(approved.approved_digest, o.diff_digest);
    let digest = o.diff_digest.clone().unwrap();
    assert!(updater.offers().approval_holds(o.id, &digest).unwrap());
    // The installed module changed since: the diff to install is another.
    assert!(
        !updater
            .offers()
            .approval_holds(o.id, "another-diff")
            .unwrap()
    );
    let after = updater.offers().get(o.id).unwrap().unwrap();
    assert_eq!(after.state, OfferState::Available, "needs a new approval");
    assert_eq!(after.approved_digest, None);
    let audit = updater.offers().audit(o.id).unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].decision, "approved");
    assert_eq!(audit[0].diff_digest.as_deref(), Some(digest.as_str()));
    assert_eq!(audit[0].client, "cli:test");
    assert_eq!(audit[1].decision, "approval-void");
    // A decision on an offer that is not available is refused.
    updater.offers().decide(o.id, false, "cli:test").unwrap();
    let err = updater.offers().decide(o.id, true, "cli:test").unwrap_err();
    assert!(err.to_string().contains("rejected"), "{err}");
}

#[test]
fn expired_timestamp_is_refused() {
    let past = Utc::now() - Days::days(3);
    let site = Site::new_at(past);
    site.publish_module_at(
        &signed_by(&env().key, &collector("2.0.0", V2_CAPS)),
        &[],
        past,
        Expiry::default(),
    );
    let msg = refused_message(site.check());
    assert!(msg.contains("expired"), "{msg}");
    assert!(site.updater().offers().list().unwrap().is_empty());
}

#[test]
fn expired_targets_are_refused() {
    let site = Site::new();
    let expiry = Expiry {
        targets: Days::seconds(-60),
        ..Expiry::default()
    };
    site.publish_module_at(
        &signed_by(&env().key, &collector("2.0.0", V2_CAPS)),
        &[],
        Utc::now(),
        expiry,
    );
    let msg = refused_message(site.check());
    assert!(msg.contains("expired"), "{msg}");
}

#[test]
fn a_clock_set_back_does_not_revive_expired_metadata() {
    let site = Site::new();
    site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    // The update clock has already seen a time two days ahead (the system
    // clock was later set back): the timestamp, valid for a day by the
    // system clock, is expired by the update clock.
    let updater = site.updater();
    let ahead = Utc::now().timestamp() + 2 * 86_400;
    assert_eq!(updater.offers().clock(ahead).unwrap(), ahead);
    let err = env().rt.block_on(updater.check()).unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::Expired {
                role: "timestamp",
                ..
            }
        ),
        "{err}"
    );
    // And the stored clock never moves back.
    assert_eq!(updater.offers().clock(0).unwrap(), ahead);
}

#[test]
fn replayed_older_timestamp_is_refused() {
    let site = Site::new();
    site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    let old = std::fs::read(site.meta("timestamp.json")).unwrap();
    repo::publish_timestamp(
        &site.repo(),
        &site.keys.timestamp,
        Expiry::default(),
        Utc::now(),
    )
    .unwrap();
    site.check().unwrap();
    // An attacker (or a stale mirror) serves the older, still valid timestamp.
    std::fs::write(site.meta("timestamp.json"), old).unwrap();
    let msg = refused_message(site.check());
    assert!(msg.to_lowercase().contains("version"), "{msg}");
}

#[test]
fn frozen_timestamp_is_refused_once_it_expires() {
    // The repository goes on publishing, but a freezing attacker keeps
    // serving a timestamp signed three days ago (valid for a day then).
    let past = Utc::now() - Days::days(3);
    let site = Site::new_at(past);
    let frozen = std::fs::read(site.meta("timestamp.json")).unwrap();
    site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    std::fs::write(site.meta("timestamp.json"), frozen).unwrap();
    let msg = refused_message(site.check());
    assert!(msg.contains("expired"), "{msg}");
    assert!(site.updater().offers().list().unwrap().is_empty());
}

#[test]
fn mix_and_match_snapshot_is_refused() {
    let site = Site::new();
    let first = site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    let second = site.publish_module(&signed_by(&env().key, &collector("3.0.0", V2_CAPS)));
    // The newest timestamp, served with the snapshot of the earlier release
    // under the newest snapshot's name.
    let old =
        std::fs::read(site.meta(&format!("{}.snapshot.json", first.snapshot_version))).unwrap();
    std::fs::write(
        site.meta(&format!("{}.snapshot.json", second.snapshot_version)),
        old,
    )
    .unwrap();
    let msg = refused_message(site.check()).to_lowercase();
    assert!(msg.contains("hash mismatch"), "{msg}");
}

#[test]
fn mix_and_match_targets_is_refused() {
    let site = Site::new();
    let first = site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    let second = site.publish_module(&signed_by(&env().key, &collector("3.0.0", V2_CAPS)));
    let old = std::fs::read(site.meta(&format!("{}.targets.json", first.targets_version))).unwrap();
    std::fs::write(
        site.meta(&format!("{}.targets.json", second.targets_version)),
        old,
    )
    .unwrap();
    let msg = refused_message(site.check()).to_lowercase();
    assert!(msg.contains("hash mismatch"), "{msg}");
}

#[test]
fn target_longer_than_its_metadata_is_refused() {
    let site = Site::new();
    site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    let f = site.target_file("collector-2.0.0.wasm");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes.extend(std::iter::repeat_n(0u8, 4096));
    std::fs::write(&f, bytes).unwrap();
    let report = site.check().unwrap();
    assert!(report.offers.is_empty());
    assert_eq!(report.refused.len(), 1);
    let r = &report.refused[0];
    assert_eq!(r.state, OfferState::Refused);
    assert!(
        r.reason.as_ref().unwrap().starts_with("download refused"),
        "{r:?}"
    );
    assert_eq!(r.file_path, None);
}

#[test]
fn tampered_target_is_refused() {
    let site = Site::new();
    site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    let f = site.target_file("collector-2.0.0.wasm");
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&f, bytes).unwrap();
    let report = site.check().unwrap();
    assert!(report.offers.is_empty());
    assert_eq!(report.refused.len(), 1);
    let reason = report.refused[0].reason.clone().unwrap();
    assert!(reason.starts_with("download refused"), "{reason}");
    assert!(reason.to_lowercase().contains("hash mismatch"), "{reason}");
}

#[test]
fn module_signed_by_an_untrusted_key_is_refused() {
    let site = Site::new();
    let stranger = outpost_signing::generate_signing_key();
    site.publish_module(&signed_by(&stranger, &collector("2.0.0", V2_CAPS)));
    let report = site.check().unwrap();
    assert!(report.offers.is_empty());
    assert_eq!(report.refused.len(), 1);
    let reason = report.refused[0].reason.clone().unwrap();
    assert!(reason.starts_with("module signature refused"), "{reason}");
    // Kept with its reason, not dropped.
    let listed = site.updater().offers().list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, OfferState::Refused);
}

#[test]
fn lower_or_equal_version_is_not_offered() {
    let site = Site::new();
    site.publish_module(&signed_by(&env().key, &collector("0.9.0", V2_CAPS)));
    let report = site.check().unwrap();
    assert!(report.offers.is_empty() && report.refused.is_empty());
    assert_eq!(report.skipped, 1);
}

#[test]
fn metadata_that_lies_about_the_version_is_refused() {
    let site = Site::new();
    // A validly signed 0.9.0 module listed (by a compromised targets key) as
    // 3.0.0 with 3.0.0's capability digest: the signed manifest wins.
    let m = collector("0.9.0", V2_CAPS);
    let f = site.dir.path().join("lying.wasm");
    std::fs::write(&f, signed_by(&env().key, &m)).unwrap();
    let added = repo::add(&site.repo(), &f, &[]).unwrap();
    let staging = site.repo().join("staging");
    let lie = serde_json::json!({
        "module": "collector", "version": "3.0.0",
        "capability-digest": added.custom.capability_digest, "models": []
    });
    std::fs::rename(
        staging.join(&added.target),
        staging.join("collector-3.0.0.wasm"),
    )
    .unwrap();
    std::fs::remove_file(staging.join(format!("{}.custom.json", added.target))).unwrap();
    std::fs::write(
        staging.join("collector-3.0.0.wasm.custom.json"),
        serde_json::to_vec(&lie).unwrap(),
    )
    .unwrap();
    site.publish_at(Utc::now(), Expiry::default());
    let report = site.check().unwrap();
    assert!(report.offers.is_empty());
    assert_eq!(report.refused.len(), 1);
    let reason = report.refused[0].reason.clone().unwrap();
    assert!(
        reason.contains("version 0.9.0") || reason.contains("lower"),
        "{reason}"
    );
}

#[test]
fn module_for_other_instrument_models_is_skipped() {
    let site = Site::new();
    site.publish_module_at(
        &signed_by(&env().key, &collector("2.0.0", V2_CAPS)),
        &["OTHER-1"],
        Utc::now(),
        Expiry::default(),
    );
    let report = site.check().unwrap();
    assert!(report.offers.is_empty());
    assert_eq!(report.skipped, 1);
}

#[test]
fn repository_must_be_on_the_uplink_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let text = "state-dir = \"s\"\n[uplink]\nendpoint = \"https://cloud.example\"\n\
                [updates]\nroot = \"root.json\"\nrepository = \"https://elsewhere.example/v1/updates\"\n";
    let err = Config::parse(text, &dir.path().join("o.toml")).unwrap_err();
    assert!(
        err.to_string()
            .contains("not on one of the uplink endpoints"),
        "{err}"
    );
    let ok = text.replace("elsewhere.example", "cloud.example:443");
    Config::parse(&ok, &dir.path().join("o.toml")).unwrap();
    let plain = text.replace("https://elsewhere", "http://cloud");
    assert!(Config::parse(&plain, &dir.path().join("o.toml")).is_err());
}

#[test]
fn the_cloud_serves_only_repository_files() {
    let site = Site::new();
    let port = site.server.as_ref().unwrap().addr().port();
    let ca = std::fs::read(site.dir.path().join("pki/ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*outpost_host::net::tls_config(&[ca], true).unwrap()).clone())
        .build()
        .unwrap();
    let get = |p: &str| {
        let url = format!("https://127.0.0.1:{port}{p}");
        env().rt.block_on(async {
            let r = client.get(&url).send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        })
    };
    let (status, body) = get("/v1/updates/metadata/1.root.json");
    assert_eq!(status, 200);
    assert_eq!(body, std::fs::read(site.meta("1.root.json")).unwrap());
    assert_eq!(get("/v1/updates/metadata/timestamp.json").0, 200);
    for bad in [
        "/v1/updates/metadata/..%2fkeys%2froot.key",
        "/v1/updates/metadata/.hidden.json",
        "/v1/updates/targets/..%2fmetadata%2f1.root.json",
        "/v1/updates/metadata/2.root.json",
        "/v1/updates/staging/x",
    ] {
        assert_eq!(get(bad).0, 404, "{bad}");
    }
    let _: &Path = site.dir.path();
}

#[test]
fn update_available_event_is_published_once_per_offer() {
    let site = Site::new();
    site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    let events = outpost_host::events::Events::default();
    let mut rx = events.subscribe();
    let updater = site.updater().with_events(events);
    let report = env().rt.block_on(updater.check()).unwrap();
    let id = report.offers[0].id;
    match rx.try_recv().unwrap() {
        outpost_host::events::HostEvent::UpdateAvailable {
            offer,
            module,
            from_version,
            to_version,
            adds_capabilities,
            changes,
        } => {
            assert!(
                changes.iter().any(|c| c.starts_with("may ")),
                "the added capabilities in plain words: {changes:?}"
            );
            assert_eq!(
                (
                    offer,
                    module.as_str(),
                    from_version.as_str(),
                    to_version.as_str()
                ),
                (id, "collector", "1.0.0", "2.0.0")
            );
            assert!(adds_capabilities);
        }
        other => panic!("unexpected event {other:?}"),
    }
    env().rt.block_on(updater.check()).unwrap();
    assert!(
        rx.try_recv().is_err(),
        "a known offer is not announced again"
    );
}

#[test]
fn cli_checks_shows_in_plain_words_and_approves() {
    let site = Site::new();
    site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    let cfg = site.dir.path().join("outpost.toml");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .arg("updates")
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .arg("--json")
            .env("USER", "lab-tech")
            .output()
            .unwrap()
    };
    let json = |out: &std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = json(&run(&["check"]));
    assert_eq!(v["offers"].as_array().unwrap().len(), 1, "{v}");
    let id = v["offers"][0]["id"].as_i64().unwrap().to_string();
    let v = json(&run(&["show", &id]));
    assert_eq!(
        v["changes"],
        serde_json::json!(["may connect to files.vendor.example:443 over HTTPS"])
    );
    assert_eq!(v["state"], "available");
    let digest = v["diff-digest"].as_str().unwrap().to_owned();
    let v = json(&run(&["approve", &id]));
    assert_eq!(v["state"], "approved");
    assert_eq!(v["approved-digest"], digest.as_str());
    assert_eq!(v["audit"][0]["client"], "cli:lab-tech");
    assert_eq!(v["audit"][0]["diff-digest"], digest.as_str());
    let again = run(&["reject", &id]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("is approved, not available"), "{err}");
    let v = json(&run(&["list"]));
    assert_eq!(v.as_array().unwrap().len(), 1);
    let missing = run(&["show", "999"]);
    assert!(!missing.status.success());
}

/// The CLI in another process while the service runs: its decisions go
/// through the service, which announces them (the real notifier shows the
/// offer, then clears it) and loads an installed update at once.
#[test]
fn cli_decisions_reach_the_running_service_and_the_notifier_shows_the_offer() {
    use std::time::{Duration, Instant};
    let site = Site::new();
    let cfg = site.dir.path().join("outpost.toml");
    let nfile = site.dir.path().join("notifier-1.0.0.wasm");
    std::fs::write(&nfile, notifier("1.0.0", false)).unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "[[module]]\nname = \"notifier\"\nfile = \"{}\"\n",
        path(&nfile)
    ));
    std::fs::write(&cfg, text).unwrap();
    site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    let host = super::api::Host::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(120);
    let call = |p: &str| env().rt.block_on(host.call(reqwest::Method::GET, p));
    let shown = |key: &str| -> Option<serde_json::Value> {
        let (status, list) = call("/api/v1/notifications");
        assert_eq!(status, 200, "{list}");
        list["active"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["key"] == key)
            .cloned()
    };
    // The scheduled check at start finds the offer; the notifier shows it.
    let n = loop {
        if let Some(n) = shown("update:collector") {
            break n;
        }
        assert!(Instant::now() < deadline, "the offer was not shown");
        std::thread::sleep(Duration::from_millis(100));
    };
    let id = call("/api/v1/updates").1[0]["id"].as_i64().unwrap();
    let title = n["title"].as_str().unwrap();
    let body = n["body"].as_str().unwrap();
    assert!(title.contains("1.0.0 → 2.0.0"), "{title}");
    assert!(title.contains("needs your approval"), "{title}");
    assert!(
        body.contains("may connect to files.vendor.example:443 over HTTPS"),
        "{body}"
    );
    assert!(
        body.contains(&format!("outpost updates show {id}")),
        "{body}"
    );
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .arg("updates")
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env("USER", "lab-tech")
            .env("OUTPOST_LOG", "error")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Approved through the service: recorded for the CLI's user, announced,
    // and the notification cleared.
    let approved: serde_json::Value =
        serde_json::from_str(&run(&["approve", &id.to_string(), "--json"])).unwrap();
    assert_eq!(approved["state"], "approved", "{approved}");
    assert_eq!(approved["audit"][0]["client"], "cli:lab-tech");
    while shown("update:collector").is_some() {
        assert!(
            Instant::now() < deadline,
            "the decided offer is still shown"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Installed through the service: loaded at once, no restart.
    let out = run(&["install", &id.to_string()]);
    assert!(out.contains("the running service loaded it"), "{out}");
    loop {
        let (_, s) = call("/api/v1/status");
        let m = s["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "collector")
            .cloned()
            .unwrap();
        if m["version"] == "2.0.0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the running service did not load the update: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn plain_words_for_each_kind_of_change() {
    use outpost_host::update::describe;
    assert_eq!(
        describe("+ permission file-transfer"),
        "may transfer files during remote support"
    );
    assert_eq!(
        describe("- directory qc-results"),
        "no longer may read the directory “qc-results”"
    );
    assert_eq!(
        describe("+ uplink stream device-status"),
        "may send records to the vendor on the stream “device-status”"
    );
    assert_eq!(
        describe("~ limits.memory-mib 32 -> 64"),
        "limits.memory-mib changes from 32 to 64"
    );
    assert_eq!(describe("+ notify"), "may show notifications on this PC");
}

// ---- installing ----------------------------------------------------------

use outpost_host::update::install::{self, InstallError};

impl Site {
    fn db(&self) -> Db {
        Db::open(&self.config.state_dir).unwrap()
    }

    fn install(&self, id: i64) -> Result<outpost_host::update::offers::Offer, InstallError> {
        install::install(
            &self.config,
            &self.db(),
            &outpost_host::events::Events::default(),
            id,
            "test",
        )
    }

    /// The version of the collector the host would load now.
    fn loaded_version(&self) -> String {
        let _g = env().rt.enter();
        let agent = outpost_host::agent::Agent::build(
            self.config.clone(),
            outpost_host::events::Events::default(),
        )
        .unwrap();
        assert!(agent.refused.is_empty(), "{:?}", agent.refused);
        agent.modules[0].grant().version().to_owned()
    }

    fn offer_for(&self, version: &str, caps: &str) -> i64 {
        self.publish_module(&signed_by(&env().key, &collector(version, caps)));
        let report = self.check().unwrap();
        report
            .offers
            .iter()
            .find(|o| o.to_version == version)
            .unwrap()
            .id
    }
}

#[test]
fn approved_update_installs_atomically_and_the_host_loads_it() {
    let site = Site::new();
    let id = site.offer_for("2.0.0", V2_CAPS);
    assert_eq!(site.loaded_version(), "1.0.0");
    let offers = site.updater();
    offers.offers().decide(id, true, "cli:test").unwrap();
    let done = site.install(id).unwrap();
    assert_eq!(done.state, OfferState::Installed);
    let file = install::installed_file(&site.config, "collector").unwrap();
    assert!(file.starts_with(site.config.state_dir.join("modules/collector")));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        signed_by(&env().key, &collector("2.0.0", V2_CAPS)),
        "the installed file is the published one"
    );
    assert_eq!(site.loaded_version(), "2.0.0");
    let ledger = outpost_host::store::versions::Versions::new(site.db());
    assert_eq!(ledger.highest("collector").unwrap(), Some((2, 0, 0)));
    let audit = offers.offers().audit(id).unwrap();
    let decisions: Vec<&str> = audit.iter().map(|a| a.decision.as_str()).collect();
    assert_eq!(decisions, ["approved", "installed"]);
    assert_eq!(audit[1].diff_digest, done.diff_digest);
    // Installing again is refused: it is installed.
    assert!(matches!(
        site.install(id),
        Err(InstallError::NotInstallable { .. })
    ));
}

#[test]
fn check_config_and_firewall_rules_look_at_the_installed_update() {
    let site = Site::new();
    let cfg = site.dir.path().join("outpost.toml");
    let outpost = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let cfg_s = path(&cfg);
    let rules = || outpost(&["firewall-rules", "--config", &cfg_s]);
    assert!(!rules().contains("files.vendor.example"));
    let id = site.offer_for("2.0.0", V2_CAPS);
    site.updater()
        .offers()
        .decide(id, true, "cli:test")
        .unwrap();
    site.install(id).unwrap();
    let installed = install::installed_file(&site.config, "collector").unwrap();
    // The endpoint the approved update added is on the firewall list now.
    assert!(rules().contains("files.vendor.example"), "{}", rules());
    let v: serde_json::Value =
        serde_json::from_str(&outpost(&["check-config", &cfg_s, "--json"])).unwrap();
    assert_eq!(v[0]["installed_update"], true, "{v}");
    assert_eq!(v[0]["file"], installed.to_str().unwrap());
    assert!(
        v[0]["grant"]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("files.vendor.example")),
        "{v}"
    );
}

#[test]
fn an_update_asking_for_more_does_not_install_without_approval() {
    let site = Site::new();
    let id = site.offer_for("2.0.0", V2_CAPS);
    let err = site.install(id).unwrap_err();
    assert!(
        matches!(err, InstallError::NeedsApproval(i) if i == id),
        "{err}"
    );
    assert_eq!(install::installed_file(&site.config, "collector"), None);
    assert_eq!(site.loaded_version(), "1.0.0");
    // Even with the operator's auto-install policy: it asks for more.
    let mut site = site;
    site.config
        .updates
        .as_mut()
        .unwrap()
        .auto_install_without_new_capabilities = true;
    assert!(matches!(
        site.install(id),
        Err(InstallError::NeedsApproval(_))
    ));
}

#[test]
fn an_update_adding_nothing_installs_only_where_the_policy_says_so() {
    let mut site = Site::new();
    let id = site.offer_for("1.0.1", V1_CAPS);
    assert!(matches!(
        site.install(id),
        Err(InstallError::NeedsApproval(_))
    ));
    site.config
        .updates
        .as_mut()
        .unwrap()
        .auto_install_without_new_capabilities = true;
    assert_eq!(site.install(id).unwrap().state, OfferState::Installed);
    assert_eq!(site.loaded_version(), "1.0.1");
}

#[test]
fn a_diff_changed_since_approval_needs_a_new_approval() {
    let site = Site::new();
    let id = site.offer_for("2.0.0", V2_CAPS);
    site.updater()
        .offers()
        .decide(id, true, "cli:test")
        .unwrap();
    // Meanwhile the operator installed 1.5.0 by hand, which already has the
    // new endpoint and a directory fewer: the diff to 2.0.0 is another one.
    std::fs::write(
        site.dir.path().join("collector-1.0.0.wasm"),
        signed_by(
            &env().key,
            &collector(
                "1.5.0",
                "directories = []\nendpoints = [\"api.vendor.example:443\", \"files.vendor.example:443\"]",
            ),
        ),
    )
    .unwrap();
    let err = site.install(id).unwrap_err();
    assert!(
        matches!(err, InstallError::ApprovalVoid(i) if i == id),
        "{err}"
    );
    let o = site.updater().offers().get(id).unwrap().unwrap();
    assert_eq!(o.state, OfferState::Available);
    assert_ne!(o.approved_digest, o.diff_digest);
    assert_eq!(install::installed_file(&site.config, "collector"), None);
}

#[test]
fn a_failed_health_check_keeps_the_old_version() {
    let site = Site::new();
    // The new version asks for an endpoint the operator's policy does not
    // allow: it verifies and can be approved, but would not load.
    let caps = "directories = [\"instrument-logs\"]\nendpoints = [\"api.vendor.example:443\", \"exfil.example:443\"]";
    let id = site.offer_for("2.0.0", caps);
    site.updater()
        .offers()
        .decide(id, true, "cli:test")
        .unwrap();
    let err = site.install(id).unwrap_err();
    assert!(matches!(err, InstallError::HealthCheck { .. }), "{err}");
    assert!(err.to_string().contains("exfil.example"), "{err}");
    assert_eq!(install::installed_file(&site.config, "collector"), None);
    assert_eq!(site.loaded_version(), "1.0.0");
    let o = site.updater().offers().get(id).unwrap().unwrap();
    assert_eq!(o.state, OfferState::Failed);
    let audit = site.updater().offers().audit(id).unwrap();
    assert_eq!(audit.last().unwrap().decision, "failed");
    let staged: Vec<_> = std::fs::read_dir(site.config.state_dir.join("modules/collector"))
        .unwrap()
        .collect();
    assert!(staged.is_empty(), "the staged file is removed");
}

#[test]
fn a_crash_at_any_install_step_leaves_old_or_new_fully_installed() {
    for (step, new_after_crash) in [
        ("staged", false),
        ("checked", false),
        ("switched", true),
        ("recorded", true),
    ] {
        let site = Site::new();
        let id = site.offer_for("2.0.0", V2_CAPS);
        site.updater()
            .offers()
            .decide(id, true, "cli:test")
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["updates", "install", &id.to_string(), "--config"])
            .arg(site.dir.path().join("outpost.toml"))
            .env(install::CRASH_ENV, step)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{step}: the process was killed");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(step),
            "{step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The restarted host loads one complete version.
        let want = if new_after_crash { "2.0.0" } else { "1.0.0" };
        assert_eq!(site.loaded_version(), want, "after a crash at {step}");
        let o = site.updater().offers().get(id).unwrap().unwrap();
        if new_after_crash {
            // Agent::build reconciled ledger and offer.
            assert_eq!(o.state, OfferState::Installed, "{step}");
            let ledger = outpost_host::store::versions::Versions::new(site.db());
            assert_eq!(ledger.highest("collector").unwrap(), Some((2, 0, 0)));
        } else {
            // Still approved: installing again completes.
            assert_eq!(o.state, OfferState::Approved, "{step}");
            site.install(id).unwrap();
            assert_eq!(site.loaded_version(), "2.0.0", "{step}");
        }
    }
}

#[test]
fn the_running_host_checks_and_the_local_api_decides_offers() {
    let site = Site::new();
    // Published before the host starts; the host's own scheduled check
    // (at start) finds it.
    site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    // The real `outpost run` with its API (kept alive to the end).
    let host = super::api::Host::start(&site.dir.path().join("outpost.toml"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let call = |method: reqwest::Method, p: &str| env().rt.block_on(host.call(method, p));
    let list = loop {
        let (status, list) = call(reqwest::Method::GET, "/api/v1/updates");
        assert_eq!(status, 200, "{list}");
        if list.as_array().is_some_and(|l| !l.is_empty()) {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the host did not check for updates"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let id = list[0]["id"].as_i64().unwrap();
    assert_eq!(
        list[0]["changes"],
        serde_json::json!(["may connect to files.vendor.example:443 over HTTPS"])
    );
    let (status, one) = call(reqwest::Method::GET, &format!("/api/v1/updates/{id}"));
    assert_eq!(
        (status, &one["to-version"]),
        (200, &serde_json::json!("2.0.0"))
    );
    // It asks for more: not installed before the person approves.
    let (status, refused) = call(
        reqwest::Method::POST,
        &format!("/api/v1/updates/{id}/install"),
    );
    assert_eq!(
        (status, &refused["error"]),
        (409, &serde_json::json!("not-installable")),
        "{refused}"
    );
    let (status, approved) = call(
        reqwest::Method::POST,
        &format!("/api/v1/updates/{id}/approve"),
    );
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["state"], "approved");
    assert_eq!(approved["approved-digest"], one["diff-digest"]);
    let client = approved["audit"][0]["client"].as_str().unwrap().to_owned();
    assert!(client.contains("test"), "{client}");
    let (status, _) = call(
        reqwest::Method::POST,
        &format!("/api/v1/updates/{id}/reject"),
    );
    assert_eq!(status, 409, "a decided offer is not decided again");
    assert_eq!(call(reqwest::Method::GET, "/api/v1/updates/999").0, 404);
    // Installed through the API, the running host loads it in place.
    let (status, installed) = call(
        reqwest::Method::POST,
        &format!("/api/v1/updates/{id}/install"),
    );
    assert_eq!(status, 200, "{installed}");
    assert_eq!(installed["state"], "installed");
    loop {
        let (status, s) = call(reqwest::Method::GET, "/api/v1/status");
        assert_eq!(status, 200, "{s}");
        let m = &s["modules"][0];
        if m["version"] == "2.0.0" {
            assert_eq!(m["state"], "running", "{s}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the running host did not load the installed update: {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Without the token: refused.
    let url = format!("http://127.0.0.1:{}/api/v1/updates", host.addr.port());
    let anonymous = env().rt.block_on(async {
        outpost_host::api::client::plain_http_client()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(anonymous, 401);
}

#[test]
fn a_new_version_whose_call_fails_is_not_installed() {
    let site = Site::new();
    // A validly signed "collector" 2.0.0 whose collect() fails (the escapes
    // fixture with no escape named): it loads and links, the call fails.
    let m = collector("2.0.0", V2_CAPS);
    let bytes = outpost_signing::sign::sign(
        &env().raw(outpost_artifacts::FIXTURE_ESCAPES),
        &m,
        &[&env().key],
    )
    .unwrap();
    site.publish_module(&bytes);
    let id = site.check().unwrap().offers[0].id;
    site.updater()
        .offers()
        .decide(id, true, "cli:test")
        .unwrap();
    let events = outpost_host::events::Events::default();
    let mut rx = events.subscribe();
    let err = install::install(&site.config, &site.db(), &events, id, "test").unwrap_err();
    assert!(
        err.to_string().contains("the health-check call failed"),
        "{err}"
    );
    assert_eq!(install::installed_file(&site.config, "collector"), None);
    assert_eq!(site.loaded_version(), "1.0.0");
    let o = site.updater().offers().get(id).unwrap().unwrap();
    assert_eq!(o.state, OfferState::Failed);
    assert!(o.reason.unwrap().contains("health-check call failed"));
    match rx.try_recv().unwrap() {
        outpost_host::events::HostEvent::ModuleRefused { module, reason } => {
            assert_eq!(module, "collector");
            assert!(reason.contains("1.0.0 stays installed"), "{reason}");
        }
        other => panic!("unexpected event {other:?}"),
    }
    // The scratch state of the health check is gone.
    let leftovers: Vec<_> = std::fs::read_dir(&site.config.state_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("update-health-")
        })
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn oversized_metadata_is_refused() {
    let site = Site::new();
    site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    let mut ts = std::fs::read(site.meta("timestamp.json")).unwrap();
    ts.extend(std::iter::repeat_n(b' ', 80 * 1024));
    std::fs::write(site.meta("timestamp.json"), ts).unwrap();
    let msg = refused_message(site.check());
    assert!(msg.contains("Maximum size"), "{msg}");
}

#[test]
fn module_signed_by_a_revoked_key_is_refused() {
    let mut site = Site::new();
    let second = outpost_signing::generate_signing_key();
    site.config
        .trust
        .add_key(outpost_signing::TrustedKey::new(
            "second-publisher",
            second.verifying_key(),
        ))
        .unwrap();
    site.config
        .trust
        .revoke(outpost_signing::key_id(&second.verifying_key()));
    site.publish_module(&signed_by(&second, &collector("2.0.0", V2_CAPS)));
    let report = site.check().unwrap();
    assert!(report.offers.is_empty());
    let reason = report.refused[0].reason.clone().unwrap();
    assert!(reason.starts_with("module signature refused"), "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
}

#[test]
fn a_server_that_never_answers_times_out() {
    let mut site = Site::new();
    // Accepts connections and never says a word (not even TLS).
    let listener = env()
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = env().rt.spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let u = site.config.updates.as_mut().unwrap();
    u.repository = format!("https://127.0.0.1:{port}/v1/updates");
    u.request_timeout_secs = 1;
    let msg = refused_message(site.check()).to_lowercase();
    assert!(
        msg.contains("timed out") || msg.contains("timeout"),
        "{msg}"
    );
    assert!(site.updater().offers().list().unwrap().is_empty());
    held.abort();
}

/// The dashboard's approval screen in headless Chromium: the waiting update
/// with what it adds in plain words, approved from the page (recorded as the
/// dashboard's, bound to the digest it showed); an approval naming a digest
/// the offer no longer has is refused.
#[test]
fn the_dashboard_shows_what_an_update_adds_and_approves_that_diff() {
    use super::browser::{Driver, browser, click, count, displayed, until, with_screenshot};
    use std::time::Duration;
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let site = Site::new();
    site.publish_module(&signed_by(&env().key, &collector("2.0.0", V2_CAPS)));
    let host = super::api::Host::start(&site.dir.path().join("outpost.toml"));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let driver = Driver::start(chromium, &chromedriver);
    env().rt.block_on(async {
        // The host's own check at start finds the offer.
        let offer = loop {
            let (_, list) = host.call(reqwest::Method::GET, "/api/v1/updates").await;
            if let Some(o) = list.as_array().and_then(|l| l.first()) {
                break o.clone();
            }
            assert!(std::time::Instant::now() < deadline, "no offer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let id = offer["id"].as_i64().unwrap();
        // An approval naming another diff than the offer's is refused.
        let (status, body) = host.call(
            reqwest::Method::POST,
            &format!("/api/v1/updates/{id}/approve?diff-digest={}", "0".repeat(64)),
        )
        .await;
        assert_eq!((status, &body["error"]), (409, &serde_json::json!("diff-changed")));
        let (_, login) = host.call(reqwest::Method::POST, "/api/v1/login-codes").await;
        let url = login["url"].as_str().unwrap().to_owned();
        let client = driver.session().await;
        with_screenshot("update-approval", &client, async {
            client.goto(&url).await?;
            let item = format!("#updates li.update[data-id='{id}']");
            until(Duration::from_secs(10), "the waiting update", || async {
                Ok(displayed(&client, "updates-card").await? && count(&client, &item).await? == 1)
            })
            .await?;
            let shown = client
                .execute(
                    "return [...document.querySelectorAll(arguments[0] + ' ul.changes li')].map(e => e.textContent);",
                    vec![serde_json::Value::from(item.clone())],
                )
                .await?;
            anyhow::ensure!(
                shown == serde_json::json!(["may connect to files.vendor.example:443 over HTTPS"]),
                "shown: {shown}"
            );
            click(&client, &format!("{item} button.approve")).await?;
            // Approved, it waits for the person to install it.
            until(Duration::from_secs(10), "the install button", || async {
                Ok(count(&client, &format!("{item} button.install")).await? == 1)
            })
            .await?;
            click(&client, &format!("{item} button.install")).await?;
            until(Duration::from_secs(60), "the installed update leaves the list", || async {
                Ok(count(&client, &item).await? == 0)
            })
            .await?;
            Ok(())
        })
        .await;
        let _ = client.close().await;
        let (_, decided) = host.call(reqwest::Method::GET, &format!("/api/v1/updates/{id}")).await;
        assert_eq!(decided["state"], "installed", "{decided}");
        assert_eq!(decided["approved-digest"], offer["diff-digest"]);
        let audit: Vec<(String, String)> = decided["audit"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                assert_eq!(a["diff-digest"], offer["diff-digest"]);
                (
                    a["decision"].as_str().unwrap().to_owned(),
                    a["client"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let dashboard = || "dashboard".to_owned();
        assert_eq!(
            audit,
            [("approved".into(), dashboard()), ("installed".into(), dashboard())],
            "{decided}"
        );
        // The running host loads it in place.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, status) = host.call(reqwest::Method::GET, "/api/v1/status").await;
            if status["modules"][0]["version"] == "2.0.0" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "not reloaded: {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

// ---- the file-transfer rule on a PC holding patient data (#15) ------------

use outpost_host::runtime::bindings::session_policy::exports::outpost::agent::policy::{
    Decision, Permission, SupportRequest,
};

/// A session-policy manifest of `version` offering `permissions`.
fn session_policy(version: &str, permissions: &[&str]) -> Vec<u8> {
    let list: Vec<String> = permissions.iter().map(|p| format!("\"{p}\"")).collect();
    let caps = format!(
        "permissions = [{}]\nstate-quota-bytes = 65536",
        list.join(", ")
    );
    let mut m = manifest("session-policy", "session-policy", &caps, DEFAULT_LIMITS);
    m.version = version.into();
    outpost_signing::sign::sign(
        &env().raw(outpost_artifacts::SESSION_POLICY),
        &m,
        &[&env().key],
    )
    .unwrap()
}

impl Site {
    /// A site whose host runs session policy 1.0.0 offering `permissions`,
    /// on a PC holding patient data (the config has no `[site]` table).
    fn session_policy(permissions: &[&str]) -> Site {
        Self::build(
            Utc::now(),
            "session-policy",
            &session_policy("1.0.0", permissions),
        )
    }

    /// Publish `bytes`, check, and return the offer of `version`.
    fn offer_of(&self, bytes: &[u8], version: &str) -> i64 {
        self.publish_module(bytes);
        let report = self.check().unwrap();
        report
            .offers
            .iter()
            .find(|o| o.to_version == version)
            .unwrap_or_else(|| panic!("no offer of {version}: {report:?}"))
            .id
    }

    /// What the running host answers an engineer asking for view and file
    /// transfer (the policy module allows every request it may).
    fn ask_for_file_transfer(&self) -> Decision {
        env().rt.block_on(async {
            let events = outpost_host::events::Events::default();
            let agent =
                outpost_host::agent::Agent::build(self.config.clone(), events.clone()).unwrap();
            assert!(agent.refused.is_empty(), "{:?}", agent.refused);
            let sup = outpost_host::supervisor::Supervisor::start(&agent, events);
            sup.evaluate_support_request(SupportRequest {
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
            .await
        })
    }
}

#[test]
fn patient_data_pc_refuses_file_transfer_from_a_policy_installed_by_hand() {
    // The module's manifest offers file transfer and the operator's policy
    // allows it, but nobody at this PC authorised it through an update.
    let site = Site::session_policy(&["view", "control", "file-transfer"]);
    let d = site.ask_for_file_transfer();
    assert!(d.allow, "{}", d.reason);
    assert_eq!(d.offer, vec![Permission::View]);
    assert!(
        d.reason.contains("holds patient data")
            && d.reason.contains("not installed through an update"),
        "{}",
        d.reason
    );
}

#[test]
fn patient_data_pc_refuses_file_transfer_from_an_update_nobody_approved_it_in() {
    // 1.0.0 (by hand) already offers file transfer; 1.0.1 adds nothing and
    // installs automatically under the operator's policy. The running file
    // came through an update, but no person ever approved file transfer.
    let mut site = Site::session_policy(&["view", "control", "file-transfer"]);
    site.config
        .updates
        .as_mut()
        .unwrap()
        .auto_install_without_new_capabilities = true;
    let id = site.offer_of(
        &session_policy("1.0.1", &["view", "control", "file-transfer"]),
        "1.0.1",
    );
    assert_eq!(site.install(id).unwrap().state, OfferState::Installed);
    assert_eq!(site.loaded_version(), "1.0.1");
    let d = site.ask_for_file_transfer();
    assert_eq!(d.offer, vec![Permission::View], "{}", d.reason);
    assert!(
        d.reason
            .contains("no update authorised on this PC added it")
    );
}

#[test]
fn patient_data_pc_allows_file_transfer_once_the_person_approved_the_update_adding_it() {
    let mut site = Site::session_policy(&["view", "control"]);
    assert_eq!(site.ask_for_file_transfer().offer, vec![Permission::View]);
    let id = site.offer_of(
        &session_policy("2.0.0", &["view", "control", "file-transfer"]),
        "2.0.0",
    );
    // Asks for more: not without the person.
    assert!(matches!(
        site.install(id),
        Err(InstallError::NeedsApproval(_))
    ));
    let offer = site.updater().offers().get(id).unwrap().unwrap();
    assert_eq!(
        offer.diff_text.as_deref(),
        Some("+ permission file-transfer\n")
    );
    site.updater()
        .offers()
        .decide(id, true, "api:test")
        .unwrap();
    site.install(id).unwrap();
    let d = site.ask_for_file_transfer();
    assert_eq!(
        d.offer,
        vec![Permission::View, Permission::FileTransfer],
        "{}",
        d.reason
    );
    // A later version that keeps it (adds nothing, installed automatically)
    // keeps the authorisation; one that drops it ends it, and bringing it
    // back needs a new approval.
    site.config
        .updates
        .as_mut()
        .unwrap()
        .auto_install_without_new_capabilities = true;
    let keep = site.offer_of(
        &session_policy("2.0.1", &["view", "control", "file-transfer"]),
        "2.0.1",
    );
    site.install(keep).unwrap();
    assert_eq!(
        site.ask_for_file_transfer().offer,
        vec![Permission::View, Permission::FileTransfer]
    );
    let drop = site.offer_of(&session_policy("2.1.0", &["view", "control"]), "2.1.0");
    site.install(drop).unwrap();
    assert_eq!(site.ask_for_file_transfer().offer, vec![Permission::View]);
    // Hand-editing the config to load an older file that has the permission
    // does not bring it back: the running file is not the installed one.
    let hand = site.dir.path().join("by-hand.wasm");
    std::fs::write(
        &hand,
        session_policy("3.0.0", &["view", "control", "file-transfer"]),
    )
    .unwrap();
    std::fs::remove_file(site.config.state_dir.join("modules/session-policy/current")).unwrap();
    site.config.modules[0].file = hand;
    let d = site.ask_for_file_transfer();
    assert_eq!(d.offer, vec![Permission::View], "{}", d.reason);
}

// ---- interoperability with python-tuf (#15) -------------------------------

const PYTUF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pytuf.py");

/// `python3 pytuf.py`, when python-tuf (PyPI `tuf`) is installed. Without
/// it the interop tests say so and pass, unless `OUTPOST_REQUIRE_PYTUF=1`
/// (CI installs it and sets that).
fn pytuf() -> Option<Command> {
    let found = Command::new("python3")
        .args([
            "-c",
            "import tuf.ngclient, securesystemslib.signer, urllib3",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("OUTPOST_REQUIRE_PYTUF").as_deref() != Ok("1"),
            "OUTPOST_REQUIRE_PYTUF=1 but python3 cannot import tuf (pip install tuf)"
        );
        eprintln!("skipped: python-tuf is not installed (pip install tuf)");
        return None;
    }
    let mut c = Command::new("python3");
    c.arg(PYTUF);
    Some(c)
}

fn run_ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn python_tuf_accepts_the_repository_our_publisher_writes() {
    let Some(mut client) = pytuf() else { return };
    let site = Site::new();
    let module = signed_by(&env().key, &collector("2.0.0", V2_CAPS));
    site.publish_module_at(&module, &["XN-550"], Utc::now(), Expiry::default());
    let url = format!(
        "https://127.0.0.1:{}",
        site.server.as_ref().unwrap().addr().port()
    );
    let out = site.dir.path().join("pytuf-client");
    client
        .arg("client")
        .arg("--root")
        .arg(site.meta("1.root.json"))
        .arg("--metadata-url")
        .arg(format!("{url}/v1/updates/metadata/"))
        .arg("--targets-url")
        .arg(format!("{url}/v1/updates/targets/"))
        .arg("--ca")
        .arg(site.dir.path().join("pki/ca.pem"))
        .args(["--target", "collector-2.0.0.wasm", "--out"])
        .arg(&out);
    let v: serde_json::Value = serde_json::from_str(&run_ok(client)).unwrap();
    assert_eq!(v["length"], module.len());
    let sha: String = <sha2::Sha256 as sha2::Digest>::digest(&module)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v["sha256"], sha.as_str());
    assert_eq!(v["custom"]["outpost"]["module"], "collector");
    assert_eq!(v["custom"]["outpost"]["version"], "2.0.0");
    assert_eq!(
        v["custom"]["outpost"]["models"],
        serde_json::json!(["XN-550"])
    );
}

#[test]
fn our_updater_accepts_a_repository_python_tuf_writes() {
    let Some(mut publish) = pytuf() else { return };
    let site = Site::new();
    // The same directory the cloud serves, rewritten by python-tuf with its
    // own keys; the host trusts python-tuf's root.
    for d in ["metadata", "targets"] {
        std::fs::remove_dir_all(site.repo().join(d)).unwrap();
    }
    let manifest = collector("2.0.0", V2_CAPS);
    let file = site.dir.path().join("python-upload.wasm");
    std::fs::write(&file, signed_by(&env().key, &manifest)).unwrap();
    let custom = serde_json::json!({
        "module": "collector",
        "version": "2.0.0",
        "capability-digest": outpost_signing::capability_digest(&manifest),
        "models": [],
    });
    publish
        .arg("publish")
        .arg("--repo")
        .arg(site.repo())
        .arg("--module")
        .arg(&file)
        .args(["--name", "collector-2.0.0.wasm", "--custom"])
        .arg(custom.to_string());
    run_ok(publish);
    let report = site.check().unwrap();
    assert_eq!(report.offers.len(), 1, "{report:?}");
    let offer = &report.offers[0];
    assert_eq!(offer.to_version, "2.0.0");
    assert_eq!(offer.state, OfferState::Available, "{offer:?}");
    assert_eq!(
        offer.diff_text.as_deref(),
        Some("+ endpoint files.vendor.example:443\n")
    );
}

// ---- the TUF conformance client (#15) --------------------------------------

/// A plain HTTP server on loopback serving the files under `dir`, as the TUF
/// conformance suite serves its repositories.
async fn serve_dir(dir: PathBuf) -> std::net::SocketAddr {
    use axum::http::StatusCode;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let dir = dir.clone();
        async move {
            let rel = uri.path().trim_start_matches('/');
            if rel.split('/').any(|c| c == ".." || c.is_empty()) {
                return (StatusCode::NOT_FOUND, Vec::new());
            }
            match std::fs::read(dir.join(rel)) {
                Ok(b) => (StatusCode::OK, b),
                Err(_) => (StatusCode::NOT_FOUND, Vec::new()),
            }
        }
    });
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

#[test]
fn the_conformance_client_refreshes_downloads_and_refuses_what_tough_refuses() {
    let site = Site::new();
    let module = signed_by(&env().key, &collector("2.0.0", V2_CAPS));
    site.publish_module(&module);
    let addr = env().rt.block_on(serve_dir(site.repo()));
    let meta = site.dir.path().join("tuf-client/metadata");
    let out = site.dir.path().join("tuf-client/targets");
    let tuf = |extra: &[&str], op: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .arg("tuf-client")
            .arg("--metadata-dir")
            .arg(&meta)
            .args(extra)
            .args(op)
            .output()
            .unwrap()
    };
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let failed = |o: std::process::Output| -> String {
        assert_eq!(o.status.code(), Some(1), "must fail with exit code 1");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let root = path(&site.meta("1.root.json"));
    ok(tuf(&[], &["init", &root]));
    let meta_url = format!("http://{addr}/metadata");
    let targets_url = format!("http://{addr}/targets");
    ok(tuf(&["--metadata-url", &meta_url], &["refresh"]));
    for f in [
        "root.json",
        "timestamp.json",
        "snapshot.json",
        "targets.json",
    ] {
        assert!(meta.join(f).is_file(), "{f} is kept, unversioned");
    }
    let download = |name: &str| {
        tuf(
            &[
                "--metadata-url",
                &meta_url,
                "--target-name",
                name,
                "--target-base-url",
                &targets_url,
                "--target-dir",
                &path(&out),
            ],
            &["download"],
        )
    };
    ok(download("collector-2.0.0.wasm"));
    assert_eq!(
        std::fs::read(out.join("collector-2.0.0.wasm")).unwrap(),
        module
    );
    let err = failed(download("collector-9.9.9.wasm"));
    assert!(err.contains("not in the repository"), "{err}");
    // Two days ahead the timestamp (one day) has expired.
    let err = failed(tuf(
        &["--metadata-url", &meta_url, "--days-in-future", "2"],
        &["refresh"],
    ));
    assert!(err.contains("expired"), "{err}");
    // A served target that is not the one the metadata describes.
    let served = site.target_file("collector-2.0.0.wasm");
    let mut bytes = std::fs::read(&served).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 1;
    std::fs::write(&served, bytes).unwrap();
    std::fs::remove_file(out.join("collector-2.0.0.wasm")).unwrap();
    failed(download("collector-2.0.0.wasm"));
    assert!(
        !out.join("collector-2.0.0.wasm").exists(),
        "nothing unverified is written"
    );
    // Plain HTTP to anything but loopback is refused before connecting.
    let err = failed(tuf(
        &["--metadata-url", "http://updates.example/metadata"],
        &["refresh"],
    ));
    assert!(
        err.contains("scheme") || err.contains("Unsupported"),
        "{err}"
    );
}

// ---- hot swap and rollback in service (#15) --------------------------------

/// The notifier world signed as module `notifier` of `version`: the real
/// notifier, or the hostile fixture (which traps on a host problem whose
/// text is `trap`, and passes the install health check).
fn notifier(version: &str, hostile: bool) -> Vec<u8> {
    let mut m = manifest(
        "notifier",
        "notifier",
        "notify = true\nstate-quota-bytes = 65536",
        DEFAULT_LIMITS,
    );
    m.version = version.into();
    let wasm = if hostile {
        outpost_artifacts::FIXTURE_HOSTILE_NOTIFIER
    } else {
        outpost_artifacts::NOTIFIER
    };
    outpost_signing::sign::sign(&env().raw(wasm), &m, &[&env().key]).unwrap()
}

#[test]
fn an_update_installed_while_the_host_runs_is_loaded_and_rolled_back_when_it_traps() {
    use outpost_host::events::{Events, HostEvent, Setting};
    let mut site = Site::build(Utc::now(), "notifier", &notifier("1.0.0", false));
    site.config.supervisor.max_consecutive_failures = 2;
    site.config.supervisor.backoff_initial_ms = 10;
    site.config
        .updates
        .as_mut()
        .unwrap()
        .auto_install_without_new_capabilities = true;
    let id = site.offer_of(&notifier("2.0.0", true), "2.0.0");
    env().rt.block_on(async {
        let events = Events::default();
        let mut rx = events.subscribe();
        let agent = outpost_host::agent::Agent::build(site.config.clone(), events.clone()).unwrap();
        let sup = outpost_host::supervisor::Supervisor::start(&agent, events.clone());
        // Wait for an event matching `pred`, for at most 60 s.
        let mut wait_for = async |what: &str, pred: &dyn Fn(&HostEvent) -> bool| -> HostEvent {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Ok(e)) if pred(&e) => return e,
                    Ok(_) => {}
                    Err(_) => panic!("no {what} within 60 s"),
                }
            }
        };
        // Installed while the host runs (the health check passes: the
        // fixture ignores it) → loaded in place.
        let (config, db, ev) = (site.config.clone(), site.db(), events.clone());
        tokio::task::spawn_blocking(move || install::install(&config, &db, &ev, id, "test"))
            .await
            .unwrap()
            .unwrap();
        wait_for(
            "the install",
            &|e| matches!(e, HostEvent::UpdateInstalled { module, .. } if module == "notifier"),
        )
        .await;
        wait_for(
            "the reload",
            &|e| matches!(e, HostEvent::ModuleReady { module, .. } if module == "notifier"),
        )
        .await;
        // In service it traps: quarantined after two failures, then rolled
        // back to 1.0.0, which runs again.
        for _ in 0..2 {
            events.emit(HostEvent::problem(Setting::UplinkDisabled, "trap"));
        }
        let e = wait_for("rollback", &|e| {
            matches!(e, HostEvent::UpdateRolledBack { .. })
        })
        .await;
        let HostEvent::UpdateRolledBack {
            offer,
            failed_version,
            restored_version,
            reason,
            ..
        } = e
        else {
            unreachable!()
        };
        assert_eq!(
            (offer, failed_version.as_str(), restored_version.as_str()),
            (id, "2.0.0", "1.0.0")
        );
        assert!(
            reason.contains("trap") || reason.contains("panic"),
            "{reason}"
        );
        wait_for(
            "the old version loaded",
            &|e| matches!(e, HostEvent::ModuleReady { module, .. } if module == "notifier"),
        )
        .await;
        // 1.0.0 handles the next problem (the real notifier raises it).
        events.emit(HostEvent::problem(Setting::UplinkDisabled, "trap"));
        wait_for(
            "a call of 1.0.0",
            &|e| matches!(e, HostEvent::CallSucceeded { module, .. } if module == "notifier"),
        )
        .await;
        let h = sup.health()["notifier"].clone();
        assert!(!h.quarantined && h.consecutive_failures == 0, "{h:?}");
    });
    // On disk: the config's file again, the ledger back at 1.0.0, the offer
    // failed with the reason and an audit entry; the next start loads 1.0.0.
    assert_eq!(install::installed_file(&site.config, "notifier"), None);
    let ledger = outpost_host::store::versions::Versions::new(site.db());
    assert_eq!(ledger.highest("notifier").unwrap(), Some((1, 0, 0)));
    let offer = site.updater().offers().get(id).unwrap().unwrap();
    assert_eq!(offer.state, OfferState::Failed);
    assert!(offer.reason.unwrap().contains("rolled back"));
    let audit = site.updater().offers().audit(id).unwrap();
    let decisions: Vec<&str> = audit.iter().map(|a| a.decision.as_str()).collect();
    assert_eq!(decisions, ["installed", "failed"]);
    assert_eq!(site.loaded_version(), "1.0.0");
    // The same file is not offered again.
    let report = site.check().unwrap();
    assert!(
        report
            .offers
            .iter()
            .all(|o| o.state != OfferState::Available),
        "{report:?}"
    );
}
