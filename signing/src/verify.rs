//! Verification of signed modules, and the [`VerifiedModule`] proof type.

use crate::format::{
    self, FormatError, MANIFEST_SECTION_NAME, MAX_MANIFEST_BYTES, RawSection, RawSignedHashes,
    SIGNATURE_DELIMITER_SECTION_NAME, SIGNATURE_SECTION_NAME,
};
use crate::keys::KeyId;
use crate::manifest::{Manifest, ManifestError};
use crate::trust::TrustStore;
use ed25519_dalek::Signature;
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::SystemTime;

/// Why a signed module was refused. Each check has its own variant; messages
/// name what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The file is not a well-formed component (header, section framing).
    #[error("signed module is malformed at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset of the problem.
        offset: usize,
        /// What is wrong there.
        reason: String,
    },
    /// The file has no `signature` section at all.
    #[error("module is not signed: it has no `signature` custom section")]
    Unsigned,
    /// A `signature` section exists but is not the first section.
    #[error("`signature` section is section #{index}; it must be the first section")]
    SignatureNotFirst {
        /// Zero-based index of the section.
        index: usize,
    },
    /// More than one `signature` section.
    #[error("`signature` section appears again as section #{index}; exactly one is allowed")]
    DuplicateSignatureSection {
        /// Zero-based index of the second one.
        index: usize,
    },
    /// A wasmsign2 `signature_delimiter` section: partial signatures are refused.
    #[error("`signature_delimiter` section #{index} found: partially signed modules are refused")]
    PartialSignature {
        /// Zero-based index of the delimiter.
        index: usize,
    },
    /// The `signature` section payload is not in the supported format.
    #[error("`signature` section is malformed at byte {offset}: {reason}")]
    MalformedSignatureSection {
        /// Byte offset of the problem.
        offset: usize,
        /// What is wrong there.
        reason: String,
    },
    /// No `outpost-manifest` section.
    #[error("module has no `outpost-manifest` section")]
    MissingManifest,
    /// More than one `outpost-manifest` section.
    #[error("module has {count} `outpost-manifest` sections; exactly one is allowed")]
    DuplicateManifest {
        /// How many there are.
        count: usize,
    },
    /// The manifest section is not directly after the signature section.
    #[error(
        "`outpost-manifest` section is section #{index}; it must be section #1, right after `signature`"
    )]
    ManifestMisplaced {
        /// Zero-based index of the manifest section.
        index: usize,
    },
    /// The manifest section is larger than accepted.
    #[error("`outpost-manifest` section is {len} bytes; at most {max} are accepted")]
    ManifestTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The signed hash does not match the file's content.
    #[error(
        "module content does not match its signed sha-256 hash: the file was changed after signing"
    )]
    DigestMismatch,
    /// A signature names a key the trust store does not hold.
    #[error("module is signed by unknown key {key_id}")]
    UnknownKey {
        /// The key id in the signature.
        key_id: KeyId,
    },
    /// A signature's key is on the revocation list.
    #[error("module is signed by revoked key {key_id}{}", name_suffix(.name))]
    RevokedKey {
        /// The key id.
        key_id: KeyId,
        /// The trust store's name for it, if listed.
        name: Option<String>,
    },
    /// A signature's key is a development key and the store does not allow those.
    #[error(
        "module is signed by development key {name:?} ({key_id}) and allow-development-key is false"
    )]
    DevelopmentKeyRefused {
        /// The key id.
        key_id: KeyId,
        /// The trust store's name for it.
        name: String,
    },
    /// A signature's key is not valid yet at `now`.
    #[error("signing key {name:?} ({key_id}) is not valid before {}", humantime::format_rfc3339_seconds(*.not_before))]
    KeyNotYetValid {
        /// The key id.
        key_id: KeyId,
        /// The trust store's name for it.
        name: String,
        /// Start of its validity window.
        not_before: SystemTime,
    },
    /// A signature's key expired before `now`.
    #[error("signing key {name:?} ({key_id}) expired at {}", humantime::format_rfc3339_seconds(*.not_after))]
    KeyExpired {
        /// The key id.
        key_id: KeyId,
        /// The trust store's name for it.
        name: String,
        /// End of its validity window.
        not_after: SystemTime,
    },
    /// A signature does not verify (strict Ed25519: canonical `S`, no weak keys).
    #[error("signature by key {name:?} ({key_id}) is not valid")]
    BadSignature {
        /// The key id.
        key_id: KeyId,
        /// The trust store's name for it.
        name: String,
    },
    /// The manifest does not parse or validate (unknown fields included).
    #[error("module manifest is refused: {0}")]
    Manifest(#[source] ManifestError),
    /// The manifest bytes are not the canonical JSON of the manifest they encode.
    #[error("module manifest is not in canonical json form")]
    NonCanonicalManifest,
    /// The manifest's name is not the name the operator installed.
    #[error("module manifest names {found:?} but it is being installed as {expected:?}")]
    NameMismatch {
        /// The name the operator installed.
        expected: String,
        /// The name in the manifest.
        found: String,
    },
    /// The version is lower than one installed before (downgrade).
    #[error("module {name:?} version {} is older than installed version {}", semver(*.found), semver(*.installed))]
    Downgrade {
        /// Module name.
        name: String,
        /// Version in the manifest.
        found: (u64, u64, u64),
        /// Highest version installed before.
        installed: (u64, u64, u64),
    },
    /// Fewer distinct trusted signers than the module's threshold.
    #[error("module {name:?} needs {required} distinct trusted signers but has {found}")]
    ThresholdNotMet {
        /// Module name.
        name: String,
        /// Signers required by the trust store.
        required: u32,
        /// Distinct valid signers found.
        found: u32,
    },
}

fn name_suffix(name: &Option<String>) -> String {
    name.as_ref()
        .map(|n| format!(" ({n:?})"))
        .unwrap_or_default()
}

fn semver(v: (u64, u64, u64)) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

impl From<FormatError> for VerifyError {
    fn from(e: FormatError) -> VerifyError {
        VerifyError::Malformed {
            offset: e.offset,
            reason: e.reason,
        }
    }
}

/// What the operator expects of the module being verified.
#[derive(Clone, Copy, Debug)]
pub struct Expectation<'a> {
    /// The name the operator installs the module under; the manifest must carry it.
    pub name: &'a str,
    /// The highest version ever installed under that name, if any; the module's
    /// version must not be lower (equal is accepted: a reinstall).
    pub highest_installed: Option<(u64, u64, u64)>,
    /// The current time, for key validity windows.
    pub now: SystemTime,
}

/// A trusted signer of a verified module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    /// The key id.
    pub key_id: KeyId,
    /// The trust store's name for the key.
    pub name: String,
    /// Whether it is a development key (only possible if the store allows them).
    pub development: bool,
}

/// A module whose signatures, manifest, name and version have been checked.
///
/// Only [`verify()`] constructs it (private fields, no constructor, not `Clone`).
/// The host compiles [`VerifiedModule::bytes`]: the exact bytes that were
/// verified, signature and manifest custom sections included (the Wasm
/// compiler ignores custom sections).
pub struct VerifiedModule {
    bytes: Vec<u8>,
    manifest: Manifest,
    signers: Vec<Signer>,
    file_sha256: [u8; 32],
    signed_sha256: [u8; 32],
}

impl VerifiedModule {
    /// The verified component, byte for byte as signed (what the host compiles).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The distinct trusted signers, in the order they appear in the file.
    pub fn signers(&self) -> &[Signer] {
        &self.signers
    }

    /// SHA-256 of the whole signed file (the compile-cache key).
    pub fn file_sha256(&self) -> [u8; 32] {
        self.file_sha256
    }

    /// [`VerifiedModule::file_sha256`] as 64 lowercase hex digits.
    pub fn file_sha256_hex(&self) -> String {
        crate::hex::encode(&self.file_sha256)
    }

    /// The SHA-256 the signatures cover (everything after the `signature` section).
    pub fn signed_sha256(&self) -> [u8; 32] {
        self.signed_sha256
    }
}

impl fmt::Debug for VerifiedModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedModule")
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version)
            .field("bytes", &self.bytes.len())
            .field("signers", &self.signers)
            .field("file_sha256", &self.file_sha256_hex())
            .finish()
    }
}

/// The structure of a signed file, before any cryptography.
pub(crate) struct Parsed<'a> {
    pub sets: Vec<RawSignedHashes>,
    pub manifest: &'a [u8],
    /// Offset where the signed content starts (end of the `signature` section).
    pub content_start: usize,
}

/// Check the container structure: header, one `signature` section first, one
/// `outpost-manifest` section second, no partial-signature delimiters.
pub(crate) fn parse_signed(bytes: &[u8]) -> Result<Parsed<'_>, VerifyError> {
    let sections = format::sections(bytes)?;
    let named = |name: &'static str| {
        sections
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.name == Some(name))
            .map(|(i, _)| i)
    };
    let sig_indices: Vec<usize> = named(SIGNATURE_SECTION_NAME).collect();
    match sig_indices.as_slice() {
        [] => return Err(VerifyError::Unsigned),
        [0] => {}
        [0, second, ..] => return Err(VerifyError::DuplicateSignatureSection { index: *second }),
        [first, ..] => return Err(VerifyError::SignatureNotFirst { index: *first }),
    }
    if let Some(index) = named(SIGNATURE_DELIMITER_SECTION_NAME).next() {
        return Err(VerifyError::PartialSignature { index });
    }
    let manifest_indices: Vec<usize> = named(MANIFEST_SECTION_NAME).collect();
    let manifest: &RawSection<'_> = match manifest_indices.as_slice() {
        [] => return Err(VerifyError::MissingManifest),
        [1] => &sections[1],
        [index] => return Err(VerifyError::ManifestMisplaced { index: *index }),
        more => return Err(VerifyError::DuplicateManifest { count: more.len() }),
    };
    if manifest.payload.len() > MAX_MANIFEST_BYTES {
        return Err(VerifyError::ManifestTooLarge {
            len: manifest.payload.len(),
            max: MAX_MANIFEST_BYTES,
        });
    }
    let sig = &sections[0];
    let sets = format::parse_signature_payload(sig.payload, sig.payload_offset).map_err(|e| {
        VerifyError::MalformedSignatureSection {
            offset: e.offset,
            reason: e.reason,
        }
    })?;
    Ok(Parsed {
        sets,
        manifest: manifest.payload,
        content_start: sig.range.end,
    })
}

/// Parse the manifest section strictly: valid, and byte-identical to its
/// canonical JSON, so the bytes a reviewer reads are the manifest enforced.
pub(crate) fn parse_manifest(payload: &[u8]) -> Result<Manifest, VerifyError> {
    let manifest = Manifest::from_json(payload).map_err(VerifyError::Manifest)?;
    if manifest.to_canonical_json() != payload {
        return Err(VerifyError::NonCanonicalManifest);
    }
    Ok(manifest)
}

/// Files at least this large hash the signed content and the whole file on two
/// threads (scoped; joined before `verify` returns).
pub const PARALLEL_HASH_MIN_BYTES: usize = 1024 * 1024;

/// SHA-256 of `bytes[content_start..]` (what the signatures cover) and of the
/// whole file (the cache key). Large files hash both at once on two threads;
/// if a thread cannot be spawned, both are hashed on the caller's thread.
fn hash_content_and_file(bytes: &[u8], content_start: usize) -> ([u8; 32], [u8; 32]) {
    let content = &bytes[content_start..];
    if bytes.len() >= PARALLEL_HASH_MIN_BYTES {
        let parallel = std::thread::scope(|scope| {
            let file = std::thread::Builder::new()
                .name("outpost-verify-sha256".to_string())
                .spawn_scoped(scope, || <[u8; 32]>::from(Sha256::digest(bytes)))
                .ok()?;
            let content: [u8; 32] = Sha256::digest(content).into();
            Some((content, file.join().ok()?))
        });
        if let Some(hashes) = parallel {
            return hashes;
        }
    }
    (Sha256::digest(content).into(), Sha256::digest(bytes).into())
}

/// Verify a signed module against the trust store and the operator's
/// expectation. Takes the bytes by value: the [`VerifiedModule`] owns exactly
/// the bytes that were checked, so nothing can change them between
/// verification and compilation.
///
/// Checks, in order (the first failure is returned):
/// 1. structure: component header, strict section framing, exactly one
///    `signature` section and it is first, no `signature_delimiter`, exactly
///    one `outpost-manifest` section and it is second, signature payload in
///    the supported format (version 1, SHA-256, Ed25519, 12-byte key ids);
/// 2. every signed hash equals SHA-256 of everything after the `signature`
///    section (so any appended, removed or changed byte is refused);
/// 3. every signature: key not revoked, known to the trust store, not a
///    development key (unless allowed), inside its validity window at `now`,
///    and `verify_strict` succeeds. One bad signature refuses the module;
/// 4. only then the manifest JSON is parsed: valid, no unknown fields, in
///    canonical form; its name equals `expect.name`; its version is not lower
///    than `expect.highest_installed`;
/// 5. the number of distinct signers reaches the trust store's threshold for
///    the module name.
pub fn verify(
    bytes: Vec<u8>,
    trust: &TrustStore,
    expect: &Expectation<'_>,
) -> Result<VerifiedModule, VerifyError> {
    let parsed = parse_signed(&bytes)?;
    let (signed_sha256, file_sha256) = hash_content_and_file(&bytes, parsed.content_start);
    let mut signers: Vec<Signer> = Vec::new();
    let message = format::signed_message(&signed_sha256);
    for set in &parsed.sets {
        if set.hashes.iter().any(|h| *h != signed_sha256) {
            return Err(VerifyError::DigestMismatch);
        }
        for sig in &set.signatures {
            let key_id = KeyId::from_bytes(sig.key_id);
            let listed = trust.key(&key_id);
            if trust.is_revoked(&key_id) {
                return Err(VerifyError::RevokedKey {
                    key_id,
                    name: listed.map(|k| k.name().to_string()),
                });
            }
            let key = listed.ok_or(VerifyError::UnknownKey { key_id })?;
            let name = || key.name().to_string();
            if key.is_development() && !trust.allow_development_key() {
                return Err(VerifyError::DevelopmentKeyRefused {
                    key_id,
                    name: name(),
                });
            }
            if let Some(not_before) = key.not_before()
                && expect.now < not_before
            {
                return Err(VerifyError::KeyNotYetValid {
                    key_id,
                    name: name(),
                    not_before,
                });
            }
            if let Some(not_after) = key.not_after()
                && expect.now > not_after
            {
                return Err(VerifyError::KeyExpired {
                    key_id,
                    name: name(),
                    not_after,
                });
            }
            let signature = Signature::from_bytes(&sig.signature);
            key.public_key()
                .verify_strict(&message, &signature)
                .map_err(|_| VerifyError::BadSignature {
                    key_id,
                    name: name(),
                })?;
            if !signers.iter().any(|s| s.key_id == key_id) {
                signers.push(Signer {
                    key_id,
                    name: name(),
                    development: key.is_development(),
                });
            }
        }
    }
    let manifest = parse_manifest(parsed.manifest)?;
    if manifest.name != expect.name {
        return Err(VerifyError::NameMismatch {
            expected: expect.name.to_string(),
            found: manifest.name,
        });
    }
    if let Some(installed) = expect.highest_installed
        && manifest.semver() < installed
    {
        return Err(VerifyError::Downgrade {
            found: manifest.semver(),
            name: manifest.name,
            installed,
        });
    }
    let required = trust.threshold(&manifest.name);
    let found = u32::try_from(signers.len()).unwrap_or(u32::MAX);
    if found < required {
        return Err(VerifyError::ThresholdNotMet {
            name: manifest.name,
            required,
            found,
        });
    }
    Ok(VerifiedModule {
        bytes,
        manifest,
        signers,
        file_sha256,
        signed_sha256,
    })
}
