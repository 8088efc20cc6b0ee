//! Person names in free text (issue #19 part 3): a labelled set of texts
//! with names (which must lose every name word) and of instrument texts with
//! words that look like names — reagents, stains and methods named after
//! people, manufacturers, places, colours (which must keep them). Precision
//! and recall are printed and held above a floor.

use outpost_collector_core::names::{fold, is_given_name, is_surname};
use outpost_collector_core::redact::redact;

/// Texts with a person's name, and the name's words.
const NAMES: &[(&str, &[&str])] = &[
    ("WARN E-2207 pasted id 4711 for Jane Roe", &["Jane", "Roe"]),
    (
        "sample re-run requested by Maria Gonzalez",
        &["Maria", "Gonzalez"],
    ),
    ("result confirmed by MÜLLER ANNA", &["MÜLLER", "ANNA"]),
    (
        "GONZÁLEZ MARÍA called about the result",
        &["GONZÁLEZ", "MARÍA"],
    ),
    ("John Smith reviewed the QC", &["John", "Smith"]),
    ("ROBERT JOHNSON", &["ROBERT", "JOHNSON"]),
    ("Linda Williams at bench 3", &["Linda", "Williams"]),
    ("operator Patricia logged in", &["Patricia"]),
    ("sent to Michael Brown for review", &["Michael", "Brown"]),
    ("José García re-ran level 2", &["José", "García"]),
    ("KAREN DAVIS acknowledged alarm A-12", &["KAREN", "DAVIS"]),
    ("Susan Clark changed the reagent", &["Susan", "Clark"]),
    (
        "calibration approved by Thomas Anderson",
        &["Thomas", "Anderson"],
    ),
    (
        "Jennifer Martinez: probe cleaned",
        &["Jennifer", "Martinez"],
    ),
    ("David Lee", &["David", "Lee"]),
    (
        "QC reviewed by Sarah Taylor 2024-06-27 13:54:07",
        &["Sarah", "Taylor"],
    ),
    (
        "Daniel Harris restarted the analyzer",
        &["Daniel", "Harris"],
    ),
    ("note from Nancy Lewis", &["Nancy", "Lewis"]),
    ("PAUL ROBINSON LOGGED OUT", &["PAUL", "ROBINSON"]),
    ("Laura Young replaced the lamp", &["Laura", "Young"]),
    ("user Kevin", &["Kevin"]),
    ("Emily Moore: tube jam cleared", &["Emily", "Moore"]),
    ("James O'Brien verified lot PX440N", &["James", "O'Brien"]),
    ("by Jürgen Schäfer", &["Jürgen", "Schäfer"]),
    ("Zoë Kowalski called", &["Zoë", "Kowalski"]),
    ("ack by Nguyen Minh", &["Nguyen", "Minh"]),
    ("Fatima Khan checked the controls", &["Fatima", "Khan"]),
    ("Björn Andersson", &["Björn", "Andersson"]),
    ("Dolores Pérez rerun", &["Dolores", "Pérez"]),
    ("MARGARET THOMPSON", &["MARGARET", "THOMPSON"]),
];

/// Instrument texts whose words look like names; nothing in them is one.
const DEVICE: &[&str] = &[
    "Wright stain lot 4711 expired",
    "Giemsa reagent low",
    "May-Grünwald stain replaced",
    "Gram stain QC passed",
    "Levey-Jennings chart updated",
    "Westgard rule 1-3s violated",
    "Drabkin reagent replaced",
    "Coulter principle: aperture blocked",
    "Sysmex XN-550 ready",
    "Roche cobas c311 calibration due",
    "Abbott Alinity ci online",
    "Bio-Rad Lyphochek level 2",
    "Wash solution empty",
    "Max volume reached",
    "Mark position set",
    "Long run warning",
    "High control out of range",
    "Low Sample volume",
    "Sample Rack 3 loaded",
    "Probe Wash cycle complete",
    "Hamilton STAR pipettor idle",
    "Beckman Coulter AU680 maintenance",
    "Ortho Vitros 5600 ready",
    "Stago STA-R Max calibration",
    "Siemens Atellica CH online",
    "Mindray BC-6800 warming up",
    "Horiba Yumizen H500 QC",
    "Thermo Fisher reagent",
    "Jaffe creatinine method",
    "Bradford assay blank",
    "Christmas factor assay",
    "Wilson disease panel ordered",
    "Hope Hospital site",
    "Grace Lab",
    "Mayo Clinic reference range",
    "Johns Hopkins protocol",
    "Lincoln Park site",
    "Austin Texas depot",
    "Carl Zeiss microscope",
    "Rose Bengal stain",
    "White count High",
    "Green tube Blue cap",
    "WBC Flag: Left Shift",
    "Baso Count low",
    "June maintenance schedule",
    "Power Supply OK",
    "Master Node link up",
    "Ferritin Calibrator Lot 22",
    "Dean Street Lab",
    "Jackson Memorial",
];

#[test]
fn names_in_free_text_precision_and_recall() {
    let mut found = 0;
    let mut missed = Vec::new();
    for (text, words) in NAMES {
        let out = redact(text);
        let leaked: Vec<&&str> = words.iter().filter(|w| out.contains(**w)).collect();
        if leaked.is_empty() {
            found += 1;
        } else {
            missed.push(format!("{text:?} -> {out:?}"));
        }
    }
    let mut false_hits = Vec::new();
    for text in DEVICE {
        let out = redact(text);
        if out.contains("[REDACTED:name]") {
            false_hits.push(format!("{text:?} -> {out:?}"));
        }
    }
    let recall = found as f64 / NAMES.len() as f64;
    let precision = found as f64 / (found + false_hits.len()) as f64;
    eprintln!(
        "names: recall {found}/{} = {recall:.2}, precision {found}/{} = {precision:.2}\n  missed: {missed:#?}\n  device texts hit: {false_hits:#?}",
        NAMES.len(),
        found + false_hits.len()
    );
    assert!(recall >= 0.85, "recall {recall:.2}: {missed:#?}");
    assert!(
        precision >= 0.9,
        "precision {precision:.2}: {false_hits:#?}"
    );
}

#[test]
fn only_the_name_is_replaced_and_the_text_stays_readable() {
    assert_eq!(
        redact("WARN E-2207 pasted id 4711 for Jane Roe"),
        "WARN E-2207 pasted id [REDACTED:id] for [REDACTED:name]"
    );
    assert_eq!(
        redact("result confirmed by MÜLLER ANNA at 13:54"),
        "result confirmed by [REDACTED:name] at 13:54"
    );
    // Lower-case words are English, not names.
    for text in ["may will long mark", "jane roe", "the mark was long"] {
        assert_eq!(redact(text), text);
    }
}

#[test]
fn non_ascii_names_are_folded_to_their_list_forms() {
    for (word, folded) in [
        ("MÜLLER", "MULLER"),
        ("González", "GONZALEZ"),
        ("Straße", "STRASSE"),
        ("O'Brien", "OBRIEN"),
        ("Łukasz", "LUKASZ"),
    ] {
        assert_eq!(fold(word).as_deref(), Some(folded), "{word}");
    }
    assert_eq!(fold("Ωmega"), None);
    assert!(is_surname("MULLER") && is_surname("GONZALEZ") && is_given_name("MARIA"));
    // Device words never count, whatever the lists say.
    for w in ["MAY", "MAX", "WHITE", "WASH", "SAMPLE", "WRIGHT"] {
        assert!(!is_given_name(w) && !is_surname(w), "{w}");
    }
}

/// The sample instrument logs and the shared corpus's texts: the name pass
/// finds the one person the corpus names outside its patient records (the
/// operator `John Doe` in GeneXpert's R.11) and changes no other line.
#[test]
fn instrument_logs_lose_no_device_words_to_the_name_pass() {
    use outpost_collector_core::names::redact_names;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut lines = 0;
    let (mut found, mut false_hits) = (0, Vec::new());
    for dir in [
        "examples/sample-data/instrument-logs",
        "collector-core/tests/data/astm",
        "collector-core/tests/data/hl7",
    ] {
        for f in std::fs::read_dir(root.join(dir)).unwrap() {
            let text =
                String::from_utf8_lossy(&std::fs::read(f.unwrap().path()).unwrap()).into_owned();
            for line in text.split(['\n', '\r']) {
                // Patient records and segments are dropped before any text
                // is redacted.
                let record = line.trim_start_matches(|c: char| c.is_ascii_digit() || c == '\u{2}');
                if ["P|", "C|", "PID|", "NK1|", "PV1|", "NTE|"]
                    .iter()
                    .any(|p| record.starts_with(p))
                {
                    continue;
                }
                lines += 1;
                if let std::borrow::Cow::Owned(out) = redact_names(line) {
                    if line.contains("John Doe") && !out.contains("John Doe") {
                        found += 1;
                    } else {
                        false_hits.push(out);
                    }
                }
            }
        }
    }
    eprintln!(
        "corpus: {lines} device lines; the operator's name found in {found}, {} other line(s) changed",
        false_hits.len()
    );
    assert!(lines > 50);
    assert!(found >= 3, "the operator name in GeneXpert's results");
    assert!(false_hits.is_empty(), "{false_hits:#?}");
}
