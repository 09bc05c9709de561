//! The timer table: a fixed number of slots, each a function run on every tick of
//! one timer thread with the current time. Call timeouts, reconnects and keepalives
//! of RPC peers, and the periodic work of roles, all live here.
//!
//! A linear scan of a small table every TICK_MS is cheaper and simpler than a heap or
//! a timer wheel at kumo's scale (a few peers per node); each slot decides for itself
//! whether its deadline has passed, from the `now` it is given.

use super::{Shared, TICK_MS};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Slots in the table: peers of a node (managers, servers, gateways) plus the
/// role's own periodic tasks. A manager watching its most servers
/// (`manager::SERVERS_MAX`, 1024) uses half; a scan of the empty rest every
/// TICK_MS costs microseconds.
pub const TIMERS_MAX: usize = 2048;

pub type TickFn = Arc<dyn Fn(Instant) + Send + Sync>;

/// A slot in the timer table; the slot is freed when this is dropped.
pub struct TimerId {
    slot: usize,
    table: Weak<Mutex<Vec<Option<TickFn>>>>,
}

impl Drop for TimerId {
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade() {
            // The function is dropped after the lock is released: it may own
            // things (peers) whose own timers are freed as they drop.
            let f = table.lock().ok().and_then(|mut t| t[self.slot].take());
            drop(f);
        }
    }
}

/// One-shot work waiting for its time.
type Deferred = (Instant, Box<dyn FnOnce() + Send>);

pub struct Timers {
    slots: Arc<Mutex<Vec<Option<TickFn>>>>,
    deferred: Mutex<Vec<Deferred>>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            slots: Arc::new(Mutex::new(vec![None; TIMERS_MAX])),
            deferred: Mutex::new(Vec::new()),
        }
    }
}

impl Timers {
    /// Runs `f` on every tick until the returned id is dropped. Fails when the table
    /// is full, which is a configuration error worth reporting, not a reason to grow.
    pub fn add(&self, f: TickFn) -> Result<TimerId, String> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots
            .iter()
            .position(Option::is_none)
            .ok_or_else(|| format!("timer table full ({TIMERS_MAX} slots)"))?;
        slots[slot] = Some(f);
        Ok(TimerId {
            slot,
            table: Arc::downgrade(&self.slots),
        })
    }

    /// Runs `f` every `period`, starting one period from now.
    pub fn every(
        &self,
        period: Duration,
        f: impl Fn(Instant) + Send + Sync + 'static,
    ) -> Result<TimerId, String> {
        let next = Mutex::new(Instant::now() + period);
        self.add(Arc::new(move |now| {
            let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
            if now >= *n {
                *n = now + period;
                drop(n);
                f(now);
            }
        }))
    }

    /// Runs `f` once, on the timer thread, `delay` from now (to the next tick). It
    /// must not block. Retries of calls wait here.
    pub fn after(&self, delay: Duration, f: impl FnOnce() + Send + 'static) {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Instant::now() + delay, Box::new(f)));
    }

    fn tick(&self, now: Instant) {
        let due: Vec<Deferred> = {
            let mut d = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
            let (due, wait) = std::mem::take(&mut *d)
                .into_iter()
                .partition(|(t, _)| *t <= now);
            *d = wait;
            due
        };
        // One failing task must not stop every timeout, keepalive and reconnect
        // of the process: a panic is logged and the tick goes on.
        for (_, f) in due {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
                log::error!("a deferred task panicked");
            }
        }
        // Copy the live slots out so a tick function may add or drop timers.
        let live: Vec<TickFn> = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.iter().flatten().cloned().collect()
        };
        for f in live {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(now))).is_err() {
                log::error!("a timer task panicked");
            }
        }
    }
}

pub(super) fn spawn_ticker(shared: Weak<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ticker".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(TICK_MS));
            let Some(s) = shared.upgrade() else { return };
            if s.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            s.timers.tick(Instant::now());
        })?;
    Ok(())
}
