//! The replace machine driven by hand: events and times in, actions checked.

use super::*;
use crate::cluster::hash_space::testing::{a, space};

/// Three servers attached and a fourth added: whs has four, rhs three.
fn growing() -> Tables {
    Tables {
        whs: space(&[(1, true), (2, true), (3, true), (4, true)], 20),
        rhs: space(&[(1, true), (2, true), (3, true)], 10),
    }
}

fn everyone(_: &SocketAddr) -> bool {
    true
}

fn view<'a>(t: &'a Tables, in_touch: &'a dyn Fn(&SocketAddr) -> bool, now: u64) -> View<'a> {
    View {
        tables: t,
        in_touch,
        now,
    }
}

fn sends(actions: &[Action], phase: Phase) -> Vec<u16> {
    actions
        .iter()
        .filter_map(|x| match x {
            Action::Send { to, phase: p } if *p == phase => Some(to.port()),
            _ => None,
        })
        .collect()
}

fn end(id: u64, from: u16, phase: Phase) -> PhaseEnd {
    PhaseEnd {
        id,
        from: a(from),
        phase,
        records: 10,
        bytes: 100,
        failed: false,
    }
}

#[test]
fn a_replace_copies_settles_and_deletes() {
    let t = growing();
    let mut r = Replacer::default();
    let out = r.start(&view(&t, &everyone, 0), false);
    assert_eq!(sends(&out, Phase::Copy), vec![1, 2, 3, 4]);
    for p in [1, 2, 3] {
        assert!(r
            .phase_done(&view(&t, &everyone, 5), end(20, p, Phase::Copy))
            .is_empty());
    }
    // A repeated report and one of another replace change nothing.
    assert!(r
        .phase_done(&view(&t, &everyone, 6), end(20, 1, Phase::Copy))
        .is_empty());
    assert!(r
        .phase_done(&view(&t, &everyone, 6), end(19, 4, Phase::Copy))
        .is_empty());
    let out = r.phase_done(&view(&t, &everyone, 7), end(20, 4, Phase::Copy));
    assert_eq!(out, vec![Action::GatewaysRead]);
    assert!(r.is_settling());
    let g = r
        .gateway_tables()
        .expect("gateways read by the settled table");
    assert_eq!(g.rhs, t.whs);
    assert_eq!(r.run().map(|x| (x.records, x.bytes)), Some((40, 400)));
    // The servers follow only after the grace.
    assert!(r
        .tick(&view(&t, &everyone, 7 + SETTLE_GRACE_MS - 1))
        .is_empty());
    let out = r.tick(&view(&t, &everyone, 7 + SETTLE_GRACE_MS));
    assert_eq!(out[0], Action::Settle);
    assert_eq!(sends(&out, Phase::Delete), vec![1, 2, 3, 4]);
    assert!(r.gateway_tables().is_none());
    for p in [1, 2, 3, 4] {
        r.phase_done(&view(&t, &everyone, 2000), end(20, p, Phase::Delete));
    }
    assert!(r.run().is_none() && !r.is_waiting());
}

#[test]
fn a_start_waits_for_every_server_to_keep_in_touch() {
    let t = growing();
    let mut r = Replacer::default();
    let not_4 = |x: &SocketAddr| x.port() != 4;
    assert!(r.start(&view(&t, &not_4, 0), false).is_empty());
    assert!(r.is_waiting() && r.run().is_none());
    assert!(
        r.tick(&view(&t, &not_4, RESEND_MS)).is_empty(),
        "still missing"
    );
    assert!(
        r.tick(&view(&t, &everyone, RESEND_MS + 1)).is_empty(),
        "not due yet"
    );
    let out = r.tick(&view(&t, &everyone, 2 * RESEND_MS));
    assert_eq!(sends(&out, Phase::Copy), vec![1, 2, 3, 4]);
    assert!(!r.is_waiting());
}

#[test]
fn a_failed_copy_is_copied_again_not_trimmed() {
    let t = growing();
    let mut r = Replacer::default();
    r.start(&view(&t, &everyone, 0), true);
    let mut e = end(20, 2, Phase::Copy);
    e.failed = true;
    assert!(r.phase_done(&view(&t, &everyone, 10), e).is_empty());
    assert!(r.run().is_none() && r.is_waiting());
    assert!(r
        .tick(&view(&t, &everyone, 10 + COPY_AGAIN_MS - 1))
        .is_empty());
    let out = r.tick(&view(&t, &everyone, 10 + COPY_AGAIN_MS));
    assert_eq!(sends(&out, Phase::Copy).len(), 4);
    assert!(r.run().is_some_and(|x| x.full), "a full replace stays full");
}

/// A server that could not erase what it no longer owns (its disk was full) makes
/// the whole replace run again, so that the copies beyond three go in the end.
#[test]
fn a_failed_delete_runs_the_replace_again() {
    let t = growing();
    let mut r = Replacer::default();
    r.start(&view(&t, &everyone, 0), false);
    for p in [1, 2, 3, 4] {
        r.phase_done(&view(&t, &everyone, 5), end(20, p, Phase::Copy));
    }
    let out = r.tick(&view(&t, &everyone, 5 + SETTLE_GRACE_MS));
    assert_eq!(sends(&out, Phase::Delete), vec![1, 2, 3, 4]);
    for p in [1, 2, 3] {
        r.phase_done(&view(&t, &everyone, 2000), end(20, p, Phase::Delete));
    }
    let mut e = end(20, 4, Phase::Delete);
    e.failed = true;
    assert!(r.phase_done(&view(&t, &everyone, 2001), e).is_empty());
    assert!(r.run().is_none() && r.is_waiting());
    let out = r.tick(&view(&t, &everyone, 2001 + COPY_AGAIN_MS));
    assert_eq!(sends(&out, Phase::Copy), vec![1, 2, 3, 4]);
}

#[test]
fn tables_changed_during_the_copy_start_it_over() {
    let t = growing();
    let mut r = Replacer::default();
    r.start(&view(&t, &everyone, 0), false);
    let mut newer = t.clone();
    newer.whs = space(&[(1, true), (2, true), (3, true), (4, true), (5, true)], 30);
    for p in [1, 2, 3] {
        r.phase_done(&view(&newer, &everyone, 5), end(20, p, Phase::Copy));
    }
    let out = r.phase_done(&view(&newer, &everyone, 5), end(20, 4, Phase::Copy));
    assert_eq!(sends(&out, Phase::Copy), vec![1, 2, 3, 4, 5]);
    assert_eq!(r.run().map(|x| x.id), Some(30));
    // ...and so do tables that change while it settles.
    for p in [1, 2, 3, 4, 5] {
        r.phase_done(&view(&newer, &everyone, 6), end(30, p, Phase::Copy));
    }
    let mut newest = newer.clone();
    newest.whs = space(&[(1, true), (2, true), (3, true), (4, true)], 40);
    let out = r.tick(&view(&newest, &everyone, 6 + SETTLE_GRACE_MS));
    assert!(!out.contains(&Action::Settle));
    assert_eq!(r.run().map(|x| (x.id, x.phase)), Some((40, Phase::Copy)));
}

#[test]
fn losing_a_server_restarts_only_a_run_it_takes_part_in() {
    let t = growing();
    let mut r = Replacer::default();
    r.start(&view(&t, &everyone, 0), false);
    assert!(r
        .server_lost(&view(&t, &everyone, 1), a(9), false)
        .is_empty());
    assert_eq!(r.run().map(|x| x.pending.len()), Some(4));
    let mut after = t.clone();
    after
        .whs
        .mark_fault(&a(4), crate::cluster::clock::ClockTime(21));
    after
        .rhs
        .mark_fault(&a(4), crate::cluster::clock::ClockTime(21));
    let out = r.server_lost(&view(&after, &everyone, 2), a(4), true);
    assert_eq!(sends(&out, Phase::Copy), vec![1, 2, 3]);
    assert_eq!(r.run().map(|x| x.id), Some(21));
}

#[test]
fn a_failed_message_goes_again_while_its_end_is_awaited() {
    let t = growing();
    let mut r = Replacer::default();
    r.start(&view(&t, &everyone, 0), false);
    r.send_failed(a(2), 20, Phase::Copy, false, 100);
    r.send_failed(a(3), 20, Phase::Copy, false, 100);
    r.phase_done(&view(&t, &everyone, 150), end(20, 3, Phase::Copy));
    assert!(r.tick(&view(&t, &everyone, 100 + RESEND_MS - 1)).is_empty());
    let out = r.tick(&view(&t, &everyone, 100 + RESEND_MS));
    assert_eq!(sends(&out, Phase::Copy), vec![2], "3 answered meanwhile");
    // A server running a newer replace: another manager finishes the job.
    r.send_failed(a(1), 20, Phase::Copy, true, 200);
    assert!(r.run().is_none() && !r.is_waiting());
}

#[test]
fn newer_tables_from_elsewhere_drop_the_run() {
    let t = growing();
    let mut r = Replacer::default();
    r.start(&view(&t, &everyone, 0), false);
    assert!(!r.tables_adopted(&t));
    let mut finished = t.clone();
    finished.rhs = finished.whs.clone();
    assert!(r.tables_adopted(&finished));
    assert!(r.run().is_none());
}

#[test]
fn a_replace_is_owed_once_started_unless_deferred_after() {
    let t = growing();
    let mut r = Replacer::default();
    assert!(
        !r.owed(&t),
        "never started: an operator's -noreplace attach"
    );
    r.note_started(15);
    assert!(r.owed(&t));
    r.defer(20);
    assert!(!r.owed(&t), "the operator moves that data later");
    assert!(r.behind(&t));
    r.start(&view(&t, &everyone, 0), false);
    assert!(!r.behind(&t) && r.owed(&t));
    let settled = Tables {
        whs: t.whs.clone(),
        rhs: t.whs.clone(),
    };
    assert!(!r.owed(&settled));
}

#[test]
fn a_cluster_with_no_active_server_settles_at_once() {
    let t = Tables {
        whs: space(&[(1, false), (2, false)], 20),
        rhs: space(&[(1, false)], 10),
    };
    let mut r = Replacer::default();
    assert_eq!(
        r.start(&view(&t, &everyone, 0), false),
        vec![Action::Settle]
    );
    assert!(r.run().is_none());
}

/// A copy done, gateways reading by the settled table, and then server 2 lost:
/// the settle goes on to rhs := whs with 2 fault, which gateways take over the
/// settled table (it is stamped later). Starting over instead left the gateways
/// on the settled table, with 2 active in it, once 2 came back empty.
#[test]
fn a_server_lost_while_settling_does_not_abandon_the_settle() {
    use crate::cluster::clock::ClockTime;
    let t = growing();
    let mut r = Replacer::default();
    r.start(&view(&t, &everyone, 0), false);
    for p in [1, 2, 3, 4] {
        r.phase_done(&view(&t, &everyone, 5), end(20, p, Phase::Copy));
    }
    assert!(r.is_settling());
    let mut after = t.clone();
    after.rhs.mark_fault(&a(2), ClockTime(21));
    after.whs.mark_fault(&a(2), ClockTime(22));
    let not_2 = |x: &SocketAddr| *x != a(2);
    assert!(r
        .server_lost(&view(&after, &not_2, 6), a(2), true)
        .is_empty());
    assert!(r.is_settling(), "the settle goes on");
    let out = r.tick(&view(&after, &not_2, 5 + SETTLE_GRACE_MS));
    assert_eq!(out[0], Action::Settle);
    assert_eq!(sends(&out, Phase::Delete), vec![1, 3, 4]);
    for p in [1, 3] {
        assert!(r
            .phase_done(&view(&after, &not_2, 2000), end(20, p, Phase::Delete))
            .is_empty());
    }
    let out = r.phase_done(&view(&after, &not_2, 2000), end(20, 4, Phase::Delete));
    assert!(out.is_empty(), "no copy starts over: {out:?}");
    assert!(r.run().is_none(), "the replace is finished");
}

#[test]
fn only_servers_marked_fault_leave_a_settled_table_right() {
    use crate::cluster::clock::ClockTime;
    let t = growing();
    let mut lost = t.whs.clone();
    lost.mark_fault(&a(3), ClockTime(30));
    assert!(only_lost_since(&t.whs, &lost));
    assert!(only_lost_since(&t.whs, &t.whs));
    assert!(
        !only_lost_since(&lost, &t.whs),
        "a server back is not a loss"
    );
    assert!(!only_lost_since(&t.rhs, &t.whs), "a server added");
    assert!(!only_lost_since(&t.whs, &t.rhs), "a server removed");
}
