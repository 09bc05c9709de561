//! SHA-1, which places every key on the ring ([`super::hash_space::key_hash`]).
//!
//! Every request hashes its key on the gateway and again on each server, and a
//! replace hashes every key a server holds, so the digest is on the hot path.
//! Where the processor has the SHA extensions (most x86-64 since 2017), the block
//! function runs on them: a short key's digest then costs a few dozen cycles
//! instead of a few hundred. Elsewhere `sha1_smol` computes it. The two agree bit
//! for bit; the tests check them against each other.

/// The SHA-1 digest of `bytes`.
pub fn digest(bytes: &[u8]) -> [u8; 20] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse4.1")
            && std::is_x86_feature_detected!("ssse3")
        {
            // SAFETY: the features the function is compiled for are present.
            return unsafe { x86::digest(bytes) };
        }
    }
    sha1_smol::Sha1::from(bytes).digest().bytes()
}

/// SHA-1's initial state (FIPS 180-4, 5.3.1).
#[cfg(target_arch = "x86_64")]
const INITIAL: [u32; 5] = [
    0x6745_2301,
    0xefcd_ab89,
    0x98ba_dcfe,
    0x1032_5476,
    0xc3d2_e1f0,
];

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::INITIAL;
    use std::arch::x86_64::*;

    /// Pads the message (a 1 bit, zeros, the length in bits as 64-bit big-endian)
    /// and runs the block function over it.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn digest(bytes: &[u8]) -> [u8; 20] {
        let mut state = INITIAL;
        let whole = bytes.len() / 64 * 64;
        for block in bytes[..whole].chunks_exact(64) {
            compress(&mut state, block);
        }
        // The tail, the 0x80 byte and the length fit in one block, or in two.
        let rest = &bytes[whole..];
        let mut last = [0u8; 128];
        last[..rest.len()].copy_from_slice(rest);
        last[rest.len()] = 0x80;
        let end = if rest.len() < 56 { 64 } else { 128 };
        let bits = (bytes.len() as u64).wrapping_mul(8);
        last[end - 8..end].copy_from_slice(&bits.to_be_bytes());
        for block in last[..end].chunks_exact(64) {
            compress(&mut state, block);
        }
        let mut out = [0u8; 20];
        for (o, w) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// One 64-byte block. The SHA instructions keep A..D in one vector with A in
    /// the highest lane, E in the highest lane of another, and four message words
    /// per vector with the earliest in the highest lane; each `sha1rnds4` does four
    /// rounds, `sha1nexte` derives the next four rounds' E from the A of four
    /// rounds back, and `sha1msg1`/`sha1msg2` extend the message schedule.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress(state: &mut [u32; 5], block: &[u8]) {
        debug_assert_eq!(block.len(), 64);
        // Reverses all 16 bytes: big-endian words, the first in the highest lane.
        let reverse = _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0a0b_0c0d_0e0f);
        let mut w = [_mm_setzero_si128(); 4];
        for (i, v) in w.iter_mut().enumerate() {
            // SAFETY: `block` has 64 bytes, and i < 4; unaligned loads.
            let raw = unsafe { _mm_loadu_si128(block.as_ptr().add(16 * i) as *const __m128i) };
            *v = _mm_shuffle_epi8(raw, reverse);
        }
        let abcd_in = _mm_shuffle_epi32(
            _mm_loadu_si128(state.as_ptr() as *const __m128i),
            0b00_01_10_11,
        );
        let e_in = _mm_set_epi32(state[4] as i32, 0, 0, 0);
        let mut abcd = abcd_in;
        let mut before = abcd;
        for group in 0..20 {
            // Words 16.. come from the four vectors before them.
            if group >= 4 {
                let [w0, w1, w2, w3] = w;
                let next = _mm_sha1msg2_epu32(_mm_xor_si128(_mm_sha1msg1_epu32(w0, w1), w2), w3);
                w = [w1, w2, w3, next];
            }
            let words = w[if group >= 4 { 3 } else { group }];
            let e = if group == 0 {
                _mm_add_epi32(e_in, words)
            } else {
                _mm_sha1nexte_epu32(before, words)
            };
            before = abcd;
            abcd = match group / 5 {
                0 => _mm_sha1rnds4_epu32(abcd, e, 0),
                1 => _mm_sha1rnds4_epu32(abcd, e, 1),
                2 => _mm_sha1rnds4_epu32(abcd, e, 2),
                _ => _mm_sha1rnds4_epu32(abcd, e, 3),
            };
        }
        let e_out = _mm_sha1nexte_epu32(before, e_in);
        let abcd_out = _mm_shuffle_epi32(_mm_add_epi32(abcd, abcd_in), 0b00_01_10_11);
        _mm_storeu_si128(state.as_mut_ptr() as *mut __m128i, abcd_out);
        state[4] = _mm_extract_epi32(e_out, 3) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length across the padding's one- and two-block cases and several
    /// whole blocks, with varied contents, against `sha1_smol`.
    #[test]
    fn agrees_with_sha1_smol() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..600 {
            for _ in 0..4 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                let want = sha1_smol::Sha1::from(&bytes).digest().bytes();
                assert_eq!(digest(&bytes), want, "{len} bytes");
                #[cfg(target_arch = "x86_64")]
                if std::is_x86_feature_detected!("sha") {
                    // SAFETY: the features are present (sse4.1 and ssse3 come
                    // with every processor that has sha).
                    assert_eq!(unsafe { x86::digest(&bytes) }, want, "{len} bytes");
                }
            }
        }
    }

    /// FIPS 180 test vectors.
    #[test]
    fn known_digests() {
        let hex = |d: [u8; 20]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(hex(digest(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(digest(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
    }
}
