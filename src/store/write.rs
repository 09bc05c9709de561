//! Writes by key: each takes the key's shard write lock, looks at what the index
//! holds (one probe, kept as a [`Place`] for the insert after), decides, appends
//! under the log lock, and points the index at the new record.

use super::index::{Index, Loc, Place};
use super::record::{self, Kind, Record, Stored};
use super::{Error, Result, Store};

/// The outcome of [`Store::modify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modified {
    /// The closure wrote this record.
    Written(Record),
    /// The closure chose not to write.
    Unchanged,
}

/// memcached's three answers to a cas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    Stored,
    Exists,
    NotFound,
}

thread_local! {
    /// Where a thread encodes the record it appends: kept from one write to the
    /// next, so that a write does not allocate for it.
    static ENCODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A larger encoding buffer (a large value's) is given back after its write
/// rather than kept by the thread.
const ENCODED_KEEP_BYTES: usize = 64 << 10;

/// Whether a record stamped `clock` replaces the one the index `held` under
/// newer-wins. An erased key takes anything: the erase was local bookkeeping.
fn supersedes(held: Option<Loc>, clock: u64) -> bool {
    held.is_none_or(|loc| loc.clock < clock || loc.kind == Kind::Erase as u8)
}

impl Store {
    /// Unconditional write (the coordinator's own stamped write).
    pub fn put(&self, key: &[u8], rec: &Record) -> Result<()> {
        let mut shard = self.write_shard(self.shard(key));
        let place = shard.place(key);
        self.append_locked(&mut shard, place, key, rec)
    }

    /// Newer ClockTime wins: writes `rec` if the key is absent or its stored clock is
    /// strictly older. Returns whether it wrote. Used by replicas, replace and merge.
    pub fn update(&self, key: &[u8], rec: &Record) -> Result<bool> {
        let shard_lock = self.shard(key);
        let mut shard = self.write_shard(shard_lock);
        let place = shard.place(key);
        if !supersedes(shard.at(&place), rec.clock) {
            return Ok(false);
        }
        self.append_locked(&mut shard, place, key, rec)?;
        Ok(true)
    }

    /// [`Store::update`] for a record already in the store's format (one a replace
    /// pushes, read from another server's segment), checked by `record::stored`:
    /// appended as it is, not decoded and encoded again.
    pub fn update_stored(&self, stored: &Stored) -> Result<bool> {
        let (key, head) = (stored.key, &stored.head);
        let shard_lock = self.shard(key);
        let mut shard = self.write_shard(shard_lock);
        let place = shard.place(key);
        if !supersedes(shard.at(&place), head.clock) {
            return Ok(false);
        }
        let loc = self.append_bytes(key, stored.bytes, head)?;
        self.index_set(&mut shard, place, key, loc);
        Ok(true)
    }

    /// Writes a tombstone with `clock` under newer-wins. Returns whether a value was
    /// there (memcached's DELETED versus NOT_FOUND).
    pub fn delete(&self, key: &[u8], clock: u64) -> Result<bool> {
        let shard_lock = self.shard(key);
        let mut shard = self.write_shard(shard_lock);
        let place = shard.place(key);
        let existed = match shard.at(&place) {
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
        self.append_locked(&mut shard, place, key, &Record::tombstone(clock))?;
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
        self.modify_with(key, true, f)
    }

    /// [`Store::modify`] for a change that needs only the current record's
    /// [`Record::header`]: the index has it, and nothing is read from disk.
    pub fn modify_by_header(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&Record>) -> Option<Record>,
    ) -> Result<Modified> {
        self.modify_with(key, false, f)
    }

    fn modify_with(
        &self,
        key: &[u8],
        whole: bool,
        f: impl FnOnce(Option<&Record>) -> Option<Record>,
    ) -> Result<Modified> {
        let shard_lock = self.shard(key);
        let mut shard = self.write_shard(shard_lock);
        let place = shard.place(key);
        let current = match shard.at(&place) {
            Some(loc) if loc.kind == Kind::Erase as u8 => None,
            Some(loc) if !whole => {
                Kind::from_u8(loc.kind).map(|k| Record::header(k, loc.clock, loc.exptime))
            }
            Some(loc) => match self.read_at(key, loc) {
                Ok(Some(r)) => Some(r),
                Ok(None) => {
                    log::error!(
                        "segment {} offset {}: the record of a key holds another key; the key is written as if absent, superseding it",
                        loc.segment,
                        loc.offset
                    );
                    None
                }
                Err(Error::Corrupt(why)) => {
                    log::error!("{why}; the key is written as if absent, superseding it");
                    None
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        match f(current.as_ref()) {
            Some(rec) => {
                self.append_locked(&mut shard, place, key, &rec)?;
                Ok(Modified::Written(rec))
            }
            None => Ok(Modified::Unchanged),
        }
    }

    /// Drops `key` locally if its newest record is not newer than `clock` (a replace
    /// trimming what this node no longer owns, or a value a flush hides). Durable:
    /// an erase record is written.
    pub fn erase(&self, key: &[u8], clock: u64) -> Result<bool> {
        let shard_lock = self.shard(key);
        let mut shard = self.write_shard(shard_lock);
        let place = shard.place(key);
        match shard.at(&place) {
            Some(loc) if loc.kind != Kind::Erase as u8 && loc.clock <= clock => {
                let rec = Record {
                    kind: Kind::Erase,
                    ..Record::tombstone(loc.clock)
                };
                self.append_locked(&mut shard, place, key, &rec)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Appends `rec` for `key` and points the index at it. The caller holds the
    /// key's shard write lock, so the check it made before still holds.
    pub(super) fn append_locked(
        &self,
        shard: &mut Index,
        place: Place,
        key: &[u8],
        rec: &Record,
    ) -> Result<()> {
        record::check_sizes(key, rec.data.len()).map_err(Error::Invalid)?;
        let loc = ENCODED.with_borrow_mut(|buf| {
            buf.clear();
            record::encode(buf, key, rec);
            let appended = self.append_bytes(key, buf, rec);
            if buf.capacity() > ENCODED_KEEP_BYTES {
                *buf = Vec::new();
            }
            appended
        })?;
        self.index_set(shard, place, key, loc);
        Ok(())
    }

    /// Points the index at `loc` (at `place`, found for `key` under the same
    /// lock) and moves the byte accounting.
    pub(super) fn index_set(&self, shard: &mut Index, place: Place, key: &[u8], loc: Loc) {
        if let Some(old) = shard.set(place, key, loc) {
            if let Some(s) = self.segment(old.segment) {
                s.unindexed(&old);
            }
        }
        if let Some(s) = self.segment(loc.segment) {
            s.indexed(&loc);
        }
    }
}
