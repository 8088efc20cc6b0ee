//! What one instrument log line costs to parse and scrub, by the characters
//! it holds (plain binary, prints a table). Run with `cargo bench -p
//! outpost-collector-core --bench scrub_lines`.
//!
//! The same message written with ASCII only, with a unit outside ASCII
//! (`°C`, `µL`), with an accented name, and with a no-break space: a line
//! with any non-ASCII character leaves the embedded DFAs for the regex
//! crate's engines, and before the word-boundary-free match test (#19) such
//! a line cost about twenty times an ASCII one. Each line is made distinct
//! (a counter at its end) so that no memo answers.
//!
//! Native code, not the Wasm module; the ratios to the ASCII line are what
//! to read. These machines are noisy: compare the ratios of one run.

use outpost_collector_core::{Instrument, logs};
use std::time::Instant;

const LINES: &[(&str, &str)] = &[
    (
        "ASCII",
        "2026-11-28 06:01:52.238 DEBUG [TEMP] incubator 37.2 C, cooler 6.3 C, sample 24-1128-90301 rack 47 pos 7",
    ),
    (
        "°C",
        "2026-11-28 06:01:52.238 DEBUG [TEMP] incubator 37.2 °C, cooler 6.3 °C, sample 24-1128-90301 rack 47 pos 7",
    ),
    (
        "µL",
        "2026-11-28 06:01:52.238 INFO  [SAMPLER] aspirated 10 µL, sample 24-1128-90301 rack 47 pos 7",
    ),
    (
        "accented name",
        "2026-11-28 06:01:52.238 WARN  [LIS] W-0731 sample 24-1128-90301 for MÜLLER, HANS: rerun requested",
    ),
    (
        "no-break space",
        "2026-11-28 06:01:52.238 DEBUG [TEMP] incubator 37.2\u{a0}C, cooler 6.3\u{a0}C, sample 24-1128-90301 rack 47 pos 7",
    ),
];

fn main() {
    let instrument = Instrument {
        model: "XN-550".into(),
        serial: "SN-20431".into(),
    };
    const N: usize = 20_000;
    let mut rows = Vec::new();
    for (name, line) in LINES {
        let texts: Vec<String> = (0..N).map(|i| format!("{line} #{i}")).collect();
        // Best of five rounds, the patterns compiled before the first.
        let _ = logs::parse_line(&texts[0], &instrument);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t0 = Instant::now();
            for t in &texts {
                std::hint::black_box(logs::parse_line(t, &instrument));
            }
            best = best.min(t0.elapsed().as_secs_f64() * 1e6 / N as f64);
        }
        let out = logs::parse_line(line, &instrument).map(|e| e.text);
        rows.push((name, best, out));
    }
    let ascii = rows[0].1;
    println!("parse + scrub of one log line (native, best of 5 × {N} lines; noisy machine)\n");
    println!(
        "| {:<15} | {:>8} | {:>9} | scrubbed text",
        "line holds", "µs/line", "× ASCII"
    );
    println!("|-----------------|----------|-----------|--------------");
    for (name, us, out) in rows {
        println!(
            "| {:<15} | {:>8.2} | {:>9.1} | {}",
            name,
            us,
            us / ascii,
            out.unwrap_or_default()
        );
    }
}
