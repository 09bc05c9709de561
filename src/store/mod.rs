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
//!
//! Lock order: index shard → log → segment table. Readers never hold a shard lock
//! while reading a file, so they do not wait behind a long write or a compaction.

pub mod index;
pub mod record;

pub use record::{Kind, Record};

use index::{Index, Loc};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Index shards; a power of two. More shards mean less contention between writers
/// of different keys and shorter pauses when a shard's table doubles.
const SHARDS: usize = 16;
const HINT_MAGIC: &[u8; 4] = b"KHN1";
/// A hint is written under its name plus `.tmp` (see `fs::write_atomically`).
const HINT_TEMPORARY_SUFFIX: &str = ".hint.tmp";
/// Attempts, 10 ms apart, to take the store lock.
const LOCK_RETRIES: usize = 100;
/// Index lookups a read retries when compaction moves its record meanwhile.
const READ_RETRIES: usize = 8;
/// What `-gS` counts per tombstone: its index entry and slot, keys aside.
const TOMBSTONE_BOOKKEEPING_BYTES: u64 = 32;
/// Segment offsets are u32 in the index.
const SEGMENT_SIZE_MAX: u64 = u32::MAX as u64 - record::RECORD_SIZE_MAX as u64;

/// When written data is also fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Never: the page cache survives a process crash, not a power loss.
    None,
    /// A background thread fsyncs every so often (the default, every 1000 ms).
    Interval(Duration),
    /// Every write is fsynced before it returns.
    Always,
}

/// Tuning, from `-s PATH#name=value#...` and the server's `-gS`/`-gN`/`-gX`.
#[derive(Debug, Clone)]
pub struct Options {
    pub sync: SyncPolicy,
    /// A segment is sealed and a new one started past this size.
    pub segment_size: u64,
    /// A sealed segment is compacted once this percentage of it is dead.
    pub compact_ratio_percent: u64,
    /// ...and at least this many bytes are dead.
    pub compact_min_bytes: u64,
    /// `-gX`: tombstones older than this are collected.
    pub tombstone_max_age: Duration,
    /// `-gN`: tombstones older than this are collected when their bookkeeping
    /// exceeds `tombstone_mem_limit`.
    pub tombstone_min_age: Duration,
    /// `-gS`: bytes of tombstone bookkeeping that trigger early collection.
    pub tombstone_mem_limit: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncPolicy::Interval(Duration::from_millis(1000)),
            segment_size: 256 << 20,
            compact_ratio_percent: 50,
            compact_min_bytes: 1 << 20,
            tombstone_max_age: Duration::from_secs(3600),
            tombstone_min_age: Duration::from_secs(60),
            tombstone_mem_limit: 2048 << 10,
        }
    }
}

/// The `#name=value` options the store understands, for help text and man pages.
pub const OPTION_HELP: &str = "sync=none|interval|always (default interval), sync_ms=N (interval \
period, default 1000), segment_size=SIZE (default 256m), compact_ratio=PERCENT (default 50), \
compact_min=SIZE (default 1m); Tokyo Cabinet's xmsiz and rcnum are accepted and ignored";

impl Options {
    /// Applies `#name=value` options. Unknown names are an error that names them.
    pub fn apply(&mut self, params: &[(String, String)]) -> std::result::Result<(), String> {
        let size = |v: &str, name: &str| {
            crate::sizes::parse_size(v)
                .ok_or_else(|| format!("store option {name}={v}: expected a size such as 64m"))
        };
        let mut sync_ms = None;
        let mut sync = None;
        for (name, value) in params {
            match name.as_str() {
                "sync" => {
                    sync = Some(match value.as_str() {
                        "none" => SyncPolicy::None,
                        "always" => SyncPolicy::Always,
                        "interval" => SyncPolicy::Interval(Duration::from_millis(1000)),
                        _ => return Err(format!("store option sync={value}: expected none, interval or always")),
                    })
                }
                "sync_ms" => {
                    let ms: u64 = value.parse().ok().filter(|m| *m > 0).ok_or_else(|| {
                        format!("store option sync_ms={value}: expected milliseconds above 0")
                    })?;
                    sync_ms = Some(ms);
                }
                "segment_size" => {
                    let s = size(value, name)?;
                    if !(4096..=SEGMENT_SIZE_MAX).contains(&s) {
                        return Err(format!("store option segment_size={value}: expected 4k to 3g"));
                    }
                    self.segment_size = s;
                }
                "compact_ratio" => {
                    self.compact_ratio_percent = value.parse().ok().filter(|p| (1..=100).contains(p)).ok_or_else(|| {
                        format!("store option compact_ratio={value}: expected a percentage from 1 to 100")
                    })?
                }
                "compact_min" => self.compact_min_bytes = size(value, name)?,
                "xmsiz" | "rcnum" => log::warn!(
                    "store option {name}={value} is a Tokyo Cabinet setting; it does not apply to kumo's store and is ignored"
                ),
                _ => return Err(format!("unknown store option '{name}' (known: {OPTION_HELP})")),
            }
        }
        self.sync = match (sync.unwrap_or(self.sync), sync_ms) {
            (SyncPolicy::Interval(_), Some(ms)) => SyncPolicy::Interval(Duration::from_millis(ms)),
            (_, Some(_)) => return Err("store option sync_ms applies only to sync=interval".into()),
            (s, None) => s,
        };
        Ok(())
    }
}

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

/// One segment file and its live/dead accounting.
struct Segment {
    id: u32,
    path: PathBuf,
    file: File,
    /// Bytes of records the index points to.
    live: AtomicU64,
    /// Bytes of records superseded or removed.
    dead: AtomicU64,
    /// Indexed tombstones and erases in this segment.
    tombstones: AtomicU64,
    /// Bytes written (for the active segment, grows).
    len: AtomicU64,
}

/// The active segment and the hint entries of what it holds.
struct Log {
    active: Arc<Segment>,
    hint: Vec<u8>,
    dirty: bool,
}

/// Counters for `stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Keys holding a value.
    pub items: u64,
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
    _lock: File,
    closed: AtomicBool,
    report: OpenReport,
}

/// A handle on an open store. Cloning is cheap; every clone is the same store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// The outcome of [`Store::modify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modified {
    /// The closure wrote this record.
    Written(Record),
    /// The closure chose not to write.
    Unchanged,
}

/// The file that says when the store last belonged to a cluster.
pub const MEMBER_FILE: &str = "member";

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:09}.data"))
}
fn hint_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:09}.hint"))
}
/// Cuts a segment back to `offset`, dropping a record that was not acknowledged.
/// Should the cut fail, the next write overwrites the bytes and a reopen cuts a
/// torn tail, so it is only logged.
fn cut_back(seg: &Segment, offset: u64) {
    if let Err(e) = seg.file.set_len(offset) {
        log::warn!("cannot cut {} back to {offset}: {e}", seg.path.display());
    }
}

/// A hint being written (`000000001.hint.tmp`), or one that earlier versions wrote
/// through `daemon::write_atomically` (`000000001.tmp<pid>`).
fn is_hint_temporary(name: &str) -> bool {
    let is_id = |s: &str| s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u32>().is_ok();
    let is_pid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match name.strip_suffix(HINT_TEMPORARY_SUFFIX) {
        Some(id) => is_id(id),
        None => name
            .split_once(".tmp")
            .is_some_and(|(id, pid)| is_id(id) && is_pid(pid)),
    }
}

fn shard_of(key: &[u8]) -> usize {
    (index::hash(key) >> 60) as usize & (SHARDS - 1)
}

impl Store {
    /// Opens or creates the store at `dir`.
    pub fn open(dir: &Path, options: Options) -> std::result::Result<Store, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create store directory {}: {e}", dir.display()))?;
        let lock = take_lock(dir)?;
        let mut ids: Vec<u32> = Vec::new();
        for entry in std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read store directory {}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
        {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(".data").and_then(|s| s.parse().ok()) {
                ids.push(id);
            } else if is_hint_temporary(name) {
                // Left by a crash mid-write or by an older version's failed write; it
                // holds space (on a full disk, the space that ran out) and nothing reads it.
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    log::warn!("cannot remove {}: {e}", entry.path().display());
                }
            }
        }
        ids.sort_unstable();
        let shards: Vec<RwLock<Index>> =
            (0..SHARDS).map(|_| RwLock::new(Index::default())).collect();
        let mut segments = BTreeMap::new();
        let mut report = OpenReport {
            segments: ids.len(),
            ..Default::default()
        };
        let mut last_hint = Vec::new();
        for (n, &id) in ids.iter().enumerate() {
            let is_last = n + 1 == ids.len();
            let path = segment_path(dir, id);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            let seg = Arc::new(Segment {
                id,
                path: path.clone(),
                file,
                live: AtomicU64::new(0),
                dead: AtomicU64::new(0),
                tombstones: AtomicU64::new(0),
                len: AtomicU64::new(0),
            });
            let mut hint = Vec::new();
            let loaded = if is_last {
                false
            } else {
                load_hint(dir, &seg, &shards, &segments)
            };
            if loaded {
                report.from_hints += 1;
            } else {
                scan_segment(&seg, is_last, &shards, &segments, &mut hint, &mut report)?;
            }
            if is_last {
                last_hint = hint;
            }
            segments.insert(id, seg);
        }
        let active = match segments.values().next_back() {
            Some(s) if s.len.load(Ordering::Relaxed) < options.segment_size => s.clone(),
            _ => {
                let id = ids.last().map_or(1, |l| l + 1);
                let seg = create_segment(dir, id).map_err(|e| e.to_string())?;
                last_hint.clear();
                segments.insert(id, seg.clone());
                seg
            }
        };
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            options,
            shards,
            log: Mutex::new(Log {
                active,
                hint: last_hint,
                dirty: false,
            }),
            segments: RwLock::new(segments),
            maintenance: Mutex::new(()),
            full: AtomicBool::new(false),
            _lock: lock,
            closed: AtomicBool::new(false),
            report,
        });
        if let SyncPolicy::Interval(period) = inner.options.sync {
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("store-sync".into())
                .spawn(move || loop {
                    std::thread::sleep(period);
                    let Some(inner) = weak.upgrade() else { return };
                    if inner.closed.load(Ordering::Relaxed) {
                        return;
                    }
                    Store { inner }.sync();
                })
                .map_err(|e| format!("cannot start the store sync thread: {e}"))?;
        }
        Ok(Store { inner })
    }

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
        for _ in 0..READ_RETRIES {
            let loc = match self.read_shard(self.shard(key)).get(key) {
                Some(l) => l,
                None => return Ok(None),
            };
            if loc.kind == Kind::Erase as u8 {
                return Ok(None);
            }
            if self.segment(loc.segment).is_some() {
                return self.read_at(key, loc).map(Some);
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

    fn read_at(&self, key: &[u8], loc: Loc) -> Result<Record> {
        let seg = self.segment(loc.segment).ok_or_else(|| {
            Error::Corrupt(format!("segment {} of a key is missing", loc.segment))
        })?;
        let mut buf = vec![0u8; loc.len as usize];
        seg.file
            .read_exact_at(&mut buf, loc.offset as u64)
            .map_err(|e| io_err(format!("read {}", seg.path.display()), e))?;
        match record::decode(&buf) {
            Ok((k, rec, _)) if k == key => Ok(rec),
            Ok(_) => Err(Error::Corrupt(format!(
                "{} offset {}: record holds another key",
                seg.path.display(),
                loc.offset
            ))),
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

    /// Unconditional write (the coordinator's own stamped write).
    pub fn put(&self, key: &[u8], rec: &Record) -> Result<()> {
        let mut shard = self.write_shard(self.shard(key));
        self.append_locked(&mut shard, key, rec)
    }

    /// Newer ClockTime wins: writes `rec` if the key is absent or its stored clock is
    /// strictly older. Returns whether it wrote. Used by replicas, replace and merge.
    pub fn update(&self, key: &[u8], rec: &Record) -> Result<bool> {
        let shard_lock = self.shard(key);
        let mut shard = self.write_shard(shard_lock);
        if let Some(loc) = shard.get(key) {
            if loc.clock >= rec.clock && loc.kind != Kind::Erase as u8 {
                return Ok(false);
            }
        }
        self.append_locked(&mut shard, key, rec)?;
        Ok(true)
    }

    /// Writes a tombstone with `clock` under newer-wins. Returns whether a value was
    /// there (memcached's DELETED versus NOT_FOUND).
    pub fn delete(&self, key: &[u8], clock: u64) -> Result<bool> {
        let shard_lock = self.shard(key);
        let mut shard = self.write_shard(shard_lock);
        let existed = match shard.get(key) {
            Some(loc) if loc.kind == Kind::Value as u8 => {
                if loc.clock >= clock {
                    return Ok(true);
                }
                true
            }
            Some(loc) if loc.kind == Kind::Tombstone as u8 && loc.clock >= clock => {
                return Ok(false)
            }
            _ => false,
        };
        self.append_locked(&mut shard, key, &Record::tombstone(clock))?;
        Ok(existed)
    }

    /// Compares the stored ClockTime with `expected` exactly and writes `rec` if it
    /// matches. A missing key (or a tombstone) is NOT_FOUND, not a match.
    pub fn cas(&self, key: &[u8], expected: u64, rec: &Record) -> Result<CasOutcome> {
        let mut outcome = CasOutcome::NotFound;
        self.modify(key, |cur| match cur {
            Some(r) if r.is_value() && r.clock == expected => {
                outcome = CasOutcome::Stored;
                Some(rec.clone())
            }
            Some(r) if r.is_value() => {
                outcome = CasOutcome::Exists;
                None
            }
            _ => None,
        })?;
        Ok(outcome)
    }

    /// Atomic read-modify-write: `f` sees the current record (tombstones included)
    /// and returns the record to write, or None to leave it. Other writers of the
    /// key wait; readers do not.
    ///
    /// A newest record that is damaged on disk is never served, and must not block
    /// the key for ever either: `f` sees the key as absent (a set stores, an incr
    /// misses), so the next write supersedes the damage. The damage is logged.
    pub fn modify(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&Record>) -> Option<Record>,
    ) -> Result<Modified> {
        let shard_lock = self.shard(key);
        let mut shard = self.write_shard(shard_lock);
        let current = match shard.get(key) {
            Some(loc) if loc.kind != Kind::Erase as u8 => match self.read_at(key, loc) {
                Ok(r) => Some(r),
                Err(Error::Corrupt(why)) => {
                    log::error!("{why}; the key is written as if absent, superseding it");
                    None
                }
                Err(e) => return Err(e),
            },
            _ => None,
        };
        match f(current.as_ref()) {
            Some(rec) => {
                self.append_locked(&mut shard, key, &rec)?;
                Ok(Modified::Written(rec))
            }
            None => Ok(Modified::Unchanged),
        }
    }

    /// Drops `key` locally if its newest record is not newer than `clock` (a replace
    /// trimming what this node no longer owns). Durable: an erase record is written.
    pub fn erase(&self, key: &[u8], clock: u64) -> Result<bool> {
        let shard_lock = self.shard(key);
        let mut shard = self.write_shard(shard_lock);
        match shard.get(key) {
            Some(loc) if loc.kind != Kind::Erase as u8 && loc.clock <= clock => {
                let rec = Record {
                    kind: Kind::Erase,
                    clock: loc.clock,
                    flags: 0,
                    exptime: 0,
                    data: Vec::new(),
                };
                self.append_locked(&mut shard, key, &rec)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Appends `rec` for `key` and points the index at it. The caller holds the
    /// key's shard write lock, so the check it made before still holds.
    fn append_locked(&self, shard: &mut Index, key: &[u8], rec: &Record) -> Result<()> {
        record::check_sizes(key, rec.data.len()).map_err(Error::Invalid)?;
        let mut buf = Vec::with_capacity(record::HEADER_SIZE + key.len() + rec.data.len());
        record::encode(&mut buf, key, rec);
        let loc = self.append_bytes(key, &buf, rec.kind, rec.clock)?;
        self.index_insert(shard, key, loc);
        Ok(())
    }

    /// Writes an encoded record to the active segment, rotating when it is full.
    fn append_bytes(&self, key: &[u8], bytes: &[u8], kind: Kind, clock: u64) -> Result<Loc> {
        let mut log = self.lock_log();
        if log.active.len.load(Ordering::Relaxed) + bytes.len() as u64
            > self.inner.options.segment_size
        {
            self.rotate_locked(&mut log)?;
        }
        let seg = log.active.clone();
        let offset = seg.len.load(Ordering::Relaxed);
        if let Err(e) = seg.file.write_all_at(bytes, offset) {
            // Nothing was acknowledged; cut whatever part landed so the tail stays clean.
            cut_back(&seg, offset);
            let e = io_err(format!("write {}", seg.path.display()), e);
            if matches!(e, Error::Full(_)) && !self.inner.full.swap(true, Ordering::Relaxed) {
                log::error!(
                    "store {} is full; writes fail until space is freed",
                    self.inner.dir.display()
                );
            }
            return Err(e);
        }
        if self.inner.full.swap(false, Ordering::Relaxed) {
            log::warn!(
                "store {}: space is back; writes work again",
                self.inner.dir.display()
            );
        }
        if self.inner.options.sync == SyncPolicy::Always {
            if let Err(e) = seg.file.sync_data() {
                // Refused, so it must not come back after a restart either.
                cut_back(&seg, offset);
                return Err(io_err(format!("fsync {}", seg.path.display()), e));
            }
        } else {
            log.dirty = true;
        }
        seg.len
            .store(offset + bytes.len() as u64, Ordering::Relaxed);
        let loc = Loc {
            clock,
            segment: seg.id,
            offset: offset as u32,
            len: bytes.len() as u32,
            kind: kind as u8,
        };
        push_hint(&mut log.hint, key, loc);
        Ok(loc)
    }

    /// Points the index at `loc` and moves the byte accounting.
    fn index_insert(&self, shard: &mut Index, key: &[u8], loc: Loc) {
        let is_tomb = |k: u8| k != Kind::Value as u8;
        if let Some(old) = shard.insert(key, loc) {
            if let Some(s) = self.segment(old.segment) {
                s.live.fetch_sub(old.len as u64, Ordering::Relaxed);
                s.dead.fetch_add(old.len as u64, Ordering::Relaxed);
                if is_tomb(old.kind) {
                    s.tombstones.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(s) = self.segment(loc.segment) {
            s.live.fetch_add(loc.len as u64, Ordering::Relaxed);
            if is_tomb(loc.kind) {
                s.tombstones.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Seals the active segment (writing its hint file) and starts the next one.
    fn rotate_locked(&self, log: &mut Log) -> Result<()> {
        let old = log.active.clone();
        old.file
            .sync_data()
            .map_err(|e| io_err(format!("fsync {}", old.path.display()), e))?;
        write_hint(&self.inner.dir, &old, &log.hint);
        let seg = create_segment(&self.inner.dir, old.id + 1)?;
        self.inner
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seg.id, seg.clone());
        log.active = seg;
        log.hint.clear();
        log.dirty = false;
        Ok(())
    }

    /// Fsyncs the active segment if anything was written since the last sync.
    pub fn sync(&self) {
        let seg = {
            let mut log = self.lock_log();
            if !log.dirty {
                return;
            }
            log.dirty = false;
            log.active.clone()
        };
        if let Err(e) = seg.file.sync_data() {
            // Tried again at the next sync: the writes it covers are still only in
            // the page cache, and a later success covers them too.
            log::error!("fsync {} failed: {e}; will retry", seg.path.display());
            self.lock_log().dirty = true;
        }
    }

    pub fn stats(&self) -> Stats {
        let mut st = Stats::default();
        for shard in &self.inner.shards {
            let s = self.read_shard(shard);
            s.for_each(|_, loc| {
                if loc.kind == Kind::Value as u8 {
                    st.items += 1
                } else if loc.kind == Kind::Tombstone as u8 {
                    st.tombstones += 1
                }
            });
            st.index_bytes += s.allocated_bytes() as u64;
            st.index_key_bytes += s.key_bytes() as u64;
        }
        for seg in self
            .inner
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let (l, d) = (
                seg.live.load(Ordering::Relaxed),
                seg.dead.load(Ordering::Relaxed),
            );
            st.live_bytes += l;
            st.dead_bytes += d;
            st.segments.push((seg.id, l, d));
        }
        st
    }

    /// Keys with a value (not tombstones).
    pub fn items(&self) -> u64 {
        self.stats().items
    }

    /// A point-in-time view of every record, tombstones included, that does not
    /// stop writers: the index locations are copied under all shard read locks at
    /// once (16 bytes per key), then records are read lazily from segments that stay
    /// open even if compaction deletes their files meanwhile.
    pub fn snapshot(&self) -> Snapshot {
        let guards: Vec<_> = self
            .inner
            .shards
            .iter()
            .map(|s| self.read_shard(s))
            .collect();
        let segments = self
            .inner
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut locs = Vec::new();
        for g in &guards {
            g.for_each(|_, loc| {
                if loc.kind != Kind::Erase as u8 {
                    locs.push((loc.segment, loc.offset, loc.len));
                }
            });
        }
        drop(guards);
        // Reading in file order turns random reads into a sequential scan.
        locs.sort_unstable();
        Snapshot {
            segments,
            locs,
            next: 0,
        }
    }

    /// Rewrites sealed segments that passed the dead-bytes threshold. With
    /// `collect_tombstones`, also collects tombstones older than `-gX` (or `-gN` when
    /// their bookkeeping passes `-gS`): a tombstone may only be dropped from the
    /// oldest segment, so every segment up to the last one holding such tombstones
    /// is rewritten, oldest first. That rewrites live data too, which is why the
    /// caller runs it on the `-gN`/`-gX` cadence rather than on every pass.
    /// `now_secs` is unix time. Returns how many segments were compacted.
    pub fn compact(&self, now_secs: u64, collect_tombstones: bool) -> Result<usize> {
        let _one_at_a_time = self
            .inner
            .maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let o = &self.inner.options;
        let stats = self.stats();
        let gc_age = if stats.tombstones * TOMBSTONE_BOOKKEEPING_BYTES > o.tombstone_mem_limit {
            o.tombstone_min_age
        } else {
            o.tombstone_max_age
        };
        let cutoff = now_secs.saturating_sub(gc_age.as_secs());
        // List under the log lock so a rotation cannot slip the new active segment
        // into the list (log → segment table is the lock order).
        let sealed: Vec<Arc<Segment>> = {
            let log = self.lock_log();
            let active = log.active.id;
            let table = self
                .inner
                .segments
                .read()
                .unwrap_or_else(|p| p.into_inner());
            table.values().filter(|s| s.id < active).cloned().collect()
        };
        let mut gc_through = None;
        if collect_tombstones {
            for (n, seg) in sealed.iter().enumerate().rev() {
                if seg.tombstones.load(Ordering::Relaxed) > 0
                    && self.has_collectible(seg, cutoff)?
                {
                    gc_through = Some(n);
                    break;
                }
            }
        }
        let mut done = 0;
        // Whether every segment before this one in the pass is gone.
        let mut oldest = true;
        for (n, seg) in sealed.iter().enumerate() {
            let (live, dead) = (
                seg.live.load(Ordering::Relaxed),
                seg.dead.load(Ordering::Relaxed),
            );
            let total = live + dead;
            let why = if live == 0 {
                "no live records".to_string()
            } else if dead >= o.compact_min_bytes && dead * 100 >= total * o.compact_ratio_percent {
                format!(
                    "{}% dead ({dead} of {total} bytes)",
                    dead * 100 / total.max(1)
                )
            } else if gc_through.is_some_and(|g| n <= g) && oldest {
                format!("collecting tombstones older than {}s", gc_age.as_secs())
            } else {
                oldest = false;
                continue;
            };
            log::info!("compacting segment {} ({why})", seg.id);
            self.compact_segment(seg, oldest, cutoff)?;
            done += 1;
        }
        Ok(done)
    }

    fn has_collectible(&self, seg: &Arc<Segment>, cutoff: u64) -> Result<bool> {
        let mut any = false;
        self.for_each_record(seg, |_, _, rec, _| {
            if rec.kind != Kind::Value && (rec.kind == Kind::Erase || rec.clock >> 32 < cutoff) {
                any = true;
            }
        })?;
        Ok(any)
    }

    fn compact_segment(&self, seg: &Arc<Segment>, oldest: bool, cutoff: u64) -> Result<()> {
        let mut moves = Vec::new();
        self.for_each_record(seg, |off, key, rec, len| {
            moves.push((off, key.to_vec(), rec, len))
        })?;
        for (off, key, rec, len) in moves {
            let mut shard = self.write_shard(self.shard(&key));
            let Some(loc) = shard.get(&key) else { continue };
            if loc.segment != seg.id || loc.offset != off as u32 {
                continue; // superseded
            }
            let collectible = rec.kind == Kind::Erase
                || (rec.kind == Kind::Tombstone && rec.clock >> 32 < cutoff);
            if oldest && collectible {
                // Every older record of this key was in segments already gone, and
                // this one is the newest: dropping it cannot bring anything back.
                shard.remove(&key);
                seg.live.fetch_sub(len as u64, Ordering::Relaxed);
                seg.dead.fetch_add(len as u64, Ordering::Relaxed);
                seg.tombstones.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            let mut buf = Vec::with_capacity(len);
            record::encode(&mut buf, &key, &rec);
            let new = self.append_bytes(&key, &buf, rec.kind, rec.clock)?;
            self.index_insert(&mut shard, &key, new);
        }
        // Make the copies durable before the originals go.
        let active = self.lock_log().active.clone();
        active
            .file
            .sync_data()
            .map_err(|e| io_err(format!("fsync {}", active.path.display()), e))?;
        self.inner
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&seg.id);
        let _ = std::fs::remove_file(hint_path(&self.inner.dir, seg.id));
        std::fs::remove_file(&seg.path)
            .map_err(|e| io_err(format!("remove {}", seg.path.display()), e))?;
        Ok(())
    }

    /// Reads every intact record of a sealed segment in order.
    fn for_each_record(
        &self,
        seg: &Segment,
        mut f: impl FnMut(usize, &[u8], Record, usize),
    ) -> Result<()> {
        let len = seg.len.load(Ordering::Relaxed) as usize;
        let mut data = vec![0u8; len];
        seg.file
            .read_exact_at(&mut data, 0)
            .map_err(|e| io_err(format!("read {}", seg.path.display()), e))?;
        let mut off = 0;
        while off < len {
            match record::decode(&data[off..]) {
                Ok((key, rec, n)) => {
                    f(off, key, rec, n);
                    off += n;
                }
                Err(_) => match resync(&data, off + 1) {
                    Some(next) => off = next,
                    None => break,
                },
            }
        }
        Ok(())
    }

    /// Writes a consistent copy of the store to `PATH-<suffix>` while it keeps
    /// serving: the active segment is sealed, then every segment and hint is hard
    /// linked (they are immutable from then on) into a temporary directory that is
    /// renamed into place. Returns the backup's path.
    pub fn backup(&self, suffix: &str) -> Result<PathBuf> {
        if suffix.is_empty() || suffix.contains('/') || suffix.contains('\0') {
            return Err(Error::Invalid(format!(
                "backup suffix '{suffix}' must be non-empty without '/'"
            )));
        }
        let name = format!(
            "{}-{suffix}",
            self.inner
                .dir
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let _one_at_a_time = self
            .inner
            .maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let dst = self.inner.dir.with_file_name(&name);
        let tmp = self.inner.dir.with_file_name(format!("{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)
            .map_err(|e| io_err(format!("create {}", tmp.display()), e))?;
        {
            let mut log = self.lock_log();
            self.rotate_locked(&mut log)?;
            // Holding the log lock keeps compaction (which appends) from deleting a
            // segment between listing and linking.
            let segments = self
                .inner
                .segments
                .read()
                .unwrap_or_else(|p| p.into_inner());
            for seg in segments.values().filter(|s| s.id != log.active.id) {
                let d = tmp.join(seg.path.file_name().unwrap_or_default());
                std::fs::hard_link(&seg.path, &d)
                    .or_else(|_| std::fs::copy(&seg.path, &d).map(|_| ()))
                    .map_err(|e| io_err(format!("link {}", seg.path.display()), e))?;
                let h = hint_path(&self.inner.dir, seg.id);
                if h.exists() {
                    let _ = std::fs::hard_link(&h, tmp.join(h.file_name().unwrap_or_default()));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::rename(&tmp, &dst)
            .map_err(|e| io_err(format!("rename to {}", dst.display()), e))?;
        Ok(dst)
    }

    /// Whether the last write found the disk full.
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
        std::fs::read_to_string(self.inner.dir.join(MEMBER_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Records that the store belongs to a cluster now (`now` in unix seconds):
    /// written to a temporary file, synced, and renamed over `member`.
    pub fn mark_member(&self, now: u64) -> Result<()> {
        let path = self.inner.dir.join(MEMBER_FILE);
        crate::fs::write_atomically(&path, now.to_string().as_bytes())
            .map_err(|e| io_err(format!("write {}", path.display()), e))
    }

    /// Drops every record (a store too stale to serve, see the server's re-sync):
    /// an erase record per key, so the store reopens empty. Returns how many.
    pub fn erase_all(&self) -> Result<u64> {
        let mut n = 0;
        for item in self.snapshot() {
            let Ok((key, rec)) = item else { continue };
            if self.erase(&key, rec.clock)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Rewrites the lock file with this process's pid: after daemonizing, the lock
    /// (inherited across fork) belongs to the child.
    pub fn claim_lock(&self) {
        let mut f = &self.inner._lock;
        let _ = f.set_len(0);
        let _ = f.write_all_at(std::process::id().to_string().as_bytes(), 0);
        let _ = f.flush();
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
        let _ = log.active.file.sync_data();
        // LOCK stays: unlinking it while holding the flock would let two later
        // processes lock two different files. Emptying it marks a clean close; the
        // flock goes with the descriptor.
        let _ = self._lock.set_len(0);
    }
}

/// memcached's three answers to a cas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    Stored,
    Exists,
    NotFound,
}

/// Records of a point in time; see [`Store::snapshot`].
pub struct Snapshot {
    segments: BTreeMap<u32, Arc<Segment>>,
    locs: Vec<(u32, u32, u32)>,
    next: usize,
}

impl Snapshot {
    pub fn len(&self) -> usize {
        self.locs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.locs.is_empty()
    }
}

impl Iterator for Snapshot {
    /// (key, record), or the error of a damaged record (which is skipped).
    type Item = Result<(Vec<u8>, Record)>;

    fn next(&mut self) -> Option<Self::Item> {
        let &(seg, off, len) = self.locs.get(self.next)?;
        self.next += 1;
        let Some(s) = self.segments.get(&seg) else {
            return Some(Err(Error::Corrupt(format!("segment {seg} vanished"))));
        };
        let mut buf = vec![0u8; len as usize];
        if let Err(e) = s.file.read_exact_at(&mut buf, off as u64) {
            return Some(Err(io_err(format!("read {}", s.path.display()), e)));
        }
        Some(match record::decode(&buf) {
            Ok((k, rec, _)) => Ok((k.to_vec(), rec)),
            Err(why) => Err(Error::Corrupt(format!(
                "{} offset {off}: damaged record ({why:?})",
                s.path.display()
            ))),
        })
    }
}

fn create_segment(dir: &Path, id: u32) -> Result<Arc<Segment>> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_err(format!("create {}", path.display()), e))?;
    // The directory entry must survive a crash too.
    let _ = crate::fs::sync_dir(dir);
    Ok(Arc::new(Segment {
        id,
        path,
        file,
        live: AtomicU64::new(0),
        dead: AtomicU64::new(0),
        tombstones: AtomicU64::new(0),
        len: AtomicU64::new(0),
    }))
}

/// Takes the store's lock: flock(2) on PATH/LOCK, which the kernel releases when
/// the holder dies, so a lock file left by a killed process is stale and reclaimed.
fn take_lock(dir: &Path) -> std::result::Result<File, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let previous = std::fs::read_to_string(&path).ok();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
    // A lock that was just released can still be held for a moment by a child this
    // process forked, between its fork and its exec (close-on-exec only acts at
    // exec), so retry briefly before calling the store busy.
    let locked = (0..LOCK_RETRIES).any(|attempt| {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: flock on a descriptor we own.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    });
    if !locked {
        let holder = previous.as_deref().map(str::trim).unwrap_or("?");
        return Err(format!(
            "store {} is in use by process {holder} (lock file {})",
            dir.display(),
            path.display()
        ));
    }
    if let Some(pid) = previous.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        log::warn!(
            "store {}: reclaimed a stale lock left by process {pid}",
            dir.display()
        );
    }
    f.set_len(0)
        .map_err(|e| format!("cannot write lock file {}: {e}", path.display()))?;
    write!(f, "{}", std::process::id())
        .map_err(|e| format!("cannot write lock file {}: {e}", path.display()))?;
    Ok(f)
}

/// The first offset at or after `from` where an intact record starts.
fn resync(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(record::HEADER_SIZE - 1))
        .find(|&o| record::decode(&data[o..]).is_ok())
}

/// Rebuilds the index from a segment's records. For the last segment a damaged
/// tail with nothing intact after it is a torn write and is cut off.
fn scan_segment(
    seg: &Arc<Segment>,
    is_last: bool,
    shards: &[RwLock<Index>],
    segments: &BTreeMap<u32, Arc<Segment>>,
    hint: &mut Vec<u8>,
    report: &mut OpenReport,
) -> std::result::Result<(), String> {
    let size = seg
        .file
        .metadata()
        .map_err(|e| format!("stat {}: {e}", seg.path.display()))?
        .len() as usize;
    let mut data = vec![0u8; size];
    seg.file
        .read_exact_at(&mut data, 0)
        .map_err(|e| format!("read {}: {e}", seg.path.display()))?;
    let mut off = 0;
    while off < size {
        match record::decode(&data[off..]) {
            Ok((key, rec, n)) => {
                let loc = Loc {
                    clock: rec.clock,
                    segment: seg.id,
                    offset: off as u32,
                    len: n as u32,
                    kind: rec.kind as u8,
                };
                apply_loc(shards, segments, seg, key, loc);
                push_hint(hint, key, loc);
                report.records += 1;
                off += n;
            }
            Err(why) => match resync(&data, off + 1) {
                Some(next) => {
                    log::error!(
                        "{}: damaged record at offset {off} ({why:?}); skipped {} bytes to the next intact record",
                        seg.path.display(),
                        next - off
                    );
                    report.damaged_records += 1;
                    seg.dead.fetch_add((next - off) as u64, Ordering::Relaxed);
                    off = next;
                }
                None if is_last => {
                    let cut = size - off;
                    log::warn!(
                        "{}: cut {cut} bytes of torn tail at offset {off} ({why:?})",
                        seg.path.display()
                    );
                    seg.file
                        .set_len(off as u64)
                        .map_err(|e| format!("truncate {}: {e}", seg.path.display()))?;
                    let _ = seg.file.sync_all();
                    report.torn_tail_bytes += cut as u64;
                    break;
                }
                None => {
                    log::error!(
                        "{}: {} damaged bytes at the end of a sealed segment ({why:?}); not served",
                        seg.path.display(),
                        size - off
                    );
                    report.damaged_records += 1;
                    seg.dead.fetch_add((size - off) as u64, Ordering::Relaxed);
                    off = size;
                    break;
                }
            },
        }
    }
    seg.len
        .store(if is_last { off } else { size } as u64, Ordering::Relaxed);
    Ok(())
}

/// Applies one record found on open: later records win (log order is write order).
fn apply_loc(
    shards: &[RwLock<Index>],
    segments: &BTreeMap<u32, Arc<Segment>>,
    seg: &Arc<Segment>,
    key: &[u8],
    loc: Loc,
) {
    let mut shard = shards[shard_of(key)]
        .write()
        .unwrap_or_else(|p| p.into_inner());
    let is_tomb = |k: u8| k != Kind::Value as u8;
    if let Some(old) = shard.insert(key, loc) {
        let s = if old.segment == seg.id {
            Some(seg)
        } else {
            segments.get(&old.segment)
        };
        if let Some(s) = s {
            s.live.fetch_sub(old.len as u64, Ordering::Relaxed);
            s.dead.fetch_add(old.len as u64, Ordering::Relaxed);
            if is_tomb(old.kind) {
                s.tombstones.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
    seg.live.fetch_add(loc.len as u64, Ordering::Relaxed);
    if is_tomb(loc.kind) {
        seg.tombstones.fetch_add(1, Ordering::Relaxed);
    }
}

/// Hint entry: key length u16, kind u8, offset u32, length u32, clock u64, key.
fn push_hint(hint: &mut Vec<u8>, key: &[u8], loc: Loc) {
    hint.extend_from_slice(&(key.len() as u16).to_le_bytes());
    hint.push(loc.kind);
    hint.extend_from_slice(&loc.offset.to_le_bytes());
    hint.extend_from_slice(&loc.len.to_le_bytes());
    hint.extend_from_slice(&loc.clock.to_le_bytes());
    hint.extend_from_slice(key);
}

/// Hint file: magic, segment length u64, entries, crc32 of all that. Written to a
/// temporary name and renamed, so a hint is whole or absent.
fn write_hint(dir: &Path, seg: &Segment, entries: &[u8]) {
    let mut buf = Vec::with_capacity(entries.len() + 16);
    buf.extend_from_slice(HINT_MAGIC);
    buf.extend_from_slice(&seg.len.load(Ordering::Relaxed).to_le_bytes());
    buf.extend_from_slice(entries);
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    // A hint fails mostly on a full disk; write_atomically leaves no part behind
    // to hold the space the writes waiting for it need.
    if let Err(e) = crate::fs::write_atomically(&hint_path(dir, seg.id), &buf) {
        log::warn!(
            "cannot write hint for segment {}: {e}; it will be scanned on open",
            seg.id
        );
    }
}

/// Loads a sealed segment's index entries from its hint file. False (with a
/// warning) when the hint is missing, damaged, or does not match the segment.
fn load_hint(
    dir: &Path,
    seg: &Arc<Segment>,
    shards: &[RwLock<Index>],
    segments: &BTreeMap<u32, Arc<Segment>>,
) -> bool {
    let path = hint_path(dir, seg.id);
    let Ok(buf) = std::fs::read(&path) else {
        return false;
    };
    let size = seg.file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let fail = |why: &str| {
        log::warn!(
            "{}: {why}; ignoring the hint and scanning the segment",
            path.display()
        );
        false
    };
    if buf.len() < 16 || &buf[..4] != HINT_MAGIC {
        return fail("not a hint file");
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return fail("checksum mismatch");
    }
    if u64::from_le_bytes(body[4..12].try_into().expect("8 bytes")) != size {
        return fail("segment length differs from the hint's");
    }
    // Parse fully before applying, so a bad entry leaves the index untouched.
    let mut entries = Vec::new();
    let mut p = 12;
    while p < body.len() {
        if p + 19 > body.len() {
            return fail("truncated entry");
        }
        let klen = u16::from_le_bytes([body[p], body[p + 1]]) as usize;
        let kind = body[p + 2];
        let offset = u32::from_le_bytes(body[p + 3..p + 7].try_into().expect("4"));
        let len = u32::from_le_bytes(body[p + 7..p + 11].try_into().expect("4"));
        let clock = u64::from_le_bytes(body[p + 11..p + 19].try_into().expect("8"));
        if p + 19 + klen > body.len()
            || offset as u64 + len as u64 > size
            || !(1..=3).contains(&kind)
        {
            return fail("entry out of range");
        }
        entries.push((
            &body[p + 19..p + 19 + klen],
            Loc {
                clock,
                segment: seg.id,
                offset,
                len,
                kind,
            },
        ));
        p += 19 + klen;
    }
    for (key, loc) in entries {
        apply_loc(shards, segments, seg, key, loc);
    }
    seg.len.store(size, Ordering::Relaxed);
    true
}
