//! Feeds arbitrary bytes to the signed-module parser and verifier.
//!
//! The first input byte picks a mode:
//! - even: the rest is a whole signed file; `inspect_unverified` and `verify`
//!   must not panic, and whenever `verify` accepts, `inspect_unverified` must
//!   accept too and agree on the manifest and the signer;
//! - odd: the rest is the body of an unsigned component; if `sign` accepts it,
//!   `verify` must accept the result, and flipping any one byte of the result
//!   must make `verify` refuse it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_signing::{
    Expectation, Manifest, SigningKey, TrustStore, TrustedKey, inspect_unverified, sign, verify,
};
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

struct Fixture {
    key: SigningKey,
    trust: TrustStore,
    manifest: Manifest,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut trust = TrustStore::new();
        trust
            .add_key(TrustedKey::new("fuzz", key.verifying_key()))
            .unwrap();
        let manifest =
            Manifest::from_toml("name = \"fuzz\"\nversion = \"1.0.0\"\nworld = \"collector\"\n")
                .unwrap();
        Fixture {
            key,
            trust,
            manifest,
        }
    })
}

const HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let expect = Expectation {
        name: "fuzz",
        highest_installed: Some((0, 9, 0)),
        now: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    };
    if mode % 2 == 0 {
        let inspected = inspect_unverified(rest);
        if let Ok(v) = verify(rest.to_vec(), &f.trust, &expect) {
            let i = inspected.expect("verify accepted what inspect refused");
            assert_eq!(&i.manifest, v.manifest());
            assert_eq!(i.key_ids[0], v.signers()[0].key_id);
            assert_eq!(v.bytes(), rest);
        }
    } else {
        let mut component = HEADER.to_vec();
        component.extend_from_slice(rest);
        let Ok(signed) = sign(&component, &f.manifest, &[&f.key]) else {
            return;
        };
        let v = verify(signed.clone(), &f.trust, &expect).expect("signed module must verify");
        assert_eq!(v.bytes(), &signed[..]);
        let at = usize::from(mode) * 131 % signed.len();
        let mut tampered = signed;
        tampered[at] ^= 0x01;
        assert!(
            verify(tampered, &f.trust, &expect).is_err(),
            "a one-bit change at byte {at} was accepted"
        );
    }
});
