//! Any single changed byte, anywhere, is refused by `verify` (before any
//! compile), and so is the malleable form of a valid signature.

use crate::common::*;
use ed25519_dalek::Signer;
use outpost_signing::{VerifyError, sign};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn every_sampled_one_byte_change_is_refused() {
    let m = manifest("collector", "1.0.0");
    let signed = sign(&component(40_000), &m, &[&key(1), &key(2)]).unwrap();
    let mut trust = store(&[1, 2]);
    trust.set_threshold("collector", 2).unwrap();
    verify_as(signed.clone(), &trust, "collector").unwrap();

    let sig_end = 8 + signature_section_len(&signed);
    let man_end = sig_end + manifest_section(&m).len();
    // Every byte of the header, the signature section and the manifest
    // section, plus sampled bytes of the component's own sections.
    let mut offsets: Vec<usize> = (0..man_end).collect();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    while offsets.len() < 1_400 {
        offsets.push(man_end + (rng.next() as usize) % (signed.len() - man_end));
    }
    offsets.push(signed.len() - 1);
    let mut by_error: BTreeMap<String, usize> = BTreeMap::new();
    for &at in &offsets {
        let mut bad = signed.clone();
        let flip = (rng.next() % 255 + 1) as u8;
        bad[at] ^= flip;
        match verify_as(bad, &trust, "collector") {
            Ok(_) => panic!("changing byte {at} (xor {flip:#04x}) was accepted"),
            Err(e) => {
                let kind = format!("{e:?}");
                let kind = kind.split([' ', '(', '{']).next().unwrap().to_string();
                *by_error.entry(kind).or_default() += 1;
            }
        }
    }
    assert!(offsets.len() >= 1_000);
    eprintln!("{} one-byte changes refused: {by_error:?}", offsets.len());
    // The changes are caught by several distinct checks, not one catch-all.
    for kind in [
        "DigestMismatch",
        "BadSignature",
        "Malformed",
        "MalformedSignatureSection",
    ] {
        assert!(
            by_error.contains_key(kind),
            "no change was caught as {kind}: {by_error:?}"
        );
    }
}

/// L, the order of the Ed25519 base point, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

#[test]
fn non_canonical_signature_s_plus_l_is_refused() {
    let m = manifest("collector", "1.0.0");
    let k = key(1);
    let signed = sign(&component(1_000), &m, &[&k]).unwrap();
    let sig_end = 8 + signature_section_len(&signed);
    let hash: [u8; 32] = Sha256::digest(&signed[sig_end..]).into();
    let sig = k.sign(&message(&hash)).to_bytes();
    let at = signed
        .windows(64)
        .position(|w| w == sig)
        .expect("signature is stored verbatim");
    // S' = S + L: the same point equation holds, so a non-strict verifier
    // that does not check S < L would accept it.
    let mut s = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
        s[i] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0);
    let mut bad = signed.clone();
    bad[at + 32..at + 64].copy_from_slice(&s);
    refused(verify_as(bad, &store(&[1]), "collector"), |e| {
        matches!(e, VerifyError::BadSignature { .. })
    });
    verify_as(signed, &store(&[1]), "collector").unwrap();
}

#[test]
fn a_valid_signature_over_other_content_is_refused() {
    let m = manifest("collector", "1.0.0");
    let a = sign(&component(1_000), &m, &[&key(1)]).unwrap();
    let b = sign(&component(1_001), &m, &[&key(1)]).unwrap();
    // b's signature section with a's content: hash differs.
    let (la, lb) = (signature_section_len(&a), signature_section_len(&b));
    let mixed = assemble(&b[8..8 + lb], &a[8 + la..]);
    refused(verify_as(mixed, &store(&[1]), "collector"), |e| {
        matches!(e, VerifyError::DigestMismatch)
    });
}
