//! The Windows service (issue #17) through the real service manager: Wine's
//! `services.exe` in CI, Windows itself where the test may create services
//! (an administrator; otherwise it says why it did nothing). Install, run
//! the host of a config under the service account, answer on the local API,
//! stop on the service manager's stop with the database whole and the log
//! saying so, uninstall; and a stop while uploads are on their way loses
//! and duplicates nothing.
#![cfg(windows)]

use super::api::site;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn outpost(args: &[&str], config: Option<&Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_outpost"));
    c.args(args);
    if let Some(config) = config {
        c.arg("--config").arg(config);
    }
    c.output().unwrap()
}

fn text_of(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One service name: the tests that install it take turns.
static SERVICE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERVICE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes the service whatever the test's outcome.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = outpost(&["service", "uninstall"], None);
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = done() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within 90 s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_service_installs_runs_stops_and_uninstalls() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = site(dir.path(), &logs);
    let state = dir.path().join("state");
    let out = outpost(&["service", "install"], Some(&config));
    let said = text_of(&out);
    if !out.status.success() && said.contains("open the service manager") {
        eprintln!("skipped: this account may not create services: {said}");
        return;
    }
    let _guard = Installed;
    assert!(out.status.success(), "{said}");
    assert!(said.contains(r"NT SERVICE\outpost"), "{said}");
    // Running under the service manager: the host's own API answers.
    wait_for("the service running", || {
        let s = text_of(&outpost(&["service", "status"], None));
        s.contains("Running").then_some(s)
    });
    let status = wait_for("the API of the service", || {
        let o = outpost(&["status", "--json"], Some(&config));
        o.status.success().then(|| text_of(&o))
    });
    assert!(status.contains("\"modules\""), "{status}");
    let status = text_of(&outpost(&["service", "status"], None));
    assert!(status.contains("service run --config"), "{status}");
    assert!(status.contains("AutoStart"), "{status}");
    // The service manager's stop ends the host cleanly.
    let stop = outpost(&["service", "stop"], None);
    assert!(stop.status.success(), "{}", text_of(&stop));
    assert!(text_of(&outpost(&["service", "status"], None)).contains("Stopped"));
    let log = wait_for("the stop in the log", || {
        let all: String = std::fs::read_dir(state.join("logs"))
            .ok()?
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect();
        all.contains("service stopped").then_some(all)
    });
    assert!(
        log.contains("the service manager asked the host to stop"),
        "{log}"
    );
    let db = rusqlite::Connection::open(state.join(outpost_host::store::DB_FILE)).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(db);
    // Removed: the service manager no longer knows it.
    let gone = outpost(&["service", "uninstall"], None);
    assert!(gone.status.success(), "{}", text_of(&gone));
    let after = outpost(&["service", "status"], None);
    assert!(!after.status.success());
    assert!(
        text_of(&after).contains("is it installed"),
        "{}",
        text_of(&after)
    );
}

/// The service manager's stop while batches are on their way over a slow
/// uplink and the collector is reading: the host stops, its database is
/// whole, and once started again every record reaches the cloud once.
#[test]
fn a_service_stop_during_uploads_loses_and_duplicates_nothing() {
    use super::uplink::{Cloud, assert_once, enrolled_site, event_texts};
    let _turn = one_at_a_time();
    let cloud = Cloud::start();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = enrolled_site(dir.path(), &logs, &cloud, 1);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("bandwidth-mbit = 6.0", "bandwidth-mbit = 0.05"),
    )
    .unwrap();
    // Lines that compress poorly, so the upload takes seconds.
    let mut written = Vec::new();
    let mut text = String::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let line = format!("W-0002 line {i} {x:016x}{:016x}", x.rotate_left(29));
        text.push_str(&format!("2026-11-29 10:00:00 WARN {line}\n"));
        written.push(line);
    }
    std::fs::write(logs.join("analyzer.log"), text).unwrap();
    let out = outpost(&["service", "install"], Some(&config));
    let said = text_of(&out);
    if !out.status.success() && said.contains("open the service manager") {
        eprintln!("skipped: this account may not create services: {said}");
        return;
    }
    let _guard = Installed;
    assert!(out.status.success(), "{said}");
    wait_for("the first records at the cloud", || {
        let n = event_texts(&cloud).len();
        (n > 0).then(|| n.to_string())
    });
    let stop = outpost(&["service", "stop"], None);
    assert!(stop.status.success(), "{}", text_of(&stop));
    let at_stop = event_texts(&cloud).len();
    assert!(
        at_stop < written.len(),
        "everything had arrived before the stop: the test proved nothing"
    );
    let db =
        rusqlite::Connection::open(dir.path().join("state").join(outpost_host::store::DB_FILE))
            .unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(db);
    let start = outpost(&["service", "start"], None);
    assert!(start.status.success(), "{}", text_of(&start));
    wait_for("every record at the cloud", || {
        (event_texts(&cloud).len() >= written.len()).then_some(String::new())
    });
    // A little longer: a duplicate would show up now.
    std::thread::sleep(Duration::from_secs(2));
    let stop = outpost(&["service", "stop"], None);
    assert!(stop.status.success(), "{}", text_of(&stop));
    assert_once(&cloud, &written);
    eprintln!(
        "stopped with {at_stop} of {} records at the cloud",
        written.len()
    );
}
