//! Shared by the host benchmarks: a deterministic generator of a mixed
//! instrument corpus (logs with PHI in free text, framed ASTM transcripts and
//! HL7 ORU^R01 messages with patient and QC runs, CSV QC exports).

use outpost_collector_core as core;
use std::fmt::Write as _;

/// A small deterministic generator (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

pub const LAST: &[&str] = &["SMITH", "DOE", "OBRIEN", "GARCIA", "NGUYEN", "MULLER"];
pub const FIRST: &[&str] = &["JOHN", "JANE", "MARIA", "WEI", "AHMED", "ANNA"];
pub const ANALYTES: &[&str] = &["WBC", "RBC", "HGB", "HCT", "MCV", "PLT", "NEU#", "LYM%"];

/// Files of each kind until `target` bytes: logs 40 %, ASTM 30 %, HL7 20 %,
/// CSV 10 %, of about 2 MiB each.
pub fn generate(target: u64) -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut files = Vec::new();
    let file_size = 2 << 20;
    let shares = [("log", 40), ("astm", 30), ("hl7", 20), ("csv", 10)];
    for (ext, pct) in shares {
        let want = target * pct / 100;
        let mut written = 0;
        while written < want {
            let mut text = String::new();
            while (text.len() as u64) < file_size.min(want - written) {
                match ext {
                    "log" => log_line(&mut rng, &mut text),
                    "hl7" => hl7_message(&mut rng, &mut text),
                    "csv" => csv_rows(&mut rng, &mut text),
                    _ => astm_session(&mut rng, &mut text),
                }
            }
            let bytes = if ext == "astm" {
                frame_sessions(&text)
            } else {
                text.into_bytes()
            };
            written += bytes.len() as u64;
            files.push((ext, bytes));
        }
    }
    files
}

pub fn log_line(rng: &mut Rng, out: &mut String) {
    let (h, m, s) = (rng.below(24), rng.below(60), rng.below(60));
    let level = rng.pick(&["INFO", "INFO", "INFO", "WARN", "ERROR", "DEBUG"]);
    let _ = match rng.below(4) {
        0 => writeln!(
            out,
            "2026-11-28 {h:02}:{m:02}:{s:02} {level} Sample 24-0627-{:04} ({}, {}; 01/02/19{}) aspirated, rack {}",
            rng.below(10000),
            rng.pick(LAST),
            rng.pick(FIRST),
            40 + rng.below(60),
            rng.below(50)
        ),
        1 => writeln!(
            out,
            "2026-11-28 {h:02}:{m:02}:{s:02} {level} E-{} reagent probe pressure {} kPa out of range 30-45",
            1000 + rng.below(9000),
            rng.below(90)
        ),
        2 => writeln!(
            out,
            "2026-11-28 {h:02}:{m:02}:{s:02} {level} pt {}, {} DOB 3/4/19{} MRN {:07} result sent to LIS",
            rng.pick(LAST),
            rng.pick(FIRST),
            30 + rng.below(70),
            rng.below(10_000_000)
        ),
        _ => writeln!(
            out,
            "2026-11-28 {h:02}:{m:02}:{s:02} {level} QC lot 555-{:02}-{:04} level 2 within limits",
            rng.below(100),
            rng.below(10000)
        ),
    };
}

/// One ASTM session (records separated by CR, one record per line); framed later.
pub fn astm_session(rng: &mut Rng, out: &mut String) {
    let qc = rng.below(10) == 0;
    out.push_str("H|\\^&|||XN-550^00-24^^^^BD634545||||||||E1394-97\r");
    let _ = write!(
        out,
        "P|1||PAT-{}||{}^{}||19{}0304|F\r",
        rng.below(100_000),
        rng.pick(LAST),
        rng.pick(FIRST),
        40 + rng.below(60)
    );
    let _ = write!(
        out,
        "O|1|{}||^^^^WBC|||||||{}||||||||||||||F\r",
        if qc {
            format!("LOT{}^2", rng.below(10000))
        } else {
            format!("S-{}", rng.below(100_000))
        },
        if qc { "Q" } else { "N" }
    );
    for (i, a) in ANALYTES.iter().enumerate() {
        let _ = write!(
            out,
            "R|{}|^^^^{a}^1|{}.{}|10*3/uL|4.0-10.0|N||F||||20261128{:02}{:02}00\r",
            i + 1,
            rng.below(20),
            rng.below(100),
            rng.below(24),
            rng.below(60)
        );
    }
    let _ = write!(
        out,
        "C|1|I|called {} at 555-{:03}-{:04}|G\r",
        rng.pick(LAST),
        rng.below(1000),
        rng.below(10000)
    );
    out.push_str("L|1|N\r\n");
}

/// Frame each session as an E1381 transmission: ENQ, one frame per record, EOT.
pub fn frame_sessions(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 11 / 10);
    for session in text.split_inclusive("\r\n") {
        out.push(0x05);
        for (i, rec) in session
            .trim_end_matches('\n')
            .split_inclusive('\r')
            .enumerate()
        {
            out.extend(core::astm::frame((i + 1) as u8, rec.as_bytes(), true));
        }
        out.push(0x04);
    }
    out
}

pub fn hl7_message(rng: &mut Rng, out: &mut String) {
    let qc = rng.below(10) == 0;
    let _ = write!(
        out,
        "MSH|^~\\&|HemoScreen|PixCell|||20261128173346||ORU^R01|{}|P|2.4\r",
        rng.below(1_000_000)
    );
    if qc {
        let _ = write!(out, "PID||PIX{}N\r", rng.below(1_000_000));
    } else {
        let _ = write!(
            out,
            "PID|1||{:07}^^^HOSP^MR||{}^{}||19{}0304|F|||{} MAIN ST^^SPRINGFIELD^IL^62701||(217)555-{:04}\r",
            rng.below(10_000_000),
            rng.pick(LAST),
            rng.pick(FIRST),
            40 + rng.below(60),
            rng.below(9999),
            rng.below(10000)
        );
    }
    let _ = write!(
        out,
        "OBR|1|||{}|||20261128114100\r",
        if qc { "LQC" } else { "CBC" }
    );
    for (i, a) in ANALYTES.iter().enumerate() {
        let _ = write!(
            out,
            "OBX|{i}|NM|{a}||{}.{}|10*3/uL|5.9-9.3||||F|||20261128114100|0000000-0001-HS\r",
            rng.below(20),
            rng.below(100)
        );
    }
    let _ = write!(
        out,
        "NTE|1||Dr {} called, pt {}\r",
        rng.pick(LAST),
        rng.pick(FIRST)
    );
    out.push('\n');
}

pub fn csv_rows(rng: &mut Rng, out: &mut String) {
    if out.is_empty() {
        out.push_str("instrument,serial,sample type,patient name,analyte,value,unit,range,lot,level,run time\n");
    }
    let qc = rng.below(2) == 0;
    let _ = writeln!(
        out,
        "XN-550,BD634545,{},\"{}, {}\",{},{}.{},10*3/uL,4.0-10.0,{},{},2026-11-28T10:{:02}:00Z",
        if qc { "QC" } else { "patient" },
        rng.pick(LAST),
        rng.pick(FIRST),
        rng.pick(ANALYTES),
        rng.below(20),
        rng.below(100),
        if qc { "LOT4711" } else { "" },
        rng.below(3) + 1,
        rng.below(60)
    );
}
