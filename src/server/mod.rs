//! kumo-server: the storage node. It keeps its part of the data in a [`Store`],
//! coordinates the writes of the keys it is first owner of, stores replicas for the
//! others, and keeps in touch with its manager(s), which tell it the hash spaces.
//! The handlers are in [`node`].

mod metrics;
pub mod node;
mod outbox;
pub mod replace;
mod replace_state;
mod service;
mod write;

use crate::cli::options::{
    Kind, Opt, OptionList, BACKGROUND, BINARY_LOG, KEYED, LOGGING, MANAGERS, MONITORING, NETWORK,
    SERVER_PORT,
};
use crate::cli::Args;
use crate::cluster::hash_space::HashSpace;
use crate::daemon;
use crate::net::{self, rpc_server::RpcSession, Peer};
use crate::proto::cluster as msg;
use crate::store::{self, Store};
use node::Node;
use rmpv::Value;
use service::{ServerService, StreamService};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The options of kumo-server: the shared groups, and its own.
pub static OPTIONS: OptionList = &[
    LOGGING, BINARY_LOG, BACKGROUND, NETWORK, ADDRESSES, MANAGERS, STORAGE, KEYED, MONITORING,
];

#[rustfmt::skip]
static ADDRESSES: &[Opt] = &[
    Opt { short: Some("l"), long: "listen", kind: Kind::Address { port: SERVER_PORT }, default: None, required: true,
        help: "Address other nodes use to reach this server; the server listens on it. It is the server's identity on the hash ring." },
    Opt { short: Some("L"), long: "stream-listen", kind: Kind::Port, default: Some("19900"), required: false,
        help: "Port of the bulk data stream other servers pull from while data is moved between servers." },
];

#[rustfmt::skip]
static STORAGE: &[Opt] = &[
    Opt { short: Some("s"), long: "store", kind: Kind::StorePath, default: None, required: true,
        help: "Directory of the store, created if missing. Options follow as #name=value: sync=none|interval|always (default interval), sync_ms=N, segment_size=SIZE (default 256m), compact_ratio=PERCENT (default 50), compact_min=SIZE (default 1m). Tokyo Cabinet's xmsiz and rcnum are accepted with a warning." },
    Opt { short: Some("f"), long: "offer-tmp", kind: Kind::Path, default: Some("/tmp"), required: false,
        help: "Accepted for kumofs compatibility and unused: kumo streams replace data from its store and writes no temporary files." },
    Opt { short: Some("M"), long: "replace-memory-limit", kind: Kind::Size, default: Some("8m"), required: false,
        help: "Bytes of replace data a server may hold for sending at once, over all its targets." },
    Opt { short: Some("gS"), long: "garbage-mem-limit", kind: Kind::Count, default: Some("2048"), required: false,
        help: "KiB of tombstone bookkeeping above which tombstones older than -gN are collected." },
    Opt { short: Some("gN"), long: "garbage-min-time", kind: Kind::Seconds, default: Some("60"), required: false,
        help: "Tombstones are kept at least this long; clamped to -gX." },
    Opt { short: Some("gX"), long: "garbage-max-time", kind: Kind::Seconds, default: Some("3600"), required: false,
        help: "Tombstones older than this are collected. A server that was away longer than this must not rejoin with its old store." },
];

/// How often the store is checked for segments worth compacting (and for expired
/// and flushed values to reclaim just before).
const COMPACT_INTERVAL_SECS: u64 = 30;
/// Reclaim batches (of `store::RECLAIM_BATCH` keys) one tick runs at most: what is
/// left waits for the next tick rather than keep the compactor from its work.
const RECLAIM_BATCHES_PER_TICK: usize = 64;

/// Registers with the managers and keeps the hash spaces current: every `-Ci` it
/// sends KeepAlive with its address and tables, and takes the newer tables back.
/// The manager also pushes changes at once; this is the catch-up path, and how a
/// restarted manager relearns the cluster.
fn start_keepalive(node: &Arc<Node>, managers: Vec<Arc<Peer>>) -> Option<net::timer::TimerId> {
    let weak = Arc::downgrade(node);
    let timeout = node.net.config().keepalive.max(Duration::from_secs(1));
    let tick = move |_| {
        let Some(node) = weak.upgrade() else { return };
        let t = node.tables();
        let params = [
            Value::from(node.clock.tick()),
            msg::addr_to_value(&node.me),
            t.whs.to_value(),
            t.rhs.to_value(),
            Value::from(node.stream_port),
            Value::from(node.incarnation),
            // The newest replace this server was asked to run: a manager that
            // restarted, or the partner of one that did, finishes it from here.
            Value::from(node.replace.id.load(std::sync::atomic::Ordering::Acquire)),
            // Whether the store is out of space, for `kumoctl status`.
            Value::from(node.store.is_full()),
            // This server lost its data: the managers mark it fault.
            Value::from(node.lost_data.load(std::sync::atomic::Ordering::Acquire)),
            // The newest flush_all point: a manager passes it on to servers that
            // missed it.
            Value::from(node.flush.load(std::sync::atomic::Ordering::Acquire)),
        ];
        for m in &managers {
            let n = node.clone();
            let addr = m.addr();
            m.call(
                msg::KEEP_ALIVE,
                &params,
                timeout,
                Box::new(move |r| match r.map(|v| (msg::spaces_from_value(&v), v)) {
                    Ok((Ok((w, r)), v)) => {
                        // The flush goes in force before the server serves anything.
                        let flush = v.as_array().and_then(|a| a.get(2)).and_then(Value::as_u64);
                        if let Err(e) = n.raise_flush(flush.unwrap_or(0)) {
                            log::error!("manager {addr}: {e}; not serving until it is recorded");
                            return;
                        }
                        membership_check(&n, &w, &r);
                        n.adopt(w, r);
                        n.registered
                            .store(true, std::sync::atomic::Ordering::Release);
                    }
                    Ok((Err(e), _)) => log::warn!("manager {addr}: {e}"),
                    Err(e) => log::debug!("manager {addr}: keepalive failed: {e}"),
                }),
            );
        }
    };
    tick(std::time::Instant::now());
    match node.net.timers().every(node.net.config().keepalive, tick) {
        Ok(id) => Some(id),
        Err(e) => {
            log::error!("cannot schedule keepalives: {e}");
            None
        }
    }
}

/// How often a member server records, in its store, that it belongs.
const MEMBER_MARK_SECS: u64 = 30;

/// Looks at a manager's tables: a server active in them records that its store
/// belongs (at most every MEMBER_MARK_SECS); the first tables after start are
/// checked for a store that lost its data or is too stale to join with.
fn membership_check(node: &Node, whs: &HashSpace, rhs: &HashSpace) {
    use std::sync::atomic::Ordering;
    if !whs.nodes().is_empty() && !node.membership_checked.swap(true, Ordering::AcqRel) {
        first_tables_check(node, whs, rhs);
    }
    if !whs.is_active(&node.me) {
        if node.lost_data.swap(false, Ordering::AcqRel) {
            log::warn!(
                "the managers marked this server fault; its attach and replace fill it again"
            );
        }
        return;
    }
    if node.lost_data.load(Ordering::Acquire) {
        return; // not a member until it holds the data again
    }
    let now = unix_now();
    let last = node.member_marked.load(Ordering::Relaxed);
    if now >= last + MEMBER_MARK_SECS {
        node.member_marked.store(now, Ordering::Relaxed);
        if let Err(e) = node.store.mark_member(now) {
            log::warn!("cannot record membership in the store: {e}");
        }
    }
}

/// The first tables after start. A server listed active with a new store lost its
/// data (see `lost_its_data`): it stops serving and tells the managers. A store
/// too stale to join with (see `store_too_stale`) is copied aside and emptied, so
/// that the replace after its attach fills it afresh.
fn first_tables_check(node: &Node, whs: &HashSpace, rhs: &HashSpace) {
    use crate::cluster::membership::{lost_its_data, store_too_stale};
    use std::sync::atomic::Ordering;
    let now = unix_now();
    let horizon = node.store.options().tombstone_min_age.as_secs();
    let last = node.store.last_member();
    let listed = whs.contains(&node.me) || rhs.contains(&node.me);
    let held = node.store.stats(crate::time::unix_now());
    // Expired values are data too: a store holding only those is not new.
    let holds = held.items + held.expired + held.tombstones > 0;
    let active = whs.is_active(&node.me) || rhs.is_active(&node.me);
    let tables_secs = u64::from(whs.clocktime.secs());
    let started_secs = node.incarnation / 1_000_000_000;
    if node.store_was_new && lost_its_data(active, tables_secs, started_secs) {
        log::error!(
            "the cluster lists this server active, but its store is new: it lost its data (a \
             wiped or new disk). It serves nothing until the managers mark it fault; the replace \
             after its attach fills it again."
        );
        node.lost_data.store(true, Ordering::Release);
        return;
    }
    if !store_too_stale(listed, true, holds, last, now, horizon) {
        return;
    }
    let away = now.saturating_sub(last.unwrap_or(now));
    log::error!(
        "this server was out of the cluster for {away}s, longer than -gN ({horizon}s): deletes made \
         meanwhile may have been collected on the other servers, so this store's values could \
         come back. It is copied aside and emptied; the replace after its attach fills it again."
    );
    let suffix = format!("stale-{now}");
    match node.store.backup(&suffix) {
        Ok(path) => log::error!("the stale store was copied to {}", path.display()),
        Err(e) => {
            log::error!("the stale store could not be copied aside ({e}); emptying it anyway")
        }
    }
    match node.store.erase_all() {
        Ok(n) => log::error!("{n} stale records dropped; this server starts empty"),
        Err(e) => log::error!("the stale store could not be emptied: {e}"),
    }
}

/// kumo-server's own settings, typed (the shared groups are the daemon layer's).
pub struct Config {
    pub listen: SocketAddr,
    pub stream_port: u16,
    pub managers: Vec<SocketAddr>,
    pub store: PathBuf,
    /// The store's `#name=value` options.
    pub store_params: Vec<(String, String)>,
    pub replace_memory_limit: u64,
    /// `-gS`, in bytes.
    pub garbage_mem_limit: u64,
    pub garbage_min_time: Duration,
    pub garbage_max_time: Duration,
}

impl Config {
    pub fn from_args(args: &Args) -> Config {
        let (store, store_params) = args.store("store");
        Config {
            listen: args.addr("listen"),
            stream_port: args.port("stream-listen"),
            managers: [Some(args.addr("manager1")), args.opt_addr("manager2")]
                .into_iter()
                .flatten()
                .collect(),
            store,
            store_params,
            replace_memory_limit: args.size("replace-memory-limit"),
            garbage_mem_limit: args.count("garbage-mem-limit").saturating_mul(1024),
            garbage_min_time: args.seconds("garbage-min-time"),
            garbage_max_time: args.seconds("garbage-max-time"),
        }
    }
}

pub fn main(args: Args) -> i32 {
    let program = args.role.program();
    let config = Config::from_args(&args);
    daemon::block_signals();
    if let Err(e) = daemon::init_logging(&args) {
        return daemon::fatal(program, e);
    }
    if let Err(e) = daemon::open_binary_log(&args, "server") {
        return daemon::fatal(program, e);
    }
    let listen = config.listen;
    let listener = match std::net::TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => return daemon::fatal(program, format!("cannot listen on {listen}: {e}")),
    };
    let stream_port = config.stream_port;
    let stream_addr = std::net::SocketAddr::new(listen.ip(), stream_port);
    let stream_listener = match std::net::TcpListener::bind(stream_addr) {
        Ok(l) => l,
        Err(e) => {
            return daemon::fatal(program, format!("cannot listen on {stream_addr} (-L): {e}"))
        }
    };
    if config.managers.len() == 2 && config.managers[0] == config.managers[1] {
        return daemon::fatal(program, "-p names the same manager as -m");
    }
    let metrics = match args.opt_addr("metrics").map(net::metrics::bind).transpose() {
        Ok(m) => m,
        Err(e) => return daemon::fatal(program, e),
    };
    let store = match open_store(&config) {
        Ok(s) => s,
        Err(e) => return daemon::fatal(program, e),
    };
    if let Err(e) = daemon::daemonize_if_asked(&args) {
        return daemon::fatal(program, e);
    }
    let net = match net::Net::start(daemon::net_config(&args)) {
        Ok(n) => n,
        Err(e) => return daemon::fatal(program, format!("cannot start the network layer: {e}")),
    };
    store.claim_lock();
    let managers: Vec<Arc<Peer>> = config
        .managers
        .iter()
        .map(|a| Peer::new(&net, *a))
        .collect();
    let node = Node::new(
        listen,
        store.clone(),
        net.clone(),
        stream_port,
        config.replace_memory_limit,
        managers.clone(),
    );
    let _compactor = start_compactor(&node, &config);
    if let Err(e) = net.listen(
        listener,
        RpcSession::factory(Arc::new(ServerService(node.clone()))),
    ) {
        return daemon::fatal(program, format!("cannot serve {listen}: {e}"));
    }
    if let Err(e) = net.listen(
        stream_listener,
        RpcSession::factory(Arc::new(StreamService(node.clone()))),
    ) {
        return daemon::fatal(program, format!("cannot serve {stream_addr}: {e}"));
    }
    log::info!("listening on {listen}, replace stream on {stream_addr}");
    if let Some(l) = metrics {
        let n = node.clone();
        match net::metrics::serve(&net, l, Arc::new(move || metrics::page(&n))) {
            Ok(a) => log::info!("metrics on http://{a}/metrics"),
            Err(e) => return daemon::fatal(program, e),
        }
    }
    let _keepalive = start_keepalive(&node, managers);
    daemon::event(
        log::Level::Info,
        "start",
        &[
            ("version", Value::from(crate::cli::VERSION)),
            ("pid", Value::from(std::process::id())),
            ("listen", Value::from(listen.to_string())),
        ],
    );
    let sig = daemon::wait_for_stop();
    log::info!("{sig} received; stopping");
    daemon::event(log::Level::Info, "stop", &[("signal", Value::from(sig))]);
    store.close();
    crate::cli::EXIT_OK
}

fn unix_now() -> u64 {
    u64::from(crate::time::unix_now())
}

/// Opens the `-s` store with its `#` options and the `-g` garbage settings.
fn open_store(config: &Config) -> Result<Store, String> {
    let path = &config.store;
    let mut options = store::Options::default();
    options
        .apply(&config.store_params)
        .map_err(|e| format!("-s {}: {e}", path.display()))?;
    options.tombstone_max_age = config.garbage_max_time;
    options.tombstone_min_age = config.garbage_min_time.min(options.tombstone_max_age);
    options.tombstone_mem_limit = config.garbage_mem_limit;
    let store = Store::open(path, options)?;
    let r = store.open_report();
    log::info!(
        "store {} opened: {} segments ({} from hints), {} records scanned",
        path.display(),
        r.segments,
        r.from_hints,
        r.records
    );
    Ok(store)
}

/// Compacts on a timer; tombstones are collected on the `-gN` cadence, which keeps
/// the rewrite of live data that collection needs rare.
///
/// Tombstones are not collected while a server of whs is fault: it may come back
/// with its old store, and the tombstones are what stop its stale values from
/// returning when the replace brings it up to date.
fn start_compactor(node: &Arc<Node>, config: &Config) -> Option<net::timer::TimerId> {
    let net = node.net.clone();
    let store = node.store.clone();
    let weak = Arc::downgrade(node);
    let gc_every = config.garbage_min_time.as_secs().max(1);
    let last_gc = std::sync::Mutex::new(unix_now());
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tick = move |_| {
        // Compaction does I/O for seconds; it runs on its own thread, one at a time.
        if busy.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let now = unix_now();
        let gc = {
            let mut l = last_gc.lock().unwrap_or_else(|p| p.into_inner());
            let someone_away = weak
                .upgrade()
                .is_some_and(|n| n.tables().whs.nodes().iter().any(|x| !x.active));
            let due = now >= *l + gc_every && !someone_away;
            if due {
                *l = now;
            }
            due
        };
        let flush_point = weak
            .upgrade()
            .map_or(0, |n| n.flush.load(std::sync::atomic::Ordering::Acquire));
        let (store, busy) = (store.clone(), busy.clone());
        let _ = std::thread::Builder::new()
            .name("compact".into())
            .spawn(move || {
                // First, so that the bytes it frees are compacted away in this pass.
                reclaim(&store, flush_point, crate::time::unix_now());
                if let Err(e) = store.compact(now, gc) {
                    log::error!("compaction failed: {e}");
                }
                busy.store(false, std::sync::atomic::Ordering::Release);
            });
    };
    match net
        .timers()
        .every(std::time::Duration::from_secs(COMPACT_INTERVAL_SECS), tick)
    {
        Ok(id) => Some(id),
        Err(e) => {
            log::error!("cannot schedule compaction: {e}");
            None
        }
    }
}

/// Drops from the store the values no client can see any more: those past their
/// exptime, and those the flush at `flush_point` hides once it is in force.
fn reclaim(store: &Store, flush_point: u64, now: u32) {
    let flushed = move |clock| crate::cluster::flush::is_flushed(clock, flush_point, now);
    let mut total = store::Reclaimed::default();
    for _ in 0..RECLAIM_BATCHES_PER_TICK {
        match store.reclaim_expired(now, flushed, store::RECLAIM_BATCH) {
            Ok(r) => {
                total.expired += r.expired;
                total.flushed += r.flushed;
                if r.total() < store::RECLAIM_BATCH {
                    break;
                }
            }
            Err(e) => {
                log::error!("reclaiming expired items failed: {e}");
                break;
            }
        }
    }
    if total.total() > 0 {
        log::info!(
            "reclaimed {} expired and {} flushed items",
            total.expired,
            total.flushed
        );
    }
}
