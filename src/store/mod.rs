//! The store: an append-only log of checksummed records in numbered segment files,
//! and an in-memory hash index from each key to its newest record (the Bitcask
//! design). It knows nothing of the network.
//!
//! ```text
//! PATH/
//!   LOCK                pid of the process that has the store open (flock(2) held)
//!   000000001.data      sealed segment: immutable
//!   000000001.hint      its index entries, ending with their own crc32
//!   000000002.data      the active segment: appended to
//!   000000002.hint.tmp  its hint while it is being sealed (a leftover is removed on open)
//! ```
//!
//! - **Records**: see [`record`] for the byte layout.
//! - **Writes** append under one log lock and then point the index at the new record.
//!   A write is in the file (the page cache) before it returns, so `kill -9` loses
//!   nothing acknowledged; `#sync=` picks when it is also fsynced.
//! - **Reads** look up the index under a shard read lock, release it, and `pread`
//!   the record, verifying its crc32. A record that fails is an error, never data.
//! - **Open** loads each sealed segment from its hint file when the hint is intact
//!   and matches the segment's length, otherwise by scanning it. A torn tail of the
//!   last segment is cut off; damage in the middle is reported and skipped.
//! - **Compaction** rewrites a segment whose dead bytes pass a threshold by copying
//!   its still-indexed records to the active segment, then deletes it. Tombstones and
//!   erases are dropped only from the oldest segment, and only when old enough: no
//!   older record of their key can then survive to come back.
//! - **Expiry**: the index keeps each value's exptime, so expired values are not
//!   counted, and a pass the caller runs (see `expiry`) turns them into tombstones
//!   and erases the values a flush hides.
//!
//! Lock order: index shard → log → segment table. Readers never hold a shard lock
//! while reading a file, so they do not wait behind a long write or a compaction.
//!
//! The files: this one holds the store's handle and its reads by key; `write`
//! its writes by key (newer-wins, and the append); [`record`] the on-disk record, [`index`] the in-memory index, `segment` the
//! segment files and appending, `hint` the hint files, `open` opening and
//! recovery, `lock` the lock file, `compact` compaction, `expiry` counting and
//! reclaiming what expired or was flushed, `snapshot` snapshots and backups, and
//! `options` the tuning.

mod commit;
mod compact;
mod expiry;
mod hint;
pub mod index;
mod lock;
mod map;
mod open;
mod options;
pub mod record;
mod segment;
mod snapshot;
mod write;

pub use expiry::{Reclaimed, RECLAIM_BATCH};
pub use options::{Options, SyncPolicy, OPTION_HELP};
use segment::{Log, Segment};
pub use snapshot::Snapshot;
pub use write::{CasOutcome, Modified};

pub use record::{Kind, Record};

use index::{Index, Loc};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Index shards; a power of two. More shards mean less contention between writers
/// of different keys and shorter pauses when a shard's table doubles.
const SHARDS: usize = 16;
/// Index lookups a read retries when compaction moves its record meanwhile.
const READ_RETRIES: usize = 8;

/// Errors of the store, worded for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request itself is invalid (a key or value too large).
    Invalid(String),
    /// A record on disk failed its checksum; it is not served.
    Corrupt(String),
    /// The file system is out of space (ENOSPC, EDQUOT, EFBIG): nothing was
    /// written, and writing may work again once space is freed.
    Full(String),
    /// The file system failed otherwise (an I/O error).
    Io(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Invalid(m) | Error::Corrupt(m) | Error::Full(m) | Error::Io(m) => f.write_str(m),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => Error::Full(format!("{what}: {e}")),
        _ => Error::Io(format!("{what}: {e}")),
    }
}

/// Counters for `stats`, at the `now` they were taken for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Keys holding a value that has not expired.
    pub items: u64,
    /// Keys holding an expired value not reclaimed yet.
    pub expired: u64,
    /// Keys holding a tombstone.
    pub tombstones: u64,
    pub live_bytes: u64,
    pub dead_bytes: u64,
    /// (segment id, live bytes, dead bytes).
    pub segments: Vec<(u32, u64, u64)>,
    /// Bytes of the index, keys included, and of the keys alone.
    pub index_bytes: u64,
    pub index_key_bytes: u64,
}

/// The figures of a store that cost no walk of its keys (`--metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    pub segments: u64,
    /// Bytes of every segment, live and dead records.
    pub bytes: u64,
    pub compactions: u64,
    /// Fsyncs made for acknowledgements (`#sync=always`, see `commit`): with many
    /// writers, far fewer than their writes.
    pub group_commits: u64,
}

/// What opening a store found.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    pub segments: usize,
    pub from_hints: usize,
    pub records: u64,
    pub torn_tail_bytes: u64,
    pub damaged_records: u64,
}

struct Inner {
    dir: PathBuf,
    options: Options,
    shards: Vec<RwLock<Index>>,
    log: Mutex<Log>,
    segments: RwLock<BTreeMap<u32, Arc<Segment>>>,
    /// Held by compaction and backup: they exclude each other. A backup lists and
    /// links segments that a compaction pass may be rewriting and deleting, and a
    /// pass that collects tombstones reasons about which older segments are gone;
    /// one at a time keeps both simple and every backup a point-in-time copy.
    maintenance: Mutex<()>,
    /// The last write ran out of space (cleared by the next one that fits).
    full: AtomicBool,
    /// Segments rewritten by compaction since open.
    compactions: AtomicU64,
    _lock: File,
    closed: AtomicBool,
    report: OpenReport,
    /// Acknowledgements waiting for the committer (`#sync=always`).
    commits: Arc<commit::Commits>,
    group_commits: AtomicU64,
}

/// A handle on an open store. Cloning is cheap; every clone is the same store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// The file that says when the store last belonged to a cluster.
pub const MEMBER_FILE: &str = "member";
/// The file that holds the newest cluster-wide `flush_all` point this store knows.
pub const FLUSH_FILE: &str = "flush";

fn shard_of(key: &[u8]) -> usize {
    shard_of_hash(index::hash(key))
}

/// [`shard_of`] a key whose [`index::hash`] is `h`.
fn shard_of_hash(h: u64) -> usize {
    (h >> 60) as usize & (SHARDS - 1)
}

impl Store {
    /// What the last open found.
    pub fn open_report(&self) -> OpenReport {
        self.inner.report.clone()
    }

    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    fn shard(&self, key: &[u8]) -> &RwLock<Index> {
        &self.inner.shards[shard_of(key)]
    }

    fn read_shard<'a>(&self, l: &'a RwLock<Index>) -> RwLockReadGuard<'a, Index> {
        l.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write_shard<'a>(&self, l: &'a RwLock<Index>) -> RwLockWriteGuard<'a, Index> {
        l.write().unwrap_or_else(|p| p.into_inner())
    }
    fn lock_log(&self) -> MutexGuard<'_, Log> {
        self.inner.log.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn segment(&self, id: u32) -> Option<Arc<Segment>> {
        self.inner
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// The newest record of `key`, tombstones included (callers decide what a
    /// tombstone means to them). Erased keys are absent.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>> {
        // Compaction may move the record and delete its segment between the index
        // lookup and the read; the second lookup then finds the new location.
        'moved: for _ in 0..READ_RETRIES {
            // The record holds its key: the index is asked by hash tag only, and the
            // record read says whether it is this key's (see `Index::get_by_tag`).
            for skip in 0.. {
                let loc = match self.read_shard(self.shard(key)).get_by_tag(key, skip) {
                    Some(l) if l.kind == Kind::Erase as u8 => {
                        // Whose erase it is needs the key: ask the index whole.
                        match self.read_shard(self.shard(key)).get(key) {
                            Some(l) if l.kind != Kind::Erase as u8 => l,
                            _ => return Ok(None),
                        }
                    }
                    Some(l) => l,
                    None => return Ok(None),
                };
                let Some(seg) = self.segment(loc.segment) else {
                    continue 'moved;
                };
                match read_in(&seg, key, loc) {
                    Ok(Some(rec)) => return Ok(Some(rec)),
                    Ok(None) => continue, // another key of the same tag
                    // A damaged record, or a segment compacted away meanwhile: the
                    // index asked whole says where this key's record is now.
                    Err(e) => {
                        let own = match self.read_shard(self.shard(key)).get(key) {
                            Some(own) if own.kind != Kind::Erase as u8 => own,
                            _ => return Ok(None),
                        };
                        if (own.segment, own.offset) == (loc.segment, loc.offset) {
                            return Err(e);
                        }
                        if let Ok(Some(rec)) = self.read_at(key, own) {
                            return Ok(Some(rec));
                        }
                        continue 'moved;
                    }
                }
            }
        }
        Err(Error::Io(format!(
            "key moved {READ_RETRIES} times while being read"
        )))
    }

    /// The ClockTime and kind of the newest record of `key`, from the index alone.
    pub fn clock_of(&self, key: &[u8]) -> Option<(u64, Kind)> {
        let loc = self.read_shard(self.shard(key)).get(key)?;
        match loc.kind {
            k if k == Kind::Value as u8 => Some((loc.clock, Kind::Value)),
            k if k == Kind::Tombstone as u8 => Some((loc.clock, Kind::Tombstone)),
            _ => None,
        }
    }

    /// The record at `loc` if it is `key`'s; None if it holds another key.
    fn read_at(&self, key: &[u8], loc: Loc) -> Result<Option<Record>> {
        let seg = self.segment(loc.segment).ok_or_else(|| {
            Error::Corrupt(format!("segment {} of a key is missing", loc.segment))
        })?;
        read_in(&seg, key, loc)
    }

    /// No record at all, tombstones and erases included: a new (or wiped) store.
    /// Cheap: it looks at the index sizes only.
    pub fn is_empty(&self) -> bool {
        self.inner
            .shards
            .iter()
            .all(|s| self.read_shard(s).is_empty())
    }

    /// Whether the last write found the disk full.
    pub fn gauges(&self) -> Gauges {
        let segments = self
            .inner
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner());
        Gauges {
            segments: segments.len() as u64,
            bytes: segments
                .values()
                .map(|s| s.len.load(Ordering::Relaxed))
                .sum(),
            compactions: self.inner.compactions.load(Ordering::Relaxed),
            group_commits: self.inner.group_commits.load(Ordering::Relaxed),
        }
    }

    pub fn is_full(&self) -> bool {
        self.inner.full.load(Ordering::Relaxed)
    }

    /// The tuning this store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// When this store last belonged to a cluster (unix seconds, from the
    /// `member` file), or None if it never did (a new store, or a merged backup).
    pub fn last_member(&self) -> Option<u64> {
        self.note(MEMBER_FILE)
    }

    /// Records that the store belongs to a cluster now (`now` in unix seconds).
    pub fn mark_member(&self, now: u64) -> Result<()> {
        self.set_note(MEMBER_FILE, now)
    }

    /// The newest `flush_all` point recorded (see `cluster::flush`), 0 for none.
    pub fn flush_point(&self) -> u64 {
        self.note(FLUSH_FILE).unwrap_or(0)
    }

    /// Records a `flush_all` point, so that it outlives a restart.
    pub fn record_flush(&self, point: u64) -> Result<()> {
        self.set_note(FLUSH_FILE, point)
    }

    /// A number kept in a small file of the store's directory.
    fn note(&self, name: &str) -> Option<u64> {
        std::fs::read_to_string(self.inner.dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Writes a note to a temporary file, syncs it, and renames it into place.
    fn set_note(&self, name: &str, value: u64) -> Result<()> {
        let path = self.inner.dir.join(name);
        crate::fs::write_atomically(&path, value.to_string().as_bytes())
            .map_err(|e| io_err(format!("write {}", path.display()), e))
    }

    /// Drops every record (a store too stale to serve, see the server's re-sync):
    /// an erase record per key, so the store reopens empty. Returns how many.
    pub fn erase_all(&self) -> Result<u64> {
        let (mut n, mut failed) = (0, None);
        self.for_each_key(|key, clock| {
            if failed.is_none() {
                match self.erase(key, clock) {
                    Ok(erased) => n += u64::from(erased),
                    Err(e) => failed = Some(e),
                }
            }
        });
        failed.map_or(Ok(n), Err)
    }

    /// Flushes and releases the store (also done when the last handle drops).
    pub fn close(&self) {
        self.sync();
        self.inner.closed.store(true, Ordering::Relaxed);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let log = self.log.get_mut().unwrap_or_else(|p| p.into_inner());
        // Space allocated for appends and not used goes back: a clean stop leaves
        // the log ending with its last record.
        let active = &log.active;
        let len = active.len.load(Ordering::Relaxed);
        if active.allocated.load(Ordering::Relaxed) > len {
            let _ = active.file.set_len(len);
        }
        let _ = log.active.file.sync_data();
        // LOCK stays: unlinking it while holding the flock would let two later
        // processes lock two different files. Emptying it marks a clean close; the
        // flock goes with the descriptor.
        let _ = self._lock.set_len(0);
    }
}

/// The record at `loc` of `seg` if it is `key`'s; None if it holds another key.
fn read_in(seg: &Segment, key: &[u8], loc: Loc) -> Result<Option<Record>> {
    let mut buf = Vec::new();
    let bytes = seg.bytes_at(loc.offset, loc.len, &mut buf)?;
    match record::decode(bytes) {
        Ok((k, rec, _)) if k == key => Ok(Some(rec)),
        Ok(_) => Ok(None),
        Err(why) => {
            log::error!(
                "{} offset {}: damaged record ({why:?}); not served",
                seg.path.display(),
                loc.offset
            );
            Err(Error::Corrupt(format!(
                "{} offset {}: damaged record",
                seg.path.display(),
                loc.offset
            )))
        }
    }
}
