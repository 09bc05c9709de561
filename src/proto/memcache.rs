//! What every memcached codec shares (text, meta, and binary next): the limits,
//! the words of the errors they have in common, and what an exptime means.

/// memcached's key limit.
pub const KEY_SIZE_MAX: usize = 250;
/// A value over the `-I` limit; its bytes are skipped so the stream stays in step.
pub const TOO_LARGE: &str = "SERVER_ERROR object too large for cache";
/// A value whose announced length is not followed by CRLF.
pub const BAD_CHUNK: &str = "CLIENT_ERROR bad data chunk";
/// memcached: an exptime above this many seconds is an absolute unix time.
pub const RELATIVE_EXPTIME_MAX: i64 = 60 * 60 * 24 * 30;

/// A memcached exptime as an absolute unix time (0 = never; in the past = gone).
pub fn absolute_exptime(exptime: i64, now: u32) -> u32 {
    match exptime {
        0 => 0,
        e if e < 0 => 1,
        e if e <= RELATIVE_EXPTIME_MAX => now.saturating_add(e as u32),
        e => e.min(u32::MAX as i64) as u32,
    }
}

/// A number as memcached's strtol family reads a token: decimal digits, a minus
/// sign (which a type without one refuses), no spaces, no overflow.
pub fn decimal<T: std::str::FromStr>(w: &[u8]) -> Option<T> {
    let s = std::str::from_utf8(w).ok()?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Appends `n` in decimal: the replies' numbers, written without `format!`'s
/// allocation on the path of every get.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        for n in [0, 1, 9, 10, 99, 100, 4_294_967_295, 1 << 53, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn exptimes_follow_memcached() {
        assert_eq!(absolute_exptime(0, 1000), 0);
        assert_eq!(absolute_exptime(-1, 1000), 1);
        assert_eq!(absolute_exptime(10, 1000), 1010);
        assert_eq!(
            absolute_exptime(RELATIVE_EXPTIME_MAX + 1, 1000),
            RELATIVE_EXPTIME_MAX as u32 + 1
        );
        assert_eq!(absolute_exptime(i64::MAX, 1000), u32::MAX);
    }
}
