//! Verify throughput on a 5 MB synthetic component.
//!
//! `cargo bench -p outpost-signing` prints a table: the median of N runs for
//! signing and verifying, in MB/s (1 MB = 10^6 bytes). Target: verify ≥ 500 MB/s
//! in release.
#![forbid(unsafe_code)]

use outpost_signing::{
    Expectation, Manifest, TrustStore, TrustedKey, generate_signing_key, sign, verify,
};
use std::time::{Duration, Instant, SystemTime};

const PAYLOAD_BYTES: usize = 5_000_000;
const RUNS: usize = 41;

/// A component of about `len` bytes: the header and custom sections of 64 KiB.
fn synthetic_component(len: usize) -> Vec<u8> {
    let mut out = vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    let chunk = 64 * 1024;
    let mut i: u32 = 0;
    while out.len() < len {
        let name = b"pad";
        let body_len = chunk.min(len - out.len());
        let mut inner = vec![name.len() as u8];
        inner.extend_from_slice(name);
        inner.extend(
            (0..body_len).map(|j| (j as u32).wrapping_mul(2654435761).wrapping_add(i) as u8),
        );
        out.push(0);
        let mut n = inner.len() as u64;
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n != 0 { b | 0x80 } else { b });
            if n == 0 {
                break;
            }
        }
        out.extend(inner);
        i += 1;
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn main() {
    let component = synthetic_component(PAYLOAD_BYTES);
    let manifest =
        Manifest::from_toml("name = \"bench\"\nversion = \"1.0.0\"\nworld = \"collector\"\n")
            .unwrap();
    let keys = [generate_signing_key(), generate_signing_key()];
    let mut trust = TrustStore::new();
    trust
        .add_key(TrustedKey::new("release", keys[0].verifying_key()))
        .unwrap();
    trust
        .add_key(TrustedKey::new("review", keys[1].verifying_key()))
        .unwrap();
    let expect = Expectation {
        name: "bench",
        highest_installed: None,
        now: SystemTime::now(),
    };

    println!(
        "{:<28} {:>12} {:>12} {:>10}",
        "operation", "bytes", "median", "MB/s"
    );
    let mut sha_times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        std::hint::black_box(<sha2::Sha256 as sha2::Digest>::digest(&component));
        sha_times.push(t.elapsed());
    }
    let m = median(sha_times);
    println!(
        "{:<28} {:>12} {:>10.2}ms {:>10.0}",
        "sha-256, one pass (ref.)",
        component.len(),
        m.as_secs_f64() * 1e3,
        mb_per_s(component.len(), m)
    );
    for signers in [1usize, 2] {
        if signers == 2 {
            trust.set_threshold("bench", 2).unwrap();
        }
        let refs: Vec<_> = keys[..signers].iter().collect();
        let mut sign_times = Vec::with_capacity(RUNS);
        let mut signed = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            signed = sign(&component, &manifest, &refs).unwrap();
            sign_times.push(t.elapsed());
        }
        let mut verify_times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let input = signed.clone(); // the copy is not timed
            let t = Instant::now();
            let v = verify(input, &trust, &expect).unwrap();
            verify_times.push(t.elapsed());
            assert_eq!(v.signers().len(), signers);
        }
        for (what, times) in [("sign", sign_times), ("verify", verify_times)] {
            let m = median(times);
            println!(
                "{:<28} {:>12} {:>10.2}ms {:>10.0}",
                format!(
                    "{what} ({signers} signer{})",
                    if signers == 1 { "" } else { "s" }
                ),
                signed.len(),
                m.as_secs_f64() * 1e3,
                mb_per_s(signed.len(), m)
            );
        }
    }
}
