//! A fast, well-mixed hash of a key for tables in memory: the store's index and
//! the gateway's per-connection record of keys in flight. (Placement on the ring
//! is SHA-1, in `cluster::hash_space`; this hash never leaves the process.)

/// A wyhash-style multiply-fold over 8-byte words. kumo keys already begin with 8
/// bytes of SHA-1, but nothing here relies on it.
pub fn hash(key: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = (key.len() as u64).wrapping_mul(K) ^ 0x2d35_8dcc_aa6c_78a5;
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        let m = (h ^ w) as u128 * K as u128;
        h = (m as u64) ^ ((m >> 64) as u64);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    let m = (h ^ u64::from_le_bytes(tail)) as u128 * 0xA076_1D64_78BD_642F_u128;
    (m as u64) ^ ((m >> 64) as u64)
}
