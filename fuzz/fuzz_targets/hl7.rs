//! Feeds arbitrary bytes to the HL7 v2 parser: it must never panic, must
//! produce at most one record per input byte, and every record it does
//! produce must serialise. The message ends found in the same bytes must
//! increase, lie inside the input, and each follow an MLLP end block or
//! start a message (`MSH`, optionally after VT, at the start of a line).
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_collector_core::hl7;
use outpost_collector_core::records::Instrument;

fuzz_target!(|data: &[u8]| {
    let fallback = Instrument {
        model: String::new(),
        serial: String::new(),
    };
    let out = hl7::parse(data, &fallback);
    assert!(out.records.len() <= data.len());
    for r in &out.records {
        serde_json::to_vec(r).expect("records serialise");
    }
    let ends = hl7::message_ends(data);
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "ends increase");
    for &end in &ends {
        assert!(end > 0 && end <= data.len(), "end inside the input");
        let after_fs = data[..end].ends_with(&[0x1C]) || data[..end].ends_with(&[0x1C, b'\r']);
        let at_line_start = matches!(data[end - 1], b'\r' | b'\n' | 0x1C);
        let rest = &data[end..];
        let msh = rest.starts_with(b"MSH") || rest.starts_with(b"\x0bMSH");
        assert!(
            after_fs || (at_line_start && msh),
            "end {end} is a boundary"
        );
    }
});
