//! Routing around a partition the manager cannot see. Gateways and servers report
//! the servers they cannot reach (a link found dead, a connect that failed); the
//! manager keeps the reports as a graph of broken links and decides from it which
//! servers to mark fault. Pure: time is passed in, as milliseconds.
//!
//! Every report is one broken link between the reporter and a server. A cut shows
//! as a node at the centre of several broken links, so the manager blames nodes in
//! order of how many broken links they have, and marks a blamed server fault:
//!
//! - a server cut from everyone, or from its peers, has a broken link to each of
//!   them, and is marked fault, whichever side reports first;
//! - a gateway cut from one server: one link, and the server is blamed; its keys
//!   are served by their other owners until it is attached again;
//! - a gateway cut from several servers is blamed itself: it cannot be marked
//!   fault, so nothing changes, and its clients get errors within its deadline;
//! - a link between two servers only: one of the two is marked fault, so the
//!   writes of their keys can go on;
//! - the last active server is never marked fault.
//!
//! On a tie the manager blames, in order: a server (only a server can be routed
//! around), a server the manager cannot reach itself either, a node that did not
//! report (a reporter is alive: it reached the manager), and then the larger
//! address, so the choice is the same on any manager.
//!
//! Reports come as links die, one or a few at a time, so the manager gathers them
//! for [`GATHER_MS`] before it decides: a cut server's own report of its first
//! dead link must not get its peer marked fault before the peers' reports of it
//! arrive. A report names every server its reporter cannot reach now, so it
//! replaces that reporter's earlier one: a link found dead just after a short cut
//! had healed is reported, and then, at its first answer, reported reachable
//! again, and blames no one. (Blamed, one server of a healed link would be marked
//! fault beside the servers really down, and a key whose other owners are among
//! them would have no reader left.) A decision consumes the reports it was made on: a link reported before
//! the tables changed (the server marked fault and attached again since) must not
//! blame anyone later, and a cut that lasts is reported again, as its links keep
//! failing. A report delayed by the cut itself (sent before, delivered after the
//! heal) still names the cut node's links, so it blames the right node. A server
//! that was lost, restarted or attached is not blamed for [`QUIET_MS`] after: the
//! reports in flight then are of the server as it was (down, say), not as it is.

use super::hash_space::HashSpace;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// How long reports are gathered before the manager decides on them.
pub const GATHER_MS: u64 = 400;
/// How long reports of a server are ignored after it was lost, restarted or
/// attached. It covers a report's freshness at the reporter (1.5 s) and its
/// delivery.
pub const QUIET_MS: u64 = 2000;

/// A node that reports, or is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    /// A gateway, by the id it chose at start (gateways are not in the tables).
    Gateway(u64),
    Server(SocketAddr),
}

/// The broken links reported since the last decision.
#[derive(Debug, Default)]
pub struct BrokenLinks {
    /// Each link as (reporter, server it cannot reach).
    links: BTreeSet<(Node, Node)>,
    /// The nodes that reported.
    reporters: BTreeSet<Node>,
    /// Servers whose reports are ignored until then (ms).
    quiet: BTreeMap<SocketAddr, u64>,
}

impl BrokenLinks {
    /// `from` cannot reach `unreachable` now (`now_ms`), and can reach every other
    /// server it reported before.
    pub fn report(&mut self, from: Node, unreachable: &[SocketAddr], now_ms: u64) {
        self.quiet.retain(|_, until| *until > now_ms);
        if matches!(from, Node::Server(a) if self.quiet.contains_key(&a)) {
            return;
        }
        self.reporters.insert(from);
        self.links.retain(|(reporter, _)| *reporter != from);
        for a in unreachable {
            let to = Node::Server(*a);
            if to != from && !self.quiet.contains_key(a) {
                self.links.insert((from, to));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Forgets the links of `server`, and ignores its reports for QUIET_MS: it was
    /// lost, restarted or attached at `now_ms`, so they say nothing about it now (a
    /// report of a server that was down must not fault it once it is back).
    pub fn forget(&mut self, server: SocketAddr, now_ms: u64) {
        let n = Node::Server(server);
        self.links.retain(|(a, b)| *a != n && *b != n);
        self.reporters.remove(&n);
        self.quiet.insert(server, now_ms + QUIET_MS);
    }

    /// The servers to mark fault, as the module documentation says; `silent` are
    /// the servers the manager itself does not hear from now. The reports are
    /// consumed.
    pub fn decide(&mut self, whs: &HashSpace, silent: &[SocketAddr]) -> Vec<SocketAddr> {
        // A link reported from both of its ends is one link.
        let mut links: Vec<(Node, Node)> = std::mem::take(&mut self.links)
            .into_iter()
            .map(|(a, b)| (a.min(b), a.max(b)))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let reporters = std::mem::take(&mut self.reporters);
        let mut active = whs.nodes().iter().filter(|n| n.active).count();
        let mut faults = Vec::new();
        while !links.is_empty() {
            let mut degree: BTreeMap<Node, usize> = BTreeMap::new();
            for (a, b) in &links {
                *degree.entry(*a).or_default() += 1;
                *degree.entry(*b).or_default() += 1;
            }
            let faultable =
                |n: &Node| matches!(n, Node::Server(a) if whs.is_active(a)) && active > 1;
            let silent_here = |n: &Node| matches!(n, Node::Server(a) if silent.contains(a));
            // Most broken links first, then the tie-breaks of the module
            // documentation.
            let Some((&blamed, _)) = degree.iter().max_by_key(|(n, d)| {
                (
                    **d,
                    faultable(n),
                    silent_here(n),
                    !reporters.contains(n),
                    **n,
                )
            }) else {
                break;
            };
            if let (Node::Server(a), true) = (blamed, faultable(&blamed)) {
                faults.push(a);
                active -= 1;
            }
            links.retain(|(a, b)| *a != blamed && *b != blamed);
        }
        faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cluster::hash_space::testing::a;

    fn space(nodes: &[(u16, bool)]) -> HashSpace {
        crate::cluster::hash_space::testing::space(nodes, 1)
    }

    /// Servers 1 to `n`, all active.
    fn all_active(n: u16) -> HashSpace {
        space(&(1..=n).map(|p| (p, true)).collect::<Vec<_>>())
    }

    fn s(p: u16) -> Node {
        Node::Server(a(p))
    }

    const GW: Node = Node::Gateway(7);

    #[test]
    fn a_server_cut_from_everyone_is_blamed_whoever_reports_first() {
        let three = all_active(3);
        // Its own report of its first dead link comes first.
        let mut b = BrokenLinks::default();
        b.report(s(3), &[a(1)], 0);
        b.report(s(1), &[a(3)], 0);
        b.report(s(2), &[a(3)], 0);
        b.report(GW, &[a(3)], 0);
        assert_eq!(b.decide(&three, &[]), vec![a(3)]);
        assert!(b.is_empty(), "a decision consumes its reports");
        // Only the cut server reports (the others have no traffic to it).
        let mut b = BrokenLinks::default();
        b.report(s(3), &[a(1), a(2)], 0);
        assert_eq!(b.decide(&three, &[]), vec![a(3)]);
    }

    #[test]
    fn a_server_cut_from_its_peers_is_blamed() {
        let six = all_active(6);
        let mut b = BrokenLinks::default();
        b.report(s(6), &[a(1)], 0);
        b.report(s(6), &[a(1), a(3)], 0);
        b.report(s(2), &[a(6)], 0);
        assert_eq!(b.decide(&six, &[]), vec![a(6)]);
    }

    #[test]
    fn gateways_blame_one_server_or_themselves() {
        let three = all_active(3);
        let mut b = BrokenLinks::default();
        b.report(GW, &[a(2)], 0);
        assert_eq!(b.decide(&three, &[]), vec![a(2)], "cut from one server");
        let mut b = BrokenLinks::default();
        b.report(GW, &[a(1), a(2)], 0);
        assert!(b.decide(&three, &[]).is_empty(), "cut from most servers");
        // Two gateways, each cut from a different server.
        let mut b = BrokenLinks::default();
        b.report(Node::Gateway(1), &[a(1)], 0);
        b.report(Node::Gateway(2), &[a(2)], 0);
        let mut f = b.decide(&three, &[]);
        f.sort();
        assert_eq!(f, vec![a(1), a(2)]);
    }

    #[test]
    fn fault_servers_are_not_blamed_again_and_one_server_stays() {
        let one_down = space(&[(1, true), (2, true), (3, false)]);
        let mut b = BrokenLinks::default();
        // A late report from the fault server still points at itself.
        b.report(s(3), &[a(1), a(2)], 0);
        assert!(b.decide(&one_down, &[]).is_empty());
        // Two servers with a cut between them: one goes, the other stays.
        let two = space(&[(1, true), (2, true)]);
        let mut b = BrokenLinks::default();
        b.report(s(1), &[a(2)], 0);
        b.report(s(2), &[a(1)], 0);
        assert_eq!(b.decide(&two, &[]).len(), 1);
        let last = space(&[(1, true), (2, false)]);
        let mut b = BrokenLinks::default();
        b.report(GW, &[a(1)], 0);
        assert!(b.decide(&last, &[]).is_empty(), "the last active server");
    }

    #[test]
    fn on_a_tie_the_dead_end_of_a_link_is_blamed_not_the_reporter() {
        let three = all_active(3);
        // Server 1 reports server 3, which is dead; the manager does not hear 3.
        for silent in [&[a(3)][..], &[]] {
            let mut b = BrokenLinks::default();
            b.report(s(1), &[a(3)], 0);
            assert_eq!(b.decide(&three, silent), vec![a(3)], "{silent:?}");
        }
        // Two servers down, each reported by someone else.
        let mut b = BrokenLinks::default();
        b.report(s(3), &[a(1)], 0);
        b.report(GW, &[a(2)], 0);
        let mut f = b.decide(&three, &[a(1)]);
        f.sort();
        assert_eq!(f, vec![a(1), a(2)]);
    }

    #[test]
    fn a_server_back_since_its_report_is_not_blamed() {
        let three = all_active(3);
        let mut b = BrokenLinks::default();
        b.report(GW, &[a(3)], 0);
        b.report(s(1), &[a(3)], 0);
        b.forget(a(3), 0);
        assert!(b.decide(&three, &[]).is_empty());
        // Reports in flight are ignored for a while, then count again.
        b.report(GW, &[a(3)], QUIET_MS - 1);
        assert!(b.decide(&three, &[]).is_empty());
        b.report(GW, &[a(3)], QUIET_MS);
        assert_eq!(b.decide(&three, &[]), vec![a(3)]);
    }

    #[test]
    fn reports_from_before_a_decision_blame_no_one_later() {
        // A server blamed while fault (a late report) is not faulted; once it is
        // attached again, those old links must not blame it.
        let mut b = BrokenLinks::default();
        b.report(s(3), &[a(1), a(2)], 0);
        assert!(b
            .decide(&space(&[(1, true), (2, true), (3, false)]), &[])
            .is_empty());
        b.report(GW, &[a(1)], 0);
        assert_eq!(b.decide(&all_active(3), &[]), vec![a(1)]);
    }

    /// Chaos seed 612301: a short cut of server 4 healed just before server 1 found
    /// its link to 4 dead, and server 6 was killed meanwhile. Server 1 reconnected
    /// at once and said so; only the dead server is blamed. Without the second
    /// report, the tie between 1 and 4 blamed server 1, a live server, beside the
    /// dead one, and keys owned by those two and one more killed next had no
    /// reader left.
    #[test]
    fn a_link_reported_healed_blames_no_one() {
        let six = all_active(6);
        let mut b = BrokenLinks::default();
        b.report(s(1), &[a(4)], 0);
        b.report(GW, &[a(6)], 0);
        b.report(s(4), &[a(6)], 0);
        b.report(s(1), &[], 0);
        assert_eq!(b.decide(&six, &[a(6)]), vec![a(6)]);
        // Not healed: the link counts, as before.
        let mut b = BrokenLinks::default();
        b.report(s(1), &[a(4)], 0);
        b.report(GW, &[a(6)], 0);
        b.report(s(4), &[a(6)], 0);
        let mut f = b.decide(&six, &[a(6)]);
        f.sort();
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.contains(&a(6)));
        // A later report names what its reporter cannot reach now: one link of
        // two healed.
        let mut b = BrokenLinks::default();
        b.report(s(1), &[a(4), a(5)], 0);
        b.report(s(1), &[a(5)], 0);
        assert_eq!(b.decide(&six, &[]), vec![a(5)]);
        // A link reported from both ends is one link, and one end healing its
        // report leaves the other end's.
        let mut b = BrokenLinks::default();
        b.report(s(2), &[a(3)], 0);
        b.report(s(3), &[a(2)], 0);
        b.report(s(2), &[], 0);
        assert_eq!(b.decide(&six, &[a(2)]), vec![a(2)]);
    }
}
