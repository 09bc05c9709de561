//! kumo-manager: keeps the list of servers and the hash spaces, and tells every
//! server and gateway about changes. The decisions are in
//! [`crate::cluster::membership`], [`crate::cluster::partition`] and
//! [`crate::cluster::replace_run`]; this is the I/O around them. This file holds
//! the state, the publishing of tables and `main`; `membership` the servers coming
//! and going, `replace` the running of replaces, and `service` the RPC handlers.
//!
//! - Servers call `KeepAlive` every `-Ci` with their address. The first one makes the
//!   manager watch the server through a peer of its own with keepalives; when that
//!   peer fails `-Yn` reconnects, the server is lost and marked fault.
//! - Tables go out at once on every change: `HashSpaceSync` to each server and the
//!   partner, and the answer to every gateway waiting in `HashSpaceRequest` (a long
//!   poll). The keepalive traffic carries them too, so a lost push is repaired
//!   within one interval.
//! - Gateways and servers report servers they cannot reach (`ReportUnreachable`):
//!   a cut the manager does not see itself. The manager marks fault the servers
//!   [`crate::cluster::partition`] blames: the node at the centre of the broken
//!   links, which is not always the one reported.
//! - Nothing is persisted. A restarted manager relearns the tables from the first
//!   server that keeps in touch (newer wins), so a cluster survives losing every
//!   manager and getting them back.

mod membership;
mod metrics;
mod replace;
mod service;

use crate::cli::options::{
    Kind, Opt, OptionList, BACKGROUND, BINARY_LOG, KEYED, LOGGING, MANAGER_PORT, MONITORING,
    NETWORK,
};
use crate::cli::Args;
use crate::cluster::clock::{Clock, ClockTime};
use crate::cluster::hash_space::Tables;
use crate::cluster::membership::Membership;
use crate::cluster::partition::BrokenLinks;
use crate::cluster::replace_run::{Phase, Replacer};
use crate::daemon;
use crate::net::{self, rpc_server::RpcSession, Peer, Reply, Service};
use crate::proto::cluster::{self as msg, NodesInfo, ReplaceProgress};
use crate::time::unix_now;
use rmpv::Value;
use service::ManagerService;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The options of kumo-manager: the shared groups, and its own.
pub static OPTIONS: OptionList = &[
    LOGGING,
    BINARY_LOG,
    BACKGROUND,
    NETWORK,
    OWN_OPTIONS,
    KEYED,
    MONITORING,
];

#[rustfmt::skip]
static OWN_OPTIONS: &[Opt] = &[
    Opt { short: Some("l"), long: "listen", kind: Kind::Address { port: MANAGER_PORT }, default: None, required: true,
        help: "Address servers, gateways and kumoctl use to reach this manager; it listens on it." },
    Opt { short: Some("p"), long: "partner", kind: Kind::Address { port: MANAGER_PORT }, default: None, required: false,
        help: "The other manager of a pair. The two keep each other's hash spaces in step, newer wins." },
    Opt { short: Some("c"), long: "control", kind: Kind::Listen { port: MANAGER_PORT }, default: None, required: false,
        help: "Also serve kumoctl on this separate address (for example one only reachable from an admin network). The -l port serves kumoctl too." },
    Opt { short: Some("a"), long: "auto-replace", kind: Kind::Switch, default: None, required: false,
        help: "Attach new servers and detach lost ones without waiting for kumoctl, -Rs seconds after the change. kumoctl enable-auto-replace and disable-auto-replace switch it at run time." },
    Opt { short: Some("Rs"), long: "replace-delay", kind: Kind::Seconds, default: Some("4"), required: false,
        help: "With auto replace, how long a change must settle before servers are attached or detached." },
];

/// The longest a gateway's `HashSpaceRequest` is held waiting for a change.
pub const WATCH_WAIT_MAX: Duration = Duration::from_secs(30);
/// Gateways waiting for a change, at most.
pub const WATCHERS_MAX: usize = 4096;
/// Servers a manager watches, attached or not, at most. Anyone who reaches the
/// port can send a keepalive, and each new address costs a watching link; past
/// this, keepalives from unknown addresses are refused. Servers that stop keeping
/// in touch are lost and forgotten, making room again.
pub const SERVERS_MAX: usize = 1024;
/// How long a server may take to acknowledge a replace phase or write a backup.
pub const REPLACE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a table change held back by a settle looks again.
pub const SETTLE_POLL: Duration = Duration::from_millis(100);
/// How often the manager looks for a replace owed and not running.
pub const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

struct Watcher {
    reply: Reply,
    whs: u64,
    rhs: u64,
    until: Instant,
}

struct State {
    members: Membership,
    /// Each watched server's stream port (`-L`), from its keepalives.
    streams: HashMap<SocketAddr, u16>,
    /// Each server's incarnation (its start time), from its keepalives.
    incarnations: HashMap<SocketAddr, u64>,
    /// The replace this manager runs, and what it knows of others'.
    replace: Replacer,
    /// Servers being watched, by address.
    servers: HashMap<SocketAddr, Arc<Peer>>,
    watchers: Vec<Watcher>,
    auto_replace: bool,
    /// Bumped by every change auto replace reacts to; only the latest fires.
    auto_token: u64,
    /// Servers whose last keepalive said their store is full.
    full: BTreeSet<SocketAddr>,
    /// The newest flush_all point the servers report.
    flush: u64,
    /// Reports of servers that nodes cannot reach, since the last decision.
    broken: BrokenLinks,
    /// A decision on `broken` is scheduled.
    decision_due: bool,
}

/// How long a (re)started manager listens before it changes the tables: one
/// keepalive interval (`-Ci`), in which every running server keeps in touch and
/// brings its tables, plus this margin for reconnecting. So an attach right after a
/// restart does not build a cluster from nothing.
pub const LEARN_MARGIN: Duration = Duration::from_secs(1);

pub struct Manager {
    me: SocketAddr,
    /// The clock of the pure logic (reports of broken links, replaces): its
    /// milliseconds are counted from here.
    started: Instant,
    /// Until then the manager is learning the cluster (see `learning`).
    learn_until: Mutex<Option<Instant>>,
    net: net::Net,
    clock: Clock,
    partner: Mutex<Option<Arc<Peer>>>,
    replace_delay: Duration,
    state: Mutex<State>,
}

impl Manager {
    /// How much longer the manager is learning the cluster. A manager keeps
    /// nothing on disk: restarted, it knows no server until they keep in touch,
    /// and an attach before then would publish a table of only the servers heard
    /// so far, newer than the cluster's, which every node would take. Requests
    /// that change the tables wait until it has heard a full round of keepalives
    /// (the partner's tables end the wait at once: it knows the cluster).
    fn learning(&self) -> Option<Duration> {
        let mut until = self.learn_until.lock().unwrap_or_else(|p| p.into_inner());
        let left = until.and_then(|u| u.checked_duration_since(Instant::now()));
        if left.is_none() {
            *until = None;
        }
        left.filter(|d| !d.is_zero())
    }

    /// Whether a replace is settling (see [`Replacer::is_settling`]).
    fn settling(&self) -> bool {
        self.lock().replace.is_settling()
    }

    fn learnt(&self) {
        *self.learn_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh ClockTime for a table change, never older than the tables held: a
    /// clock behind the partner's must not produce a change nobody takes.
    fn stamp(&self, st: &State) -> ClockTime {
        self.clock.stamp(unix_now()).max(st.members.floor())
    }

    /// Sends the tables to every server, the partner and the waiting gateways.
    fn publish(&self, st: &mut State, to_partner: bool) {
        let t = &st.members.tables;
        let params = [
            Value::from(self.clock.tick()),
            t.whs.to_value(),
            t.rhs.to_value(),
        ];
        let timeout = self.net.config().keepalive.max(Duration::from_secs(1));
        let mut targets: Vec<Arc<Peer>> = st.servers.values().cloned().collect();
        if to_partner {
            targets.extend(
                self.partner
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            );
        }
        for p in targets {
            let addr = p.addr();
            p.call(
                msg::HASH_SPACE_SYNC,
                &params,
                timeout,
                Box::new(move |r| {
                    if let Err(e) = r {
                        log::debug!("{addr}: hash space push failed: {e}");
                    }
                }),
            );
        }
        self.answer_watchers(st);
    }

    /// The tables gateways route by: the servers' tables, except while a settled
    /// rhs is being handed to gateways before servers. A settle is of one whs: once
    /// whs has changed (a server lost meanwhile), gateways get the managers' tables.
    fn gateway_tables(st: &State) -> &Tables {
        let now = &st.members.tables;
        st.replace
            .gateway_tables()
            .filter(|t| t.whs.clocktime == now.whs.clocktime)
            .unwrap_or(now)
    }

    /// Answers the gateways waiting for tables newer than theirs.
    fn answer_watchers(&self, st: &mut State) {
        let t = Self::gateway_tables(st);
        let answer = msg::spaces_to_value(&t.whs, &t.rhs);
        let (w, r) = (t.whs.clocktime.0, t.rhs.clocktime.0);
        let (stale, keep): (Vec<Watcher>, Vec<Watcher>) = std::mem::take(&mut st.watchers)
            .into_iter()
            .partition(|x| x.whs != w || x.rhs != r);
        st.watchers = keep;
        for x in stale {
            x.reply.ok(answer.clone());
        }
    }

    fn log_tables(&self, st: &State, why: &str) {
        let t = &st.members.tables;
        log::info!(
            "{why}: whs {} ({} active), rhs {} servers, clock {:#x}",
            t.whs.nodes().len(),
            t.whs.nodes().iter().filter(|n| n.active).count(),
            t.rhs.nodes().len(),
            t.whs.clocktime.0
        );
    }

    fn watch(&self, params: &[Value], reply: Reply) {
        let known_w = params.first().and_then(Value::as_u64).unwrap_or(0);
        let known_r = params.get(1).and_then(Value::as_u64).unwrap_or(0);
        let wait = Duration::from_millis(params.get(2).and_then(Value::as_u64).unwrap_or(0))
            .min(WATCH_WAIT_MAX);
        let mut st = self.lock();
        let t = Self::gateway_tables(&st);
        // Answer at once only with news: tables this manager has that are newer
        // than the caller's. A caller ahead of us (we restarted) waits for a change.
        let news = t.whs.clocktime.0 > known_w || t.rhs.clocktime.0 > known_r;
        if wait.is_zero() || news || st.watchers.len() >= WATCHERS_MAX {
            let answer = msg::spaces_to_value(&t.whs, &t.rhs);
            return reply.ok(answer);
        }
        st.watchers.push(Watcher {
            reply,
            whs: known_w,
            rhs: known_r,
            until: Instant::now() + wait,
        });
    }

    /// Answers watchers whose wait is over, unchanged tables and all.
    fn expire_watchers(&self, now: Instant) {
        let mut st = self.lock();
        if st.watchers.iter().all(|w| w.until > now) {
            return;
        }
        let t = Self::gateway_tables(&st);
        let answer = msg::spaces_to_value(&t.whs, &t.rhs);
        let (due, keep): (Vec<Watcher>, Vec<Watcher>) = std::mem::take(&mut st.watchers)
            .into_iter()
            .partition(|w| w.until <= now);
        st.watchers = keep;
        for w in due {
            w.reply.ok(answer.clone());
        }
    }

    fn nodes_info(&self) -> Value {
        let st = self.lock();
        NodesInfo {
            whs: st.members.tables.whs.clone(),
            rhs: st.members.tables.rhs.clone(),
            newcomers: st.members.newcomers().to_vec(),
            auto_replace: st.auto_replace,
            store_full: st.full.iter().copied().collect(),
            replace: st.replace.run().map(|r| ReplaceProgress {
                phase: match r.phase {
                    Phase::Copy => "copying".into(),
                    Phase::Settling => "settling".into(),
                    Phase::Delete => "deleting".into(),
                },
                full: r.full,
                servers: r.targets.len() as u64,
                done: (r.targets.len() - r.pending.len()) as u64,
                records: r.records,
                bytes: r.bytes,
            }),
        }
        .to_value()
    }

    /// Asks every server for a backup; answers `[[addr, path or error]...]`.
    fn backup(&self, suffix: String, reply: Reply) {
        let st = self.lock();
        let servers: Vec<Arc<Peer>> = st.servers.values().cloned().collect();
        drop(st);
        if servers.is_empty() {
            return reply.ok(Value::Array(Vec::new()));
        }
        let results = Arc::new(Mutex::new((Vec::new(), servers.len(), Some(reply))));
        for p in servers {
            let results = results.clone();
            let addr = p.addr();
            p.call(
                msg::CREATE_BACKUP,
                &[Value::from(suffix.as_str())],
                BACKUP_TIMEOUT,
                Box::new(move |r| {
                    let mut g = results.lock().unwrap_or_else(|p| p.into_inner());
                    let outcome = match r {
                        Ok(v) => v,
                        Err(e) => {
                            Value::Map(vec![(Value::from("error"), Value::from(e.to_string()))])
                        }
                    };
                    g.0.push(Value::Array(vec![Value::from(addr.to_string()), outcome]));
                    g.1 -= 1;
                    if g.1 == 0 {
                        let list = std::mem::take(&mut g.0);
                        if let Some(reply) = g.2.take() {
                            reply.ok(Value::Array(list));
                        }
                    }
                }),
            );
        }
    }
}

/// kumo-manager's own settings, typed (the shared groups are the daemon layer's).
pub struct Config {
    pub listen: SocketAddr,
    pub partner: Option<SocketAddr>,
    pub control: Option<SocketAddr>,
    pub auto_replace: bool,
    pub replace_delay: Duration,
}

impl Config {
    pub fn from_args(args: &Args) -> Config {
        Config {
            listen: args.addr("listen"),
            partner: args.opt_addr("partner"),
            control: args.opt_addr("control"),
            auto_replace: args.switch("auto-replace"),
            replace_delay: args.seconds("replace-delay"),
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
    if let Err(e) = daemon::open_binary_log(&args, "manager") {
        return daemon::fatal(program, e);
    }
    let listen = config.listen;
    let bind = |addr: SocketAddr| {
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let listener = match bind(listen) {
        Ok(l) => l,
        Err(e) => return daemon::fatal(program, e),
    };
    let control = match config.control.map(bind).transpose() {
        Ok(c) => c,
        Err(e) => return daemon::fatal(program, e),
    };
    let metrics = match args.opt_addr("metrics").map(net::metrics::bind).transpose() {
        Ok(m) => m,
        Err(e) => return daemon::fatal(program, e),
    };
    let partner = config.partner;
    if partner == Some(listen) {
        return daemon::fatal(
            program,
            "-p names this manager itself; it must name the other one",
        );
    }
    if let Err(e) = daemon::daemonize_if_asked(&args) {
        return daemon::fatal(program, e);
    }
    let net = match net::Net::start(daemon::net_config(&args)) {
        Ok(n) => n,
        Err(e) => return daemon::fatal(program, format!("cannot start the network layer: {e}")),
    };
    let net_config = net.config();
    let learn = net_config.keepalive + LEARN_MARGIN;
    let manager = Arc::new(Manager {
        me: listen,
        started: Instant::now(),
        learn_until: Mutex::new(Some(Instant::now() + learn)),
        net: net.clone(),
        clock: Clock::default(),
        partner: Mutex::new(None),
        replace_delay: config.replace_delay,
        state: Mutex::new(State {
            members: Membership::default(),
            servers: HashMap::new(),
            streams: HashMap::new(),
            incarnations: HashMap::new(),
            replace: Replacer::default(),
            watchers: Vec::new(),
            auto_replace: config.auto_replace,
            auto_token: 0,
            full: BTreeSet::new(),
            flush: 0,
            broken: BrokenLinks::default(),
            decision_due: false,
        }),
    });
    if let Some(p) = partner {
        // The partner link's keepalive carries our tables, so the two managers
        // converge even when a push is lost.
        let weak = Arc::downgrade(&manager);
        let peer = Peer::with_keepalive(
            &net,
            p,
            Box::new(move || {
                let Some(m) = weak.upgrade() else {
                    return (msg::KEEP_ALIVE.to_string(), vec![Value::from(0)]);
                };
                let st = m.lock();
                let t = &st.members.tables;
                (
                    msg::HASH_SPACE_SYNC.to_string(),
                    vec![
                        Value::from(m.clock.tick()),
                        t.whs.to_value(),
                        t.rhs.to_value(),
                    ],
                )
            }),
            Box::new(|a| log::warn!("partner manager {a} lost")),
        );
        *manager.partner.lock().unwrap_or_else(|p| p.into_inner()) = Some(peer);
    }
    let service: Arc<dyn Service> = Arc::new(ManagerService(manager.clone()));
    for (l, what) in std::iter::once((listener, "cluster")).chain(control.map(|c| (c, "control"))) {
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        if let Err(e) = net.listen(l, RpcSession::factory(service.clone())) {
            return daemon::fatal(program, format!("cannot serve {addr}: {e}"));
        }
        log::info!("listening on {addr} ({what})");
    }
    let weak = Arc::downgrade(&manager);
    let _expiry = net.timers().add(Arc::new(move |now| {
        if let Some(m) = weak.upgrade() {
            m.expire_watchers(now);
            m.tick_replace();
        }
    }));
    let weak = Arc::downgrade(&manager);
    let _supervisor = net.timers().every(SUPERVISE_EVERY, move |_| {
        if let Some(m) = weak.upgrade() {
            m.supervise();
        }
    });
    if let Some(l) = metrics {
        let m = manager.clone();
        match net::metrics::serve(&net, l, Arc::new(move || metrics::page(&m))) {
            Ok(a) => log::info!("metrics on http://{a}/metrics"),
            Err(e) => return daemon::fatal(program, e),
        }
    }
    log::info!("manager {} started", manager.me);
    daemon::event(
        log::Level::Info,
        "start",
        &[
            ("version", Value::from(crate::cli::VERSION)),
            ("pid", Value::from(std::process::id())),
            ("listen", Value::from(manager.me.to_string())),
        ],
    );
    let sig = daemon::wait_for_stop();
    log::info!("{sig} received; stopping");
    daemon::event(log::Level::Info, "stop", &[("signal", Value::from(sig))]);
    crate::cli::EXIT_OK
}
