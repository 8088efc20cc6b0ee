//! File-change triggers (issue #17) on the real binary: with the interval at
//! an hour, a line written into a granted folder still reaches the person
//! at the PC, and a storm of changes calls the collector no more often than
//! the policy's rate.

use super::api::{Host, next_of, site_with_interval, subscribe};
use super::harness::env;
use std::io::Write;
use std::time::{Duration, Instant};

const HOUR: u64 = 3600;

/// Calls of the collector so far, from `/api/v1/status`.
async fn collector_calls(host: &Host) -> u64 {
    let (_, status) = host.call(reqwest::Method::GET, "/api/v1/status").await;
    let m = status["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "collector")
        .unwrap_or_else(|| panic!("no collector: {status}"))
        .clone();
    m["calls_ok"].as_u64().unwrap() + m["calls_failed"].as_u64().unwrap()
}

async fn after_startup_call(host: &Host) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = collector_calls(host).await;
        if n >= 1 {
            return n;
        }
        assert!(Instant::now() < deadline, "no startup collection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_line_written_into_a_granted_folder_is_collected_without_waiting_the_interval() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let host = Host::start(&site_with_interval(dir.path(), &logs, HOUR));
    e.rt.block_on(async {
        let mut rx = subscribe(&host).await;
        let before = after_startup_call(&host).await;
        let written = Instant::now();
        std::fs::write(
            logs.join("analyzer.log"),
            "2026-12-04 10:00:00 ERROR XN-550 SN-20431 E-1203 Aspiration error on sampler\n",
        )
        .unwrap();
        // The interval is an hour: only the change can have called it.
        next_of(&mut rx, "notification-raised", |v| {
            v["key"].as_str().is_some_and(|k| k.contains("E-1203"))
        })
        .await;
        eprintln!("written → notification: {:?}", written.elapsed());
        assert!(collector_calls(&host).await > before);
    });
}

#[test]
fn a_storm_of_changes_calls_the_collector_at_most_at_the_policys_rate() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = site_with_interval(dir.path(), &logs, HOUR);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "min-change-interval-ms = 2000",
        "min-change-interval-ms = 1000",
    );
    assert!(text.contains("min-change-interval-ms = 1000"));
    std::fs::write(&config, text).unwrap();
    let host = Host::start(&config);
    e.rt.block_on(async {
        let before = after_startup_call(&host).await;
        let mut rx = subscribe(&host).await;
        // 10 000 changes spread over three seconds (without the rate limit
        // the 200 ms debounce alone would allow a dozen calls): appends to
        // one log and new files beside it.
        let started = Instant::now();
        let storm = Duration::from_secs(3);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join("storm.log"))
            .unwrap();
        for i in 0..10_000u32 {
            if i % 10 == 0 {
                std::fs::write(logs.join(format!("f{i}.log")), b"").unwrap();
            } else {
                writeln!(log, "2026-12-04 10:00:00 INFO XN-550 SN-20431 line {i}").unwrap();
                log.flush().unwrap();
            }
            // Pace the writes: change i is due at i/10 000 of the storm.
            let due = storm.mul_f64(f64::from(i) / 10_000.0);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let elapsed = started.elapsed();
        // Let the last wake-up run.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let calls = collector_calls(&host).await - before;
        // The collector's calls in order. A call that said a backlog is
        // waiting (`backlog` in its summary: it stopped at a budget, e.g.
        // checking many files where file calls are slow, as under Wine) is
        // continued at once, paced by the drain's CPU share: those
        // continuations are not new wake-ups.
        let mut summaries = Vec::new();
        while let Ok((kind, v)) = rx.try_recv() {
            if v["module"] == "collector" && kind.starts_with("call-") {
                assert_eq!(kind, "call-succeeded", "{v}");
                summaries.push(v["summary"].as_str().unwrap_or_default().to_owned());
            }
        }
        let wake_ups = (0..summaries.len())
            .filter(|&i| i == 0 || !summaries[i - 1].contains("backlog"))
            .count() as u64;
        eprintln!(
            "10 000 changes in {elapsed:?}: {calls} collector calls, {wake_ups} of them new wake-ups"
        );
        assert!(calls >= 2, "the storm woke the collector more than once");
        // One wake-up per second of the storm at most, plus the first one,
        // the one a change during the last call may start, and the
        // follow-up of a change-triggered call that found new lines (one
        // more call at the policy's rate, until a call finds nothing).
        let allowed = elapsed.as_secs_f64().ceil() as u64 + 3;
        assert!(
            wake_ups <= allowed,
            "{wake_ups} wake-ups in {elapsed:?} (≤ {allowed})"
        );
    });
}
