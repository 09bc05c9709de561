//! A fast, well-mixed hash of a key for tables in memory: the store's index and
//! the gateway's per-connection record of keys in flight. (Placement on the ring
//! is SHA-1, in `cluster::hash_space`; this hash never leaves the process.) And
//! [`Prehashed`], the hasher of tables whose keys need no SipHash.

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

/// The hasher of a table whose keys are hashes already (kept as they are) or
/// small integers such as message ids (one multiply spreads them over every bit,
/// as the table's probe and control bytes need). Such keys come from this process,
/// not from a client that could choose them to collide, so SipHash's cost buys
/// nothing there.
#[derive(Default)]
pub struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
        self.0 = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u64(&mut self, h: u64) {
        self.0 = h;
    }
}

/// A `HashMap` hasher builder for [`Prehashed`] keys.
pub type BuildPrehashed = std::hash::BuildHasherDefault<Prehashed>;
