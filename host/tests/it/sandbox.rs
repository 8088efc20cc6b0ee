//! File, socket and environment escapes fail inside the module; the host and
//! other modules carry on. Each denial has a positive control so the test can
//! fail if the sandbox were open.

use super::harness::{DEFAULT_LIMITS, env, path};
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
        path(&e.root.join("secret.txt")),
        "/etc/passwd".to_string(),
    ]
    .iter()
    .enumerate()
    {
        assert_denied(attempt(&format!("sbx-read-{i}"), "read-outside", arg), arg);
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
