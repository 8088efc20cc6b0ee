//! Files that hold secrets (the device identity, the compiled-cache key, the
//! API token): readable only by their owner. On Unix a file that others may
//! read is refused when it is loaded, naming the file, its mode and the
//! fix; on Windows the device key is sealed with DPAPI (`crate::dpapi`) and
//! the state directory's ACL protects the rest (an ACL check here is not
//! built yet).

use std::path::Path;

/// The permission bits of `path` when users other than its owner may read
/// or write it (Unix), else `None`.
pub fn exposed_mode(path: &Path) -> std::io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        Ok((mode & 0o077 != 0).then_some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

/// The operator's words for an exposed secret file.
pub fn exposed_message(what: &str, path: &Path, mode: u32) -> String {
    format!(
        "{what} {} may be read by other users (mode {mode:o}); run `chmod 600 {}` (and check who else could have read it)",
        path.display(),
        path.display()
    )
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn group_or_other_bits_are_exposed() {
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
            assert_eq!(exposed_mode(&f).unwrap().is_some(), exposed, "{mode:o}");
        }
    }
}
