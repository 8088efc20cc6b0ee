//! Support-staff credentials (#16): the vendor's support authority (an
//! Ed25519 key) signs the claims of one engineer — who they are, the regions
//! they may serve, their certifications, a validity window and the
//! engineer's own Ed25519 public key. A device trusts authority keys from its
//! config; at each connection attempt the engineer proves possession of the
//! key in the credential by signing a per-attempt challenge (the session id,
//! a nonce from the device and the end-to-end channel's binding, so the
//! proof is valid on one channel only and a relay cannot replay it on
//! another).
//!
//! Wire format of a signed credential (all integers big-endian):
//! ```text
//! claims    = DOMAIN (29 bytes, "outpost-support-credential-v1")
//!             authority public key (32)
//!             engineer public key (32)
//!             not-before (i64, Unix seconds) expires (i64, Unix seconds)
//!             str engineer-id, str display-name,
//!             u16 n, n × str region, u16 m, m × str certification
//! str       = u16 length, UTF-8 bytes
//! credential = claims ‖ Ed25519 signature of the authority over claims (64)
//! ```
//! The encoding is canonical: one set of claims has exactly one encoding, and
//! parsing refuses trailing bytes, over-long fields and non-UTF-8 text.
//!
//! A challenge signature is Ed25519 over
//! `"outpost-support-challenge-v2" ‖ u16 len ‖ session id ‖ nonce (32) ‖
//! channel binding (32)` ([`challenge_message`]); the channel binding is the
//! Noise handshake hash of the end-to-end channel (`outpost-support-proto`).
//!
//! [`Permission`] is defined here, the lowest crate that needs it, and
//! re-exported by the support channel and the host.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// Domain separator at the start of the signed claims.
pub const CREDENTIAL_DOMAIN: &[u8] = b"outpost-support-credential-v1";
/// Domain separator at the start of a signed challenge.
pub const CHALLENGE_DOMAIN: &[u8] = b"outpost-support-challenge-v2";
/// Length of the channel binding (the Noise handshake hash), in bytes.
pub const CHANNEL_BINDING_BYTES: usize = 32;
/// Longest text field (engineer id, name, region, certification), in bytes.
pub const MAX_FIELD_BYTES: usize = 256;
/// Most regions or certifications in one credential.
pub const MAX_LIST_ITEMS: usize = 32;
/// Largest signed credential accepted, in bytes.
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;
/// Length of the per-attempt nonce, in bytes.
pub const NONCE_BYTES: usize = 32;

pub use crate::manifest::Permission;

/// What a credential says about one engineer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialClaims {
    /// Stable engineer id (e.g. `eng-0042`).
    pub engineer_id: String,
    /// Name shown to the person at the PC.
    pub display_name: String,
    /// Regions the engineer may serve (e.g. `eu`).
    pub regions: Vec<String>,
    /// Certifications (e.g. `privacy-training`).
    pub certifications: Vec<String>,
    /// Valid from (Unix seconds).
    pub not_before: i64,
    /// Valid until (Unix seconds, exclusive).
    pub expires: i64,
    /// The engineer's own key: challenges are signed with it.
    pub engineer_key: VerifyingKey,
}

/// Why a credential or a proof was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    /// The bytes are not a credential.
    #[error("malformed support credential: {0}")]
    Malformed(String),
    /// Signed by a key the device does not trust.
    #[error("support credential signed by an authority this device does not trust ({0})")]
    UntrustedAuthority(String),
    /// The authority's signature does not verify.
    #[error("support credential signature does not verify")]
    BadSignature,
    /// Not valid yet.
    #[error("support credential is not valid before {not_before} (Unix seconds; now {now})")]
    NotYetValid {
        /// Valid from.
        not_before: i64,
        /// The device's clock.
        now: i64,
    },
    /// Expired.
    #[error("support credential expired at {expires} (Unix seconds; now {now})")]
    Expired {
        /// Expiry.
        expires: i64,
        /// The device's clock.
        now: i64,
    },
    /// The challenge signature is not the engineer key's.
    #[error("the challenge was not signed with the credential's engineer key")]
    BadProof,
    /// Claims that cannot be encoded (field too long, empty id...).
    #[error("invalid support credential claims: {0}")]
    InvalidClaims(String),
}

/// A credential whose authority signature verified against a trusted key
/// and whose validity window holds at the time given. Only
/// [`verify_credential`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedCredential {
    claims: CredentialClaims,
    authority: VerifyingKey,
}

impl VerifiedCredential {
    /// The verified claims.
    pub fn claims(&self) -> &CredentialClaims {
        &self.claims
    }

    /// The authority that signed them.
    pub fn authority(&self) -> &VerifyingKey {
        &self.authority
    }

    /// Check the proof of possession: `signature` is the engineer key's
    /// signature of [`challenge_message`]`(session_id, nonce,
    /// channel_binding)`.
    pub fn verify_proof(
        &self,
        session_id: &str,
        nonce: &[u8; NONCE_BYTES],
        channel_binding: &[u8; CHANNEL_BINDING_BYTES],
        signature: &[u8],
    ) -> Result<(), CredentialError> {
        let sig = Signature::from_slice(signature).map_err(|_| CredentialError::BadProof)?;
        let msg = challenge_message(session_id, nonce, channel_binding);
        self.claims
            .engineer_key
            .verify_strict(&msg, &sig)
            .map_err(|_| CredentialError::BadProof)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str, what: &str) -> Result<(), CredentialError> {
    if s.len() > MAX_FIELD_BYTES {
        return Err(CredentialError::InvalidClaims(format!(
            "{what} is longer than {MAX_FIELD_BYTES} bytes"
        )));
    }
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_list(out: &mut Vec<u8>, items: &[String], what: &str) -> Result<(), CredentialError> {
    if items.len() > MAX_LIST_ITEMS {
        return Err(CredentialError::InvalidClaims(format!(
            "more than {MAX_LIST_ITEMS} {what}s"
        )));
    }
    out.extend_from_slice(&(items.len() as u16).to_be_bytes());
    for i in items {
        put_str(out, i, what)?;
    }
    Ok(())
}

/// The canonical bytes the authority signs.
pub fn canonical_claims(
    claims: &CredentialClaims,
    authority: &VerifyingKey,
) -> Result<Vec<u8>, CredentialError> {
    if claims.engineer_id.trim().is_empty() {
        return Err(CredentialError::InvalidClaims(
            "the engineer id is empty".into(),
        ));
    }
    if claims.expires <= claims.not_before {
        return Err(CredentialError::InvalidClaims(
            "expires is not after not-before".into(),
        ));
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(CREDENTIAL_DOMAIN);
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(claims.engineer_key.as_bytes());
    out.extend_from_slice(&claims.not_before.to_be_bytes());
    out.extend_from_slice(&claims.expires.to_be_bytes());
    put_str(&mut out, &claims.engineer_id, "engineer id")?;
    put_str(&mut out, &claims.display_name, "display name")?;
    put_list(&mut out, &claims.regions, "region")?;
    put_list(&mut out, &claims.certifications, "certification")?;
    if out.len() + 64 > MAX_CREDENTIAL_BYTES {
        return Err(CredentialError::InvalidClaims(format!(
            "the credential would exceed {MAX_CREDENTIAL_BYTES} bytes"
        )));
    }
    Ok(out)
}

/// Issue a credential: the canonical claims signed by `authority`.
pub fn issue_credential(
    claims: &CredentialClaims,
    authority: &SigningKey,
) -> Result<Vec<u8>, CredentialError> {
    let mut bytes = canonical_claims(claims, &authority.verifying_key())?;
    let sig = authority.sign(&bytes);
    bytes.extend_from_slice(&sig.to_bytes());
    Ok(bytes)
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CredentialError> {
        if self.b.len() < n {
            return Err(CredentialError::Malformed(format!("truncated at {what}")));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CredentialError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u16(&mut self, what: &str) -> Result<usize, CredentialError> {
        Ok(u16::from_be_bytes(self.arr::<2>(what)?) as usize)
    }
    fn str(&mut self, what: &str) -> Result<String, CredentialError> {
        let n = self.u16(what)?;
        if n > MAX_FIELD_BYTES {
            return Err(CredentialError::Malformed(format!(
                "{what} is longer than {MAX_FIELD_BYTES} bytes"
            )));
        }
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec())
            .map_err(|_| CredentialError::Malformed(format!("{what} is not UTF-8")))
    }
    fn list(&mut self, what: &str) -> Result<Vec<String>, CredentialError> {
        let n = self.u16(what)?;
        if n > MAX_LIST_ITEMS {
            return Err(CredentialError::Malformed(format!(
                "more than {MAX_LIST_ITEMS} {what}s"
            )));
        }
        (0..n).map(|_| self.str(what)).collect()
    }
}

/// Parse a signed credential without verifying it: the claims, the
/// authority key it names, the signed bytes and the signature.
fn parse(
    bytes: &[u8],
) -> Result<(CredentialClaims, VerifyingKey, &[u8], Signature), CredentialError> {
    if bytes.len() > MAX_CREDENTIAL_BYTES {
        return Err(CredentialError::Malformed(format!(
            "larger than {MAX_CREDENTIAL_BYTES} bytes"
        )));
    }
    if bytes.len() < CREDENTIAL_DOMAIN.len() + 64 {
        return Err(CredentialError::Malformed("too short".into()));
    }
    let (signed, sig) = bytes.split_at(bytes.len() - 64);
    let mut r = Reader { b: signed };
    if r.take(CREDENTIAL_DOMAIN.len(), "domain")? != CREDENTIAL_DOMAIN {
        return Err(CredentialError::Malformed(
            "not an outpost support credential (domain tag)".into(),
        ));
    }
    let authority = VerifyingKey::from_bytes(&r.arr::<32>("authority key")?)
        .map_err(|_| CredentialError::Malformed("authority key is not a valid key".into()))?;
    let engineer_key = VerifyingKey::from_bytes(&r.arr::<32>("engineer key")?)
        .map_err(|_| CredentialError::Malformed("engineer key is not a valid key".into()))?;
    let not_before = i64::from_be_bytes(r.arr::<8>("not-before")?);
    let expires = i64::from_be_bytes(r.arr::<8>("expires")?);
    let engineer_id = r.str("engineer id")?;
    let display_name = r.str("display name")?;
    let regions = r.list("region")?;
    let certifications = r.list("certification")?;
    if !r.b.is_empty() {
        return Err(CredentialError::Malformed(
            "trailing bytes after the claims".into(),
        ));
    }
    let sig = Signature::from_slice(sig)
        .map_err(|_| CredentialError::Malformed("bad signature encoding".into()))?;
    Ok((
        CredentialClaims {
            engineer_id,
            display_name,
            regions,
            certifications,
            not_before,
            expires,
            engineer_key,
        },
        authority,
        signed,
        sig,
    ))
}

/// Verify a signed credential: well-formed and canonical, signed by one of
/// `trusted` (strict Ed25519), valid at `now` (Unix seconds).
pub fn verify_credential(
    bytes: &[u8],
    trusted: &[VerifyingKey],
    now: i64,
) -> Result<VerifiedCredential, CredentialError> {
    let (claims, authority, signed, sig) = parse(bytes)?;
    if !trusted.contains(&authority) {
        return Err(CredentialError::UntrustedAuthority(
            crate::keys::public_key_to_hex(&authority),
        ));
    }
    authority
        .verify_strict(signed, &sig)
        .map_err(|_| CredentialError::BadSignature)?;
    // Canonical: re-encoding gives the same bytes (refuses, e.g., empty ids).
    if canonical_claims(&claims, &authority)? != signed {
        return Err(CredentialError::Malformed("not canonical".into()));
    }
    if now < claims.not_before {
        return Err(CredentialError::NotYetValid {
            not_before: claims.not_before,
            now,
        });
    }
    if now >= claims.expires {
        return Err(CredentialError::Expired {
            expires: claims.expires,
            now,
        });
    }
    Ok(VerifiedCredential { claims, authority })
}

/// The bytes an engineer signs to prove possession of the credential's key
/// for one connection attempt on one end-to-end channel: the session id as
/// it travels on the channel, the PC's nonce and the channel binding (the
/// Noise handshake hash, which differs on every channel).
pub fn challenge_message(
    session_id: &str,
    nonce: &[u8; NONCE_BYTES],
    channel_binding: &[u8; CHANNEL_BINDING_BYTES],
) -> Vec<u8> {
    let id = session_id.as_bytes();
    let id = &id[..id.len().min(u16::MAX as usize)];
    let mut m = Vec::with_capacity(
        CHALLENGE_DOMAIN.len() + 2 + id.len() + NONCE_BYTES + CHANNEL_BINDING_BYTES,
    );
    m.extend_from_slice(CHALLENGE_DOMAIN);
    m.extend_from_slice(&(id.len() as u16).to_be_bytes());
    m.extend_from_slice(id);
    m.extend_from_slice(nonce);
    m.extend_from_slice(channel_binding);
    m
}

/// Sign a challenge with the engineer's key (the engineer client's side).
pub fn sign_challenge(
    engineer: &SigningKey,
    session_id: &str,
    nonce: &[u8; NONCE_BYTES],
    channel_binding: &[u8; CHANNEL_BINDING_BYTES],
) -> [u8; 64] {
    engineer
        .sign(&challenge_message(session_id, nonce, channel_binding))
        .to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    fn claims() -> CredentialClaims {
        CredentialClaims {
            engineer_id: "eng-0042".into(),
            display_name: "Ada Engineer".into(),
            regions: vec!["eu".into(), "ch".into()],
            certifications: vec!["privacy-training".into()],
            not_before: 1_000,
            expires: 2_000,
            engineer_key: key(2).verifying_key(),
        }
    }

    #[test]
    fn issued_credentials_verify_and_round_trip() {
        let auth = key(1);
        let bytes = issue_credential(&claims(), &auth).unwrap();
        let v = verify_credential(&bytes, &[auth.verifying_key()], 1_500).unwrap();
        assert_eq!(v.claims(), &claims());
        assert_eq!(v.authority(), &auth.verifying_key());
    }

    #[test]
    fn validity_window_and_authority_are_enforced() {
        let auth = key(1);
        let bytes = issue_credential(&claims(), &auth).unwrap();
        let t = [auth.verifying_key()];
        assert!(matches!(
            verify_credential(&bytes, &t, 999),
            Err(CredentialError::NotYetValid { .. })
        ));
        assert!(matches!(
            verify_credential(&bytes, &t, 2_000),
            Err(CredentialError::Expired { .. })
        ));
        assert!(matches!(
            verify_credential(&bytes, &[key(3).verifying_key()], 1_500),
            Err(CredentialError::UntrustedAuthority(_))
        ));
        // A trusted authority key named in claims signed by another key.
        let mut forged = canonical_claims(&claims(), &auth.verifying_key()).unwrap();
        let sig = key(3).sign(&forged);
        forged.extend_from_slice(&sig.to_bytes());
        assert_eq!(
            verify_credential(&forged, &t, 1_500).unwrap_err(),
            CredentialError::BadSignature
        );
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let auth = key(1);
        let bytes = issue_credential(&claims(), &auth).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                verify_credential(&b, &[auth.verifying_key()], 1_500).is_err(),
                "byte {i}"
            );
        }
        let mut longer = bytes.clone();
        longer.insert(bytes.len() - 64, 0);
        assert!(verify_credential(&longer, &[auth.verifying_key()], 1_500).is_err());
        assert!(verify_credential(&bytes[..10], &[auth.verifying_key()], 1_500).is_err());
        assert!(verify_credential(&[], &[auth.verifying_key()], 1_500).is_err());
    }

    #[test]
    fn claims_out_of_bounds_cannot_be_issued() {
        let mut c = claims();
        c.engineer_id = " ".into();
        assert!(issue_credential(&c, &key(1)).is_err());
        let mut c = claims();
        c.display_name = "x".repeat(MAX_FIELD_BYTES + 1);
        assert!(issue_credential(&c, &key(1)).is_err());
        let mut c = claims();
        c.regions = vec!["eu".into(); MAX_LIST_ITEMS + 1];
        assert!(issue_credential(&c, &key(1)).is_err());
        let mut c = claims();
        c.expires = c.not_before;
        assert!(issue_credential(&c, &key(1)).is_err());
    }

    #[test]
    fn proof_of_possession_binds_key_session_nonce_and_channel() {
        let auth = key(1);
        let bytes = issue_credential(&claims(), &auth).unwrap();
        let v = verify_credential(&bytes, &[auth.verifying_key()], 1_500).unwrap();
        let nonce = [7u8; NONCE_BYTES];
        let ch = [9u8; CHANNEL_BINDING_BYTES];
        let sig = sign_challenge(&key(2), "s1", &nonce, &ch);
        v.verify_proof("s1", &nonce, &ch, &sig).unwrap();
        assert_eq!(
            v.verify_proof("s2", &nonce, &ch, &sig),
            Err(CredentialError::BadProof)
        );
        assert_eq!(
            v.verify_proof("s1", &[8u8; NONCE_BYTES], &ch, &sig),
            Err(CredentialError::BadProof)
        );
        // The same proof on another channel (a relay replaying it).
        assert_eq!(
            v.verify_proof("s1", &nonce, &[10u8; CHANNEL_BINDING_BYTES], &sig),
            Err(CredentialError::BadProof)
        );
        let other = sign_challenge(&key(3), "s1", &nonce, &ch);
        assert_eq!(
            v.verify_proof("s1", &nonce, &ch, &other),
            Err(CredentialError::BadProof)
        );
        assert_eq!(
            v.verify_proof("s1", &nonce, &ch, &sig[..63]),
            Err(CredentialError::BadProof)
        );
    }

    #[test]
    fn permissions_have_one_name_each() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
            assert_eq!(p.as_str().parse::<Permission>(), Ok(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        assert!("View".parse::<Permission>().is_err());
        assert_eq!(Permission::parse("screen"), None);
    }
}
