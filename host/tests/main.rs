//! Host integration tests: real components built from this workspace (by
//! `outpost-artifacts`), real TLS on loopback, real SQLite files.

mod it;
