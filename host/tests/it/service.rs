//! The host as a service (issue #17): the systemd unit `outpost service
//! install` writes, checked by systemd's own tools where they exist, and a
//! clean stop on the signal the service manager sends.
//!
//! Unix only: both tests are about systemd and SIGTERM (on Windows the
//! binary's path holds backslashes, which a unit file cannot carry).
#![cfg(unix)]

use super::api::site;
use std::path::Path;
use std::process::Command;

fn outpost(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("OUTPOST_LOG", "error")
        .output()
        .unwrap()
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_reports_its_exposure() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = site(dir.path(), &logs);
    let out = outpost(&["service", "install", "--print"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = String::from_utf8(out.stdout).unwrap();
    let state = dir.path().join("state");
    assert!(unit.contains(&format!(
        "ExecStart={} run --config {}\n",
        env!("CARGO_BIN_EXE_outpost"),
        config.display()
    )));
    assert!(unit.contains(&format!("ReadWritePaths={}\n", state.display())));
    for opt in outpost_host::service::systemd::HARDENING {
        assert!(unit.contains(&format!("{opt}\n")), "{opt} missing:\n{unit}");
    }
    if !have("systemd-analyze") {
        eprintln!("skipped: systemd-analyze not found (the unit's text was checked)");
        return;
    }
    let units = tempfile::tempdir().unwrap();
    let path = units.path().join("outpost.service");
    std::fs::write(&path, &unit).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    // Messages about *other* units on this machine are not ours.
    let ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("outpost.service"))
        .collect();
    assert!(verify.status.success() && ours.is_empty(), "{said}");

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level: {text}"));
    eprintln!("systemd-analyze security: {}", overall.trim());
    let score: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in {overall:?}"));
    // 0 is fully locked down, 10 is no sandboxing at all. Not 0: the JIT
    // needs `MemoryDenyWriteExecute` off and the uplink needs the network.
    assert!(score <= 2.5, "exposure {score}: {text}");
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_host_cleanly_and_the_database_stays_whole() {
    use super::api::Host;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        logs.join("analyzer.log"),
        "2026-12-04 10:00:00 ERROR XN-550 SN-20431 E-1203 Aspiration error on sampler\n",
    )
    .unwrap();
    let config = site(dir.path(), &logs);
    let host = Host::start(&config);
    // Running: the API answers. Then the service manager's signal.
    let pid = host.pid();
    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = host.wait_exit(Duration::from_secs(60));
    eprintln!("SIGTERM → exit: {:?}", sent.elapsed());
    assert_eq!(status.code(), Some(0), "a clean stop exits 0: {status:?}");
    // The database is whole and the host starts again on it.
    let db =
        rusqlite::Connection::open(dir.path().join("state").join(outpost_host::store::DB_FILE))
            .unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(db);
    let again = Host::start(&config);
    drop(again);
}
