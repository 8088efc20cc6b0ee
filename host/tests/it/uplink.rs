//! The uplink end to end: the real collector on the shared corpus, sealed,
//! spooled and sent over real TLS to the reference cloud on loopback; a host
//! killed at random points; the spool's full and disk-full paths.

use super::collector::{PHI, copy_corpus};
use super::harness::env;
use outpost_cloud::{Enrollment, EnrollmentToken, RunningServer, Server, ServerConfig, TestPki};
use outpost_host::agent::Agent;
use outpost_host::config::Config;
use outpost_host::events::{Events, HostEvent};
use outpost_host::runtime::bindings::collector::exports::outpost::agent::collect::Trigger;
use outpost_host::store::Db;
use outpost_host::store::spool::Spool;
use outpost_host::uplink::enroll::{Registration, enroll};
use outpost_host::uplink::sender::{Sender, SenderConfig, TokenBucket};
use outpost_host::uplink::{EnqueueError, Uplink};
use outpost_protocol as p;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The enrolment token of the test clouds.
const CLOUD_TOKEN: &str = "host-tests-enrolment-token";

/// The reference cloud on 127.0.0.1 with a CA made for the test; enrolment
/// needs [`CLOUD_TOKEN`].
pub(super) struct Cloud {
    server: Option<RunningServer>,
    ca: PathBuf,
    url: String,
    _dir: tempfile::TempDir,
}

impl Cloud {
    pub(super) fn start() -> Cloud {
        Self::start_with(|_| {})
    }

    fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
        pki.write(&dir.path().join("pki")).unwrap();
        let mut cfg = ServerConfig::new(
            dir.path().join("data"),
            "127.0.0.1:0".parse().unwrap(),
            pki.server_cert_pem.clone(),
            pki.server_key_pem.clone(),
            Enrollment::Token(EnrollmentToken::new(CLOUD_TOKEN).unwrap()),
        );
        adjust(&mut cfg);
        let server = env().rt.block_on(Server::start(cfg)).unwrap();
        let url = format!("https://127.0.0.1:{}", server.addr().port());
        Cloud {
            server: Some(server),
            ca: dir.path().join("pki/ca.pem"),
            url,
            _dir: dir,
        }
    }

    pub(super) fn store(&self) -> &outpost_cloud::Store {
        self.server.as_ref().unwrap().store()
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            env().rt.block_on(s.shutdown());
        }
    }
}

/// A host config (the example's three signed modules) over `logs`, uploading
/// to `cloud`, trusting only its CA; enrolled with it.
pub(super) fn enrolled_site(dir: &Path, logs: &Path, cloud: &Cloud, interval: u64) -> PathBuf {
    let state = dir.join("state");
    let sample =
        Path::new(outpost_artifacts::WORKSPACE_ROOT).join("examples/sample-data/instrument-logs");
    let text = outpost_artifacts::example_config(&state, interval)
        .replace(&format!("{sample:?}"), &format!("{logs:?}"))
        .replace(
            "# endpoint = \"https://ingest.private-cloud.example\"",
            &format!(
                "endpoint = \"{}\"\nretry-initial-ms = 100\nretry-max-ms = 1000",
                cloud.url
            ),
        )
        .replace(
            "extra-ca-files = []",
            &format!("extra-ca-files = [{:?}]\nonly-extra-cas = true", cloud.ca),
        );
    assert!(text.contains(&cloud.url) && text.contains(&format!("{logs:?}")));
    let path = dir.join("outpost.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let tls = outpost_host::agent::tls_for(&config).unwrap();
    let id = env()
        .rt
        .block_on(enroll(
            &cloud.url,
            &tls,
            &Registration {
                email: "lab.it@hospital.example".into(),
                name: "Lab IT".into(),
                instrument_model: "XN-550".into(),
                instrument_id: "HEM-01".into(),
                serial: "SN-20431".into(),
                token: Some(CLOUD_TOKEN.into()),
            },
        ))
        .unwrap();
    id.save(&state).unwrap();
    path
}

/// Sender settings for tests: fast retries, no bandwidth cap to speak of.
fn sender_config(endpoints: Vec<String>, software: Vec<p::SoftwareStatus>) -> SenderConfig {
    SenderConfig {
        endpoints,
        bytes_per_sec: 100 << 20,
        heartbeat_interval: Duration::from_secs(60),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_secs(1),
        request_timeout: Duration::from_secs(10),
        software,
    }
}

fn sender_for(agent: &Agent) -> Sender {
    let services = agent.runtime.services();
    Sender::new(
        services.uplink.clone(),
        Events::default(),
        &services.tls,
        sender_config(
            agent.config.uplink.endpoints(),
            agent
                .software
                .iter()
                .map(|(component, version)| p::SoftwareStatus {
                    instrument: p::Instrument {
                        model: "XN-550".into(),
                        serial: "SN-20431".into(),
                    },
                    component: component.clone(),
                    version: version.clone(),
                    state: p::InstallState::Installed,
                })
                .collect(),
        ),
    )
    .unwrap()
}

/// A comparable form of a QC result: every field the record carries.
fn qc_key(q: &p::QcResult) -> String {
    serde_json::to_string(q).unwrap()
}

#[test]
fn corpus_over_tls_arrives_exactly_once_field_by_field_without_phi() {
    let cloud = Cloud::start();
    let site = tempfile::tempdir().unwrap();
    let logs = site.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    copy_corpus(&logs);
    let config = Config::load(&enrolled_site(site.path(), &logs, &cloud, 300)).unwrap();
    let agent = env()
        .rt
        .block_on(async { Agent::build(config, Events::default()) })
        .unwrap();
    let collector = agent
        .modules
        .iter()
        .find(|m| m.name() == "collector")
        .unwrap();
    env()
        .rt
        .block_on(agent.runtime.collect(collector, Trigger::Startup))
        .unwrap();
    let mut sender = sender_for(&agent);
    let (outcome, delivered) = env()
        .rt
        .block_on(sender.drain(&mut TokenBucket::new(100 << 20)));
    assert_eq!(outcome, None, "every batch acknowledged");
    assert!(delivered >= 2, "heartbeat and QC batches: {delivered}");
    assert_eq!(agent.runtime.services().spool.pending().unwrap().0, 0);

    // What the library makes of the same files, natively: the expected QC results.
    let fallback = outpost_collector_core::Instrument {
        model: "XN-550".into(),
        serial: "SN-20431".into(),
    };
    let mut expected: Vec<String> = Vec::new();
    for f in std::fs::read_dir(&logs).unwrap() {
        let f = f.unwrap().path();
        let bytes = std::fs::read(&f).unwrap();
        let out = if f.extension().unwrap() == "astm" {
            outpost_collector_core::astm::parse(&bytes, &fallback)
        } else {
            outpost_collector_core::hl7::parse(&bytes, &fallback)
        };
        for r in out.records {
            let outpost_collector_core::Record::Qc(q) = r else {
                panic!("only QC results from transcripts")
            };
            // The wire form of the same result (names as on the wire).
            let wire = p::QcResult {
                instrument: p::Instrument {
                    model: q.instrument.model,
                    serial: q.instrument.serial,
                },
                analyte: q.analyte,
                value: q.value,
                unit: q.unit,
                reference_range: q.reference_range,
                flags: q.flags,
                control_lot: q.control_lot,
                control_level: q.control_level,
                run_time: q.run_time.map(|t| p::Timestamp {
                    seconds: t.seconds,
                    nanoseconds: t.nanoseconds,
                }),
            };
            expected.push(qc_key(&wire));
        }
    }
    expected.sort();
    assert_eq!(expected.len(), 41);

    let stored = cloud.store().batches(None, None).unwrap();
    let mut got: Vec<String> = stored
        .iter()
        .filter(|b| b.stream == "qc")
        .flat_map(|b| b.body.records.iter())
        .map(|r| match r {
            p::Record::Qc(q) => qc_key(q),
            other => panic!("a non-QC record on the qc stream: {}", other.kind()),
        })
        .collect();
    got.sort();
    assert_eq!(got, expected, "exactly the expected QC results, once each");
    let all = serde_json::to_string(&stored).unwrap();
    for phi in PHI {
        assert!(!all.contains(phi), "PHI value {phi:?} reached the cloud");
    }
    // A heartbeat reports online status and the software that runs.
    assert_eq!(
        env().rt.block_on(sender.heartbeat()),
        outpost_host::uplink::sender::Outcome::Acked
    );
    // Device identity on every batch; nothing refused by the cloud.
    let device = &cloud.store().devices().unwrap()[0];
    let status = cloud.store().status(&device.device_id).unwrap().unwrap();
    assert!(status.heartbeat.online);
    assert_eq!(status.heartbeat.queued_batches, 0);
    let components: Vec<&str> = status
        .heartbeat
        .software
        .iter()
        .map(|s| s.component.as_str())
        .collect();
    assert!(
        components.contains(&"outpost-host") && components.contains(&"collector"),
        "{components:?}"
    );
    let counters = cloud.store().counters().unwrap();
    assert_eq!(counters.get("authentication-failed"), Some(&0));
    assert_eq!(counters.get("replay"), Some(&0));
    assert_eq!(counters.get("accepted"), Some(&(stored.len() as u64)));
}

/// The texts of every event record `cloud` stored.
pub(super) fn event_texts(cloud: &Cloud) -> Vec<String> {
    cloud
        .store()
        .batches(None, Some("events"))
        .unwrap()
        .into_iter()
        .flat_map(|b| b.body.records)
        .filter_map(|r| match r {
            p::Record::Event(e) => Some(e.text),
            _ => None,
        })
        .collect()
}

/// Every line written arrived once: none lost, none twice.
pub(super) fn assert_once(cloud: &Cloud, written: &[String]) {
    let mut got = event_texts(cloud);
    got.sort();
    let mut want = written.to_vec();
    want.sort();
    let dups: Vec<_> = got.windows(2).filter(|w| w[0] == w[1]).collect();
    assert!(
        dups.is_empty(),
        "duplicated at the cloud: {:?}",
        &dups[..dups.len().min(5)]
    );
    assert_eq!(got.len(), want.len(), "lost records");
    assert_eq!(got, want);
    let counters = cloud.store().counters().unwrap();
    assert_eq!(counters.get("authentication-failed"), Some(&0));
}

/// `rounds` runs of `outpost run`, new instrument output written before
/// each, each run ended by `stop` at a random point (150 ms to
/// `max_run_ms` more after its start) while batches are on
/// their way over a slow uplink (0.1 Mbit/s); then one run left alone until
/// everything arrived. Every record arrives once; at least one stop landed
/// with records still on their way.
fn stopped_runs_lose_and_duplicate_nothing(
    rounds: usize,
    max_run_ms: u64,
    stop: &dyn Fn(&mut std::process::Child),
) {
    let cloud = Cloud::start();
    let site = tempfile::tempdir().unwrap();
    let logs = site.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = enrolled_site(site.path(), &logs, &cloud, 1);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("bandwidth-mbit = 6.0", "bandwidth-mbit = 0.1"),
    )
    .unwrap();
    let exe = env!("CARGO_BIN_EXE_outpost");
    let mut interrupted = 0;
    let mut written = Vec::new();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..rounds {
        // New instrument output arrives between (and during) runs.
        let mut text = String::new();
        for i in 0..(40 + round * 7) {
            // A random tail, so that batches compress little and take a
            // while on the slow uplink.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let line = format!("W-0001 round {round} line {i} {rng:016x}");
            text.push_str(&format!("2026-11-29 10:00:00 WARN {line}\n"));
            written.push(line);
        }
        let log = logs.join(format!("app-{}.log", round % 3));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        drop(f);
        let mut child = std::process::Command::new(exe)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(150 + rng % max_run_ms));
        stop(&mut child);
        if event_texts(&cloud).len() < written.len() {
            interrupted += 1;
        }
    }
    // One last run, left alone until everything has arrived.
    let mut child = std::process::Command::new(exe)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while event_texts(&cloud).len() < written.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    // A little longer: a duplicate would show up now.
    std::thread::sleep(Duration::from_secs(2));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_once(&cloud, &written);
    assert!(
        interrupted > 0,
        "no stop landed before everything had arrived: the test proved nothing"
    );
    eprintln!("{interrupted} of {rounds} stops landed with records still on their way");
}

#[test]
fn host_killed_at_random_points_loses_and_duplicates_nothing() {
    stopped_runs_lose_and_duplicate_nothing(24, 1500, &|child| {
        child.kill().unwrap(); // SIGKILL on Unix, TerminateProcess on Windows
        child.wait().unwrap();
    });
}

/// The service manager's stop on Linux (systemd sends SIGTERM) while
/// batches are on their way and the collector reads: each run exits 0
/// within the stop timeout, and nothing is lost or sent twice.
#[cfg(unix)]
#[test]
fn sigterm_during_uploads_loses_and_duplicates_nothing() {
    // A stopped host sends what it holds before it leaves, so stops land
    // early in a run to catch batches on their way.
    stopped_runs_lose_and_duplicate_nothing(24, 700, &|child| {
        let sent = std::time::Instant::now();
        let term = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(60),
                "no exit within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "a clean stop exits 0: {status:?}");
    });
}

fn test_uplink(dir: &Path) -> (Db, Uplink, Events) {
    let db = Db::open(dir).unwrap();
    let events = Events::default();
    let uplink = Uplink::new(Spool::new(db.clone()), events.clone());
    uplink.set_identity(Some(outpost_host::uplink::identity::Identity {
        device_id: p::DeviceId::parse("spool-test").unwrap(),
        key: p::DeviceKey::generate(),
        server: "https://127.0.0.1:9".into(),
        enrolled_at: 0,
    }));
    (db, uplink, events)
}

fn event(text: &str) -> p::Record {
    p::Record::Event(p::InstrumentEvent {
        instrument: p::Instrument {
            model: "XN-550".into(),
            serial: "SN-1".into(),
        },
        severity: p::Severity::Warning,
        code: "W-0412".into(),
        text: text.into(),
        time: None,
    })
}

fn qc(value: &str) -> p::Record {
    p::Record::Qc(p::QcResult {
        instrument: p::Instrument {
            model: "XN-550".into(),
            serial: "SN-1".into(),
        },
        analyte: "WBC".into(),
        value: value.into(),
        unit: "10*3/uL".into(),
        reference_range: "4.0-10.0".into(),
        flags: vec![],
        control_lot: "LOT4711".into(),
        control_level: "2".into(),
        run_time: None,
    })
}

#[test]
fn a_full_spool_drops_oldest_events_first_never_qc_and_counts_every_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, uplink, events) = test_uplink(dir.path());
    let mut rx = events.subscribe();
    // Incompressible-ish text so each envelope has a stable, real size.
    let noisy = |i: usize| {
        (0..40)
            .map(|k| format!("{:x}", (i * 7919 + k * 104_729) % 65_521))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let one = uplink
        .enqueue("collector", "events", vec![event(&noisy(0))])
        .unwrap();
    let size = uplink.spool().pending().unwrap().1;
    assert!(size > 100);
    uplink.spool().ack(one as i64).unwrap();
    // Room for about six envelopes.
    uplink.set_max_bytes(size * 6 + size / 2);
    let qc_seqs: Vec<u64> = (0..3)
        .map(|i| {
            uplink
                .enqueue("collector", "qc", vec![qc(&format!("{i}.0"))])
                .unwrap()
        })
        .collect();
    let mut event_seqs = Vec::new();
    for i in 1..=8 {
        event_seqs.push(
            uplink
                .enqueue("collector", "events", vec![event(&noisy(i))])
                .unwrap(),
        );
    }
    let left: Vec<i64> = uplink
        .spool()
        .list()
        .unwrap()
        .iter()
        .map(|b| b.seq)
        .collect();
    for s in &qc_seqs {
        assert!(left.contains(&(*s as i64)), "QC batch {s} was dropped");
    }
    assert!(
        !left.contains(&(event_seqs[0] as i64)),
        "the oldest event batch goes first"
    );
    assert!(left.contains(&(*event_seqs.last().unwrap() as i64)));
    let dropped = uplink.spool().counters().unwrap()["dropped:events"];
    assert_eq!(
        dropped as usize,
        event_seqs.len() + qc_seqs.len() - left.len()
    );
    let seen: Vec<HostEvent> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert!(
        seen.iter().any(|e| matches!(e, HostEvent::SettingProblem { setting, .. } if setting.code() == "uplink-dropped:events")),
        "{seen:?}"
    );

    // Only QC left and no room: refused, nothing dropped, the module keeps its data.
    uplink.set_max_bytes(size * 2);
    for s in left {
        if !qc_seqs.contains(&(s as u64)) {
            uplink.spool().ack(s).unwrap();
        }
    }
    let before = uplink.spool().list().unwrap();
    let err = uplink
        .enqueue("collector", "qc", vec![qc("9.9")])
        .unwrap_err();
    assert!(
        matches!(
            err,
            EnqueueError::Spool(outpost_host::store::spool::SpoolError::Full { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("never dropped"), "{err}");
    assert_eq!(uplink.spool().list().unwrap(), before, "nothing changed");
    // The running byte total agrees with the envelopes actually stored.
    let (n, bytes) = uplink.spool().pending().unwrap();
    assert_eq!(n as usize, before.len());
    assert_eq!(bytes, before.iter().map(|b| b.bytes as u64).sum::<u64>());
    assert_eq!(uplink.spool().counters().unwrap()["spool-full"], 1);
}

#[test]
fn a_full_disk_is_a_clear_error_and_corrupts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, uplink, events) = test_uplink(dir.path());
    let mut rx = events.subscribe();
    let mut seqs = Vec::new();
    for i in 0..20 {
        seqs.push(
            uplink
                .enqueue("collector", "qc", vec![qc(&format!("{i}.5"))])
                .unwrap(),
        );
    }
    // The disk fills up: the database cannot grow by a single page (SQLite
    // keeps the cap at least at the current size).
    db.limit_size(0).unwrap();
    // Incompressible text, so the sealed batch needs new pages.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<p::Record> = (0..200)
        .map(|_| {
            let text: String = (0..60)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("{:x}", x % 4096)
                })
                .collect::<Vec<_>>()
                .join(" ");
            event(&text)
        })
        .collect();
    let err = uplink.enqueue("collector", "events", big).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("full"), "names the cause: {text}");
    let seen: Vec<HostEvent> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert!(
        seen.iter().any(|e| matches!(e, HostEvent::SettingProblem { setting, .. } if setting.code() == "uplink-spool-unwritable")),
        "{seen:?}"
    );
    // What was queued before is intact and still opens.
    assert!(db.integrity_ok().unwrap());
    let listed: Vec<i64> = uplink
        .spool()
        .list()
        .unwrap()
        .iter()
        .map(|b| b.seq)
        .collect();
    assert_eq!(listed, seqs.iter().map(|s| *s as i64).collect::<Vec<_>>());
    for (i, s) in seqs.iter().enumerate() {
        let body = uplink.read_back(*s as i64).unwrap();
        assert_eq!(body.records, vec![qc(&format!("{i}.5"))]);
    }
    // Space again: queueing works again.
    db.limit_size(1 << 30).unwrap();
    uplink
        .enqueue("collector", "events", vec![event("after")])
        .unwrap();
}

#[test]
fn outpost_enroll_registers_the_device_and_keeps_its_key_private() {
    let cloud = Cloud::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        format!(
            "state-dir = \"state\"\n[network]\nextra-ca-files = [{:?}]\nonly-extra-cas = true\n[uplink]\nendpoint = \"{}\"\n",
            cloud.ca, cloud.url
        ),
    )
    .unwrap();
    let exe = env!("CARGO_BIN_EXE_outpost");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{CLOUD_TOKEN}\n")).unwrap();
    let registration = [
        "--email",
        "lab.it@hospital.example",
        "--name",
        "Lab IT",
        "--instrument-model",
        "XN-550",
        "--instrument-id",
        "HEM-01",
        "--serial",
        "SN-20431",
    ];
    // A token on the command line is refused (the process list shows it),
    // and nothing is enrolled.
    let on_command_line = std::process::Command::new(exe)
        .args(["enroll", "--config"])
        .arg(&config)
        .args(registration)
        .args(["--token", CLOUD_TOKEN])
        .output()
        .unwrap();
    assert!(!on_command_line.status.success());
    assert!(
        String::from_utf8_lossy(&on_command_line.stderr).contains("--token-file"),
        "{}",
        String::from_utf8_lossy(&on_command_line.stderr)
    );
    assert!(cloud.store().devices().unwrap().is_empty());
    let enroll = || {
        std::process::Command::new(exe)
            .args(["enroll", "--config"])
            .arg(&config)
            .args([
                "--email",
                "lab.it@hospital.example",
                "--name",
                "Lab IT",
                "--instrument-model",
                "XN-550",
                "--instrument-id",
                "HEM-01",
                "--serial",
                "SN-20431",
                "--token-file",
            ])
            .arg(&token_file)
            .output()
            .unwrap()
    };
    let out = enroll();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let identity = dir.path().join("state/device.json");
    let device = cloud.store().devices().unwrap();
    assert_eq!(device.len(), 1);
    assert!(stdout.contains(device[0].device_id.as_str()), "{stdout}");
    // The registration is stored at the cloud as entered; the key only on the PC.
    assert_eq!(device[0].serial, "SN-20431");
    assert_eq!(device[0].email, "lab.it@hospital.example");
    let text = std::fs::read_to_string(&identity).unwrap();
    assert!(!stdout.contains(&text[text.find("\"key\"").unwrap() + 8..][..64]));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&identity).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "device.json readable by others");
    }
    // A second enrolment does not silently replace the identity.
    let again = enroll();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already enrolled"));
    assert_eq!(std::fs::read_to_string(&identity).unwrap(), text);
    // `outpost uplink` shows the device and an empty queue.
    let status = std::process::Command::new(exe)
        .args(["uplink", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains(device[0].device_id.as_str()) && status.contains("waiting: 0"),
        "{status}"
    );
}

/// After the device database was restored from a backup, a sequence can come
/// round again with other content: the cloud keeps what it has and says so,
/// the host reseals the batch under a new sequence, and both arrive.
#[test]
fn a_sequence_the_cloud_holds_with_other_content_is_sent_again_renumbered() {
    let cloud = Cloud::start();
    let site = tempfile::tempdir().unwrap();
    let logs = site.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = Config::load(&enrolled_site(site.path(), &logs, &cloud, 300)).unwrap();
    let identity = outpost_host::uplink::identity::Identity::load(&config.state_dir).unwrap();
    let tls = outpost_host::agent::tls_for(&config).unwrap();
    let (_db, uplink, _events) = test_uplink(&site.path().join("spool"));
    let seq = {
        // The same identity as the enrolled device.
        let copy = outpost_host::uplink::identity::Identity::load(&config.state_dir).unwrap();
        uplink.set_identity(Some(copy));
        uplink.enqueue("collector", "qc", vec![qc("7.7")]).unwrap()
    };
    // "The device's earlier life" already sent other content under that sequence.
    let earlier = p::seal(
        &identity.key,
        &identity.device_id,
        "qc",
        seq,
        &p::BatchBody {
            created_at: 1,
            records: vec![qc("1.1")],
        },
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .build()
        .unwrap();
    let status = env().rt.block_on(async {
        client
            .post(format!("{}{}", cloud.url, p::INGEST_PATH))
            .body(earlier)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);

    let uplink = std::sync::Arc::new(uplink);
    let mut sender = Sender::new(
        uplink.clone(),
        Events::default(),
        &tls,
        sender_config(vec![cloud.url.clone()], Vec::new()),
    )
    .unwrap();
    let (outcome, delivered) = env()
        .rt
        .block_on(sender.drain(&mut TokenBucket::new(100 << 20)));
    assert_eq!((outcome, delivered), (None, 1));
    assert_eq!(uplink.spool().pending().unwrap(), (0, 0));
    assert_eq!(uplink.spool().counters().unwrap()["renumbered"], 1);
    let stored = cloud.store().batches(None, Some("qc")).unwrap();
    let values: Vec<(u64, String)> = stored
        .iter()
        .map(|b| match &b.body.records[0] {
            p::Record::Qc(q) => (b.sequence, q.value.clone()),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(values.len(), 2, "{values:?}");
    assert_eq!(
        values[0],
        (seq, "1.1".to_string()),
        "the cloud kept what it had"
    );
    assert!(values[1].0 > seq && values[1].1 == "7.7", "{values:?}");
    assert_eq!(cloud.store().counters().unwrap()["sequence-conflict"], 1);
}

/// When the host cannot take data (here: not enrolled yet), a collector call
/// ends quietly — not a failure, so no back-off and no quarantine — and keeps
/// its cursors, so the data comes once the host can take it.
#[test]
fn a_collector_waits_without_failing_while_the_host_cannot_queue() {
    let site = tempfile::tempdir().unwrap();
    let logs = site.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        logs.join("app.log"),
        "2026-11-29 10:00:00 WARN W-0001 one\n2026-11-29 10:00:01 WARN W-0002 two\n",
    )
    .unwrap();
    let sample =
        Path::new(outpost_artifacts::WORKSPACE_ROOT).join("examples/sample-data/instrument-logs");
    let path = site.path().join("outpost.toml");
    std::fs::write(
        &path,
        outpost_artifacts::example_config(&site.path().join("state"), 300)
            .replace(&format!("{sample:?}"), &format!("{logs:?}")),
    )
    .unwrap();
    let agent = env()
        .rt
        .block_on(async { Agent::build(Config::load(&path).unwrap(), Events::default()) })
        .unwrap();
    let collector = agent
        .modules
        .iter()
        .find(|m| m.name() == "collector")
        .unwrap();
    let report = env()
        .rt
        .block_on(agent.runtime.collect(collector, Trigger::Schedule))
        .expect("waiting is not a failure");
    assert_eq!(report.records_queued, 0);
    let services = agent.runtime.services();
    services
        .uplink
        .set_identity(Some(outpost_host::uplink::identity::Identity {
            device_id: p::DeviceId::parse("late-device").unwrap(),
            key: p::DeviceKey::generate(),
            server: "https://127.0.0.1:9".into(),
            enrolled_at: 0,
        }));
    let report = env()
        .rt
        .block_on(agent.runtime.collect(collector, Trigger::Schedule))
        .unwrap();
    assert_eq!(
        report.records_queued, 3,
        "a heartbeat and both lines: {report:?}"
    );
}

/// The cloud refuses one envelope (too large for it): that batch is moved
/// aside, kept and counted, and the batches behind it are still delivered.
#[test]
fn an_envelope_the_cloud_refuses_is_set_aside_and_the_rest_goes_on() {
    let cloud = Cloud::start_with(|c| c.max_body_bytes = 4096);
    let site = tempfile::tempdir().unwrap();
    let logs = site.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = Config::load(&enrolled_site(site.path(), &logs, &cloud, 300)).unwrap();
    let tls = outpost_host::agent::tls_for(&config).unwrap();
    let (_db, uplink, events) = test_uplink(&site.path().join("spool"));
    let mut rx = events.subscribe();
    uplink.set_identity(Some(
        outpost_host::uplink::identity::Identity::load(&config.state_dir).unwrap(),
    ));
    let first = uplink.enqueue("collector", "qc", vec![qc("1.0")]).unwrap();
    // Incompressible event text: an envelope well over the cloud's 4 KiB.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let big: Vec<p::Record> = (0..100)
        .map(|_| {
            let text: String = (0..20)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("{x:016x}")
                })
                .collect::<Vec<_>>()
                .join(" ");
            event(&text)
        })
        .collect();
    let big = uplink.enqueue("collector", "events", big).unwrap();
    let last = uplink.enqueue("collector", "qc", vec![qc("2.0")]).unwrap();
    assert!(uplink.spool().body(big as i64).unwrap().len() > 4096);

    let uplink = std::sync::Arc::new(uplink);
    let mut sender = Sender::new(
        uplink.clone(),
        events.clone(),
        &tls,
        sender_config(vec![cloud.url.clone()], Vec::new()),
    )
    .unwrap();
    let (outcome, delivered) = env()
        .rt
        .block_on(sender.drain(&mut TokenBucket::new(100 << 20)));
    assert_eq!((outcome, delivered), (None, 2));
    assert_eq!(uplink.spool().pending().unwrap(), (0, 0));
    assert_eq!(uplink.spool().counters().unwrap()["dead-letter:events"], 1);
    let stored: Vec<u64> = cloud
        .store()
        .batches(None, None)
        .unwrap()
        .iter()
        .map(|b| b.sequence)
        .collect();
    assert_eq!(stored, [first, last]);
    let seen: Vec<HostEvent> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert!(
        seen.iter().any(|e| matches!(e, HostEvent::SettingProblem { setting, .. } if setting.code() == "uplink-dead-letter:events")),
        "{seen:?}"
    );
}

/// Issue #19: `kill -9` while a backlog drains (calls back to back, each
/// stopping at its budget) loses and duplicates nothing: each batch is
/// queued with its file cursor in one transaction, and the cloud stores each
/// sequence once.
#[test]
fn a_host_killed_while_draining_a_backlog_loses_and_duplicates_nothing() {
    let cloud = Cloud::start();
    let site = tempfile::tempdir().unwrap();
    let logs = site.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // An hour between scheduled calls: everything after the first call is
    // the drain.
    let config = enrolled_site(site.path(), &logs, &cloud, 3600);
    const LINES: usize = 50_000;
    let mut text = String::with_capacity(LINES * 60);
    let mut written = Vec::with_capacity(LINES);
    for i in 0..LINES {
        let line = format!("I-0001 drain {i:06}");
        text.push_str(&format!("2026-11-29 10:00:00 INFO {line}\n"));
        written.push(line);
    }
    std::fs::write(logs.join("backlog.log"), text).unwrap();
    let exe = env!("CARGO_BIN_EXE_outpost");
    let texts = || -> Vec<String> {
        cloud
            .store()
            .batches(None, Some("events"))
            .unwrap()
            .into_iter()
            .flat_map(|b| b.body.records)
            .filter_map(|r| match r {
                p::Record::Event(e) => Some(e.text),
                _ => None,
            })
            .collect()
    };
    let state = Config::load(&config).unwrap().state_dir;
    // Lines queued or delivered so far (a batch in flight may count twice).
    let progress = || -> usize {
        let waiting: i64 = Spool::new(Db::open(&state).unwrap())
            .list()
            .unwrap()
            .iter()
            .filter(|b| b.stream == "events")
            .map(|b| b.records)
            .sum();
        waiting as usize + texts().len()
    };
    let mut mid_drain = 0;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..6 {
        let before = progress();
        let mut child = std::process::Command::new(exe)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill once this run has queued something (the drain is under
        // way), at a random moment soon after.
        let started = std::time::Instant::now();
        while progress() == before && before < LINES && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(rng % 400));
        child.kill().unwrap(); // SIGKILL on Unix, TerminateProcess on Windows
        child.wait().unwrap();
        if progress() < LINES {
            mid_drain += 1;
        }
    }
    let mut child = std::process::Command::new(exe)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while texts().len() < LINES && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(2));
    child.kill().unwrap();
    child.wait().unwrap();
    let mut got = texts();
    got.sort();
    let dups: Vec<_> = got.windows(2).filter(|w| w[0] == w[1]).collect();
    assert!(
        dups.is_empty(),
        "duplicated at the cloud: {:?}",
        &dups[..dups.len().min(5)]
    );
    assert_eq!(got.len(), LINES, "lost records");
    assert_eq!(got, written);
    assert!(
        mid_drain > 0,
        "no kill landed during the drain: the test proved nothing"
    );
    // Nothing was refused on the way.
    let counters = Spool::new(Db::open(&state).unwrap()).counters().unwrap();
    assert_eq!(counters.get("guard-refused"), None, "{counters:?}");
}

/// The support audit through the uplink to the reference cloud: every entry
/// arrives, in order, once, also after a "restart" (a new upload over the
/// same database) and after a full spool held it back; a file transfer's
/// name never leaves the PC (its keyed hash does).
#[test]
fn the_support_audit_arrives_in_order_once_without_file_names() {
    use outpost_host::support::audit::AuditChain;
    use outpost_host::support::upload::{AuditUpload, STREAM};
    use serde_json::json;
    const NAME: &str = "Smith_John_1970-01-01_results.csv";

    assert!(!outpost_host::store::spool::droppable(STREAM));
    let cloud = Cloud::start();
    let site = tempfile::tempdir().unwrap();
    let logs = site.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = Config::load(&enrolled_site(site.path(), &logs, &cloud, 300)).unwrap();
    let tls = outpost_host::agent::tls_for(&config).unwrap();
    let (db, uplink, _events) = test_uplink(&site.path().join("spool"));
    uplink.set_identity(Some(
        outpost_host::uplink::identity::Identity::load(&config.state_dir).unwrap(),
    ));
    let uplink = std::sync::Arc::new(uplink);
    let chain = AuditChain::new(db.clone());
    let session = "K7QMX3HDRW9P";
    let mut at = 1_700_000_000_000i64;
    let mut add = |kind: &str, detail: serde_json::Value| {
        at += 1;
        chain.append(at, kind, session, &detail).unwrap()
    };
    add("support-request", json!({ "by": "local-api" }));
    add(
        "auth-failed",
        json!({ "engineer": "eng-0001", "failures": 1 }),
    );
    add("approval", json!({ "permissions": "view,file-transfer" }));
    add(
        "file-transfer",
        json!({ "name": NAME, "size": 1234, "sha256": "ab".repeat(32), "direction": "to-pc", "outcome": "done" }),
    );
    add(
        "file-transfer",
        json!({ "name": NAME, "size": 0, "sha256": "", "direction": "from-pc", "outcome": format!("file {NAME:?} not found") }),
    );
    let mut sender = Sender::new(
        uplink.clone(),
        Events::default(),
        &tls,
        sender_config(vec![cloud.url.clone()], Vec::new()),
    )
    .unwrap();
    let mut drain = || {
        env()
            .rt
            .block_on(sender.drain(&mut TokenBucket::new(100 << 20)))
    };

    let up = AuditUpload::new(db.clone(), uplink.clone());
    assert_eq!(up.run_once().unwrap(), 5);
    assert_eq!(up.cursor().unwrap(), 5);
    assert_eq!(up.run_once().unwrap(), 0, "nothing twice");
    assert_eq!(drain().0, None);

    // A restart: a new upload over the same database queues nothing again.
    let up = AuditUpload::new(db.clone(), uplink.clone());
    assert_eq!(up.run_once().unwrap(), 0);
    // A full spool holds new entries back (never dropped); they go once
    // there is room.
    add("session-ended", json!({ "reason": "ended at the PC" }));
    uplink.set_max_bytes(1);
    let e = up.run_once().unwrap_err();
    assert!(e.to_string().contains("spool full"), "{e}");
    assert_eq!(up.cursor().unwrap(), 5);
    uplink.set_max_bytes(1 << 20);
    add("checkpoint-note", json!({ "n": 7 }));
    assert_eq!(up.run_once().unwrap(), 2);
    // An entry the PHI guard refuses is kept as a dead letter; the cursor
    // passes it and the next entry goes.
    add(
        "session-ended",
        json!({ "reason": "the patient's SSN is 123-45-6789" }),
    );
    add("support-request", json!({ "by": "local-api" }));
    assert_eq!(up.run_once().unwrap(), 2);
    assert_eq!(up.cursor().unwrap(), 9);
    let dead = uplink.spool().dead_letters().list().unwrap();
    assert!(
        dead.iter().any(|d| d.stream == STREAM && d.reason == "ssn"),
        "{dead:?}"
    );
    assert_eq!(drain().0, None);
    assert_eq!(uplink.spool().pending().unwrap(), (0, 0));

    let batches = cloud.store().batches(None, Some(STREAM)).unwrap();
    let got: Vec<p::SupportAuditEntry> = batches
        .iter()
        .flat_map(|b| b.body.records.iter())
        .map(|r| match r {
            p::Record::SupportAudit(a) => a.clone(),
            other => panic!("not an audit entry: {other:?}"),
        })
        .collect();
    let local = chain.entries(None, 1000).unwrap();
    assert_eq!(
        got.iter().map(|a| a.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7, 9],
        "in order, once (8 is a dead letter)"
    );
    for (a, l) in got.iter().zip(local.iter().filter(|l| l.seq != 8)) {
        assert_eq!(
            (a.seq, a.at_ms, &a.entry_kind, &a.hash, &a.prev),
            (l.seq, l.at_ms, &l.kind, &l.hash, &l.prev)
        );
        if l.kind == "file-transfer" {
            assert_eq!(a.detail, "{}");
        } else {
            assert_eq!(a.detail, l.detail);
        }
    }
    // The file's name: a keyed hash, the same for both transfers; not in
    // any batch the cloud holds.
    let files: Vec<&p::SupportAuditFile> = got.iter().filter_map(|a| a.file.as_ref()).collect();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].name_hmac, files[1].name_hmac);
    assert_eq!(files[0].name_hmac.len(), 64);
    assert!((files[0].done, files[1].done) == (true, false));
    assert_eq!(
        (files[0].size, files[0].direction.as_str()),
        (1234, "to-pc")
    );
    for b in &batches {
        let text = serde_json::to_string(&b.body).unwrap();
        assert!(!text.contains("Smith"), "a file name left the PC: {text}");
    }
    // The local chain keeps the plain name and still verifies.
    assert!(local[3].detail.contains(NAME));
    assert_eq!(chain.verify(None).unwrap().first_bad, None);
}
