//! Compaction: rewriting segments that are mostly dead, and collecting old
//! tombstones (see the module documentation of the store for when that is safe).

use super::hint::hint_path;
use super::record::{self, Kind};
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
        // Tombstones only: the time is irrelevant to them.
        let stats = self.stats(u32::try_from(now_secs).unwrap_or(u32::MAX));
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
            let new = self.append_bytes(&key, &buf, &rec)?;
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
}
