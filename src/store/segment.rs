//! Segment files: creating one, appending records to the active one (sealing it
//! past the segment size), fsyncing it, and reading a sealed one record by record.

use super::hint::{push_hint, write_hint};
use super::index::Loc;
use super::map::Map;
use super::record::{self, Record};
use super::{io_err, Error, Result, Store};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// One segment file and its live/dead accounting.
pub(super) struct Segment {
    pub(super) id: u32,
    pub(super) path: PathBuf,
    pub(super) file: File,
    /// Bytes of records the index points to.
    pub(super) live: AtomicU64,
    /// Bytes of records superseded or removed.
    pub(super) dead: AtomicU64,
    /// Indexed tombstones and erases in this segment.
    pub(super) tombstones: AtomicU64,
    /// Indexed values in this segment, and those of them with an expiry time: the
    /// store's item count is their sum, without a walk of the index.
    pub(super) values: AtomicU64,
    pub(super) expiring: AtomicU64,
    /// Bytes written (for the active segment, grows).
    pub(super) len: AtomicU64,
    /// The file mapped for reading, and for appending to the active segment (see
    /// `map.rs`); None where mapping failed.
    pub(super) map: Option<Map>,
    /// Bytes of the file allocated for appends through the map (the file's size
    /// then, zeros past `len`).
    pub(super) allocated: AtomicU64,
    /// False once the file system has said it cannot allocate (no `fallocate`):
    /// appends then go by `pwrite` without asking again each time.
    pub(super) can_allocate: AtomicBool,
}

/// Changes to a segment's counts, summed where many come together (a store being
/// opened) and added to the segment at once. Each field wraps: a decrease is a
/// large addition.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    live: u64,
    dead: u64,
    tombstones: u64,
    values: u64,
    expiring: u64,
}

impl Tally {
    /// The index now points at `loc`.
    pub(super) fn indexed(&mut self, loc: &Loc) {
        self.live = self.live.wrapping_add(loc.len as u64);
        self.count(loc, 1);
    }

    /// The index no longer points at `loc`.
    pub(super) fn unindexed(&mut self, loc: &Loc) {
        self.live = self.live.wrapping_sub(loc.len as u64);
        self.dead = self.dead.wrapping_add(loc.len as u64);
        self.count(loc, u64::MAX); // minus one, wrapping
    }

    fn count(&mut self, loc: &Loc, one: u64) {
        if loc.kind != record::Kind::Value as u8 {
            self.tombstones = self.tombstones.wrapping_add(one);
            return;
        }
        self.values = self.values.wrapping_add(one);
        if loc.exptime != 0 {
            self.expiring = self.expiring.wrapping_add(one);
        }
    }
}

impl Segment {
    /// The index now points at `loc`, a record of this segment.
    pub(super) fn indexed(&self, loc: &Loc) {
        let mut t = Tally::default();
        t.indexed(loc);
        self.add(&t);
    }

    /// The index no longer points at `loc`, a record of this segment.
    pub(super) fn unindexed(&self, loc: &Loc) {
        let mut t = Tally::default();
        t.unindexed(loc);
        self.add(&t);
    }

    /// Adds `t` to the counts; a field that did not change is not touched.
    pub(super) fn add(&self, t: &Tally) {
        for (counter, by) in [
            (&self.live, t.live),
            (&self.dead, t.dead),
            (&self.tombstones, t.tombstones),
            (&self.values, t.values),
            (&self.expiring, t.expiring),
        ] {
            if by != 0 {
                counter.fetch_add(by, Ordering::Relaxed);
            }
        }
    }

    /// The `len` bytes at `offset` of a record the index points to: from the map
    /// where they lie inside it, else read into `buf`.
    pub(super) fn bytes_at<'a>(
        &'a self,
        offset: u32,
        len: u32,
        buf: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        let written = self.len.load(Ordering::Acquire);
        if let Some(b) = self
            .map
            .as_ref()
            .and_then(|m| m.get(offset as u64, len as usize, written))
        {
            return Ok(b);
        }
        buf.resize(len as usize, 0);
        self.file
            .read_exact_at(buf, offset as u64)
            .map_err(|e| io_err(format!("read {}", self.path.display()), e))?;
        Ok(&buf[..])
    }
}

/// Space for appends through the map is allocated this much at a time: one
/// `fallocate` per MiB instead of a `pwrite` per record. A full disk shows here.
pub(super) const ALLOCATE_BYTES: u64 = 1 << 20;

/// How much of a segment that may still grow is mapped: all it may hold, a full
/// segment and one record past it.
pub(super) fn growing_map_bytes(segment_size: u64) -> usize {
    (segment_size as usize).saturating_add(record::RECORD_SIZE_MAX)
}

/// The active segment and the hint entries of what it holds.
pub(super) struct Log {
    pub(super) active: Arc<Segment>,
    pub(super) hint: Vec<u8>,
    pub(super) dirty: bool,
}

pub(super) fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:09}.data"))
}

/// Cuts a segment back to `offset`, dropping a record that was not acknowledged.
/// Should the cut fail, the next write overwrites the bytes and a reopen cuts a
/// torn tail, so it is only logged.
pub(super) fn cut_back(seg: &Segment, offset: u64) {
    // Appends past here allocate again before they touch the map.
    seg.allocated.fetch_min(offset, Ordering::Relaxed);
    if let Err(e) = seg.file.set_len(offset) {
        log::warn!("cannot cut {} back to {offset}: {e}", seg.path.display());
    }
}

/// Writes `bytes` at `offset` of the active segment: copied into its map when the
/// file is allocated that far (allocating the next stretch when it is not), else
/// with `pwrite`. The caller holds the log's lock.
fn write_record(
    seg: &Segment,
    offset: u64,
    bytes: &[u8],
    segment_size: u64,
) -> std::io::Result<()> {
    let end = offset + bytes.len() as u64;
    if let Some(map) = seg.map.as_ref().filter(|m| m.is_writable()) {
        let mut allocated = seg.allocated.load(Ordering::Relaxed);
        if end > allocated {
            // Never more at once than a segment holds.
            let step = ALLOCATE_BYTES.min(segment_size).max(1);
            let want = end.div_ceil(step) * step;
            if seg.can_allocate.load(Ordering::Relaxed) {
                match allocate(&seg.file, allocated, want - allocated) {
                    Ok(()) => {
                        seg.allocated.store(want, Ordering::Relaxed);
                        allocated = want;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                        log::info!(
                            "{}: the file system cannot allocate ahead; appending with pwrite",
                            seg.path.display()
                        );
                        seg.can_allocate.store(false, Ordering::Relaxed);
                    }
                    // A full disk: pwrite below says so, and a later append
                    // tries again once space may be back.
                    Err(_) => {}
                }
            }
        }
        if map.put(offset, bytes, allocated) {
            return Ok(());
        }
    }
    seg.file.write_all_at(bytes, offset)
}

/// Allocates `len` bytes of `file` from `offset`, growing it: afterwards the pages
/// exist, so writing them through a map cannot meet a full disk.
fn allocate(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor we hold.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset as i64, len as i64) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Creates segment `id`, mapped for `map_bytes` (see [`growing_map_bytes`]).
pub(super) fn create_segment(dir: &Path, id: u32, map_bytes: usize) -> Result<Arc<Segment>> {
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
        map: Map::new(&file, map_bytes, true),
        allocated: AtomicU64::new(0),
        can_allocate: AtomicBool::new(true),
        file,
        live: AtomicU64::new(0),
        dead: AtomicU64::new(0),
        tombstones: AtomicU64::new(0),
        values: AtomicU64::new(0),
        expiring: AtomicU64::new(0),
        len: AtomicU64::new(0),
    }))
}

/// The first offset at or after `from` where an intact record starts.
pub(super) fn resync(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(record::HEADER_SIZE - 1))
        .find(|&o| record::decode(&data[o..]).is_ok())
}

impl Store {
    /// Writes `bytes`, the encoding of `rec`, to the active segment, rotating when
    /// it is full.
    pub(super) fn append_bytes(&self, key: &[u8], bytes: &[u8], rec: &Record) -> Result<Loc> {
        let mut log = self.lock_log();
        if log.active.len.load(Ordering::Relaxed) + bytes.len() as u64
            > self.inner.options.segment_size
        {
            self.rotate_locked(&mut log)?;
        }
        let seg = log.active.clone();
        let offset = seg.len.load(Ordering::Relaxed);
        if let Err(e) = write_record(&seg, offset, bytes, self.inner.options.segment_size) {
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
        // Made durable later: by the committer under `#sync=always` (see
        // `commit`), by the sync thread, or on close.
        log.dirty = true;
        seg.len
            .store(offset + bytes.len() as u64, Ordering::Relaxed);
        let loc = Loc {
            clock: rec.clock,
            segment: seg.id,
            offset: offset as u32,
            len: bytes.len() as u32,
            kind: rec.kind as u8,
            exptime: rec.exptime,
        };
        push_hint(&mut log.hint, key, loc);
        Ok(loc)
    }

    /// Seals the active segment (writing its hint file) and starts the next one.
    pub(super) fn rotate_locked(&self, log: &mut Log) -> Result<()> {
        let old = log.active.clone();
        // Space allocated past the last record goes: a sealed segment ends with it.
        let len = old.len.load(Ordering::Relaxed);
        if old.allocated.load(Ordering::Relaxed) > len {
            old.file
                .set_len(len)
                .map_err(|e| io_err(format!("truncate {}", old.path.display()), e))?;
            old.allocated.store(len, Ordering::Relaxed);
        }
        old.file
            .sync_data()
            .map_err(|e| io_err(format!("fsync {}", old.path.display()), e))?;
        write_hint(
            &self.inner.dir,
            old.id,
            old.len.load(Ordering::Relaxed),
            &log.hint,
        );
        let seg = create_segment(
            &self.inner.dir,
            old.id + 1,
            growing_map_bytes(self.inner.options.segment_size),
        )?;
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
        if !self.lock_log().dirty {
            return;
        }
        if let Err(e) = self.sync_active() {
            // Tried again at the next sync: the writes it covers are still only in
            // the page cache, and a later success covers them too.
            log::error!("{e}; will retry");
        }
    }

    /// Reads every intact record of a sealed segment in order: its offset, key,
    /// record, and the bytes it takes in the segment.
    pub(super) fn for_each_record(
        &self,
        seg: &Segment,
        mut f: impl FnMut(usize, &[u8], Record, &[u8]),
    ) -> Result<()> {
        let len = seg.len.load(Ordering::Relaxed) as usize;
        // Through the segment's map: the bytes stay in the page cache, and a
        // segment of any size costs no memory of the process's own. (Only where
        // the system refused the map are they read into a buffer.)
        let mut buf = Vec::new();
        let data = seg.bytes_at(0, len as u32, &mut buf)?;
        let mut off = 0;
        while off < len {
            match record::decode(&data[off..]) {
                Ok((key, rec, n)) => {
                    f(off, key, rec, &data[off..off + n]);
                    off += n;
                }
                Err(_) => match resync(data, off + 1) {
                    Some(next) => off = next,
                    None => break,
                },
            }
        }
        Ok(())
    }
}
