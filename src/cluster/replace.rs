//! Replace planning: which server sends which record where when the write table
//! (whs) changes, and which records a server drops afterwards. Pure; the server's
//! copy and delete loops ask these two questions for every record they hold.
//!
//! Copy phase: for each key, the first old owner (in rhs) that is still active in the
//! new whs sends the record to every new owner that was not an active old owner. So
//! exactly one live server sends each key, a lost first owner is replaced by the next
//! one, and a server that returns after a failure (fault in rhs, active in whs) is
//! sent everything it should hold, including tombstones, which newer-wins applies.
//!
//! When no old owner active in rhs is active in whs (every one failed, and some came
//! back), the ones that came back are the only holders left: each of them sends to
//! every other new owner, and newer-wins at the targets keeps the newest copy. (A
//! key whose three owners had all been fault once reached no new owner at all, and
//! read as missing once rhs := whs.)
//!
//! A full replace sends every record to every active owner in whs.
//!
//! Delete phase: once every server has copied, rhs := whs and each server drops the
//! keys it does not own in whs.

use super::hash_space::HashSpace;
use std::net::SocketAddr;

/// Who holds a key's record while data moves from rhs to whs.
#[derive(Debug, PartialEq, Eq)]
pub enum Holders {
    /// The key's active owners in rhs, in ring order; at least one of them is
    /// active in whs too. The first such one holds the newest acknowledged copy.
    Active(Vec<SocketAddr>),
    /// No active owner in rhs is active in whs: these owners, fault in rhs and
    /// active again in whs, each hold what they stored before their fault. Which one
    /// is newest is not known; newer-wins across all of them finds it.
    Returned(Vec<SocketAddr>),
}

pub fn holders(hash: u64, rhs: &HashSpace, whs: &HashSpace) -> Holders {
    let active = rhs.active_owners(hash);
    if active.iter().any(|a| whs.is_active(a)) {
        return Holders::Active(active.to_vec());
    }
    Holders::Returned(
        rhs.owners(hash)
            .into_iter()
            .filter(|n| !n.active && whs.is_active(&n.addr))
            .map(|n| n.addr)
            .collect(),
    )
}

/// Where a coordinator new to a key takes the key's record from before it decides
/// a write (newer wins into its own store).
#[derive(Debug)]
pub struct Pull {
    /// Holders not asked yet, in the order to ask them.
    pub sources: Vec<SocketAddr>,
    /// Ask every holder (they came back from faults, and any may be newest), or
    /// stop at the first that answers.
    pub every: bool,
    /// Some holder answered, so the decision rests on what the cluster holds.
    pub heard: bool,
}

impl Pull {
    pub fn new(me: SocketAddr, holders: Holders) -> Pull {
        let (sources, every) = match holders {
            Holders::Active(s) => (s, false),
            Holders::Returned(s) => (s, true),
        };
        Pull {
            sources: sources.into_iter().filter(|a| *a != me).collect(),
            every,
            heard: false,
        }
    }
}

/// Where server `me` sends the record with `hash` in a replace from `rhs` to `whs`.
pub fn copy_targets(
    me: SocketAddr,
    hash: u64,
    rhs: &HashSpace,
    whs: &HashSpace,
    full: bool,
) -> Vec<SocketAddr> {
    let new_owners = whs.active_owners(hash);
    if full {
        return new_owners.into_iter().filter(|a| *a != me).collect();
    }
    match holders(hash, rhs, whs) {
        Holders::Active(old) if old.iter().find(|a| whs.is_active(a)) == Some(&me) => new_owners
            .into_iter()
            .filter(|a| !old.contains(a))
            .collect(),
        Holders::Returned(old) if old.contains(&me) => {
            new_owners.into_iter().filter(|a| *a != me).collect()
        }
        _ => Vec::new(),
    }
}

/// An answer about a hash that depends only on where the hash falls among some
/// ring points, worked out once per stretch between two points: a replace going
/// through a million records looks each one up with a binary search instead of
/// walking the rings.
pub struct Stretches<T> {
    /// The first hash of each stretch, sorted, from 0.
    starts: Vec<u64>,
    answers: Vec<T>,
}

impl<T> Stretches<T> {
    pub fn new(points: impl Iterator<Item = u64>, answer: impl Fn(u64) -> T) -> Stretches<T> {
        // A hash's owners start at the first point at or after it, so the hashes
        // from one point past a to b, the next point, share their owners: the
        // stretches start at 0 and one past each point, and each one's answer is
        // that of its last hash.
        let mut starts: Vec<u64> = points.filter_map(|p| p.checked_add(1)).collect();
        starts.push(0);
        starts.sort_unstable();
        starts.dedup();
        let answers = (0..starts.len())
            .map(|i| answer(starts.get(i + 1).map_or(u64::MAX, |next| next - 1)))
            .collect();
        Stretches { starts, answers }
    }

    pub fn get(&self, hash: u64) -> &T {
        let i = self.starts.partition_point(|&s| s <= hash) - 1;
        &self.answers[i]
    }
}

/// [`copy_targets`] for every hash at once.
pub struct CopyPlan(Stretches<Vec<SocketAddr>>);

impl CopyPlan {
    pub fn new(me: SocketAddr, rhs: &HashSpace, whs: &HashSpace, full: bool) -> CopyPlan {
        let points = rhs.points().chain(whs.points()).map(|(p, _)| p);
        CopyPlan(Stretches::new(points, |h| {
            copy_targets(me, h, rhs, whs, full)
        }))
    }

    /// Where `me` sends the record with `hash`.
    pub fn targets(&self, hash: u64) -> &[SocketAddr] {
        self.0.get(hash)
    }
}

/// [`keeps`] for every hash at once.
pub struct KeepPlan(Stretches<bool>);

impl KeepPlan {
    pub fn new(me: SocketAddr, whs: &HashSpace) -> KeepPlan {
        KeepPlan(Stretches::new(whs.points().map(|(p, _)| p), |h| {
            keeps(me, h, whs)
        }))
    }

    pub fn keeps(&self, hash: u64) -> bool {
        *self.0.get(hash)
    }
}

/// Whether server `me` keeps the record with `hash` once `whs` is the only table.
pub fn keeps(me: SocketAddr, hash: u64, whs: &HashSpace) -> bool {
    whs.owners(hash).iter().any(|n| n.addr == me)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::hash_space::key_hash;
    use std::collections::BTreeSet;

    use crate::cluster::hash_space::testing::{a, space};

    /// Simulates a replace: every live server holding a key sends it; afterwards
    /// every new owner holds it, and after the delete phase only they do.
    fn check(rhs: &HashSpace, whs: &HashSpace, live: &[u16]) {
        for k in 0..2000u32 {
            let h = key_hash(&k.to_le_bytes());
            // Every live old owner holds the key, fault in rhs or not: a server
            // that comes back keeps what it stored.
            let mut holders: BTreeSet<SocketAddr> = rhs
                .owners(h)
                .into_iter()
                .map(|n| n.addr)
                .filter(|x| live.contains(&x.port()))
                .collect();
            if holders.is_empty() {
                continue; // every copy was lost before the replace
            }
            let one_sender = rhs.active_owners(h).iter().any(|x| whs.is_active(x));
            let mut senders = 0;
            for me in holders.clone() {
                let t = copy_targets(me, h, rhs, whs, false);
                if !t.is_empty() {
                    senders += 1;
                }
                holders.extend(t);
            }
            assert!(
                senders <= 1 || !one_sender,
                "key {k} sent by {senders} servers"
            );
            for o in whs.active_owners(h) {
                assert!(holders.contains(&o), "key {k} missing on new owner {o}");
            }
            let kept: BTreeSet<_> = holders.iter().filter(|x| keeps(**x, h, whs)).collect();
            assert!(
                kept.len() <= 3
                    && kept
                        .iter()
                        .all(|x| whs.owners(h).iter().any(|n| n.addr == **x))
            );
        }
    }

    /// The plan answers as `copy_targets` does, on the points themselves, next to
    /// them, and between them.
    #[test]
    fn a_copy_plan_answers_as_copy_targets() {
        let cases = [
            (
                space(&[(1, true), (2, true), (3, true)], 1),
                space(&[(1, true), (2, true), (3, true), (4, true)], 2),
            ),
            (
                space(&[(1, false), (2, true), (3, false), (4, false)], 1),
                six_active(),
            ),
            (six_active(), six_active()),
        ];
        let mut x = 0x853c_49e6_748f_ea9bu64;
        for (rhs, whs) in &cases {
            let mut hashes: Vec<u64> = rhs
                .points()
                .chain(whs.points())
                .flat_map(|(p, _)| [p.wrapping_sub(1), p, p.wrapping_add(1)])
                .chain([0, 1, u64::MAX])
                .collect();
            for _ in 0..2000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                hashes.push(x);
            }
            for me in 1..=6 {
                for full in [false, true] {
                    let plan = CopyPlan::new(a(me), rhs, whs, full);
                    for &h in &hashes {
                        assert_eq!(
                            plan.targets(h),
                            &copy_targets(a(me), h, rhs, whs, full)[..],
                            "server {me} hash {h:#x} full {full}"
                        );
                    }
                }
                let plan = KeepPlan::new(a(me), whs);
                for &h in &hashes {
                    assert_eq!(
                        plan.keeps(h),
                        keeps(a(me), h, whs),
                        "server {me} hash {h:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn attaching_a_server_moves_only_to_it() {
        let old = space(&[(1, true), (2, true), (3, true)], 1);
        let new = space(&[(1, true), (2, true), (3, true), (4, true)], 2);
        check(&old, &new, &[1, 2, 3, 4]);
        // Nothing goes anywhere but the newcomer.
        for k in 0..500u32 {
            let h = key_hash(&k.to_le_bytes());
            for me in [a(1), a(2), a(3)] {
                assert!(copy_targets(me, h, &old, &new, false)
                    .iter()
                    .all(|t| *t == a(4)));
            }
        }
    }

    #[test]
    fn a_lost_first_owner_is_replaced_by_the_next() {
        let old = space(&[(1, false), (2, true), (3, true), (4, true)], 1);
        let new = space(&[(2, true), (3, true), (4, true)], 2);
        check(&old, &new, &[2, 3, 4]);
    }

    #[test]
    fn a_returning_server_gets_everything_it_owns() {
        let old = space(&[(1, true), (2, false), (3, true), (4, true)], 1);
        let new = space(&[(1, true), (2, true), (3, true), (4, true)], 2);
        check(&old, &new, &[1, 2, 3, 4]);
        let mut sent_to_2 = 0;
        for k in 0..500u32 {
            let h = key_hash(&k.to_le_bytes());
            if new.is_active_owner(h, &a(2)) {
                let all: Vec<_> = [1, 3, 4]
                    .iter()
                    .flat_map(|p| copy_targets(a(*p), h, &old, &new, false))
                    .collect();
                assert!(all.contains(&a(2)), "key {k}");
                sent_to_2 += 1;
            }
        }
        assert!(sent_to_2 > 0);
    }

    /// Servers 1 to 6, all active.
    fn six_active() -> HashSpace {
        space(&(1..=6).map(|p| (p, true)).collect::<Vec<_>>(), 2)
    }

    #[test]
    fn growing_by_two_and_full_replace() {
        let old = space(&[(1, true), (2, true), (3, true), (4, true)], 1);
        let new = six_active();
        check(&old, &new, &[1, 2, 3, 4, 5, 6]);
        let h = key_hash(b"k");
        let full = copy_targets(a(1), h, &new, &new, true);
        assert_eq!(
            full.len(),
            new.active_owners(h).iter().filter(|x| **x != a(1)).count()
        );
    }

    /// Three of four servers fault in rhs (one of them failed while the other two
    /// were still out), all back in whs, and two new servers: the keys whose three
    /// old owners were all fault still reach every new owner.
    #[test]
    fn keys_whose_old_owners_were_all_fault_reach_the_new_owners() {
        let old = space(&[(1, false), (2, true), (3, false), (4, false)], 1);
        let new = six_active();
        check(&old, &new, &[1, 2, 3, 4, 5, 6]);
        let orphaned = (0..2000u32)
            .map(|k| key_hash(&k.to_le_bytes()))
            .filter(|h| old.active_owners(*h).is_empty())
            .count();
        assert!(orphaned > 0, "the case under test never came up");
    }
}
