//! The write path of a server: coordinating a write and replicating it, and the
//! replica's side.
//!
//! A write arrives at its coordinator, the first active owner of the key in whs. The
//! coordinator applies it inside the store's per-key read-modify-write, so add, cas,
//! incr and the rest are atomic, stamps it with a fresh ClockTime, and sends the
//! resulting record to the other active owners. It answers once every one of them has
//! stored it. A replica that cannot be reached is retried until it answers or the
//! manager marks it fault (the coordinator then stops waiting for it, as a fault
//! server is no longer an owner), within the time the gateway gave the write (its
//! deadline, less [`REPLY_MARGIN`] for the answer to travel back) or
//! [`REPLICATION_DEADLINE`] for a caller that gave none. Past it the write fails
//! with [`msg::DEADLINE`]: the key is undefined, as after any failed write.
//!
//! A replica that has heard that the coordinator is fault refuses its writes
//! without applying them, and the coordinator, learning so, drops its own copy of
//! the key: a server cut off from the cluster (which may not know it yet) never
//! lands a write, and returns without one that could outlive the writes made
//! while it was away. A server that cannot reach a peer reports it to the managers
//! ([`crate::net::report`]).

use super::node::{plausible, store_error, Node};
use crate::cluster::hash_space::key_hash;
use crate::cluster::replace::{self, Pull};
use crate::cluster::write::{self, Outcome};
use crate::net::{Reply, RpcError};
use crate::proto::cluster::{self as msg, WriteRequest};
use crate::store::Modified;
use crate::time::unix_now;
use rmpv::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one replicate call may take before it is retried.
pub const REPLICATE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts to reach a replica.
pub const REPLICATE_RETRY_DELAY: Duration = Duration::from_millis(50);
/// How long a coordinator keeps trying a replica before it fails a write whose
/// caller gave no deadline. It covers the manager noticing a dead server (a few
/// reconnects) and telling us.
pub const REPLICATION_DEADLINE: Duration = Duration::from_secs(20);
/// Time kept back from a caller's deadline for the answer to reach it, a few
/// timer ticks: the caller should hear why the write failed rather than time out.
pub const REPLY_MARGIN: Duration = Duration::from_millis(100);

impl Node {
    /// Coordinates one write: decide, store, replicate, answer.
    ///
    /// While data moves, a server may coordinate a key it has not been sent yet.
    /// It first takes the key's record from an old owner (newer wins), so that add,
    /// cas, incr, delete and the rest decide on what the cluster holds, not on an
    /// empty or stale local copy.
    pub(super) fn write(self: &Arc<Self>, mut params: Vec<Value>, reply: Reply) {
        match WriteRequest::from_params(&mut params) {
            Ok(req) => self.coordinate(req, reply),
            Err(e) => reply.err(e),
        }
    }

    /// [`Node::write`] once its params are read, as Values or in place
    /// (`WriteRequest::read_params`).
    pub(super) fn coordinate(self: &Arc<Self>, req: WriteRequest, reply: Reply) {
        // The budget counts from the request's arrival (the event that read it),
        // not from its turn in a pipelined batch.
        let deadline = crate::net::now()
            + req.budget_ms.map_or(REPLICATION_DEADLINE, |ms| {
                Duration::from_millis(ms)
                    .saturating_sub(REPLY_MARGIN)
                    .min(REPLICATION_DEADLINE)
            });
        let t = self.tables();
        let hash = key_hash(&req.key);
        let moving = !t.rhs.is_empty() && !t.rhs.same_layout(&t.whs);
        if moving
            && !t.rhs.is_active_owner(hash, &self.me)
            && t.whs.active_owners(hash).first() == Some(&self.me)
        {
            let pull = Pull::new(self.me, replace::holders(hash, &t.rhs, &t.whs));
            if !pull.sources.is_empty() {
                return self.pull_then_decide(req, hash, pull, deadline, reply);
            }
        }
        self.decide(req, hash, deadline, reply)
    }

    /// Takes the key's record from the first old owner that answers, then decides.
    fn pull_then_decide(
        self: &Arc<Self>,
        req: WriteRequest,
        hash: u64,
        mut pull: Pull,
        deadline: Instant,
        reply: Reply,
    ) {
        if pull.sources.is_empty() {
            // Deciding on a copy that may be missing the newest record would let
            // add, cas or incr answer wrongly: only once some holder gave its copy.
            return if pull.heard {
                self.decide(req, hash, deadline, reply)
            } else {
                reply.err(msg::NOT_READY)
            };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return reply.err(msg::DEADLINE);
        }
        let from = pull.sources.remove(0);
        let node = self.clone();
        let key = Value::Binary(req.key.clone());
        self.peer(from).call(
            msg::GET,
            &[key, Value::from(true)],
            left.min(REPLICATE_TIMEOUT),
            Box::new(move |r| {
                match r {
                    Ok(Value::Nil) => pull.heard = true,
                    Ok(v) => {
                        let rec = msg::record_from_value(&v)
                            .and_then(|r| plausible(&r, unix_now()).map(|_| r));
                        match rec.map(|rec| node.store.update(&req.key, &rec)) {
                            Ok(Ok(_)) => pull.heard = true,
                            Ok(Err(e)) => return reply.err(store_error(&e)),
                            Err(e) => return reply.err(format!("old owner {from}: {e}")),
                        }
                    }
                    Err(e) => log::debug!("old owner {from} did not give its record: {e}"),
                }
                if pull.heard && !pull.every {
                    pull.sources.clear();
                }
                node.pull_then_decide(req, hash, pull, deadline, reply)
            }),
        );
    }

    /// `hash` is the key's place on the ring (`key_hash`), reckoned once per write.
    fn decide(self: &Arc<Self>, req: WriteRequest, hash: u64, deadline: Instant, reply: Reply) {
        let t = self.tables();
        if t.whs.is_empty() || !self.serving() {
            return reply.err(msg::NOT_READY);
        }
        let owners = t.whs.active_owners(hash);
        if owners.first() != Some(&self.me) {
            return self.obsolete(reply);
        }
        let counter = match req.write.op {
            write::Op::Delete => &self.counters.cmd_delete,
            _ => &self.counters.cmd_set,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = unix_now();
        let stamp = self.clock.stamp(now).0;
        let mut outcome = Outcome::NotStored;
        let want_record = req.write.meta.return_record;
        // The item a write left alone, for a meta command that shows it.
        let mut unchanged = None;
        let decide = |cur: Option<&crate::record::Record>| {
            // A flushed record is as good as absent: an add after flush_all stores.
            let cur = cur.filter(|r| !self.flushed(r, now));
            let (o, rec) = write::apply(&req.write, cur, stamp, now);
            outcome = o;
            if want_record && rec.is_none() {
                unchanged = cur.filter(|r| write::is_live(r, now)).cloned();
            }
            rec
        };
        // A set, add, replace, cas or delete decides on the index alone: the old
        // value is not read.
        let result = if req.write.decides_on_header() {
            self.store.modify_by_header(&req.key, decide)
        } else {
            self.store.modify(&req.key, decide)
        };
        let rec = match result {
            Ok(Modified::Written(r)) => r,
            Ok(Modified::Unchanged) => {
                let clock = self.store.clock_of(&req.key).map(|(c, _)| c).unwrap_or(0);
                return reply.ok(msg::outcome_to_value(outcome, clock, unchanged.as_ref()));
            }
            Err(e) => return reply.err(store_error(&e)),
        };
        let shown = (want_record && rec.is_value()).then_some(&rec);
        let answer = msg::outcome_to_value(outcome, rec.clock, shown);
        // While data moves, the old owners in rhs still serve reads: they get the
        // write too. (kumofs compared only timestamps here and missed it; §14 item 7.)
        let mut replicas: Vec<SocketAddr> = owners[1..].to_vec();
        if !t.rhs.same_layout(&t.whs) {
            for a in t.rhs.active_owners(hash) {
                if a != self.me && !replicas.contains(&a) {
                    replicas.push(a);
                }
            }
        }
        log::trace!(
            "write {} {:?} -> {:?} clock {:#x} whs {:#x} rhs {:#x} replicas {:?}",
            String::from_utf8_lossy(&req.key),
            req.write.op,
            outcome,
            rec.clock,
            t.whs.clocktime.0,
            t.rhs.clocktime.0,
            replicas
        );
        // This server's copy is waited for like a replica's: under `#sync=always`
        // it counts once an fsync has it (the store's group commit).
        let pending = Arc::new(Pending {
            remaining: AtomicUsize::new(replicas.len() + 1),
            targets: Mutex::new(replicas.clone()),
            reply: Mutex::new(None),
            answer,
            failure: Mutex::new(None),
        });
        if req.no_wait {
            let answer = pending.answer.clone();
            reply.ok(answer);
        } else {
            *pending.reply.lock().unwrap_or_else(|p| p.into_inner()) = Some(reply);
        }
        let local = pending.clone();
        self.store.when_durable(move |r| {
            local.one_done(r.err().map(|e| Value::from(store_error(&e))));
        });
        if replicas.is_empty() {
            return;
        }
        let outgoing = Arc::new(self.outgoing(req.key, rec, t.whs.clocktime.0));
        for addr in replicas {
            self.replicate(addr, hash, outgoing.clone(), deadline, pending.clone());
        }
    }

    fn outgoing(&self, key: Vec<u8>, rec: crate::record::Record, whs: u64) -> Outgoing {
        let params = msg::encode_replicate(u64::from(self.clock.tick()), &key, &rec, whs, &self.me);
        Outgoing {
            key,
            rec,
            whs,
            params: Arc::new(params),
        }
    }

    /// Sends one record to one replica, retrying as long as it is still an owner
    /// and the deadline allows.
    fn replicate(
        self: &Arc<Self>,
        addr: SocketAddr,
        hash: u64,
        out: Arc<Outgoing>,
        deadline: Instant,
        pending: Arc<Pending>,
    ) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.counters
                .replicate_failures
                .fetch_add(1, Ordering::Relaxed);
            log::warn!("replication to {addr}: no answer before the write's deadline");
            return pending.one_done(Some(Value::from(msg::DEADLINE)));
        }
        // A retry after the tables changed must carry the new whs clock, or the
        // replica answers that it is out of date again and again.
        let whs = self.tables().whs.clocktime.0;
        let out = if out.whs == whs {
            out
        } else {
            Arc::new(self.outgoing(out.key.clone(), out.rec.clone(), whs))
        };
        let node = self.clone();
        self.peer(addr).call_encoded(
            msg::REPLICATE,
            &out.params.clone(),
            left.min(REPLICATE_TIMEOUT),
            Box::new(move |r| {
                let err = match r {
                    Ok(_) => return pending.one_done(None),
                    Err(e) => e,
                };
                if let RpcError::Remote(v) = &err {
                    match msg::obsolete_tables(v) {
                        Some((w, r)) => {
                            node.adopt(w, r);
                            let t = node.tables();
                            if !t.whs.is_active(&node.me) {
                                // The cluster has marked us fault: the write must
                                // not stand, here or anywhere (see the module
                                // documentation). The gateway retries it on the
                                // key's next owner.
                                log::warn!(
                                    "a write was refused: this server is fault in the tables"
                                );
                                if let Err(e) = node.store.erase(&out.key, out.rec.clock) {
                                    log::error!("cannot drop a refused write: {e}");
                                }
                                return pending.one_done(Some(msg::obsolete_error(&t.whs, &t.rhs)));
                            }
                            // Owners the old table did not name get the write too,
                            // before this one can complete it.
                            node.widen(hash, &out, deadline, &pending);
                        }
                        None if v.as_str() == Some(msg::STORE_FULL) => {
                            return pending.one_done(Some(Value::from(msg::STORE_FULL)))
                        }
                        None => {
                            return pending
                                .one_done(Some(Value::from(format!("replica {addr}: {err}"))))
                        }
                    }
                }
                let t = node.tables();
                let still_owner = t.whs.is_active_owner(hash, &addr)
                    || (!t.rhs.same_layout(&t.whs) && t.rhs.is_active_owner(hash, &addr));
                if !still_owner {
                    // The manager marked it fault or moved the key: it is not a
                    // replica any more, and the write is complete without it.
                    return pending.one_done(None);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // Answered now, not a timer tick later: the caller is waiting.
                    return node.replicate(addr, hash, out, deadline, pending);
                }
                let n = node.clone();
                node.net
                    .timers()
                    .after(REPLICATE_RETRY_DELAY.min(left), move || {
                        n.replicate(addr, hash, out, deadline, pending)
                    });
            }),
        );
    }

    /// Sends a write to the owners of `hash` under the current tables that it has
    /// not been sent to yet (the tables changed while it was being replicated).
    fn widen(
        self: &Arc<Self>,
        hash: u64,
        out: &Arc<Outgoing>,
        deadline: Instant,
        pending: &Arc<Pending>,
    ) {
        let t = self.tables();
        let mut owners = t.whs.active_owners(hash).to_vec();
        if !t.rhs.same_layout(&t.whs) {
            owners.extend(t.rhs.active_owners(hash).iter());
        }
        let fresh: Vec<SocketAddr> = {
            let mut sent = pending.targets.lock().unwrap_or_else(|p| p.into_inner());
            let fresh: Vec<SocketAddr> = owners
                .into_iter()
                .filter(|a| *a != self.me && !sent.contains(a))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            sent.extend(&fresh);
            fresh
        };
        pending.remaining.fetch_add(fresh.len(), Ordering::AcqRel);
        for a in fresh {
            self.replicate(a, hash, out.clone(), deadline, pending.clone());
        }
    }

    /// The replica side: newer wins. A coordinator that routed by an older whs
    /// than ours is told so (after the write is applied), so that it also sends the
    /// write to owners it did not know of: this fences writes across a change.
    pub(super) fn apply_replica(&self, mut params: Vec<Value>, reply: Reply) {
        // The record is taken out of the params, not copied.
        let rec = params
            .get_mut(2)
            .map(|v| msg::record_take(std::mem::replace(v, Value::Nil)));
        let (key, rec) = match (params.get(1), rec) {
            (Some(Value::Binary(k)), Some(Ok(r))) => (k, r),
            (_, Some(Err(e))) => return reply.err(e),
            _ => return reply.err("bad parameters: key or record"),
        };
        let theirs = params.get(3).and_then(Value::as_u64).unwrap_or(u64::MAX);
        let coordinator = msg::addr_from_value(params.get(4)).ok();
        self.replica(key, rec, theirs, coordinator, reply)
    }

    /// [`Node::apply_replica`] once its params are read, as Values or in place
    /// (`msg::read_replicate`): `theirs` is the whs clock the coordinator routed by.
    pub(super) fn replica(
        &self,
        key: &[u8],
        rec: crate::record::Record,
        theirs: u64,
        coordinator: Option<SocketAddr>,
        reply: Reply,
    ) {
        if let Err(e) = plausible(&rec, unix_now()) {
            return reply.err(e);
        }
        let t = self.tables();
        // A coordinator our newer tables call fault (or no longer list) is cut off
        // from the cluster and may not know it: its write is refused unapplied.
        if theirs < t.whs.clocktime.0 && coordinator.is_some_and(|c| !t.whs.is_active(&c)) {
            return self.obsolete(reply);
        }
        let hash = key_hash(key);
        let owner = |hs: &crate::cluster::hash_space::HashSpace| {
            hs.owners(hash).iter().any(|n| n.addr == self.me)
        };
        if !owner(&t.whs) && !owner(&t.rhs) {
            return self.obsolete(reply);
        }
        let applied = match self.store.update(key, &rec) {
            Ok(a) => a,
            Err(e) => return reply.err(store_error(&e)),
        };
        log::trace!(
            "replica {} {:?} clock {:#x} applied {applied}",
            String::from_utf8_lossy(key),
            rec.kind,
            rec.clock
        );
        let answer = if theirs < t.whs.clocktime.0 {
            Err(msg::obsolete_error(&t.whs, &t.rhs))
        } else {
            Ok(Value::from(applied))
        };
        // Answered once the record is as durable as `#sync=` promises. Not applied
        // (a newer one is here) waits too: that one may have just been written.
        self.store.when_durable(move |r| match r {
            Ok(()) => reply.send_result(answer),
            Err(e) => reply.err(store_error(&e)),
        });
    }
}

/// A write on its way to its replicas, with its `Replicate` params encoded once
/// for all of them (`params` carries `whs`, the whs clock it was encoded under).
struct Outgoing {
    key: Vec<u8>,
    rec: crate::record::Record,
    whs: u64,
    params: crate::net::chain::Shared,
}

/// A write waiting for its replicas.
struct Pending {
    remaining: AtomicUsize,
    /// Every server the write has been sent to.
    targets: Mutex<Vec<SocketAddr>>,
    reply: Mutex<Option<Reply>>,
    answer: Value,
    /// The first error, which the coordinator answers with.
    failure: Mutex<Option<Value>>,
}

impl Pending {
    fn one_done(&self, failure: Option<Value>) {
        if let Some(f) = failure {
            self.failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(f);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let Some(reply) = self.reply.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(f) => reply.err(f),
            None => reply.ok(self.answer.clone()),
        }
    }
}
