//! The compiled-module cache.
//!
//! Compiling a component takes tens of milliseconds (release) to a second
//! (debug); the cache keeps the native code between host starts. It is used only
//! after the signed file has verified, and an entry is trusted only if its MAC
//! under the host-local cache key checks out — so a swapped or edited entry is
//! refused and the module recompiled from its verified bytes.
//!
//! Entry file name: `<sha256 of the signed file>-<engine compatibility digest>.cwasm`.
//! Entry contents: `HMAC-SHA256(cache key, entry name ‖ code)` (32 bytes) ‖ code,
//! where code is `Component::serialize()`. The cache key is 32 random bytes in
//! `cache.key` beside the entries, created on first use (0600 on Unix; on
//! Windows sealed with DPAPI in machine scope, so a copy does not open on
//! another PC and is refused, and the state directory's ACL, which the
//! installer restricts to the service account and administrators).

use hmac::{Hmac, Mac};
use outpost_signing::verify::VerifiedModule;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Size of the MAC prefix of an entry.
const MAC_BYTES: usize = 32;

/// What the cache did for one module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheOutcome {
    /// No cache configured: compiled.
    Disabled,
    /// No entry: compiled and stored.
    Miss,
    /// A valid entry was used.
    Hit,
    /// An entry existed but failed its MAC or did not load: refused, recompiled, replaced.
    Rejected,
}

/// A directory of compiled components.
pub struct Cache {
    dir: PathBuf,
    key: [u8; 32],
}

impl Cache {
    /// Open (creating if needed) the cache in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Cache> {
        std::fs::create_dir_all(dir)?;
        let key_path = dir.join("cache.key");
        let key = match std::fs::read(&key_path) {
            Ok(_) if let Some(who) = crate::secret_file::exposure(&key_path)? => {
                return Err(std::io::Error::other(crate::secret_file::exposed_message(
                    "the compiled-cache key",
                    &key_path,
                    &who,
                )));
            }
            Ok(stored) => match open_key(&stored) {
                Ok(k) if k.len() == 32 => k.as_slice().try_into().expect("length checked"),
                Ok(_) => {
                    return Err(std::io::Error::other(format!(
                        "cache key {} is not 32 bytes",
                        key_path.display()
                    )));
                }
                Err(e) => {
                    return Err(std::io::Error::other(format!(
                        "cache key {}: {e}",
                        key_path.display()
                    )));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = [0u8; 32];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut k);
                crate::secret_file::write_private(&key_path, &seal_key(&k)?)?;
                k
            }
            Err(e) => return Err(e),
        };
        Ok(Cache {
            dir: dir.to_owned(),
            key,
        })
    }

    /// The entry name for a signed file with hash `file_sha256` on `engine`.
    fn entry_name(engine: &Engine, file_sha256: &[u8; 32]) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let compat = Sha256::digest(
            format!("{:016x}/outpost-{}", h.finish(), env!("CARGO_PKG_VERSION")).as_bytes(),
        );
        format!("{}-{}.cwasm", hex(file_sha256), &hex(&compat)[..16])
    }

    fn mac(&self, name: &str, code: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(name.as_bytes());
        m.update(&[0]);
        m.update(code);
        m
    }

    /// The component for a verified module: from the cache when a valid
    /// entry exists, else compiled (and stored). Taking the
    /// [`VerifiedModule`] (which only `signing::verify` makes) keeps
    /// unverified bytes away from the compiler and the cache alike.
    pub(crate) fn get_or_compile(
        &self,
        engine: &Engine,
        verified: &VerifiedModule,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let bytes = verified.bytes();
        let name = Self::entry_name(engine, &verified.file_sha256());
        let path = self.dir.join(&name);
        let mut outcome = CacheOutcome::Miss;
        if let Ok(entry) = std::fs::read(&path) {
            match self.load_entry(engine, &name, &entry) {
                Some(c) => return Ok((c, CacheOutcome::Hit)),
                None => {
                    tracing::warn!(target: "outpost.cache", entry = %name, "compiled-module cache entry refused; recompiling");
                    let _ = std::fs::remove_file(&path);
                    outcome = CacheOutcome::Rejected;
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        match component.serialize() {
            Ok(code) => {
                let mac = self.mac(&name, &code).finalize().into_bytes();
                let mut entry = Vec::with_capacity(MAC_BYTES + code.len());
                entry.extend_from_slice(&mac);
                entry.extend_from_slice(&code);
                if let Err(e) = write_atomically(&path, &entry) {
                    tracing::warn!(target: "outpost.cache", entry = %name, error = %e, "cannot write compiled-module cache entry");
                }
            }
            Err(e) => {
                tracing::warn!(target: "outpost.cache", error = %e, "cannot serialise compiled module")
            }
        }
        Ok((component, outcome))
    }

    fn load_entry(&self, engine: &Engine, name: &str, entry: &[u8]) -> Option<Component> {
        if entry.len() <= MAC_BYTES {
            return None;
        }
        let (mac, code) = entry.split_at(MAC_BYTES);
        self.mac(name, code).verify_slice(mac).ok()?;
        deserialize_own(engine, code).ok()
    }
}

/// Load native code that this host compiled and MAC'd.
///
/// SAFETY: `Component::deserialize` trusts its input to be the output of
/// `Component::serialize` from a compatible engine; arbitrary bytes could make
/// it run arbitrary native code. The only caller passes bytes whose HMAC under
/// the host-local cache key verified, so they were written by this host from
/// its own `serialize` (an attacker without the key cannot forge the MAC), and
/// the entry name binds them to the verified signed file's hash and to this
/// engine's compatibility hash. wasmtime additionally checks the engine
/// compatibility header and refuses a mismatch.
#[allow(unsafe_code)]
fn deserialize_own(engine: &Engine, code: &[u8]) -> wasmtime::Result<Component> {
    unsafe { Component::deserialize(engine, code) }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// The cache key as `cache.key` holds it: the bytes on Unix, sealed with
/// DPAPI (machine scope) on Windows.
fn seal_key(key: &[u8; 32]) -> std::io::Result<Vec<u8>> {
    #[cfg(windows)]
    {
        crate::dpapi::protect(key).map_err(std::io::Error::other)
    }
    #[cfg(not(windows))]
    {
        Ok(key.to_vec())
    }
}

/// The cache key from `cache.key`'s contents; on Windows an error if the
/// blob does not open on this PC.
#[cfg(windows)]
fn open_key(stored: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, crate::dpapi::DpapiError> {
    crate::dpapi::unprotect(stored)
}

#[cfg(not(windows))]
fn open_key(stored: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, std::convert::Infallible> {
    Ok(zeroize::Zeroizing::new(stored.to_vec()))
}

#[cfg(all(test, windows))]
mod tests {
    use super::*;

    #[test]
    fn the_cache_key_is_sealed_and_a_foreign_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Cache::open(dir.path()).unwrap().key;
        let path = dir.path().join("cache.key");
        let stored = std::fs::read(&path).unwrap();
        assert_ne!(stored.len(), 32, "stored in clear");
        assert!(!stored.windows(32).any(|w| w == first));
        assert_eq!(Cache::open(dir.path()).unwrap().key, first);
        let mut altered = stored.clone();
        let last = altered.len() - 2;
        altered[last] ^= 0x01;
        std::fs::write(&path, &altered).unwrap();
        let err = Cache::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("another machine"), "{err}");
    }
}
