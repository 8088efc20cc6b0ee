//! Integration tests for outpost-collector-core: one binary, one module per
//! parser, data-driven over the public sample corpus in `tests/data/`.

mod it;
