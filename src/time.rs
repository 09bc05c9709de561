//! Wall-clock time, read in one place. Versions (ClockTime), expiry and the
//! freshness checks of peers' stamps all count unix seconds from here; the pure
//! logic is given the time, never reads it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch (0 if the clock is before it).
pub fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}
