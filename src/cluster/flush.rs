//! `flush_all` across the cluster. A flush is one point, a ClockTime: every record
//! stamped before it is gone once the point's second has come. Every server keeps
//! the newest point it has heard of (on disk too), and hides what it flushes.
//!
//! - `flush_all` (no delay): the gateway asks every server for a fresh stamp and
//!   takes the newest as the point. Each server then raises its counter past the
//!   point, so every write acknowledged before the flush is older than the point,
//!   and every write made after it is newer, whichever server stamps it (within a
//!   second, and with clocks that agree).
//! - `flush_all N`: the point is the start of the second N seconds from now:
//!   whatever is stored before then is gone then, as in memcached.
//! - A server that missed the flush (it was down) learns the point from a manager
//!   before it serves; managers learn it from the servers' keepalives.

use super::clock::ClockTime;

/// Whether a record stamped `clock` is gone under flush point `point` at `now`.
pub fn is_flushed(clock: u64, point: u64, now_secs: u32) -> bool {
    in_force(point, now_secs) && clock < point
}

/// Whether flush point `point` has come at `now`.
pub fn in_force(point: u64, now_secs: u32) -> bool {
    point != 0 && now_secs >= ClockTime(point).secs()
}

/// The point of `flush_all delay` at `now`, for a delay in the future; None for a
/// flush now, whose point the servers' stamps decide.
pub fn delayed_point(delay: i64, now_secs: u32) -> Option<u64> {
    (delay > 0).then(|| {
        let at = u64::from(now_secs)
            .saturating_add(delay as u64)
            .min(u64::from(u32::MAX));
        ClockTime::new(at as u32, 0).0
    })
}

/// The point of a flush now: just past the newest stamp any server gave.
pub fn point_after(stamps: &[u64]) -> u64 {
    stamps.iter().copied().max().unwrap_or(0).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_hides_what_was_stamped_before_its_point_once_it_has_come() {
        let point = ClockTime::new(100, 7).0;
        assert!(is_flushed(ClockTime::new(100, 6).0, point, 100));
        assert!(is_flushed(ClockTime::new(99, 900).0, point, 100));
        assert!(
            !is_flushed(ClockTime::new(100, 8).0, point, 100),
            "written after"
        );
        assert!(!is_flushed(ClockTime::new(90, 1).0, point, 99), "not yet");
        assert!(!is_flushed(ClockTime::new(90, 1).0, 0, 100), "no flush");
    }

    #[test]
    fn points_follow_the_delay_or_the_stamps() {
        assert_eq!(delayed_point(0, 100), None);
        assert_eq!(delayed_point(-1, 100), None);
        assert_eq!(delayed_point(10, 100), Some(ClockTime::new(110, 0).0));
        assert_eq!(
            delayed_point(i64::MAX, 100),
            Some(ClockTime::new(u32::MAX, 0).0)
        );
        let a = ClockTime::new(100, 3).0;
        let b = ClockTime::new(100, 9).0;
        assert_eq!(point_after(&[a, b]), b + 1);
        assert!(is_flushed(b, point_after(&[a, b]), 100));
    }
}
