//! The server's request handlers: reads, hash-space updates and status, and the
//! dispatch of every method; the write path is in `write`. Network I/O goes
//! through [`crate::net`]; what a write does is decided by
//! [`crate::cluster::write`].

use super::replace_state::{Phase, ReplaceState};
use crate::cluster::clock::Clock;
use crate::cluster::hash_space::{key_hash, CurrentTables, Tables};
use crate::cluster::write;
use crate::net::report::ServerLinks;
use crate::net::{Net, Peer, Reply};
use crate::proto::cluster::{self as msg};
use crate::store::Store;
use crate::time::unix_now;
use rmpv::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

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
pub fn plausible(rec: &crate::record::Record, now: u32) -> Result<(), String> {
    let c = crate::cluster::clock::ClockTime(rec.clock);
    if crate::cluster::clock::from_the_future(c, now) {
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
    pub(super) tables: CurrentTables,
    /// The links to other servers, which report the unreachable ones to the
    /// managers.
    pub(super) peers: Arc<ServerLinks>,
    pub counters: Counters,
    started: Instant,
    /// Replace progress and the id of the newest replace.
    pub replace: ReplaceState,
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
    /// The store was new when the server started: never a member, and empty.
    /// Taken at open, since replicas may land before the first tables do.
    pub store_was_new: bool,
    /// The newest `flush_all` point heard of ([`crate::cluster::flush`]); records
    /// stamped before it are gone once it has come. Kept in the store too.
    pub flush: AtomicU64,
    flush_recording: std::sync::Mutex<()>,
    /// The first tables after start listed this server active while its store is
    /// new ([`crate::cluster::membership::lost_its_data`]): it serves no reads and
    /// coordinates no writes, and says so in its keepalives, until the managers
    /// mark it fault. The replace after its re-attach fills it.
    pub lost_data: std::sync::atomic::AtomicBool,
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
            lost_data: std::sync::atomic::AtomicBool::new(false),
            store_was_new: store.last_member().is_none() && store.is_empty(),
            flush: AtomicU64::new(store.flush_point()),
            flush_recording: std::sync::Mutex::new(()),
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

    /// kumostat replstat: `inactive` (not active in whs), `copying`, `deleting`,
    /// `waiting` (rhs and whs differ: a replace is due or running elsewhere) or `ready`.
    pub fn replstat(&self) -> &'static str {
        let t = self.tables();
        if !t.whs.is_active(&self.me) {
            return "inactive";
        }
        match self.replace.phase() {
            Phase::Copying => "copying",
            Phase::Deleting => "deleting",
            Phase::Idle if !t.whs.same_layout(&t.rhs) => "waiting",
            Phase::Idle => "ready",
        }
    }

    /// Takes a flush point if it is newer than ours: recorded in the store first
    /// (a flush must outlive a restart), then in force. The clock is raised past
    /// it, so that every write this server stamps from now on is newer.
    pub fn raise_flush(&self, point: u64) -> Result<(), String> {
        if point <= self.flush.load(Ordering::Acquire) {
            return Ok(());
        }
        // One raise at a time: two racing writes could leave the smaller point on
        // disk, and a restart would then forget the newer flush.
        let _one = self
            .flush_recording
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if point <= self.flush.load(Ordering::Acquire) {
            return Ok(());
        }
        self.store.record_flush(point).map_err(|e| e.to_string())?;
        self.flush.fetch_max(point, Ordering::AcqRel);
        self.clock
            .merge(crate::cluster::clock::ClockTime(point).counter());
        log::info!("flush_all: records stamped before {point:#x} are gone");
        Ok(())
    }

    /// Keys holding a value that has not expired and that no flush in force hides.
    pub fn items(&self) -> u64 {
        let point = self.flush.load(Ordering::Acquire);
        let now = unix_now();
        if crate::cluster::flush::in_force(point, now) {
            self.store.items_since(point, now)
        } else {
            self.store.items(now)
        }
    }

    /// Whether `rec` is gone under the flush in force.
    pub fn flushed(&self, rec: &crate::record::Record, now: u32) -> bool {
        crate::cluster::flush::is_flushed(rec.clock, self.flush.load(Ordering::Acquire), now)
    }

    /// Registered with a manager, and holding the data the tables expect of it.
    pub fn serving(&self) -> bool {
        self.registered.load(Ordering::Acquire) && !self.lost_data.load(Ordering::Acquire)
    }

    /// Takes the newer of our tables and these. Returns whether anything changed.
    pub fn adopt(
        &self,
        whs: crate::cluster::hash_space::HashSpace,
        rhs: crate::cluster::hash_space::HashSpace,
    ) -> bool {
        self.tables.adopt(whs, rhs, unix_now())
    }

    pub(super) fn peer(&self, addr: SocketAddr) -> Arc<Peer> {
        self.peers.get(addr)
    }

    pub(super) fn obsolete(&self, reply: Reply) {
        let t = self.tables();
        reply.err(msg::obsolete_error(&t.whs, &t.rhs));
    }

    /// `Get [key, as_stored, rhs_clock]` as Values: a pull's `[key, true]`, or a
    /// caller that does not say which rhs it routes by.
    pub(super) fn get_values(&self, params: &[Value], reply: Reply) {
        let key = match params.first() {
            Some(Value::Binary(k)) => k,
            _ => return reply.err("bad parameters: key"),
        };
        let as_stored = params.get(1).and_then(Value::as_bool) == Some(true);
        self.get(key, as_stored, params.get(2).and_then(Value::as_u64), reply)
    }

    /// A read of `key` for a caller that routes reads by the rhs stamped `theirs`.
    pub(super) fn get(&self, key: &[u8], as_stored: bool, theirs: Option<u64>, reply: Reply) {
        let t = self.tables();
        if (t.rhs.is_empty() && t.whs.is_empty()) || !self.serving() {
            return reply.err(msg::NOT_READY);
        }
        let hash = key_hash(key);
        if !self.serves_read(&t, hash, theirs) {
            return self.obsolete(reply);
        }
        // A coordinator that is new to the key asks for its record as stored,
        // tombstones and all (see `write`).
        if as_stored {
            return match self.store.get(key) {
                Ok(Some(r)) => reply.ok_written(r.data.len(), |out| msg::encode_record(out, &r)),
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
        let now = unix_now();
        match self.store.get(key) {
            Ok(Some(r)) if write::is_live(&r, now) && !self.flushed(&r, now) => {
                reply.ok_written(r.data.len(), |out| msg::encode_record(out, &r))
            }
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

    pub(super) fn sync(&self, params: &[Value], reply: Reply) {
        if !self.registered.load(Ordering::Acquire) {
            return reply.ok(false);
        }
        match msg::spaces_from(params.get(1..).unwrap_or(&[])) {
            Ok((w, r)) => reply.ok(self.adopt(w, r)),
            Err(e) => reply.err(e),
        }
    }

    /// Seconds since the process started.
    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn status(&self, name: &str) -> Option<Value> {
        let c = &self.counters;
        Some(match name {
            "pid" => Value::from(std::process::id()),
            "uptime" => Value::from(self.uptime()),
            "time" => Value::from(unix_now()),
            "version" => Value::from(crate::cli::VERSION),
            "cmd_get" => Value::from(c.cmd_get.load(Ordering::Relaxed)),
            "cmd_set" => Value::from(c.cmd_set.load(Ordering::Relaxed)),
            "cmd_delete" => Value::from(c.cmd_delete.load(Ordering::Relaxed)),
            "items" => Value::from(self.items()),
            "store_full" => Value::from(self.store.is_full()),
            "store_bytes" => Value::from(self.store.gauges().bytes),
            "group_commits" => Value::from(self.store.gauges().group_commits),
            "clocktime" => Value::from(self.clock.stamp(unix_now()).0),
            "whs" => self.tables().whs.to_value(),
            "rhs" => self.tables().rhs.to_value(),
            "replstat" => Value::from(self.replstat()),
            "replace" => {
                let r = &self.replace;
                Value::Map(vec![
                    (Value::from("id"), Value::from(r.id.load(Ordering::Relaxed))),
                    (Value::from("state"), Value::from(self.replstat())),
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
                    (
                        Value::from("copy_ms"),
                        Value::from(r.copy_ms.load(Ordering::Relaxed)),
                    ),
                    (
                        Value::from("delete_ms"),
                        Value::from(r.delete_ms.load(Ordering::Relaxed)),
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
