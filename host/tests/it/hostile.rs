//! Hostile modules against the host's limits (issue #20, items 1-6): a guest
//! that spins without calling the host, blocks in a file read, takes memory
//! through many memories and tables, holds host resources, floods the log,
//! forges log lines or hands the host patient data as text. Each ends its own
//! call at most; the host and the other modules carry on.

use super::harness::{DEFAULT_LIMITS, env, host_log, manifest, permissive};
use outpost_host::grants::Grant;
use outpost_host::runtime::bindings::collector::exports::outpost::agent::collect::Trigger;
use outpost_host::runtime::{CallError, Runtime};
use outpost_host::store::state::ModuleState;
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Run `f` on a thread of its own and wait at most `limit` for its answer:
/// a hang fails the test instead of stalling the suite.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("no answer within {limit:?}: the host is stalled"))
}

fn collect(name: &str, escape: &str, arg: &str, limits: &str) -> Result<(u32, u32), CallError> {
    let e = env();
    let m = e.escape(
        name,
        "directories = [\"instrument-logs\"]",
        limits,
        escape,
        arg,
    );
    e.rt.block_on(e.runtime.collect(&m, Trigger::Schedule))
        .map(|r| (r.files_scanned, r.records_queued))
}

#[test]
fn a_spinning_guest_ends_at_its_cpu_deadline_on_a_single_threaded_runtime() {
    // The runtime lives on a current-thread tokio runtime: the thread that
    // runs the spinning guest is the only one tokio has. The epoch must tick
    // anyway (a ticker task there would never run again).
    let res = within(Duration::from_secs(60), || {
        let e = env();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let runtime = rt.block_on(async { Runtime::new(e.runtime.services().clone(), 64, None) });
        let runtime = runtime.unwrap();
        let m = manifest(
            "hostile-spin-1t",
            "collector",
            "state-quota-bytes = 65536\nendpoints = [\"unused.invalid:443\"]",
            "memory-mib = 16\ncpu-ms-per-call = 300\nwall-ms-per-call = 60000",
        );
        let verified = e.verified(outpost_artifacts::FIXTURE_ESCAPES, &m);
        let grant = Grant::new(&verified, &[&permissive(&m)], &BTreeMap::new()).unwrap();
        let loaded = runtime.load(&verified, grant).unwrap();
        let st = ModuleState::new(e.db.clone(), "hostile-spin-1t", 65536);
        st.set("escape", b"loop").unwrap();
        let started = Instant::now();
        let res = rt.block_on(runtime.collect(&loaded, Trigger::Schedule));
        (res.map(|r| r.files_scanned), started.elapsed())
    });
    assert_eq!(res.0, Err(CallError::CpuDeadline(300)));
    assert!(res.1 < Duration::from_secs(30), "{:?}", res.1);
}

/// A directory holding one FIFO nobody writes to.
#[cfg(unix)]
fn fifo_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo");
    (dir, fifo)
}

#[cfg(unix)]
#[test]
fn a_read_that_blocks_ends_at_the_wall_deadline_and_stalls_no_other_module() {
    let e = env();
    let (dir, fifo) = fifo_dir();
    let dirs: BTreeMap<String, std::path::PathBuf> =
        [("instrument-logs".to_string(), dir.path().to_owned())].into();
    let limits = "memory-mib = 16\ncpu-ms-per-call = 1000\nwall-ms-per-call = 1500";
    // Two modules block in open() of the FIFO: as many as the runtime has
    // worker threads.
    let blocked: Vec<_> = (0..2)
        .map(|i| {
            let m = e.escape_in(
                &format!("hostile-fifo-{i}"),
                &dirs,
                limits,
                "read-outside",
                "/instrument-logs/fifo",
            );
            e.rt.spawn(async move {
                let started = Instant::now();
                let res = env().runtime.collect(&m, Trigger::Schedule).await;
                (res.map(|r| r.files_scanned), started.elapsed())
            })
        })
        .collect();
    // Meanwhile a third module runs as usual.
    let bystander = e.escape(
        "hostile-fifo-bystander",
        "directories = [\"instrument-logs\"]",
        DEFAULT_LIMITS,
        "read-outside",
        "/instrument-logs/sample.log",
    );
    let res = within(Duration::from_secs(20), move || {
        env()
            .rt
            .block_on(env().runtime.collect(&bystander, Trigger::Schedule))
            .map(|r| r.files_scanned)
    });
    assert!(matches!(res, Ok(n) if n > 0), "{res:?}");
    for task in blocked {
        let (res, took) = within(Duration::from_secs(20), move || {
            env().rt.block_on(task).unwrap()
        });
        assert_eq!(res, Err(CallError::WallDeadline(1500)));
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    // Release the threads still waiting in open(): a writer lets them go.
    drop(std::fs::OpenOptions::new().write(true).open(&fifo));
}

#[test]
fn eight_memories_and_seven_tables_share_one_grant() {
    let e = env();
    // 16 MiB for the whole module: the main memory takes 64 KiB, so three
    // growths of 4 MiB fit, not seven; five tables of 20,000 elements fit
    // under the 100,000 elements of a store, not seven.
    let m = e.load(
        outpost_artifacts::FIXTURE_MULTI_MEMORY,
        "hostile-multi-memory",
        "collector",
        "",
        "memory-mib = 16\ncpu-ms-per-call = 1000\nwall-ms-per-call = 5000",
    );
    let r =
        e.rt.block_on(e.runtime.collect(&m, Trigger::Schedule))
            .unwrap();
    assert_eq!(r.files_scanned, 3, "memories grown");
    assert!(r.records_queued <= 5, "tables grown: {}", r.records_queued);
    assert!(
        m.peak_memory_bytes() <= 16 << 20,
        "{}",
        m.peak_memory_bytes()
    );
}

#[test]
fn a_module_cannot_hold_more_than_its_share_of_open_files() {
    let res = collect(
        "hostile-open-many",
        "open-many",
        "/instrument-logs/sample.log",
        DEFAULT_LIMITS,
    );
    match &res {
        // Refused inside the module after a bounded number of files ...
        Err(CallError::Module(m)) => {
            let n: usize = m
                .rsplit("after ")
                .next()
                .and_then(|s| s.split(' ').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{m}"));
            assert!(
                n < outpost_host::runtime::sandbox::MAX_HOST_RESOURCES_PER_CALL,
                "{m}"
            );
        }
        // ... or the host ended the call when its resource table was full.
        Err(CallError::Trap(t)) => assert!(t.contains("resource"), "{t}"),
        other => panic!("{other:?}"),
    }
    // Other modules still open files.
    assert!(matches!(
        collect(
            "hostile-open-after",
            "read-outside",
            "/instrument-logs/sample.log",
            DEFAULT_LIMITS
        ),
        Ok((n, _)) if n > 0
    ));
}

#[test]
fn header_maps_a_module_makes_are_bounded() {
    for (name, kib) in [("hostile-fields-4", "4"), ("hostile-fields-64", "64")] {
        let started = Instant::now();
        let res = collect(name, "fields-flood", kib, DEFAULT_LIMITS);
        // Ended by the host: the resource table or a header map is full.
        assert!(
            matches!(&res, Err(CallError::Trap(t))
                if t.contains("resource table") || t.contains("fields exceeds limit")),
            "{name}: {res:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

#[test]
fn a_log_flood_is_cut_to_the_call_budget_and_counted() {
    let log = host_log();
    let before = log.text().len();
    // 4 MiB through each of log.write, stdout and stderr (a fresh stderr
    // stream per line).
    collect("hostile-log-flood", "log-flood", "4", DEFAULT_LIMITS).unwrap();
    // The note comes when the call's last writer is gone (stdout and stderr
    // writers may outlive the call by a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.text()[before..].contains("over its budget was dropped") && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = log.text();
    let new = &text[before.min(text.len())..];
    let lines: Vec<&str> = new
        .lines()
        .filter(|l| l.contains("hostile-log-flood"))
        .collect();
    let bytes: usize = lines.iter().map(|l| l.len()).sum();
    let budget = outpost_host::runtime::stdio::MAX_OUTPUT_BYTES_PER_CALL as usize;
    // Each line carries the logger's prefix as well; allow for it.
    assert!(bytes < budget + 64 * 1024, "{bytes} bytes logged");
    let note = lines
        .iter()
        .find(|l| l.contains("over its budget was dropped"))
        .unwrap_or_else(|| panic!("no note of what was cut"));
    assert!(note.contains("lines_cut="), "{note}");
}

#[test]
fn a_huge_error_text_is_cut() {
    match collect("hostile-err-big", "err-big", "48", DEFAULT_LIMITS) {
        Err(CallError::Module(m)) => {
            assert!(
                m.len() <= outpost_host::untrusted::MAX_ERROR_TEXT_BYTES,
                "{}",
                m.len()
            );
            assert!(m.ends_with("bytes cut]"), "{}", &m[m.len() - 40..]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn module_text_cannot_forge_a_host_log_line() {
    let log = host_log();
    let forged = "2026-12-04T10:00:00.000000Z  INFO outpost: FORGED-LINE";
    let arg = format!("innocent\n{forged}\r\n{forged}");
    collect("hostile-forge-log", "log", &arg, DEFAULT_LIMITS).unwrap();
    match collect("hostile-forge-err", "err", &arg, DEFAULT_LIMITS) {
        Err(CallError::Module(m)) => {
            assert!(!m.contains('\n') && !m.contains('\r'), "{m:?}");
            assert!(m.contains("\\n"), "{m:?}");
        }
        other => panic!("{other:?}"),
    }
    // log.write keeps the text on one line; stdout and stderr are line
    // streams, so each of their three lines is a log line of its own, tagged
    // with the module: 1 + 3 + 3.
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.lines_of("hostile-forge-log").len() < 7 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = log.text();
    assert!(
        !text.lines().any(|l| l.starts_with("2026-12-04T10:00:00")),
        "a module forged a line:\n{text}"
    );
    for line in text.lines().filter(|l| l.contains("FORGED-LINE")) {
        assert!(
            line.contains("hostile-forge-"),
            "untagged module text: {line}"
        );
        assert!(!line.contains('\r'), "{line:?}");
    }
    assert_eq!(log.lines_of("hostile-forge-log").len(), 7);
}

#[test]
fn patient_data_in_an_error_text_is_withheld() {
    for (i, text) in [
        "cannot parse record for SSN 555-44-4444",
        "pt DOE, JANE DOB 3/4/1950",
        "MRN 0012345 unknown",
    ]
    .iter()
    .enumerate()
    {
        match collect(&format!("hostile-err-phi-{i}"), "err", text, DEFAULT_LIMITS) {
            Err(CallError::Module(m)) => {
                assert!(m.starts_with("[withheld by the PHI guard: "), "{m}");
                for v in ["4444", "1950", "0012345", "DOE"] {
                    assert!(!m.contains(v), "{m}");
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The hostile notifier under `name`; `on_event` with a setting problem
/// whose code tells it what to do with `text`.
fn hostile_notifier(name: &str, code: &str, text: &str) -> Result<(), CallError> {
    use outpost_host::runtime::bindings::host_events::{HostEvent, SettingProblem};
    let e = env();
    let m = e.load(
        outpost_artifacts::FIXTURE_HOSTILE_NOTIFIER,
        name,
        "notifier",
        "notify = true",
        DEFAULT_LIMITS,
    );
    let event = HostEvent::SettingProblem(SettingProblem {
        code: code.into(),
        severity: outpost_host::runtime::bindings::types::Severity::Warning,
        text: text.into(),
    });
    e.rt.block_on(e.runtime.on_event(&m, event))
}

fn notifications_of(module: &str) -> Vec<outpost_host::store::notifications::Notification> {
    env()
        .runtime
        .services()
        .notifications
        .active(Some(module))
        .unwrap()
}

#[test]
fn notification_titles_and_bodies_are_cleaned_before_they_are_kept() {
    let forged = "Instrument ok\n2026-12-04T10:00:00Z  INFO outpost: FORGED\u{202e}txt.exe";
    hostile_notifier("hostile-notify-forge", "echo-title", forged).unwrap();
    let n = &notifications_of("hostile-notify-forge")[0];
    assert_eq!(
        n.title,
        "Instrument ok\\n2026-12-04T10:00:00Z  INFO outpost: FORGED\\u{202e}txt.exe"
    );
    // A body keeps its line breaks (paragraphs), nothing else.
    assert_eq!(
        n.body,
        "Instrument ok\n2026-12-04T10:00:00Z  INFO outpost: FORGED\\u{202e}txt.exe"
    );

    hostile_notifier(
        "hostile-notify-phi",
        "echo-title",
        "Result for pt DOE, JANE DOB 3/4/1950 ready",
    )
    .unwrap();
    let n = &notifications_of("hostile-notify-phi")[0];
    for text in [&n.title, &n.body] {
        assert!(text.starts_with("[withheld by the PHI guard: "), "{text}");
        assert!(!text.contains("DOE") && !text.contains("1950"), "{text}");
    }
}

#[test]
fn a_notification_key_holding_patient_data_is_refused() {
    for (i, key) in ["mrn:MRN 0012345", "ssn-555-44-4444", "line\nbreak"]
        .iter()
        .enumerate()
    {
        let module = format!("hostile-notify-key-{i}");
        let res = hostile_notifier(&module, "echo-key", key);
        assert!(
            matches!(&res, Err(CallError::Module(m)) if m.starts_with("refused:") && m.contains("InvalidKey")),
            "{key:?}: {res:?}"
        );
        assert!(notifications_of(&module).is_empty(), "{key:?} was kept");
    }
    // Positive control: an ordinary key is kept.
    hostile_notifier("hostile-notify-key-ok", "echo-key", "reagent:low").unwrap();
    assert_eq!(
        notifications_of("hostile-notify-key-ok")[0].key,
        "reagent:low"
    );
}

#[test]
fn a_flooding_or_trapping_notifier_bounds_itself_and_stalls_nothing() {
    let e = env();
    let module = "hostile-notify-flood";
    // 10,000 new keys in one call: the per-call budget refuses most, and
    // never more than 100 stay active.
    hostile_notifier(module, "flood:10000", "").unwrap();
    assert!(notifications_of(module).len() <= 64, "per-call budget");
    hostile_notifier(module, "flood:10000", "").unwrap();
    assert!(
        notifications_of(module).len()
            <= outpost_host::store::notifications::MAX_ACTIVE_PER_MODULE as usize
    );
    // Raise-and-clear churn: history stays bounded however long it goes on.
    for _ in 0..40 {
        hostile_notifier(module, "churn:10000", "").unwrap();
    }
    let history = e
        .runtime
        .services()
        .notifications
        .history(u32::MAX)
        .unwrap();
    assert!(
        history.len() <= outpost_host::store::notifications::MAX_HISTORY as usize,
        "{}",
        history.len()
    );
    // A notifier that traps ends its call only.
    assert!(matches!(
        hostile_notifier("hostile-notify-trap", "trap", ""),
        Err(CallError::Trap(_))
    ));
    // Meanwhile and after, other modules run as usual.
    assert!(collect("hostile-notify-bystander", "ok", "", DEFAULT_LIMITS).is_ok());
}
