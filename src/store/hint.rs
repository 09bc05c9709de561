//! Hint files: a sealed segment's index entries, read on open instead of scanning
//! the segment.
//!
//! A hint is the magic, the segment's length (u64), the entries, and a crc32 of all
//! that. Each entry is key length u16, kind u8, offset u32, length u32, clock u64,
//! and the key.

use super::index::Loc;
use std::path::{Path, PathBuf};

const HINT_MAGIC: &[u8; 4] = b"KHN1";
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

/// Hint entry: key length u16, kind u8, offset u32, length u32, clock u64, key.
pub(super) fn push_hint(hint: &mut Vec<u8>, key: &[u8], loc: Loc) {
    hint.extend_from_slice(&(key.len() as u16).to_le_bytes());
    hint.push(loc.kind);
    hint.extend_from_slice(&loc.offset.to_le_bytes());
    hint.extend_from_slice(&loc.len.to_le_bytes());
    hint.extend_from_slice(&loc.clock.to_le_bytes());
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

/// Reads a sealed segment's index entries from its hint file and gives each to
/// `apply`, only once the whole hint has checked out. False (with a warning) when
/// the hint is missing, damaged, or does not match the segment.
pub(super) fn load_hint(dir: &Path, id: u32, size: u64, mut apply: impl FnMut(&[u8], Loc)) -> bool {
    let path = hint_path(dir, id);
    let Ok(buf) = std::fs::read(&path) else {
        return false;
    };
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
                segment: id,
                offset,
                len,
                kind,
            },
        ));
        p += 19 + klen;
    }
    for (key, loc) in entries {
        apply(key, loc);
    }
    true
}
