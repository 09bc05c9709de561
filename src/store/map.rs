//! Reads through a memory map: a record is read from the page cache where it lies,
//! with no system call and no buffer of its own (Tokyo Cabinet's way, and most of
//! why its reads are fast).
//!
//! A segment is mapped once, read-only and shared, for as many bytes as it may
//! grow to, so that the active segment's new records are seen through the same
//! map. A page past the end of the file must never be touched (the kernel would
//! answer with SIGBUS): only ranges the index points to are read, and those were
//! written before the index pointed at them; anything else goes through `pread`.
//! The price: a disk that fails under a mapped page stops the server with SIGBUS,
//! where `pread` would have returned EIO for that one read. A server stopped is one
//! copy of three the cluster works without, and the failing disk gets noticed.

use std::fs::File;
use std::os::fd::AsRawFd;

/// A shared mapping of the first `cap` bytes of a file: read-only for a sealed
/// segment, writable for the active one (records are then appended by copying
/// them into it: the page cache has them at once, as after `pwrite`, without a
/// system call or an mtime update per record).
pub(super) struct Map {
    ptr: *mut u8,
    cap: usize,
    writable: bool,
}

// SAFETY: the mapping is read-only, lives until drop, and the bytes read through it
// are ones no thread writes any more (records are appended, never rewritten).
unsafe impl Send for Map {}
unsafe impl Sync for Map {}

impl Map {
    /// Maps `cap` bytes of `file`; None if the system refuses (then reads fall back
    /// to `pread`, and writes to `pwrite`).
    pub fn new(file: &File, cap: usize, writable: bool) -> Option<Map> {
        if cap == 0 {
            return None;
        }
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh mapping of a file descriptor we hold, with no address
        // hint; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            log::debug!("mmap of {cap} bytes failed; reading with pread");
            return None;
        }
        Some(Map {
            ptr: ptr as *mut u8,
            cap,
            writable,
        })
    }

    /// The `len` bytes at `offset`, if they are inside the map and inside `written`
    /// (the bytes of the file known to be written).
    pub fn get(&self, offset: u64, len: usize, written: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len as u64)?;
        if end > written || end > self.cap as u64 {
            return None;
        }
        // SAFETY: the range is inside the mapping and inside the written part of the
        // file, so every page is backed; the slice lives no longer than `self`.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(offset as usize), len) })
    }
}

impl Map {
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Copies `bytes` in at `offset`. The caller holds the log's lock, and has made
    /// sure the file is allocated that far (`fallocate`), so that no page written
    /// lies past its end. False (nothing copied) past the map or on a read-only one.
    pub fn put(&self, offset: u64, bytes: &[u8], allocated: u64) -> bool {
        let Some(end) = offset.checked_add(bytes.len() as u64) else {
            return false;
        };
        if !self.writable || end > allocated || end > self.cap as u64 {
            return false;
        }
        // SAFETY: inside the mapping and the allocated file; bytes past every
        // indexed record, which no reader looks at until the index points there.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.add(offset as usize),
                bytes.len(),
            );
        }
        true
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no slice outlives self.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_map_sees_what_is_appended_and_nothing_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(b"hello").unwrap();
        let map = Map::new(&f, 1 << 20, false).expect("mapped");
        assert_eq!(map.get(0, 5, 5), Some(&b"hello"[..]));
        assert_eq!(map.get(3, 5, 5), None, "past what is written");
        f.write_all_at(b" world", 5).unwrap();
        assert_eq!(
            map.get(0, 11, 11),
            Some(&b"hello world"[..]),
            "appended later"
        );
        assert_eq!(map.get((1 << 20) - 2, 4, u64::MAX), None, "past the map");
        assert_eq!(map.get(u64::MAX, 4, u64::MAX), None);
        assert!(Map::new(&f, 0, false).is_none());
        assert!(!map.put(0, b"x", 11), "read-only");
        let rw = Map::new(&f, 1 << 20, true).expect("mapped for writing");
        f.set_len(12).unwrap();
        assert!(rw.put(11, b"!", 12));
        assert!(!rw.put(12, b"?", 12), "past what is allocated");
        let mut back = [0u8; 12];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back, b"hello world!", "the file has it");
    }
}
