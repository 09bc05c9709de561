//! The record format. Every record describes itself and carries its own checksum.
//!
//! ```text
//! offset  size  field
//!      0     4  crc32 (IEEE) of bytes 4..end, little-endian
//!      4     1  kind: 1 value, 2 tombstone, 3 erase
//!      5     1  meta marks: bit 0 stale, bit 1 token sent, bit 2 base64 key; others 0
//!      6     2  key length, little-endian u16
//!      8     4  data length, little-endian u32
//!     12     8  ClockTime, little-endian u64
//!     20     4  memcached flags, little-endian u32
//!     24     4  exptime (unix seconds, 0 = never), little-endian u32
//!     28     k  key (as kumo-server sees it: 8-byte key hash, then the user key)
//!   28+k     n  data (empty for tombstones and erases)
//! ```
//!
//! A tombstone is a delete with its ClockTime; it is replicated and copied like a
//! value so that deletes survive replace and restarts. An erase is local bookkeeping:
//! this node dropped the key because it no longer owns it (the delete phase of a
//! replace), and on reopen the key must stay dropped.

/// Bytes before the key.
pub const HEADER_SIZE: usize = 28;
pub const RECORD_SIZE_MAX: usize = HEADER_SIZE + KEY_SIZE_MAX + DATA_SIZE_MAX;

// The record as every layer sees it lives in a leaf module of its own; this file
// is its form on disk.
pub use crate::record::{check_sizes, Kind, Marks, Record, DATA_SIZE_MAX, KEY_SIZE_MAX};

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// Fewer bytes than the header or the lengths announce.
    Short,
    /// Lengths or kind out of range.
    Header(&'static str),
    Checksum,
}

/// Appends the encoding of `key` and `rec` to `out`. Sizes must have been checked.
pub fn encode(out: &mut Vec<u8>, key: &[u8], rec: &Record) {
    assert!(
        check_sizes(key, rec.data.len()).is_ok(),
        "record sizes were not checked"
    );
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(rec.kind as u8);
    out.push(rec.marks.to_bits());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&(rec.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&rec.clock.to_le_bytes());
    out.extend_from_slice(&rec.flags.to_le_bytes());
    out.extend_from_slice(&rec.exptime.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&rec.data);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    // Assert in pairs: what we just wrote must read back.
    debug_assert!(decode(&out[start..]).is_ok());
}

/// The total length a header announces, once its lengths are checked.
pub fn announced_len(header: &[u8]) -> Result<usize, Bad> {
    if header.len() < HEADER_SIZE {
        return Err(Bad::Short);
    }
    if Kind::from_u8(header[4]).is_none() {
        return Err(Bad::Header("unknown kind"));
    }
    if Marks::from_bits(header[5]).is_none() {
        return Err(Bad::Header("unknown mark bits set"));
    }
    let klen = u16::from_le_bytes([header[6], header[7]]) as usize;
    let dlen = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if klen == 0 || klen > KEY_SIZE_MAX {
        return Err(Bad::Header("key length out of range"));
    }
    if dlen > DATA_SIZE_MAX {
        return Err(Bad::Header("data length out of range"));
    }
    Ok(HEADER_SIZE + klen + dlen)
}

/// Decodes the record at the front of `buf`: (key, record, total length).
pub fn decode(buf: &[u8]) -> Result<(&[u8], Record, usize), Bad> {
    let (key, mut rec, len) = check(buf)?;
    rec.data = buf[HEADER_SIZE + key.len()..len].to_vec();
    Ok((key, rec, len))
}

/// A record checked where it lies, in the store's format: only [`stored`] makes
/// one, so whoever holds one holds bytes that passed the check.
pub struct Stored<'a> {
    pub key: &'a [u8],
    /// Its header fields; `data` is left empty.
    pub head: Record,
    /// The whole record, and nothing after it.
    pub bytes: &'a [u8],
    _checked: (),
}

/// The record at the front of `buf`, checked as [`check`] checks it.
pub fn stored(buf: &[u8]) -> Result<Stored<'_>, Bad> {
    let (key, head, len) = check(buf)?;
    Ok(Stored {
        key,
        head,
        bytes: &buf[..len],
        _checked: (),
    })
}

/// Checks the record at the front of `buf` as [`decode`] does (its lengths, its
/// checksum, its header) without copying its key or data: (key, the record with
/// its data left empty, total length).
pub fn check(buf: &[u8]) -> Result<(&[u8], Record, usize), Bad> {
    let len = announced_len(buf)?;
    if buf.len() < len {
        return Err(Bad::Short);
    }
    let stored = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if crc32fast::hash(&buf[4..len]) != stored {
        return Err(Bad::Checksum);
    }
    let klen = u16::from_le_bytes([buf[6], buf[7]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().expect("8 bytes"));
    let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
    let head = Record {
        kind: Kind::from_u8(buf[4]).ok_or(Bad::Header("unknown kind"))?,
        clock: u64_at(12),
        flags: u32_at(20),
        exptime: u32_at(24),
        data: Vec::new(),
        marks: Marks::from_bits(buf[5]).ok_or(Bad::Header("unknown mark bits set"))?,
    };
    Ok((&buf[HEADER_SIZE..HEADER_SIZE + klen], head, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flipped_byte_is_caught() {
        let mut rec = Record::value(0x1234_5678_9abc_def0, 7, 99, b"hello".to_vec());
        rec.marks.stale = true;
        rec.marks.key_binary = true;
        let mut buf = Vec::new();
        encode(&mut buf, b"key", &rec);
        assert_eq!(buf.len(), HEADER_SIZE + 3 + 5);
        let (k, r, n) = decode(&buf).unwrap();
        assert_eq!((k, &r, n), (&b"key"[..], &rec, buf.len()));
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} not caught");
        }
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn sizes_are_checked_before_encoding() {
        assert!(check_sizes(b"", 0).is_err());
        assert!(check_sizes(&[0; KEY_SIZE_MAX + 1], 0).is_err());
        assert!(check_sizes(b"k", DATA_SIZE_MAX + 1).is_err());
        assert!(check_sizes(b"k", DATA_SIZE_MAX).is_ok());
    }
}
