//! Group commit, for `#sync=always`: a write is acknowledged once an fsync that
//! began after it has returned, and one fsync serves every write that arrived
//! while the one before it ran.
//!
//! A writer does not fsync. It appends (so readers see the record at once), then
//! leaves what is to happen once the record is on the disk, its acknowledgement,
//! with [`Store::when_durable`]. The committer, a thread of the store's own, takes
//! every acknowledgement left so far, fsyncs the active segment, and runs them.
//! Sealed segments need nothing more: sealing one fsyncs it.
//!
//! A server thread never waits on the disk this way, and a burst of writes costs a
//! few fsyncs instead of one each. What an acknowledgement promises is unchanged:
//! the record is on the disk before its write is answered. When the fsync fails,
//! every write it was to cover is answered with the error; like any write answered
//! with an error, it may be kept or not (it may be on other replicas already).

use super::{io_err, Inner, Result, Store, SyncPolicy};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// What is to happen once a write is on the disk, told whether it is.
type Durable = Box<dyn FnOnce(Result<()>) + Send>;

/// The acknowledgements waiting for the next fsync.
#[derive(Default)]
pub(super) struct Commits {
    waiting: Mutex<Vec<Durable>>,
    wanted: Condvar,
}

/// How often an idle committer looks whether its store is gone.
const IDLE_CHECK: Duration = Duration::from_millis(200);

impl Store {
    /// Runs `then` once every write this thread has made to the store is as
    /// durable as the sync policy promises: under `#sync=always`, after an fsync
    /// that began after them (on the committer's thread); otherwise at once, here,
    /// as the page cache already has them.
    pub fn when_durable(&self, then: impl FnOnce(Result<()>) + Send + 'static) {
        if self.inner.options.sync != SyncPolicy::Always {
            return then(Ok(()));
        }
        let commits = &self.inner.commits;
        commits
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(then));
        commits.wanted.notify_one();
    }
}

/// Starts the committer of a store opened with `#sync=always`. It holds the store
/// only while it commits, and ends once the store is dropped.
pub(super) fn start_committer(inner: &Arc<Inner>) -> std::result::Result<(), String> {
    let store = Arc::downgrade(inner);
    let commits = inner.commits.clone();
    std::thread::Builder::new()
        .name("store-commit".into())
        .spawn(move || while commit_once(&store, &commits) {})
        .map(|_| ())
        .map_err(|e| format!("cannot start the store commit thread: {e}"))
}

/// Waits for acknowledgements, fsyncs once for all of them, and runs them. False
/// once the store is gone.
fn commit_once(store: &Weak<Inner>, commits: &Commits) -> bool {
    let batch = {
        let mut waiting = commits.waiting.lock().unwrap_or_else(|p| p.into_inner());
        while waiting.is_empty() {
            if store.strong_count() == 0 {
                return false;
            }
            waiting = commits
                .wanted
                .wait_timeout(waiting, IDLE_CHECK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        std::mem::take(&mut *waiting)
    };
    // Every write of the batch was appended before it was left here, so before
    // this fsync begins.
    let Some(inner) = store.upgrade() else {
        // Dropped, so its last fsync (on close) has run; the acknowledgements are
        // dropped unanswered, and their callers answer with an error.
        return false;
    };
    inner.group_commits.fetch_add(1, Ordering::Relaxed);
    let result = Store { inner }.sync_active();
    if let Err(e) = &result {
        log::error!("{e}; the writes it was to make durable are answered with an error");
    }
    for then in batch {
        then(result.clone());
    }
    true
}

impl Store {
    /// Fsyncs the active segment; a failure leaves it to be tried again.
    pub(super) fn sync_active(&self) -> Result<()> {
        let seg = {
            let mut log = self.lock_log();
            log.dirty = false;
            log.active.clone()
        };
        seg.file.sync_data().map_err(|e| {
            self.lock_log().dirty = true;
            io_err(format!("fsync {}", seg.path.display()), e)
        })
    }
}
