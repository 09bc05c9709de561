//! The server's request handlers: reads, coordinated writes with replication, the
//! replica side, hash-space updates and status. Network I/O goes through
//! [`crate::net`]; what a write does is decided by [`crate::cluster::write`].
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

use crate::cluster::clock::Clock;
use crate::cluster::hash_space::{key_hash, CurrentTables, Tables};
use crate::cluster::replace::{self, Pull};
use crate::cluster::write::{self, Outcome};
use crate::net::report::ServerLinks;
use crate::net::{Net, Peer, Reply, RpcError, Service};
use crate::proto::cluster::{self as msg, WriteRequest};
use crate::store::{Modified, Store};
use crate::time::unix_now;
use rmpv::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// What a peer is told when the store fails: no file path (the log has it), and
/// for a full disk memcached's words, which the gateway passes on at once. The
/// store's own refusals (a key or value too large) say why.
pub fn store_error(e: &crate::store::Error) -> &'static str {
    use crate::store::Error;
    match e {
        Error::Full(m) => {
            log::error!("store full: {m}");
            msg::STORE_FULL
        }
        Error::Io(m) | Error::Corrupt(m) => {
            log::error!("store: {m}");
            msg::STORE_FAILED
        }
        Error::Invalid(m) => {
            log::warn!("store refused a write: {m}");
            "value or key too large for the store"
        }
    }
}

/// Refuses a record from a peer stamped far in the future: taken, it would win
/// every newer-wins comparison, so no later write of the key could replace it.
pub fn plausible(rec: &crate::record::Record) -> Result<(), String> {
    let c = crate::cluster::clock::ClockTime(rec.clock);
    if crate::cluster::clock::from_the_future(c, unix_now()) {
        log::warn!(
            "a record stamped {:#x} is from the future; refused",
            rec.clock
        );
        return Err(format!(
            "record stamped {:#x} is more than {}s ahead of this server's clock",
            rec.clock,
            crate::cluster::clock::AHEAD_MAX_SECS
        ));
    }
    Ok(())
}

/// The counters kumostat reads. They live here, in one place.
#[derive(Default)]
pub struct Counters {
    pub cmd_get: AtomicU64,
    pub cmd_set: AtomicU64,
    pub cmd_delete: AtomicU64,
    /// Writes that failed because a replica could not store them.
    pub replicate_failures: AtomicU64,
}

pub struct Node {
    pub me: SocketAddr,
    pub store: Store,
    pub clock: Clock,
    pub net: Net,
    tables: CurrentTables,
    /// The links to other servers, which report the unreachable ones to the
    /// managers.
    peers: Arc<ServerLinks>,
    pub counters: Counters,
    started: Instant,
    /// Replace progress and the id of the newest replace.
    pub replace: super::replace::ReplaceState,
    /// `-M`: bytes a replace copy may buffer for sending.
    pub replace_memory_limit: u64,
    /// `-L`: where other servers push replace data.
    pub stream_port: u16,
    /// This process's start time in nanoseconds: tells the manager a restart apart
    /// from a server that merely kept running.
    pub incarnation: u64,
    /// A manager has answered this incarnation's keepalive. Until then the server
    /// serves no reads and coordinates no writes, and takes no pushed tables: a
    /// server restarted before anyone noticed would otherwise answer from a store
    /// that lost data, under tables that still call it active.
    pub registered: std::sync::atomic::AtomicBool,
    /// When the store last recorded its membership (unix seconds).
    pub member_marked: AtomicU64,
    /// The first tables after start have been checked for a stale store.
    pub membership_checked: std::sync::atomic::AtomicBool,
}

impl Node {
    pub fn new(
        me: SocketAddr,
        store: Store,
        net: Net,
        stream_port: u16,
        replace_memory_limit: u64,
        managers: Vec<Arc<Peer>>,
    ) -> Arc<Node> {
        Arc::new(Node {
            peers: ServerLinks::new(&net, msg::addr_to_value(&me), managers),
            replace: Default::default(),
            replace_memory_limit,
            stream_port,
            registered: std::sync::atomic::AtomicBool::new(false),
            member_marked: AtomicU64::new(0),
            membership_checked: std::sync::atomic::AtomicBool::new(false),
            incarnation: crate::daemon::incarnation(),
            me,
            store,
            clock: Clock::default(),
            net,
            tables: CurrentTables::default(),
            counters: Counters::default(),
            started: Instant::now(),
        })
    }

    pub fn tables(&self) -> Arc<Tables> {
        self.tables.get()
    }

    /// Takes the newer of our tables and these. Returns whether anything changed.
    pub fn adopt(
        &self,
        whs: crate::cluster::hash_space::HashSpace,
        rhs: crate::cluster::hash_space::HashSpace,
    ) -> bool {
        self.tables.adopt(whs, rhs, unix_now())
    }

    fn peer(&self, addr: SocketAddr) -> Arc<Peer> {
        self.peers.get(addr)
    }

    fn obsolete(&self, reply: Reply) {
        let t = self.tables();
        reply.err(msg::obsolete_error(&t.whs, &t.rhs));
    }

    fn get(&self, params: &[Value], reply: Reply) {
        let key = match params.first() {
            Some(Value::Binary(k)) => k,
            _ => return reply.err("bad parameters: key"),
        };
        let t = self.tables();
        if (t.rhs.is_empty() && t.whs.is_empty()) || !self.registered.load(Ordering::Acquire) {
            return reply.err(msg::NOT_READY);
        }
        let hash = key_hash(key);
        if !self.serves_read(&t, hash, params.get(2).and_then(Value::as_u64)) {
            return self.obsolete(reply);
        }
        // A coordinator that is new to the key asks for its record as stored,
        // tombstones and all (see `write`).
        if params.get(1).and_then(Value::as_bool) == Some(true) {
            return match self.store.get(key) {
                Ok(Some(r)) => reply.ok(msg::record_to_value(&r)),
                Ok(None) => reply.ok(Value::Nil),
                Err(e) => reply.err(store_error(&e)),
            };
        }
        self.counters.cmd_get.fetch_add(1, Ordering::Relaxed);
        if log::log_enabled!(log::Level::Trace) {
            let got = self
                .store
                .get(key)
                .ok()
                .flatten()
                .map(|r| (r.kind, r.clock));
            log::trace!(
                "get {} -> {got:?} whs {:#x} rhs {:#x}",
                String::from_utf8_lossy(key),
                t.whs.clocktime.0,
                t.rhs.clocktime.0
            );
        }
        match self.store.get(key) {
            Ok(Some(r)) if write::is_live(&r, unix_now()) => reply.ok(msg::record_to_value(&r)),
            Ok(_) => reply.ok(Value::Nil),
            Err(e) => reply.err(store_error(&e)),
        }
    }

    /// Whether this server may answer a read of `hash` for a caller that routes
    /// reads by an rhs stamped `theirs`.
    ///
    /// Only an owner that holds the data may answer, or a miss would hide an
    /// acknowledged write: an active owner in rhs does; an owner only in whs may
    /// still be waiting for its copy (a new server, or one that returned wiped).
    /// The one exception is the settling window, when the manager has given
    /// gateways the settled rhs (one of our write tables, stamped as it) before
    /// servers: the copy to its owners is then complete, and we are one of them if
    /// we own the key in that table. Our whs may have moved on since (a server lost
    /// meanwhile); writes have kept reaching us all along, as an owner in both. A
    /// caller that does not say which rhs it routes by (an older client) is checked
    /// against both tables.
    fn serves_read(&self, t: &Tables, hash: u64, theirs: Option<u64>) -> bool {
        let in_rhs = t.rhs.is_active_owner(hash, &self.me);
        match theirs {
            None => in_rhs || t.whs.is_active_owner(hash, &self.me),
            Some(c) if c > t.rhs.clocktime.0 => {
                in_rhs
                    || self.tables.recent_whs(c).is_some_and(|settled| {
                        settled.is_active_owner(hash, &self.me)
                            && t.whs.is_active_owner(hash, &self.me)
                    })
            }
            Some(_) => in_rhs,
        }
    }

    /// Coordinates one write: decide, store, replicate, answer.
    ///
    /// While data moves, a server may coordinate a key it has not been sent yet.
    /// It first takes the key's record from an old owner (newer wins), so that add,
    /// cas, incr, delete and the rest decide on what the cluster holds, not on an
    /// empty or stale local copy.
    fn write(self: &Arc<Self>, params: &[Value], reply: Reply) {
        let req = match WriteRequest::from_params(params) {
            Ok(r) => r,
            Err(e) => return reply.err(e),
        };
        let deadline = Instant::now()
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
                return self.pull_then_decide(req, pull, deadline, reply);
            }
        }
        self.decide(req, deadline, reply)
    }

    /// Takes the key's record from the first old owner that answers, then decides.
    fn pull_then_decide(
        self: &Arc<Self>,
        req: WriteRequest,
        mut pull: Pull,
        deadline: Instant,
        reply: Reply,
    ) {
        if pull.sources.is_empty() {
            // Deciding on a copy that may be missing the newest record would let
            // add, cas or incr answer wrongly: only once some holder gave its copy.
            return if pull.heard {
                self.decide(req, deadline, reply)
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
                        let rec = msg::record_from_value(&v).and_then(|r| plausible(&r).map(|_| r));
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
                node.pull_then_decide(req, pull, deadline, reply)
            }),
        );
    }

    fn decide(self: &Arc<Self>, req: WriteRequest, deadline: Instant, reply: Reply) {
        let t = self.tables();
        if t.whs.is_empty() || !self.registered.load(Ordering::Acquire) {
            return reply.err(msg::NOT_READY);
        }
        let hash = key_hash(&req.key);
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
        let result = self.store.modify(&req.key, |cur| {
            let (o, rec) = write::apply(&req.write, cur, stamp, now);
            outcome = o;
            rec
        });
        let rec = match result {
            Ok(Modified::Written(r)) => r,
            Ok(Modified::Unchanged) => {
                let clock = self.store.clock_of(&req.key).map(|(c, _)| c).unwrap_or(0);
                return reply.ok(msg::outcome_to_value(outcome, clock));
            }
            Err(e) => return reply.err(store_error(&e)),
        };
        let answer = msg::outcome_to_value(outcome, rec.clock);
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
        let pending = Arc::new(Pending {
            remaining: AtomicUsize::new(replicas.len()),
            targets: Mutex::new(replicas.clone()),
            reply: Mutex::new(None),
            answer,
            failure: Mutex::new(None),
        });
        if req.no_wait || replicas.is_empty() {
            let answer = pending.answer.clone();
            reply.ok(answer);
        } else {
            *pending.reply.lock().unwrap_or_else(|p| p.into_inner()) = Some(reply);
        }
        let key = Arc::new(req.key);
        let stamp = rec.clock;
        let rec = Arc::new(msg::record_to_value(&rec));
        for addr in replicas {
            self.replicate(
                addr,
                hash,
                key.clone(),
                (stamp, rec.clone()),
                deadline,
                pending.clone(),
            );
        }
    }

    /// Sends one record to one replica, retrying as long as it is still an owner
    /// and the deadline allows. `rec` is the record's stamp and its encoding.
    fn replicate(
        self: &Arc<Self>,
        addr: SocketAddr,
        hash: u64,
        key: Arc<Vec<u8>>,
        rec: (u64, Arc<Value>),
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
        let params = [
            Value::from(self.clock.tick()),
            Value::Binary((*key).clone()),
            (*rec.1).clone(),
            Value::from(self.tables().whs.clocktime.0),
            msg::addr_to_value(&self.me),
        ];
        let node = self.clone();
        self.peer(addr).call(
            msg::REPLICATE,
            &params,
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
                                if let Err(e) = node.store.erase(&key, rec.0) {
                                    log::error!("cannot drop a refused write: {e}");
                                }
                                return pending.one_done(Some(msg::obsolete_error(&t.whs, &t.rhs)));
                            }
                            // Owners the old table did not name get the write too,
                            // before this one can complete it.
                            node.widen(hash, &key, &rec, deadline, &pending);
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
                    return node.replicate(addr, hash, key, rec, deadline, pending);
                }
                let n = node.clone();
                node.net
                    .timers()
                    .after(REPLICATE_RETRY_DELAY.min(left), move || {
                        n.replicate(addr, hash, key, rec, deadline, pending)
                    });
            }),
        );
    }

    /// Sends a write to the owners of `hash` under the current tables that it has
    /// not been sent to yet (the tables changed while it was being replicated).
    fn widen(
        self: &Arc<Self>,
        hash: u64,
        key: &Arc<Vec<u8>>,
        rec: &(u64, Arc<Value>),
        deadline: Instant,
        pending: &Arc<Pending>,
    ) {
        let t = self.tables();
        let mut owners = t.whs.active_owners(hash);
        if !t.rhs.same_layout(&t.whs) {
            owners.extend(t.rhs.active_owners(hash));
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
            self.replicate(a, hash, key.clone(), rec.clone(), deadline, pending.clone());
        }
    }

    /// The replica side: newer wins. A coordinator that routed by an older whs
    /// than ours is told so (after the write is applied), so that it also sends the
    /// write to owners it did not know of: this fences writes across a change.
    fn apply_replica(&self, params: &[Value], reply: Reply) {
        let (key, rec) = match (params.get(1), params.get(2).map(msg::record_from_value)) {
            (Some(Value::Binary(k)), Some(Ok(r))) => (k, r),
            (_, Some(Err(e))) => return reply.err(e),
            _ => return reply.err("bad parameters: key or record"),
        };
        if let Err(e) = plausible(&rec) {
            return reply.err(e);
        }
        let t = self.tables();
        let theirs = params.get(3).and_then(Value::as_u64).unwrap_or(u64::MAX);
        let coordinator = msg::addr_from_value(params.get(4)).ok();
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
        if theirs < t.whs.clocktime.0 {
            return self.obsolete(reply);
        }
        reply.ok(applied)
    }

    fn sync(&self, params: &[Value], reply: Reply) {
        if !self.registered.load(Ordering::Acquire) {
            return reply.ok(false);
        }
        match msg::spaces_from(params.get(1..).unwrap_or(&[])) {
            Ok((w, r)) => reply.ok(self.adopt(w, r)),
            Err(e) => reply.err(e),
        }
    }

    pub fn status(&self, name: &str) -> Option<Value> {
        let c = &self.counters;
        Some(match name {
            "pid" => Value::from(std::process::id()),
            "uptime" => Value::from(self.started.elapsed().as_secs()),
            "time" => Value::from(unix_now()),
            "version" => Value::from(crate::cli::VERSION),
            "cmd_get" => Value::from(c.cmd_get.load(Ordering::Relaxed)),
            "cmd_set" => Value::from(c.cmd_set.load(Ordering::Relaxed)),
            "cmd_delete" => Value::from(c.cmd_delete.load(Ordering::Relaxed)),
            "items" => Value::from(self.store.items()),
            "store_full" => Value::from(self.store.is_full()),
            "clocktime" => Value::from(self.clock.stamp(unix_now()).0),
            "whs" => self.tables().whs.to_value(),
            "rhs" => self.tables().rhs.to_value(),
            "replstat" => Value::from(super::replace::replstat(self)),
            "replace" => {
                let r = &self.replace;
                Value::Map(vec![
                    (Value::from("id"), Value::from(r.id.load(Ordering::Relaxed))),
                    (
                        Value::from("state"),
                        Value::from(super::replace::replstat(self)),
                    ),
                    (
                        Value::from("records_sent"),
                        Value::from(r.records_sent.load(Ordering::Relaxed)),
                    ),
                    (
                        Value::from("bytes_sent"),
                        Value::from(r.bytes_sent.load(Ordering::Relaxed)),
                    ),
                    (
                        Value::from("records_received"),
                        Value::from(r.records_received.load(Ordering::Relaxed)),
                    ),
                    (
                        Value::from("erased"),
                        Value::from(r.erased.load(Ordering::Relaxed)),
                    ),
                ])
            }
            "hscheck" => {
                let t = self.tables();
                Value::from(t.whs.same_layout(&t.rhs))
            }
            "stats" => Value::Map(
                STATS
                    .iter()
                    .filter_map(|n| Some((Value::from(*n), self.status(n)?)))
                    .collect(),
            ),
            _ => return None,
        })
    }
}

/// What `GetStatus stats` gathers, in order.
pub const STATS: &[&str] = &[
    "pid",
    "uptime",
    "time",
    "version",
    "cmd_get",
    "cmd_set",
    "cmd_delete",
    "items",
];

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

/// Sets or clears TCP_NODELAY on every socket of this process (kumostat
/// set_delay/unset_delay). Returns how many sockets took it.
fn set_nodelay_everywhere(on: bool) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let flag: libc::c_int = on.into();
    let mut n = 0;
    for e in dir.flatten() {
        let Some(fd) = e
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::c_int>().ok())
        else {
            continue;
        };
        // SAFETY: setsockopt only reads `flag`; on an fd that is not a TCP socket it
        // fails with ENOTSOCK or ENOPROTOOPT and changes nothing.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &flag as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            n += 1;
        }
    }
    n
}

/// The server's RPC service.
pub struct ServerService(pub Arc<Node>);

impl Service for ServerService {
    fn call(&self, method: &str, params: Vec<Value>, reply: Reply) {
        let node = &self.0;
        if let Some(c) = msg::clk(&params) {
            if matches!(
                method,
                msg::KEEP_ALIVE | msg::HASH_SPACE_SYNC | msg::REPLICATE
            ) {
                node.clock.merge(c);
            }
        }
        match method {
            msg::GET => node.get(&params, reply),
            msg::WRITE => node.write(&params, reply),
            msg::REPLICATE => node.apply_replica(&params, reply),
            msg::KEEP_ALIVE => reply.ok(Value::Nil),
            msg::HASH_SPACE_SYNC => node.sync(&params, reply),
            msg::REPLACE_COPY_START => super::replace::copy_start(node, &params, reply),
            msg::REPLACE_DELETE_START => super::replace::delete_start(node, &params, reply),
            msg::CREATE_BACKUP => super::replace::backup(node, &params, reply),
            msg::GET_STATUS => {
                let name = params.first().and_then(Value::as_str).unwrap_or("");
                match node.status(name) {
                    Some(v) => reply.ok(v),
                    None => reply.err(format!("unknown status '{name}'")),
                }
            }
            msg::SET_CONFIG => match (
                params.first().and_then(Value::as_str),
                params.get(1).and_then(Value::as_bool),
            ) {
                (Some("nodelay"), Some(on)) => reply.ok(set_nodelay_everywhere(on)),
                _ => reply.err("unknown config; expected [\"nodelay\", bool]"),
            },
            _ => reply.unknown_method(method),
        }
    }
}

/// The stream port's service: replace data from other servers, and nothing else.
pub struct StreamService(pub Arc<Node>);

impl Service for StreamService {
    fn call(&self, method: &str, params: Vec<Value>, reply: Reply) {
        if let Some(c) = msg::clk(&params) {
            self.0.clock.merge(c);
        }
        match method {
            msg::REPLACE_PUSH => super::replace::push(&self.0, &params, reply),
            msg::KEEP_ALIVE => reply.ok(Value::Nil),
            _ => reply.unknown_method(method),
        }
    }
}
