//! Interoperability with `wasmsign2` (WebAssembly tool-conventions
//! signatures), through the `wasmsign2` library crate: the same code the
//! `wasmsign2` CLI (wasmsign2-cli 0.2.8) runs for `keygen`, `sign -k -K` and
//! `verify -K`, called in-process so that the tests need no installed tool.
//! Keys cross between the two implementations in wasmsign2's raw byte
//! formats (what its key files hold), and signed files as plain bytes.

use crate::common::*;
use outpost_signing::{
    Expectation, Manifest, SigningKey, TrustStore, TrustedKey, VerifyError, embed_manifest, key_id,
    public_key_from_wasmsign2, sign, verify, wasmsign2_public_key_bytes,
};
use std::io::Cursor;

/// What `wasmsign2 verify -K <key file> -i <file>` does: read the raw public
/// key we export, attach its default key id, verify the embedded signatures.
fn wasmsign2_verify(file: &[u8], key: &SigningKey) -> Result<(), wasmsign2::WSError> {
    let pk = wasmsign2::PublicKey::from_bytes(&wasmsign2_public_key_bytes(&key.verifying_key()))?
        .attach_default_key_id();
    pk.verify(&mut Cursor::new(file), None)
}

/// A key pair made by wasmsign2 (`wasmsign2 keygen`), as the raw bytes its
/// key files hold, loaded into our types. The secret key is
/// `0x81 ‖ seed(32) ‖ public key(32)`, the public key `0x01 ‖ key(32)`.
struct Wasmsign2Keys {
    secret: Vec<u8>,
    public: Vec<u8>,
    ours: SigningKey,
}

fn wasmsign2_keygen() -> Wasmsign2Keys {
    let kp = wasmsign2::KeyPair::generate();
    let (secret, public) = (kp.sk.to_bytes(), kp.pk.to_bytes());
    assert_eq!((secret.len(), secret[0]), (65, 0x81));
    let ours = SigningKey::from_bytes(secret[1..33].try_into().unwrap());
    let verifying = public_key_from_wasmsign2(&public).unwrap();
    assert_eq!(verifying, ours.verifying_key());
    Wasmsign2Keys {
        secret,
        public,
        ours,
    }
}

/// What `wasmsign2 sign -k <secret> [-K <public>] -i <input> -o <output>`
/// does: with the public key, the signature carries its default key id.
fn wasmsign2_sign(input: &[u8], keys: &Wasmsign2Keys, with_key_id: bool) -> Vec<u8> {
    let sk = wasmsign2::SecretKey::from_bytes(&keys.secret).unwrap();
    let key_id = with_key_id.then(|| {
        wasmsign2::PublicKey::from_bytes(&keys.public)
            .unwrap()
            .attach_default_key_id()
            .key_id()
            .cloned()
            .expect("a default key id is attached")
    });
    let module = wasmsign2::Module::deserialize(&mut Cursor::new(input)).unwrap();
    let (signed, _detached) = sk
        .sign_multi(module, key_id.as_ref(), false, false)
        .unwrap();
    let mut out = Vec::new();
    signed.serialize(&mut out).unwrap();
    out
}

fn components() -> Vec<(String, Vec<u8>, Manifest)> {
    let mut out = vec![
        (
            "minimal".to_string(),
            HEADER.to_vec(),
            manifest("collector", "1.0.0"),
        ),
        (
            "synthetic".to_string(),
            component(300_000),
            manifest("collector", "1.0.0"),
        ),
    ];
    let a = outpost_artifacts::ALL[0];
    out.push((
        a.name.to_string(),
        std::fs::read(a.wasm).unwrap(),
        Manifest::from_toml(&std::fs::read_to_string(a.manifest).unwrap()).unwrap(),
    ));
    out
}

/// Flip one bit of the byte at `at` (from the start when non-negative, from
/// the end otherwise).
fn flipped(file: &[u8], at: isize) -> Vec<u8> {
    let mut bad = file.to_vec();
    let i = if at >= 0 {
        at as usize
    } else {
        bad.len() - at.unsigned_abs()
    };
    bad[i] ^= 1;
    bad
}

#[test]
fn key_ids_agree() {
    for seed in [1, 2, 3, 0x42, 0xff] {
        let k = key(seed).verifying_key();
        let theirs = wasmsign2::PublicKey::from_bytes(&wasmsign2_public_key_bytes(&k))
            .unwrap()
            .attach_default_key_id();
        assert_eq!(
            theirs.key_id().map(Vec::as_slice),
            Some(&key_id(&k).as_bytes()[..]),
            "seed {seed}"
        );
    }
    let generated = wasmsign2_keygen();
    let theirs = wasmsign2::PublicKey::from_bytes(&generated.public)
        .unwrap()
        .attach_default_key_id();
    assert_eq!(
        theirs.key_id().map(Vec::as_slice),
        Some(&key_id(&generated.ours.verifying_key()).as_bytes()[..])
    );
}

#[test]
fn wasmsign2_verifies_modules_we_sign() {
    let (k1, k2) = (key(1), key(2));
    for (what, c, m) in components() {
        let signed = sign(&c, &m, &[&k1, &k2]).unwrap();
        for k in [&k1, &k2] {
            wasmsign2_verify(&signed, k)
                .unwrap_or_else(|e| panic!("{what}: wasmsign2 refused our signature: {e}"));
        }
        // wasmsign2 refuses a tampered file (last byte, a byte of the
        // manifest section) and a key that did not sign.
        for at in [-1, inside_manifest(&signed)] {
            let bad = flipped(&signed, at);
            assert!(wasmsign2_verify(&bad, &k1).is_err(), "{what}: at {at}");
        }
        assert!(wasmsign2_verify(&signed, &key(3)).is_err(), "{what}");
    }
}

#[test]
fn we_verify_modules_wasmsign2_signs() {
    let theirs = wasmsign2_keygen();
    let mut trust = TrustStore::new();
    trust
        .add_key(TrustedKey::new(
            "wasmsign2-release",
            theirs.ours.verifying_key(),
        ))
        .unwrap();
    for (what, c, m) in components() {
        let input = embed_manifest(&c, &m).unwrap();
        let signed = wasmsign2_sign(&input, &theirs, true);
        let expect = Expectation {
            name: &m.name,
            highest_installed: None,
            now: now(),
        };
        let v = verify(signed.clone(), &trust, &expect).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(v.manifest(), &m);
        assert_eq!(v.signers()[0].name, "wasmsign2-release");
        // wasmsign2 writes exactly what we would have written.
        assert_eq!(signed, sign(&c, &m, &[&theirs.ours]).unwrap(), "{what}");
        // Tampering with a file wasmsign2 signed is caught by both.
        for at in [-1, inside_manifest(&signed)] {
            let bad = flipped(&signed, at);
            refused(verify(bad.clone(), &trust, &expect), |e| {
                matches!(e, VerifyError::DigestMismatch)
            });
            assert!(
                wasmsign2_verify(&bad, &theirs.ours).is_err(),
                "{what}: at {at}"
            );
        }
    }
    // Signing an unsigned component without our manifest section is refused
    // by our rules (the capabilities would not be signed).
    let plain = wasmsign2_sign(&component(1_000), &theirs, true);
    refused(verify_as(plain, &trust, "collector"), |e| {
        matches!(e, VerifyError::MissingManifest)
    });
    // wasmsign2 without -K writes no key id: refused (outpost needs key ids).
    let input = embed_manifest(&HEADER, &manifest("collector", "1.0.0")).unwrap();
    let no_id = wasmsign2_sign(&input, &theirs, false);
    let msg = refused(verify_as(no_id, &trust, "collector"), |e| {
        matches!(e, VerifyError::MalformedSignatureSection { .. })
    });
    assert!(msg.contains("key id"), "{msg}");
}

#[test]
fn wasmsign2_adds_a_second_signature_to_a_module_we_signed() {
    let review = wasmsign2_keygen();
    let m = manifest("session-policy", "1.0.0");
    let ours = sign(&component(5_000), &m, &[&key(1)]).unwrap();
    let both = wasmsign2_sign(&ours, &review, true);
    let mut trust = store(&[1]);
    trust
        .add_key(TrustedKey::new(
            "security-review",
            review.ours.verifying_key(),
        ))
        .unwrap();
    trust.set_threshold("session-policy", 2).unwrap();
    refused(verify_as(ours, &trust, "session-policy"), |e| {
        matches!(e, VerifyError::ThresholdNotMet { .. })
    });
    let v = verify_as(both.clone(), &trust, "session-policy").unwrap();
    let names: Vec<_> = v.signers().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["key-1", "security-review"]);
    assert_eq!(
        both,
        sign(&component(5_000), &m, &[&key(1), &review.ours]).unwrap()
    );
    // wasmsign2 accepts the file under either key.
    for k in [&key(1), &review.ours] {
        wasmsign2_verify(&both, k).unwrap();
    }
}

/// Offset of a byte inside the manifest's JSON (a few bytes after the
/// section name), so that a flipped bit changes a signed capability.
fn inside_manifest(file: &[u8]) -> isize {
    let name = b"outpost-manifest";
    let at = file
        .windows(name.len())
        .position(|w| w == name)
        .expect("manifest section present");
    (at + name.len() + 3) as isize
}
