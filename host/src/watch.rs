//! File-change triggers (issue #17): a collector is called soon after one of
//! its granted directories changes, not only on its interval.
//!
//! One `notify` watcher per collector (inotify on Linux,
//! ReadDirectoryChangesW on Windows) over the real paths of its granted
//! directories, recursive. Writers' events wake the collector loop through a
//! channel of one slot, so a storm of events is one pending wake-up, never a
//! queue. The loop then waits [`DEBOUNCE`] (a writer finishing its file) and
//! at least the policy's `min-change-interval-ms` since the start of the
//! previous call, so however many events arrive the module is never called
//! more often than that. The interval stays the fallback, and is the only
//! trigger where events do not arrive (network shares) or the watcher could
//! not start (the loop logs why and carries on without it).
//!
//! Only content changes count (create, write, remove, rename): the
//! collector's own reads and metadata changes (access times) never wake it.

use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long after the first event of a burst the collector is called.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// A live watch over some directories.
pub struct DirWatch {
    rx: mpsc::Receiver<()>,
    _watcher: RecommendedWatcher,
}

/// Why a watch could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path} for changes: {source}")]
pub struct WatchError {
    /// The directory.
    pub path: PathBuf,
    /// What the platform said.
    pub source: notify::Error,
}

fn counts(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Other => false,
    }
}

impl DirWatch {
    /// Watch `dirs` (recursively). Directories that do not exist yet are an
    /// error: the interval covers them.
    pub fn start<'a>(dirs: impl IntoIterator<Item = &'a PathBuf>) -> Result<DirWatch, WatchError> {
        let (tx, rx) = mpsc::channel(1);
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && counts(&ev.kind)
            {
                // Full means a wake-up is already pending: this event joins it.
                let _ = tx.try_send(());
            }
        })
        .map_err(|source| WatchError {
            path: PathBuf::new(),
            source,
        })?;
        for dir in dirs {
            watcher
                .watch(dir, RecursiveMode::Recursive)
                .map_err(|source| WatchError {
                    path: dir.clone(),
                    source,
                })?;
        }
        Ok(DirWatch {
            rx,
            _watcher: watcher,
        })
    }

    /// Wait for the next change (cancel-safe).
    pub async fn changed(&mut self) {
        if self.rx.recv().await.is_none() {
            // The watcher thread is gone: never wake again.
            std::future::pending::<()>().await;
        }
    }

    /// Forget wake-ups that arrived meanwhile (the next call reads them all).
    pub fn drain(&mut self) {
        while self.rx.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_metadata_do_not_count_writes_do() {
        use notify::event::{AccessKind, CreateKind, DataChange, MetadataKind, RenameMode};
        assert!(counts(&EventKind::Create(CreateKind::File)));
        assert!(counts(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(counts(&EventKind::Modify(ModifyKind::Name(RenameMode::To))));
        assert!(!counts(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime
        ))));
        assert!(!counts(&EventKind::Access(AccessKind::Read)));
    }

    #[tokio::test]
    async fn a_write_wakes_the_watch_and_a_storm_is_one_wake_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let mut w = DirWatch::start([&path]).unwrap();
        for i in 0..200 {
            std::fs::write(path.join(format!("f{i}")), b"x").unwrap();
        }
        tokio::time::timeout(Duration::from_secs(30), w.changed())
            .await
            .expect("a change is seen");
        // Everything else of the storm was one pending wake-up at most.
        tokio::time::sleep(Duration::from_millis(300)).await;
        w.drain();
        assert!(w.rx.try_recv().is_err());
    }
}
