//! CSV/JSON QC exports: column allowlist, sample-type filter, redaction.

use super::corpus::qc;
use super::{assert_absent, json};
use outpost_collector_core::csvjson::{csv_rows, parse_csv, parse_json, parse_time};
use outpost_collector_core::{Instrument, Timestamp};

fn fallback() -> Instrument {
    Instrument {
        model: "cfg".into(),
        serial: "CFG-1".into(),
    }
}

#[test]
fn csv_keeps_allowlisted_columns_only() {
    let csv = "Run Time;Analyte;Value;Unit;Reference Range;Flags;Control Lot;Level;Patient Name;Sample ID;Comment;Sample Type\r\n\
2024-06-27 13:54:07;WBC;8.13;10*3/uL;4.3-5.5;H A;LOT-1;2;DOE, JANE;S-998877;\"called Dr. Who; 555-123-4567\";QC\r\n\
2024-06-27T13:55:00Z;HGB;13.1;g/dL;12-16;;LOT-1;2;ROE, RICHARD;S-998878;;PATIENT\r\n";
    let out = parse_csv(csv.as_bytes(), &fallback());
    let r = qc(&out);
    assert_eq!(r.len(), 1, "{out:?}");
    assert_eq!(r[0].instrument, fallback());
    assert_eq!(
        (
            r[0].analyte.as_str(),
            r[0].value.as_str(),
            r[0].unit.as_str()
        ),
        ("WBC", "8.13", "10*3/uL")
    );
    assert_eq!(r[0].reference_range, "4.3-5.5");
    assert_eq!(r[0].flags, vec!["H".to_string(), "A".to_string()]);
    assert_eq!(
        (r[0].control_lot.as_str(), r[0].control_level.as_str()),
        ("LOT-1", "2")
    );
    assert_eq!(
        r[0].run_time,
        Some(Timestamp {
            seconds: 1_719_496_447,
            nanoseconds: 0
        })
    );
    assert_eq!(out.stats.comments_dropped, 3);
    assert_eq!(out.stats.patient_results_dropped, 1);
    assert_absent(
        &json(&out),
        &[
            "DOE",
            "JANE",
            "ROE",
            "S-99887",
            "Who",
            "555-123-4567",
            "13.1",
        ],
        "csv",
    );
}

#[test]
fn csv_quoting() {
    let rows = csv_rows("a,\"b,\"\"c\"\"\",d\n\n1,2,3", ',');
    assert_eq!(rows, vec![vec!["a", "b,\"c\"", "d"], vec!["1", "2", "3"]]);
}

#[test]
fn json_export() {
    let text = r#"{"results": [
        {"analyte": "HbA1c", "value": 5.9, "unit": "%", "flags": ["N"], "lot": "10228413",
         "serial_number": "AF20052397", "time": "20241206140615", "patient": {"name": "Jane Doe"},
         "operator": "John Smith", "note": "pt DOE, JANE"},
        {"analyte": "HbA1c", "value": 7.1, "sample-type": "patient"},
        "garbage"
    ]}"#;
    let out = parse_json(text.as_bytes(), &fallback());
    let r = qc(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].value, "5.9");
    assert_eq!(
        r[0].instrument,
        Instrument {
            model: "cfg".into(),
            serial: "AF20052397".into()
        }
    );
    assert_eq!(r[0].control_lot, "10228413");
    assert_eq!(r[0].flags, vec!["N".to_string()]);
    assert!(r[0].run_time.is_some());
    assert_eq!(out.stats.patient_results_dropped, 1);
    assert_eq!(out.stats.malformed_records, 1);
    assert_eq!(out.stats.comments_dropped, 3);
    assert_absent(&json(&out), &["Jane", "Doe", "Smith", "7.1"], "json");
    assert_eq!(
        parse_json(b"{not json", &fallback())
            .stats
            .malformed_records,
        1
    );
}

#[test]
fn time_formats() {
    let t = Some(1_719_496_447);
    for s in [
        "2024-06-27 13:54:07",
        "2024-06-27T13:54:07Z",
        "20240627135407",
        "2024/06/27 13:54:07",
    ] {
        assert_eq!(parse_time(s).map(|t| t.seconds), t, "{s}");
    }
    assert_eq!(
        parse_time("2024-06-27T13:54:07.250Z").map(|t| t.nanoseconds),
        Some(250_000_000)
    );
    assert_eq!(
        parse_time("2024-06-27 13:54").map(|t| t.seconds),
        Some(1_719_496_440)
    );
    assert_eq!(parse_time("not a time"), None);
}
