//! The manager's view of the cluster: which servers are attached (whs, rhs), which
//! keep in touch without being attached (newcomers), and how attach, detach and a
//! lost server change the tables. Pure: each change takes the ClockTime to stamp the
//! new table with, and says whether anything changed so the caller knows to publish.
//!
//! Every change stamps both tables, rhs with the change's stamp and whs one later,
//! even when rhs itself did not change. A gateway may read by a settled rhs (a
//! copy of whs that a replace's settle handed to gateways before servers): that
//! table is only right while its whs is current, and a settle can be abandoned or
//! overtaken by another manager's change. Stamped after it, the managers' own rhs
//! replaces it everywhere in the same message as the new whs. (A manager that
//! changed whs only, because rhs was unchanged, left gateways reading a wiped
//! server that came back, by a settle whose replace had been abandoned.)
//!
//! The invariant every change keeps: **rhs routes reads whenever whs routes writes.**
//! A write is acknowledged by the active owners in whs; a read asks the active owners
//! in rhs. If rhs had no active server while whs had one (a new cluster's first
//! attach, or every old reader lost), acknowledged writes would be unreadable until a
//! replace finished, and a replace plans its copies from rhs, so it would copy
//! nothing and then trim the only copies. An rhs with no active server holds no
//! readable data, so nothing needs to move from it: it becomes whs at once.

use super::clock::ClockTime;
use super::hash_space::{HashSpace, Tables};
use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub struct Membership {
    pub tables: Tables,
    /// Servers in touch with the manager and not active in whs, in arrival order.
    newcomers: Vec<SocketAddr>,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            tables: Tables::empty(),
            newcomers: Vec::new(),
        }
    }
}

impl Membership {
    pub fn newcomers(&self) -> &[SocketAddr] {
        &self.newcomers
    }

    /// A server keeps in touch. Returns true if it is new to the newcomer list.
    pub fn server_seen(&mut self, addr: SocketAddr) -> bool {
        let active = self
            .tables
            .whs
            .nodes()
            .iter()
            .any(|n| n.addr == addr && n.active);
        if active || self.newcomers.contains(&addr) {
            return false;
        }
        self.newcomers.push(addr);
        true
    }

    /// A server stopped answering: it becomes fault in both tables, and leaves the
    /// newcomer list. Returns whether the tables changed. whs is stamped after rhs
    /// (`stamp` and one more), so whs stays strictly newer than rhs whenever their
    /// layouts differ, and rhs := whs later is a change every node takes.
    pub fn server_lost(&mut self, addr: SocketAddr, stamp: ClockTime) -> bool {
        self.newcomers.retain(|a| *a != addr);
        let r = self.tables.rhs.mark_fault(&addr, stamp);
        let w = self.tables.whs.mark_fault(&addr, stamp);
        self.changed(r || w, stamp)
    }

    /// Finishes a change: both tables stamped (see the module documentation),
    /// reads kept routable. Returns `changed`.
    fn changed(&mut self, changed: bool, stamp: ClockTime) -> bool {
        if changed {
            self.tables.rhs.clocktime = stamp;
            self.tables.whs.clocktime = ClockTime(stamp.0 + 1);
        }
        self.keep_reads_routable();
        changed
    }

    /// Keeps the invariant of the module documentation: an rhs that routes nothing
    /// is replaced by a routing whs.
    fn keep_reads_routable(&mut self) {
        if self.tables.rhs.is_empty() && !self.tables.whs.is_empty() {
            self.tables.rhs = self.tables.whs.clone();
        }
    }

    /// The ClockTime a new table must be stamped after: newer than both tables.
    pub fn floor(&self) -> ClockTime {
        ClockTime(self.tables.whs.clocktime.0.max(self.tables.rhs.clocktime.0) + 1)
    }

    /// Attaches every newcomer to whs (a returning fault server becomes active).
    /// Returns whether whs changed.
    pub fn attach(&mut self, stamp: ClockTime) -> bool {
        self.attach_reachable(stamp, |_| true)
    }

    /// [`Membership::attach`] of the newcomers `reachable` accepts; the others stay
    /// newcomers. A server that kept in touch and then died is still a newcomer
    /// until the manager has spent its reconnects on it: attached, it would come
    /// into whs only to be marked fault, and leave its keys a copy short.
    pub fn attach_reachable(
        &mut self,
        stamp: ClockTime,
        reachable: impl Fn(&SocketAddr) -> bool,
    ) -> bool {
        let (add, wait): (Vec<SocketAddr>, Vec<SocketAddr>) = std::mem::take(&mut self.newcomers)
            .into_iter()
            .partition(|a| reachable(a));
        self.newcomers = wait;
        let changed = self.tables.whs.attach(&add, stamp);
        self.changed(changed, stamp)
    }

    /// Removes every fault server from whs. Returns whether whs changed.
    pub fn detach(&mut self, stamp: ClockTime) -> bool {
        let changed = self.tables.whs.detach_faults(stamp);
        self.changed(changed, stamp)
    }

    /// Reads follow writes: rhs := whs. Done when data movement has finished, or
    /// at once when there is no data to move.
    pub fn settle(&mut self) -> bool {
        if self.tables.rhs == self.tables.whs {
            return false;
        }
        self.tables.rhs = self.tables.whs.clone();
        true
    }

    /// Takes newer tables from a partner manager or a server (`now` is our unix
    /// time). Returns whether anything changed; newcomers that became active are
    /// dropped.
    pub fn adopt(&mut self, whs: HashSpace, rhs: HashSpace, now: u32) -> bool {
        if !self.tables.adopt(whs, rhs, now) {
            return false;
        }
        let whs = &self.tables.whs;
        self.newcomers
            .retain(|a| !whs.nodes().iter().any(|n| n.addr == *a && n.active));
        true
    }
}

/// Whether a server's store is too stale to join with: the cluster has tables
/// without this server in them (it was detached, or is new), the store holds
/// records, and it last belonged to a cluster longer ago than `horizon` seconds
/// (`-gN`, the youngest age at which tombstones may be collected). A server that
/// was detached stopped holding back tombstone collection, so deletes made since
/// may have been collected everywhere else, and its old values would come back.
/// A store that never belonged (None: new, or merged from backups for a restore)
/// is not stale.
pub fn store_too_stale(
    listed: bool,
    cluster_has_tables: bool,
    holds_records: bool,
    last_member: Option<u64>,
    now: u64,
    horizon: u64,
) -> bool {
    !listed
        && cluster_has_tables
        && holds_records
        && last_member.is_some_and(|t| now.saturating_sub(t) > horizon)
}

/// Whether a server just started with a new store (never a member, and empty when
/// it opened) has lost its data: the first tables it gets list it active, and they
/// are older than this start (`tables_secs` is the second whs was stamped, on the
/// manager's clock): it was attached before, with a disk it no longer has. A
/// server attached while it runs gets tables stamped after its start. A manager
/// that knew the server's previous incarnation tells the restart by itself; a
/// manager restarted meanwhile cannot, so the server tells it. Not caught: a table
/// change after the restart and before the server's first tables (the server then
/// serves misses for its keys until a replace), and clocks apart by more than the
/// time from a start to an attach (a new server is then marked fault once, and
/// attached again).
pub fn lost_its_data(listed_active: bool, tables_secs: u64, started_secs: u64) -> bool {
    listed_active && tables_secs < started_secs
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_new_store_lost_its_data_only_under_tables_older_than_its_start() {
        use super::lost_its_data as lost;
        assert!(lost(true, 100, 200), "wiped, restarted, listed");
        assert!(!lost(true, 200, 200), "attached while it runs");
        assert!(!lost(false, 100, 200), "a new server, attached later");
    }

    #[test]
    fn a_store_is_stale_only_when_detached_longer_than_the_horizon() {
        use super::store_too_stale as stale;
        assert!(stale(false, true, true, Some(100), 200, 60));
        assert!(
            !stale(false, true, true, Some(100), 150, 60),
            "away briefly"
        );
        assert!(
            !stale(true, true, true, Some(100), 200, 60),
            "still in the tables (fault)"
        );
        assert!(
            !stale(false, false, true, Some(100), 200, 60),
            "a cluster starting up"
        );
        assert!(
            !stale(false, true, false, Some(100), 200, 60),
            "nothing to resurrect"
        );
        assert!(
            !stale(false, true, true, None, 200, 60),
            "never a member (a restore)"
        );
    }

    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_tutorial_then_a_failure_then_recovery() {
        let mut m = Membership::default();
        for p in 1..=3 {
            assert!(m.server_seen(a(p)));
        }
        assert!(!m.server_seen(a(1)), "seen twice is one newcomer");
        assert_eq!(m.newcomers().len(), 3);
        assert!(m.attach(ClockTime(10)));
        assert!(m.newcomers().is_empty());
        assert_eq!(
            m.tables.rhs, m.tables.whs,
            "the first attach routes reads at once"
        );
        assert!(!m.settle(), "nothing to move on the first attach");
        assert_eq!(m.tables.whs.nodes().len(), 3);
        assert!(!m.server_seen(a(2)), "an attached server is not a newcomer");

        assert!(m.server_lost(a(2), ClockTime(20)));
        assert_eq!(m.tables.rhs.clocktime, ClockTime(20));
        assert_eq!(m.tables.whs.clocktime, ClockTime(21), "whs newer than rhs");
        assert!(!m.tables.whs.nodes()[1].active);
        assert!(
            !m.server_lost(a(2), ClockTime(21)),
            "lost twice changes nothing"
        );

        // It comes back: a newcomer until attached again, then active.
        assert!(m.server_seen(a(2)));
        assert!(m.attach(m.floor().max(ClockTime(30))));
        assert!(m.tables.whs.nodes().iter().all(|n| n.active));
        assert!(!m.detach(ClockTime(31)), "nothing to detach");
    }

    /// Whatever the order of attach, detach and losses, rhs routes reads whenever
    /// whs routes writes.
    #[test]
    fn reads_are_routable_whenever_writes_are() {
        let mut dice = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let mut m = Membership::default();
            let mut t = 1;
            for _ in 0..30 {
                dice ^= dice << 13;
                dice ^= dice >> 7;
                dice ^= dice << 17;
                let p = (dice % 6) as u16 + 1;
                t += 2;
                match (dice >> 8) % 5 {
                    0 | 1 => {
                        m.server_seen(a(p));
                    }
                    2 => {
                        m.attach(ClockTime(t));
                    }
                    3 => {
                        m.server_lost(a(p), ClockTime(t));
                    }
                    _ => {
                        m.detach(ClockTime(t));
                    }
                }
                assert!(
                    m.tables.whs.is_empty() || !m.tables.rhs.is_empty(),
                    "whs routes writes but rhs routes no reads: {:?}",
                    m.tables
                );
            }
        }
    }

    /// A loss while data moves: after the replace, rhs := whs must be a table
    /// every node takes, that is newer than the rhs they hold.
    #[test]
    fn settling_after_a_loss_gives_a_newer_rhs() {
        let mut m = Membership::default();
        for p in 1..=4 {
            m.server_seen(a(p));
        }
        m.attach(ClockTime(10));
        m.settle();
        m.server_seen(a(5));
        m.attach(ClockTime(20));
        m.server_lost(a(3), ClockTime(30));
        let old_rhs = m.tables.rhs.clone();
        assert!(!m.tables.whs.same_layout(&old_rhs));
        assert!(m.settle());
        assert!(
            old_rhs.should_adopt(&m.tables.rhs, 0),
            "servers take the settled rhs"
        );
    }

    /// A gateway reading by a settled rhs (whs as it was when a copy finished)
    /// drops it at the next change any manager makes, whichever table the change
    /// touched: a wiped server lost and attached again is never read by it.
    #[test]
    fn every_change_outdates_a_settled_read_table() {
        let mut m = Membership::default();
        for p in 1..=3 {
            m.server_seen(a(p));
        }
        m.attach(ClockTime(10));
        m.server_lost(a(2), ClockTime(20));
        m.server_seen(a(2));
        m.attach(ClockTime(30));
        // The copy to 2 finished and gateways took rhs := whs; the managers have
        // not settled yet when 2 is lost again (it is fault in rhs already) and
        // comes back wiped.
        let settled = m.tables.whs.clone();
        let mut gateway = Tables {
            whs: m.tables.whs.clone(),
            rhs: settled,
        };
        assert!(m.server_lost(a(2), ClockTime(40)));
        assert!(gateway.adopt(m.tables.whs.clone(), m.tables.rhs.clone(), 0));
        assert_eq!(gateway.rhs, m.tables.rhs, "the settled rhs is dropped");
        m.server_seen(a(2));
        assert!(m.attach(m.floor()));
        gateway.adopt(m.tables.whs.clone(), m.tables.rhs.clone(), 0);
        assert!(gateway.whs.is_active(&a(2)));
        assert!(
            !gateway.rhs.is_active(&a(2)),
            "2 is read only after its copy"
        );
        assert!(
            gateway.whs.clocktime > gateway.rhs.clocktime,
            "whs stays newer than rhs"
        );
    }

    #[test]
    fn an_unreachable_newcomer_waits_and_the_others_are_attached() {
        let mut m = Membership::default();
        for p in [1, 2, 3, 4] {
            m.server_seen(a(p));
        }
        assert!(m.attach_reachable(ClockTime(10), |x| *x != a(4)));
        assert_eq!(m.tables.whs.nodes().len(), 3);
        assert!(!m.tables.whs.contains(&a(4)));
        assert_eq!(m.newcomers(), &[a(4)]);
        // Reachable again: the next attach takes it.
        assert!(m.attach(m.floor()));
        assert!(m.tables.whs.is_active(&a(4)));
        assert!(m.newcomers().is_empty());
    }

    #[test]
    fn detach_drops_fault_servers_and_adopt_takes_newer() {
        let mut m = Membership::default();
        for p in 1..=4 {
            m.server_seen(a(p));
        }
        m.attach(ClockTime(10));
        m.settle();
        m.server_lost(a(4), ClockTime(11));
        assert!(m.detach(ClockTime(12)));
        assert_eq!(m.tables.whs.nodes().len(), 3);
        assert_ne!(
            m.tables.whs, m.tables.rhs,
            "reads follow once data has moved"
        );

        let mut fresh = Membership::default();
        fresh.server_seen(a(1));
        assert!(fresh.adopt(m.tables.whs.clone(), m.tables.rhs.clone(), 0));
        assert!(
            fresh.newcomers().is_empty(),
            "an active server is not a newcomer"
        );
        assert!(!fresh.adopt(HashSpace::empty(), HashSpace::empty(), 0));
    }
}
