//! Collector throughput (plain binary, prints a table). Run with
//! `cargo bench -p outpost-host --bench collector [-- MiB]` (default 100 MiB).
//!
//! Generates a mixed corpus (instrument logs with PHI in free text, framed ASTM
//! transcripts and HL7 ORU^R01 files with patient and QC runs, CSV QC exports),
//! then measures:
//! - native: `outpost-collector-core` compiled for the host, reading each file
//!   the way the module does (message by message for transcripts, line chunks
//!   for logs, whole CSV files) — parse + scrub only, and again with the
//!   records queued through the host's uplink (PHI guard, seal, durable
//!   spool), which is the same work the Wasm run does;
//! - Wasm: the signed collector module inside the host, called until it has
//!   consumed the corpus — parse + scrub + WASI file reads + cursors in the
//!   state store + queueing into the SQLite spool;
//! - the Wasm module's per-call fixed cost, and its peak linear memory.
//!
//! These machines are noisy: compare the ratio from one run, not absolute
//! figures across runs.

use outpost_collector_core::{self as core, Instrument};
use outpost_host::agent::Agent;
use outpost_host::config::Config;
use outpost_host::events::Events;
use outpost_host::runtime::bindings::collector::exports::outpost::agent::collect::Trigger;
use outpost_host::store::Db;
use outpost_host::store::spool::Spool;
use outpost_host::uplink::Uplink;

#[path = "common/corpus.rs"]
mod corpus;
#[path = "common/wire.rs"]
mod wire;
use corpus::{Rng, log_line};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use wire::{stream_of, to_wire};

fn main() {
    let mib: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let t = Instant::now();
    let files = generate(&corpus, mib << 20);
    let total: u64 = files.iter().map(|(_, n)| n).sum();
    eprintln!(
        "generated {} files, {:.1} MiB in {:.1?}",
        files.len(),
        total as f64 / 1048576.0,
        t.elapsed()
    );

    // Native: the same library, the same units.
    let fallback = Instrument {
        model: "XN-550".into(),
        serial: "BD634545".into(),
    };
    let t = Instant::now();
    let mut native_records = 0usize;
    let mut per_kind = std::collections::BTreeMap::<String, (Duration, u64)>::new();
    for (path, len) in &files {
        let t = Instant::now();
        native_records += native_file(path, &fallback, &mut |_| {});
        let kind = path.extension().unwrap().to_string_lossy().into_owned();
        let e = per_kind.entry(kind).or_default();
        e.0 += t.elapsed();
        e.1 += len;
    }
    let native = t.elapsed();

    // Native end to end: the same parsing, and the records queued through the
    // host's own uplink (PHI guard, JSON, zstd, AES-GCM, durable SQLite spool)
    // in batches of up to 100 per stream — the work the Wasm run below also
    // includes.
    let uplink_dir = dir.path().join("native-uplink");
    let uplink = Uplink::new(
        Spool::new(Db::open(&uplink_dir).unwrap()),
        Events::default(),
    );
    uplink.set_identity(Some(outpost_host::uplink::identity::Identity {
        device_id: outpost_protocol::DeviceId::parse("bench-native").unwrap(),
        key: outpost_protocol::DeviceKey::generate(),
        server: "https://127.0.0.1:9".into(),
        enrolled_at: 0,
    }));
    let t = Instant::now();
    let mut queued = 0usize;
    for (path, _) in &files {
        let mut pending: Vec<outpost_protocol::Record> = Vec::new();
        let mut flush = |pending: &mut Vec<outpost_protocol::Record>| {
            let records = std::mem::take(pending);
            let mut streams: Vec<&str> = records.iter().map(stream_of).collect();
            streams.dedup();
            for stream in streams {
                let batch: Vec<_> = records
                    .iter()
                    .filter(|r| stream_of(r) == stream)
                    .cloned()
                    .collect();
                queued += batch.len();
                uplink.enqueue("collector", stream, batch).unwrap();
            }
        };
        native_file(path, &fallback, &mut |records| {
            pending.extend(records.into_iter().map(to_wire));
            if pending.len() >= 100 {
                flush(&mut pending);
            }
        });
        if !pending.is_empty() {
            flush(&mut pending);
        }
    }
    let native_e2e = t.elapsed();
    assert_eq!(queued, native_records);

    // Wasm: the signed collector inside the host, on the same folder.
    let config_path = write_config(dir.path(), &corpus);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = Config::load(&config_path).unwrap();
    let agent = rt
        .block_on(async { Agent::build(config, Events::default()) })
        .unwrap();
    let collector = agent
        .modules
        .iter()
        .find(|m| m.name() == "collector")
        .unwrap();
    let t = Instant::now();
    let mut calls = 0u32;
    let mut wasm_records = 0u64;
    let mut malformed = 0u64;
    loop {
        let report = rt
            .block_on(agent.runtime.collect(collector, Trigger::Schedule))
            .unwrap_or_else(|e| panic!("collector call {calls} failed: {e}"));
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            eprintln!("call {calls}: {report:?}");
        }
        calls += 1;
        // One heartbeat per configured instrument each call.
        let data = u64::from(report.records_queued).saturating_sub(1);
        wasm_records += data;
        malformed += u64::from(report.malformed);
        if data == 0 && report.records_queued <= 1 && calls > 1 {
            // Nothing new: check it stays so (a settled tail may come one call later).
            let again = rt
                .block_on(agent.runtime.collect(collector, Trigger::Schedule))
                .unwrap();
            calls += 1;
            if again.records_queued <= 1 {
                break;
            }
            wasm_records += u64::from(again.records_queued) - 1;
        }
        assert!(calls < 100_000, "the collector never caught up");
    }
    let wasm = t.elapsed();
    let peak = collector.peak_memory_bytes();

    // Per-call fixed costs: a call with nothing new (instantiate, walk the
    // folder, check cursors), and a call with one new log line (adds the
    // scrubber's first use in a fresh instance: compiling its patterns).
    let mut idle = Vec::new();
    let mut one_line = Vec::new();
    let extra = corpus.join("zz-extra.log");
    for i in 0..15 {
        let t = Instant::now();
        rt.block_on(agent.runtime.collect(collector, Trigger::Schedule))
            .unwrap();
        idle.push(t.elapsed());
        let mut line = String::new();
        log_line(&mut Rng(i + 1), &mut line);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&extra)
            .unwrap();
        std::io::Write::write_all(&mut f, line.as_bytes()).unwrap();
        drop(f);
        let t = Instant::now();
        let r = rt
            .block_on(agent.runtime.collect(collector, Trigger::Schedule))
            .unwrap();
        one_line.push(t.elapsed());
        assert_eq!(r.records_queued, 2, "heartbeat + the new line");
    }
    idle.sort();
    one_line.sort();

    let mibs = |d: Duration| total as f64 / 1048576.0 / d.as_secs_f64();
    println!(
        "collector throughput on a generated {:.1} MiB mixed corpus ({} files; machine: {} cpus, shared and noisy)\n",
        total as f64 / 1048576.0,
        files.len(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| run | time | MiB/s | records out |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| native collector-core (parse + scrub) | {:.2?} | {:.1} | {native_records} |",
        native,
        mibs(native)
    );
    println!(
        "| native collector-core + the host's uplink (guard, seal, spool) | {:.2?} | {:.1} | {native_records} |",
        native_e2e,
        mibs(native_e2e)
    );
    println!(
        "| Wasm collector in the host (parse + scrub + WASI reads + cursors + uplink), {calls} calls | {:.2?} | {:.1} | {wasm_records} |",
        wasm,
        mibs(wasm)
    );
    for (kind, (d, len)) in &per_kind {
        println!(
            "| native, {kind} files only | {d:.2?} | {:.1} | |",
            *len as f64 / 1048576.0 / d.as_secs_f64()
        );
    }
    println!(
        "| Wasm: one call with nothing new (median of 15) | {:.2?} | | 0 |",
        idle[7]
    );
    println!(
        "| Wasm: one call with one new log line (median of 15) | {:.2?} | | 1 |",
        one_line[7]
    );
    println!(
        "\nWasm ÷ native throughput, the same work (both queue through the uplink): {:.2} (target ≥ 0.7)",
        native_e2e.as_secs_f64() / wasm.as_secs_f64()
    );
    let uplink_cost = native_e2e.saturating_sub(native);
    println!(
        "parsing and scrubbing alone (the uplink's {:.2?} taken out of the Wasm run): {:.2}",
        uplink_cost,
        native.as_secs_f64() / wasm.saturating_sub(uplink_cost).as_secs_f64()
    );
    println!(
        "module peak linear memory: {:.1} MiB (limit {} MiB); malformed units counted: {malformed}",
        peak as f64 / 1048576.0,
        collector.grant().limits.memory_bytes >> 20
    );
    assert_eq!(
        native_records as u64, wasm_records,
        "the module and the library must produce the same records"
    );
}

/// Parse one file natively the way the module reads it, handing each unit's
/// records to `sink`; returns the number of records.
fn native_file(
    path: &Path,
    fallback: &Instrument,
    sink: &mut dyn FnMut(Vec<core::Record>),
) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let ext = path.extension().unwrap().to_str().unwrap();
    let mut n = 0;
    let mut emit = |records: Vec<core::Record>| {
        n += records.len();
        sink(records);
    };
    match ext {
        "astm" | "hl7" => {
            let ends = if ext == "astm" {
                core::astm::message_ends(&bytes)
            } else {
                core::hl7::message_ends(&bytes)
            };
            let mut start = 0;
            for end in ends.into_iter().chain([bytes.len()]) {
                if end <= start {
                    continue;
                }
                let unit = &bytes[start..end];
                emit(if ext == "astm" {
                    core::astm::parse(unit, fallback).records
                } else {
                    core::hl7::parse(unit, fallback).records
                });
                start = end;
            }
        }
        "log" => {
            for lines in bytes
                .chunk_by(|a, _| *a != b'\n')
                .collect::<Vec<_>>()
                .chunks(100)
            {
                emit(core::logs::parse(&lines.concat(), fallback).records);
            }
        }
        "csv" => emit(core::csvjson::parse_csv(&bytes, fallback).records),
        other => panic!("unexpected file kind {other}"),
    }
    n
}

/// Config for the example agent with `instrument-logs` pointing at `corpus`.
fn write_config(dir: &Path, corpus: &Path) -> PathBuf {
    let state = dir.join("state");
    let text = outpost_artifacts::example_config(&state, 300);
    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("examples/sample-data/instrument-logs");
    let text = text.replace(&format!("{sample:?}"), &format!("{corpus:?}"));
    assert!(text.contains(&format!("{corpus:?}")));
    let p = dir.join("bench.toml");
    std::fs::write(&p, text).unwrap();
    // Enrolled offline: batches are sealed and spooled (nothing is sent).
    outpost_host::uplink::identity::Identity {
        device_id: outpost_protocol::DeviceId::parse("bench-device").unwrap(),
        key: outpost_protocol::DeviceKey::generate(),
        server: "https://127.0.0.1:9".into(),
        enrolled_at: 0,
    }
    .save(&state)
    .unwrap();
    p
}

/// Writes the generated corpus (see `common/corpus.rs`) as files, dated an
/// hour ago (complete transcripts, as after a night's run).
fn generate(dir: &Path, target: u64) -> Vec<(PathBuf, u64)> {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    corpus::generate(target)
        .into_iter()
        .map(|(ext, bytes)| {
            let i = counts.entry(ext).or_default();
            let path = dir.join(format!("{ext}-{i:03}.{ext}"));
            *i += 1;
            std::fs::write(&path, &bytes).unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(3600))
                .unwrap();
            (path, bytes.len() as u64)
        })
        .collect()
}
