//! The signed guests verify with the development key only when the trust
//! store allows development keys (issue #3).

use outpost_artifacts::{ALL, DEV_KEY_ID, DEV_PUBLIC_KEY_HEX, DEV_SIGNING_KEY};
use outpost_signing::{
    Expectation, TrustStore, TrustedKey, VerifyError, key_id, load_signing_key,
    public_key_from_hex, verify,
};
use std::time::SystemTime;

fn trust(allow_development_key: bool) -> TrustStore {
    let key = public_key_from_hex(DEV_PUBLIC_KEY_HEX).unwrap();
    let mut trust = TrustStore::new();
    trust
        .add_key(TrustedKey::new("workspace-development", key).with_development(true))
        .unwrap();
    trust.set_allow_development_key(allow_development_key);
    trust
}

fn expect(name: &str) -> Expectation<'_> {
    Expectation {
        name,
        highest_installed: None,
        now: SystemTime::now(),
    }
}

#[test]
fn dev_key_consts_describe_the_key_file() {
    assert_eq!(DEV_PUBLIC_KEY_HEX.len(), 64);
    assert_eq!(DEV_KEY_ID.len(), 24);
    for s in [DEV_PUBLIC_KEY_HEX, DEV_KEY_ID] {
        assert!(
            s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{s}"
        );
    }
    let key = load_signing_key(std::path::Path::new(DEV_SIGNING_KEY)).unwrap();
    let public = key.verifying_key();
    assert_eq!(
        outpost_signing::public_key_to_hex(&public),
        DEV_PUBLIC_KEY_HEX
    );
    assert_eq!(key_id(&public).to_string(), DEV_KEY_ID);
}

#[test]
fn every_signed_guest_verifies_when_development_keys_are_allowed() {
    let trust = trust(true);
    for a in ALL {
        let bytes = std::fs::read(a.signed).unwrap();
        let verified =
            verify(bytes, &trust, &expect(a.name)).unwrap_or_else(|e| panic!("{}: {e}", a.signed));
        assert_eq!(verified.manifest().name, a.name);
        let signers = verified.signers();
        assert_eq!(signers.len(), 1, "{}", a.signed);
        assert_eq!(signers[0].key_id.to_string(), DEV_KEY_ID);
        assert!(signers[0].development);
        // The signed file carries the component unchanged after its two
        // custom sections: it is longer than the raw one.
        let raw = std::fs::metadata(a.wasm).unwrap().len();
        assert!(verified.bytes().len() as u64 > raw, "{}", a.signed);
    }
}

#[test]
fn every_signed_guest_is_refused_when_development_keys_are_not_allowed() {
    let trust = trust(false);
    for a in ALL {
        let bytes = std::fs::read(a.signed).unwrap();
        match verify(bytes, &trust, &expect(a.name)) {
            Err(VerifyError::DevelopmentKeyRefused { key_id, name }) => {
                assert_eq!(key_id.to_string(), DEV_KEY_ID);
                assert_eq!(name, "workspace-development");
            }
            Err(e) => panic!("{}: refused for the wrong reason: {e}", a.signed),
            Ok(_) => panic!("{}: accepted a development key", a.signed),
        }
    }
}

#[test]
fn the_raw_components_are_unsigned() {
    let trust = trust(true);
    for a in ALL {
        let bytes = std::fs::read(a.wasm).unwrap();
        assert!(
            matches!(
                verify(bytes, &trust, &expect(a.name)),
                Err(VerifyError::Unsigned)
            ),
            "{}",
            a.wasm
        );
    }
}
