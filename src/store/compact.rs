//! Compaction: rewriting segments that are mostly dead, and collecting old
//! tombstones (see the module documentation of the store for when that is safe).

use super::hint::hint_path;
use super::record::{Kind, Record};
use super::segment::Segment;
use super::{io_err, Result, Store};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What `-gS` counts per tombstone: its index entry and slot, keys aside.
const TOMBSTONE_BOOKKEEPING_BYTES: u64 = 32;

impl Store {
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
        // From the segments' counts (erases included, which compaction collects
        // too), not a walk of the index on every pass.
        let tombstones = self.tombstone_count();
        let gc_age = if tombstones * TOMBSTONE_BOOKKEEPING_BYTES > o.tombstone_mem_limit {
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
            self.inner.compactions.fetch_add(1, Ordering::Relaxed);
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

    /// Moves one record of the segment being compacted to the active segment, or
    /// drops it: unless a newer record of its key superseded it.
    #[allow(clippy::too_many_arguments)]
    fn move_record(
        &self,
        seg: &Segment,
        oldest: bool,
        cutoff: u64,
        off: usize,
        key: &[u8],
        rec: &Record,
        raw: &[u8],
    ) -> Result<()> {
        let mut shard = self.write_shard(self.shard(key));
        let place = shard.place(key);
        let loc = match shard.at(&place) {
            Some(loc) if loc.segment == seg.id && loc.offset == off as u32 => loc,
            _ => return Ok(()), // superseded
        };
        let collectible =
            rec.kind == Kind::Erase || (rec.kind == Kind::Tombstone && rec.clock >> 32 < cutoff);
        if oldest && collectible {
            // Every older record of this key was in segments already gone, and
            // this one is the newest: dropping it cannot bring anything back.
            shard.remove(key);
            seg.unindexed(&loc);
            return Ok(());
        }
        // A record does not depend on where it lies: its bytes are valid anywhere
        // (the walk checked them, and a sealed segment does not change).
        let header = Record::header(rec.kind, rec.clock, rec.exptime);
        let new = self.append_bytes(key, raw, &header)?;
        self.index_set(&mut shard, place, key, new);
        Ok(())
    }

    fn compact_segment(&self, seg: &Arc<Segment>, oldest: bool, cutoff: u64) -> Result<()> {
        // Each record is moved as the walk reaches it, its bytes copied as they
        // lie in the segment's map: compaction holds neither a segment's values
        // nor a list of its keys.
        let mut failed = None;
        self.for_each_record(seg, |off, key, rec, raw| {
            if failed.is_none() {
                if let Err(e) = self.move_record(seg, oldest, cutoff, off, key, &rec, raw) {
                    failed = Some(e);
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
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
}
