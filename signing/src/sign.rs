//! Producing signed modules.

use crate::format::{
    self, COMPONENT_HEADER, MANIFEST_SECTION_NAME, RawSignature, RawSignedHashes,
    SIGNATURE_DELIMITER_SECTION_NAME, SIGNATURE_SECTION_NAME,
};
use crate::keys::KeyId;
use crate::manifest::{Manifest, ManifestError};
use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest, Sha256};

/// Why a component could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The input is not a well-formed component.
    #[error("component to sign is malformed at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset of the problem.
        offset: usize,
        /// What is wrong there.
        reason: String,
    },
    /// The input already carries a `signature` (or `signature_delimiter`) section.
    #[error("component already has a `{0}` section; sign the unsigned component")]
    AlreadySigned(&'static str),
    /// The input already carries an `outpost-manifest` section.
    #[error("component already has an `outpost-manifest` section")]
    AlreadyHasManifest,
    /// The manifest does not validate.
    #[error("manifest is refused: {0}")]
    Manifest(#[source] ManifestError),
    /// No signing key was given.
    #[error("no signing key given")]
    NoSigners,
    /// The same key was given twice.
    #[error("signing key {0} is given twice")]
    DuplicateSigner(KeyId),
}

/// Insert `manifest` as the `outpost-manifest` custom section right after the
/// header of an unsigned component. The result is what an external signer
/// (for example `wasmsign2 sign`, which puts its `signature` section first)
/// must sign to produce a valid outpost module.
pub fn embed_manifest(component: &[u8], manifest: &Manifest) -> Result<Vec<u8>, SignError> {
    let sections = format::sections(component).map_err(|e| SignError::Malformed {
        offset: e.offset,
        reason: e.reason,
    })?;
    for s in &sections {
        match s.name {
            Some(SIGNATURE_SECTION_NAME) => {
                return Err(SignError::AlreadySigned(SIGNATURE_SECTION_NAME));
            }
            Some(SIGNATURE_DELIMITER_SECTION_NAME) => {
                return Err(SignError::AlreadySigned(SIGNATURE_DELIMITER_SECTION_NAME));
            }
            Some(MANIFEST_SECTION_NAME) => return Err(SignError::AlreadyHasManifest),
            _ => {}
        }
    }
    manifest.validate().map_err(SignError::Manifest)?;
    let manifest_section =
        format::custom_section(MANIFEST_SECTION_NAME, &manifest.to_canonical_json());
    let mut out = Vec::with_capacity(component.len() + manifest_section.len());
    out.extend_from_slice(&COMPONENT_HEADER);
    out.extend_from_slice(&manifest_section);
    out.extend_from_slice(&component[COMPONENT_HEADER.len()..]);
    Ok(out)
}

/// Sign an unsigned component: embed `manifest` (see [`embed_manifest`]) and
/// prepend one `signature` section holding one signature per key, all over the
/// same SHA-256 hash. Refuses input that already has a `signature`,
/// `signature_delimiter` or `outpost-manifest` section.
pub fn sign(
    component: &[u8],
    manifest: &Manifest,
    signers: &[&SigningKey],
) -> Result<Vec<u8>, SignError> {
    if signers.is_empty() {
        return Err(SignError::NoSigners);
    }
    let mut ids: Vec<KeyId> = Vec::with_capacity(signers.len());
    for key in signers {
        let id = KeyId::of(&key.verifying_key());
        if ids.contains(&id) {
            return Err(SignError::DuplicateSigner(id));
        }
        ids.push(id);
    }
    let embedded = embed_manifest(component, manifest)?;
    let content = &embedded[COMPONENT_HEADER.len()..];
    let hash: [u8; 32] = Sha256::digest(content).into();
    let message = format::signed_message(&hash);
    let signatures = signers
        .iter()
        .zip(&ids)
        .map(|(key, id)| RawSignature {
            key_id: *id.as_bytes(),
            signature: key.sign(&message).to_bytes(),
            offset: 0,
        })
        .collect();
    let payload = format::encode_signature_payload(&[RawSignedHashes {
        hashes: vec![hash],
        signatures,
    }]);
    let signature_section = format::custom_section(SIGNATURE_SECTION_NAME, &payload);
    let mut out = Vec::with_capacity(embedded.len() + signature_section.len());
    out.extend_from_slice(&COMPONENT_HEADER);
    out.extend_from_slice(&signature_section);
    out.extend_from_slice(content);
    Ok(out)
}
