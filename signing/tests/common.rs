//! Shared builders: synthetic components, manifests, trust stores and an
//! independent implementation of the documented format for hand-made files.

use outpost_signing::{
    Expectation, Manifest, SigningKey, TrustStore, TrustedKey, VerifiedModule, VerifyError, key_id,
};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A predicate over a verification error (data-driven test tables).
pub type Check = fn(&VerifyError) -> bool;

pub const HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// "Now" for every test: 2027-01-15.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub fn leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        out.push(if v != 0 { b | 0x80 } else { b });
        if v == 0 {
            return;
        }
    }
}

pub fn vec_of(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    leb(&mut out, bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

/// A whole custom section.
pub fn custom(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut inner = vec_of(name.as_bytes());
    inner.extend_from_slice(payload);
    let mut out = vec![0u8];
    out.extend(vec_of(&inner));
    out
}

/// A synthetic component of at least `len` bytes: the header, a (fake) core
/// module section and custom sections of pseudo-random filler.
pub fn component(len: usize) -> Vec<u8> {
    let mut out = HEADER.to_vec();
    // Section id 1 (core module) holding a minimal core module.
    out.push(0x01);
    out.extend(vec_of(&[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut i = 0;
    while out.len() < len {
        let n = (len - out.len()).clamp(1, 40_000);
        let filler: Vec<u8> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        out.extend(custom(&format!("filler-{i}"), &filler));
        i += 1;
    }
    out
}

pub fn manifest(name: &str, version: &str) -> Manifest {
    Manifest::from_toml(&format!(
        "name = \"{name}\"\nversion = \"{version}\"\nworld = \"collector\"\n\
         [capabilities]\ndirectories = [\"instrument-logs\"]\nendpoints = [\"*.vendor.example:443\"]\n\
         uplink-streams = [\"qc\"]\n"
    ))
    .unwrap()
}

/// A key derived from a fixed seed (deterministic tests).
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A store trusting `keys` as `key-<seed>`.
pub fn store(seeds: &[u8]) -> TrustStore {
    let mut t = TrustStore::new();
    for s in seeds {
        t.add_key(TrustedKey::new(
            &format!("key-{s}"),
            key(*s).verifying_key(),
        ))
        .unwrap();
    }
    t
}

pub fn expect(name: &str) -> Expectation<'_> {
    Expectation {
        name,
        highest_installed: None,
        now: now(),
    }
}

pub fn verify_as(
    bytes: Vec<u8>,
    trust: &TrustStore,
    name: &str,
) -> Result<VerifiedModule, VerifyError> {
    outpost_signing::verify(bytes, trust, &expect(name))
}

/// The signed message of the documented format.
pub fn message(hash: &[u8; 32]) -> Vec<u8> {
    let mut m = b"wasmsig".to_vec();
    m.extend([1, 1, 1]);
    m.extend_from_slice(hash);
    m
}

/// Sign arbitrary `content` (the bytes after the signature section) following
/// the crate docs, written independently of the crate's encoder. Each key may
/// appear several times.
pub fn raw_sign(content: &[u8], keys: &[&SigningKey]) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let hash: [u8; 32] = Sha256::digest(content).into();
    let mut set = vec![1u8];
    set.extend_from_slice(&hash);
    leb(&mut set, keys.len() as u64);
    for k in keys {
        let mut entry = vec_of(key_id(&k.verifying_key()).as_bytes());
        entry.push(0x01);
        entry.extend(vec_of(&k.sign(&message(&hash)).to_bytes()));
        set.extend(vec_of(&entry));
    }
    let mut data = vec![1u8, 1, 1, 1];
    data.extend(vec_of(&set));
    assemble(&custom("signature", &data), content)
}

pub fn assemble(signature_section: &[u8], content: &[u8]) -> Vec<u8> {
    let mut out = HEADER.to_vec();
    out.extend_from_slice(signature_section);
    out.extend_from_slice(content);
    out
}

/// The manifest section for `m`.
pub fn manifest_section(m: &Manifest) -> Vec<u8> {
    custom("outpost-manifest", &m.to_canonical_json())
}

/// Length of the `signature` section at the start of a signed file.
pub fn signature_section_len(file: &[u8]) -> usize {
    let mut pos = 9;
    let mut size = 0u64;
    let mut shift = 0;
    loop {
        let b = file[pos];
        size |= u64::from(b & 0x7f) << shift;
        shift += 7;
        pos += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    pos - 8 + size as usize
}

/// Assert `result` is an error whose message matches the crate conventions
/// (lowercase start, no trailing period) and satisfies `check`.
#[track_caller]
pub fn refused(
    result: Result<VerifiedModule, VerifyError>,
    check: impl Fn(&VerifyError) -> bool,
) -> String {
    let err = match result {
        Ok(v) => panic!("accepted a module that must be refused: {v:?}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(check(&err), "unexpected error: {msg} ({err:?})");
    assert!(
        msg.starts_with(|c: char| !c.is_uppercase()) && !msg.ends_with('.'),
        "message breaks conventions: {msg}"
    );
    msg
}
