//! The manager's side of a replace, as a state machine: events and the time go in,
//! actions come out. It opens no socket and reads no clock (the time is
//! milliseconds on whatever clock the caller keeps), so unit tests drive it, and a
//! simulator of the whole cluster can. The manager (`manager/replace.rs`) carries
//! out the actions and feeds back what the servers answer.
//!
//! A replace moves the data from the read table (rhs) to the write table (whs). Its
//! id is the whs ClockTime it moves to.
//! 1. **Copy**: every server active in either table copies what it must send
//!    ([`super::replace::copy_targets`]) and reports the end of its copy.
//! 2. **Settling**: gateways read by whs at once, while servers still write to the
//!    old readers too, so a gateway that learns the new table late still reads the
//!    latest value. After [`SETTLE_GRACE_MS`] the servers follow.
//! 3. **Delete**: rhs := whs for every node, and each server drops the records it
//!    no longer owns, and reports.
//!
//! It starts over on the newest tables when a server taking part is lost while it
//! copies, when one could not send everything, and when whs changed while the data
//! moved. A server lost once the copy is done does not stop it. It waits
//! while a server that must take part has not kept in touch with the manager.

use super::hash_space::{HashSpace, Tables};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// Pause before a phase message that got no acknowledgement is sent again, and
/// before a waiting start looks again.
pub const RESEND_MS: u64 = 1000;
/// How long gateways read by the settled table before servers are told.
pub const SETTLE_GRACE_MS: u64 = 1000;
/// Pause before copying again after a server could not send everything.
pub const COPY_AGAIN_MS: u64 = 2 * RESEND_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Copy,
    /// Copied: gateways read by the new table, servers still write to both.
    Settling,
    Delete,
}

/// A running replace.
#[derive(Debug)]
pub struct Run {
    pub id: u64,
    /// The tables the replace moves between, fixed at its start.
    pub tables: Tables,
    pub full: bool,
    pub phase: Phase,
    /// Every server taking part.
    pub targets: Vec<SocketAddr>,
    /// The servers whose end of this phase has not been reported.
    pub pending: BTreeSet<SocketAddr>,
    pub records: u64,
    pub bytes: u64,
    /// Servers whose phase message failed, and when to send it again.
    resend: BTreeMap<SocketAddr, u64>,
    /// While settling: the tables gateways read by, and when servers follow.
    settle: Option<(Tables, u64)>,
}

/// What the machine needs to know of the world at an event.
pub struct View<'a> {
    /// The manager's tables now.
    pub tables: &'a Tables,
    /// Whether the manager is in touch with a server: it has a link of its own to
    /// it and knows its stream port, so the server can take part.
    pub in_touch: &'a dyn Fn(&SocketAddr) -> bool,
    /// Milliseconds on the caller's clock.
    pub now: u64,
}

/// What the manager does for the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the running replace's `phase` (Copy or Delete) to `to`.
    Send { to: SocketAddr, phase: Phase },
    /// Gateways read by [`Replacer::gateway_tables`] now: answer them.
    GatewaysRead,
    /// rhs := whs for every node: settle the tables and publish them.
    Settle,
}

/// A server's report of the end of its part of a phase.
#[derive(Debug, Clone, Copy)]
pub struct PhaseEnd {
    pub id: u64,
    pub from: SocketAddr,
    pub phase: Phase,
    pub records: u64,
    pub bytes: u64,
    /// Some records did not reach their new owners (copy), or could not be
    /// erased (delete).
    pub failed: bool,
}

/// The replace state of one manager.
#[derive(Debug, Default)]
pub struct Replacer {
    run: Option<Run>,
    /// No run, and a start is due then (a start that waits for servers to keep in
    /// touch, or a copy to run again), with its `full`.
    retry: Option<(u64, bool)>,
    /// The newest replace known to have been started, by this manager or (as its
    /// servers say) by any other.
    started: u64,
    /// The whs stamp of the latest `-noreplace` change: the operator moves that
    /// data later, so no replace is owed until one is started after it.
    deferred: u64,
}

impl Replacer {
    pub fn run(&self) -> Option<&Run> {
        self.run.as_ref()
    }

    /// Gateways already read by the new table and servers do not yet. A change of
    /// whs now would send writes where those gateways do not read, so attach and
    /// detach wait for the settle.
    pub fn is_settling(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|r| r.phase == Phase::Settling)
    }

    /// The tables gateways route by while a replace settles.
    pub fn gateway_tables(&self) -> Option<&Tables> {
        self.run.as_ref()?.settle.as_ref().map(|(t, _)| t)
    }

    /// A start is due later (see `retry`).
    pub fn is_waiting(&self) -> bool {
        self.run.is_none() && self.retry.is_some()
    }

    /// A server says replace `id` was started (by any manager).
    pub fn note_started(&mut self, id: u64) {
        self.started = self.started.max(id);
    }

    /// The tables changed without a replace (`-noreplace`): nothing is owed for
    /// them until a replace is started after.
    pub fn defer(&mut self, whs_clock: u64) {
        self.deferred = whs_clock;
    }

    /// A replace was started and not finished: reads and writes use different
    /// layouts, and a replace was started since the last `-noreplace` change. (A
    /// replace started for that very change has its stamp as id: it counts.)
    pub fn owed(&self, t: &Tables) -> bool {
        self.started > 0
            && self.started >= self.deferred
            && !t.whs.is_empty()
            && !t.whs.same_layout(&t.rhs)
    }

    /// The tables hold data to move that no run is moving.
    pub fn behind(&self, t: &Tables) -> bool {
        t.whs != t.rhs && self.run.as_ref().is_none_or(|r| r.id != t.whs.clocktime.0)
    }

    /// Starts (or restarts) a replace to the current whs. Every server active in
    /// either table takes part, so the start waits until each keeps in touch; a
    /// server that never does is lost, which changes the tables.
    pub fn start(&mut self, v: &View, full: bool) -> Vec<Action> {
        // A settle in progress is abandoned: gateways keep the tables they have
        // (newer ones come with this replace's own settle).
        self.run = None;
        let members = v.tables.active_servers();
        let missing: Vec<SocketAddr> = members
            .iter()
            .filter(|a| !(v.in_touch)(a))
            .copied()
            .collect();
        if !missing.is_empty() {
            log::info!("replace waits for {missing:?} to keep in touch");
            self.retry = Some((v.now + RESEND_MS, full));
            return Vec::new();
        }
        self.retry = None;
        if members.is_empty() {
            return vec![Action::Settle];
        }
        let id = v.tables.whs.clocktime.0;
        self.started = self.started.max(id);
        log::info!(
            "start replace copy {id:#x} ({} servers{})",
            members.len(),
            if full { ", full" } else { "" }
        );
        self.run = Some(Run {
            id,
            tables: v.tables.clone(),
            full,
            phase: Phase::Copy,
            pending: members.iter().copied().collect(),
            targets: members.clone(),
            records: 0,
            bytes: 0,
            resend: BTreeMap::new(),
            settle: None,
        });
        members
            .into_iter()
            .map(|to| Action::Send {
                to,
                phase: Phase::Copy,
            })
            .collect()
    }

    /// Sending `phase` of replace `id` to `to` failed. A server that runs a newer
    /// replace (`superseded`) means another manager finishes the job; otherwise the
    /// message goes again after RESEND_MS while its end is still awaited.
    pub fn send_failed(
        &mut self,
        to: SocketAddr,
        id: u64,
        phase: Phase,
        superseded: bool,
        now: u64,
    ) {
        let Some(run) = self.run.as_mut().filter(|r| r.id == id) else {
            return;
        };
        if superseded {
            log::warn!("replace {id:#x}: superseded by a newer one; abandoned");
            self.run = None;
        } else if run.phase == phase && run.pending.contains(&to) {
            run.resend.insert(to, now + RESEND_MS);
        }
    }

    /// A server reports the end of its part of a phase. Reports of another
    /// replace or phase, and repeated ones, change nothing.
    pub fn phase_done(&mut self, v: &View, end: PhaseEnd) -> Vec<Action> {
        let Some(run) = self.run.as_mut() else {
            return Vec::new();
        };
        if run.id != end.id || run.phase != end.phase || !run.pending.contains(&end.from) {
            return Vec::new();
        }
        let id = run.id;
        if end.failed {
            // Records that did not reach their new owners must not be trimmed
            // from the old ones, and records a server could not erase (its disk
            // was full) must not stay as copies beyond three: the replace runs
            // again instead of moving on.
            log::warn!(
                "replace {id:#x}: {} could not finish its part of the {:?} phase; running it again shortly",
                end.from,
                end.phase
            );
            self.retry = Some((v.now + COPY_AGAIN_MS, run.full));
            self.run = None;
            return Vec::new();
        }
        run.pending.remove(&end.from);
        run.resend.remove(&end.from);
        run.records = run.records.saturating_add(end.records);
        run.bytes = run.bytes.saturating_add(end.bytes);
        if !run.pending.is_empty() {
            return Vec::new();
        }
        // Servers lost since the settle changed nothing the delete phase needs:
        // rhs took the write table with them fault.
        let lost_only =
            end.phase == Phase::Delete && only_lost_since(&run.tables.whs, &v.tables.whs);
        if v.tables.whs.clocktime.0 != id && !lost_only {
            log::info!(
                "replace {id:#x}: the tables changed meanwhile; copying again for the new ones"
            );
            let full = run.full;
            return self.start(v, full);
        }
        match end.phase {
            Phase::Copy => {
                log::info!(
                    "replace {id:#x}: copy finished ({} records, {} bytes); reads follow writes",
                    run.records,
                    run.bytes
                );
                let mut settled = v.tables.clone();
                settled.rhs = settled.whs.clone();
                run.phase = Phase::Settling;
                run.settle = Some((settled, v.now + SETTLE_GRACE_MS));
                vec![Action::GatewaysRead]
            }
            Phase::Settling => Vec::new(),
            Phase::Delete => {
                log::info!("replace finished {id:#x}");
                self.run = None;
                Vec::new()
            }
        }
    }

    /// The time passes: messages to send again, the end of a settle, a start due.
    pub fn tick(&mut self, v: &View) -> Vec<Action> {
        let Some(run) = self.run.as_mut() else {
            return match self.retry {
                Some((at, full)) if v.now >= at => self.start(v, full),
                _ => Vec::new(),
            };
        };
        let mut out = Vec::new();
        let due: Vec<SocketAddr> = run
            .resend
            .iter()
            .filter(|(_, at)| **at <= v.now)
            .map(|(a, _)| *a)
            .collect();
        for to in due {
            run.resend.remove(&to);
            if run.pending.contains(&to) {
                out.push(Action::Send {
                    to,
                    phase: run.phase,
                });
            }
        }
        if run
            .settle
            .as_ref()
            .is_some_and(|(_, until)| v.now >= *until)
        {
            let settled = run.settle.take().map(|(t, _)| t.whs);
            let still_right = settled.is_some_and(|s| only_lost_since(&s, &v.tables.whs));
            if v.tables.whs.clocktime.0 != run.id && !still_right {
                let full = run.full;
                return self.start(v, full);
            }
            run.phase = Phase::Delete;
            run.pending = run
                .targets
                .iter()
                .copied()
                .filter(|a| (v.in_touch)(a))
                .collect();
            out.push(Action::Settle);
            out.extend(run.pending.iter().map(|&to| Action::Send {
                to,
                phase: Phase::Delete,
            }));
            if run.pending.is_empty() {
                log::info!("replace finished {:#x}", run.id);
                self.run = None;
            }
        }
        out
    }

    /// A server was lost. What it was to send or receive must come from the next
    /// owner: a run it takes part in (or one whose tables the loss changed) starts
    /// over on the new tables rather than wait for a report that will never come.
    ///
    /// A run that is settling goes on: gateways already read by its settled table,
    /// and with one server lost since, that table minus the server is still where
    /// every acknowledged write is. Starting over would leave the gateways on a
    /// read table newer than any the managers publish next, which lists the lost
    /// server as active (a wiped server, back and attached, was then read before
    /// its copy).
    pub fn server_lost(&mut self, v: &View, addr: SocketAddr, changed: bool) -> Vec<Action> {
        let Some(run) = &self.run else {
            return Vec::new();
        };
        if let Some((settled, _)) = &run.settle {
            if only_lost_since(&settled.whs, &v.tables.whs) {
                log::warn!(
                    "server {addr} lost while replace {:#x} settles; the settle goes on",
                    run.id
                );
                return Vec::new();
            }
        }
        if changed || run.pending.contains(&addr) || run.targets.contains(&addr) {
            log::warn!("server {addr} lost during a replace; restarting it");
            let full = run.full;
            return self.start(v, full);
        }
        Vec::new()
    }

    /// Tables newer than the run came from elsewhere (the partner's change, with
    /// its own replace): servers now run that one and will not report on ours,
    /// which is dropped. Returns whether it was.
    pub fn tables_adopted(&mut self, t: &Tables) -> bool {
        let superseded = self
            .run
            .as_ref()
            .is_some_and(|r| t.whs.clocktime.0 > r.id || t.rhs.clocktime.0 >= r.id);
        if superseded {
            log::info!(
                "replace {:#x}: superseded or finished elsewhere; dropped",
                self.run.as_ref().map_or(0, |r| r.id)
            );
            self.run = None;
        }
        superseded
    }
}

/// Whether `now` is `earlier` with some of its active servers marked fault, and
/// nothing else changed: every server active in `now` was active in `earlier`.
/// Data copied to the owners of `earlier` is then on every active owner of `now`.
pub fn only_lost_since(earlier: &HashSpace, now: &HashSpace) -> bool {
    earlier.nodes().len() == now.nodes().len()
        && earlier
            .nodes()
            .iter()
            .zip(now.nodes())
            .all(|(e, n)| e.addr == n.addr && (e.active || !n.active))
}

#[cfg(test)]
mod tests;
