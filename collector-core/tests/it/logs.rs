//! Instrument logs: prefix timestamps, levels, codes, redaction, UTF-16.

use super::{assert_absent, json};
use outpost_collector_core::logs::{decode, parse, parse_line};
use outpost_collector_core::{Instrument, InstrumentEvent, Record, Severity, Timestamp};

fn inst() -> Instrument {
    Instrument {
        model: "XN-550".into(),
        serial: "BD634545".into(),
    }
}

fn events(out: &outpost_collector_core::ParseOutput) -> Vec<&InstrumentEvent> {
    out.records
        .iter()
        .map(|r| match r {
            Record::Event(e) => e,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

const LOG: &str = "[2024-06-27 13:54:07.120] ERROR E-1203 aspiration failed for pt DOE, JANE DOB 3/4/1950 MRN 0012345\n\
2024-06-27T13:54:07Z W-0412 reagent lot 123-45-6789 low, 10*3/uL range 4.3-5.5\n\
\n\
20240627135407 INFO sample 24-0627-0012 (SMITH, JOHN; 01/02/1960) 93Y done\n\
no timestamp here, user Jsmith logged in from 10.0.0.12\n";

#[test]
fn log_lines_become_redacted_events() {
    let out = parse(LOG.as_bytes(), &inst());
    let ev = events(&out);
    assert_eq!(ev.len(), 4);
    let t = Some(Timestamp {
        seconds: 1_719_496_447,
        nanoseconds: 120_000_000,
    });
    assert_eq!(
        (ev[0].severity, ev[0].code.as_str(), ev[0].time),
        (Severity::Error, "E-1203", t)
    );
    assert!(
        ev[0]
            .text
            .starts_with("E-1203 aspiration failed for pt [REDACTED:name]"),
        "{}",
        ev[0].text
    );
    assert_eq!(ev[1].severity, Severity::Warning);
    assert_eq!(ev[1].code, "W-0412");
    assert_eq!(
        ev[1].time,
        Some(Timestamp {
            seconds: 1_719_496_447,
            nanoseconds: 0
        })
    );
    assert_eq!(
        ev[1].text,
        "W-0412 reagent lot 123-45-6789 low, 10*3/uL range 4.3-5.5"
    );
    assert_eq!(ev[2].severity, Severity::Info);
    assert_eq!(ev[2].time.map(|t| t.seconds), Some(1_719_496_447));
    assert_eq!(ev[3].time, None);
    assert_eq!(ev[0].instrument, inst());
    assert_absent(
        &json(&out),
        &[
            "DOE",
            "JANE",
            "3/4/1950",
            "0012345",
            "24-0627-0012",
            "SMITH",
            "JOHN",
            "1960",
            "93Y",
            "Jsmith",
            "10.0.0.12",
        ],
        "log",
    );
}

fn utf16(text: &str, le: bool, bom: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if bom {
        out.extend(if le { [0xFF, 0xFE] } else { [0xFE, 0xFF] });
    }
    for u in text.encode_utf16() {
        out.extend(if le { u.to_le_bytes() } else { u.to_be_bytes() });
    }
    out
}

#[test]
fn utf16_logs_are_decoded() {
    for (le, bom) in [(true, true), (false, true), (true, false), (false, false)] {
        let bytes = utf16(LOG, le, bom);
        assert_eq!(decode(&bytes), LOG, "le={le} bom={bom}");
        let out = parse(&bytes, &inst());
        assert_eq!(events(&out).len(), 4);
        assert_absent(&json(&out), &["DOE", "SMITH"], "utf16");
    }
    assert_eq!(decode(b"\xEF\xBB\xBFplain"), "plain");
}

#[test]
fn full_width_digits_and_zero_width_characters() {
    let line = "２０２４-０６-２７ １３:５４:０７ ERROR E-1203 pt Ｄ\u{200B}ＯＥ, JANE SSN １２３-４５-６７８９";
    let ev = parse_line(line, &inst()).expect("event");
    assert_eq!(ev.time.map(|t| t.seconds), Some(1_719_496_447));
    assert_eq!(ev.code, "E-1203");
    assert_absent(&ev.text, &["DOE", "JANE", "6789"], "full width");
}

#[test]
fn severity_from_level_words_and_codes() {
    for (line, sev) in [
        ("FATAL laser off", Severity::Critical),
        ("[WARN] door open", Severity::Warning),
        ("debug: tick", Severity::Debug),
        ("F-0001 stop", Severity::Critical),
        ("status ok", Severity::Info),
        ("NOTICE calibration due", Severity::Notice),
    ] {
        assert_eq!(
            parse_line(line, &inst()).expect("event").severity,
            sev,
            "{line}"
        );
    }
    assert!(parse_line("   ", &inst()).is_none());
}

#[test]
fn level_words_are_whole_words() {
    for (line, sev, text) in [
        ("WARNING reagent low", Severity::Warning, "reagent low"),
        (
            "[Information]: calibration done",
            Severity::Info,
            "calibration done",
        ),
        ("warn: door open", Severity::Warning, "door open"),
        ("ERR | probe", Severity::Error, "probe"),
        // Not level words: the text is kept whole.
        (
            "Errors cleared by operator",
            Severity::Info,
            "Errors cleared by operator",
        ),
        (
            "Informatics notified",
            Severity::Info,
            "Informatics notified",
        ),
        (
            "Debugging E-1203 off",
            Severity::Error,
            "Debugging E-1203 off",
        ),
    ] {
        let ev = parse_line(line, &inst()).expect("event");
        assert_eq!((ev.severity, ev.text.as_str()), (sev, text), "{line}");
    }
}

#[test]
fn the_instruments_own_model_and_serial_are_not_event_codes() {
    let xn = Instrument {
        model: "XN-550".into(),
        serial: "SN-20431".into(),
    };
    let e = outpost_collector_core::logs::parse_line(
        "2026-11-28 08:15:27 ERROR XN-550 SN-20431 E-1203 aspiration failure",
        &xn,
    )
    .unwrap();
    assert_eq!(e.code, "E-1203");
    let w =
        outpost_collector_core::logs::parse_line("WARN XN-550 W-0412 reagent low", &xn).unwrap();
    assert_eq!(w.code, "W-0412");
}
