//! Point-in-time views of a store that keeps serving: the snapshot a replace or a
//! re-sync reads, and the backup an operator asks for.

use super::hint::hint_path;
use super::record::{self, Kind, Record, Stored};
use super::segment::Segment;
use super::{io_err, Error, Result, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

impl Store {
    /// A view of every record, tombstones included, that does not stop writers:
    /// the index locations are copied shard by shard under each shard's read lock
    /// (16 bytes per key), so that a writer waits for one shard's copy at most,
    /// not the whole index's; then records are read lazily from segments that stay
    /// open even if compaction deletes their files meanwhile. Each shard's part is
    /// a point in time; a write made during the copy may be in it or not (a
    /// replace sends writes made meanwhile to the new owners itself).
    pub fn snapshot(&self) -> Snapshot {
        let mut segments = BTreeMap::new();
        let mut locs = Vec::new();
        for shard in &self.inner.shards {
            let shard = self.read_shard(shard);
            // Taken under the shard's lock: compaction cannot have deleted a
            // segment its locations point into.
            let now = self
                .inner
                .segments
                .read()
                .unwrap_or_else(|p| p.into_inner());
            segments.extend(now.iter().map(|(&id, seg)| (id, seg.clone())));
            drop(now);
            shard.for_each(|_, loc| {
                if loc.kind != Kind::Erase as u8 {
                    locs.push((file_order(loc.segment, loc.offset), loc.len));
                }
            });
        }
        // Reading in file order turns random reads into a sequential scan.
        locs.sort_unstable_by_key(|&(at, _)| at);
        Snapshot {
            segments,
            locs,
            next: 0,
            buf: Vec::new(),
        }
    }

    /// Calls `f` with every key and the clock of its record, tombstones included,
    /// erased keys not: what a replace's delete phase decides on, read from the
    /// index alone. A shard's keys are copied under its read lock and `f` runs
    /// after, so a writer waits no longer than that copy.
    pub fn for_each_key(&self, mut f: impl FnMut(&[u8], u64)) {
        let (mut keys, mut ends) = (Vec::new(), Vec::new());
        for shard in &self.inner.shards {
            keys.clear();
            ends.clear();
            self.read_shard(shard).for_each(|key, loc| {
                if loc.kind != Kind::Erase as u8 {
                    keys.extend_from_slice(key);
                    ends.push((keys.len(), loc.clock));
                }
            });
            let mut start = 0;
            for &(end, clock) in &ends {
                f(&keys[start..end], clock);
                start = end;
            }
        }
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
        // A flush point goes with the data it hides, or a restore brings it back.
        let flush = self.inner.dir.join(super::FLUSH_FILE);
        if flush.exists() {
            std::fs::copy(&flush, tmp.join(super::FLUSH_FILE))
                .map_err(|e| io_err(format!("copy {}", flush.display()), e))?;
        }
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::rename(&tmp, &dst)
            .map_err(|e| io_err(format!("rename to {}", dst.display()), e))?;
        Ok(dst)
    }
}

/// A record's place as one number that sorts in file order: its segment, then its
/// offset. (One integer compares faster than a tuple, and a snapshot sorts a
/// million of them before it reads anything.)
fn file_order(segment: u32, offset: u32) -> u64 {
    (u64::from(segment) << 32) | u64::from(offset)
}

/// Records of a point in time; see [`Store::snapshot`].
pub struct Snapshot {
    segments: BTreeMap<u32, Arc<Segment>>,
    /// (place in [`file_order`], length)
    locs: Vec<(u64, u32)>,
    next: usize,
    /// Where a record is read when its segment is not mapped.
    buf: Vec<u8>,
}

impl Snapshot {
    pub fn len(&self) -> usize {
        self.locs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.locs.is_empty()
    }
}

impl Snapshot {
    /// The next record whose key `wanted` accepts, or the error of a damaged
    /// record. Every record is checked, the ones passed over too (a damaged one
    /// may be one that was wanted), and none is copied.
    pub fn next_where(
        &mut self,
        mut wanted: impl FnMut(&[u8]) -> bool,
    ) -> Option<Result<Stored<'_>>> {
        // The record is found first and read again after: a borrow of `buf` that
        // outlives one turn of a loop is one the borrow checker cannot follow.
        let (seg, off, len) = loop {
            let &(at, len) = self.locs.get(self.next)?;
            self.next += 1;
            let (seg, off) = ((at >> 32) as u32, at as u32);
            let Some(s) = self.segments.get(&seg) else {
                return Some(Err(Error::Corrupt(format!("segment {seg} vanished"))));
            };
            match s.bytes_at(off, len, &mut self.buf).map(record::check) {
                Ok(Ok((key, _, _))) if !wanted(key) => continue,
                _ => break (s, off, len),
            }
        };
        let checked = seg.bytes_at(off, len, &mut self.buf).and_then(|bytes| {
            record::stored(bytes).map_err(|why| {
                Error::Corrupt(format!(
                    "{} offset {off}: damaged record ({why:?})",
                    seg.path.display()
                ))
            })
        });
        Some(checked)
    }
}

impl Iterator for Snapshot {
    /// (key, record), or the error of a damaged record (which is skipped).
    type Item = Result<(Vec<u8>, Record)>;

    fn next(&mut self) -> Option<Self::Item> {
        let s = match self.next_where(|_| true)? {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        let mut rec = s.head;
        rec.data = s.bytes[record::HEADER_SIZE + s.key.len()..].to_vec();
        Some(Ok((s.key.to_vec(), rec)))
    }
}
