//! kumo-manager: keeps the list of servers and the hash spaces, and tells every
//! server and gateway about changes. The decisions are in
//! [`crate::cluster::membership`]; this is the I/O around them.
//!
//! - Servers call `KeepAlive` every `-Ci` with their address. The first one makes the
//!   manager watch the server through a peer of its own with keepalives; when that
//!   peer fails `-Yn` reconnects, the server is lost and marked fault.
//! - Tables go out at once on every change: `HashSpaceSync` to each server and the
//!   partner, and the answer to every gateway waiting in `HashSpaceRequest` (a long
//!   poll). The keepalive traffic carries them too, so a lost push is repaired
//!   within one interval.
//! - Gateways and servers report servers they cannot reach (`ReportUnreachable`):
//!   a cut the manager does not see itself. The manager marks fault the servers
//!   [`crate::cluster::partition`] blames: the node at the centre of the broken
//!   links, which is not always the one reported.
//! - Nothing is persisted. A restarted manager relearns the tables from the first
//!   server that keeps in touch (newer wins), so a cluster survives losing every
//!   manager and getting them back.

use crate::cli::Args;
use crate::cluster::clock::{Clock, ClockTime};
use crate::cluster::membership::Membership;
use crate::cluster::partition::{BrokenLinks, Node, GATHER_MS};
use crate::daemon;
use crate::net::{self, rpc_server::RpcSession, Peer, Reply, Service};
use crate::proto::cluster::{self as msg, NodesInfo, ReplaceProgress};
use crate::time::unix_now;
use rmpv::Value;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The longest a gateway's `HashSpaceRequest` is held waiting for a change.
pub const WATCH_WAIT_MAX: Duration = Duration::from_secs(30);
/// Gateways waiting for a change, at most.
pub const WATCHERS_MAX: usize = 4096;
/// Servers a manager watches, attached or not, at most. Anyone who reaches the
/// port can send a keepalive, and each new address costs a watching link; past
/// this, keepalives from unknown addresses are refused. Servers that stop keeping
/// in touch are lost and forgotten, making room again.
pub const SERVERS_MAX: usize = 1024;

struct Watcher {
    reply: Reply,
    whs: u64,
    rhs: u64,
    until: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunPhase {
    Copy,
    /// Copied: gateways read by the new table, servers still write to both.
    Settling,
    Delete,
}

/// A replace this manager runs. Its id is the whs ClockTime it moves to.
struct Run {
    id: u64,
    /// The tables the replace moves between, fixed at its start.
    whs: crate::cluster::hash_space::HashSpace,
    rhs: crate::cluster::hash_space::HashSpace,
    full: bool,
    phase: RunPhase,
    targets: Vec<SocketAddr>,
    pending: BTreeSet<SocketAddr>,
    records: u64,
    bytes: u64,
}

/// Pause before a replace message that got no acknowledgement is sent again.
pub const REPLACE_RESEND: Duration = Duration::from_secs(1);
/// How long a server may take to acknowledge a replace phase or write a backup.
pub const REPLACE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(600);
/// How long gateways read by the settled table before servers are told: until
/// then servers keep writing to the old readers too, so a gateway that learns
/// late still reads the latest value.
pub const SETTLE_GRACE: Duration = Duration::from_secs(1);
/// How often a table change held back by a settle looks again.
pub const SETTLE_POLL: Duration = Duration::from_millis(100);

struct State {
    members: Membership,
    /// Each watched server's stream port (`-L`), from its keepalives.
    streams: HashMap<SocketAddr, u16>,
    /// Each server's incarnation (its start time), from its keepalives.
    incarnations: HashMap<SocketAddr, u64>,
    run: Option<Run>,
    /// The settled tables, given to gateways for SETTLE_GRACE before servers.
    gateway_tables: Option<crate::cluster::hash_space::Tables>,
    /// Bumped by every start of a replace; a deferred start runs only if latest.
    start_token: u64,
    /// A start waits for members to keep in touch (and will retry by itself).
    start_waiting: bool,
    /// Servers being watched, by address.
    servers: HashMap<SocketAddr, Arc<Peer>>,
    watchers: Vec<Watcher>,
    auto_replace: bool,
    /// Bumped by every change auto replace reacts to; only the latest fires.
    auto_token: u64,
    /// The newest replace known to have been started, by this manager or (as its
    /// servers say) by any other (see `supervise`).
    started: u64,
    /// The whs stamp of the latest `-noreplace` change: the operator moves that
    /// data later, so no replace is owed until one is started after it.
    deferred: u64,
    /// Servers whose last keepalive said their store is full.
    full: BTreeSet<SocketAddr>,
    /// Reports of servers that nodes cannot reach, since the last decision.
    broken: BrokenLinks,
    /// A decision on `broken` is scheduled.
    decision_due: bool,
}

/// How long a (re)started manager listens before it changes the tables: one
/// keepalive interval (`-Ci`), in which every running server keeps in touch and
/// brings its tables, plus this margin for reconnecting. So an attach right after a
/// restart does not build a cluster from nothing.
pub const LEARN_MARGIN: Duration = Duration::from_secs(1);

pub struct Manager {
    me: SocketAddr,
    /// The clock of the reports of broken links.
    started: Instant,
    /// Until then the manager is learning the cluster (see `learning`).
    learn_until: Mutex<Option<Instant>>,
    net: net::Net,
    clock: Clock,
    partner: Mutex<Option<Arc<Peer>>>,
    replace_delay: Duration,
    state: Mutex<State>,
}

impl Manager {
    /// How much longer the manager is learning the cluster. A manager keeps
    /// nothing on disk: restarted, it knows no server until they keep in touch,
    /// and an attach before then would publish a table of only the servers heard
    /// so far, newer than the cluster's, which every node would take. Requests
    /// that change the tables wait until it has heard a full round of keepalives
    /// (the partner's tables end the wait at once: it knows the cluster).
    fn learning(&self) -> Option<Duration> {
        let mut until = self.learn_until.lock().unwrap_or_else(|p| p.into_inner());
        let left = until.and_then(|u| u.checked_duration_since(Instant::now()));
        if left.is_none() {
            *until = None;
        }
        left.filter(|d| !d.is_zero())
    }

    /// Whether a replace is settling: gateways already read by its new table and
    /// servers do not yet. A change of whs now would send writes where those
    /// gateways do not read (and the copy for the new whs would start from a read
    /// table the gateways have left), so attach and detach wait for the settle,
    /// which takes SETTLE_GRACE.
    fn settling(&self) -> bool {
        self.lock()
            .run
            .as_ref()
            .is_some_and(|r| r.phase == RunPhase::Settling)
    }

    fn learnt(&self) {
        *self.learn_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh ClockTime for a table change, never older than the tables held: a
    /// clock behind the partner's must not produce a change nobody takes.
    fn stamp(&self, st: &State) -> ClockTime {
        self.clock.stamp(unix_now()).max(st.members.floor())
    }

    /// Sends the tables to every server, the partner and the waiting gateways.
    fn publish(&self, st: &mut State, to_partner: bool) {
        let t = &st.members.tables;
        let params = [
            Value::from(self.clock.tick()),
            t.whs.to_value(),
            t.rhs.to_value(),
        ];
        let timeout = self.net.config().keepalive.max(Duration::from_secs(1));
        let mut targets: Vec<Arc<Peer>> = st.servers.values().cloned().collect();
        if to_partner {
            targets.extend(
                self.partner
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            );
        }
        for p in targets {
            let addr = p.addr();
            p.call(
                msg::HASH_SPACE_SYNC,
                &params,
                timeout,
                Box::new(move |r| {
                    if let Err(e) = r {
                        log::debug!("{addr}: hash space push failed: {e}");
                    }
                }),
            );
        }
        self.answer_watchers(st);
    }

    /// The tables gateways route by: the servers' tables, except while a settled
    /// rhs is being handed to gateways before servers (see `phase_done`).
    fn gateway_tables(st: &State) -> &crate::cluster::hash_space::Tables {
        st.gateway_tables.as_ref().unwrap_or(&st.members.tables)
    }

    /// Answers the gateways waiting for tables newer than theirs.
    fn answer_watchers(&self, st: &mut State) {
        let t = Self::gateway_tables(st);
        let answer = msg::spaces_to_value(&t.whs, &t.rhs);
        let (w, r) = (t.whs.clocktime.0, t.rhs.clocktime.0);
        let (stale, keep): (Vec<Watcher>, Vec<Watcher>) = std::mem::take(&mut st.watchers)
            .into_iter()
            .partition(|x| x.whs != w || x.rhs != r);
        st.watchers = keep;
        for x in stale {
            x.reply.ok(answer.clone());
        }
    }

    fn log_tables(&self, st: &State, why: &str) {
        let t = &st.members.tables;
        log::info!(
            "{why}: whs {} ({} active), rhs {} servers, clock {:#x}",
            t.whs.nodes().len(),
            t.whs.nodes().iter().filter(|n| n.active).count(),
            t.rhs.nodes().len(),
            t.whs.clocktime.0
        );
    }

    /// A server's keepalive: watch it if new, take newer tables, answer ours.
    fn server_keepalive(self: &Arc<Self>, params: &[Value], reply: Reply) {
        let addr = match msg::addr_from_value(params.get(1)) {
            Ok(a) => a,
            Err(e) => return reply.err(e),
        };
        {
            let st = self.lock();
            if !st.servers.contains_key(&addr) && st.servers.len() >= SERVERS_MAX {
                drop(st);
                log::warn!(
                    "keepalive from {addr} refused: {SERVERS_MAX} servers are watched already"
                );
                return reply.err(format!(
                    "this manager watches {SERVERS_MAX} servers already; {addr} is refused"
                ));
            }
        }
        // A server restarted faster than a keepalive could miss it comes back with
        // a new incarnation: it may have lost data, so it is treated as lost and
        // returned, and the next replace brings it up to date. Only its first
        // keepalives count, while it holds no tables: both managers hear those at
        // once, and neither may mark it fault again after it has been re-attached.
        let fresh = params
            .get(2)
            .and_then(crate::cluster::hash_space::HashSpace::from_value)
            .is_some_and(|w| w.nodes().is_empty());
        if let Some(inc) = params.get(5).and_then(Value::as_u64) {
            let previous = self.lock().incarnations.insert(addr, inc);
            if fresh && previous.is_some_and(|p| p != inc) {
                log::warn!("server {addr} restarted");
                self.server_lost(addr);
            }
        }
        let mut st = self.lock();
        if let Ok((w, r)) = msg::spaces_from(params.get(2..).unwrap_or(&[])) {
            if self.adopt(&mut st, w, r) {
                self.log_tables(&st, &format!("tables learnt from server {addr}"));
                self.drop_superseded_run(&mut st);
                self.publish(&mut st, true);
            }
        }
        if let Some(id) = params.get(6).and_then(Value::as_u64) {
            st.started = st.started.max(id);
        }
        if params.get(7).and_then(Value::as_bool) == Some(true) {
            if st.full.insert(addr) {
                log::error!("server {addr}: its store is full; writes to its keys fail");
            }
        } else if st.full.remove(&addr) {
            log::warn!("server {addr}: its store has space again");
        }
        if let Some(port) = params
            .get(4)
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
        {
            st.streams.insert(addr, port);
        }
        self.watch_server(&mut st, addr);
        if st.members.server_seen(addr) {
            log::info!("server connected {addr} (not attached)");
            self.schedule_auto_replace(&mut st);
        }
        let t = &st.members.tables;
        reply.ok(msg::spaces_to_value(&t.whs, &t.rhs));
    }

    /// Watches `addr` with a keepalive link of our own, if not yet: when the link
    /// fails `-Yn` reconnects, the server is lost.
    fn watch_server(self: &Arc<Self>, st: &mut State, addr: SocketAddr) {
        st.servers.entry(addr).or_insert_with(|| {
            log::warn!("new node {addr}");
            let weak = Arc::downgrade(self);
            let clock_src = Arc::downgrade(self);
            Peer::with_keepalive(
                &self.net,
                addr,
                Box::new(move || {
                    let clk = clock_src.upgrade().map(|m| m.clock.tick()).unwrap_or(0);
                    (msg::KEEP_ALIVE.to_string(), vec![Value::from(clk)])
                }),
                Box::new(move |a| {
                    if let Some(m) = weak.upgrade() {
                        m.server_lost(a);
                    }
                }),
            )
        });
    }

    /// Watches every server the tables call active, heard from or not. A manager
    /// that learnt the tables (restarted, or from its partner) may never hear a
    /// server that died meanwhile; unwatched, it would stay active for ever and
    /// every replace would wait for it.
    fn watch_tables(self: &Arc<Self>, st: &mut State) {
        for a in st.members.tables.active_servers() {
            self.watch_server(st, a);
        }
    }

    /// Takes newer tables (from the partner or a server). Servers they attach
    /// again are as good as attached here: reports of them from before are
    /// forgotten.
    fn adopt(
        &self,
        st: &mut State,
        whs: crate::cluster::hash_space::HashSpace,
        rhs: crate::cluster::hash_space::HashSpace,
    ) -> bool {
        let before = st.members.tables.whs.clone();
        if !st.members.adopt(whs, rhs, unix_now()) {
            return false;
        }
        let now = self.started.elapsed().as_millis() as u64;
        for n in st.members.tables.whs.nodes() {
            if n.active && !before.is_active(&n.addr) {
                st.broken.forget(n.addr, now);
            }
        }
        true
    }

    /// A node cannot reach some servers. The report joins the graph of broken
    /// links, and the manager decides on it GATHER_MS later
    /// ([`crate::cluster::partition`]).
    fn unreachable_reported(self: &Arc<Self>, params: &[Value]) -> Result<(), String> {
        let from = match params.first() {
            Some(Value::Binary(_)) => Node::Server(msg::addr_from_value(params.first())?),
            Some(v) => Node::Gateway(v.as_u64().ok_or("bad reporter")?),
            None => return Err("bad parameters: expected [reporter, [address...]]".into()),
        };
        let reported = params
            .get(1)
            .and_then(Value::as_array)
            .ok_or("bad parameters: expected [reporter, [address...]]")?
            .iter()
            .map(|v| msg::addr_from_value(Some(v)).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        log::info!("{from:?} cannot reach {reported:?}");
        if self.learning().is_some() {
            // A manager that does not know the cluster yet cannot tell a cut from
            // a server that is simply new to it; the cut is reported again.
            return Ok(());
        }
        let now = self.started.elapsed().as_millis() as u64;
        let mut st = self.lock();
        st.broken.report(from, &reported, now);
        if !std::mem::replace(&mut st.decision_due, true) {
            let weak = Arc::downgrade(self);
            self.net
                .timers()
                .after(Duration::from_millis(GATHER_MS), move || {
                    if let Some(m) = weak.upgrade() {
                        m.decide_on_reports();
                    }
                });
        }
        Ok(())
    }

    /// Marks fault the servers the reports of broken links blame. Only the leading
    /// manager decides (both hear the reports), so the two do not act on
    /// different views of the same cut.
    fn decide_on_reports(self: &Arc<Self>) {
        let leads = self.leads();
        let faults = {
            let mut st = self.lock();
            st.decision_due = false;
            let whs = st.members.tables.whs.clone();
            let silent: Vec<SocketAddr> = st
                .servers
                .iter()
                .filter(|(_, p)| p.is_failing())
                .map(|(a, _)| *a)
                .collect();
            let faults = st.broken.decide(&whs, &silent);
            if leads {
                faults
            } else {
                Vec::new()
            }
        };
        for a in faults {
            log::warn!("server {a} is cut off from the nodes that reported it; marking it fault");
            self.server_lost(a);
        }
    }

    fn server_lost(self: &Arc<Self>, addr: SocketAddr) {
        let mut st = self.lock();
        st.broken
            .forget(addr, self.started.elapsed().as_millis() as u64);
        st.servers.remove(&addr);
        st.full.remove(&addr);
        // A server never attached is forgotten whole; an attached one's incarnation
        // is kept, to recognise its restart.
        let t = &st.members.tables;
        if !t.whs.contains(&addr) && !t.rhs.contains(&addr) {
            st.incarnations.remove(&addr);
            st.streams.remove(&addr);
        }
        log::warn!("lost node {addr}");
        let stamp = self.stamp(&st);
        let changed = st.members.server_lost(addr, stamp);
        if changed {
            self.log_tables(&st, &format!("server {addr} marked fault"));
            self.publish(&mut st, true);
        }
        // What the lost server was to send or receive must come from the next
        // owner: the running replace starts over on the new tables rather than
        // wait for a report that will never come.
        let involved = st
            .run
            .as_ref()
            .is_some_and(|r| r.pending.contains(&addr) || r.targets.contains(&addr));
        if let (true, Some(full)) = (changed || involved, st.run.as_ref().map(|r| r.full)) {
            log::warn!("server {addr} lost during a replace; restarting it");
            self.start_replace(&mut st, full);
        }
        self.schedule_auto_replace(&mut st);
    }

    /// Tables newer than the running replace came from elsewhere (the partner's
    /// change, with its own replace): servers now run that one and will not
    /// report on ours, which is dropped. The next attach or replace here starts
    /// afresh if anything is left to move.
    fn drop_superseded_run(&self, st: &mut State) {
        if let Some(r) = &st.run {
            let t = &st.members.tables;
            if t.whs.clocktime.0 > r.id || t.rhs.clocktime.0 >= r.id {
                log::info!(
                    "replace {:#x}: superseded or finished elsewhere; dropped",
                    r.id
                );
                st.run = None;
                st.gateway_tables = None;
            }
        }
    }

    /// Only one manager of a pair runs automatic replaces: the smaller address,
    /// or this one while the partner is unreachable.
    fn leads(&self) -> bool {
        match &*self.partner.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(p) => self.me < p.addr() || !p.is_connected(),
            None => true,
        }
    }

    /// Starts (or restarts) a replace to the current whs. Every server active in
    /// either table takes part, so the replace waits until each of them keeps in
    /// touch with this manager (a restarted manager, or a server a keepalive away);
    /// a server that never does is lost, which changes the tables.
    fn start_replace(self: &Arc<Self>, st: &mut State, full: bool) {
        // A settle in progress is abandoned: gateways keep the tables they have
        // (newer ones come with this replace's own settle).
        st.gateway_tables = None;
        let members = st.members.tables.active_servers();
        let missing: Vec<SocketAddr> = members
            .iter()
            .filter(|a| !st.servers.contains_key(a) || !st.streams.contains_key(a))
            .copied()
            .collect();
        if !missing.is_empty() {
            st.run = None;
            st.start_token += 1;
            st.start_waiting = true;
            let token = st.start_token;
            log::info!("replace waits for {missing:?} to keep in touch");
            let weak = Arc::downgrade(self);
            self.net.timers().after(REPLACE_RESEND, move || {
                let Some(m) = weak.upgrade() else { return };
                let mut st = m.lock();
                if st.start_token == token && st.run.is_none() {
                    m.start_replace(&mut st, full);
                }
            });
            return;
        }
        st.start_token += 1;
        st.start_waiting = false;
        let targets = members;
        let t = &st.members.tables;
        let id = t.whs.clocktime.0;
        if targets.is_empty() {
            st.run = None;
            if st.members.settle() {
                self.publish(st, true);
            }
            return;
        }
        st.started = st.started.max(id);
        log::info!(
            "start replace copy {id:#x} ({} servers{})",
            targets.len(),
            if full { ", full" } else { "" }
        );
        st.run = Some(Run {
            id,
            whs: t.whs.clone(),
            rhs: t.rhs.clone(),
            full,
            phase: RunPhase::Copy,
            pending: targets.iter().copied().collect(),
            targets: targets.clone(),
            records: 0,
            bytes: 0,
        });
        for a in targets {
            self.send_phase(st, a, id, RunPhase::Copy);
        }
    }

    /// Sends `phase` of replace `id` to `addr`, again until it is acknowledged.
    fn send_phase(self: &Arc<Self>, st: &State, addr: SocketAddr, id: u64, phase: RunPhase) {
        let Some(peer) = st.servers.get(&addr).cloned() else {
            return;
        };
        let Some(run) = &st.run else { return };
        let (method, params) = match phase {
            // Nothing is sent while settling; the grace timer moves on.
            RunPhase::Settling => return,
            RunPhase::Copy => {
                let streams = st
                    .streams
                    .iter()
                    .map(|(a, p)| Value::Array(vec![msg::addr_to_value(a), Value::from(*p)]))
                    .collect();
                (
                    msg::REPLACE_COPY_START,
                    vec![
                        Value::from(self.clock.tick()),
                        Value::from(id),
                        msg::addr_to_value(&self.me),
                        run.whs.to_value(),
                        run.rhs.to_value(),
                        Value::from(run.full),
                        Value::Array(streams),
                    ],
                )
            }
            RunPhase::Delete => (
                msg::REPLACE_DELETE_START,
                vec![
                    Value::from(self.clock.tick()),
                    Value::from(id),
                    msg::addr_to_value(&self.me),
                    run.whs.to_value(),
                ],
            ),
        };
        let weak = Arc::downgrade(self);
        peer.call(
            method,
            &params,
            REPLACE_CALL_TIMEOUT,
            Box::new(move |r| {
                let Err(e) = r else { return };
                let Some(m) = weak.upgrade() else { return };
                log::warn!("replace {id:#x}: {addr} did not take {method}: {e}");
                if e.to_string().contains(msg::SUPERSEDED) {
                    // The other manager runs a newer replace; it will finish the job.
                    let mut st = m.lock();
                    if st.run.as_ref().is_some_and(|r| r.id == id) {
                        log::warn!("replace {id:#x}: superseded by a newer one; abandoned");
                        st.run = None;
                    }
                    return;
                }
                let w = Arc::downgrade(&m);
                m.net.timers().after(REPLACE_RESEND, move || {
                    let Some(m) = w.upgrade() else { return };
                    let st = m.lock();
                    let waiting = st.run.as_ref().is_some_and(|r| {
                        r.id == id && r.phase == phase && r.pending.contains(&addr)
                    });
                    if waiting {
                        m.send_phase(&st, addr, id, phase);
                    }
                });
            }),
        );
    }

    /// A server finished a phase of replace `id`.
    fn phase_done(
        self: &Arc<Self>,
        phase: RunPhase,
        id: u64,
        addr: SocketAddr,
        records: u64,
        bytes: u64,
        failed: bool,
    ) {
        let mut st = self.lock();
        let Some(run) = st.run.as_mut() else { return };
        if run.id != id || run.phase != phase || !run.pending.contains(&addr) {
            return;
        }
        if failed {
            // Records that did not reach their new owners must not be trimmed
            // from the old ones: copy again instead of moving on.
            log::warn!("replace {id:#x}: {addr} could not send everything; copying again shortly");
            let full = run.full;
            st.run = None;
            let weak = Arc::downgrade(self);
            self.net.timers().after(REPLACE_RESEND * 2, move || {
                let Some(m) = weak.upgrade() else { return };
                let mut st = m.lock();
                if st.run.is_none() {
                    m.start_replace(&mut st, full);
                }
            });
            return;
        }
        run.pending.remove(&addr);
        run.records = run.records.saturating_add(records);
        run.bytes = run.bytes.saturating_add(bytes);
        if !run.pending.is_empty() {
            return;
        }
        let (records_total, bytes_total, alive) = (run.records, run.bytes, run.targets.clone());
        if st.members.tables.whs.clocktime.0 != id {
            // whs changed while the data moved (attach-noreplace, a partner's
            // change): settling now would send reads where nothing was copied.
            log::info!(
                "replace {id:#x}: the tables changed meanwhile; copying again for the new ones"
            );
            let full = st.run.as_ref().is_some_and(|r| r.full);
            self.start_replace(&mut st, full);
            return;
        }
        match phase {
            RunPhase::Copy => {
                log::info!(
                    "replace {id:#x}: copy finished ({records_total} records, {bytes_total} bytes); reads follow writes"
                );
                // Gateways first: they read by the new table at once, while servers
                // still replicate to the old readers too; servers follow after the
                // grace, and only then start dropping what they no longer own.
                let mut settled = st.members.tables.clone();
                settled.rhs = settled.whs.clone();
                st.gateway_tables = Some(settled);
                self.answer_watchers(&mut st);
                if let Some(run) = st.run.as_mut() {
                    run.phase = RunPhase::Settling;
                }
                let weak = Arc::downgrade(self);
                self.net.timers().after(SETTLE_GRACE, move || {
                    let Some(m) = weak.upgrade() else { return };
                    let mut st = m.lock();
                    st.gateway_tables = None;
                    let settling = st
                        .run
                        .as_ref()
                        .is_some_and(|r| r.id == id && r.phase == RunPhase::Settling);
                    if !settling {
                        return;
                    }
                    if st.members.tables.whs.clocktime.0 != id {
                        let full = st.run.as_ref().is_some_and(|r| r.full);
                        m.start_replace(&mut st, full);
                        return;
                    }
                    st.members.settle();
                    m.publish(&mut st, true);
                    let live: Vec<SocketAddr> = alive
                        .iter()
                        .copied()
                        .filter(|a| st.servers.contains_key(a))
                        .collect();
                    if let Some(run) = st.run.as_mut() {
                        run.phase = RunPhase::Delete;
                        run.pending = live.iter().copied().collect();
                    }
                    for a in live {
                        m.send_phase(&st, a, id, RunPhase::Delete);
                    }
                });
            }
            RunPhase::Settling => {}
            RunPhase::Delete => {
                log::info!("replace finished {id:#x}");
                st.run = None;
            }
        }
    }

    /// Finishes a replace that was started and not finished: its manager restarted
    /// or was lost, or the run was dropped. A replace is owed while reads and
    /// writes use different layouts and a replace was started since the last
    /// `-noreplace` change; the leading manager, with no run of its own, starts it
    /// again (to the current whs: a replace always moves to the newest tables). So
    /// a replace finishes without an operator while any manager lives. A manager
    /// restarted after a `-noreplace` change has forgotten it, and finishes the
    /// move at once. Called every REPLACE_RESEND.
    fn supervise(self: &Arc<Self>) {
        let mut st = self.lock();
        self.watch_tables(&mut st);
        let t = &st.members.tables;
        let owed = st.started > st.deferred && !t.whs.is_empty() && !t.whs.same_layout(&t.rhs);
        if !owed
            || st.run.is_some()
            || st.start_waiting
            || !self.leads()
            || self.learning().is_some()
        {
            return;
        }
        log::warn!(
            "a replace was started ({:#x}) and reads still use the old table; finishing it",
            st.started
        );
        self.start_replace(&mut st, false);
    }

    /// Asks every server for a backup; answers `[[addr, path or error]...]`.
    fn backup(&self, suffix: String, reply: Reply) {
        let st = self.lock();
        let servers: Vec<Arc<Peer>> = st.servers.values().cloned().collect();
        drop(st);
        if servers.is_empty() {
            return reply.ok(Value::Array(Vec::new()));
        }
        let results = Arc::new(Mutex::new((Vec::new(), servers.len(), Some(reply))));
        for p in servers {
            let results = results.clone();
            let addr = p.addr();
            p.call(
                msg::CREATE_BACKUP,
                &[Value::from(suffix.as_str())],
                BACKUP_TIMEOUT,
                Box::new(move |r| {
                    let mut g = results.lock().unwrap_or_else(|p| p.into_inner());
                    let outcome = match r {
                        Ok(v) => v,
                        Err(e) => {
                            Value::Map(vec![(Value::from("error"), Value::from(e.to_string()))])
                        }
                    };
                    g.0.push(Value::Array(vec![Value::from(addr.to_string()), outcome]));
                    g.1 -= 1;
                    if g.1 == 0 {
                        let list = std::mem::take(&mut g.0);
                        if let Some(reply) = g.2.take() {
                            reply.ok(Value::Array(list));
                        }
                    }
                }),
            );
        }
    }

    /// With auto replace on, attach and detach once changes settle for `-Rs`.
    fn schedule_auto_replace(self: &Arc<Self>, st: &mut State) {
        st.auto_token += 1;
        if !st.auto_replace {
            return;
        }
        let token = st.auto_token;
        let weak: Weak<Manager> = Arc::downgrade(self);
        self.net.timers().after(self.replace_delay, move || {
            let Some(m) = weak.upgrade() else { return };
            let mut st = m.lock();
            let settling = st
                .run
                .as_ref()
                .is_some_and(|r| r.phase == RunPhase::Settling);
            if m.learning().is_some() || settling {
                return m.schedule_auto_replace(&mut st);
            }
            if st.auto_token == token && st.auto_replace && m.leads() {
                log::info!("auto replace: attaching new servers, detaching lost ones");
                m.change(&mut st, true, true, true);
            }
        });
    }

    /// Attach and/or detach, publish, and with `replace` move the data. A replace
    /// also runs when nothing changed but reads and writes still use different
    /// tables, so the next attach finishes what an interrupted replace left.
    /// Returns whether the tables changed.
    fn change(self: &Arc<Self>, st: &mut State, attach: bool, detach: bool, replace: bool) -> bool {
        let mut changed = false;
        if attach {
            let now = self.started.elapsed().as_millis() as u64;
            for a in st.members.newcomers().to_vec() {
                st.broken.forget(a, now);
            }
            changed |= st.members.attach(self.stamp(st));
        }
        if detach {
            changed |= st.members.detach(self.stamp(st));
        }
        if changed {
            self.log_tables(st, "servers attached or detached");
            if !replace {
                st.deferred = st.members.tables.whs.clocktime.0;
            }
            self.publish(st, true);
        }
        let t = &st.members.tables;
        let stale_run = st.run.as_ref().is_some_and(|r| r.id != t.whs.clocktime.0);
        let unsettled = t.whs != t.rhs && (st.run.is_none() || stale_run);
        // A first attach leaves nothing to move: rhs became whs at once.
        if replace && unsettled {
            self.start_replace(st, false);
        }
        changed
    }

    fn watch(&self, params: &[Value], reply: Reply) {
        let known_w = params.first().and_then(Value::as_u64).unwrap_or(0);
        let known_r = params.get(1).and_then(Value::as_u64).unwrap_or(0);
        let wait = Duration::from_millis(params.get(2).and_then(Value::as_u64).unwrap_or(0))
            .min(WATCH_WAIT_MAX);
        let mut st = self.lock();
        let t = Self::gateway_tables(&st);
        // Answer at once only with news: tables this manager has that are newer
        // than the caller's. A caller ahead of us (we restarted) waits for a change.
        let news = t.whs.clocktime.0 > known_w || t.rhs.clocktime.0 > known_r;
        if wait.is_zero() || news || st.watchers.len() >= WATCHERS_MAX {
            let answer = msg::spaces_to_value(&t.whs, &t.rhs);
            return reply.ok(answer);
        }
        st.watchers.push(Watcher {
            reply,
            whs: known_w,
            rhs: known_r,
            until: Instant::now() + wait,
        });
    }

    /// Answers watchers whose wait is over, unchanged tables and all.
    fn expire_watchers(&self, now: Instant) {
        let mut st = self.lock();
        if st.watchers.iter().all(|w| w.until > now) {
            return;
        }
        let t = Self::gateway_tables(&st);
        let answer = msg::spaces_to_value(&t.whs, &t.rhs);
        let (due, keep): (Vec<Watcher>, Vec<Watcher>) = std::mem::take(&mut st.watchers)
            .into_iter()
            .partition(|w| w.until <= now);
        st.watchers = keep;
        for w in due {
            w.reply.ok(answer.clone());
        }
    }

    fn nodes_info(&self) -> Value {
        let st = self.lock();
        NodesInfo {
            whs: st.members.tables.whs.clone(),
            rhs: st.members.tables.rhs.clone(),
            newcomers: st.members.newcomers().to_vec(),
            auto_replace: st.auto_replace,
            store_full: st.full.iter().copied().collect(),
            replace: st.run.as_ref().map(|r| ReplaceProgress {
                phase: match r.phase {
                    RunPhase::Copy => "copying".into(),
                    RunPhase::Settling => "settling".into(),
                    RunPhase::Delete => "deleting".into(),
                },
                full: r.full,
                servers: r.targets.len() as u64,
                done: (r.targets.len() - r.pending.len()) as u64,
                records: r.records,
                bytes: r.bytes,
            }),
        }
        .to_value()
    }
}

pub struct ManagerService(Arc<Manager>);

impl Service for ManagerService {
    fn call(&self, method: &str, params: Vec<Value>, reply: Reply) {
        let m = &self.0;
        let flag = |i: usize| params.get(i).and_then(Value::as_bool);
        let changes_tables = matches!(
            method,
            msg::ATTACH | msg::DETACH | msg::START_REPLACE | msg::SET_AUTO_REPLACE
        );
        if changes_tables {
            let wait = m
                .learning()
                .map(|left| (left, "learns the cluster"))
                .or_else(|| {
                    (matches!(method, msg::ATTACH | msg::DETACH) && m.settling())
                        .then_some((SETTLE_POLL, "hands the settled table to the servers"))
                });
            if let Some((left, why)) = wait {
                log::info!("{method} waits {left:?} while this manager {why}");
                let (m, method) = (m.clone(), method.to_string());
                return self
                    .0
                    .net
                    .timers()
                    .after(left, move || ManagerService(m).call(&method, params, reply));
            }
        }
        match method {
            msg::KEEP_ALIVE => {
                if let Some(c) = msg::clk(&params) {
                    m.clock.merge(c);
                }
                if params.len() > 1 {
                    m.server_keepalive(&params, reply)
                } else {
                    reply.ok(Value::Nil)
                }
            }
            msg::HASH_SPACE_REQUEST => m.watch(&params, reply),
            msg::REPORT_UNREACHABLE => match m.unreachable_reported(&params) {
                Ok(()) => reply.ok(Value::Nil),
                Err(e) => reply.err(e),
            },
            msg::HASH_SPACE_SYNC => {
                if let Some(c) = msg::clk(&params) {
                    m.clock.merge(c);
                }
                match msg::spaces_from(params.get(1..).unwrap_or(&[])) {
                    Ok((w, r)) => {
                        m.learnt();
                        let mut st = m.lock();
                        let adopted = m.adopt(&mut st, w, r);
                        if adopted {
                            m.log_tables(&st, "tables learnt from the partner");
                            m.drop_superseded_run(&mut st);
                            m.publish(&mut st, false);
                        }
                        reply.ok(adopted)
                    }
                    Err(e) => reply.err(e),
                }
            }
            msg::GET_NODES_INFO => reply.ok(m.nodes_info()),
            msg::ATTACH | msg::DETACH => match flag(0) {
                Some(replace) => {
                    let mut st = m.lock();
                    let changed = m.change(
                        &mut st,
                        method == msg::ATTACH,
                        method == msg::DETACH,
                        replace,
                    );
                    reply.ok(changed)
                }
                None => reply.err("bad parameters: expected [replace: bool]"),
            },
            msg::START_REPLACE => {
                let full = flag(0).unwrap_or(false);
                let mut st = m.lock();
                m.start_replace(&mut st, full);
                reply.ok(st.run.is_some())
            }
            msg::REPLACE_COPY_END | msg::REPLACE_DELETE_END => {
                if let Some(c) = msg::clk(&params) {
                    m.clock.merge(c);
                }
                let id = params.get(1).and_then(Value::as_u64);
                let addr = msg::addr_from_value(params.get(2));
                let n = |i: usize| params.get(i).and_then(Value::as_u64).unwrap_or(0);
                match (id, addr) {
                    (Some(id), Ok(addr)) => {
                        // Acknowledged whatever it is, so the server stops repeating it.
                        reply.ok(true);
                        let (phase, failed) = if method == msg::REPLACE_COPY_END {
                            (
                                RunPhase::Copy,
                                params.get(5).and_then(Value::as_bool).unwrap_or(false),
                            )
                        } else {
                            (RunPhase::Delete, false)
                        };
                        m.phase_done(phase, id, addr, n(3), n(4), failed);
                    }
                    _ => reply.err("bad parameters: expected [clock, id, address, ...]"),
                }
            }
            msg::CREATE_BACKUP => match params.first().and_then(Value::as_str) {
                Some(s) if !s.is_empty() && !s.contains('/') => m.backup(s.to_string(), reply),
                _ => reply.err("empty suffix or a suffix with '/'"),
            },
            msg::SET_AUTO_REPLACE => match flag(0) {
                Some(on) => {
                    let mut st = m.lock();
                    let old = st.auto_replace;
                    st.auto_replace = on;
                    if on {
                        m.change(&mut st, true, true, true);
                    }
                    log::info!("auto replace {}", if on { "enabled" } else { "disabled" });
                    reply.ok(old)
                }
                None => reply.err("bad parameters: expected [enable: bool]"),
            },
            _ => reply.unknown_method(method),
        }
    }
}

pub fn main(args: Args) -> i32 {
    let program = args.role.program();
    daemon::block_signals();
    if let Err(e) = daemon::init_logging(&args) {
        return daemon::fatal(program, e);
    }
    let listen = args.addr("listen");
    let bind = |addr: SocketAddr| {
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let listener = match bind(listen) {
        Ok(l) => l,
        Err(e) => return daemon::fatal(program, e),
    };
    let control = match args.opt_addr("control").map(bind).transpose() {
        Ok(c) => c,
        Err(e) => return daemon::fatal(program, e),
    };
    let partner = args.opt_addr("partner");
    if partner == Some(listen) {
        return daemon::fatal(
            program,
            "-p names this manager itself; it must name the other one",
        );
    }
    if let Err(e) = daemon::daemonize_if_asked(&args) {
        return daemon::fatal(program, e);
    }
    let net = match net::Net::start(daemon::net_config(&args)) {
        Ok(n) => n,
        Err(e) => return daemon::fatal(program, format!("cannot start the network layer: {e}")),
    };
    let net_config = net.config();
    let learn = net_config.keepalive + LEARN_MARGIN;
    let manager = Arc::new(Manager {
        me: listen,
        started: Instant::now(),
        learn_until: Mutex::new(Some(Instant::now() + learn)),
        net: net.clone(),
        clock: Clock::default(),
        partner: Mutex::new(None),
        replace_delay: args.seconds("replace-delay"),
        state: Mutex::new(State {
            members: Membership::default(),
            servers: HashMap::new(),
            streams: HashMap::new(),
            incarnations: HashMap::new(),
            run: None,
            gateway_tables: None,
            start_token: 0,
            start_waiting: false,
            watchers: Vec::new(),
            auto_replace: args.switch("auto-replace"),
            auto_token: 0,
            started: 0,
            deferred: 0,
            full: BTreeSet::new(),
            broken: BrokenLinks::default(),
            decision_due: false,
        }),
    });
    if let Some(p) = partner {
        // The partner link's keepalive carries our tables, so the two managers
        // converge even when a push is lost.
        let weak = Arc::downgrade(&manager);
        let peer = Peer::with_keepalive(
            &net,
            p,
            Box::new(move || {
                let Some(m) = weak.upgrade() else {
                    return (msg::KEEP_ALIVE.to_string(), vec![Value::from(0)]);
                };
                let st = m.lock();
                let t = &st.members.tables;
                (
                    msg::HASH_SPACE_SYNC.to_string(),
                    vec![
                        Value::from(m.clock.tick()),
                        t.whs.to_value(),
                        t.rhs.to_value(),
                    ],
                )
            }),
            Box::new(|a| log::warn!("partner manager {a} lost")),
        );
        *manager.partner.lock().unwrap_or_else(|p| p.into_inner()) = Some(peer);
    }
    let service: Arc<dyn Service> = Arc::new(ManagerService(manager.clone()));
    for (l, what) in std::iter::once((listener, "cluster")).chain(control.map(|c| (c, "control"))) {
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        if let Err(e) = net.listen(l, RpcSession::factory(service.clone())) {
            return daemon::fatal(program, format!("cannot serve {addr}: {e}"));
        }
        log::info!("listening on {addr} ({what})");
    }
    let weak = Arc::downgrade(&manager);
    let _expiry = net.timers().add(Arc::new(move |now| {
        if let Some(m) = weak.upgrade() {
            m.expire_watchers(now);
        }
    }));
    let weak = Arc::downgrade(&manager);
    let _supervisor = net.timers().every(REPLACE_RESEND, move |_| {
        if let Some(m) = weak.upgrade() {
            m.supervise();
        }
    });
    log::info!("manager {} started", manager.me);
    let sig = daemon::wait_for_stop();
    log::info!("{sig} received; stopping");
    crate::cli::EXIT_OK
}
