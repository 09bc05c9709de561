//! What a server knows of the replaces it takes part in: the newest replace id,
//! the phase it runs, the managers to report to, and the counts kumostat shows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// What a server is doing about replaces, for kumostat replstat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Idle = 0,
    Copying = 1,
    Deleting = 2,
}

/// The replace state of one server.
#[derive(Default)]
pub struct ReplaceState {
    /// The newest replace id seen; older work stops when it changes.
    pub id: AtomicU64,
    pub(super) phase: AtomicU8,
    /// The phase running now, so a repeated start message does not start it twice.
    pub(super) running: std::sync::Mutex<Option<(u64, u8)>>,
    /// Every manager that asked for the newest replace id: reports go to each of
    /// them. Two managers may run the same replace (one was asked by kumoctl, the
    /// other took over a replace it believed abandoned); reporting to only the
    /// last asker would leave each waiting for reports the other got.
    pub(super) managers: std::sync::Mutex<(u64, Vec<SocketAddr>)>,
    pub records_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub records_received: AtomicU64,
    pub erased: AtomicU64,
    /// How long the last copy took, from reading the store to the last push
    /// answered, and the last delete phase: what the data itself cost, without
    /// the waits a replace makes around them.
    pub copy_ms: AtomicU64,
    pub delete_ms: AtomicU64,
}

impl ReplaceState {
    /// How many managers asked for replace `id`.
    pub(super) fn asked(&self, id: u64) -> usize {
        let m = self.managers.lock().unwrap_or_else(|p| p.into_inner());
        if m.0 == id {
            m.1.len()
        } else {
            0
        }
    }

    /// Whether `id` is still the newest replace: older work stops when it is not.
    pub(super) fn is_current(&self, id: u64) -> bool {
        self.id.load(Ordering::Acquire) == id
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            1 => Phase::Copying,
            2 => Phase::Deleting,
            _ => Phase::Idle,
        }
    }
}
