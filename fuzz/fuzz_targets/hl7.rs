//! Feeds arbitrary bytes to the HL7 v2 parser: it must never panic, must
//! produce at most one record per input byte, and every record it does
//! produce must serialise.
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
});
