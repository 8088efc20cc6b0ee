//! Compiles the ASCII form of every redaction pattern (`src/patterns.rs`)
//! into two dense DFAs, the forward and reverse halves of a
//! `regex_automata::dfa::regex::Regex`, and writes them, serialized for the
//! target's byte order, to `$OUT_DIR/redact.dfa`, with their byte ranges in
//! `$OUT_DIR/redact_dfa.rs`; then one more forward DFA, of the labelled-phone
//! and labelled-ID patterns together. `src/redact.rs` embeds them and uses the
//! DFAs to test for and find matches in ASCII text, so the collector module never
//! determinizes a pattern at run time (each call runs in a fresh instance;
//! see ARCHITECTURE.md, "Collector speed").

use regex_automata::dfa::{StartKind, dense};
use regex_automata::{MatchKind, nfa::thompson};
use std::{env, fs, path::PathBuf};

include!("src/patterns.rs");

/// How every forward DFA is built, the joint one too: unanchored,
/// leftmost-first, minimized.
fn forward_config() -> dense::Config {
    dense::Config::new()
        .start_kind(StartKind::Unanchored)
        .minimize(true)
}

fn main() {
    println!("cargo:rerun-if-changed=src/patterns.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let big_endian = env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() == Ok("big");
    let mut blob: Vec<u8> = Vec::new();
    let mut forward = Vec::new();
    let mut reverse = Vec::new();
    // Each DFA starts on an 8-byte boundary of the blob, which `redact.rs`
    // embeds 8-byte aligned (dense DFAs need 4; sparse ones need none).
    let mut push = |dfa: dense::DFA<Vec<u32>>, sparse: bool| {
        let bytes = match (sparse, big_endian) {
            (true, big) => {
                let dfa = dfa.to_sparse().expect("a sparse DFA fits");
                match big {
                    true => dfa.to_bytes_big_endian(),
                    false => dfa.to_bytes_little_endian(),
                }
            }
            (false, true) => {
                let (bytes, pad) = dfa.to_bytes_big_endian();
                bytes[pad..].to_vec()
            }
            (false, false) => {
                let (bytes, pad) = dfa.to_bytes_little_endian();
                bytes[pad..].to_vec()
            }
        };
        blob.resize(blob.len().next_multiple_of(8), 0);
        let start = blob.len();
        blob.extend_from_slice(&bytes);
        (start, blob.len())
    };
    for id in PATTERN_IDS {
        let pattern = ascii_form(&source(id));
        let fail = |e: dense::BuildError| {
            panic!("redaction pattern {id:?} does not compile to a DFA: {e}")
        };
        // The forward DFA: unanchored, leftmost-first, Unicode classes and
        // UTF-8, as the `regex` crate matches by default. It finds where
        // the leftmost match ends.
        let fwd = dense::Builder::new()
            .configure(forward_config())
            .build(&pattern)
            .unwrap_or_else(fail);
        // The reverse DFA, configured as `dfa::regex::Builder` configures
        // it: run backwards from the match's end, anchored, it finds where
        // the match starts.
        let rev = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .prefilter(None)
                    .specialize_start_states(false)
                    .start_kind(StartKind::Anchored)
                    .match_kind(MatchKind::All)
                    .minimize(true),
            )
            .thompson(thompson::Config::new().reverse(true))
            .build(&pattern)
            .unwrap_or_else(fail);
        forward.push(push(fwd, is_sparse(id)));
        reverse.push(push(rev, is_sparse(id)));
    }
    // One forward DFA for the labelled-phone and labelled-ID patterns
    // together: both passes run on every ASCII text with a digit and seldom
    // match, and one scan tells when neither can.
    let labelled =
        [PatternId::PhoneLabelled, PatternId::LabelledId].map(|id| ascii_form(&source(id)));
    let either = dense::Builder::new()
        .configure(forward_config())
        .build_many(&labelled)
        .unwrap_or_else(|e| panic!("the labelled patterns do not compile to one DFA: {e}"));
    let either = push(either, false);
    fs::write(out.join("redact.dfa"), &blob).expect("write redact.dfa");
    fs::write(
        out.join("redact_dfa.rs"),
        format!(
            "/// Byte range of each pattern's forward DFA in `redact.dfa`, in [`PATTERN_IDS`] order.\n\
             const FORWARD_DFAS: [(usize, usize); {n}] = {forward:?};\n\
             /// Byte range of each pattern's reverse DFA, in the same order.\n\
             const REVERSE_DFAS: [(usize, usize); {n}] = {reverse:?};\n\
             /// Byte range of the forward DFA of the labelled-phone and labelled-ID patterns together.\n\
             const LABELLED_DFA: (usize, usize) = {either:?};\n",
            n = forward.len()
        ),
    )
    .expect("write redact_dfa.rs");
}
