//! The store's tuning, from `-s PATH#name=value#...` and the server's
//! `-gS`/`-gN`/`-gX`.

use super::record;
use std::time::Duration;

/// Segment offsets are u32 in the index.
pub(super) const SEGMENT_SIZE_MAX: u64 = u32::MAX as u64 - record::RECORD_SIZE_MAX as u64;

/// When written data is also fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Never: the page cache survives a process crash, not a power loss.
    None,
    /// A background thread fsyncs every so often (the default, every 1000 ms).
    Interval(Duration),
    /// Every write is fsynced before it returns.
    Always,
}

/// Tuning, from `-s PATH#name=value#...` and the server's `-gS`/`-gN`/`-gX`.
#[derive(Debug, Clone)]
pub struct Options {
    pub sync: SyncPolicy,
    /// A segment is sealed and a new one started past this size.
    pub segment_size: u64,
    /// A sealed segment is compacted once this percentage of it is dead.
    pub compact_ratio_percent: u64,
    /// ...and at least this many bytes are dead.
    pub compact_min_bytes: u64,
    /// `-gX`: tombstones older than this are collected.
    pub tombstone_max_age: Duration,
    /// `-gN`: tombstones older than this are collected when their bookkeeping
    /// exceeds `tombstone_mem_limit`.
    pub tombstone_min_age: Duration,
    /// `-gS`: bytes of tombstone bookkeeping that trigger early collection.
    pub tombstone_mem_limit: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncPolicy::Interval(Duration::from_millis(1000)),
            segment_size: 256 << 20,
            compact_ratio_percent: 50,
            compact_min_bytes: 1 << 20,
            tombstone_max_age: Duration::from_secs(3600),
            tombstone_min_age: Duration::from_secs(60),
            tombstone_mem_limit: 2048 << 10,
        }
    }
}

/// The `#name=value` options the store understands, for help text and man pages.
pub const OPTION_HELP: &str = "sync=none|interval|always (default interval), sync_ms=N (interval \
period, default 1000), segment_size=SIZE (default 256m), compact_ratio=PERCENT (default 50), \
compact_min=SIZE (default 1m); Tokyo Cabinet's xmsiz and rcnum are accepted and ignored";

impl Options {
    /// Applies `#name=value` options. Unknown names are an error that names them.
    pub fn apply(&mut self, params: &[(String, String)]) -> std::result::Result<(), String> {
        let size = |v: &str, name: &str| {
            crate::sizes::parse_size(v)
                .ok_or_else(|| format!("store option {name}={v}: expected a size such as 64m"))
        };
        let mut sync_ms = None;
        let mut sync = None;
        for (name, value) in params {
            match name.as_str() {
                "sync" => {
                    sync = Some(match value.as_str() {
                        "none" => SyncPolicy::None,
                        "always" => SyncPolicy::Always,
                        "interval" => SyncPolicy::Interval(Duration::from_millis(1000)),
                        _ => return Err(format!("store option sync={value}: expected none, interval or always")),
                    })
                }
                "sync_ms" => {
                    let ms: u64 = value.parse().ok().filter(|m| *m > 0).ok_or_else(|| {
                        format!("store option sync_ms={value}: expected milliseconds above 0")
                    })?;
                    sync_ms = Some(ms);
                }
                "segment_size" => {
                    let s = size(value, name)?;
                    if !(4096..=SEGMENT_SIZE_MAX).contains(&s) {
                        return Err(format!("store option segment_size={value}: expected 4k to 3g"));
                    }
                    self.segment_size = s;
                }
                "compact_ratio" => {
                    self.compact_ratio_percent = value.parse().ok().filter(|p| (1..=100).contains(p)).ok_or_else(|| {
                        format!("store option compact_ratio={value}: expected a percentage from 1 to 100")
                    })?
                }
                "compact_min" => self.compact_min_bytes = size(value, name)?,
                "xmsiz" | "rcnum" => log::warn!(
                    "store option {name}={value} is a Tokyo Cabinet setting; it does not apply to kumo's store and is ignored"
                ),
                _ => return Err(format!("unknown store option '{name}' (known: {OPTION_HELP})")),
            }
        }
        self.sync = match (sync.unwrap_or(self.sync), sync_ms) {
            (SyncPolicy::Interval(_), Some(ms)) => SyncPolicy::Interval(Duration::from_millis(ms)),
            (_, Some(_)) => return Err("store option sync_ms applies only to sync=interval".into()),
            (s, None) => s,
        };
        Ok(())
    }
}
