//! The store's lock file: one process at a time has a store open.

use super::Store;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

/// Attempts, 10 ms apart, to take the store lock.
const LOCK_RETRIES: usize = 100;

/// Takes the store's lock: flock(2) on PATH/LOCK, which the kernel releases when
/// the holder dies, so a lock file left by a killed process is stale and reclaimed.
pub(super) fn take_lock(dir: &Path) -> std::result::Result<File, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let previous = std::fs::read_to_string(&path).ok();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
    // A lock that was just released can still be held for a moment by a child this
    // process forked, between its fork and its exec (close-on-exec only acts at
    // exec), so retry briefly before calling the store busy.
    let locked = (0..LOCK_RETRIES).any(|attempt| {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: flock on a descriptor we own.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    });
    if !locked {
        let holder = previous.as_deref().map(str::trim).unwrap_or("?");
        return Err(format!(
            "store {} is in use by process {holder} (lock file {})",
            dir.display(),
            path.display()
        ));
    }
    if let Some(pid) = previous.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        log::warn!(
            "store {}: reclaimed a stale lock left by process {pid}",
            dir.display()
        );
    }
    f.set_len(0)
        .map_err(|e| format!("cannot write lock file {}: {e}", path.display()))?;
    write!(f, "{}", std::process::id())
        .map_err(|e| format!("cannot write lock file {}: {e}", path.display()))?;
    Ok(f)
}

impl Store {
    /// Rewrites the lock file with this process's pid: after daemonizing, the lock
    /// (inherited across fork) belongs to the child.
    pub fn claim_lock(&self) {
        let mut f = &self.inner._lock;
        let _ = f.set_len(0);
        let _ = f.write_all_at(std::process::id().to_string().as_bytes(), 0);
        let _ = f.flush();
    }
}
