//! The manager's membership I/O: servers keeping in touch, being watched, lost,
//! reported cut off, attached and detached. The decisions are in
//! [`crate::cluster::membership`] and [`crate::cluster::partition`].

use super::{Manager, State, SERVERS_MAX};
use crate::cluster::hash_space::HashSpace;
use crate::cluster::partition::{Node, GATHER_MS};
use crate::daemon;
use crate::net::{Peer, Reply};
use crate::proto::cluster as msg;
use crate::time::unix_now;
use rmpv::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

impl Manager {
    /// A server's keepalive: watch it if new, take newer tables, answer ours.
    pub(super) fn server_keepalive(self: &Arc<Self>, params: &[Value], reply: Reply) {
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
            .and_then(HashSpace::from_value)
            .is_some_and(|w| w.nodes().is_empty());
        if let Some(inc) = params.get(5).and_then(Value::as_u64) {
            let previous = self.lock().incarnations.insert(addr, inc);
            if fresh && previous.is_some_and(|p| p != inc) {
                log::warn!("server {addr} restarted");
                self.server_lost(addr);
            }
        }
        // A server that lost its data says so (see `lost_its_data`): a manager
        // restarted meanwhile knows no previous incarnation to compare with.
        if params.get(8).and_then(Value::as_bool) == Some(true) {
            let listed = {
                let t = &self.lock().members.tables;
                t.whs.is_active(&addr) || t.rhs.is_active(&addr)
            };
            if listed {
                log::warn!("server {addr} lost its data (its store is new)");
                self.server_lost(addr);
            }
        }
        let mut st = self.lock();
        if let Ok((w, r)) = msg::spaces_from(params.get(2..).unwrap_or(&[])) {
            if self.adopt(&mut st, w, r) {
                self.log_tables(&st, &format!("tables learnt from server {addr}"));
                self.publish(&mut st, true);
            }
        }
        if let Some(id) = params.get(6).and_then(Value::as_u64) {
            st.replace.note_started(id);
        }
        // The newest flush_all point any server holds, for the servers that missed
        // it (see `cluster::flush`).
        if let Some(point) = params.get(9).and_then(Value::as_u64) {
            st.flush = st.flush.max(point);
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
        reply.ok(Value::Array(vec![
            t.whs.to_value(),
            t.rhs.to_value(),
            Value::from(st.flush),
        ]));
    }

    /// Watches `addr` with a keepalive link of our own, if not yet: when the link
    /// fails `-Yn` reconnects, the server is lost.
    fn watch_server(self: &Arc<Self>, st: &mut State, addr: SocketAddr) {
        st.servers.entry(addr).or_insert_with(|| {
            log::warn!("new node {addr}");
            daemon::event(
                log::Level::Warn,
                "server_joined",
                &[("server", Value::from(addr.to_string()))],
            );
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
    pub(super) fn watch_tables(self: &Arc<Self>, st: &mut State) {
        for a in st.members.tables.active_servers() {
            self.watch_server(st, a);
        }
    }

    /// Takes newer tables (from the partner or a server). Servers they attach
    /// again are as good as attached here: reports of them from before are
    /// forgotten.
    /// A replace running here that the new tables supersede is dropped.
    pub(super) fn adopt(&self, st: &mut State, whs: HashSpace, rhs: HashSpace) -> bool {
        let before = st.members.tables.whs.clone();
        if !st.members.adopt(whs, rhs, unix_now()) {
            return false;
        }
        st.replace.tables_adopted(&st.members.tables);
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
    pub(super) fn unreachable_reported(self: &Arc<Self>, params: &[Value]) -> Result<(), String> {
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
        if reported.is_empty() {
            log::info!("{from:?} reaches every server it reported again");
        } else {
            log::info!("{from:?} cannot reach {reported:?}");
        }
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
        daemon::event(
            log::Level::Warn,
            "server_lost",
            &[("server", Value::from(addr.to_string()))],
        );
        let stamp = self.stamp(&st);
        let changed = st.members.server_lost(addr, stamp);
        if changed {
            self.log_tables(&st, &format!("server {addr} marked fault"));
            self.publish(&mut st, true);
        }
        self.with_replacer(&mut st, |r, v| r.server_lost(v, addr, changed));
        self.schedule_auto_replace(&mut st);
    }

    /// Only one manager of a pair runs automatic replaces: the smaller address,
    /// or this one while the partner is unreachable.
    pub(super) fn leads(&self) -> bool {
        match &*self.partner.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(p) => self.me < p.addr() || !p.is_connected(),
            None => true,
        }
    }

    /// With auto replace on, attach and detach once changes settle for `-Rs`.
    pub(super) fn schedule_auto_replace(self: &Arc<Self>, st: &mut State) {
        st.auto_token += 1;
        if !st.auto_replace {
            return;
        }
        let token = st.auto_token;
        let weak: Weak<Manager> = Arc::downgrade(self);
        self.net.timers().after(self.replace_delay, move || {
            let Some(m) = weak.upgrade() else { return };
            let mut st = m.lock();
            if m.learning().is_some() || st.replace.is_settling() {
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
    pub(super) fn change(
        self: &Arc<Self>,
        st: &mut State,
        attach: bool,
        detach: bool,
        replace: bool,
    ) -> bool {
        let mut changed = false;
        let before: Vec<(SocketAddr, bool)> = {
            let nodes = st.members.tables.whs.nodes();
            nodes.iter().map(|n| (n.addr, n.active)).collect()
        };
        if attach {
            let now = self.started.elapsed().as_millis() as u64;
            for a in st.members.newcomers().to_vec() {
                st.broken.forget(a, now);
            }
            // A newcomer whose link is failing (it died after keeping in touch)
            // waits: it is attached once reachable, or forgotten once lost.
            let unreachable: Vec<SocketAddr> = st
                .members
                .newcomers()
                .iter()
                .filter(|a| st.servers.get(a).is_some_and(|p| p.is_suspect()))
                .copied()
                .collect();
            for a in &unreachable {
                log::warn!("attach: {a} cannot be reached now; it is not attached");
            }
            let stamp = self.stamp(st);
            changed |= st
                .members
                .attach_reachable(stamp, |a| !unreachable.contains(a));
        }
        if detach {
            changed |= st.members.detach(self.stamp(st));
        }
        if changed {
            self.log_tables(st, "servers attached or detached");
            let after = st.members.tables.whs.nodes();
            let text = |a: &SocketAddr| Value::from(a.to_string());
            let attached: Vec<Value> = after
                .iter()
                .filter(|n| n.active && !before.contains(&(n.addr, true)))
                .map(|n| text(&n.addr))
                .collect();
            let detached: Vec<Value> = before
                .iter()
                .filter(|(a, _)| !after.iter().any(|n| n.addr == *a))
                .map(|(a, _)| text(a))
                .collect();
            daemon::event(
                log::Level::Info,
                "attach_detach",
                &[
                    ("attached", Value::Array(attached)),
                    ("detached", Value::Array(detached)),
                    ("replace", Value::from(replace)),
                ],
            );
            if !replace {
                st.replace.defer(st.members.tables.whs.clocktime.0);
            }
            self.publish(st, true);
        }
        // A first attach leaves nothing to move: rhs became whs at once.
        if replace && st.replace.behind(&st.members.tables) {
            self.start_replace(st, false);
        }
        changed
    }
}
