//! Opening a store: taking its lock, loading each sealed segment from its hint or
//! by scanning it, and cutting a torn tail off the last one.

use super::hint::{is_hint_temporary, load_hint, push_hint, write_hint, Hint};
use super::index::{self, Index, Loc};
use super::lock::take_lock;
use super::map::Map;
use super::record;
use super::segment::{create_segment, growing_map_bytes, resync, segment_path, Segment, Tally};
use super::{shard_of_hash, Inner, Log, OpenReport, Options, Store, SyncPolicy, SHARDS};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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
            let size_now = file.metadata().map(|m| m.len()).unwrap_or(0);
            // The last segment may become the active one and grow.
            let map_bytes = if is_last {
                growing_map_bytes(options.segment_size.max(size_now))
            } else {
                size_now as usize
            };
            let seg = Arc::new(Segment {
                id,
                path: path.clone(),
                map: Map::new(&file, map_bytes, is_last),
                allocated: AtomicU64::new(0),
                can_allocate: AtomicBool::new(true),
                file,
                live: AtomicU64::new(0),
                dead: AtomicU64::new(0),
                tombstones: AtomicU64::new(0),
                values: AtomicU64::new(0),
                expiring: AtomicU64::new(0),
                len: AtomicU64::new(0),
            });
            let mut hint = Vec::new();
            let size = seg.file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            let loaded = if is_last {
                Hint::Unusable
            } else {
                load_hint(dir, id, size, |found| {
                    index_found(&shards, &segments, &seg, found)
                })
            };
            if loaded == Hint::Loaded {
                seg.len.store(size, Ordering::Relaxed);
                report.from_hints += 1;
            } else {
                let damaged = report.damaged_records;
                scan_segment(&seg, is_last, &shards, &segments, &mut hint, &mut report)?;
                // An old-format hint is rewritten so that the next open reads it. A
                // damaged segment keeps being scanned, so that its damage is reported.
                if loaded == Hint::Old && report.damaged_records == damaged {
                    write_hint(dir, id, size, &hint);
                }
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
                let seg = create_segment(dir, id, growing_map_bytes(options.segment_size))
                    .map_err(|e| e.to_string())?;
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
            compactions: AtomicU64::new(0),
            _lock: lock,
            closed: AtomicBool::new(false),
            report,
            commits: Default::default(),
            group_commits: AtomicU64::new(0),
        });
        if inner.options.sync == SyncPolicy::Always {
            super::commit::start_committer(&inner)?;
        }
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
    let mut size = seg
        .file
        .metadata()
        .map_err(|e| format!("stat {}: {e}", seg.path.display()))?
        .len() as usize;
    // Read through the segment's map, as compaction reads: the bytes stay in the
    // page cache, and a segment of any size costs no memory of the process's own.
    // (The map serves what the file holds: all of it, while it is scanned.)
    seg.len.store(size as u64, Ordering::Relaxed);
    let mut buf = Vec::new();
    let data = seg
        .bytes_at(0, size as u32, &mut buf)
        .map_err(|e| e.to_string())?;
    let mut off = 0;
    let mut found = Vec::with_capacity(LOAD_BATCH);
    while off < size {
        if found.len() == LOAD_BATCH {
            index_found(shards, segments, seg, &found);
            found.clear();
        }
        // Only the header goes into the index: the record is checked where it lies.
        match record::check(&data[off..]) {
            Ok((key, rec, n)) => {
                let loc = Loc {
                    clock: rec.clock,
                    segment: seg.id,
                    offset: off as u32,
                    len: n as u32,
                    kind: rec.kind as u8,
                    exptime: rec.exptime,
                };
                found.push((key, loc));
                push_hint(hint, key, loc);
                report.records += 1;
                off += n;
            }
            // Space allocated for appends and never written (a stop without the
            // segment being sealed): the end of the log, not damage.
            Err(_) if data[off..].iter().all(|&b| b == 0) => {
                log::debug!(
                    "{}: {} bytes of unused space after the last record",
                    seg.path.display(),
                    size - off
                );
                seg.file
                    .set_len(off as u64)
                    .map_err(|e| format!("truncate {}: {e}", seg.path.display()))?;
                size = off;
                break;
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
    index_found(shards, segments, seg, &found);
    seg.len
        .store(if is_last { off } else { size } as u64, Ordering::Relaxed);
    Ok(())
}

/// Records a scan puts into the index at a time (see [`index_found`]).
const LOAD_BATCH: usize = 1 << 16;

/// Records ahead of the one being indexed whose slots are fetched meanwhile.
const PREFETCH_AHEAD: usize = 16;

/// Puts records found on open, in log order, into the index: a later record of a
/// key wins over an earlier one. They are taken shard by shard, under one lock
/// each, with the slots of the next few fetched while one is indexed, and the
/// segment's counts are added once: a million keys cost a cache miss each, which
/// is most of the time a store takes to open.
fn index_found(
    shards: &[RwLock<Index>],
    segments: &BTreeMap<u32, Arc<Segment>>,
    seg: &Arc<Segment>,
    found: &[(&[u8], Loc)],
) {
    let hashes: Vec<u64> = found.iter().map(|(k, _)| index::hash(k)).collect();
    // A stable counting sort by shard keeps each key's records in log order.
    let mut start = [0usize; SHARDS + 1];
    for &h in &hashes {
        start[shard_of_hash(h) + 1] += 1;
    }
    for s in 0..SHARDS {
        start[s + 1] += start[s];
    }
    let mut order = vec![0u32; found.len()];
    let mut next = start;
    for (i, &h) in hashes.iter().enumerate() {
        let s = shard_of_hash(h);
        order[next[s]] = i as u32;
        next[s] += 1;
    }
    let mut tally = Tally::default();
    for (s, shard) in shards.iter().enumerate() {
        let mine = &order[start[s]..start[s + 1]];
        if mine.is_empty() {
            continue;
        }
        let mut shard = shard.write().unwrap_or_else(|p| p.into_inner());
        for (j, &i) in mine.iter().enumerate() {
            if let Some(&ahead) = mine.get(j + PREFETCH_AHEAD) {
                shard.prefetch(hashes[ahead as usize]);
            }
            if let Some(&ahead) = mine.get(j + PREFETCH_AHEAD / 2) {
                shard.prefetch_entry(hashes[ahead as usize]);
            }
            let (key, loc) = found[i as usize];
            if let Some(old) = shard.insert_hashed(key, hashes[i as usize], loc) {
                if old.segment == seg.id {
                    tally.unindexed(&old);
                } else if let Some(s) = segments.get(&old.segment) {
                    s.unindexed(&old);
                }
            }
            tally.indexed(&loc);
        }
    }
    seg.add(&tally);
}
