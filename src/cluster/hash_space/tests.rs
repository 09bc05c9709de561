//! Hashes as kumofs computes them, owners against a brute-force search, the tables' adoption rules, and the wire form.

use super::*;
use proptest::prelude::*;

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 19800 + i))
}

fn space(n: u16) -> HashSpace {
    HashSpace::new(
        (0..n)
            .map(|i| Node {
                addr: addr(i),
                active: true,
            })
            .collect(),
        ClockTime(7),
    )
}

#[test]
fn tables_take_newer_non_empty_spaces_only() {
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let one = |c| {
        HashSpace::new(
            vec![Node {
                addr: a,
                active: true,
            }],
            ClockTime(c),
        )
    };
    let mut t = Tables::empty();
    assert!(!t.adopt(HashSpace::empty(), HashSpace::empty(), 0));
    assert!(t.adopt(one(5), one(5), 0));
    assert!(!t.adopt(one(4), one(5), 0), "older or equal is ignored");
    let mut fault = one(9);
    fault.mark_fault(&a, ClockTime(9));
    assert!(
        !t.adopt(fault.clone(), fault, 0),
        "an all-fault table routes nothing"
    );
    assert!(t.adopt(one(6), one(5), 0));
    let ahead = ClockTime::new(1000 + crate::cluster::clock::AHEAD_MAX_SECS + 1, 0).0;
    assert!(
        !t.adopt(one(ahead), one(ahead), 1000),
        "a table from the far future is refused"
    );
    assert_eq!(
        (t.whs.clocktime, t.rhs.clocktime),
        (ClockTime(6), ClockTime(5))
    );
    assert!(
        t.adopt(one(ahead), one(5), 1000 + 2),
        "taken once our clock is near"
    );
}

#[test]
fn active_servers_of_both_tables_once_each() {
    let mut whs = space(3);
    whs.mark_fault(&addr(0), ClockTime(8));
    let mut rhs = space(4);
    rhs.mark_fault(&addr(1), ClockTime(8));
    let t = Tables { whs, rhs };
    assert_eq!(t.active_servers(), vec![addr(0), addr(1), addr(2), addr(3)]);
    assert!(Tables::empty().active_servers().is_empty());
}

#[test]
fn hashes_follow_kumofs() {
    // SHA-1("") = da39a3ee5e6b4b0d...; the first 8 bytes little-endian.
    assert_eq!(key_hash(b""), 0x0d4b6b5eeea339da);
    assert_eq!(
        encode_addr(&"192.168.0.101:19800".parse().unwrap()),
        vec![0x4d, 0x58, 192, 168, 0, 101]
    );
    let v6: SocketAddr = "[::1]:19800".parse().unwrap();
    assert_eq!(decode_addr(&encode_addr(&v6)), Some(v6));
    assert_eq!(decode_addr(&[1, 2, 3]), None);
}

#[test]
fn every_key_has_three_distinct_owners_with_three_or_more_servers() {
    let s = space(5);
    assert_eq!(s.points().count(), 5 * VIRTUAL_NODES);
    for k in 0..1000u32 {
        let o = s.owners(key_hash(&k.to_le_bytes()));
        assert_eq!(o.len(), 3);
        assert!(o[0].addr != o[1].addr && o[1].addr != o[2].addr && o[0].addr != o[2].addr);
    }
    assert_eq!(space(2).owners(42).len(), 2);
    assert!(HashSpace::empty().owners(42).is_empty());
}

#[test]
fn a_fault_keeps_its_slot_and_attach_restores_it() {
    let mut s = space(4);
    let h = key_hash(b"the-key");
    let before = s.owners(h);
    assert!(s.mark_fault(&before[0].addr, ClockTime(8)));
    let after = s.owners(h);
    assert_eq!(
        after.iter().map(|n| n.addr).collect::<Vec<_>>(),
        before.iter().map(|n| n.addr).collect::<Vec<_>>()
    );
    assert!(!after[0].active);
    assert_eq!(s.active_owners(h)[..], [before[1].addr, before[2].addr]);
    assert!(s.attach(&[before[0].addr], ClockTime(9)));
    assert_eq!(s.owners(h), before);
    assert!(s.mark_fault(&before[0].addr, ClockTime(10)));
    assert!(s.detach_faults(ClockTime(11)));
    assert!(!s.contains(&before[0].addr));
    assert_eq!(s.owners(h).len(), 3);
}

#[test]
fn wire_form_round_trips_and_rejects_garbage() {
    let mut s = space(3);
    s.mark_fault(&addr(1), ClockTime(99));
    assert_eq!(HashSpace::from_value(&s.to_value()), Some(s));
    assert_eq!(HashSpace::from_value(&rmpv::Value::from(3)), None);
    let bad = rmpv::Value::Array(vec![
        rmpv::Value::Array(vec![rmpv::Value::Binary(vec![7; 7])]),
        1.into(),
    ]);
    assert_eq!(HashSpace::from_value(&bad), None);
}

/// The brute-force definition: sort all points, scan from the first ≥ hash.
fn brute_owners(s: &HashSpace, hash: u64) -> Vec<SocketAddr> {
    let pts: Vec<(u64, SocketAddr)> = s.points().collect();
    let mut out = Vec::new();
    let first = pts.iter().position(|(p, _)| *p >= hash).unwrap_or(0);
    for k in 0..pts.len() {
        let a = pts[(first + k) % pts.len()].1;
        if !out.contains(&a) && out.len() < REPLICAS {
            out.push(a);
        }
    }
    out
}

proptest! {
    #[test]
    fn owners_match_a_brute_force_search(n in 1u16..8, hashes in proptest::collection::vec(any::<u64>(), 1..50)) {
        let s = space(n);
        for h in hashes {
            let got: Vec<SocketAddr> = s.owners(h).into_iter().map(|n| n.addr).collect();
            prop_assert_eq!(got, brute_owners(&s, h));
        }
    }

    #[test]
    fn adding_a_server_moves_only_keys_it_now_owns(keys in proptest::collection::vec(any::<u64>(), 1..200)) {
        let a = space(4);
        let b = space(5);
        for h in keys {
            let (oa, ob) = (a.owners(h), b.owners(h));
            // Owners that remain keep their relative order; the newcomer is the only addition.
            let kept: Vec<_> = ob.iter().filter(|n| n.addr != addr(4)).map(|n| n.addr).collect();
            let prefix: Vec<_> = oa.iter().map(|n| n.addr).take(kept.len()).collect();
            prop_assert_eq!(kept, prefix);
        }
    }
}

#[test]
fn few_holds_up_to_three_in_order_and_filters_in_place() {
    let mut f = Few::new(0u16);
    assert!(f.is_empty());
    for x in [5, 6, 7] {
        f.push(x);
    }
    assert_eq!(f[..], [5, 6, 7]);
    assert_eq!(f.filter(|x| *x != 6)[..], [5, 7]);
    assert_eq!(f.filter(|_| false).len(), 0);
    assert_eq!(f.into_iter().collect::<Vec<_>>(), vec![5, 6, 7]);
    assert!(std::panic::catch_unwind(move || f.push(8)).is_err());
}
