//! Every corpus file: parse, assert the PHI values written down per file are
//! absent from the serialised output, and check what must (not) be produced.

use super::{assert_absent, json};
use outpost_collector_core::{Instrument, ParseOutput, Record, Timestamp, astm, hl7};

fn data(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("reading {full}: {e}"))
}

struct Case {
    file: &'static str,
    /// PHI values found by reading the file; none may reach the output.
    phi: &'static [&'static str],
    /// Whether the capture is E1381-framed (then no frame may fail its checksum).
    framed: bool,
}

/// ASTM corpus. O.12 (action code) is `N` or empty in every file; only
/// yumizen_h500 is a QC transmission, declared by H.12 = `Q` (LIS2-A2 processing
/// id "quality control"), so it alone produces results (checked field by field
/// below). Its O.3 `PX440N` is then the control lot, not a patient specimen;
/// the operator in R.11 (`MATYL`) and the C-record text must not come out.
const ASTM: &[Case] = &[
    Case {
        file: "abbott_afinion2.txt",
        phi: &["3643"],
        framed: true,
    },
    Case {
        file: "cobas_c111.txt",
        phi: &["T20 10134GA D28", "10134GA"],
        framed: true,
    },
    Case {
        file: "cobas_c311.txt",
        phi: &["11625", "CL-PL-24-0370", "labo"],
        framed: true,
    },
    Case {
        file: "dca_vantage.txt",
        phi: &["BU24R554", "660^0090"],
        framed: true,
    },
    Case {
        file: "genexpert.txt",
        phi: &[
            "PR25A137", "John Doe", "Sardani", "Lantion", "Marcil", "118176",
        ],
        framed: true,
    },
    Case {
        file: "mini_vidas.txt",
        phi: &["Z1G021SCR"],
        framed: false,
    },
    Case {
        file: "mini_vidas_mock.txt",
        phi: &["test_patient", "Z1G021SCR"],
        framed: true,
    },
    Case {
        file: "pentra_xlr.txt",
        phi: &["Mohale", "Rita", "19771201", "S1234"],
        framed: true,
    },
    Case {
        file: "spotchem_el.txt",
        phi: &["1DC042FP"],
        framed: false,
    },
    Case {
        file: "spotchem_el_mock.txt",
        phi: &["1DC042FP", "B. Plasma"],
        framed: true,
    },
    Case {
        file: "sysmex_xn550.txt",
        phi: &[
            "37182", "Jim", "Brown", "19870626", "DR.1", "WEST", "POST HD",
        ],
        framed: true,
    },
    Case {
        file: "sysmex_xp100.txt",
        phi: &["            113"],
        framed: true,
    },
    Case {
        file: "yumizen_h500.txt",
        phi: &["MATYL", "ABXdifftrol", "CONTROL_FAILED", "REFERENCE_RANGE"],
        framed: true,
    },
];

const HL7_EVERYWOMAN_PHI: &[&str] = &[
    "555-44-4444",
    "EVERYWOMAN",
    "EVE",
    "JONES",
    "196203520",
    "FERNWOOD",
    "STATESVILLE",
    "35292",
    "3345232",
    "752-121",
    "AC555444444",
    "67-A4335",
    "555-55-5555",
    "PATRICIA",
    "LEVEL SEVEN",
    "444-44-4444",
    "HIPPOCRATES",
    "HOWARD",
    "845439",
    "1045813",
    "182",
];

fn configured() -> Instrument {
    Instrument {
        model: "configured".into(),
        serial: "CFG-1".into(),
    }
}

#[test]
fn astm_corpus_produces_no_phi_and_no_patient_results() {
    for case in ASTM {
        let out = astm::parse(&data(&format!("astm/{}", case.file)), &configured());
        let s = json(&out);
        assert_absent(&s, case.phi, case.file);
        if case.file != "yumizen_h500.txt" {
            assert!(
                out.records.is_empty(),
                "{}: patient results produced: {s}",
                case.file
            );
        }
        if case.framed {
            assert_eq!(
                out.stats.malformed_frames, 0,
                "{}: {:?}",
                case.file, out.stats
            );
            assert!(out.stats.records > 0, "{}", case.file);
        }
    }
}

#[test]
fn astm_corpus_counts_what_it_drops() {
    let out = astm::parse(&data("astm/pentra_xlr.txt"), &configured());
    assert_eq!(out.stats.frames, 28);
    assert_eq!(out.stats.patient_records_dropped, 1);
    assert_eq!(out.stats.comments_dropped, 3);
    assert_eq!(out.stats.patient_results_dropped, 21);
    // Not ASTM records at all: counted, nothing produced.
    let out = astm::parse(&data("astm/spotchem_el.txt"), &configured());
    assert_eq!(out.stats.malformed_frames, 1);
    // Mock files declare `\\^&` (repeat == component): header counted malformed.
    let out = astm::parse(&data("astm/mini_vidas_mock.txt"), &configured());
    assert_eq!(out.stats.malformed_records, 1);
}

#[test]
fn hl7_normative_everywoman_yields_nothing() {
    let out = hl7::parse(&data("hl7/hl7_normative_oru_everywoman.hl7"), &configured());
    assert_absent(&json(&out), HL7_EVERYWOMAN_PHI, "everywoman");
    assert!(out.records.is_empty());
    assert_eq!(out.stats.patient_records_dropped, 1);
    assert_eq!(out.stats.patient_results_dropped, 2);
}

#[test]
fn hl7_hemoscreen_fresh_blood_is_a_patient_sample() {
    let out = hl7::parse(&data("hl7/hemoscreen_fresh_blood.hl7"), &configured());
    assert!(out.records.is_empty(), "{:?}", out.records);
    assert_eq!(out.stats.patient_records_dropped, 1);
    assert_eq!(out.stats.patient_results_dropped, 20);
    assert_absent(
        &json(&out),
        &["\"35\"", "11.7", "20231210111800"],
        "fresh blood",
    );
}

/// (analyte, value, unit, reference range) of every OBX in the QC file.
const HEMOSCREEN_QC: &[(&str, &str, &str, &str)] = &[
    ("WBC", "11.0", "10*3/uL", "5.9-9.3"),
    ("RBC", "10.3", "10*6/uL", "4.3-5.5"),
    ("HGB", "39.99", "g/dL", "14.2-17.8"),
    ("HCT", "87.95", "%", "33.5-42.5"),
    ("MCV", "85.25", "fL", "72.5-82.5"),
    ("MCH", "38.76", "pg", "27.7-37.7"),
    ("MCHC", "0.00", "g/dL", "37.1-47.1"),
    ("RDW", "12.8", "%", "12.5-18.5"),
    ("PLT", "0.00", "10*3/uL", "203-293"),
    ("MPV", "0.00", "fL", "8.4-12.4"),
    ("NEU#", "10.4", "10*3/uL", "2.5-3.9"),
    ("LYM#", "0.28", "10*3/uL", "2.5-3.9"),
    ("MON#", "0.00", "10*3/uL", "0.2-1"),
    ("EOS#", "0.28", "10*3/uL", "0-1.2"),
    ("BAS#", "0.13", "10*3/uL", "0-0.2"),
    ("NEU%", "93.8", "%", "34-52"),
    ("LYM%", "2.50", "%", "32.5-50.5"),
    ("MON%", "0.00", "%", "2.5-12.5"),
    ("EOS%", "2.50", "%", "0-15"),
    ("BAS%", "1.20", "%", "0-1"),
];

pub fn qc(out: &ParseOutput) -> Vec<&outpost_collector_core::QcResult> {
    out.records
        .iter()
        .map(|r| match r {
            Record::Qc(q) => q,
            other => panic!("unexpected record {other:?}"),
        })
        .collect()
}

#[test]
fn hl7_hemoscreen_quality_control_field_by_field() {
    let out = hl7::parse(&data("hl7/hemoscreen_quality_control.hl7"), &configured());
    let results = qc(&out);
    assert_eq!(results.len(), HEMOSCREEN_QC.len());
    let run = Some(Timestamp {
        seconds: 1_702_208_460,
        nanoseconds: 0,
    });
    for (r, (analyte, value, unit, range)) in results.iter().zip(HEMOSCREEN_QC) {
        assert_eq!(
            r.instrument,
            Instrument {
                model: "HemoScreen".into(),
                serial: "0000000-0001-HS".into()
            }
        );
        assert_eq!(&r.analyte, analyte);
        assert_eq!(&r.value, value);
        assert_eq!(&r.unit, unit);
        assert_eq!(&r.reference_range, range);
        assert!(r.flags.is_empty());
        assert_eq!(
            r.control_lot, "PIX240205N",
            "the lot HemoScreen puts in PID-2"
        );
        assert_eq!(r.control_level, "");
        assert_eq!(r.run_time, run);
    }
    assert_eq!(out.stats.patient_records_dropped, 1);
    assert_eq!(out.stats.patient_results_dropped, 0);
}

/// (analyte, value, unit, reference range) of the first and last R records of
/// the Yumizen H500 QC transmission.
#[test]
fn astm_yumizen_qc_transmission_field_by_field() {
    let out = astm::parse(&data("astm/yumizen_h500.txt"), &configured());
    let results = qc(&out);
    assert_eq!(results.len(), 21, "{:?}", out.stats);
    let run = Some(Timestamp {
        seconds: 1_680_087_991,
        nanoseconds: 0,
    });
    for r in &results {
        assert_eq!(
            r.instrument,
            Instrument {
                model: "H500".into(),
                serial: "910YOXH02826".into()
            }
        );
        assert_eq!(r.control_lot, "PX440N");
        assert_eq!(r.control_level, "CTRL MEDIUM");
        assert_eq!(r.run_time, run);
        assert_eq!(r.flags, ["N"]);
    }
    let first = results[0];
    assert_eq!(
        (
            &*first.analyte,
            &*first.value,
            &*first.unit,
            &*first.reference_range
        ),
        ("MCV", "90.6", "um3", "84.0 - 94.0")
    );
    let last = results[20];
    assert_eq!(
        (
            &*last.analyte,
            &*last.value,
            &*last.unit,
            &*last.reference_range
        ),
        ("EOS%", "5.0", "%", "0.3 - 7.1")
    );
    assert_eq!(out.stats.comments_dropped, 2);
    assert_eq!(out.stats.patient_results_dropped, 0);
}
