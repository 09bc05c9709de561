//! The optional cluster key (`--cluster-key FILE`): a shared secret that keeps
//! strangers, and the servers of another cluster started by mistake, off the
//! cluster ports.
//!
//! Every connection opens with the request `Auth [token]` (msgid 0), sent before
//! anything else and without waiting for its answer, so it costs no round trip.
//! The token is a SHA-1 digest of the key file's contents. A process started with
//! a key serves nothing on a connection until the right token has arrived: a
//! wrong token, or any other request first, is answered with an error and the
//! connection is closed. A process without a key answers `Auth` and serves
//! everyone, as before.
//!
//! The token travels in clear: it stops whoever does not know it, not whoever can
//! read the network. Keep cluster traffic on a private network.

use rmpv::Value;
use std::path::Path;
use std::sync::OnceLock;

/// The method every connection opens with when a key is set.
pub const AUTH: &str = "Auth";
/// The msgid of the opening `Auth` request; callers number theirs from 1.
pub const AUTH_MSGID: u32 = 0;
/// The largest key file read.
pub const KEY_FILE_MAX: u64 = 64 << 10;

static TOKEN: OnceLock<Vec<u8>> = OnceLock::new();

/// The token for the key `secret` (the key file's contents, without trailing
/// whitespace).
pub fn token_of(secret: &[u8]) -> Vec<u8> {
    let mut h = sha1_smol::Sha1::new();
    h.update(b"kumo cluster key\0");
    h.update(secret);
    h.digest().bytes().to_vec()
}

/// Reads the key file and makes its token this process's for every connection,
/// both ways. An unreadable, empty or oversized file is an error.
pub fn load(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cluster key {}: {e}", path.display()))?;
    if meta.len() > KEY_FILE_MAX {
        return Err(format!(
            "cluster key {}: {} bytes, more than the {KEY_FILE_MAX} a key file may hold",
            path.display(),
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cluster key {}: {e}", path.display()))?;
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if end == 0 {
        return Err(format!("cluster key {}: the file is empty", path.display()));
    }
    let _ = TOKEN.set(token_of(&bytes[..end]));
    Ok(())
}

/// This process's token, if it was started with a key.
pub fn token() -> Option<&'static [u8]> {
    TOKEN.get().map(Vec::as_slice)
}

/// The opening `Auth` request of a connection, if this process has a key.
pub fn opening_frame() -> Option<Vec<u8>> {
    let t = token()?;
    let mut frame = Vec::new();
    crate::proto::rpc::encode_request(&mut frame, AUTH_MSGID, AUTH, &[Value::Binary(t.to_vec())]);
    Some(frame)
}

/// Whether `params` of an `Auth` request carry our token (always true without a
/// key). Compares every byte, whatever the first difference.
pub fn accepts(params: &[Value]) -> bool {
    let Some(want) = token() else { return true };
    let got: &[u8] = match params.first() {
        Some(Value::Binary(b)) => b,
        _ => return false,
    };
    got.len() == want.len() && got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_depend_on_every_byte_of_the_key() {
        assert_eq!(token_of(b"secret"), token_of(b"secret"));
        assert_ne!(token_of(b"secret"), token_of(b"secreT"));
        assert_eq!(token_of(b"x").len(), 20);
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "  \n").unwrap();
        assert!(load(&empty).unwrap_err().contains("empty"));
        assert!(load(&dir.path().join("missing")).is_err());
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'k'; KEY_FILE_MAX as usize + 1]).unwrap();
        assert!(load(&big).unwrap_err().contains("more than"));
    }
}
