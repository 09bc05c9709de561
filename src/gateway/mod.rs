//! kumo-gateway: serves the memcached protocol to applications and routes each
//! request to the servers that own its key.
//!
//! - Every request has a deadline (`--deadline`), and is answered by then: a
//!   value, a miss, or `SERVER_ERROR`. Retries happen only within it, and a write
//!   carries what is left of it to its coordinator, which answers in time too.
//! - Reads follow rhs. A get goes to the key's first active owner, passing over
//!   suspect servers ([`crate::cluster::routing`]); if no answer has come after
//!   [`HEDGE_AFTER`] it asks the next owner as well, and the first answer wins.
//!   Once one answer starts to arrive (a large value comes in pieces) the other
//!   call is forgotten and its bytes skipped, so a value is not fetched and held
//!   twice. An error moves on to the next owner at once; after every owner, the
//!   round starts again after [`RETRY_DELAY`], up to `-G` rounds.
//! - A value passes through held once: a client's value is gathered as it comes
//!   and sent on from that buffer, and a server's answer becomes the reply's
//!   value by reference (`net::chain`, `proto::rpc::FrameReader`).
//! - Writes follow whs. A write goes to the key's coordinator, its first active
//!   owner, and is never redirected elsewhere: the coordinator decides and
//!   replicates to every other owner before it answers (the rule that makes an
//!   acknowledged write survive two losses). It is retried up to `-S`/`-D` times
//!   when the coordinator refuses it (an out-of-date hash space) or is unreachable;
//!   a write that may have run is retried only if running it twice is harmless (set,
//!   touch, delete). A coordinator behind a cut is not waited for past the
//!   deadline; the gateway reports it, the managers mark it fault, and the next
//!   write goes to the next owner.
//! - A server the gateway cannot reach (a link found dead, a failed connect) is
//!   reported to the managers ([`crate::net::report`]).
//! - A request for which no owner is known yet (no tables so far) asks the managers
//!   and waits for the tables, within the same attempts.
//! - The hash spaces come from the managers by long poll, and from a server's
//!   refusal, which carries its own tables (so routing catches up with every
//!   manager down).
//!
//! This file holds the gateway's state, its tables and `main`; `route` where
//! each request goes, [`text`] the memcached text protocol session, and
//! `pipeline` the order of a connection's commands.

mod binary;
mod client;
mod flow;
mod flush;
mod form;
mod meta;
mod metrics;
mod multiget;
mod pipeline;
mod route;
mod stats;
pub mod text;

use crate::cli::options::{
    Kind, Opt, OptionList, BACKGROUND, BINARY_LOG, GATEWAY_TEXT_PORT, KEYED, LOGGING, MANAGERS,
    MONITORING, NETWORK,
};
use crate::cli::Args;
use crate::cluster::hash_space::{CurrentTables, Tables};
use crate::daemon;
use crate::net::report::ServerLinks;
use crate::net::{self, Peer, RpcError};
use crate::proto::cluster::{self as msg, WriteAnswer};
use crate::record::Record;
use rmpv::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The options of kumo-gateway: the shared groups, and its own.
pub static OPTIONS: OptionList = &[
    LOGGING,
    BINARY_LOG,
    BACKGROUND,
    NETWORK,
    MANAGERS,
    OWN_OPTIONS,
    KEYED,
    MONITORING,
];

#[rustfmt::skip]
static OWN_OPTIONS: &[Opt] = &[
    Opt { short: Some("t"), long: "memcache-text", kind: Kind::Listen { port: GATEWAY_TEXT_PORT }, default: None, required: false,
        help: "Address to serve the memcached text protocol (and its meta commands) on. A bare port listens on every interface. Without -t and -b, the text protocol is served on 11211." },
    Opt { short: Some("b"), long: "memcache-binary", kind: Kind::Listen { port: GATEWAY_TEXT_PORT }, default: None, required: false,
        help: "Address to serve the memcached binary protocol on. A bare port listens on every interface. With -t too, both are served." },
    Opt { short: Some("I"), long: "max-item-size", kind: Kind::Size, default: Some("1m"), required: false,
        help: "Largest value a client may store; larger ones get SERVER_ERROR object too large for cache." },
    Opt { short: Some("G"), long: "get-retry", kind: Kind::Count, default: Some("5"), required: false,
        help: "A get asks the key's servers in turn (primary, replica 1, replica 2), and goes round them again after an error, up to N rounds within the deadline." },
    Opt { short: None, long: "deadline", kind: Kind::Seconds, default: Some("0.8"), required: false,
        help: "Every request is answered within this many seconds: a value, a miss, or SERVER_ERROR, never silence. A write carries what is left of it to its servers, which give up in time; a get asks the next replica after 40 ms without an answer. Keep it below your clients' own timeout; the default suits a client that waits 1 s." },
    Opt { short: Some("S"), long: "set-retry", kind: Kind::Count, default: Some("20"), required: false,
        help: "Times a failed write (set, add, cas, incr, touch...) is retried, refreshing the hash space in between." },
    Opt { short: Some("D"), long: "delete-retry", kind: Kind::Count, default: Some("20"), required: false,
        help: "Times a failed delete is retried." },
    Opt { short: Some("As"), long: "async-replicate-set", kind: Kind::Switch, default: None, required: false,
        help: "Answer a write once the coordinating server has stored it, without waiting for its replicas. Faster, but an acknowledged write can be lost with that one server." },
    Opt { short: Some("Ad"), long: "async-replicate-delete", kind: Kind::Switch, default: None, required: false,
        help: "Answer a delete once the coordinating server has written it, without waiting for its replicas." },
    Opt { short: Some("F"), long: "memproto-save-flag", kind: Kind::Switch, default: None, required: false,
        help: "Accepted for kumofs command lines, and does nothing: kumo always stores a value's flags (kumofs did only with -F)." },
    Opt { short: Some("E"), long: "memproto-save-expire", kind: Kind::Switch, default: None, required: false,
        help: "Accepted for kumofs command lines, and does nothing: kumo always stores and honours a value's exptime (kumofs did only with -E)." },
    Opt { short: None, long: "idle-timeout", kind: Kind::Seconds, default: Some("0"), required: false,
        help: "Close a client connection that has sent no command for this many seconds. 0, the default as in memcached, never does." },
    Opt { short: None, long: "command-timeout", kind: Kind::Seconds, default: Some("60"), required: false,
        help: "Close a client connection whose command line or value stopped arriving partway for this many seconds; 0 never does. Time the gateway itself holds a client back (its answers are not being read) does not count." },
];

/// The memcached protocol version the gateway speaks, at the front of its
/// `version` reply: clients (libmemcached among them) read the numbers there to
/// tell what the server understands.
pub const MEMCACHED_PROTOCOL: &str = "1.6.18";

/// The `version` reply's text: the protocol version, then kumo's own.
pub fn version_text() -> String {
    format!("{MEMCACHED_PROTOCOL}-kumo-{}", crate::cli::VERSION)
}

/// How long a get waits for one owner before it asks the next one as well. A
/// healthy server answers within a millisecond; a read of a key behind a cut link
/// is answered by a replica this much later.
pub const HEDGE_AFTER: Duration = Duration::from_millis(40);
/// Pause before a write is retried, and after a get has tried every owner once.
pub const RETRY_DELAY: Duration = Duration::from_millis(100);
/// How long a long poll for new hash spaces waits at the manager.
pub const WATCH_WAIT: Duration = Duration::from_secs(10);
/// The shortest time between two refreshes of the tables after errors.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(200);
/// How long a `stats` command waits for the servers' item counts.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateway's counters, reported by `stats`. They live here, in one place.
#[derive(Default)]
pub struct Counters {
    pub curr_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub cmd_get: AtomicU64,
    pub cmd_set: AtomicU64,
    pub cmd_touch: AtomicU64,
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    pub get_errors: AtomicU64,
    pub delete_hits: AtomicU64,
    pub delete_misses: AtomicU64,
    pub incr_hits: AtomicU64,
    pub incr_misses: AtomicU64,
    pub decr_hits: AtomicU64,
    pub decr_misses: AtomicU64,
    pub cas_hits: AtomicU64,
    pub cas_misses: AtomicU64,
    pub cas_badval: AtomicU64,
    pub touch_hits: AtomicU64,
    pub touch_misses: AtomicU64,
    pub write_errors: AtomicU64,
    pub retries: AtomicU64,
}

impl Counters {
    /// `stats reset`: every count starts again from zero, as memcached's does; the
    /// connections open now stay counted.
    pub fn reset(&self) {
        for c in [
            &self.total_connections,
            &self.cmd_get,
            &self.cmd_set,
            &self.cmd_touch,
            &self.get_hits,
            &self.get_misses,
            &self.get_errors,
            &self.delete_hits,
            &self.delete_misses,
            &self.incr_hits,
            &self.incr_misses,
            &self.decr_hits,
            &self.decr_misses,
            &self.cas_hits,
            &self.cas_misses,
            &self.cas_badval,
            &self.touch_hits,
            &self.touch_misses,
            &self.write_errors,
            &self.retries,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

pub type GetDone = Box<dyn FnOnce(Result<Option<Record>, String>) + Send>;
pub type WriteDone = Box<dyn FnOnce(Result<WriteAnswer, String>) + Send>;

pub struct Gateway {
    net: net::Net,
    managers: Vec<Arc<Peer>>,

    /// `--deadline`: the longest a request takes, end to end.
    pub deadline: Duration,
    tables: CurrentTables,
    /// The links to servers, which report the unreachable ones to the managers.
    servers: Arc<ServerLinks>,
    get_attempts: u32,
    set_retry: u32,
    delete_retry: u32,
    pub async_set: bool,
    pub async_delete: bool,
    pub value_max: usize,
    /// `--idle-timeout` and `--command-timeout`.
    pub timeouts: stats::Timeouts,
    pub counters: Counters,
    /// `stats detail`.
    pub detail: stats::Detail,
    /// `stats conns`.
    pub conns: stats::Conns,
    /// Every command's latency, for `--metrics`.
    pub latency: Arc<crate::proto::metrics::Histogram>,
    started: Instant,
    /// When the tables were last asked for after an error (ms since start).
    last_refresh_ms: AtomicU64,
}

impl Gateway {
    pub fn tables(&self) -> Arc<Tables> {
        self.tables.get()
    }

    /// Takes the newer of our tables and these; returns whether anything changed.
    fn adopt(
        &self,
        whs: crate::cluster::hash_space::HashSpace,
        rhs: crate::cluster::hash_space::HashSpace,
    ) -> bool {
        self.tables.adopt(whs, rhs, crate::time::unix_now())
    }

    fn server(&self, addr: SocketAddr) -> Arc<Peer> {
        self.servers.get(addr)
    }

    /// What the client is told when the deadline passes.
    fn too_late(&self, last: Option<String>) -> String {
        let ms = self.deadline.as_millis();
        match last {
            Some(e) => format!("no answer within the {ms} ms deadline ({e})"),
            None => format!("no answer within the {ms} ms deadline"),
        }
    }

    /// Takes the tables a refusing server sent, or asks the managers at once.
    fn after_error(self: &Arc<Self>, e: &RpcError) {
        if let RpcError::Remote(v) = e {
            if let Some((w, r)) = msg::obsolete_tables(v) {
                self.adopt(w, r);
                return;
            }
        }
        self.refresh();
    }

    /// Asks every manager for the tables now, at most once per REFRESH_INTERVAL:
    /// a failing server must not turn every failed request into a request to
    /// every manager.
    pub fn refresh(self: &Arc<Self>) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_refresh_ms.load(Ordering::Relaxed);
        if now < last + REFRESH_INTERVAL.as_millis() as u64
            || self
                .last_refresh_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for m in &self.managers {
            self.request_tables(m, Duration::ZERO, None);
        }
    }

    fn request_tables(
        self: &Arc<Self>,
        m: &Arc<Peer>,
        wait: Duration,
        then: Option<Box<dyn FnOnce(bool) + Send>>,
    ) {
        let t = self.tables();
        let params = [
            Value::from(t.whs.clocktime.0),
            Value::from(t.rhs.clocktime.0),
            Value::from(wait.as_millis() as u64),
        ];
        let me = Arc::downgrade(self);
        let addr = m.addr();
        m.call(
            msg::HASH_SPACE_REQUEST,
            &params,
            wait + self.net.config().connect_timeout + Duration::from_secs(1),
            Box::new(move |r| {
                // `ok` means: something new came, ask again at once.
                let ok = match r.map(|v| msg::spaces_from_value(&v)) {
                    // Ask again at once after news or after a quiet wait; wait a
                    // little when the manager is behind us (restarted, lagging).
                    Ok(Ok((w, r))) => me.upgrade().is_some_and(|g| {
                        let (wc, rc) = (w.clocktime, r.clocktime);
                        let adopted = g.adopt(w, r);
                        let t = g.tables();
                        adopted || (t.whs.clocktime == wc && t.rhs.clocktime == rc)
                    }),
                    Ok(Err(e)) => {
                        log::warn!("manager {addr}: {e}");
                        false
                    }
                    Err(e) => {
                        log::debug!("manager {addr}: {e}");
                        false
                    }
                };
                if let Some(f) = then {
                    f(ok)
                }
            }),
        );
    }

    /// Keeps one long poll open at manager `m`, for as long as the gateway lives.
    fn watch(self: &Arc<Self>, m: Arc<Peer>) {
        let weak = Arc::downgrade(self);
        let m2 = m.clone();
        self.request_tables(
            &m,
            WATCH_WAIT,
            Some(Box::new(move |ok| {
                let Some(g) = weak.upgrade() else { return };
                if ok {
                    g.watch(m2);
                } else {
                    let delay = g.net.config().keepalive;
                    let w = Arc::downgrade(&g);
                    g.net.timers().after(delay, move || {
                        if let Some(g) = w.upgrade() {
                            g.watch(m2)
                        }
                    });
                }
            })),
        );
    }

    /// The item count of every active server, summed, and how many answered.
    pub fn cluster_items(self: &Arc<Self>, done: Box<dyn FnOnce(u64, usize, usize) + Send>) {
        let t = self.tables();
        let servers: Vec<SocketAddr> = t
            .whs
            .nodes()
            .iter()
            .filter(|n| n.active)
            .map(|n| n.addr)
            .collect();
        if servers.is_empty() {
            return done(0, 0, 0);
        }
        struct Sum {
            total: u64,
            answered: usize,
            left: usize,
            done: Option<Box<dyn FnOnce(u64, usize, usize) + Send>>,
        }
        let n = servers.len();
        let sum = Arc::new(Mutex::new(Sum {
            total: 0,
            answered: 0,
            left: n,
            done: Some(done),
        }));
        for a in servers {
            let sum = sum.clone();
            self.server(a).call(
                msg::GET_STATUS,
                &[Value::from("items")],
                STATS_TIMEOUT,
                Box::new(move |r| {
                    let mut s = sum.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(i) = r.ok().and_then(|v| v.as_u64()) {
                        s.total += i;
                        s.answered += 1;
                    }
                    s.left -= 1;
                    if s.left == 0 {
                        let (t, a) = (s.total, s.answered);
                        if let Some(f) = s.done.take() {
                            drop(s);
                            f(t, a, n);
                        }
                    }
                }),
            );
        }
    }

    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// kumo-gateway's own settings, typed (the shared groups are the daemon layer's).
pub struct Config {
    /// `-t`; 11211 on every interface when neither `-t` nor `-b` is given.
    pub memcache_text: Option<SocketAddr>,
    pub memcache_binary: Option<SocketAddr>,
    pub managers: Vec<SocketAddr>,
    pub max_item_size: usize,
    pub get_retry: u32,
    pub deadline: Duration,
    pub set_retry: u32,
    pub delete_retry: u32,
    pub async_replicate_set: bool,
    pub async_replicate_delete: bool,
    pub timeouts: stats::Timeouts,
}

impl Config {
    pub fn from_args(args: &Args) -> Config {
        let retries = |name| args.count(name).min(u32::MAX as u64 / 4) as u32;
        Config {
            memcache_text: match (
                args.opt_addr("memcache-text"),
                args.opt_addr("memcache-binary"),
            ) {
                (None, None) => Some(SocketAddr::from(([0, 0, 0, 0], GATEWAY_TEXT_PORT))),
                (t, _) => t,
            },
            memcache_binary: args.opt_addr("memcache-binary"),
            managers: [Some(args.addr("manager1")), args.opt_addr("manager2")]
                .into_iter()
                .flatten()
                .collect(),
            max_item_size: args
                .size("max-item-size")
                .min(crate::record::DATA_SIZE_MAX as u64) as usize,
            get_retry: retries("get-retry").max(1),
            deadline: args.seconds("deadline").max(Duration::from_millis(1)),
            set_retry: retries("set-retry"),
            delete_retry: retries("delete-retry"),
            async_replicate_set: args.switch("async-replicate-set"),
            async_replicate_delete: args.switch("async-replicate-delete"),
            timeouts: stats::Timeouts {
                idle: whole_seconds(args.seconds("idle-timeout")),
                command: whole_seconds(args.seconds("command-timeout")),
            },
        }
    }
}

/// Seconds for a timeout: a fraction rounds up, so that 0.5 does not mean never.
fn whole_seconds(d: Duration) -> u32 {
    (d.as_millis().div_ceil(1000)).min(u32::MAX as u128) as u32
}

/// How often connections are checked against their timeouts.
const TIMEOUT_SWEEP: Duration = Duration::from_secs(1);

pub fn main(args: Args) -> i32 {
    let program = args.role.program();
    let config = Config::from_args(&args);
    daemon::block_signals();
    if let Err(e) = daemon::init_logging(&args) {
        return daemon::fatal(program, e);
    }
    if let Err(e) = daemon::open_binary_log(&args, "gateway") {
        return daemon::fatal(program, e);
    }
    // Both bound before going to the background, so that a taken port is told.
    let mut listeners = Vec::new();
    for (addr, binary) in [
        (config.memcache_text, false),
        (config.memcache_binary, true),
    ] {
        let Some(addr) = addr else { continue };
        match std::net::TcpListener::bind(addr) {
            Ok(l) => listeners.push((l, addr, binary)),
            Err(e) => return daemon::fatal(program, format!("cannot listen on {addr}: {e}")),
        }
    }
    if config.managers.len() == 2 && config.managers[0] == config.managers[1] {
        return daemon::fatal(program, "-p names the same manager as -m");
    }
    let metrics = match args.opt_addr("metrics").map(net::metrics::bind).transpose() {
        Ok(m) => m,
        Err(e) => return daemon::fatal(program, e),
    };
    if let Err(e) = daemon::daemonize_if_asked(&args) {
        return daemon::fatal(program, e);
    }
    let net = match net::Net::start(daemon::net_config(&args)) {
        Ok(n) => n,
        Err(e) => return daemon::fatal(program, format!("cannot start the network layer: {e}")),
    };
    let managers: Vec<Arc<Peer>> = config
        .managers
        .iter()
        .map(|a| Peer::new(&net, *a))
        .collect();
    let gw = Arc::new(Gateway {
        net: net.clone(),
        managers: managers.clone(),

        deadline: config.deadline,
        tables: CurrentTables::default(),
        // Gateways are not in the tables: a report names this one by an id of its
        // own, unique enough among the gateways of a cluster.
        servers: ServerLinks::new(&net, Value::from(daemon::incarnation()), managers.clone()),
        get_attempts: config.get_retry,
        set_retry: config.set_retry,
        delete_retry: config.delete_retry,
        async_set: config.async_replicate_set,
        async_delete: config.async_replicate_delete,
        value_max: config.max_item_size,
        timeouts: config.timeouts,
        counters: Counters::default(),
        detail: Default::default(),
        conns: Default::default(),
        latency: Default::default(),
        started: Instant::now(),
        last_refresh_ms: AtomicU64::new(0),
    });
    for m in managers {
        gw.watch(m);
    }
    let timeouts = config.timeouts;
    // Held for the life of the process: the sweep stops when its id is dropped.
    let _sweep = if timeouts.idle > 0 || timeouts.command > 0 {
        let g = gw.clone();
        let sweep = net.timers().every(TIMEOUT_SWEEP, move |_| {
            g.conns.close_expired(crate::time::unix_now(), &timeouts);
        });
        match sweep {
            Ok(id) => Some(id),
            Err(e) => {
                return daemon::fatal(program, format!("cannot start the timeout sweep: {e}"))
            }
        }
    } else {
        None
    };
    for (listener, addr, binary) in listeners {
        let (factory, what) = if binary {
            (binary::factory(gw.clone(), addr), "binary")
        } else {
            (text::factory(gw.clone(), addr), "text")
        };
        if let Err(e) = net.listen(listener, factory) {
            return daemon::fatal(program, format!("cannot serve {addr}: {e}"));
        }
        log::info!("memcached {what} protocol on {addr}");
    }
    if let Some(l) = metrics {
        let g = gw.clone();
        match net::metrics::serve(&net, l, Arc::new(move || metrics::page(&g))) {
            Ok(a) => log::info!("metrics on http://{a}/metrics"),
            Err(e) => return daemon::fatal(program, e),
        }
    }
    daemon::event(
        log::Level::Info,
        "start",
        &[
            ("version", Value::from(crate::cli::VERSION)),
            ("pid", Value::from(std::process::id())),
        ],
    );
    let sig = daemon::wait_for_stop();
    log::info!("{sig} received; stopping");
    daemon::event(log::Level::Info, "stop", &[("signal", Value::from(sig))]);
    crate::cli::EXIT_OK
}
