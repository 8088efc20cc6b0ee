//! File, socket and environment escapes fail inside the module; the host and
//! other modules carry on. Each denial has a positive control so the test can
//! fail if the sandbox were open.

use super::harness::{DEFAULT_LIMITS, env, host_log};
use outpost_host::runtime::CallError;
use outpost_host::runtime::bindings::collector::exports::outpost::agent::collect::Trigger;

const DIRS: &str = "directories = [\"instrument-logs\"]";

fn attempt(name: &str, escape: &str, arg: &str) -> Result<u32, CallError> {
    let e = env();
    let m = e.escape(name, DIRS, DEFAULT_LIMITS, escape, arg);
    e.rt.block_on(e.runtime.collect(&m, Trigger::Schedule))
        .map(|r| r.files_scanned)
}

fn assert_denied(res: Result<u32, CallError>, what: &str) -> String {
    match res {
        Err(CallError::Module(m)) if m.starts_with("denied:") => m,
        other => panic!("{what}: expected denial inside the module, got {other:?}"),
    }
}

#[test]
fn granted_directory_is_readable() {
    let n = attempt("sbx-read-ok", "read-outside", "/instrument-logs/sample.log").unwrap();
    assert_eq!(n as usize, "2026-11-01 10:00:00 INFO ready\n".len());
}

#[test]
fn reading_outside_the_granted_directory_fails() {
    let e = env();
    for (i, arg) in [
        "/instrument-logs/../secret.txt".to_string(),
        "/secret.txt".to_string(),
        e.root.join("secret.txt").to_string_lossy().into_owned(),
        "/etc/passwd".to_string(),
    ]
    .iter()
    .enumerate()
    {
        assert_denied(attempt(&format!("sbx-read-{i}"), "read-outside", arg), arg);
    }
}

/// Windows path forms (issue #17), on every platform: a guest path is a WASI
/// path, so none of them may reach beyond the grant however the host's file
/// system would read it. On Linux they are odd file names that do not exist.
#[test]
fn windows_path_forms_do_not_leave_the_granted_directory() {
    let e = env();
    let secret = e.root.join("secret.txt").to_string_lossy().into_owned();
    let verbatim = format!(r"\\?\{secret}");
    for (i, arg) in [
        r"/instrument-logs/..\secret.txt".to_string(),
        r"/instrument-logs\..\secret.txt".to_string(),
        r"/instrument-logs/..\..\..\..\..\..\windows\win.ini".to_string(),
        format!("/instrument-logs/{secret}"),
        r"C:\windows\win.ini".to_string(),
        r"C:secret.txt".to_string(),
        r"\\127.0.0.1\C$\windows\win.ini".to_string(),
        r"//127.0.0.1/C$/windows/win.ini".to_string(),
        verbatim.clone(),
        format!("/instrument-logs/{verbatim}"),
        r"\\.\C:\windows\win.ini".to_string(),
        "/instrument-logs/sample.log:hidden".to_string(),
        "/instrument-logs/CON".to_string(),
        "/instrument-logs/nul".to_string(),
        "/instrument-logs/COM1.txt".to_string(),
        "/instrument-logs/CONIN$".to_string(),
    ]
    .iter()
    .enumerate()
    {
        assert_denied(attempt(&format!("sbx-win-{i}"), "read-outside", arg), arg);
    }
    // A differently cased name of the granted file reads that file (NTFS
    // is case-insensitive) or nothing (Linux; also under Wine 8, where it
    // was not found), never anything else.
    match attempt(
        "sbx-win-case",
        "read-outside",
        "/INSTRUMENT-LOGS/SAMPLE.LOG",
    ) {
        Ok(n) => assert_eq!(n as usize, "2026-11-01 10:00:00 INFO ready\n".len()),
        denied => {
            assert_denied(denied, "case");
        }
    }
}

#[test]
fn writing_into_a_granted_directory_fails_and_leaves_nothing() {
    let e = env();
    let msg = assert_denied(
        attempt("sbx-write", "write-granted", "/instrument-logs/new.txt"),
        "write",
    );
    assert!(!e.root.join("instrument-logs/new.txt").exists(), "{msg}");
    assert_denied(
        attempt("sbx-write2", "write-granted", "/instrument-logs/sample.log"),
        "overwrite",
    );
    let kept = std::fs::read_to_string(e.root.join("instrument-logs/sample.log")).unwrap();
    assert!(kept.contains("INFO ready"));
}

#[test]
fn opening_a_socket_fails() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    assert_denied(attempt("sbx-socket", "socket", &addr), "tcp connect");
    assert_denied(
        attempt("sbx-socket-dns", "socket", "localhost:80"),
        "tcp connect by name",
    );
    assert!(
        listener.accept().is_err(),
        "no connection reached the listener"
    );
}

#[test]
fn the_environment_is_empty() {
    // The test process has variables (PATH at least); none may reach the module.
    assert!(std::env::vars().count() > 0);
    assert_denied(attempt("sbx-env", "env", ""), "env");
}

#[test]
fn module_log_lines_that_hold_phi_are_withheld_from_the_host_log() {
    let log = host_log();
    let phi = "pt DOE, JANE DOB 3/4/1950 MRN 0012345";
    attempt("sbx-log-phi", "log", phi).unwrap();
    attempt("sbx-log-clean", "log", "reagent lot 4711 loaded").unwrap();
    // Each module wrote its line three ways: log.write, stdout and stderr
    // (the last two arrive from writer tasks, possibly after the call).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (phi_lines, clean_lines) = loop {
        let (p, c) = (log.lines_of("sbx-log-phi"), log.lines_of("sbx-log-clean"));
        if (p.len() >= 3 && c.len() >= 3) || std::time::Instant::now() > deadline {
            break (p, c);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let phi_log = phi_lines.join("\n");
    for value in ["DOE", "JANE", "1950", "0012345"] {
        assert!(
            !phi_log.contains(value),
            "{value} reached the host log:\n{phi_log}"
        );
    }
    let withheld = "[withheld by the PHI guard: date of birth]";
    assert_eq!(phi_log.matches(withheld).count(), 3, "{phi_log}");
    let clean_log = clean_lines.join("\n");
    assert_eq!(
        clean_log.matches("reagent lot 4711 loaded").count(),
        3,
        "{clean_log}"
    );
}
