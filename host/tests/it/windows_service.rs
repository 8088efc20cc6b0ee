//! The Windows service (issue #17) through the real service manager: Wine's
//! `services.exe` in CI, Windows itself where the test may create services
//! (an administrator; otherwise it says why it did nothing). Install, run
//! the host of a config under the service account, answer on the local API,
//! stop on the service manager's stop with the database whole and the log
//! saying so, uninstall.
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

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = site(dir.path(), &logs);
    let state = dir.path().join("state");
    let out = outpost(&["service", "install"], Some(&config));
    let said = text(&out);
    if !out.status.success() && said.contains("open the service manager") {
        eprintln!("skipped: this account may not create services: {said}");
        return;
    }
    let _guard = Installed;
    assert!(out.status.success(), "{said}");
    assert!(said.contains(r"NT SERVICE\outpost"), "{said}");
    // Running under the service manager: the host's own API answers.
    wait_for("the service running", || {
        let s = text(&outpost(&["service", "status"], None));
        s.contains("Running").then_some(s)
    });
    let status = wait_for("the API of the service", || {
        let o = outpost(&["status", "--json"], Some(&config));
        o.status.success().then(|| text(&o))
    });
    assert!(status.contains("\"modules\""), "{status}");
    let status = text(&outpost(&["service", "status"], None));
    assert!(status.contains("service run --config"), "{status}");
    assert!(status.contains("AutoStart"), "{status}");
    // The service manager's stop ends the host cleanly.
    let stop = outpost(&["service", "stop"], None);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(text(&outpost(&["service", "status"], None)).contains("Stopped"));
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
    assert!(gone.status.success(), "{}", text(&gone));
    let after = outpost(&["service", "status"], None);
    assert!(!after.status.success());
    assert!(text(&after).contains("is it installed"), "{}", text(&after));
}
