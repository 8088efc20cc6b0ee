//! Shared helpers for the collector-core integration tests; one module per parser.

mod astm;
mod corpus;
mod csvjson;
mod hl7;
mod logs;
mod names;
mod redact;

/// Serialises records to JSON: the form the PHI checks look at.
pub fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records serialise")
}

/// Asserts none of `absent` occurs in `haystack` (case-insensitive).
pub fn assert_absent(haystack: &str, absent: &[&str], what: &str) {
    let lower = haystack.to_lowercase();
    for a in absent {
        assert!(
            !lower.contains(&a.to_lowercase()),
            "{what}: PHI value {a:?} leaked into output: {haystack}"
        );
    }
}
