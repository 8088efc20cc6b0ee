//! Trust decisions: unknown, revoked, expired, not-yet-valid and development
//! keys; name, version and threshold.

use crate::common::*;
use outpost_signing::{Expectation, TrustStore, TrustedKey, VerifyError, key_id, sign, verify};
use std::time::Duration;

fn signed_by(seeds: &[u8], name: &str, version: &str) -> Vec<u8> {
    let keys: Vec<_> = seeds.iter().map(|s| key(*s)).collect();
    let refs: Vec<_> = keys.iter().collect();
    sign(&component(500), &manifest(name, version), &refs).unwrap()
}

#[test]
fn key_decisions_are_each_refused_with_their_own_error() {
    let file = signed_by(&[1], "collector", "1.0.0");
    let k = key(1).verifying_key();
    let day = Duration::from_secs(86_400);
    let with = |entry: TrustedKey| {
        let mut t = TrustStore::new();
        t.add_key(entry).unwrap();
        t
    };
    let mut revoked = store(&[1]);
    revoked.revoke(key_id(&k));
    let mut revoked_unlisted = store(&[2]);
    revoked_unlisted.revoke(key_id(&k));
    let cases: Vec<(&str, TrustStore, Check)> = vec![
        ("unknown", store(&[2]), |e| {
            matches!(e, VerifyError::UnknownKey { .. })
        }),
        ("revoked", revoked, |e| {
            matches!(e, VerifyError::RevokedKey { name: Some(_), .. })
        }),
        ("revoked, not listed", revoked_unlisted, |e| {
            matches!(e, VerifyError::RevokedKey { name: None, .. })
        }),
        (
            "expired",
            with(TrustedKey::new("old", k).with_not_after(now() - day)),
            |e| matches!(e, VerifyError::KeyExpired { .. }),
        ),
        (
            "not yet valid",
            with(TrustedKey::new("future", k).with_not_before(now() + day)),
            |e| matches!(e, VerifyError::KeyNotYetValid { .. }),
        ),
        (
            "development",
            with(TrustedKey::new("dev", k).with_development(true)),
            |e| matches!(e, VerifyError::DevelopmentKeyRefused { .. }),
        ),
    ];
    for (what, trust, check) in cases {
        let msg = refused(verify_as(file.clone(), &trust, "collector"), check);
        assert!(msg.contains(&key_id(&k).to_string()), "{what}: {msg}");
        eprintln!("{what}: {msg}");
    }

    // Inside the window (bounds inclusive), and a development key when allowed.
    let window = TrustedKey::new("current", k)
        .with_not_before(now())
        .with_not_after(now());
    verify_as(file.clone(), &with(window), "collector").unwrap();
    let mut dev = with(TrustedKey::new("dev", k).with_development(true));
    dev.set_allow_development_key(true);
    let v = verify_as(file, &dev, "collector").unwrap();
    assert!(v.signers()[0].development);
}

#[test]
fn one_bad_signer_refuses_the_module_even_if_others_are_good() {
    let file = signed_by(&[1, 2], "collector", "1.0.0");
    refused(verify_as(file, &store(&[1]), "collector"), |e| {
        matches!(e, VerifyError::UnknownKey { .. })
    });
}

#[test]
fn name_must_match_the_installed_name() {
    let file = signed_by(&[1], "notifier-x", "1.0.0");
    let msg = refused(verify_as(file, &store(&[1]), "collector"), |e| {
        matches!(e, VerifyError::NameMismatch { .. })
    });
    assert!(
        msg.contains("notifier-x") && msg.contains("collector"),
        "{msg}"
    );
}

#[test]
fn version_must_not_go_below_the_highest_installed() {
    let trust = store(&[1]);
    let at = |installed| Expectation {
        name: "collector",
        highest_installed: installed,
        now: now(),
    };
    let file = signed_by(&[1], "collector", "1.4.2");
    for (installed, ok) in [
        (None, true),
        (Some((1, 4, 2)), true),
        (Some((1, 4, 1)), true),
        (Some((0, 99, 99)), true),
        (Some((1, 4, 3)), false),
        (Some((1, 5, 0)), false),
        (Some((2, 0, 0)), false),
    ] {
        let r = verify(file.clone(), &trust, &at(installed));
        if ok {
            r.unwrap();
        } else {
            let msg = refused(r, |e| matches!(e, VerifyError::Downgrade { .. }));
            assert!(msg.contains("1.4.2"), "{msg}");
        }
    }
}

#[test]
fn threshold_counts_distinct_trusted_signers() {
    let mut trust = store(&[1, 2, 3]);
    trust.set_threshold("session-policy", 2).unwrap();
    let one = signed_by(&[1], "session-policy", "1.0.0");
    let msg = refused(verify_as(one, &trust, "session-policy"), |e| {
        matches!(
            e,
            VerifyError::ThresholdNotMet {
                required: 2,
                found: 1,
                ..
            }
        )
    });
    assert!(msg.contains("session-policy"), "{msg}");
    // The same key twice is one signer.
    let m = manifest("session-policy", "1.0.0");
    let content = [manifest_section(&m), component(300)[8..].to_vec()].concat();
    let k1 = key(1);
    let twice = raw_sign(&content, &[&k1, &k1]);
    refused(verify_as(twice, &trust, "session-policy"), |e| {
        matches!(e, VerifyError::ThresholdNotMet { found: 1, .. })
    });
    let v = verify_as(
        signed_by(&[1, 3], "session-policy", "1.0.0"),
        &trust,
        "session-policy",
    )
    .unwrap();
    assert_eq!(v.signers().len(), 2);
    // Other modules keep the default of one.
    verify_as(signed_by(&[2], "collector", "1.0.0"), &trust, "collector").unwrap();
}
