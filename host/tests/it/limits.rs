//! CPU, wall-clock and memory limits end the call, never the host; the next
//! call gets a fresh instance.

use super::harness::env;
use outpost_host::runtime::CallError;
use outpost_host::runtime::bindings::collector::exports::outpost::agent::collect::Trigger;
use std::time::Instant;

fn run(name: &str, limits: &str, escape: &str, arg: &str) -> Result<u32, CallError> {
    let e = env();
    let m = e.escape(name, "", limits, escape, arg);
    let res =
        e.rt.block_on(e.runtime.collect(&m, Trigger::Schedule))
            .map(|r| r.files_scanned);
    // Whatever happened, the same module answers its next call.
    outpost_host::store::state::ModuleState::new(e.db.clone(), name, 65536)
        .set("escape", b"ok")
        .unwrap();
    assert_eq!(
        e.rt.block_on(e.runtime.collect(&m, Trigger::Schedule))
            .map(|r| r.files_scanned),
        Ok(0),
        "{name} recovers"
    );
    res
}

#[test]
fn an_infinite_loop_ends_at_the_cpu_deadline() {
    let start = Instant::now();
    let res = run(
        "lim-loop",
        "memory-mib = 16\ncpu-ms-per-call = 200\nwall-ms-per-call = 30000",
        "loop",
        "",
    );
    assert_eq!(res, Err(CallError::CpuDeadline(200)));
    assert!(
        start.elapsed().as_secs() < 25,
        "ended by the cpu deadline, not the wall clock"
    );
}

#[test]
fn a_call_waiting_too_long_ends_at_the_wall_clock_deadline() {
    let e = env();
    // A server that accepts and never answers: the module waits, using no CPU.
    let listener =
        e.rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
    let port = listener.local_addr().unwrap().port();
    e.rt.spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let m = e.escape(
        "lim-wall",
        &format!("endpoints = [\"127.0.0.1:{port}\"]"),
        "memory-mib = 16\ncpu-ms-per-call = 30000\nwall-ms-per-call = 300",
        "http",
        &format!("https://127.0.0.1:{port}/"),
    );
    let res = e.rt.block_on(e.runtime.collect(&m, Trigger::Schedule));
    assert_eq!(
        res.map(|r| r.files_scanned),
        Err(CallError::WallDeadline(300))
    );
}

#[test]
fn a_1_gib_allocation_under_a_64_mib_cap_fails() {
    let limits = "memory-mib = 64\ncpu-ms-per-call = 5000\nwall-ms-per-call = 20000";
    // A module that checks its allocation sees the failure ...
    match run("lim-alloc", limits, "alloc", "") {
        Err(CallError::Module(m)) => assert_eq!(m, "denied: allocation failed"),
        other => panic!("{other:?}"),
    }
    // ... and one that does not is stopped, reported as the memory limit.
    assert_eq!(
        run("lim-alloc-abort", limits, "alloc-abort", ""),
        Err(CallError::MemoryLimit(64))
    );
}

#[test]
fn an_allocation_within_the_cap_succeeds() {
    // Positive control for the memory test: the cap, not the fixture, decides.
    let limits = "memory-mib = 64\ncpu-ms-per-call = 5000\nwall-ms-per-call = 20000";
    assert_eq!(run("lim-alloc-small", limits, "alloc", "16"), Ok(16 << 20));
}

#[test]
fn unbounded_recursion_traps() {
    match run(
        "lim-recurse",
        "memory-mib = 64\ncpu-ms-per-call = 5000\nwall-ms-per-call = 20000",
        "recurse",
        "",
    ) {
        // Depending on frame sizes, either the wasm call stack or the shadow
        // stack in linear memory (which has no guard page) runs out first.
        Err(CallError::Trap(t)) => {
            assert!(
                t.contains("call stack exhausted") || t.contains("out of bounds memory access"),
                "{t}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_panic_traps() {
    assert!(matches!(
        run(
            "lim-panic",
            "memory-mib = 16\ncpu-ms-per-call = 1000\nwall-ms-per-call = 5000",
            "panic",
            ""
        ),
        Err(CallError::Trap(_))
    ));
}
