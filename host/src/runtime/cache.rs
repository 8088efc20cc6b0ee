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

/// The `outpost` executable that compiles on a cache miss, when set
/// ([`compile_in_child_processes`]).
static COMPILER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Hidden subcommand of the `outpost` binary that compiles one module into
/// the cache ([`compile_child_main`]).
pub const COMPILE_SUBCOMMAND: &str = "__compile-module";

/// From now on, compile a module missing from the cache in a child process
/// (`exe` [`COMPILE_SUBCOMMAND`]) and load the entry it writes. Cranelift's
/// working memory (tens of MiB while a module compiles) then lives and dies
/// in the child, so the service's peak and resident memory stay those of
/// running modules. Set by the `outpost` binary only: a library user (the
/// tests) compiles in its own process, and any failure of the child falls
/// back to compiling in-process.
pub fn compile_in_child_processes(exe: PathBuf) {
    let _ = COMPILER.set(exe);
}

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
        max_memory_mib: u32,
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
        if let Some(exe) = COMPILER.get() {
            match self.compile_in_child(exe, max_memory_mib, &name, bytes) {
                Ok(()) => match std::fs::read(&path)
                    .ok()
                    .and_then(|entry| self.load_entry(engine, &name, &entry))
                {
                    Some(c) => {
                        tracing::info!(target: "outpost.cache", entry = %name, "compiled in a child process");
                        return Ok((c, outcome));
                    }
                    None => {
                        tracing::warn!(target: "outpost.cache", entry = %name, "the entry compiled by the child process did not load; compiling in the service")
                    }
                },
                Err(e) => {
                    tracing::warn!(target: "outpost.cache", entry = %name, error = %e, "compiling in a child process failed; compiling in the service")
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

    /// Run `exe` [`COMPILE_SUBCOMMAND`] on `bytes` (its standard input) to
    /// write entry `name`; the entry is then MAC-checked like any other.
    fn compile_in_child(
        &self,
        exe: &Path,
        max_memory_mib: u32,
        name: &str,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        use std::io::{Read, Write};
        use std::process::{Command, Stdio};
        let mut child = Command::new(exe)
            .arg(COMPILE_SUBCOMMAND)
            .arg(&self.dir)
            .arg(max_memory_mib.to_string())
            .arg(name)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let fed = child
            .stdin
            .take()
            .map_or(Ok(()), |mut stdin| stdin.write_all(bytes));
        let mut why = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut why);
        }
        let status = child.wait()?;
        if status.success() {
            // A child that exits 0 has read all its input.
            fed
        } else {
            // A child that refused early closes its input: its own words
            // say why, not the broken pipe.
            // The child's own words (never module content: it prints only
            // its error chain), cut to one line.
            let why = why.lines().next().unwrap_or_default();
            Err(std::io::Error::other(format!(
                "{status}: {}",
                crate::untrusted::clean(why, 300)
            )))
        }
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

/// The child side of [`Cache::compile_in_child`]: `args` are the cache
/// directory, the memory limit the engine is built with and the entry name;
/// the component is read from standard input. The entry name must be the
/// one this binary's own engine gives that file (the same engine settings
/// as the service's), so the service never loads code built for another.
pub fn compile_child_main(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Read;
    let [dir, max_memory_mib, name] = args else {
        anyhow::bail!("usage: {COMPILE_SUBCOMMAND} CACHE-DIR MAX-MEMORY-MIB ENTRY-NAME");
    };
    let max_memory_mib: u32 = max_memory_mib
        .to_str()
        .and_then(|v| v.parse().ok())
        .context("the memory limit is not a number")?;
    let name = name.to_str().context("the entry name is not UTF-8")?;
    let engine = super::new_engine(max_memory_mib).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let file_sha256: [u8; 32] = name
        .get(..64)
        .and_then(|h| {
            (0..32)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()
        })
        .and_then(|v| v.try_into().ok())
        .context("the entry name does not start with a file hash")?;
    anyhow::ensure!(
        Cache::entry_name(&engine, &file_sha256) == name,
        "entry {name} is not for this binary's engine"
    );
    let cache = Cache::open(Path::new(dir)).context("the compiled-module cache")?;
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes)?;
    let code = Component::new(&engine, &bytes)
        .and_then(|c| c.serialize())
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let mac = cache.mac(name, &code).finalize().into_bytes();
    let mut entry = Vec::with_capacity(MAC_BYTES + code.len());
    entry.extend_from_slice(&mac);
    entry.extend_from_slice(&code);
    write_atomically(&cache.dir.join(name), &entry).context("writing the entry")?;
    Ok(())
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
