//! Which owner a gateway asks next for a read. Pure: whether a server is suspect
//! (its link silent or failing) is passed in.
//!
//! A read may be answered by any active owner in rhs, since a write is acknowledged
//! only once all of them hold it. So a read never waits on one server while another
//! owner could answer: owners are asked in ring order, the primary first, passing
//! over suspect ones while an unsuspected one is left, and a read that has waited
//! its hedge time asks the next one too.

use std::net::SocketAddr;

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
