//! Encryption at rest: AES-256-GCM under the server key.
//!
//! A sealed blob is `nonce (12 random bytes) | ciphertext | tag (16)`. The AAD
//! is a domain string followed by length-prefixed context fields, so a blob
//! cannot be moved to another row, table or device:
//!
//! * devices: `"outpost-cloud/device/v1" | u8 len | device id`
//! * batches: `"outpost-cloud/batch/v1" | u8 len | device id | u8 len | stream | u64 BE sequence`
//! * device_status: `"outpost-cloud/status/v1" | u8 len | device id`

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, bail};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

/// Domain of the device rows.
pub(crate) const AAD_DEVICE: &[u8] = b"outpost-cloud/device/v1";
/// Domain of the batch rows.
pub(crate) const AAD_BATCH: &[u8] = b"outpost-cloud/batch/v1";
/// Domain of the status rows.
pub(crate) const AAD_STATUS: &[u8] = b"outpost-cloud/status/v1";
/// Domain of the key check: a known text sealed under the key the
/// database's rows are sealed with.
pub(crate) const AAD_KEY_CHECK: &[u8] = b"outpost-cloud/key-check/v1";

/// The server's 32-byte at-rest key.
pub(crate) struct ServerKey(Zeroizing<[u8; 32]>);

impl ServerKey {
    /// Read `path`, or create it with 32 random bytes (mode 0600 on Unix).
    ///
    /// On Windows the file inherits the data directory's ACL; the plan there is
    /// to restrict the ACL to the service account and wrap the key with DPAPI
    /// (machine scope) before this server is used outside tests.
    pub(crate) fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(path) {
            Ok(mut f) => {
                let mut k = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(k.as_mut());
                f.write_all(k.as_ref())
                    .and_then(|()| f.sync_all())
                    .with_context(|| format!("writing {}", path.display()))?;
                if let Some(dir) = path.parent() {
                    sync_dir(dir);
                }
                Ok(ServerKey(k))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mut f = std::fs::File::open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                let mut buf = Zeroizing::new(Vec::with_capacity(33));
                Read::by_ref(&mut f)
                    .take(33)
                    .read_to_end(&mut buf)
                    .with_context(|| format!("reading {}", path.display()))?;
                if buf.len() != 32 {
                    bail!("{} is not a 32-byte key", path.display());
                }
                let mut k = Zeroizing::new([0u8; 32]);
                k.copy_from_slice(&buf);
                Ok(ServerKey(k))
            }
            Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.as_ref().into())
    }

    /// Seal `plain` under `aad`.
    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| anyhow::anyhow!("at-rest encryption failed"))?;
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Open a blob sealed under `aad`.
    pub(crate) fn open(&self, aad: &[u8], blob: &[u8]) -> anyhow::Result<Vec<u8>> {
        if blob.len() < 12 + 16 {
            bail!("stored blob truncated");
        }
        self.cipher()
            .decrypt(
                Nonce::from_slice(&blob[..12]),
                Payload {
                    msg: &blob[12..],
                    aad,
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "stored blob failed authentication (wrong server key or tampered row)"
                )
            })
    }
}

/// AAD: domain, then each part prefixed by its u8 length.
pub(crate) fn aad(domain: &[u8], parts: &[&[u8]], sequence: Option<u64>) -> Vec<u8> {
    let mut a = domain.to_vec();
    for p in parts {
        // Parts are device ids (≤ 64) and stream names (≤ 32).
        a.push(u8::try_from(p.len()).unwrap_or(u8::MAX));
        a.extend_from_slice(p);
    }
    if let Some(s) = sequence {
        a.extend_from_slice(&s.to_be_bytes());
    }
    a
}

fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}
