//! The bytes `sign` writes are the ones the crate docs describe, and files
//! written from the docs alone verify.

use crate::common::*;
use ed25519_dalek::Signer;
use outpost_signing::{key_id, sign};
use sha2::{Digest, Sha256};

#[test]
fn signed_file_matches_the_documented_layout_byte_for_byte() {
    let c = component(300);
    let m = manifest("collector", "1.0.0");
    let k = key(1);
    let signed = sign(&c, &m, &[&k]).unwrap();

    let mut content = manifest_section(&m);
    content.extend_from_slice(&c[8..]);
    let hash: [u8; 32] = Sha256::digest(&content).into();
    let mut expected = HEADER.to_vec();
    expected.extend([0x00, 0x81, 0x01, 0x09]);
    expected.extend(b"signature");
    expected.extend([0x01, 0x01, 0x01, 0x01, 0x72, 0x01]);
    expected.extend(hash);
    expected.extend([0x01, 0x4f, 0x0c]);
    expected.extend(key_id(&k.verifying_key()).as_bytes());
    expected.extend([0x01, 0x40]);
    expected.extend(k.sign(&message(&hash)).to_bytes());
    expected.extend(&content);
    assert_eq!(signed, expected);
    // And the independent encoder in `common` agrees.
    assert_eq!(raw_sign(&content, &[&k]), signed);
}

#[test]
fn key_id_is_hmac_sha256_of_the_public_key_truncated_to_12_bytes() {
    use hmac::{Hmac, Mac};
    let k = key(9).verifying_key();
    let mut mac = Hmac::<Sha256>::new_from_slice(k.as_bytes()).unwrap();
    mac.update(b"key_id");
    assert_eq!(key_id(&k).as_bytes()[..], mac.finalize().into_bytes()[..12]);
}
