//! The collector module inside the host on the shared corpus: QC results come
//! out, patient data never does, and a restart does not re-send.

use super::harness::{DEFAULT_LIMITS, env, manifest};
use outpost_host::runtime::bindings::collector::exports::outpost::agent::collect::Trigger;
use std::path::Path;

/// PHI values read from the corpus files (see collector-core/tests/it/corpus.rs
/// for the per-file lists); none may reach the spool.
const PHI: &[&str] = &[
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

fn copy_corpus(to: &Path) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector-core/tests/data");
    for sub in ["astm", "hl7"] {
        for f in std::fs::read_dir(data.join(sub)).unwrap() {
            let f = f.unwrap().path();
            let ext = if sub == "astm" { "astm" } else { "hl7" };
            let name = f.file_stem().unwrap().to_string_lossy().into_owned();
            std::fs::copy(&f, to.join(format!("{name}.{ext}"))).unwrap();
        }
    }
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
    let bodies: Vec<String> = batches
        .iter()
        .map(|b| String::from_utf8(spool.body(b.seq).unwrap()).unwrap())
        .collect();
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
        qc, 20,
        "the HemoScreen QC run's 20 results, nothing from patient samples"
    );
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

    /// The text of every instrument event queued by this module, in order.
    fn event_texts(&self) -> Vec<String> {
        let spool = &env().runtime.services().spool;
        let mut out = Vec::new();
        for b in spool
            .list()
            .unwrap()
            .into_iter()
            .filter(|b| b.module == self.name && b.stream == "events")
        {
            let body: serde_json::Value =
                serde_json::from_slice(&spool.body(b.seq).unwrap()).unwrap();
            for r in body.as_array().unwrap() {
                out.push(r["Event"]["text"].as_str().unwrap().to_owned());
            }
        }
        out
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.dir.path().join(file), text).unwrap();
    }

    fn append(&self, file: &str, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join(file))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
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
