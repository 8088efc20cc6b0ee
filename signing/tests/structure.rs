//! Container structure: section placement, duplicates, appended bytes, the
//! manifest section, and what `sign` refuses.

use crate::common::*;
use outpost_signing::{SignError, SigningKey, VerifyError, embed_manifest, sign};

type SignCheck = fn(&SignError) -> bool;

fn signed() -> (Vec<u8>, usize) {
    let s = sign(
        &component(2_000),
        &manifest("collector", "1.0.0"),
        &[&key(1)],
    )
    .unwrap();
    let len = signature_section_len(&s);
    (s, len)
}

#[test]
fn appended_section_or_byte_is_refused() {
    let (s, _) = signed();
    let mut more = s.clone();
    more.extend(custom("extra", b"evil"));
    refused(verify_as(more, &store(&[1]), "collector"), |e| {
        matches!(e, VerifyError::DigestMismatch)
    });
    let mut code = s.clone();
    code.extend([0x01, 0x01, 0x00]);
    refused(verify_as(code, &store(&[1]), "collector"), |e| {
        matches!(e, VerifyError::DigestMismatch)
    });
    let mut byte = s;
    byte.push(0x00);
    let msg = refused(verify_as(byte, &store(&[1]), "collector"), |e| {
        matches!(e, VerifyError::Malformed { .. })
    });
    assert!(msg.contains("end"), "{msg}");
}

#[test]
fn signature_section_duplicated_misplaced_or_missing_is_refused() {
    let (s, sig_len) = signed();
    let sig = &s[8..8 + sig_len];
    let content = &s[8 + sig_len..];
    let trust = store(&[1]);

    // Duplicated right after itself, and at the end.
    let mut dup = HEADER.to_vec();
    dup.extend(sig);
    dup.extend(sig);
    dup.extend(content);
    refused(verify_as(dup, &trust, "collector"), |e| {
        matches!(e, VerifyError::DuplicateSignatureSection { index: 1 })
    });
    let mut dup_end = s.clone();
    dup_end.extend(sig);
    refused(verify_as(dup_end, &trust, "collector"), |e| {
        matches!(e, VerifyError::DuplicateSignatureSection { .. })
    });

    // Moved after the manifest, and after everything.
    let man_len = manifest_section(&manifest("collector", "1.0.0")).len();
    let mut moved = HEADER.to_vec();
    moved.extend(&content[..man_len]);
    moved.extend(sig);
    moved.extend(&content[man_len..]);
    refused(verify_as(moved, &trust, "collector"), |e| {
        matches!(e, VerifyError::SignatureNotFirst { index: 1 })
    });
    let mut last = HEADER.to_vec();
    last.extend(content);
    last.extend(sig);
    refused(verify_as(last, &trust, "collector"), |e| {
        matches!(e, VerifyError::SignatureNotFirst { .. })
    });

    // A section inserted before it.
    let mut before = HEADER.to_vec();
    before.extend(custom("producers", b""));
    before.extend(&s[8..]);
    refused(verify_as(before, &trust, "collector"), |e| {
        matches!(
            e,
            VerifyError::SignatureNotFirst { index: 0 }
                | VerifyError::SignatureNotFirst { index: 1 }
        )
    });

    // Removed.
    let mut none = HEADER.to_vec();
    none.extend(content);
    refused(verify_as(none, &trust, "collector"), |e| {
        matches!(e, VerifyError::Unsigned)
    });
}

#[test]
fn manifest_section_must_be_single_second_and_canonical() {
    let m = manifest("collector", "1.0.0");
    let k = key(1);
    let trust = store(&[1]);
    let body = &component(500)[8..];
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        ("missing", body.to_vec(), |e| matches!(e, VerifyError::MissingManifest)),
        (
            "twice",
            [manifest_section(&m), manifest_section(&m), body.to_vec()].concat(),
            |e| matches!(e, VerifyError::DuplicateManifest { count: 2 }),
        ),
        (
            "third",
            [custom("x", b""), manifest_section(&m), body.to_vec()].concat(),
            |e| matches!(e, VerifyError::ManifestMisplaced { index: 2 }),
        ),
        (
            "pretty json",
            [custom("outpost-manifest", &serde_json::to_vec_pretty(&m).unwrap()), body.to_vec()].concat(),
            |e| matches!(e, VerifyError::NonCanonicalManifest),
        ),
        (
            "unknown field",
            [
                custom(
                    "outpost-manifest",
                    br#"{"name":"collector","version":"1.0.0","world":"collector","shell":true}"#,
                ),
                body.to_vec(),
            ]
            .concat(),
            |e| matches!(e, VerifyError::Manifest(_)) && e.to_string().contains("unknown field"),
        ),
        (
            "unknown capability",
            [
                custom(
                    "outpost-manifest",
                    br#"{"name":"collector","version":"1.0.0","world":"collector","capabilities":{"sockets":true}}"#,
                ),
                body.to_vec(),
            ]
            .concat(),
            |e| matches!(e, VerifyError::Manifest(_)) && e.to_string().contains("unknown field"),
        ),
        (
            "huge",
            [custom("outpost-manifest", &vec![b' '; 70_000]), body.to_vec()].concat(),
            |e| matches!(e, VerifyError::ManifestTooLarge { .. }),
        ),
        (
            "partial signature delimiter",
            [manifest_section(&m), custom("signature_delimiter", &[0; 16]), body.to_vec()].concat(),
            |e| matches!(e, VerifyError::PartialSignature { index: 2 }),
        ),
    ];
    for (what, content, check) in cases {
        let file = raw_sign(&content, &[&k]);
        let msg = refused(verify_as(file, &trust, "collector"), check);
        eprintln!("{what}: {msg}");
    }
    // The control: the same construction with a proper manifest verifies.
    let ok = raw_sign(&[manifest_section(&m), body.to_vec()].concat(), &[&k]);
    verify_as(ok, &trust, "collector").unwrap();
}

#[test]
fn signature_data_outside_the_supported_format_is_refused() {
    let m = manifest("collector", "1.0.0");
    let content = manifest_section(&m);
    let good = raw_sign(&content, &[&key(1)]);
    // The signature data starts after 00 <size> 09 "signature".
    let data_start = 8 + 1 + leb_len(&good[9..]) + 10;
    let cases: [(usize, u8, &str); 5] = [
        (data_start, 0x02, "specification version"),
        (data_start + 1, 0x02, "content type"),
        (data_start + 2, 0x02, "hash function"),
        (data_start + 5, 0x02, "hashes"),
        (data_start + 3, 0x00, "signed hash sets"),
    ];
    for (at, value, what) in cases {
        let mut bad = good.clone();
        bad[at] = value;
        let msg = refused(verify_as(bad, &store(&[1]), "collector"), |e| {
            matches!(
                e,
                VerifyError::MalformedSignatureSection { .. } | VerifyError::Malformed { .. }
            )
        });
        assert!(msg.contains(what), "{what}: {msg}");
    }
}

fn leb_len(bytes: &[u8]) -> usize {
    bytes.iter().position(|b| b & 0x80 == 0).unwrap() + 1
}

#[test]
fn sign_refuses_signed_or_manifest_bearing_input() {
    let m = manifest("collector", "1.0.0");
    let (s, _) = signed();
    let embedded = embed_manifest(&component(100), &m).unwrap();
    let mut core = component(100);
    core[4] = 0x01;
    core[6] = 0x00;
    let mut delim = component(100);
    delim.extend(custom("signature_delimiter", &[0; 16]));
    let k1 = key(1);
    let cases: Vec<(Vec<u8>, Vec<&SigningKey>, SignCheck)> = vec![
        (s, vec![&k1], |e| {
            matches!(e, SignError::AlreadySigned("signature"))
        }),
        (delim, vec![&k1], |e| {
            matches!(e, SignError::AlreadySigned("signature_delimiter"))
        }),
        (embedded, vec![&k1], |e| {
            matches!(e, SignError::AlreadyHasManifest)
        }),
        (core, vec![&k1], |e| {
            matches!(e, SignError::Malformed { .. }) && e.to_string().contains("core wasm module")
        }),
        (component(100), vec![], |e| {
            matches!(e, SignError::NoSigners)
        }),
        (component(100), vec![&k1, &k1], |e| {
            matches!(e, SignError::DuplicateSigner(_))
        }),
    ];
    for (input, keys, check) in cases {
        let err = sign(&input, &m, &keys).unwrap_err();
        assert!(check(&err), "{err}");
    }
}
