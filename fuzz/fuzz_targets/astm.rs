//! Feeds arbitrary bytes to the ASTM E1381/E1394 parser: it must never panic,
//! must produce at most one record per input byte, and every record it does
//! produce must serialise (no invalid state escapes the parser). The message
//! ends found in the same bytes must increase and lie inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_collector_core::astm;
use outpost_collector_core::records::Instrument;

fuzz_target!(|data: &[u8]| {
    let fallback = Instrument {
        model: String::new(),
        serial: String::new(),
    };
    let out = astm::parse(data, &fallback);
    assert!(out.records.len() <= data.len());
    for r in &out.records {
        serde_json::to_vec(r).expect("records serialise");
    }
    let ends = astm::message_ends(data);
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "ends increase");
    assert!(
        ends.iter().all(|&e| e > 0 && e <= data.len()),
        "ends inside the input"
    );
});
