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

    /// Raises the counter to `seen` if that is ahead (a received message's counter).
    pub fn merge(&self, seen: u32) {
        self.counter.fetch_max(seen, Ordering::AcqRel);
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
        // A later second beats any counter.
        assert!(ClockTime::new(101, 0) > ClockTime::new(100, u32::MAX));
        assert_eq!((d.secs(), d.counter()), (100, 1001));
    }
}
