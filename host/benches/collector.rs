//! Collector throughput (plain binary, prints a table). Run with
//! `cargo bench -p outpost-host --bench collector [-- MiB]` (default 100 MiB).
//!
//! Generates a mixed corpus (instrument logs with PHI in free text, framed ASTM
//! transcripts and HL7 ORU^R01 files with patient and QC runs, CSV QC exports),
//! then measures:
//! - native: `outpost-collector-core` compiled for the host, reading each file
//!   the way the module does (message by message for transcripts, line chunks
//!   for logs, runs of rows under the header line for CSV exports) — parse +
//!   scrub only, and again with the records queued through the host's uplink
//!   (PHI guard, seal, durable spool), which is the same work the Wasm run
//!   does;
//! - Wasm: the signed collector module inside the host, called until it has
//!   consumed the corpus — parse + scrub + WASI file reads + cursors in the
//!   state store + queueing into the SQLite spool;
//! - the Wasm module's per-call fixed cost, and its peak linear memory.
//!
//! `BENCH_COMPARE=<file>` also runs a second build of the collector (signed
//! with a key the example config trusts, such as the development key:
//! `outpost sign`) on every chunk next to the built-in one, which of the two
//! goes first alternating, and prints its time over the built-in module's.
//! Two builds compared in one run see the same machine, which separate runs
//! on these machines do not.
//!
//! These machines are noisy: compare the ratio from one run, not absolute
//! figures across runs. The corpus is measured in rounds (`BENCH_ROUNDS`,
//! default 3), each in chunks of about 10 MiB run back to back (native,
//! native + uplink, Wasm), so that a drift in the machine's speed hits all
//! three alike. Each run is timed twice: by the wall clock and by the
//! process's CPU time (user + system, all threads; Unix only). On a shared
//! virtual machine the wall clock also counts time the CPU spent on other
//! guests and on the disk, so the CPU-time ratio is the steadier of the two.

use outpost_collector_core::{self as core, Instrument};
use outpost_host::agent::Agent;
use outpost_host::config::Config;
use outpost_host::events::Events;
use outpost_host::runtime::bindings::collector::exports::outpost::agent::collect::Trigger;
use outpost_host::store::Db;
use outpost_host::store::spool::{Spool, StateWrite};
use outpost_host::uplink::Uplink;

#[path = "common/corpus.rs"]
mod corpus;
#[path = "common/wire.rs"]
mod wire;
use corpus::{Rng, log_line};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use wire::{stream_of, to_wire};

/// One timed run: wall clock, CPU time, records out.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    cpu: Option<Duration>,
    records: u64,
    /// Collector calls it took (Wasm runs only).
    calls: u32,
}

/// The three runs of one round, in the order they ran.
#[derive(Default)]
struct Round {
    native: Run,
    native_e2e: Run,
    wasm: Run,
    /// The `BENCH_COMPARE` build, when given.
    compare: Run,
}

impl Round {
    /// (same work, parsing and scrubbing alone) Wasm ÷ native throughput, by
    /// `time` (wall clock or CPU time).
    fn ratios(&self, time: impl Fn(&Run) -> Option<Duration>) -> Option<(f64, f64)> {
        let (n, e, w) = (
            time(&self.native)?,
            time(&self.native_e2e)?,
            time(&self.wasm)?,
        );
        let uplink = e.saturating_sub(n);
        Some((
            e.as_secs_f64() / w.as_secs_f64(),
            n.as_secs_f64() / w.saturating_sub(uplink).as_secs_f64(),
        ))
    }
}

impl Default for Run {
    /// Nothing yet: zero time (CPU time too, where it is measured).
    fn default() -> Run {
        Run {
            wall: Duration::ZERO,
            cpu: process_cpu_time().map(|_| Duration::ZERO),
            records: 0,
            calls: 0,
        }
    }
}

impl Run {
    /// Adds `other`'s times, records and calls to this run's.
    fn add(&mut self, other: Run) {
        self.wall += other.wall;
        self.cpu = self.cpu.zip(other.cpu).map(|(a, b)| a + b);
        self.records += other.records;
        self.calls += other.calls;
    }

    /// A run known only by its wall time.
    fn timed(wall: Duration) -> Run {
        Run {
            wall,
            cpu: None,
            records: 0,
            calls: 0,
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let mib: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
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
    let fallback = Instrument {
        model: "XN-550".into(),
        serial: "BD634545".into(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Rounds, each over the whole corpus in chunks of about 10 MiB (every
    // chunk a mix of all kinds). Per chunk, back to back: native, native +
    // uplink, then the chunk's files appear in the module's folder (hard
    // links, so the same bytes and times) and the module is called until it
    // has consumed them. The machine's speed drifts over seconds to minutes;
    // runs this close together in time see the same machine, so the drift
    // cancels in the ratio. Each round has a fresh agent and state.
    let chunk_count = usize::try_from(total / (10 << 20))
        .unwrap()
        .clamp(1, files.len());
    let chunks: Vec<Vec<(PathBuf, u64)>> = (0..chunk_count)
        .map(|c| {
            files
                .iter()
                .enumerate()
                .filter(|(i, _)| i % chunk_count == c)
                .map(|(_, f)| f.clone())
                .collect()
        })
        .collect();
    let compare = std::env::var_os("BENCH_COMPARE").map(PathBuf::from);
    let mut results = Vec::new();
    let mut per_kind = std::collections::BTreeMap::<String, (Duration, u64)>::new();
    let mut last = None;
    for round in 0..rounds {
        let round_dir = dir.path().join(format!("round-{round}"));
        let watched = round_dir.join("corpus");
        std::fs::create_dir_all(&watched).unwrap();
        let agent = wasm_agent(&rt, &round_dir, &watched, None);
        let other = compare.as_deref().map(|module| {
            let dir = dir.path().join(format!("round-{round}-compare"));
            let watched = dir.join("corpus");
            std::fs::create_dir_all(&watched).unwrap();
            (wasm_agent(&rt, &dir, &watched, Some(module)), watched)
        });
        let mut sum = Round::default();
        let mut malformed = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            let native = run_native(chunk, &fallback, None, &mut per_kind);
            let native_e2e = run_native(chunk, &fallback, Some(&round_dir), &mut per_kind);
            assert_eq!(native.records, native_e2e.records);
            let show = |dir: &Path| {
                for (path, _) in chunk {
                    std::fs::hard_link(path, dir.join(path.file_name().unwrap())).unwrap();
                }
            };
            show(&watched);
            let mut compared = None;
            if let Some((other, dir)) = &other {
                show(dir);
                if i % 2 == 1 {
                    compared = Some(run_wasm(&rt, other).0);
                }
            }
            let (wasm, bad) = run_wasm(&rt, &agent);
            if let Some((other, _)) = &other
                && i % 2 == 0
            {
                compared = Some(run_wasm(&rt, other).0);
            }
            if let Some(c) = compared {
                assert_eq!(
                    c.records, wasm.records,
                    "both builds produce the same records"
                );
                sum.compare.add(c);
            }
            assert_eq!(
                native.records, wasm.records,
                "the module and the library must produce the same records"
            );
            malformed += bad;
            sum.native.add(native);
            sum.native_e2e.add(native_e2e);
            sum.wasm.add(wasm);
        }
        eprintln!(
            "round {round}: native {:.2?}, native + uplink {:.2?}, Wasm {:.2?}",
            sum.native.wall, sum.native_e2e.wall, sum.wasm.wall
        );
        results.push(sum);
        last = Some((agent, watched, malformed));
    }
    let (agent, watched, malformed) = last.expect("at least one round");
    let collector = agent
        .modules
        .iter()
        .find(|m| m.name() == "collector")
        .unwrap();
    let peak = collector.peak_memory_bytes();

    // Per-call fixed costs: a call with nothing new (instantiate, walk the
    // folder, check cursors), and a call with one new log line (adds the
    // scrubber's first use in a fresh instance: compiling its patterns).
    let mut idle = Vec::new();
    let mut one_line = Vec::new();
    let extra = watched.join("zz-extra.log");
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
        "collector throughput on a generated {:.1} MiB mixed corpus ({} files), {rounds} rounds \
         (machine: {} cpus, shared and noisy)\n",
        total as f64 / 1048576.0,
        files.len(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "| run (median of the rounds) | wall time | MiB/s (wall) | CPU time | MiB/s (CPU) | records out |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let row = |name: &str, pick: fn(&Round) -> Run| {
        let runs: Vec<Run> = results.iter().map(pick).collect();
        let wall =
            Duration::from_secs_f64(median(runs.iter().map(|r| r.wall.as_secs_f64()).collect()));
        let cpu = runs
            .iter()
            .map(|r| r.cpu.map(|c| c.as_secs_f64()))
            .collect::<Option<Vec<_>>>()
            .map(|c| Duration::from_secs_f64(median(c)));
        let cpu_cols = cpu.map_or_else(
            || "n/a | n/a".to_string(),
            |c| format!("{c:.2?} | {:.1}", mibs(c)),
        );
        println!(
            "| {name} | {wall:.2?} | {:.1} | {cpu_cols} | {} |",
            mibs(wall),
            runs[0].records
        );
    };
    row("native collector-core (parse + scrub)", |r| r.native);
    row(
        "native collector-core + the host's uplink (guard, seal, spool)",
        |r| r.native_e2e,
    );
    row(
        &format!(
            "Wasm collector in the host (parse + scrub + WASI reads + cursors + uplink), {} calls",
            results[0].wasm.calls
        ),
        |r| r.wasm,
    );
    for (kind, (d, len)) in &per_kind {
        println!(
            "| native, {kind} files only (all runs) | {d:.2?} | {:.1} | | | |",
            *len as f64 / 1048576.0 / d.as_secs_f64()
        );
    }
    println!(
        "| Wasm: one call with nothing new (median of 15) | {:.2?} | | | | 0 |",
        idle[7]
    );
    println!(
        "| Wasm: one call with one new log line (median of 15) | {:.2?} | | | | 1 |",
        one_line[7]
    );

    println!(
        "\nWasm ÷ native throughput per round: same work (both queue through the uplink) / \
         parsing and scrubbing alone (the native uplink time taken out of the Wasm run)"
    );
    for (name, time) in [
        (
            "wall clock",
            (|r: &Run| Some(r.wall)) as fn(&Run) -> Option<Duration>,
        ),
        ("CPU time", |r: &Run| r.cpu),
    ] {
        let Some(ratios) = results
            .iter()
            .map(|r| r.ratios(time))
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        let listed: Vec<String> = ratios
            .iter()
            .map(|(same, parse)| format!("{same:.2} / {parse:.2}"))
            .collect();
        println!(
            "- by {name}: {}; median {:.2} / {:.2} (target ≥ 0.7 on the same work)",
            listed.join(", "),
            median(ratios.iter().map(|r| r.0).collect()),
            median(ratios.iter().map(|r| r.1).collect()),
        );
    }
    // Noise on a shared machine only ever adds time, so the fastest run of
    // each kind is the steadiest estimate of what the work itself costs.
    let fastest = |pick: fn(&Round) -> Duration| -> Duration {
        results.iter().map(pick).min().expect("at least one round")
    };
    let best = Round {
        native: Run::timed(fastest(|r| r.native.wall)),
        native_e2e: Run::timed(fastest(|r| r.native_e2e.wall)),
        wasm: Run::timed(fastest(|r| r.wasm.wall)),
        compare: Run::default(),
    };
    let (same, parse) = best.ratios(|r| Some(r.wall)).expect("wall times");
    println!(
        "- by the fastest run of each kind (wall clock; native {:.2?}, native + uplink {:.2?}, \
         Wasm {:.2?}): {same:.2} / {parse:.2}",
        best.native.wall, best.native_e2e.wall, best.wasm.wall
    );
    if let Some(module) = &compare {
        let ratios: Vec<f64> = results
            .iter()
            .filter_map(|r| Some(r.compare.cpu?.as_secs_f64() / r.wasm.cpu?.as_secs_f64()))
            .collect();
        let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "- {} ÷ the built-in module, CPU time per round: {}; median {:.3} \
             (below 1: the compared build is faster)",
            module.display(),
            listed.join(", "),
            median(ratios),
        );
    }
    println!(
        "\nmodule peak linear memory: {:.1} MiB (limit {} MiB); malformed units counted: {malformed}",
        peak as f64 / 1048576.0,
        collector.grant().limits().memory_bytes >> 20
    );
}

/// Every file parsed natively; with `uplink_dir`, the records are also queued
/// through the host's own uplink (PHI guard, JSON, zstd, AES-GCM, durable
/// SQLite spool) in batches of up to 100 per stream, each flush's last batch
/// with a cursor in the same transaction — the work the Wasm run also
/// includes. Only the plain runs add to `per_kind`.
fn run_native(
    files: &[(PathBuf, u64)],
    fallback: &Instrument,
    uplink_dir: Option<&Path>,
    per_kind: &mut std::collections::BTreeMap<String, (Duration, u64)>,
) -> Run {
    let uplink = uplink_dir.map(|dir| {
        let uplink = Uplink::new(
            Spool::new(Db::open(&dir.join("native-uplink")).unwrap()),
            Events::default(),
        );
        uplink.set_identity(Some(outpost_host::uplink::identity::Identity {
            device_id: outpost_protocol::DeviceId::parse("bench-native").unwrap(),
            key: outpost_protocol::DeviceKey::generate(),
            server: "https://127.0.0.1:9".into(),
            enrolled_at: 0,
        }));
        uplink
    });
    let clock = Clock::start();
    let mut records = 0usize;
    for (path, len) in files {
        let t = Instant::now();
        let Some(uplink) = &uplink else {
            records += native_file(path, fallback, &mut |_| {});
            let kind = path.extension().unwrap().to_string_lossy().into_owned();
            let e = per_kind.entry(kind).or_default();
            e.0 += t.elapsed();
            e.1 += len;
            continue;
        };
        let mut pending: Vec<outpost_protocol::Record> = Vec::new();
        let mut units = 0u64;
        let key = format!("cursor:{}", path.display());
        // Queued as the module queues: by stream, streams in order of first
        // appearance, records moved; the last batch of each flush carries
        // the file's cursor (about the size of the module's) in the same
        // transaction.
        let flush = |pending: &mut Vec<outpost_protocol::Record>, units: u64| {
            let mut by_stream: Vec<(&str, Vec<outpost_protocol::Record>)> = Vec::new();
            for r in std::mem::take(pending) {
                let s = stream_of(&r);
                match by_stream.iter_mut().find(|(k, _)| *k == s) {
                    Some((_, of_stream)) => of_stream.push(r),
                    None => by_stream.push((s, vec![r])),
                }
            }
            let cursor = format!("{units} 18446744073709551615 -");
            let last = by_stream.len() - 1;
            for (i, (stream, part)) in by_stream.into_iter().enumerate() {
                let state = (i == last).then(|| StateWrite {
                    key: &key,
                    value: cursor.as_bytes(),
                    quota: 1 << 20,
                });
                uplink
                    .enqueue_with_state("collector", stream, part, state)
                    .unwrap();
            }
        };
        records += native_file(path, fallback, &mut |parsed| {
            units += 1;
            pending.extend(parsed.into_iter().map(to_wire));
            if pending.len() >= 100 {
                flush(&mut pending, units);
            }
        });
        if !pending.is_empty() {
            flush(&mut pending, units);
        }
    }
    let (wall, cpu) = clock.stop();
    Run {
        wall,
        cpu,
        records: records as u64,
        calls: 0,
    }
}

/// The agent with the signed collector (the built-in one, or `module`)
/// watching `corpus`, its state under `dir`, enrolled offline.
fn wasm_agent(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    corpus: &Path,
    module: Option<&Path>,
) -> Agent {
    let config_path = write_config(dir, corpus);
    if let Some(module) = module {
        let built_in = format!("{:?}", outpost_artifacts::COLLECTOR_SIGNED);
        let text = std::fs::read_to_string(&config_path).unwrap();
        assert!(text.contains(&built_in));
        std::fs::write(
            &config_path,
            text.replace(&built_in, &format!("{module:?}")),
        )
        .unwrap();
    }
    let config = Config::load(&config_path).unwrap();
    rt.block_on(async { Agent::build(config, Events::default()) })
        .unwrap()
}

/// The collector called until it has consumed what is new in its folder.
/// Returns the run and the malformed units it counted.
fn run_wasm(rt: &tokio::runtime::Runtime, agent: &Agent) -> (Run, u64) {
    let collector = agent
        .modules
        .iter()
        .find(|m| m.name() == "collector")
        .unwrap();
    let clock = Clock::start();
    let mut calls = 0u32;
    let mut records = 0u64;
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
        records += data;
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
            records += u64::from(again.records_queued) - 1;
        }
        assert!(calls < 100_000, "the collector never caught up");
    }
    let (wall, cpu) = clock.stop();
    let run = Run {
        wall,
        cpu,
        records,
        calls,
    };
    (run, malformed)
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
        // As the module reads an export: runs of 100 lines (the header line
        // counts in the first), each later run parsed under the header.
        "csv" => {
            let lines: Vec<&[u8]> = bytes.chunk_by(|a, _| *a != b'\n').collect();
            let header = lines.first().copied().unwrap_or_default();
            for (i, run) in lines.chunks(100).enumerate() {
                let unit = match i {
                    0 => run.concat(),
                    _ => [&[header][..], run].concat().concat(),
                };
                emit(core::csvjson::parse_csv(&unit, fallback).records);
            }
        }
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

/// Wall clock and process CPU time, started together.
struct Clock {
    wall: Instant,
    cpu: Option<Duration>,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: process_cpu_time(),
        }
    }

    /// (wall time, CPU time) since `start`.
    fn stop(self) -> (Duration, Option<Duration>) {
        let wall = self.wall.elapsed();
        let cpu = self
            .cpu
            .zip(process_cpu_time())
            .map(|(a, b)| b.saturating_sub(a));
        (wall, cpu)
    }
}

/// User + system CPU time of this process, all threads.
#[cfg(unix)]
fn process_cpu_time() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the rusage it is pointed at and touches nothing else.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: zero-initialised and filled in by a successful getrusage.
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).ok()?)
            .checked_add(Duration::from_micros(u64::try_from(t.tv_usec).ok()?))
    };
    time(usage.ru_utime)?.checked_add(time(usage.ru_stime)?)
}

/// Not measured on this platform: the table shows n/a.
#[cfg(not(unix))]
fn process_cpu_time() -> Option<Duration> {
    None
}
