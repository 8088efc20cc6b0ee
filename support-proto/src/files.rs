//! File transfer on the PC: one granted folder, opened once as a capability
//! (`cap-std`): every path is resolved beneath it, so `..`, absolute paths
//! and symlinks that lead out are refused by construction (and names are
//! checked up front for a clear error). Uploads go to a temporary file in
//! the target's directory, are hashed as they arrive, and are fsynced and
//! renamed into place only when the whole file's size and SHA-256 match;
//! anything else removes the temporary file. Every transfer, done or
//! refused, reaches the audit callback.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::authz::{Refusal, RefusalCode};
use crate::msg::FileDone;

/// Default size cap of one file, either direction.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 30;
/// Longest accepted relative name, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Prefix of upload temporary files (names starting with it are refused).
pub const TEMP_PREFIX: &str = ".outpost-upload-";

/// Which way a file went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Engineer → PC.
    ToPc,
    /// PC → engineer.
    FromPc,
}

/// One audit record of a transfer (done or refused). Holds no content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAudit {
    /// The relative name asked for.
    pub name: String,
    /// Bytes transferred (the declared size when refused up front).
    pub size: u64,
    /// SHA-256 of the whole file, hex; empty when refused before the end.
    pub sha256: String,
    /// Which way.
    pub direction: Direction,
    /// `Ok` when the file was stored or sent completely, else why not.
    pub outcome: Result<(), Refusal>,
}

/// The audit callback (the host wires it to its audit chain).
pub type AuditFn = Arc<dyn Fn(&FileAudit) + Send + Sync>;

/// The granted folder of a session.
#[derive(Clone)]
pub struct FileBackend {
    folder: PathBuf,
    max_file_bytes: u64,
    audit: AuditFn,
}

impl std::fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBackend")
            .field("folder", &self.folder)
            .field("max_file_bytes", &self.max_file_bytes)
            .finish_non_exhaustive()
    }
}

fn denied(code: RefusalCode, m: impl Into<String>) -> Refusal {
    Refusal::new(code, m)
}

/// Check a relative name: normal components only, no `..`, no root, no
/// drive, no backslash or colon (portable to Windows), no NUL, not a
/// temporary file's name.
pub fn check_name(name: &str) -> Result<&Path, Refusal> {
    let bad = |why: &str| {
        denied(
            RefusalCode::NotApproved,
            format!("file name {name:?} refused: {why}"),
        )
    };
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(bad("empty or too long"));
    }
    if name.contains(['\\', ':', '\0']) {
        return Err(bad("backslash, colon or NUL"));
    }
    let p = Path::new(name);
    let mut n = 0;
    for c in p.components() {
        match c {
            Component::Normal(s) => {
                if s.to_string_lossy().starts_with(TEMP_PREFIX) {
                    return Err(bad("a temporary file's name"));
                }
                n += 1;
            }
            Component::ParentDir => return Err(bad("'..' leads outside the folder")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("an absolute path is outside the folder"));
            }
            Component::CurDir => return Err(bad("'.' components are not accepted")),
        }
    }
    if n == 0 {
        return Err(bad("no file name"));
    }
    Ok(p)
}

/// An upload in progress.
pub struct PutSink {
    dir: Dir,
    file_name: PathBuf,
    tmp_name: String,
    file: tokio::fs::File,
    hasher: Sha256,
    written: u64,
    size: u64,
    name: String,
}

impl FileBackend {
    /// A backend over `folder` (which must exist) with a size cap of
    /// [`DEFAULT_MAX_FILE_BYTES`] and `audit` called for every transfer.
    pub fn new(folder: impl Into<PathBuf>, audit: AuditFn) -> Self {
        FileBackend {
            folder: folder.into(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            audit,
        }
    }

    /// Set the size cap of one file.
    pub fn with_max_file_bytes(mut self, max: u64) -> Self {
        self.max_file_bytes = max;
        self
    }

    /// Record an audit entry.
    pub fn audit(&self, a: &FileAudit) {
        (self.audit)(a)
    }

    fn open_folder(&self) -> Result<Dir, Refusal> {
        Dir::open_ambient_dir(&self.folder, ambient_authority()).map_err(|e| {
            denied(
                RefusalCode::Internal,
                format!("opening the granted folder: {e}"),
            )
        })
    }

    /// Start an upload of `size` bytes to `name`.
    pub async fn begin_put(&self, name: &str, size: u64) -> Result<PutSink, Refusal> {
        let path = check_name(name)?.to_path_buf();
        if size > self.max_file_bytes {
            return Err(denied(
                RefusalCode::NotApproved,
                format!(
                    "file {name:?} of {size} bytes exceeds the cap of {} bytes",
                    self.max_file_bytes
                ),
            ));
        }
        let this = self.clone();
        let name_owned = name.to_owned();
        let (dir, file_name, tmp_name, file) = tokio::task::spawn_blocking(move || {
            let root = this.open_folder()?;
            let escape = |e: std::io::Error| {
                denied(
                    RefusalCode::NotApproved,
                    format!("file {name_owned:?} refused: {e}"),
                )
            };
            let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(parent) => root.open_dir(parent).map_err(escape)?,
                None => root,
            };
            let file_name = PathBuf::from(path.file_name().unwrap_or_default());
            if dir.symlink_metadata(&file_name).is_ok() {
                return Err(denied(
                    RefusalCode::NotApproved,
                    format!("file {name_owned:?} exists already (never overwritten)"),
                ));
            }
            let mut r = [0u8; 8];
            OsRng.fill_bytes(&mut r);
            let tmp_name = format!("{TEMP_PREFIX}{}.part", hex::encode(r));
            let mut opts = cap_std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            let f = dir.open_with(&tmp_name, &opts).map_err(escape)?;
            Ok((dir, file_name, tmp_name, f.into_std()))
        })
        .await
        .map_err(|e| denied(RefusalCode::Internal, format!("upload task: {e}")))??;
        Ok(PutSink {
            dir,
            file_name,
            tmp_name,
            file: tokio::fs::File::from_std(file),
            hasher: Sha256::new(),
            written: 0,
            size,
            name: name.to_owned(),
        })
    }

    /// Open `name` for a fetch: the file (a regular file beneath the folder)
    /// and its size.
    pub async fn open_get(&self, name: &str) -> Result<(tokio::fs::File, u64), Refusal> {
        let path = check_name(name)?.to_path_buf();
        let this = self.clone();
        let name_owned = name.to_owned();
        let (f, size) = tokio::task::spawn_blocking(move || {
            let root = this.open_folder()?;
            let f = root.open(&path).map_err(|e| {
                denied(
                    RefusalCode::NotApproved,
                    format!("file {name_owned:?} refused: {e}"),
                )
            })?;
            let meta = f
                .metadata()
                .map_err(|e| denied(RefusalCode::Internal, format!("file {name_owned:?}: {e}")))?;
            if !meta.is_file() {
                return Err(denied(
                    RefusalCode::NotApproved,
                    format!("{name_owned:?} is not a regular file"),
                ));
            }
            if meta.len() > this.max_file_bytes {
                return Err(denied(
                    RefusalCode::NotApproved,
                    format!(
                        "file {name_owned:?} of {} bytes exceeds the cap of {} bytes",
                        meta.len(),
                        this.max_file_bytes
                    ),
                ));
            }
            Ok((f.into_std(), meta.len()))
        })
        .await
        .map_err(|e| denied(RefusalCode::Internal, format!("fetch task: {e}")))??;
        Ok((tokio::fs::File::from_std(f), size))
    }
}

impl PutSink {
    /// The name asked for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes received so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The declared size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a chunk (refused beyond the declared size).
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        let n = chunk.len() as u64;
        if self.written + n > self.size {
            return Err(denied(
                RefusalCode::NotApproved,
                format!(
                    "file {:?} is longer than its declared {} bytes",
                    self.name, self.size
                ),
            ));
        }
        self.file.write_all(chunk).await.map_err(|e| {
            denied(
                RefusalCode::Internal,
                format!("writing {:?}: {e}", self.name),
            )
        })?;
        self.hasher.update(chunk);
        self.written += n;
        Ok(())
    }

    /// Check size and hash, fsync and move the file into place. On any
    /// failure the temporary file is removed.
    pub async fn finish(mut self, expected: [u8; 32]) -> Result<FileDone, Refusal> {
        let got: [u8; 32] = self.hasher.clone().finalize().into();
        let check = if self.written != self.size {
            Err(denied(
                RefusalCode::NotApproved,
                format!(
                    "file {:?} ended after {} of {} bytes",
                    self.name, self.written, self.size
                ),
            ))
        } else if got != expected {
            Err(denied(
                RefusalCode::NotApproved,
                format!("file {:?}: the SHA-256 does not match", self.name),
            ))
        } else {
            Ok(())
        };
        if let Err(r) = check {
            self.abort().await;
            return Err(r);
        }
        if let Err(e) = async {
            self.file.flush().await?;
            self.file.sync_all().await
        }
        .await
        {
            let what = format!("syncing {:?}: {e}", self.name);
            self.abort().await;
            return Err(denied(RefusalCode::Internal, what));
        }
        let PutSink {
            dir,
            file_name,
            tmp_name,
            file,
            name,
            written,
            ..
        } = self;
        drop(file);
        let moved = tokio::task::spawn_blocking(move || {
            if dir.symlink_metadata(&file_name).is_ok() {
                let _ = dir.remove_file(&tmp_name);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the file appeared meanwhile (never overwritten)",
                ));
            }
            let r = dir.rename(&tmp_name, &dir, &file_name);
            if r.is_err() {
                let _ = dir.remove_file(&tmp_name);
            }
            r
        })
        .await;
        match moved {
            Ok(Ok(())) => Ok(FileDone {
                name,
                size: written,
                sha256: hex::encode(got),
            }),
            Ok(Err(e)) => Err(denied(
                RefusalCode::Internal,
                format!("storing {name:?}: {e}"),
            )),
            Err(e) => Err(denied(RefusalCode::Internal, format!("store task: {e}"))),
        }
    }

    /// Drop the upload and remove its temporary file.
    pub async fn abort(self) {
        let PutSink {
            dir,
            tmp_name,
            file,
            ..
        } = self;
        drop(file);
        let _ = tokio::task::spawn_blocking(move || dir.remove_file(&tmp_name)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_outside_the_folder_are_refused() {
        for bad in [
            "",
            "..",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a\\b",
            "c:x",
            "./a",
            "a\0b",
            ".outpost-upload-1.part",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["a.txt", "sub/dir/b.bin", ".hidden", "a..b"] {
            assert!(check_name(good).is_ok(), "{good:?} was refused");
        }
    }
}
