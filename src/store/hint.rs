//! Hint files: a sealed segment's index entries, read on open instead of scanning
//! the segment.
//!
//! A hint is the magic, the segment's length (u64), the entries, and a crc32 of all
//! that. Each entry is key length u16, kind u8, offset u32, length u32, clock u64,
//! exptime u32, and the key.
//!
//! Hints of the first format (`KHN1`) have no exptime. One is not read: its
//! segment is scanned instead, which finds every exptime, and the hint is written
//! again in the current format (see `open`).

use super::index::Loc;
use std::path::{Path, PathBuf};

const HINT_MAGIC: &[u8; 4] = b"KHN2";
/// The format before the index kept exptimes.
const HINT_MAGIC_V1: &[u8; 4] = b"KHN1";
/// Bytes of an entry before its key.
const ENTRY_HEADER: usize = 23;
/// A hint is written under its name plus `.tmp` (see `fs::write_atomically`).
const HINT_TEMPORARY_SUFFIX: &str = ".hint.tmp";

pub(super) fn hint_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:09}.hint"))
}

/// A hint being written (`000000001.hint.tmp`), or one that earlier versions wrote
/// through `daemon::write_atomically` (`000000001.tmp<pid>`).
pub(super) fn is_hint_temporary(name: &str) -> bool {
    let is_id = |s: &str| s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u32>().is_ok();
    let is_pid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match name.strip_suffix(HINT_TEMPORARY_SUFFIX) {
        Some(id) => is_id(id),
        None => name
            .split_once(".tmp")
            .is_some_and(|(id, pid)| is_id(id) && is_pid(pid)),
    }
}

/// Hint entry: key length u16, kind u8, offset u32, length u32, clock u64,
/// exptime u32, key.
pub(super) fn push_hint(hint: &mut Vec<u8>, key: &[u8], loc: Loc) {
    hint.extend_from_slice(&(key.len() as u16).to_le_bytes());
    hint.push(loc.kind);
    hint.extend_from_slice(&loc.offset.to_le_bytes());
    hint.extend_from_slice(&loc.len.to_le_bytes());
    hint.extend_from_slice(&loc.clock.to_le_bytes());
    hint.extend_from_slice(&loc.exptime.to_le_bytes());
    hint.extend_from_slice(key);
}

/// Hint file: magic, segment length u64, entries, crc32 of all that. Written to a
/// temporary name and renamed, so a hint is whole or absent.
/// The hint of segment `id`, `len` bytes long.
pub(super) fn write_hint(dir: &Path, id: u32, len: u64, entries: &[u8]) {
    let mut buf = Vec::with_capacity(entries.len() + 16);
    buf.extend_from_slice(HINT_MAGIC);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(entries);
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    // A hint fails mostly on a full disk; write_atomically leaves no part behind
    // to hold the space the writes waiting for it need.
    if let Err(e) = crate::fs::write_atomically(&hint_path(dir, id), &buf) {
        log::warn!(
            "cannot write hint for segment {}: {e}; it will be scanned on open",
            id
        );
    }
}

/// What [`load_hint`] made of a hint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hint {
    /// Every entry was given to `apply`.
    Loaded,
    /// Missing, damaged, or not matching the segment (a warning says which).
    Unusable,
    /// Intact but of the first format, which has no exptimes: the segment must be
    /// scanned, and its hint is worth writing again.
    Old,
}

/// Reads a sealed segment's index entries from its hint file and gives them to
/// `apply`, in the order of the segment, once the whole hint has checked out.
pub(super) fn load_hint(
    dir: &Path,
    id: u32,
    size: u64,
    apply: impl FnOnce(&[(&[u8], Loc)]),
) -> Hint {
    let path = hint_path(dir, id);
    let Ok(buf) = std::fs::read(&path) else {
        return Hint::Unusable;
    };
    let fail = |why: &str| {
        log::warn!(
            "{}: {why}; ignoring the hint and scanning the segment",
            path.display()
        );
        Hint::Unusable
    };
    if buf.len() >= 16 && &buf[..4] == HINT_MAGIC_V1 {
        log::info!(
            "{}: a hint of the first format (no exptimes); scanning the segment instead",
            path.display()
        );
        return Hint::Old;
    }
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
        if p + ENTRY_HEADER > body.len() {
            return fail("truncated entry");
        }
        let klen = u16::from_le_bytes([body[p], body[p + 1]]) as usize;
        let kind = body[p + 2];
        let offset = u32::from_le_bytes(body[p + 3..p + 7].try_into().expect("4"));
        let len = u32::from_le_bytes(body[p + 7..p + 11].try_into().expect("4"));
        let clock = u64::from_le_bytes(body[p + 11..p + 19].try_into().expect("8"));
        let exptime = u32::from_le_bytes(body[p + 19..p + 23].try_into().expect("4"));
        if p + ENTRY_HEADER + klen > body.len()
            || offset as u64 + len as u64 > size
            || !(1..=3).contains(&kind)
        {
            return fail("entry out of range");
        }
        entries.push((
            &body[p + ENTRY_HEADER..p + ENTRY_HEADER + klen],
            Loc {
                clock,
                segment: id,
                offset,
                len,
                kind,
                exptime,
            },
        ));
        p += ENTRY_HEADER + klen;
    }
    apply(&entries);
    Hint::Loaded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Options, Record, Store, SyncPolicy};

    /// A current hint turned into the first format: the same entries less their
    /// exptimes, as a store from before the index kept them wrote it.
    fn to_first_format(hint: &[u8]) -> Vec<u8> {
        let body = &hint[..hint.len() - 4];
        let mut out = HINT_MAGIC_V1.to_vec();
        out.extend_from_slice(&body[4..12]);
        let mut p = 12;
        while p < body.len() {
            let klen = u16::from_le_bytes([body[p], body[p + 1]]) as usize;
            out.extend_from_slice(&body[p..p + 19]);
            out.extend_from_slice(&body[p + ENTRY_HEADER..p + ENTRY_HEADER + klen]);
            p += ENTRY_HEADER + klen;
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn options() -> Options {
        Options {
            sync: SyncPolicy::None,
            segment_size: 4096,
            ..Options::default()
        }
    }

    fn exptime_of(i: u32) -> u32 {
        match i % 3 {
            0 => 0,
            1 => 1_000 + i,
            _ => 2_000_000_000 + i,
        }
    }

    #[test]
    fn a_store_with_first_format_hints_reopens_whole_and_upgrades_them() {
        let dir = tempfile::tempdir().unwrap();
        let keys = 200u32;
        {
            let store = Store::open(dir.path(), options()).unwrap();
            for i in 0..keys {
                let rec = Record::value(u64::from(i) + 1, 0, exptime_of(i), vec![b'v'; 40]);
                store.put(format!("key-{i}").as_bytes(), &rec).unwrap();
            }
        }
        let mut hints: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "hint"))
            .collect();
        hints.sort();
        assert!(hints.len() >= 3, "{hints:?}");
        for h in &hints {
            let v1 = to_first_format(&std::fs::read(h).unwrap());
            std::fs::write(h, v1).unwrap();
        }
        let check = |store: &Store| {
            for i in 0..keys {
                let key = format!("key-{i}");
                let rec = store.get(key.as_bytes()).unwrap().unwrap();
                assert_eq!((rec.clock, rec.exptime), (u64::from(i) + 1, exptime_of(i)));
                let loc = store
                    .read_shard(store.shard(key.as_bytes()))
                    .get(key.as_bytes());
                assert_eq!(loc.unwrap().exptime, exptime_of(i), "{key} in the index");
            }
            // At 1,500 s the keys with exptime 1,000 + i < 1,500 have expired.
            let expired = (0..keys)
                .filter(|i| i % 3 == 1 && 1_000 + i <= 1_500)
                .count();
            assert_eq!(store.items(1_500), u64::from(keys) - expired as u64);
        };
        let store = Store::open(dir.path(), options()).unwrap();
        assert_eq!(
            store.open_report().from_hints,
            0,
            "first-format hints are not read"
        );
        check(&store);
        drop(store);
        for h in &hints {
            assert_eq!(
                &std::fs::read(h).unwrap()[..4],
                HINT_MAGIC,
                "{h:?} upgraded"
            );
        }
        let store = Store::open(dir.path(), options()).unwrap();
        assert_eq!(store.open_report().from_hints, hints.len());
        check(&store);
    }
}
