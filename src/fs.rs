//! File-system steps that must survive a crash whole.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where [`write_atomically`] writes before the rename: the path with `.tmp`
/// added (`000000001.hint.tmp`, `member.tmp`), so an opener knows a leftover.
pub fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over
/// `path`, so a reader sees the old content or the new, never a part. A failed
/// write removes its temporary file: on a full disk, the part written would hold
/// the space that ran out.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary(path);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    let result = write();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Syncs a directory, so that the names created in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
