//! DPAPI (Windows): secrets sealed to this machine with `CryptProtectData`
//! in machine scope (`CRYPTPROTECT_LOCAL_MACHINE`). A blob sealed here opens
//! only on this Windows installation (any account on it, so the file's ACL
//! still decides who may read it); copied to another machine, or altered,
//! it does not open and [`unprotect`] says so. Issue #17: the building block
//! for the device key and the compiled-cache key at rest, used by the
//! device key (`uplink/identity.rs`); not yet the cache key
//! (ARCHITECTURE.md, "Not built yet").
#![allow(unsafe_code)]

use windows_sys::Win32::Foundation::{GetLastError, LocalFree};
use windows_sys::Win32::Security::Cryptography::{
    CRYPT_INTEGER_BLOB, CRYPTPROTECT_LOCAL_MACHINE, CRYPTPROTECT_UI_FORBIDDEN, CryptProtectData,
    CryptUnprotectData,
};
use zeroize::Zeroizing;

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum DpapiError {
    /// The secret is larger than DPAPI takes (4 GiB).
    #[error("a secret of {0} bytes is too large for DPAPI")]
    TooLarge(usize),
    /// `CryptProtectData` failed.
    #[error("DPAPI could not seal the secret (Windows error {0})")]
    Protect(u32),
    /// `CryptUnprotectData` failed: sealed on another machine, or altered.
    #[error(
        "DPAPI could not open the secret (Windows error {0}): it was sealed on another machine or altered; a key file cannot be copied between PCs, enrol this PC again"
    )]
    Unprotect(u32),
}

fn blob(data: &[u8]) -> Result<CRYPT_INTEGER_BLOB, DpapiError> {
    Ok(CRYPT_INTEGER_BLOB {
        cbData: u32::try_from(data.len()).map_err(|_| DpapiError::TooLarge(data.len()))?,
        pbData: data.as_ptr().cast_mut(),
    })
}

/// Copy DPAPI's output out and free it (wiping it first when it held the
/// secret).
fn take(out: CRYPT_INTEGER_BLOB, secret: bool) -> Vec<u8> {
    // SAFETY: on success DPAPI set `pbData` to a LocalAlloc'ed buffer of
    // `cbData` bytes that we own and free exactly once here.
    unsafe {
        let bytes = std::slice::from_raw_parts_mut(out.pbData, out.cbData as usize);
        let copy = bytes.to_vec();
        if secret {
            zeroize::Zeroize::zeroize(bytes);
        }
        LocalFree(out.pbData.cast());
        copy
    }
}

/// Seal `plain` to this machine.
pub fn protect(plain: &[u8]) -> Result<Vec<u8>, DpapiError> {
    let input = blob(plain)?;
    let mut out = CRYPT_INTEGER_BLOB {
        cbData: 0,
        pbData: std::ptr::null_mut(),
    };
    // SAFETY: `input` points at `plain`, alive for the call; DPAPI only
    // reads it. The optional pointers are null, as the API allows.
    let ok = unsafe {
        CryptProtectData(
            &input,
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            CRYPTPROTECT_LOCAL_MACHINE | CRYPTPROTECT_UI_FORBIDDEN,
            &mut out,
        )
    };
    if ok == 0 {
        // SAFETY: no preconditions.
        return Err(DpapiError::Protect(unsafe { GetLastError() }));
    }
    Ok(take(out, false))
}

/// Open a blob [`protect`] sealed on this machine.
pub fn unprotect(sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, DpapiError> {
    let input = blob(sealed)?;
    let mut out = CRYPT_INTEGER_BLOB {
        cbData: 0,
        pbData: std::ptr::null_mut(),
    };
    // SAFETY: as in `protect`; the description pointer is null (not asked for).
    let ok = unsafe {
        CryptUnprotectData(
            &input,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            CRYPTPROTECT_UI_FORBIDDEN,
            &mut out,
        )
    };
    if ok == 0 {
        // SAFETY: no preconditions.
        return Err(DpapiError::Unprotect(unsafe { GetLastError() }));
    }
    Ok(Zeroizing::new(take(out, true)))
}

/// The text form of a sealed blob in a JSON file: `dpapi:` and lowercase hex.
pub fn seal_to_text(plain: &[u8]) -> Result<String, DpapiError> {
    let sealed = protect(plain)?;
    let mut text = String::with_capacity(6 + 2 * sealed.len());
    text.push_str(TEXT_PREFIX);
    for b in sealed {
        text.push_str(&format!("{b:02x}"));
    }
    Ok(text)
}

/// The prefix of [`seal_to_text`]'s output.
pub const TEXT_PREFIX: &str = "dpapi:";

/// Open [`seal_to_text`]'s output; `None` if `text` is not in that form.
pub fn open_text(text: &str) -> Option<Result<Zeroizing<Vec<u8>>, DpapiError>> {
    let hex = text.strip_prefix(TEXT_PREFIX)?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    Some(unprotect(&bytes?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_here_and_not_once_altered() {
        let secret = b"device key 0123456789abcdef0123456789abcdef".as_slice();
        let sealed = protect(secret).unwrap();
        assert!(
            !sealed.windows(secret.len()).any(|w| w == secret),
            "the sealed blob holds the secret in clear"
        );
        assert_eq!(unprotect(&sealed).unwrap().as_slice(), secret);
        // Every byte flipped in turn past the header: none opens to the
        // secret (DPAPI's MAC covers the ciphertext).
        let mut refused = 0;
        for i in (sealed.len() / 2)..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            match unprotect(&bad) {
                Err(DpapiError::Unprotect(_)) => refused += 1,
                Err(e) => panic!("byte {i}: {e}"),
                Ok(p) => assert_ne!(p.as_slice(), secret, "byte {i} flipped still opened"),
            }
        }
        assert!(refused > 0);
        let text = seal_to_text(secret).unwrap();
        assert_eq!(open_text(&text).unwrap().unwrap().as_slice(), secret);
        assert!(open_text("0123").is_none() && open_text("dpapi:zz").is_none());
        let err = unprotect(b"not a DPAPI blob").unwrap_err().to_string();
        assert!(err.contains("another machine"), "{err}");
    }
}
