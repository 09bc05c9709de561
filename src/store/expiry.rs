//! Counting what a client can see, and reclaiming what it cannot: values past their
//! exptime and values a `flush_all` hides. The store keeps no clock and no flush
//! rule of its own: callers pass the time and say what a flush hides.
//!
//! An expired value is replaced by a tombstone with the value's own clock, not by
//! an erase. Another replica may still hold an older version of the key (it missed
//! the write that set the exptime, say while it was down), and a replace or a
//! pull would offer it to this store: the tombstone wins newer-wins as the expired
//! value did, and is copied and collected like any delete (not while a server is
//! fault), whereas an erase would take the older version. A flushed value is
//! erased: every older version of its key is flushed too, so nothing can return.

use super::record::{Kind, Record};
use super::{Result, Stats, Store};
use crate::record::is_expired;
use std::sync::atomic::Ordering;

/// Keys one [`Store::reclaim_expired`] call handles at most, so that a caller can
/// stop between calls; each call also scans the whole index once.
pub const RECLAIM_BATCH: usize = 16_384;

/// What a reclaim pass dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reclaimed {
    /// Expired values, now tombstones.
    pub expired: usize,
    /// Values under a flush, now erased.
    pub flushed: usize,
}

impl Reclaimed {
    pub fn total(&self) -> usize {
        self.expired + self.flushed
    }
}

impl Store {
    /// The store's counters; a value past its exptime at `now` (unix seconds)
    /// counts as expired, not as an item.
    pub fn stats(&self, now: u32) -> Stats {
        let mut st = Stats::default();
        for shard in &self.inner.shards {
            let s = self.read_shard(shard);
            s.for_each(|_, loc| {
                if loc.kind == Kind::Value as u8 {
                    if is_expired(loc.exptime, now) {
                        st.expired += 1
                    } else {
                        st.items += 1
                    }
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

    /// Keys with a value not expired at `now` (unix seconds).
    pub fn items(&self, now: u32) -> u64 {
        let (values, expiring) = self.value_counts();
        if expiring == 0 {
            // Nothing can have expired: the segments' counts are the answer, and
            // a `stats` poll costs no walk of the index.
            return values;
        }
        self.items_since(0, now)
    }

    /// Values the index holds, and those of them with an expiry time, summed over
    /// the segments' counts.
    pub fn value_counts(&self) -> (u64, u64) {
        let segments = self
            .inner
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner());
        segments.values().fold((0, 0), |(v, e), s| {
            (
                v + s.values.load(Ordering::Relaxed),
                e + s.expiring.load(Ordering::Relaxed),
            )
        })
    }

    /// Indexed tombstones and erases, summed over the segments' counts.
    pub(super) fn tombstone_count(&self) -> u64 {
        let segments = self
            .inner
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner());
        segments
            .values()
            .map(|s| s.tombstones.load(Ordering::Relaxed))
            .sum()
    }

    /// Keys with a value stamped at or after `clock` and not expired at `now`: the
    /// items a flush up to `clock` leaves. From the index alone.
    pub fn items_since(&self, clock: u64, now: u32) -> u64 {
        let mut n = 0;
        for shard in &self.inner.shards {
            self.read_shard(shard).for_each(|_, loc| {
                if loc.kind == Kind::Value as u8
                    && loc.clock >= clock
                    && !is_expired(loc.exptime, now)
                {
                    n += 1;
                }
            });
        }
        n
    }

    /// Drops up to `limit` values that a client can no longer see: those expired at
    /// `now` (unix seconds) become tombstones, and those `flushed(clock)` says a
    /// flush hides are erased (see the module documentation for why they differ).
    /// Either keeps the value's clock, so a newer record that arrives meanwhile is
    /// left alone and an older one cannot come back on reopen. Keys are listed
    /// under each shard's read lock and dropped one at a time under its write lock,
    /// so writers wait for one key at most. Fewer than `limit` dropped means none
    /// was left, or writes raced the pass and won.
    pub fn reclaim_expired(
        &self,
        now: u32,
        flushed: impl Fn(u64) -> bool,
        limit: usize,
    ) -> Result<Reclaimed> {
        let mut done = Reclaimed::default();
        let mut listed = 0;
        for shard in &self.inner.shards {
            if listed >= limit {
                break;
            }
            let mut gone: Vec<(Vec<u8>, u64)> = Vec::new();
            self.read_shard(shard).for_each(|key, loc| {
                if listed < limit
                    && loc.kind == Kind::Value as u8
                    && (is_expired(loc.exptime, now) || flushed(loc.clock))
                {
                    gone.push((key.to_vec(), loc.clock));
                    listed += 1;
                }
            });
            for (key, clock) in gone {
                if flushed(clock) {
                    if self.erase(&key, clock)? {
                        done.flushed += 1;
                    }
                } else if self.expire(&key, clock, now)? {
                    done.expired += 1;
                }
            }
        }
        Ok(done)
    }

    /// Replaces the value of `key` stamped `clock` with a tombstone of the same
    /// clock if it is still the newest record and expired at `now`.
    fn expire(&self, key: &[u8], clock: u64, now: u32) -> Result<bool> {
        let mut shard = self.write_shard(self.shard(key));
        let place = shard.place(key);
        match shard.at(&place) {
            Some(loc)
                if loc.kind == Kind::Value as u8
                    && loc.clock == clock
                    && is_expired(loc.exptime, now) =>
            {
                self.append_locked(&mut shard, place, key, &Record::tombstone(clock))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
