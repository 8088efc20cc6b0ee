//! HL7 v2: delimiters, escapes, QC selection, patient segments, embedded documents.

use super::corpus::qc;
use super::{assert_absent, json};
use outpost_collector_core::Instrument;
use outpost_collector_core::hl7::{self, Encoding};

fn fallback() -> Instrument {
    Instrument {
        model: "cfg".into(),
        serial: "CFG-1".into(),
    }
}

fn parse(segments: &[&str], sep: &str) -> outpost_collector_core::ParseOutput {
    hl7::parse(segments.join(sep).as_bytes(), &fallback())
}

#[test]
fn escapes_are_decoded_and_free_text_redacted() {
    let out = parse(
        &[
            "MSH|^~\\&|HemoScreen|PixCell|||20231224173346||ORU^R01|1|P|2.4",
            "PID|1||0012345^^^MRN||O\\S\\BRIEN^MARY~SMITH^MARY^Q||19500304|F|||1 Main St^^Town",
            "NK1|1|O\\S\\BRIEN^JOHN|SPO|||(206)555-0100",
            "PV1|1|O|WARD^12",
            "OBR|1|ORD1|FIL1|LQC|||20231210114100",
            "NTE|1||pt O\\S\\BRIEN, MARY DOB 3/4/1950",
            "OBX|1|NM|HGB||13.9|\\X672F644C\\|12.0-16.0|H~A|||F|||20231210114100||||SN-77",
            "OBX|2|TX|COMMENT||drawn from pt O\\S\\BRIEN, MARY by Dr. Who; MRN 0012345|||||F",
            "OBX|3|ST|LOTINFO||lot 123-45-6789 \\T\\ level 2|||||F",
        ],
        "\r",
    );
    let r = qc(&out);
    assert_eq!(r.len(), 3, "{out:?}");
    assert_eq!(r[0].unit, "g/dL");
    assert_eq!(r[0].flags, vec!["H".to_string(), "A".to_string()]);
    assert_eq!(
        r[0].instrument,
        Instrument {
            model: "HemoScreen".into(),
            serial: "SN-77".into()
        }
    );
    assert_eq!(r[0].reference_range, "12.0-16.0");
    assert!(r[1].value.contains("[REDACTED:name]"), "{}", r[1].value);
    assert_eq!(r[2].value, "lot 123-45-6789 & level 2");
    assert_eq!(out.stats.patient_records_dropped, 3);
    assert_eq!(out.stats.comments_dropped, 1);
    assert_absent(
        &json(&out),
        &[
            "BRIEN", "MARY", "SMITH", "JOHN", "19500304", "1950", "0012345", "Main St", "555-0100",
            "WARD", "Who", "ORD1", "FIL1",
        ],
        "escapes",
    );
}

#[test]
fn redefined_delimiters() {
    // Field `#`, component `$`, repeat `*`, escape `@`, subcomponent `%`.
    let out = parse(
        &[
            "MSH#$*@%#Analyzer9#Lab",
            "PID#1##ID99##DOE$JANE*ROE$JANE",
            "OBR#1###QC$Control",
            "OBX#1#NM#K$Potassium##4.1#mmol/L#3.5-5.1#N###F###20240101##@F@x##SER$42",
        ],
        "\n",
    );
    let r = qc(&out);
    assert_eq!(r.len(), 1, "{out:?}");
    assert_eq!(
        r[0].instrument,
        Instrument {
            model: "Analyzer9".into(),
            serial: "SER".into()
        }
    );
    assert_eq!(
        (
            r[0].analyte.as_str(),
            r[0].value.as_str(),
            r[0].unit.as_str()
        ),
        ("K", "4.1", "mmol/L")
    );
    assert_eq!(r[0].reference_range, "3.5-5.1");
    let enc = Encoding::from_msh("MSH#$*@%#").expect("valid");
    assert_eq!(
        (
            enc.field,
            enc.component,
            enc.repeat,
            enc.escape,
            enc.subcomponent
        ),
        ('#', '$', '*', '@', '%')
    );
    assert_eq!(enc.unescape("@F@@S@@R@@T@@E@"), "#$*%@");
    assert_absent(&json(&out), &["DOE", "ROE", "JANE", "ID99"], "redefined");
}

#[test]
fn escape_sequences() {
    let e = Encoding::default();
    assert_eq!(e.unescape("O\\S\\BRIEN"), "O^BRIEN");
    assert_eq!(e.unescape("a\\F\\b\\R\\c\\T\\d\\E\\e"), "a|b~c&d\\e");
    assert_eq!(e.unescape("\\X41C3A9\\"), "Aé");
    assert_eq!(e.unescape("x\\H\\y\\N\\z\\.br\\w"), "xyz w");
    assert_eq!(e.unescape("dangling\\esc"), "danglingesc");
}

#[test]
fn base64_documents_are_dropped() {
    let b64 = "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29kZT4+";
    let out = parse(
        &[
            "MSH|^~\\&|Inst|Lab",
            "OBR|1|||LQC",
            &format!("OBX|1|ED|PDF||^application^pdf^Base64^{b64}||||||F"),
            &format!("OBX|2|ST|IMG||{b64}||||||F"),
            "OBX|3|NM|GLU||5.2|mmol/L|||||F",
        ],
        "\r\n",
    );
    let r = qc(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].analyte, "GLU");
    assert_eq!(r[0].instrument.serial, "CFG-1");
    assert_eq!(out.stats.comments_dropped, 2);
    assert_absent(&json(&out), &["JVBERi0", "application"], "base64");
}

#[test]
fn specimen_role_decides_when_obr4_does_not() {
    let msg = |role: &str| {
        parse(
            &[
                "MSH|^~\\&|Inst|Lab|||20240101||ORU^R01^ORU_R01|1|P|2.5.1",
                "OBR|1|||GLU^Glucose|||20240102030405",
                "OBX|1|NM|GLU||5.2|mmol/L|||||F",
                &format!("SPM|1|LOT9||SER|||||||{role}"),
            ],
            "\r",
        )
    };
    let out = msg("Q");
    assert_eq!(qc(&out).len(), 1);
    assert_eq!(qc(&out)[0].run_time.map(|t| t.seconds), Some(1_704_164_645));
    assert_eq!(qc(&out)[0].control_lot, "LOT9");
    assert_eq!(qc(&msg("C")).len(), 1);
    let patient = msg("P");
    assert!(patient.records.is_empty());
    assert_eq!(patient.stats.patient_results_dropped, 1);
}

#[test]
fn malformed_segments_are_counted() {
    let out = parse(&["MSH|^^^^|X", "garbage line", "OBX|1|NM|A||1"], "\r");
    assert!(out.records.is_empty());
    assert_eq!(out.stats.malformed_records, 2);
    assert_eq!(out.stats.patient_results_dropped, 1);
}

fn qc_message(control: &str) -> String {
    [
        "MSH|^~\\&|HemoScreen|PixCell|||20231224173346||ORU^R01|1|P|2.4",
        &format!("PID||{control}"),
        "OBR||||LQC|||20231210114100",
        "OBX|0|NM|WBC||11.0|10*3/uL|5.9-9.3||||F|||20231210114100|0000000-0001-HS",
        "OBX|1|NM|RBC||10.3|10*6/uL|4.3-5.5||||F|||20231210114100|0000000-0001-HS",
        "",
    ]
    .join("\r")
}

/// Splitting at any reported end and parsing the halves separately gives the
/// records of one parse of the whole.
#[test]
fn message_ends_split_plain_and_mllp_streams_without_loss() {
    let plain = [
        qc_message("LOT-A"),
        qc_message("LOT-B"),
        qc_message("LOT-C"),
    ]
    .concat();
    let bytes = plain.as_bytes();
    let m = qc_message("LOT-A").len();
    // The last message has no end marker: only the starts of the next ones count.
    assert_eq!(hl7::message_ends(bytes), [m, 2 * m]);
    let mllp: Vec<u8> = (0..3)
        .flat_map(|i| {
            let mut v = vec![0x0b];
            v.extend_from_slice(qc_message(&format!("LOT-{i}")).as_bytes());
            v.extend_from_slice(&[0x1c, b'\r']);
            v
        })
        .collect();
    let ends = hl7::message_ends(&mllp);
    assert_eq!(ends.len(), 3);
    assert_eq!(*ends.last().unwrap(), mllp.len(), "FS CR ends the last one");
    for input in [bytes, &mllp[..]] {
        let whole = json(&hl7::parse(input, &fallback()).records);
        assert_eq!(qc(&hl7::parse(input, &fallback())).len(), 6);
        for cut in 0..=input.len() {
            for &end in &hl7::message_ends(&input[..cut]) {
                assert!(end <= cut);
                let mut parts = hl7::parse(&input[..end], &fallback()).records;
                parts.extend(hl7::parse(&input[end..], &fallback()).records);
                assert_eq!(json(&parts), whole, "split at {end} of {cut}");
            }
        }
    }
}

/// HemoScreen's control lot in PID-2 is used for QC groups only, and never
/// when the PID names a person.
#[test]
fn pid2_is_a_lot_only_in_person_less_qc_messages() {
    let out = hl7::parse(qc_message("PIX240205N").as_bytes(), &fallback());
    assert!(qc(&out).iter().all(|r| r.control_lot == "PIX240205N"));
    let with_person =
        qc_message("PIX240205N").replace("PID||PIX240205N", "PID||PIX240205N|||DOE^JANE");
    let out = hl7::parse(with_person.as_bytes(), &fallback());
    assert!(qc(&out).iter().all(|r| r.control_lot.is_empty()), "{out:?}");
    assert_absent(&json(&out), &["PIX240205N", "DOE", "JANE"], "person PID");
    let patient = qc_message("PIX240205N").replace("|LQC|", "|CBC|");
    let out = hl7::parse(patient.as_bytes(), &fallback());
    assert!(out.records.is_empty());
    assert_absent(&json(&out), &["PIX240205N"], "patient message");
}

/// Issue #19: the control lot in PID-2 survives other delimiters, segment
/// separators, case, components and a doubtful shape (masked, run kept).
#[test]
fn pid2_lot_with_varied_delimiters_case_and_shapes() {
    for (msg, lot) in [
        // Other encoding characters, `\n` separators, lower-case order code.
        (
            "MSH#$~\\&#HemoScreen#PixCell###20231224173346##ORU$R01#1#P#2.4\nPID##PIX240205N\nOBR####lqc###20231210114100\nOBX#0#NM#WBC##11.0#10*3/uL#5.9-9.3####F###20231210114100#0000000-0001-HS\n",
            "PIX240205N",
        ),
        // PID-2 as a CX with components, `\r\n` separators.
        (
            "MSH|^~\\&|HemoScreen|PixCell|||20231224173346||ORU^R01|1|P|2.4\r\nPID|1|PX-77A^^^LOT\r\nOBR||||QC|||20231210114100\r\nOBX|0|NM|WBC||11.0|10*3/uL|5.9-9.3||||F|||20231210114100|0000000-0001-HS\r\n",
            "PX-77A",
        ),
        // An SSN-shaped lot: masked, the results kept.
        (&qc_message("555-12-3456"), "[REDACTED:ssn]"),
    ] {
        let out = hl7::parse(msg.as_bytes(), &fallback());
        let r = qc(&out);
        assert!(!r.is_empty(), "{msg:?}: {out:?}");
        assert!(r.iter().all(|q| q.control_lot == lot), "{msg:?}: {r:?}");
        assert_absent(&json(&out), &["555-12-3456"], "masked lot");
    }
}
