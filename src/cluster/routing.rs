//! Which owner a gateway asks next for a read. Pure: whether a server is suspect
//! (its link silent or failing) is passed in.
//!
//! A read may be answered by any active owner in rhs, since a write is acknowledged
//! only once all of them hold it. So a read never waits on one server while another
//! owner could answer: owners are asked in ring order, the primary first, passing
//! over suspect ones while an unsuspected one is left, and a read that has waited
//! its hedge time asks the next one too.

use super::hash_space::{Few, Tables};
use std::net::SocketAddr;

/// The owners a read of `hash` may ask, in ring order: the active owners in rhs
/// (whs when rhs routes nothing), less any server a newer whs calls fault. The
/// managers mark a lost server fault in both tables and stamp both at every change
/// (`cluster::membership`), so this only matters when a node holds tables from two
/// sources out of step, such as a settled rhs and a later whs: a fault server may
/// have come back empty, and it is not read before a table says it was copied to.
pub fn readers(t: &Tables, hash: u64) -> Few<SocketAddr> {
    let reads = if t.rhs.is_empty() { &t.whs } else { &t.rhs };
    let fault = |a: &SocketAddr| {
        t.whs.clocktime.0 > reads.clocktime.0
            && t.whs.nodes().iter().any(|n| n.addr == *a && !n.active)
    };
    reads.active_owners(hash).filter(|a| !fault(a))
}

/// The owner to ask next, given those asked already in this round: the first one in
/// ring order not asked and not suspect, else the first one not asked. None when
/// every owner has been asked.
pub fn next_reader(
    owners: &[SocketAddr],
    asked: &[SocketAddr],
    suspect: impl Fn(&SocketAddr) -> bool,
) -> Option<SocketAddr> {
    let fresh = || owners.iter().filter(|a| !asked.contains(a));
    fresh()
        .find(|a| !suspect(a))
        .or_else(|| fresh().next())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::hash_space::testing::space;

    /// A server fault in the newer whs is not read from, though the older rhs
    /// still lists it; a server active in whs only (data still coming) is not
    /// read from either; with rhs the newer, rhs alone decides.
    #[test]
    fn reads_avoid_what_newer_tables_call_fault() {
        let settled = space(&[(1, true), (2, true), (3, true)], 10);
        let t = Tables {
            whs: space(&[(1, true), (2, false), (3, true)], 20),
            rhs: settled.clone(),
        };
        for h in [1u64, 99, 12345, u64::MAX] {
            let r = readers(&t, h);
            assert!(!r.contains(&a(2)) && r.len() == 2, "{r:?}");
        }
        let growing = Tables {
            whs: space(&[(1, true), (2, true), (3, true), (4, true)], 30),
            rhs: settled.clone(),
        };
        assert!(!readers(&growing, 7).contains(&a(4)));
        let older_whs = Tables {
            whs: space(&[(1, true), (2, false), (3, true)], 5),
            rhs: settled,
        };
        assert_eq!(readers(&older_whs, 7).len(), 3);
    }

    fn a(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn the_primary_first_then_the_replicas_passing_over_suspects() {
        let owners = [a(1), a(2), a(3)];
        let none = |_: &SocketAddr| false;
        assert_eq!(next_reader(&owners, &[], none), Some(a(1)));
        assert_eq!(next_reader(&owners, &[a(1)], none), Some(a(2)));
        assert_eq!(next_reader(&owners, &[a(1), a(2)], none), Some(a(3)));
        assert_eq!(next_reader(&owners, &owners, none), None);
        let one_down = |x: &SocketAddr| *x == a(1);
        assert_eq!(next_reader(&owners, &[], one_down), Some(a(2)));
        assert_eq!(next_reader(&owners, &[a(2)], one_down), Some(a(3)));
        // A suspect owner is still asked when it is the last one left.
        assert_eq!(next_reader(&owners, &[a(2), a(3)], one_down), Some(a(1)));
        let all_down = |_: &SocketAddr| true;
        assert_eq!(next_reader(&owners, &[], all_down), Some(a(1)));
        assert_eq!(next_reader(&[], &[], none), None);
    }
}
