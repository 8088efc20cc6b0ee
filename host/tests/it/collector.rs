//! The collector module inside the host on the shared corpus: QC results come
//! out, patient data never does, and a restart does not re-send.

use super::harness::{DEFAULT_LIMITS, batch_json, env, manifest};
use outpost_host::runtime::bindings::collector::exports::outpost::agent::collect::Trigger;
use std::path::Path;

/// PHI values read from the corpus files (see collector-core/tests/it/corpus.rs
/// for the per-file lists); none may reach the spool.
pub(super) const PHI: &[&str] = &[
    "Mohale",
    "Rita",
    "19771201",
    "Jim",
    "Brown",
    "19870626",
    "John Doe",
    "Sardani",
    "Lantion",
    "Marcil",
    "test_patient",
    "555-44-4444",
    "EVERYWOMAN",
    "FERNWOOD",
    "STATESVILLE",
    "AC555444444",
    "555-55-5555",
    "HIPPOCRATES",
    "PATRICIA",
];

pub(super) fn copy_corpus(to: &Path) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector-core/tests/data");
    for sub in ["astm", "hl7"] {
        for f in std::fs::read_dir(data.join(sub)).unwrap() {
            let f = f.unwrap().path();
            let ext = if sub == "astm" { "astm" } else { "hl7" };
            let name = f.file_stem().unwrap().to_string_lossy().into_owned();
            let copy = to.join(format!("{name}.{ext}"));
            std::fs::copy(&f, &copy).unwrap();
            // Written an hour ago: complete files, so every last message is read now.
            age(&copy, 3600);
        }
    }
}

/// Sets a file's modification time `secs` into the past.
fn age(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn corpus_in_qc_out_no_phi_and_no_resend_after_restart() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    copy_corpus(dir.path());
    let dirs = [("instrument-logs".to_string(), dir.path().to_owned())].into();
    let m = manifest(
        "corpus-collector",
        "collector",
        "directories = [\"instrument-logs\"]\nuplink-streams = [\"heartbeat\", \"events\", \"qc\", \"maintenance\", \"software\"]\nstate-quota-bytes = 1048576",
        DEFAULT_LIMITS,
    );
    let spool = &e.runtime.services().spool;
    let ours = || {
        spool
            .list()
            .unwrap()
            .into_iter()
            .filter(|b| b.module == "corpus-collector")
            .collect::<Vec<_>>()
    };

    let module = e.load_with_dirs(outpost_artifacts::COLLECTOR, &m, &dirs);
    let report =
        e.rt.block_on(e.runtime.collect(&module, Trigger::Startup))
            .unwrap();
    assert_eq!(report.files_scanned, 16, "{report:?}");
    let batches = ours();
    let bodies: Vec<String> = batches.iter().map(|b| batch_json(b.seq)).collect();
    for phi in PHI {
        for body in &bodies {
            assert!(!body.contains(phi), "PHI value {phi:?} reached the spool");
        }
    }
    let qc: usize = batches
        .iter()
        .zip(&bodies)
        .filter(|(b, _)| b.stream == "qc")
        .map(|(b, _)| b.records as usize)
        .sum();
    assert_eq!(
        qc, 41,
        "the HemoScreen QC run's 20 results and the Yumizen QC transmission's 21, nothing from patient samples"
    );
    assert!(
        bodies.iter().any(|b| b.contains("PIX240205N")),
        "HemoScreen lot"
    );
    assert!(bodies.iter().any(|b| b.contains("PX440N")), "Yumizen lot");
    assert!(bodies.iter().any(|b| b.contains("\"analyte\"")));

    // A restarted host (a freshly loaded module, the same state): nothing new.
    let restarted = e.load_with_dirs(outpost_artifacts::COLLECTOR, &m, &dirs);
    let before = ours().len();
    e.rt.block_on(e.runtime.collect(&restarted, Trigger::Startup))
        .unwrap();
    let after = ours();
    assert!(
        after[before..].iter().all(|b| b.stream == "heartbeat"),
        "only a heartbeat after restart: {:?}",
        &after[before..]
    );
}

/// A collector over its own folder, and what it has queued so far.
struct Folder {
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Folder {
    fn new(name: &'static str) -> Folder {
        Folder {
            dir: tempfile::tempdir().unwrap(),
            name,
        }
    }

    /// A freshly loaded module (a host restart keeps only the module's state).
    fn module(&self) -> std::sync::Arc<outpost_host::runtime::LoadedModule> {
        let m = manifest(
            self.name,
            "collector",
            "directories = [\"instrument-logs\"]\nuplink-streams = [\"heartbeat\", \"events\", \"qc\", \"maintenance\", \"software\"]\nstate-quota-bytes = 1048576",
            DEFAULT_LIMITS,
        );
        let dirs = [("instrument-logs".to_string(), self.dir.path().to_owned())].into();
        env().load_with_dirs(outpost_artifacts::COLLECTOR, &m, &dirs)
    }

    fn collect(
        &self,
        m: &outpost_host::runtime::LoadedModule,
    ) -> outpost_host::runtime::bindings::collector::exports::outpost::agent::collect::CollectReport
    {
        let e = env();
        e.rt.block_on(e.runtime.collect(m, Trigger::Schedule))
            .unwrap()
    }

    /// Every record this module queued on `stream`, in order, as wire JSON
    /// (each asserted to be of `kind`).
    fn records(&self, stream: &str, kind: &str) -> Vec<serde_json::Value> {
        let spool = &env().runtime.services().spool;
        let mut out = Vec::new();
        for b in spool
            .list()
            .unwrap()
            .into_iter()
            .filter(|b| b.module == self.name && b.stream == stream)
        {
            let body: serde_json::Value = serde_json::from_str(&batch_json(b.seq)).unwrap();
            for r in body["records"].as_array().unwrap() {
                assert_eq!(r["kind"], kind);
                out.push(r.clone());
            }
        }
        out
    }

    /// The text of every instrument event queued by this module, in order.
    fn event_texts(&self) -> Vec<String> {
        self.records("events", "event")
            .iter()
            .map(|r| r["text"].as_str().unwrap().to_owned())
            .collect()
    }

    /// `(control lot, value)` of every QC result queued by this module, in order.
    fn qc_results(&self) -> Vec<(String, String)> {
        self.records("qc", "qc")
            .iter()
            .map(|q| {
                (
                    q["control-lot"].as_str().unwrap().to_owned(),
                    q["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn write(&self, file: &str, text: impl AsRef<[u8]>) {
        std::fs::write(self.dir.path().join(file), text).unwrap();
    }

    fn append(&self, file: &str, text: impl AsRef<[u8]>) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join(file))
            .unwrap();
        f.write_all(text.as_ref()).unwrap();
    }
}

#[test]
fn log_cursors_survive_restart_partial_lines_truncation_and_rotation() {
    let f = Folder::new("cursor-collector");
    let m = f.module();
    f.write("app.log", "INFO one\nINFO two\nINFO three\n");
    f.collect(&m);
    assert_eq!(f.event_texts(), ["one", "two", "three"]);

    // Appended lines and a partial one: only complete lines are read.
    f.append("app.log", "INFO four\nINFO five\nINFO si");
    f.collect(&m);
    assert_eq!(f.event_texts().len(), 5);

    // Restart mid-file: the partial line completes, nothing is re-sent or skipped.
    let m = f.module();
    f.append("app.log", "x\nINFO seven\n");
    f.collect(&m);
    assert_eq!(
        f.event_texts(),
        ["one", "two", "three", "four", "five", "six", "seven"]
    );

    // Truncation: the file starts over with new content.
    f.write("app.log", "INFO after truncation\n");
    f.collect(&m);
    assert_eq!(f.event_texts().last().unwrap(), "after truncation");
    assert_eq!(f.event_texts().len(), 8);

    // Rotation: the old file is renamed away, a new, longer one takes its name.
    std::fs::rename(f.dir.path().join("app.log"), f.dir.path().join("app.log.1")).unwrap();
    f.write(
        "app.log",
        "WARN rotated a\nWARN rotated b\nWARN rotated c\n",
    );
    f.collect(&m);
    let texts = f.event_texts();
    assert_eq!(&texts[8..], ["rotated a", "rotated b", "rotated c"]);
    f.collect(&m);
    assert_eq!(f.event_texts().len(), 11, "nothing re-sent");
}

#[test]
fn malformed_and_huge_inputs_are_counted_and_the_rest_still_processed() {
    let f = Folder::new("malformed-collector");
    // A 2 GB transcript (sparse), binary garbage, a 50 MB line, and one good log line.
    let big = std::fs::File::create(f.dir.path().join("huge.astm")).unwrap();
    big.set_len(2 << 30).unwrap();
    std::fs::write(
        f.dir.path().join("garbage.astm"),
        (0..4096u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut long = vec![b'A'; 50 << 20];
    long.extend_from_slice(b"\nERROR E-0042 after the long line\n");
    std::fs::write(f.dir.path().join("long.log"), long).unwrap();
    f.write("good.log", "WARN W-0001 fine\n");

    let m = f.module();
    let first = f.collect(&m);
    assert!(
        first.malformed >= 2,
        "the huge transcript and the long line are counted: {first:?}"
    );
    assert!(
        f.event_texts().iter().any(|t| t == "W-0001 fine"),
        "the good file was processed"
    );
    // Keep collecting until the long line has been skipped: exactly the line
    // after it comes out, never a fragment of the long line.
    for _ in 0..20 {
        f.collect(&m);
    }
    let texts = f.event_texts();
    assert!(
        texts.iter().any(|t| t == "E-0042 after the long line"),
        "{texts:?}"
    );
    assert!(
        texts.iter().all(|t| !t.starts_with("AAAA")),
        "no fragment of the long line"
    );
    assert_eq!(texts.len(), 2, "{texts:?}");
}

/// One framed ASTM transmission (ENQ ... EOT) of a QC run with one result.
fn astm_qc(lot: &str, value: &str) -> Vec<u8> {
    use outpost_collector_core::astm::frame;
    let records = [
        "H|\\^&|||XN-550^00-24^^^^BD634545||||||||E1394-97\r".to_string(),
        "P|1||PAT-77||DOE^JANE||19500304|F\r".to_string(),
        format!("O|1|{lot}||^^^^WBC|||||||Q||||||||||||||F\r"),
        format!("R|1|^^^^WBC^1|{value}|10*3/uL|4.0-10.0|N||F||||20240627135407\r"),
        "L|1|N\r".to_string(),
    ];
    let mut out = vec![0x05];
    for (i, r) in records.iter().enumerate() {
        out.extend(frame((i + 1) as u8, r.as_bytes(), true));
    }
    out.push(0x04);
    out
}

/// One HL7 QC message with one result (no end marker: plain file).
fn hl7_qc(lot: &str, value: &str) -> String {
    format!(
        "MSH|^~\\&|HemoScreen|PixCell|||20231224173346||ORU^R01|1|P|2.4\r\
         PID||{lot}\r\
         OBR||||LQC|||20231210114100\r\
         OBX|0|NM|WBC||{value}|10*3/uL|5.9-9.3||||F|||20231210114100|0000000-0001-HS\r"
    )
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn growing_astm_transcript_is_read_message_by_message_across_restarts() {
    let f = Folder::new("astm-growing-collector");
    let m = f.module();
    let (one, two, three) = (
        astm_qc("LOT-1", "1.1"),
        astm_qc("LOT-2", "2.2"),
        astm_qc("LOT-3", "3.3"),
    );
    // One whole transmission and the first half of the next (cut inside a frame).
    let half = two.len() / 2;
    f.write("capture.astm", [&one[..], &two[..half]].concat());
    f.collect(&m);
    assert_eq!(f.qc_results(), pairs(&[("LOT-1", "1.1")]));

    // The host restarts; the rest arrives with part of a third message.
    let m = f.module();
    f.append("capture.astm", [&two[half..], &three[..10]].concat());
    f.collect(&m);
    assert_eq!(f.qc_results(), pairs(&[("LOT-1", "1.1"), ("LOT-2", "2.2")]));

    f.append("capture.astm", &three[10..]);
    f.collect(&m);
    f.collect(&m);
    let all = pairs(&[("LOT-1", "1.1"), ("LOT-2", "2.2"), ("LOT-3", "3.3")]);
    assert_eq!(f.qc_results(), all, "no duplicate, no gap");

    // Truncated and rewritten: read again from the start.
    f.write("capture.astm", astm_qc("LOT-4", "4.4"));
    f.collect(&m);
    assert_eq!(
        f.qc_results().last().unwrap(),
        &("LOT-4".into(), "4.4".into())
    );
    assert_eq!(f.qc_results().len(), 4);
}

#[test]
fn growing_hl7_file_reads_its_last_message_once_settled() {
    let f = Folder::new("hl7-growing-collector");
    let m = f.module();
    f.write(
        "results.hl7",
        hl7_qc("LOT-A", "1.0") + &hl7_qc("LOT-B", "2.0"),
    );
    f.collect(&m);
    // The second message has no end marker and the file was just written: wait.
    assert_eq!(f.qc_results(), pairs(&[("LOT-A", "1.0")]));
    // Unchanged at the next scan: it is complete.
    f.collect(&m);
    assert_eq!(f.qc_results(), pairs(&[("LOT-A", "1.0"), ("LOT-B", "2.0")]));

    // A third message arrives in two writes; a restart in between.
    let third = hl7_qc("LOT-C", "3.0");
    f.append("results.hl7", &third[..40]);
    f.collect(&m);
    let m = f.module();
    f.append("results.hl7", &third[40..]);
    f.collect(&m);
    assert_eq!(f.qc_results().len(), 2, "just completed: not settled yet");
    // Old enough (not modified for a while): read without waiting for a rescan.
    age(&f.dir.path().join("results.hl7"), 120);
    f.collect(&m);
    let all = pairs(&[("LOT-A", "1.0"), ("LOT-B", "2.0"), ("LOT-C", "3.0")]);
    assert_eq!(f.qc_results(), all);
    f.collect(&m);
    assert_eq!(f.qc_results(), all, "nothing re-sent");

    // MLLP-framed messages end with FS CR: read at once.
    let mllp = |lot: &str, v: &str| format!("\x0b{}\x1c\r", hl7_qc(lot, v));
    f.write("link.hl7", mllp("LOT-D", "4.0") + &mllp("LOT-E", "5.0"));
    f.collect(&m);
    assert_eq!(f.qc_results().len(), 5);
}

#[test]
fn growing_csv_export_is_read_row_by_row_under_its_header() {
    let f = Folder::new("csv-growing-collector");
    let m = f.module();
    let header = "instrument,serial,sample type,patient name,analyte,value,unit,lot\n";
    let row = |kind: &str, who: &str, v: &str| {
        format!("XN-550,BD634545,{kind},\"{who}\",WBC,{v},10*3/uL,LOT-{v}\n")
    };
    f.write(
        "qc.csv",
        [
            header.to_string(),
            row("QC", "", "1.0"),
            row("patient", "DOE, JANE", "9.9"),
        ]
        .concat(),
    );
    f.collect(&m);
    assert_eq!(f.qc_results(), pairs(&[("LOT-1.0", "1.0")]));
    // Appended rows (the last one still being written), then a restart.
    let two = row("QC", "", "2.0");
    f.append(
        "qc.csv",
        [two.as_str(), &row("QC", "", "3.0")[..12]].concat(),
    );
    f.collect(&m);
    let m = f.module();
    f.append("qc.csv", &row("QC", "", "3.0")[12..]);
    f.collect(&m);
    f.collect(&m);
    assert_eq!(
        f.qc_results(),
        pairs(&[("LOT-1.0", "1.0"), ("LOT-2.0", "2.0"), ("LOT-3.0", "3.0")]),
        "each row once, the header applied to every run of rows"
    );
    let spool = &env().runtime.services().spool;
    for b in spool.list().unwrap().iter().filter(|b| b.module == f.name) {
        let body = batch_json(b.seq);
        assert!(!body.contains("DOE") && !body.contains("9.9"), "{body}");
    }
}

#[test]
fn a_record_the_host_guard_refuses_is_dropped_alone_and_the_rest_arrives() {
    let f = Folder::new("guarded-collector");
    let m = f.module();
    let before = env().runtime.services().spool.counters().unwrap();
    // The middle line forwards a raw HL7 patient segment: the collector's
    // scrubber redacts the name but leaves the segment; the host's guard
    // refuses it.
    f.write(
        "lis.log",
        "WARN W-0001 before\nWARN W-0002 forwarded PID|1||0012345^^^HOSP^MR||DOE^JANE\nWARN W-0003 after\n",
    );
    let report = f.collect(&m);
    assert_eq!(report.malformed, 1, "{report:?}");
    assert_eq!(f.event_texts(), ["W-0001 before", "W-0003 after"]);
    let after = env().runtime.services().spool.counters().unwrap();
    let refused =
        |c: &std::collections::BTreeMap<String, u64>| c.get("guard-refused").copied().unwrap_or(0);
    assert!(refused(&after) > refused(&before));
    // The cursor moved past the refused line: nothing is retried.
    f.collect(&m);
    assert_eq!(f.event_texts().len(), 2);
    // ... and the refused record is not gone: it is a dead letter, with the
    // reason and field and no value.
    let held: Vec<_> = env()
        .runtime
        .services()
        .spool
        .dead_letters()
        .list()
        .unwrap()
        .into_iter()
        .filter(|d| d.module == f.name)
        .collect();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        (
            held[0].stream.as_str(),
            held[0].reason.as_str(),
            held[0].field.as_deref()
        ),
        ("events", "patient-segment", Some("text"))
    );
    // Counted where Prometheus scrapes.
    let services = env().runtime.services();
    let metrics = services.metrics.render(services);
    assert!(
        metrics.contains("uplink_dead_letters{source=\"guard\"}")
            && metrics.contains("uplink_counter{name=\"guard-dead-letter:events\"}"),
        "{metrics}"
    );
}

/// Issue #19: a CSV QC export whose `Lot` column holds SSN-shaped values
/// loses no row: the lot field is masked, every result arrives, and nothing
/// is refused or dead-lettered.
#[test]
fn a_csv_export_with_ssn_shaped_lots_loses_no_row() {
    let f = Folder::new("ssn-lot-collector");
    let m = f.module();
    let mut csv = String::from("Instrument;Serial;Analyte;Result;Unit;Lot;QC Level\r\n");
    for i in 0..20 {
        let lot = match i % 4 {
            0 => format!("555-12-{:04}", 3400 + i),
            1 => format!("555 12 {:04}", 3400 + i),
            2 => format!("L{:04}A", 2300 + i),
            _ => format!("55512{:04}", 3400 + i),
        };
        csv.push_str(&format!(
            "XN-550;BD634545;HGB;{i}.5;g/dL;{lot};{}\r\n",
            i % 3 + 1
        ));
    }
    f.write("qc-export.csv", csv);
    let report = f.collect(&m);
    let held = env()
        .runtime
        .services()
        .spool
        .dead_letters()
        .list()
        .unwrap();
    let held: Vec<_> = held.iter().filter(|d| d.module == f.name).collect();
    assert_eq!(
        (report.records_queued, report.malformed),
        (21, 0),
        "{report:?} {held:?}"
    );
    let got = f.qc_results();
    assert_eq!(got.len(), 20, "{got:?}");
    for (i, (lot, value)) in got.iter().enumerate() {
        assert_eq!(value, &format!("{i}.5"));
        match i % 4 {
            2 => assert_eq!(lot, &format!("L{:04}A", 2300 + i)),
            _ => assert_eq!(lot, "[REDACTED:ssn]", "row {i}"),
        }
    }
    let held = env()
        .runtime
        .services()
        .spool
        .dead_letters()
        .list()
        .unwrap();
    assert!(!held.iter().any(|d| d.module == f.name), "{held:?}");
}

/// A folder of thousands of files (years of daily logs): a call stops
/// starting files after its time budget, says a backlog is waiting, and the
/// next call begins at the file it did not reach, until a round has checked
/// every file once — no call runs into its CPU deadline, every line arrives
/// once, a line added meanwhile to a file the round had passed is read by
/// the next round, and a round over unchanged files ends.
#[test]
fn a_folder_of_thousands_of_files_is_read_over_several_calls_in_turn() {
    let f = Folder::new("many-files-collector");
    let m = f.module();
    let e = env();
    // Enough files that reading them all takes longer than the budget (each
    // new file's first batch is a durable commit; under Wine a commit costs
    // tens of milliseconds, so fewer files suffice there).
    const FILES: usize = if cfg!(windows) { 200 } else { 1500 };
    for i in 0..FILES {
        f.write(
            &format!("day-{i:05}.log"),
            format!("INFO line of day {i}\n"),
        );
    }
    let call = || {
        e.rt.block_on(e.runtime.collect_reporting_backlog(&m, Trigger::Schedule))
            .expect("no call fails (none reaches its CPU deadline)")
    };
    // Calls until a round ends; the lines they queued (each call also
    // queues a heartbeat).
    let round = |what: &str| {
        let (mut calls, before) = (0, f.event_texts().len());
        loop {
            let (_, backlog) = call();
            calls += 1;
            if !backlog {
                return (calls, f.event_texts().len() - before);
            }
            assert!(calls < 200, "{what}: the round never ended");
        }
    };
    let (first, backlog) = call();
    assert!(backlog, "the first call stopped early: {first:?}");
    let first_lines = f.event_texts().len();
    assert!(first_lines < FILES);
    // The round has passed the first file: a line added to it waits for the
    // next round.
    f.append("day-00000.log", "INFO added to the first day\n");
    let (calls, queued) = round("the first round");
    assert_eq!(first_lines + queued, FILES);
    let texts = f.event_texts();
    let distinct: std::collections::BTreeSet<&String> = texts.iter().collect();
    assert_eq!(distinct.len(), FILES, "every line once");
    let (again, queued) = round("the second round");
    assert_eq!(queued, 1);
    assert_eq!(f.event_texts().last().unwrap(), "added to the first day");
    let (unchanged, queued) = round("a round over unchanged files");
    assert_eq!(queued, 0, "nothing is read twice");
    eprintln!(
        "{FILES} files: first round {} calls, second {again}, unchanged {unchanged}",
        calls + 1
    );
}
