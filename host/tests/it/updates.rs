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
        std::fs::write(
            d.join("collector-1.0.0.wasm"),
            signed_by(&env().key, &collector("1.0.0", V1_CAPS)),
        )
        .unwrap();
        let text = format!(
            "state-dir = \"{state}\"\n\
             [[instrument]]\nmodel = \"XN-550\"\nserial = \"SN-1\"\n\
             [[trust.keys]]\nname = \"test-publisher\"\npublic-key = \"{key}\"\n\
             [network]\nextra-ca-files = [\"{ca}\"]\nonly-extra-cas = true\n\
             [uplink]\nendpoint = \"{url}\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\n\
             [updates]\nroot = \"{root}\"\nrepository = \"{url}/v1/updates\"\nrequest-timeout-secs = 10\n\
             [directories]\ninstrument-logs = \"{logs}\"\n\
             [policy]\ndirectories = [\"instrument-logs\"]\n\
             endpoints = [\"api.vendor.example:443\", \"files.vendor.example:443\"]\n\
             uplink-streams = [\"heartbeat\", \"events\", \"qc\", \"maintenance\", \"software\"]\n\
             max-state-quota-bytes = 65536\n\
             max-memory-mib = 256\nmax-cpu-ms-per-call = 60000\nmax-wall-ms-per-call = 60000\n\
             [[module]]\nname = \"collector\"\nfile = \"{file}\"\n",
            logs = path(&env().root.join("instrument-logs")),
            state = path(&d.join("state")),
            key = outpost_signing::public_key_to_hex(&env().key.verifying_key()),
            ca = path(&d.join("pki/ca.pem")),
            root = path(&d.join("repo/metadata/1.root.json")),
            file = path(&d.join("collector-1.0.0.wasm")),
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
        } => {
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
            until(Duration::from_secs(10), "the decided update leaves the list", || async {
                Ok(count(&client, &item).await? == 0)
            })
            .await?;
            Ok(())
        })
        .await;
        let _ = client.close().await;
        let (_, decided) = host.call(reqwest::Method::GET, &format!("/api/v1/updates/{id}")).await;
        assert_eq!(decided["state"], "approved", "{decided}");
        assert_eq!(decided["approved-digest"], offer["diff-digest"]);
        let last = decided["audit"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["client"], "dashboard", "{decided}");
        assert_eq!(last["diff-digest"], offer["diff-digest"]);
    });
}
