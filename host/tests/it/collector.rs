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
