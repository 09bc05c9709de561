//! The in-memory index: key → location of its newest record.
//!
//! Memory is the point of this design. A `HashMap<Vec<u8>, Loc>` costs about 90
//! bytes per key at 1M keys (a 24-byte Vec header, a malloc'd key, the entry, and
//! a power-of-two table at half load). Here each key costs:
//!
//! - one 32-byte [`Entry`] in a dense vector,
//! - one 4-byte slot in an open-addressing table (linear probing, load ≤ 7/8), so
//!   4.6 to 9 bytes per key depending on where the table is in its doubling,
//! - the key bytes themselves, packed in an arena without per-key allocation.
//!
//! That is 37 to 41 bytes per key plus the key (the benchmark prints the figure).
//! Vector growth can leave up to half the entry vector unused just after doubling,
//! but the unused tail is never touched and costs no resident memory.

/// Where the newest record of a key is, and what the index needs to decide without
/// reading it (newer-wins compares clocks; tombstones count for GC; the exptime
/// lets counting and reclaiming skip expired values without a read per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct Entry {
    pub clock: u64,
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
    key_off: u32,
    /// The record's exptime (unix seconds, 0 = never).
    pub exptime: u32,
    key_len: u16,
    /// The record kind (record::Kind as u8).
    pub kind: u8,
    _reserved: u8,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 32);

impl Entry {
    fn loc(&self) -> Loc {
        Loc {
            clock: self.clock,
            segment: self.segment,
            offset: self.offset,
            len: self.len,
            kind: self.kind,
            exptime: self.exptime,
        }
    }
}

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub clock: u64,
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
    pub kind: u8,
    /// Unix seconds, 0 = never (always 0 for tombstones and erases).
    pub exptime: u32,
}

/// A slot holds an entry's index in its low 32 bits and the high 32 bits of its
/// key's hash in the high ones, so that a probe passes over other keys without
/// reading their entries or comparing their bytes (at a load up to 7/8, chains
/// are long enough for that to be most of a lookup's time).
const EMPTY: u64 = u64::MAX;

fn packed(h: u64, entry: usize) -> u64 {
    (h & 0xffff_ffff_0000_0000) | entry as u64
}

fn entry_of(s: u64) -> usize {
    s as u32 as usize
}
const INITIAL_SLOTS: usize = 16;

/// One shard of the index. Not thread-safe by itself; the store wraps each shard in
/// a RwLock.
pub struct Index {
    slots: Vec<u64>,
    entries: Vec<Entry>,
    arena: Vec<u8>,
    /// Arena bytes of removed keys, reclaimed when they pass half the arena.
    arena_dead: usize,
    /// Counts the changes that move slots (a key added or removed, the table
    /// grown): a [`Place`] found before one is stale.
    changes: u64,
}

/// Where a key is in a shard, or where it would go: one probe serves both the look
/// a writer takes before it decides and the insert after it has appended. It holds
/// while no slot moves; [`Index::set`] probes again if one did.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    slot: usize,
    h: u64,
    found: bool,
    changes: u64,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            slots: vec![EMPTY; INITIAL_SLOTS],
            entries: Vec::new(),
            arena: Vec::new(),
            arena_dead: 0,
            changes: 0,
        }
    }
}

pub use crate::keyhash::hash;

/// A hint to the CPU to load the cache line of `at`.
fn prefetch<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch(
            (at as *const T).cast::<i8>(),
            std::arch::x86_64::_MM_HINT_T0,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

impl Index {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes allocated, keys included.
    pub fn allocated_bytes(&self) -> usize {
        self.slots.capacity() * 8
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.arena.capacity()
    }

    /// Bytes of live keys in the arena.
    pub fn key_bytes(&self) -> usize {
        self.arena.len() - self.arena_dead
    }

    fn key_of(&self, e: &Entry) -> &[u8] {
        let (off, len) = (e.key_off as usize, e.key_len as usize);
        &self.arena[off..off + len]
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn probe(&self, key: &[u8], h: u64) -> (usize, bool) {
        let mask = self.mask();
        let mut i = (h as usize) & mask;
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return (i, false);
            }
            if s >> 32 == h >> 32 && self.key_of(&self.entries[entry_of(s)]) == key {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    /// The `skip`-th entry, in probe order, whose hash tag is `key`'s, without
    /// comparing keys. A reader that checks the key against the record it reads
    /// anyway is spared the look at the key's bytes here, a cache miss on every
    /// read. Two keys of a shard share a tag about once in four billion, so `skip`
    /// is almost always 0.
    pub fn get_by_tag(&self, key: &[u8], skip: usize) -> Option<Loc> {
        let h = hash(key);
        let mask = self.mask();
        let mut i = (h as usize) & mask;
        let mut seen = 0;
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return None;
            }
            if s >> 32 == h >> 32 {
                if seen == skip {
                    return Some(self.entries[entry_of(s)].loc());
                }
                seen += 1;
            }
            i = (i + 1) & mask;
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Loc> {
        self.at(&self.place(key))
    }

    /// Where `key` is, or would go.
    pub fn place(&self, key: &[u8]) -> Place {
        self.place_hashed(key, hash(key))
    }

    /// [`Index::place`] for a key whose [`hash`] is `h`.
    fn place_hashed(&self, key: &[u8], h: u64) -> Place {
        let (slot, found) = self.probe(key, h);
        Place {
            slot,
            h,
            found,
            changes: self.changes,
        }
    }

    /// The location of the key at `place`, if it is there.
    pub fn at(&self, place: &Place) -> Option<Loc> {
        let fresh = place.changes == self.changes;
        debug_assert!(fresh, "a place is read after the shard changed");
        (place.found && fresh).then(|| self.entries[entry_of(self.slots[place.slot])].loc())
    }

    /// Inserts or replaces the location of `key`; returns the previous one.
    pub fn insert(&mut self, key: &[u8], loc: Loc) -> Option<Loc> {
        self.set(self.place(key), key, loc)
    }

    /// [`Index::insert`] for a key whose [`hash`] is `h`.
    pub fn insert_hashed(&mut self, key: &[u8], h: u64, loc: Loc) -> Option<Loc> {
        self.set(self.place_hashed(key, h), key, loc)
    }

    /// Asks the CPU to bring in the home slot of the hash `h`, for an insert a few
    /// keys later: a table of a million keys is far larger than the cache, and
    /// while a load of many keys waits on one slot it can be fetching the next.
    pub fn prefetch(&self, h: u64) {
        prefetch(&self.slots[(h as usize) & self.mask()]);
    }

    /// Asks the CPU to bring in the entry the home slot of `h` points to, when its
    /// tag is `h`'s: a key already indexed, whose entry an insert will replace.
    /// Call it after [`Index::prefetch`] had time to bring the slot in.
    pub fn prefetch_entry(&self, h: u64) {
        if let Some(e) = self.home_entry(h) {
            prefetch(e);
        }
    }

    /// The entry the home slot of `h` points to, if its tag is `h`'s.
    fn home_entry(&self, h: u64) -> Option<&Entry> {
        let s = self.slots[(h as usize) & self.mask()];
        (s != EMPTY && s >> 32 == h >> 32)
            .then(|| self.entries.get(entry_of(s)))
            .flatten()
    }

    /// [`Index::insert`] at `place`, found for `key` by [`Index::place`].
    pub fn set(&mut self, place: Place, key: &[u8], loc: Loc) -> Option<Loc> {
        let Place { slot, h, found, .. } = if place.changes == self.changes {
            place
        } else {
            self.place(key)
        };
        if found {
            let e = &mut self.entries[entry_of(self.slots[slot])];
            let old = e.loc();
            (e.clock, e.segment, e.offset, e.len, e.kind, e.exptime) = (
                loc.clock,
                loc.segment,
                loc.offset,
                loc.len,
                loc.kind,
                loc.exptime,
            );
            return Some(old);
        }
        assert!(
            self.entries.len() < u32::MAX as usize - 1,
            "index shard full"
        );
        assert!(
            self.arena.len() + key.len() <= u32::MAX as usize,
            "index arena full"
        );
        let key_off = self.arena.len() as u32;
        self.arena.extend_from_slice(key);
        self.entries.push(Entry {
            clock: loc.clock,
            segment: loc.segment,
            offset: loc.offset,
            len: loc.len,
            key_off,
            exptime: loc.exptime,
            key_len: key.len() as u16,
            kind: loc.kind,
            _reserved: 0,
        });
        self.slots[slot] = packed(h, self.entries.len() - 1);
        self.changes += 1;
        if self.entries.len() * 8 > self.slots.len() * 7 {
            self.resize(self.slots.len() * 2);
        }
        None
    }

    /// Removes `key`; returns its location if it was present.
    pub fn remove(&mut self, key: &[u8]) -> Option<Loc> {
        let (mut hole, found) = self.probe(key, hash(key));
        if !found {
            return None;
        }
        self.changes += 1;
        let idx = entry_of(self.slots[hole]);
        let e = self.entries[idx];
        let old = e.loc();
        // Backward-shift deletion keeps every probe chain unbroken without tombstones.
        let mask = self.mask();
        let mut j = (hole + 1) & mask;
        while self.slots[j] != EMPTY {
            let ideal = (hash(self.key_of(&self.entries[entry_of(self.slots[j])])) as usize) & mask;
            let movable = if hole <= j {
                ideal <= hole || ideal > j
            } else {
                ideal <= hole && ideal > j
            };
            if movable {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = EMPTY;
        self.arena_dead += e.key_len as usize;
        // Keep entries dense: move the last entry into the freed index.
        let last = self.entries.len() - 1;
        if idx != last {
            let moved = self.entries[last];
            let h = hash(self.key_of(&moved));
            let (at, found) = self.probe(self.key_of(&moved), h);
            assert!(found, "moved entry must be indexed");
            self.slots[at] = packed(h, idx);
            self.entries[idx] = moved;
        }
        self.entries.pop();
        if self.arena_dead > 4096 && self.arena_dead * 2 > self.arena.len() {
            self.compact_arena();
        }
        Some(old)
    }

    fn resize(&mut self, n: usize) {
        self.changes += 1;
        self.slots = vec![EMPTY; n];
        let mask = n - 1;
        for (i, e) in self.entries.iter().enumerate() {
            let h = hash(self.key_of(e));
            let mut s = (h as usize) & mask;
            while self.slots[s] != EMPTY {
                s = (s + 1) & mask;
            }
            self.slots[s] = packed(h, i);
        }
    }

    fn compact_arena(&mut self) {
        let mut arena = Vec::with_capacity(self.arena.len() - self.arena_dead);
        for e in self.entries.iter_mut() {
            let (off, len) = (e.key_off as usize, e.key_len as usize);
            e.key_off = arena.len() as u32;
            arena.extend_from_slice(&self.arena[off..off + len]);
        }
        self.arena = arena;
        self.arena_dead = 0;
    }

    /// Every (key, location), in no particular order.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], Loc)) {
        for e in &self.entries {
            f(self.key_of(e), e.loc());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn loc(n: u32) -> Loc {
        Loc {
            clock: n as u64,
            segment: n,
            offset: n,
            len: n,
            kind: 1,
            exptime: n.rotate_left(7),
        }
    }

    proptest! {
        #[test]
        fn behaves_like_a_hashmap(ops in proptest::collection::vec((any::<bool>(), 0u16..300, any::<u32>()), 1..2000)) {
            let mut idx = Index::default();
            let mut model: HashMap<Vec<u8>, Loc> = HashMap::new();
            for (insert, k, v) in ops {
                let key = format!("key-{k}").into_bytes();
                if insert {
                    prop_assert_eq!(idx.insert(&key, loc(v)), model.insert(key, loc(v)));
                } else {
                    prop_assert_eq!(idx.remove(&key), model.remove(&key));
                }
                prop_assert_eq!(idx.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(idx.get(k), Some(*v));
            }
            // A place found before other keys moved the slots still puts its key
            // where lookups find it.
            let key = b"placed".to_vec();
            let place = idx.place(&key);
            for k in 0..40u32 {
                idx.insert(format!("other-{k}").as_bytes(), loc(k));
            }
            idx.remove(b"other-3");
            prop_assert_eq!(idx.set(place, &key, loc(9)), model.insert(key.clone(), loc(9)));
            prop_assert_eq!(idx.get(&key), Some(loc(9)));
            for k in 0..40u32 {
                let other = format!("other-{k}").into_bytes();
                if k != 3 {
                    model.insert(other, loc(k));
                }
            }
            let mut seen = 0;
            idx.for_each(|k, l| { assert_eq!(model.get(k), Some(&l)); seen += 1; });
            prop_assert_eq!(seen, model.len());
        }
    }
}
