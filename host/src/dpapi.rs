//! DPAPI (Windows): secrets sealed to this machine with `CryptProtectData`
//! in machine scope (`CRYPTPROTECT_LOCAL_MACHINE`), with this installation's
//! `MachineGuid` (`HKLM\SOFTWARE\Microsoft\Cryptography`) as the optional
//! entropy. A blob sealed here opens only on this Windows installation (any
//! account on it, so the file's ACL still decides who may read it); copied
//! to another machine, or altered, it does not open and [`unprotect`] says
//! so.
//!
//! Why the entropy: Windows binds machine-scope blobs to the machine's own
//! DPAPI secret already, but Wine (on which CI runs the Windows build)
//! derives the key from the user name and a constant
//! (`dlls/crypt32/protectdata.c`), so without it a blob would open in any
//! other Wine prefix. With it the binding holds under Wine too, and is
//! tested there across two prefixes (`.ci/run`). Issue #17: the building block
//! for the device key and the compiled-cache key at rest, used by the
//! device key (`uplink/identity.rs`); not yet the cache key
//! (ARCHITECTURE.md, "Not built yet").
#![allow(unsafe_code)]

use windows_sys::Win32::Foundation::{ERROR_SUCCESS, GetLastError, LocalFree};
use windows_sys::Win32::Security::Cryptography::{
    CRYPT_INTEGER_BLOB, CRYPTPROTECT_LOCAL_MACHINE, CRYPTPROTECT_UI_FORBIDDEN, CryptProtectData,
    CryptUnprotectData,
};
use windows_sys::Win32::System::Registry::{HKEY_LOCAL_MACHINE, RRF_RT_REG_SZ, RegGetValueW};
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
    /// This installation's `MachineGuid` could not be read.
    #[error(
        "could not read this PC's MachineGuid (HKLM\\SOFTWARE\\Microsoft\\Cryptography; Windows error {0}), which every sealed key is bound to"
    )]
    MachineId(u32),
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

/// The entropy every blob is sealed with: a domain string and this
/// installation's `MachineGuid` as UTF-16.
fn machine_entropy() -> Result<Vec<u8>, DpapiError> {
    let wide = |s: &str| s.encode_utf16().chain([0]).collect::<Vec<u16>>();
    let (key, value) = (
        wide("SOFTWARE\\Microsoft\\Cryptography"),
        wide("MachineGuid"),
    );
    let mut buf = [0u16; 128];
    let mut len = u32::try_from(std::mem::size_of_val(&buf)).unwrap_or(u32::MAX);
    // SAFETY: the key and value names are NUL-terminated UTF-16 alive for
    // the call; `buf` holds `len` bytes, which the call does not exceed
    // (it fails with ERROR_MORE_DATA instead).
    let rc = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_SZ,
            std::ptr::null_mut(),
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(DpapiError::MachineId(rc));
    }
    let chars = (len as usize / 2).min(buf.len());
    let guid = buf[..chars].iter().take_while(|c| **c != 0);
    let mut entropy = b"outpost-dpapi/v1\0".to_vec();
    for c in guid {
        entropy.extend_from_slice(&c.to_le_bytes());
    }
    Ok(entropy)
}

/// Seal `plain` to this machine.
pub fn protect(plain: &[u8]) -> Result<Vec<u8>, DpapiError> {
    protect_with(plain, &machine_entropy()?)
}

/// Open a blob [`protect`] sealed on this machine.
pub fn unprotect(sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, DpapiError> {
    unprotect_with(sealed, &machine_entropy()?)
}

fn protect_with(plain: &[u8], entropy: &[u8]) -> Result<Vec<u8>, DpapiError> {
    let input = blob(plain)?;
    let entropy = blob(entropy)?;
    let mut out = CRYPT_INTEGER_BLOB {
        cbData: 0,
        pbData: std::ptr::null_mut(),
    };
    // SAFETY: `input` and `entropy` point at slices alive for the call;
    // DPAPI only reads them. The other optional pointers are null, as the
    // API allows.
    let ok = unsafe {
        CryptProtectData(
            &input,
            std::ptr::null(),
            &entropy,
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

fn unprotect_with(sealed: &[u8], entropy: &[u8]) -> Result<Zeroizing<Vec<u8>>, DpapiError> {
    let input = blob(sealed)?;
    let entropy = blob(entropy)?;
    let mut out = CRYPT_INTEGER_BLOB {
        cbData: 0,
        pbData: std::ptr::null_mut(),
    };
    // SAFETY: as in `protect`; the description pointer is null (not asked for).
    let ok = unsafe {
        CryptUnprotectData(
            &input,
            std::ptr::null_mut(),
            &entropy,
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

    #[test]
    fn a_blob_is_bound_to_the_machine_guid() {
        let entropy = machine_entropy().unwrap();
        // The GUID is there: a domain string and 36 UTF-16 characters.
        assert_eq!(
            entropy.len(),
            b"outpost-dpapi/v1\0".len() + 72,
            "{entropy:?}"
        );
        let secret = b"cache key 0123456789abcdef".as_slice();
        let sealed = protect(secret).unwrap();
        assert_eq!(
            unprotect_with(&sealed, &entropy).unwrap().as_slice(),
            secret
        );
        // Sealed under another installation's GUID: refused here.
        let mut other = entropy.clone();
        let last = other.len() - 2;
        other[last] ^= 0x01;
        let foreign = protect_with(secret, &other).unwrap();
        assert!(matches!(unprotect(&foreign), Err(DpapiError::Unprotect(_))));
    }

    /// Across two machines, run by `.ci/run` in two Wine prefixes: with
    /// `OUTPOST_DPAPI_EXPORT` set, seal a secret here and write the blob to
    /// that file; with `OUTPOST_DPAPI_FOREIGN` set, the blob in that file
    /// (sealed in the other prefix) must be refused here. With neither, it
    /// checks nothing beyond a local round trip.
    #[test]
    fn a_blob_from_another_machine_is_refused() {
        let secret = b"device key sealed on the first PC".as_slice();
        if let Some(path) = std::env::var_os("OUTPOST_DPAPI_EXPORT") {
            std::fs::write(&path, protect(secret).unwrap()).unwrap();
        }
        if let Some(path) = std::env::var_os("OUTPOST_DPAPI_FOREIGN") {
            let foreign = std::fs::read(&path).unwrap();
            let err = unprotect(&foreign).unwrap_err();
            assert!(matches!(err, DpapiError::Unprotect(_)), "{err}");
            println!("a blob sealed on another machine was refused: {err}");
        }
        assert_eq!(
            unprotect(&protect(secret).unwrap()).unwrap().as_slice(),
            secret
        );
    }
}
