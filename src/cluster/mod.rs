//! Pure cluster logic: versions and placement. No sockets, threads or clocks; the
//! time is always passed in, so a test or a simulator drives it directly.
//!
//! - [`clock`]: ClockTime, the version of every write and of every hash space.
//! - [`hash_space`]: consistent hashing, which servers own a key.

pub mod clock;
pub mod hash_space;
