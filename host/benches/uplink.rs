//! Uplink benchmarks (being written).
fn main() {}
