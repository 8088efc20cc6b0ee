//! The device identity: the id the cloud issued at enrolment and the device's
//! own AES-256 key, in `device.json` in the state directory.
//!
//! The file is written once by `outpost enroll`, atomically (temporary file,
//! fsync, rename) and, on Unix, with mode 0600 (owner read/write only) from
//! the moment it is created. On Windows the key is sealed with DPAPI in
//! machine scope (`crate::dpapi`): the file holds `dpapi:<hex blob>`, which
//! opens only on this PC; a file copied from another PC, or holding a key
//! in clear, is refused. The ACL that limits the file to the service
//! account, SYSTEM and Administrators is not built yet (the installer must
//! create the state directory restricted).
//!
//! The key never leaves the host: modules never see it, it is never logged
//! (`DeviceKey`'s `Debug` is redacted), and it was sent exactly once, to the
//! enrolment endpoint over verified TLS.

use outpost_protocol::{DeviceId, DeviceKey};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the identity inside the state directory.
pub const IDENTITY_FILE: &str = "device.json";

/// The enrolled device.
#[derive(Debug)]
pub struct Identity {
    /// Issued by the cloud.
    pub device_id: DeviceId,
    /// The device's AES-256-GCM key.
    pub key: DeviceKey,
    /// The server it enrolled with (`https://host[:port]`).
    pub server: String,
    /// When (Unix seconds).
    pub enrolled_at: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct File {
    device_id: DeviceId,
    key: String,
    server: String,
    enrolled_at: i64,
}

/// Reading or writing the identity failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No identity yet.
    #[error("this device is not enrolled ({0} does not exist): run `outpost enroll`")]
    NotEnrolled(PathBuf),
    /// The file exists but is unreadable or malformed.
    #[error("device identity {path} is unusable: {message}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the key).
        message: String,
    },
    /// Writing failed.
    #[error("cannot write the device identity {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Identity {
    /// The identity file of `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(IDENTITY_FILE)
    }

    /// Load the identity from `state_dir`.
    pub fn load(state_dir: &Path) -> Result<Identity, IdentityError> {
        let path = Self::path(state_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::NotEnrolled(path));
            }
            Err(e) => {
                return Err(IdentityError::Bad {
                    path,
                    message: e.to_string(),
                });
            }
        };
        let bad = |message: String| IdentityError::Bad {
            path: path.clone(),
            message,
        };
        match crate::secret_file::exposure(&path) {
            Ok(None) => {}
            Ok(Some(who)) => {
                return Err(bad(crate::secret_file::exposed_message(
                    "the device key in",
                    &path,
                    &who,
                )));
            }
            Err(e) => return Err(bad(e.to_string())),
        }
        let f: File = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a device identity (line {})", e.line())))?;
        #[cfg(windows)]
        let key_hex = match crate::dpapi::open_text(&f.key) {
            Some(Ok(plain)) => zeroize::Zeroizing::new(
                String::from_utf8(plain.to_vec())
                    .map_err(|_| bad("the sealed key is not 64 hex digits".into()))?,
            ),
            Some(Err(e)) => return Err(bad(e.to_string())),
            None => {
                return Err(bad(
                    "the key is not sealed with DPAPI on this PC (a key in clear is refused on Windows); enrol this PC again".into(),
                ));
            }
        };
        #[cfg(not(windows))]
        let key_hex = f.key;
        let key = DeviceKey::from_hex(&key_hex)
            .map_err(|_| bad("the key is not 64 hex digits".into()))?;
        Ok(Identity {
            device_id: f.device_id,
            key,
            server: f.server,
            enrolled_at: f.enrolled_at,
        })
    }

    /// The key as `device.json` holds it: hex on Unix, sealed with DPAPI on
    /// Windows.
    fn stored_key(&self) -> std::io::Result<String> {
        #[cfg(windows)]
        {
            let hex = zeroize::Zeroizing::new(self.key.to_hex());
            crate::dpapi::seal_to_text(hex.as_bytes()).map_err(std::io::Error::other)
        }
        #[cfg(not(windows))]
        {
            Ok(self.key.to_hex())
        }
    }

    /// Write the identity to `state_dir` (atomically; 0600 on Unix).
    pub fn save(&self, state_dir: &Path) -> Result<(), IdentityError> {
        let path = Self::path(state_dir);
        let err = |source| IdentityError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(err)?;
        let f = File {
            device_id: self.device_id.clone(),
            key: self.stored_key().map_err(err)?,
            server: self.server.clone(),
            enrolled_at: self.enrolled_at,
        };
        let text = zeroize::Zeroizing::new(
            serde_json::to_string_pretty(&f).map_err(|e| err(std::io::Error::other(e)))?,
        );
        let tmp = state_dir.join(format!("{IDENTITY_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut file = crate::secret_file::create_private(&tmp).map_err(err)?;
        file.write_all(text.as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(err)?;
        #[cfg(unix)]
        if let Ok(dir) = std::fs::File::open(state_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_private_and_errors_name_no_key() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Identity::load(dir.path()),
            Err(IdentityError::NotEnrolled(_))
        ));
        let id = Identity {
            device_id: DeviceId::parse("dev-1").unwrap(),
            key: DeviceKey::generate(),
            server: "https://cloud.example".into(),
            enrolled_at: 1_700_000_000,
        };
        id.save(dir.path()).unwrap();
        let back = Identity::load(dir.path()).unwrap();
        assert_eq!(back.device_id, id.device_id);
        assert_eq!(back.key.to_hex(), id.key.to_hex());
        assert!(!format!("{back:?}").contains(&id.key.to_hex()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(Identity::path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            // Readable by others: refused, naming the fix, never the key.
            let path = Identity::path(dir.path());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = Identity::load(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains("mode 644") && err.contains("chmod 600"),
                "{err}"
            );
            assert!(!err.contains(&id.key.to_hex()));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(
            Identity::path(dir.path()),
            r#"{"device-id":"dev-1","key":"zz","server":"s","enrolled-at":1}"#,
        )
        .unwrap();
        let e = Identity::load(dir.path()).unwrap_err().to_string();
        #[cfg(not(windows))]
        assert!(e.contains("not 64 hex digits"), "{e}");
        #[cfg(windows)]
        assert!(e.contains("not sealed with DPAPI"), "{e}");
        #[cfg(windows)]
        {
            // Sealed, then altered (as a copy from another PC would fail).
            id.save(dir.path()).unwrap();
            let path = Identity::path(dir.path());
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains("\"key\": \"dpapi:"), "{text}");
            assert!(!text.contains(&id.key.to_hex()));
            let start = text.find("dpapi:").unwrap();
            // In the blob's last bytes: its MAC.
            let at = start + text[start..].find('"').unwrap() - 3;
            let flipped = if &text[at..at + 1] == "0" { "1" } else { "0" };
            std::fs::write(
                &path,
                format!("{}{flipped}{}", &text[..at], &text[at + 1..]),
            )
            .unwrap();
            let e = Identity::load(dir.path()).unwrap_err().to_string();
            assert!(e.contains("another machine"), "{e}");
        }
    }
}
