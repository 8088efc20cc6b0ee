//! Files that hold secrets (the device identity, the compiled-cache key, the
//! API token): readable only by their owner. They are created that way
//! ([`write_private`], [`create_private`]: mode 0600 on Unix), and on Unix a
//! file others may read is refused when it is loaded ([`exposure`]), naming
//! the file, its mode and the fix. On Windows the keys are sealed with DPAPI
//! (`crate::dpapi`) and the state directory's access list, set at install,
//! protects the files; checking each file's own list when it is loaded is
//! not built (Wine, on which CI runs the Windows build, does not keep a
//! file's access list: it maps it onto Unix mode bits and back, so such a
//! check cannot be tested there — ARCHITECTURE.md, "Not built yet").

use std::path::Path;

/// Who besides the owner may read a secret file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// Unix: its permission bits let the group or others in.
    Mode(u32),
}

impl std::fmt::Display for Exposure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exposure::Mode(mode) => write!(f, "mode {mode:o}"),
        }
    }
}

/// Who besides its owner may read `path`, if anyone.
pub fn exposure(path: &Path) -> std::io::Result<Option<Exposure>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        Ok((mode & 0o077 != 0).then_some(Exposure::Mode(mode)))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

/// The operator's words for an exposed secret file: what, where, who else
/// may read it, and the fix.
pub fn exposed_message(what: &str, path: &Path, exposure: &Exposure) -> String {
    format!(
        "{what} {} may be read by other users ({exposure}); run `chmod 600 {}` (and check who else could have read it)",
        path.display(),
        path.display()
    )
}

/// Create `path` (it must not exist) for writing a secret: mode 0600 on
/// Unix.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Write a new secret file: [`create_private`], the bytes, `fsync`.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = create_private(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn group_or_other_bits_are_exposed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, b"x").unwrap();
        for (mode, exposed) in [
            (0o600, false),
            (0o400, false),
            (0o640, true),
            (0o604, true),
            (0o620, true),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(exposure(&f).unwrap().is_some(), exposed, "{mode:o}");
        }
    }

    #[test]
    fn a_written_secret_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        write_private(&f, b"key").unwrap();
        #[cfg(unix)]
        assert_eq!(exposure(&f).unwrap(), None);
        assert_eq!(std::fs::read(&f).unwrap(), b"key");
        assert!(write_private(&f, b"other").is_err());
        assert_eq!(std::fs::read(&f).unwrap(), b"key");
    }

    #[test]
    fn the_message_names_the_file_who_and_the_fix() {
        let p = Path::new("state/device.json");
        let m = exposed_message("the device key in", p, &Exposure::Mode(0o644));
        assert!(
            m.contains("state/device.json")
                && m.contains("mode 644")
                && m.contains("chmod 600 state/device.json"),
            "{m}"
        );
    }
}
