//! Redaction: data-driven `check(input, must_be_absent, must_survive)` cases.

use outpost_collector_core::redact::{device_id, normalize, redact};

fn check(input: &str, absent: &[&str], survive: &[&str]) {
    let out = redact(input);
    for a in absent {
        assert!(!out.contains(a), "{input:?} -> {out:?}: {a:?} not redacted");
    }
    for s in survive {
        assert!(
            out.contains(s),
            "{input:?} -> {out:?}: {s:?} should survive"
        );
    }
}

#[test]
fn patient_line_with_name_dob_mrn() {
    check(
        "pt DOE, JANE DOB 3/4/1950 MRN 0012345",
        &["DOE", "JANE", "3/4/1950", "0012345"],
        &["[REDACTED:name]", "[REDACTED:date]", "MRN [REDACTED:id]"],
    );
}

#[test]
fn sample_with_name_and_date_in_parentheses() {
    check(
        "Sample 24-0627-0012 (SMITH, JOHN; 01/02/1960)",
        &["24-0627-0012", "SMITH", "JOHN", "01/02/1960", "1960"],
        &["Sample"],
    );
}

#[test]
fn name_shapes() {
    check(
        "result for LAST,^FIRST ok",
        &["LAST", "FIRST"],
        &["result for", "ok"],
    );
    check("DOE^JANE^Q", &["DOE", "JANE"], &[]);
    check("O'BRIEN, MARY reviewed", &["BRIEN", "MARY"], &["reviewed"]);
    check("Smith, John", &["Smith", "John"], &[]);
    check("seen by Dr. A Marcil cp", &["Marcil"], &["cp"]);
    check("Dr. A Marcil", &["Marcil"], &["Dr."]);
    check("Mrs Jones called", &["Jones"], &["called"]);
    check("patient: Eve Everywoman", &["Eve", "Everywoman"], &[]);
    check("Name=Jim Brown;", &["Jim", "Brown"], &[]);
    check("MÜLLER, JOSÉ", &["MÜLLER", "JOSÉ"], &[]);
    check("patient Élodie Dupré", &["Élodie", "Dupré"], &[]);
}

#[test]
fn dates_in_five_formats_are_redacted() {
    for d in [
        "3/4/1950",
        "1950-03-04",
        "04.03.1950",
        "19500304",
        "4 Mar 1950",
        "March 4, 1950",
        "4-Mar-1950",
        "03-04-1950",
    ] {
        check(&format!("born {d} ok"), &[d, "1950"], &["ok"]);
        check(&format!("date {d}"), &[d], &[]);
    }
}

#[test]
fn run_timestamps_survive_unless_near_person_context() {
    check(
        "run 2024-06-27 13:54:07 done",
        &[],
        &["2024-06-27 13:54:07"],
    );
    check(
        "run 2024-06-27T13:54:07Z done",
        &[],
        &["2024-06-27T13:54:07"],
    );
    check("measured 20240627135407", &[], &["20240627135407"]);
    check("patient admitted 2024-06-27 13:54:07", &["2024-06-27"], &[]);
    check("DOB 19500304120000", &["19500304"], &[]);
}

#[test]
fn ages_over_89() {
    check("93Y female", &["93Y"], &["female"]);
    check("age 95", &["95"], &[]);
    check("aged: 101 years old", &["101"], &[]);
    check("pt 45Y", &[], &["45Y"]);
}

#[test]
fn contacts_and_network_identifiers() {
    check(
        "call (206)752-121 or 206-555-0199",
        &["752-121", "206-555-0199"],
        &["call"],
    );
    check("Fax: +1 206 555 0100", &["555 0100"], &["Fax"]);
    check(
        "mail jane.doe@example.org",
        &["jane.doe", "example.org"],
        &[],
    );
    check(
        "see https://portal.example.org/p?id=1",
        &["portal.example.org"],
        &["see"],
    );
    check("host 10.1.2.3 down", &["10.1.2.3"], &["host", "down"]);
    check("lives at 153 FERNWOOD DR. STATESVILLE", &["FERNWOOD"], &[]);
    check("PO Box 1234", &["1234"], &[]);
    check("STATESVILLE, OH 35292", &["35292"], &[]);
    check("zip: 35292-1234", &["35292"], &[]);
    check("count of 12000 cells", &[], &["count of 12000 cells"]);
}

#[test]
fn ssn_versus_lot() {
    check("SSN 123-45-6789", &["123-45-6789"], &[]);
    check("ssn: 123456789", &["123456789"], &[]);
    check("id 555-44-4444", &["555-44-4444"], &[]);
    check("lot 123-45-6789", &[], &["lot 123-45-6789"]);
    check("Lot#: 123-45-6789", &[], &["123-45-6789"]);
}

#[test]
fn labelled_identifiers() {
    check("MRN: A0012345", &["A0012345"], &["MRN"]);
    check("Acct # 998877", &["998877"], &[]);
    check("Plan ID 77-123", &["77-123"], &[]);
    check("Id# 118176 seen", &["118176"], &["seen"]);
    check("medical record number 4455", &["4455"], &[]);
}

#[test]
fn device_vocabulary_survives() {
    let text = "WBC 11.0 10*3/uL range 4.3-5.5 12.5-18.5 E-1203 W-0412 serial 0000000-0001-HS BD634545 HbA1c 5.9 % flag H";
    check(
        text,
        &[],
        &[
            "10*3/uL",
            "4.3-5.5",
            "12.5-18.5",
            "E-1203",
            "W-0412",
            "0000000-0001-HS",
            "BD634545",
            "HbA1c",
            "5.9",
        ],
    );
    assert_eq!(redact(text), text);
}

#[test]
fn full_width_and_zero_width_are_normalised_first() {
    assert_eq!(
        normalize("１２３\u{200B}ＡＢ\u{FEFF}\u{2060}c\u{200D}"),
        "123ABc"
    );
    check("ＳＳＮ １２３－４５－６７８９", &["6789"], &[]);
    check("D\u{200B}O\u{200C}B 0\u{200B}3/04/1950", &["1950"], &[]);
    check("pt Ｄｏｅ，Ｊａｎｅ", &["Doe", "Jane"], &[]);
}

#[test]
fn device_ids_keep_token_shapes_but_not_person_identifiers() {
    for keep in [
        "20052397",
        "0000000-0001-HS",
        "BD634545",
        "LOT-2024.01",
        "20240627",
        "QC-2024-11",
        "12345",
        "L123456789",
        "1234-56789",
    ] {
        assert_eq!(device_id(keep), keep);
    }
    assert_eq!(device_id("１２３４"), "1234");
    // Spaces inside a plain token: kept, joined.
    assert_eq!(device_id(" L 2309A "), "L_2309A");
    assert_eq!(device_id("Lot  47 11"), "Lot_47_11");
    // A doubtful value is masked whole, as exactly one marker: the field
    // costs its value, never the record.
    for (bad, marker) in [
        ("123-45-6789", "[REDACTED:ssn]"),
        ("555.12.3456", "[REDACTED:ssn]"),
        ("555 12 3456", "[REDACTED:ssn]"),
        ("123456789", "[REDACTED:ssn]"),
        ("206-555-0199", "[REDACTED:phone]"),
        ("a@b.org", "[REDACTED:email]"),
        ("19500304", "[REDACTED:date]"),
        ("2015-06-01", "[REDACTED:date]"),
        ("03.04.50", "[REDACTED:date]"),
        ("MRN-12", "[REDACTED:id]"),
        ("ptid_7", "[REDACTED:id]"),
        ("DOE, JANE", "[REDACTED:name]"),
        ("DOE^JANE 3/4/1950", "[REDACTED:name]"),
        ("LÖT1", "[REDACTED:id]"),
    ] {
        assert_eq!(device_id(bad), marker, "{bad}");
    }
}
