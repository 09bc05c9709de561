//! ClockTime (DESIGN §6): a u64 with unix seconds in the high 32 bits and a Lamport
//! counter in the low 32. The coordinator of a write stamps it; the stamp is also the
//! memcached CAS value. Every cluster message carries the sender's counter, which the
//! receiver merges, so a write stamped after another write it has heard of is newer.
//!
//! Newer-wins compares the u64 as a whole: the seconds decide, and within one second
//! the counter does. kumofs compared counters within a 5-second margin instead; that
//! is not a total order, which newer-wins needs. The price is the same as kumofs's:
//! hosts must keep their clocks within a second or two (NTP), or a write from a host
//! whose clock runs behind can lose to an older write.

use std::sync::atomic::{AtomicU32, Ordering};

/// How far ahead of our own clock a peer's ClockTime may be. Hosts keep their
/// clocks within a second or two; a version further ahead comes from a broken
/// clock or a hostile peer, and taken, it would win every newer-wins comparison
/// until our clock caught up with it.
pub const AHEAD_MAX_SECS: u32 = 60;

/// The largest step a received counter may move ours forward. Counters grow by
/// one per message; a jump of half the counter space would make the counter wrap,
/// and stamps of the same second go backwards.
pub const COUNTER_JUMP_MAX: u32 = 1 << 31;

/// Whether `c` is further in the future than [`AHEAD_MAX_SECS`] from `now`.
pub fn from_the_future(c: ClockTime, now_secs: u32) -> bool {
    c.secs() > now_secs.saturating_add(AHEAD_MAX_SECS)
}

/// A version: `(unix_seconds << 32) | counter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ClockTime(pub u64);

impl ClockTime {
    pub fn new(unix_secs: u32, counter: u32) -> ClockTime {
        ClockTime(((unix_secs as u64) << 32) | counter as u64)
    }
    pub fn secs(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub fn counter(self) -> u32 {
        self.0 as u32
    }
}

/// The Lamport counter of one process.
#[derive(Debug, Default)]
pub struct Clock {
    counter: AtomicU32,
}

impl Clock {
    /// Advances the counter and returns a fresh ClockTime for `unix_secs`.
    pub fn stamp(&self, unix_secs: u32) -> ClockTime {
        ClockTime::new(unix_secs, self.tick())
    }

    /// Advances the counter; the value to put in an outgoing message.
    pub fn tick(&self) -> u32 {
        self.counter.fetch_add(1, Ordering::AcqRel).wrapping_add(1)
    }

    /// Raises the counter to `seen` if that is ahead (a received message's counter),
    /// by at most [`COUNTER_JUMP_MAX`]: a larger jump is refused (returns false).
    pub fn merge(&self, seen: u32) -> bool {
        let mut cur = self.counter.load(Ordering::Acquire);
        loop {
            if seen <= cur {
                return true;
            }
            if seen - cur >= COUNTER_JUMP_MAX {
                return false;
            }
            match self
                .counter
                .compare_exchange(cur, seen, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    pub fn current(&self) -> u32 {
        self.counter.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_and_merge_moves_forward_only() {
        let c = Clock::default();
        let a = c.stamp(100);
        let b = c.stamp(100);
        assert!(b > a);
        c.merge(1000);
        let d = c.stamp(100);
        assert_eq!(d.counter(), 1001);
        c.merge(5);
        assert!(c.stamp(100) > d);
        assert!(!c.merge(u32::MAX - 3), "a jump that would wrap the counter");
        assert!(c.stamp(100).counter() < 2000);
        assert!(from_the_future(
            ClockTime::new(1000 + AHEAD_MAX_SECS + 1, 0),
            1000
        ));
        assert!(!from_the_future(
            ClockTime::new(1000 + AHEAD_MAX_SECS, u32::MAX),
            1000
        ));
        // A later second beats any counter.
        assert!(ClockTime::new(101, 0) > ClockTime::new(100, u32::MAX));
        assert_eq!((d.secs(), d.counter()), (100, 1001));
    }
}
