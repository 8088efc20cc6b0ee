//! ASTM E1381/E1394: framing, delimiters, QC selection, adversarial input.

use super::corpus::qc;
use super::{assert_absent, json};
use outpost_collector_core::astm::{self, Delimiters, checksum, deframe, frame};
use outpost_collector_core::{Instrument, Timestamp};

fn fallback() -> Instrument {
    Instrument {
        model: "cfg".into(),
        serial: "CFG-1".into(),
    }
}

/// Frames each chunk (the last one with ETX) into one stream.
fn stream(chunks: &[&str]) -> Vec<u8> {
    let mut out = vec![0x05]; // ENQ
    for (i, c) in chunks.iter().enumerate() {
        out.extend(frame((i + 1) as u8, c.as_bytes(), i + 1 == chunks.len()));
    }
    out.push(0x04); // EOT
    out
}

const QC_SESSION: &[&str] = &[
    "H|\\^&|||XN-550^00-24^^^^BD634545||||||||E1394-97\r",
    "P|1||PAT-77||DOE^JANE||19500304|F\r",
    "O|1|LOT4711^2||^^^^WBC|||||||Q||||||||||||||F\r",
    "R|1|^^^^WBC^1|8.13|10*3/uL|4.0-10.0|N\\H||F||||20240627135407\r",
    "C|1|I|pt DOE, JANE called 555-123-4567|G\r",
    "O|2|S-1234||^^^^WBC|||||||N\r",
    "R|1|^^^^WBC^1|5.5|10*3/uL||N||F||||20240627135500\r",
    "L|1|N\r",
];

#[test]
fn qc_order_yields_results_with_instrument_from_header() {
    let out = astm::parse(&stream(QC_SESSION), &fallback());
    let r = qc(&out);
    assert_eq!(r.len(), 1, "{:?}", out);
    let r = r[0];
    assert_eq!(
        r.instrument,
        Instrument {
            model: "XN-550".into(),
            serial: "BD634545".into()
        }
    );
    assert_eq!(r.analyte, "WBC");
    assert_eq!(r.value, "8.13");
    assert_eq!(r.unit, "10*3/uL");
    assert_eq!(r.reference_range, "4.0-10.0");
    assert_eq!(r.flags, vec!["N".to_string(), "H".to_string()]);
    assert_eq!(r.control_lot, "LOT4711");
    assert_eq!(
        r.run_time,
        Some(Timestamp {
            seconds: 1_719_496_447,
            nanoseconds: 0
        })
    );
    assert_eq!(out.stats.patient_records_dropped, 1);
    assert_eq!(out.stats.comments_dropped, 1);
    assert_eq!(out.stats.patient_results_dropped, 1);
    assert_eq!(out.stats.malformed_frames, 0);
    assert_absent(
        &json(&out),
        &[
            "DOE",
            "JANE",
            "19500304",
            "PAT-77",
            "555-123-4567",
            "S-1234",
            "5.5",
        ],
        "qc",
    );
}

#[test]
fn name_split_across_two_frames_is_joined_then_dropped() {
    let bytes = stream(&[
        "H|\\^&|||c311^1\r",
        "P|1||PAT-77||SMI",
        "TH^JOHN||19600102\r",
        "O|1|QCLOT||^^^685|||||||Q\r",
        "R|1|^^^685/|22.4|U/l|20-25|N||F\r",
        "L|1|N\r",
    ]);
    let d = deframe(&bytes);
    assert!(
        d.records.iter().any(|r| r.contains("SMITH^JOHN")),
        "{:?}",
        d.records
    );
    assert_eq!(d.frames, 6);
    let out = astm::parse(&bytes, &fallback());
    assert_eq!(qc(&out).len(), 1);
    assert_eq!(qc(&out)[0].analyte, "685/");
    assert_eq!(out.stats.patient_records_dropped, 1);
    assert_absent(
        &json(&out),
        &["SMI", "JOHN", "19600102", "PAT-77"],
        "split name",
    );
}

#[test]
fn delimiters_are_read_from_the_header() {
    // GeneXpert style: repeat `@`, component `^`, escape `\`.
    let text = "H|@^\\|||GX^^806149\rO|1|QC1||^^^MTB|||||||Q\rR|1|^^^MTB|\\S\\12|%||A@H\rL|1\r";
    let out = astm::parse(text.as_bytes(), &fallback());
    let r = qc(&out);
    assert_eq!(r.len(), 1, "{out:?}");
    assert_eq!(r[0].value, "^12");
    assert_eq!(r[0].flags, vec!["A".to_string(), "H".to_string()]);
    assert_eq!(r[0].instrument.serial, "806149");
    let d = Delimiters::from_header("H|@^\\").expect("valid header");
    assert_eq!(
        (d.field, d.repeat, d.component, d.escape),
        ('|', '@', '^', '\\')
    );
    assert_eq!(
        Delimiters::default().unescape("a&F&b&S&c&R&d&E&e"),
        "a|b^c\\d&e"
    );
    assert!(Delimiters::from_header("H|\\\\^&").is_none());
}

#[test]
fn unframed_transcript_with_frame_digits() {
    let text = "1H|\\^&|||DCA^^S067337\r\n2P|1|BU24R554\r\n3O|1|L1||^^^A1c|||||||Q\r\n4R|1|^^^HbA1c|5.9|%\r\n5L|1|N\r\n";
    let out = astm::parse(text.as_bytes(), &fallback());
    let r = qc(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (
            r[0].analyte.as_str(),
            r[0].value.as_str(),
            r[0].unit.as_str()
        ),
        ("HbA1c", "5.9", "%")
    );
    assert_absent(&json(&out), &["BU24R554"], "unframed");
}

#[test]
fn bad_checksum_and_truncated_frames_are_counted() {
    let mut bytes = stream(&[
        "H|\\^&|||X^^S1\r",
        "O|1|L||^^^A|||||||Q\r",
        "R|1|^^^A|1|u\r",
    ]);
    // Corrupt the checksum of the last frame.
    let cs_pos = bytes.iter().rposition(|b| *b == 0x03).expect("etx") + 1;
    bytes[cs_pos] = if bytes[cs_pos] == b'0' { b'1' } else { b'0' };
    let out = astm::parse(&bytes, &fallback());
    assert_eq!(out.stats.malformed_frames, 1);
    assert!(out.records.is_empty());

    // Truncated: STX and text, no terminator.
    let mut bytes = stream(&["H|\\^&\r"]);
    bytes.extend_from_slice(b"\x022P|1||DOE^JA");
    let d = deframe(&bytes);
    assert_eq!(d.malformed_frames, 1);
    assert!(d.records.iter().all(|r| !r.contains("DOE")));

    // A new STX before the terminator, and an ETB sequence cut off at the end.
    let mut bytes = b"\x021P|1|DOE".to_vec();
    bytes.extend(frame(1, b"P|1|SMI", false));
    let d = deframe(&bytes);
    assert_eq!(d.malformed_frames, 2);
    assert!(d.records.is_empty());
    assert_eq!(checksum(b"1H|\\^&\r\x03"), *b"E5");
}

#[test]
fn binary_garbage_does_not_panic() {
    let mut seed: u32 = 0x1234_5678;
    for len in [0usize, 1, 2, 3, 17, 256, 4096] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                // Bias towards framing bytes and delimiters.
                let pick = [0x02, 0x03, 0x17, b'\r', b'\n', b'|', b'^', b'H', b'R', b'O'];
                if seed.is_multiple_of(3) {
                    pick[(seed as usize >> 8) % pick.len()]
                } else {
                    (seed >> 16) as u8
                }
            })
            .collect();
        let _ = astm::parse(&bytes, &fallback());
        let _ = outpost_collector_core::hl7::parse(&bytes, &fallback());
        let _ = outpost_collector_core::logs::parse(&bytes, &fallback());
    }
}

/// Splitting a transcript at any end `message_ends` reports, and parsing the
/// two halves separately, gives exactly the records of one parse of the whole:
/// what a reader of a growing file relies on to resume at a cursor.
fn assert_split_invariant(input: &[u8]) {
    let whole = json(&astm::parse(input, &fallback()).records);
    for cut in 0..=input.len() {
        for &end in &astm::message_ends(&input[..cut]) {
            assert!(end <= cut, "end {end} beyond the bytes seen ({cut})");
            let mut parts = astm::parse(&input[..end], &fallback()).records;
            parts.extend(astm::parse(&input[end..], &fallback()).records);
            assert_eq!(json(&parts), whole, "split at {end} (of {cut} bytes seen)");
        }
    }
}

/// Three QC sessions framed as separate transmissions, and the same unframed.
#[test]
fn message_ends_split_framed_and_unframed_transcripts_without_loss() {
    let one = stream(QC_SESSION);
    let framed = [one.clone(), one.clone(), one.clone()].concat();
    let ends = astm::message_ends(&framed);
    // Each transmission ends twice: after its L frame and after its EOT.
    assert_eq!(ends.len(), 6, "{ends:?}");
    assert_eq!(*ends.last().unwrap(), framed.len());
    assert_eq!(ends[1], one.len());
    assert_split_invariant(&framed);
    assert_eq!(qc(&astm::parse(&framed, &fallback())).len(), 3);

    // Without EOT, the L frame (with its full trailer) ends the message.
    let no_eot: Vec<u8> = one[..one.len() - 1].to_vec();
    assert_eq!(astm::message_ends(&no_eot), [no_eot.len()]);
    // Cut inside the L frame's trailer: not complete yet.
    assert_eq!(astm::message_ends(&no_eot[..no_eot.len() - 2]), [0usize; 0]);

    let unframed: String = [QC_SESSION.concat(), QC_SESSION.concat()]
        .concat()
        .replace('\r', "\r\n");
    let ends = astm::message_ends(unframed.as_bytes());
    assert_eq!(ends, [unframed.len() / 2, unframed.len()]);
    assert_split_invariant(unframed.as_bytes());
    // The last L line without its line ending is not complete.
    assert_eq!(
        astm::message_ends(&unframed.as_bytes()[..unframed.len() - 2]),
        [unframed.len() / 2]
    );
}

#[test]
fn message_ends_on_the_corpus_and_on_garbage() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/astm");
    for name in ["yumizen_h500.txt", "pentra_xlr.txt", "sysmex_xn550.txt"] {
        let one = std::fs::read(format!("{dir}/{name}")).unwrap();
        let two = [one.clone(), one.clone()].concat();
        let ends = astm::message_ends(&two);
        assert_eq!(ends, [one.len(), two.len()], "{name}");
        let whole = astm::parse(&two, &fallback());
        let halves = [
            astm::parse(&two[..ends[0]], &fallback()).records,
            astm::parse(&two[ends[0]..], &fallback()).records,
        ]
        .concat();
        assert_eq!(json(&halves), json(&whole.records), "{name}");
    }
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    for end in astm::message_ends(&garbage) {
        assert!(end <= garbage.len());
    }
    assert!(astm::message_ends(&[0u8; 4096]).is_empty());
}

/// H.12 = Q marks a QC transmission, but a P record that names someone turns
/// that off: patient results never leave as QC, and no specimen id as a lot.
#[test]
fn qc_transmission_with_a_real_patient_record_uploads_nothing_of_that_patient() {
    let session = |p: &str| {
        stream(&[
            "H|\\^&|||H500^910YOXH02826^2.2.2.2b|||||||Q|LIS2-A2|20230329110749\r",
            p,
            "O|1|ACC-778812||^^^DIF|R|20230329110631|||||||||BLOOD||||||||||F\r",
            "R|1|^^^WBC^6690-2|8.30|10E3/uL|7.30 - 9.30|N||F||MATYL^^USER|20230329110631||\r",
            "L|1|N\r",
        ])
    };
    // An empty P record (as Yumizen sends with its controls): still QC.
    let out = astm::parse(&session("P|1|||||||||||||||\r"), &fallback());
    assert_eq!(qc(&out).len(), 1);
    // A P record with a patient: nothing comes out, and no accession number.
    let out = astm::parse(&session("P|1||PAT-77||DOE^JANE||19500304|F\r"), &fallback());
    assert!(out.records.is_empty(), "{out:?}");
    assert_eq!(out.stats.patient_results_dropped, 1);
    assert_absent(
        &json(&out),
        &["ACC-778812", "DOE", "8.30"],
        "patient in a Q transmission",
    );
}
