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
    tx: mpsc::Sender<()>,
    dirs: Vec<PathBuf>,
    watcher: RecommendedWatcher,
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

/// A watcher over `dirs` (recursive) whose changes wake `tx`.
fn watch(dirs: &[PathBuf], tx: mpsc::Sender<()>) -> Result<RecommendedWatcher, WatchError> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if wakes(&res) {
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
    Ok(watcher)
}

/// Whether what the watcher reports wakes the collector: a content change,
/// a report that events were lost (the platform's buffer or queue
/// overflowed: anything may have changed), or an error of the watch (the
/// call costs little and reads what there is).
fn wakes(res: &notify::Result<notify::Event>) -> bool {
    match res {
        Ok(ev) => ev.need_rescan() || counts(&ev.kind),
        Err(_) => true,
    }
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
        let dirs: Vec<PathBuf> = dirs.into_iter().cloned().collect();
        let watcher = watch(&dirs, tx.clone())?;
        Ok(DirWatch {
            rx,
            tx,
            dirs,
            watcher,
        })
    }

    /// Watch the directories anew, the new watch running before the old one
    /// stops (no change falls between them). On Windows, `notify` 8 stops
    /// watching a directory for good on any error its read completes with
    /// other than an abort or access denied (`ERROR_NOTIFY_ENUM_DIR`, a
    /// change buffer that overflowed in a burst, among them), and nothing
    /// says so; the collector loop re-arms after every call. (Wine did not
    /// reproduce that error in a 10 000-change storm; a real Windows runner
    /// would tell.) If the new watch cannot start, the old one stays.
    pub fn rearm(&mut self) {
        match watch(&self.dirs, self.tx.clone()) {
            Ok(fresh) => self.watcher = fresh,
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the file-change watch; the previous one stays")
            }
        }
    }

    /// Wait for the next change (cancel-safe).
    pub async fn changed(&mut self) {
        // Never `None`: this watch holds a sender itself.
        let _ = self.rx.recv().await;
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

    #[test]
    fn lost_events_and_errors_wake_the_collector() {
        use notify::event::Flag;
        // What inotify's queue overflow becomes.
        let overflow = notify::Event::new(EventKind::Other).set_flag(Flag::Rescan);
        assert!(wakes(&Ok(overflow)));
        assert!(wakes(&Err(notify::Error::generic("the watch failed"))));
        assert!(!wakes(&Ok(notify::Event::new(EventKind::Other))));
        assert!(!wakes(&Ok(notify::Event::new(EventKind::Access(
            notify::event::AccessKind::Read
        )))));
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

    /// A burst larger than the platform's event buffer (ReadDirectoryChangesW
    /// overflows its buffer; inotify its queue) must not end the watch: once
    /// re-armed (as the collector loop does after each call), a write after
    /// it still wakes the collector.
    #[tokio::test]
    async fn the_watch_survives_a_burst_that_overflows_the_event_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let mut w = DirWatch::start([&path]).unwrap();
        // More events than inotify queues (its limit, default 16 384); on
        // Windows, far more than the watcher's 16 KiB change buffer holds.
        #[cfg(target_os = "linux")]
        let burst = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(20_000, |max| (max + 1000).min(70_000));
        #[cfg(not(target_os = "linux"))]
        let burst = 10_000;
        for i in 0..burst {
            std::fs::write(path.join(format!("burst-{i}")), b"x").unwrap();
        }
        tokio::time::timeout(Duration::from_secs(30), w.changed())
            .await
            .expect("the burst is seen");
        tokio::time::sleep(Duration::from_millis(500)).await;
        w.drain();
        w.rearm();
        std::fs::write(path.join("after"), b"x").unwrap();
        tokio::time::timeout(Duration::from_secs(10), w.changed())
            .await
            .expect("a write after the burst is seen");
    }
}
