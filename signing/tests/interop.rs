//! Interoperability with the `wasmsign2` CLI (WebAssembly tool-conventions
//! signatures). Requires `wasmsign2` on PATH or in ~/.cargo/bin:
//! `cargo install wasmsign2-cli --locked`.

use crate::common::*;
use outpost_signing::{
    Expectation, Manifest, SigningKey, TrustStore, TrustedKey, VerifyError, embed_manifest,
    public_key_from_wasmsign2, sign, verify, wasmsign2_public_key_bytes,
};
use std::path::{Path, PathBuf};
use std::process::Command;

fn wasmsign2() -> PathBuf {
    let exe = format!("wasmsign2{}", std::env::consts::EXE_SUFFIX);
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")) {
        dirs.push(PathBuf::from(home).join(".cargo").join("bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(&exe))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the wasmsign2 CLI is required for the interop tests and was not found on PATH \
                 or in ~/.cargo/bin; install it with `cargo install wasmsign2-cli --locked`"
            )
        })
}

/// Run wasmsign2; returns (success, combined output).
fn run(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(wasmsign2())
        .args(args)
        .output()
        .expect("wasmsign2 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn wasmsign2_verify(dir: &Path, file: &[u8], key: &SigningKey) -> (bool, String) {
    let pk = write(
        dir,
        "ours.pub",
        &wasmsign2_public_key_bytes(&key.verifying_key()),
    );
    let f = write(dir, "to-verify.wasm", file);
    run(&[
        "verify".as_ref(),
        "-K".as_ref(),
        pk.as_os_str(),
        "-i".as_ref(),
        f.as_os_str(),
    ])
}

/// A key pair made by `wasmsign2 keygen`, loaded into our types. The secret
/// key file is `0x81 ‖ seed(32) ‖ public key(32)`.
fn wasmsign2_keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf, SigningKey) {
    let sk = dir.join(format!("{name}.sk"));
    let pk = dir.join(format!("{name}.pk"));
    let (ok, out) = run(&[
        "keygen".as_ref(),
        "-k".as_ref(),
        sk.as_os_str(),
        "-K".as_ref(),
        pk.as_os_str(),
    ]);
    assert!(ok, "{out}");
    let sk_bytes = std::fs::read(&sk).unwrap();
    assert_eq!((sk_bytes.len(), sk_bytes[0]), (65, 0x81));
    let key = SigningKey::from_bytes(sk_bytes[1..33].try_into().unwrap());
    let public = public_key_from_wasmsign2(&std::fs::read(&pk).unwrap()).unwrap();
    assert_eq!(public, key.verifying_key());
    (sk, pk, key)
}

fn wasmsign2_sign(dir: &Path, input: &[u8], sk: &Path, pk: &Path) -> Vec<u8> {
    let i = write(dir, "to-sign.wasm", input);
    let o = dir.join("signed-by-wasmsign2.wasm");
    let (ok, out) = run(&[
        "sign".as_ref(),
        "-k".as_ref(),
        sk.as_os_str(),
        "-K".as_ref(),
        pk.as_os_str(),
        "-i".as_ref(),
        i.as_os_str(),
        "-o".as_ref(),
        o.as_os_str(),
    ]);
    assert!(ok, "{out}");
    std::fs::read(o).unwrap()
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

#[test]
fn wasmsign2_verifies_modules_we_sign() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (key(1), key(2));
    for (what, c, m) in components() {
        let signed = sign(&c, &m, &[&k1, &k2]).unwrap();
        for k in [&k1, &k2] {
            let (ok, out) = wasmsign2_verify(dir.path(), &signed, k);
            assert!(ok, "{what}: wasmsign2 refused our signature: {out}");
        }
        // Sanity: wasmsign2 refuses a tampered file and a key that did not sign.
        let mut bad = signed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(!wasmsign2_verify(dir.path(), &bad, &k1).0, "{what}");
        assert!(!wasmsign2_verify(dir.path(), &signed, &key(3)).0, "{what}");
    }
}

#[test]
fn we_verify_modules_wasmsign2_signs() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk, theirs) = wasmsign2_keygen(dir.path(), "release");
    let mut trust = TrustStore::new();
    trust
        .add_key(TrustedKey::new("wasmsign2-release", theirs.verifying_key()))
        .unwrap();
    for (what, c, m) in components() {
        let input = embed_manifest(&c, &m).unwrap();
        let signed = wasmsign2_sign(dir.path(), &input, &sk, &pk);
        let expect = Expectation {
            name: &m.name,
            highest_installed: None,
            now: now(),
        };
        let v = verify(signed.clone(), &trust, &expect).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(v.manifest(), &m);
        assert_eq!(v.signers()[0].name, "wasmsign2-release");
        // wasmsign2 writes exactly what we would have written.
        assert_eq!(signed, sign(&c, &m, &[&theirs]).unwrap(), "{what}");
    }
    // Signing an unsigned component without our manifest section is refused
    // by our rules (the capabilities would not be signed).
    let plain = wasmsign2_sign(dir.path(), &component(1_000), &sk, &pk);
    refused(verify_as(plain, &trust, "collector"), |e| {
        matches!(e, VerifyError::MissingManifest)
    });
    // wasmsign2 without -K writes no key id: refused (outpost needs key ids).
    let i = write(
        dir.path(),
        "no-id.wasm",
        &embed_manifest(&HEADER, &manifest("collector", "1.0.0")).unwrap(),
    );
    let o = dir.path().join("no-id-signed.wasm");
    let (ok, out) = run(&[
        "sign".as_ref(),
        "-k".as_ref(),
        sk.as_os_str(),
        "-i".as_ref(),
        i.as_os_str(),
        "-o".as_ref(),
        o.as_os_str(),
    ]);
    assert!(ok, "{out}");
    let msg = refused(
        verify_as(std::fs::read(o).unwrap(), &trust, "collector"),
        |e| matches!(e, VerifyError::MalformedSignatureSection { .. }),
    );
    assert!(msg.contains("key id"), "{msg}");
}

#[test]
fn wasmsign2_adds_a_second_signature_to_a_module_we_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk, review) = wasmsign2_keygen(dir.path(), "review");
    let m = manifest("session-policy", "1.0.0");
    let ours = sign(&component(5_000), &m, &[&key(1)]).unwrap();
    let both = wasmsign2_sign(dir.path(), &ours, &sk, &pk);
    let mut trust = store(&[1]);
    trust
        .add_key(TrustedKey::new("security-review", review.verifying_key()))
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
        sign(&component(5_000), &m, &[&key(1), &review]).unwrap()
    );
}
