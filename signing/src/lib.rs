//! Module manifests, signing keys, the signed-module format, the trust store
//! and verification.
//!
//! Architecture Invariant: this crate depends on no other crate of the workspace
//! and never on wasmtime; the host and the cloud both use it.
//!
//! Architecture Invariant: [`VerifiedModule`] is constructed only by
//! [`verify()`]. The host's loader accepts only that type, so an unsigned or
//! tampered module cannot reach the compiler.
//!
//! # Use
//!
//! ```
//! use outpost_signing::{Expectation, Manifest, TrustStore, TrustedKey, generate_signing_key, sign, verify};
//!
//! let key = generate_signing_key();
//! let manifest = Manifest::from_toml("name = \"collector\"\nversion = \"1.2.0\"\nworld = \"collector\"\n").unwrap();
//! let component = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
//! let signed = sign(&component, &manifest, &[&key]).unwrap();
//!
//! let mut trust = TrustStore::new();
//! trust.add_key(TrustedKey::new("vendor-release", key.verifying_key())).unwrap();
//! let expect = Expectation { name: "collector", highest_installed: Some((1, 1, 0)), now: std::time::SystemTime::now() };
//! let verified = verify(signed, &trust, &expect).unwrap();
//! assert_eq!(verified.manifest().version, "1.2.0");
//! assert_eq!(verified.signers()[0].name, "vendor-release");
//! ```
//!
//! # The signed-module format, byte by byte
//!
//! A signed module is one WebAssembly **component** file. Notation: `leb(n)`
//! is `n` as unsigned LEB128, which outpost requires to be minimally encoded
//! and at most 5 bytes (32 bits) everywhere; `vec(b)` is `leb(len(b)) ‖ b`;
//! `custom(name, p)` is the custom section `0x00 ‖ leb(len(vec(name) ‖ p)) ‖
//! vec(name) ‖ p`.
//!
//! ```text
//! file      = header ‖ sig_sec ‖ content
//! header    = 00 61 73 6d 0d 00 01 00            ; component, binary format 0x0d, layer 1
//! sig_sec   = custom("signature", sig_data)      ; must be the first section, exactly once
//! content   = man_sec ‖ section*                 ; everything the signatures cover
//! man_sec   = custom("outpost-manifest", json)   ; must be the second section, exactly once
//! json      = Manifest::to_canonical_json()      ; UTF-8, canonical (re-encoding is byte-identical)
//!
//! sig_data  = 01                                 ; specification version
//!             01                                 ; content type: wasm module (wasmsign2 uses it for components too)
//!             01                                 ; hash function: SHA-256
//!             leb(n_sets) vec(signed_hashes)*    ; outpost writes 1 set; accepts 1..=4
//! signed_hashes = leb(1) hash                    ; exactly one 32-byte hash per set (no partial signatures)
//!                 leb(n_sigs) vec(sig_entry)*    ; 1..=16 signatures in the file in total
//! sig_entry = vec(key_id)                        ; key_id: 12 bytes (see `keys` for the derivation)
//!             01                                 ; algorithm: Ed25519
//!             vec(signature)                     ; 64 bytes: R ‖ S, Ed25519 (RFC 8032), S < L
//!
//! hash      = SHA-256(content)                   ; every byte after sig_sec, to the end of the file
//! signature = Ed25519-sign(secret key, "wasmsig" ‖ 01 ‖ 01 ‖ 01 ‖ hash)   ; 42-byte message
//! ```
//!
//! For example, a file signed by one key starts:
//!
//! ```text
//! 00 61 73 6d 0d 00 01 00                 header
//! 00 81 01                                custom section, 129 bytes
//!    09 "signature"                       name
//!    01 01 01                             version, content type, SHA-256
//!    01                                   one signed-hash set
//!    72                                   set of 114 bytes:
//!       01 <32-byte hash>                    one hash
//!       01                                   one signature
//!       4f                                   entry of 79 bytes:
//!          0c <12-byte key id>                  key id
//!          01                                   Ed25519
//!          40 <64-byte signature>               signature
//! 00 xx… 10 "outpost-manifest" {"name":…}  manifest section
//! …                                       the component's own sections, unchanged
//! ```
//!
//! Because the manifest section lies inside `content`, the signature covers
//! the capabilities: a reviewer can read exactly what a module may do from the
//! signed bytes (`inspect_unverified` prints it; the JSON is plain text in the
//! file). The Wasm compiler ignores both custom sections, so the host compiles
//! the verified file as it is.
//!
//! # Agreement with `wasmsign2` (WebAssembly tool-conventions signatures)
//!
//! The `signature` section, the hashing, the signed message, the key-id
//! derivation and the Ed25519 signatures are the ones `wasmsign2` 0.2
//! implements, and `wasmsign2` accepts the component header as well as the
//! core-module one. So:
//! - `wasmsign2 verify -K <key> -i module.wasm` accepts a module we sign, given
//!   the public key in its raw format ([`wasmsign2_public_key_bytes`]).
//! - A file produced by `wasmsign2 sign -k <secret> -K <public>` from the output
//!   of [`embed_manifest`] verifies with [`verify()`], and `wasmsign2 sign` can
//!   add a second signature to a file we signed (it joins the same set).
//!
//! `tests/interop.rs` checks each of these, and that both sides refuse a
//! tampered file and derive the same key ids, against the `wasmsign2` library
//! crate (0.2.8, the code the CLI runs for `keygen`, `sign` and `verify`).
//!
//! Where outpost is stricter than `wasmsign2` (files `wasmsign2` accepts that
//! outpost refuses):
//! - core modules (header `00 61 73 6d 01 00 00 00`): outpost runs components only;
//! - signatures without a key id (`wasmsign2 sign` without `-K`), key ids of
//!   another length, or unknown algorithm ids (which `wasmsign2` skips silently);
//! - partial signatures: `signature_delimiter` sections (`wasmsign2 split`) and
//!   sets with more than one hash; outpost always signs the whole content;
//! - any signature that fails, or whose key is unknown, revoked, expired or a
//!   refused development key: outpost refuses the module, where `wasmsign2`
//!   accepts it if any signature verifies with the key it was given;
//! - non-minimal LEB128 numbers and trailing bytes inside the signature data;
//! - non-canonical Ed25519 signatures and weak keys (`verify_strict`);
//! - detached signatures: not supported; the signature is always embedded.
//!
//! There is one place where the two implementations could *compute*
//! differently: `wasmsign2 sign` hashes sections re-encoded with minimal LEB128
//! sizes, while its `verify` (and outpost) hash the raw bytes. For minimally
//! encoded files they are equal; outpost refuses non-minimal section sizes and
//! custom-section name lengths, so the difference cannot arise for a file
//! outpost accepts.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod format;
mod hex;
pub mod inspect;
pub mod keys;
pub mod manifest;
pub mod sign;
pub mod support;
pub mod trust;
pub mod verify;

pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use inspect::{
    Capability, CapabilityDiff, LimitChange, UnverifiedInspection, capability_diff,
    capability_digest, diff_text_digest, inspect_unverified,
};
pub use keys::{
    KeyError, KeyId, generate_signing_key, key_id, load_public_key, load_signing_key,
    public_key_from_hex, public_key_from_wasmsign2, public_key_to_hex, save_public_key,
    save_signing_key, wasmsign2_public_key_bytes,
};
pub use manifest::{
    Capabilities, EndpointPattern, HostError, HostPattern, Limits, Manifest, ManifestError,
    Permission, RequestHost, World,
};
pub use sign::{SignError, embed_manifest, sign};
pub use support::{
    CredentialClaims, CredentialError, VerifiedCredential, issue_credential, sign_challenge,
    verify_credential,
};
pub use trust::{TrustStore, TrustStoreError, TrustedKey};
pub use verify::{Expectation, Signer, VerifiedModule, VerifyError, verify};
