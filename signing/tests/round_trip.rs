//! sign → verify round trips on synthetic and real components.

use crate::common::*;
use outpost_signing::{Expectation, Manifest, inspect_unverified, sign, verify};
use sha2::{Digest, Sha256};

#[test]
fn minimal_component_round_trips() {
    let m = manifest("collector", "1.2.3");
    let signed = sign(&HEADER, &m, &[&key(1)]).unwrap();
    let v = verify_as(signed.clone(), &store(&[1]), "collector").unwrap();
    assert_eq!(v.manifest(), &m);
    assert_eq!(v.bytes(), &signed[..]);
    assert_eq!(v.signers().len(), 1);
    assert_eq!(v.signers()[0].name, "key-1");
    assert_eq!(
        v.signers()[0].key_id,
        outpost_signing::key_id(&key(1).verifying_key())
    );
    assert_eq!(v.file_sha256(), <[u8; 32]>::from(Sha256::digest(&signed)));
    let sig_len = signature_section_len(&signed);
    assert_eq!(
        v.signed_sha256(),
        <[u8; 32]>::from(Sha256::digest(&signed[8 + sig_len..]))
    );
    // The component's own sections follow the manifest unchanged.
    assert!(signed.ends_with(&manifest_section(&m)));
}

#[test]
fn large_component_with_two_signers_round_trips() {
    let c = component(5_000_000);
    let m = manifest("collector", "2.0.0");
    let signed = sign(&c, &m, &[&key(1), &key(2)]).unwrap();
    assert!(
        signed.ends_with(&c[8..]),
        "component sections are kept byte for byte"
    );
    let mut trust = store(&[1, 2]);
    trust.set_threshold("collector", 2).unwrap();
    let v = verify_as(signed.clone(), &trust, "collector").unwrap();
    let names: Vec<_> = v.signers().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["key-1", "key-2"]);
    let i = inspect_unverified(&signed).unwrap();
    assert_eq!(i.manifest, m);
    assert_eq!(i.key_ids, [v.signers()[0].key_id, v.signers()[1].key_id]);
    assert_eq!(i.file_sha256, v.file_sha256());
    assert_eq!(i.claimed_signed_sha256, [v.signed_sha256()]);
}

#[test]
fn real_guest_components_round_trip() {
    for a in outpost_artifacts::ALL {
        let wasm = std::fs::read(a.wasm).unwrap();
        assert_eq!(wasm[..8], HEADER, "{} is a component", a.wasm);
        let m = Manifest::from_toml(&std::fs::read_to_string(a.manifest).unwrap()).unwrap();
        let signed = sign(&wasm, &m, &[&key(1)]).unwrap();
        let expect = Expectation {
            name: &m.name,
            highest_installed: Some(m.semver()),
            now: now(),
        };
        let v = verify(signed, &store(&[1]), &expect).unwrap_or_else(|e| panic!("{}: {e}", a.name));
        assert_eq!(v.manifest().name, a.name);
        assert!(v.bytes().ends_with(&wasm[8..]));
    }
}
