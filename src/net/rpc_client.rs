//! The calling side of msgpack-rpc: a [`Peer`] is one remote node. It connects on
//! demand, matches responses to calls by msgid, times calls out, reconnects, sends
//! keepalives, and after `-Yn` failed reconnects declares the node lost, failing
//! every pending call with [`RpcError::NodeLost`].
//!
//! A TCP connection behind a cut link or to a stopped process stays open for
//! minutes while nothing comes back, so a peer does not wait for TCP to tell:
//!
//! - **Heartbeats.** While calls are outstanding and nothing has been heard for
//!   [`LINK_PROBE_AFTER`], the peer sends a `KeepAlive` probe (any node answers it).
//!   After [`LINK_SILENCE_MAX`] of silence with calls outstanding the link is dead:
//!   it is aborted (RST, its unsent bytes dropped), its calls fail with
//!   [`RpcError::Disconnected`], and the role hears of it (`on_down`). A connect
//!   that fails (refused, or timed out) fails the calls waiting for it at once
//!   with [`RpcError::Unreachable`], and the role hears of it too.
//! - **Suspicion.** A peer silent for [`LINK_PROBE_AFTER`] with calls outstanding, or
//!   whose last connect failed, is [`Peer::is_suspect`]: callers with a choice of
//!   nodes go elsewhere at once instead of waiting for the verdict.
//! - **No late deliveries.** A call that timed out is forgotten together with its
//!   frame if the frame still waits for a connection: a write queued behind a cut
//!   link must not be delivered when the link heals, long after its caller was told
//!   it failed and may have written the key again.
//! - **Soft deadlines.** A call may ask to hear (`on_slow`) when it has waited a
//!   given time without an answer, so a reader can ask another replica (hedging)
//!   while the first request stays valid.

use super::conn::{Session, Writer};
use super::timer::TimerId;
use super::{Net, LINK_PROBE_AFTER, LINK_SILENCE_MAX, RECONNECT_DELAY_MS, TICK_MS};

/// A gap between two ticks longer than this means the process did not run.
const TICK_STALL: Duration = Duration::from_millis(8 * TICK_MS);
use crate::proto::rpc::{self, Decoded, Message};
use rmpv::Value;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Why a call did not get a result.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcError {
    /// No response within the call's timeout.
    Timeout,
    /// The node could not be reached within the reconnect budget.
    NodeLost,
    /// A connect to the node failed; the call was never sent.
    Unreachable,
    /// The connection the call was sent on closed before the response came; the
    /// call may or may not have run.
    Disconnected,
    /// The remote handler answered with this error value.
    Remote(Value),
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::Timeout => write!(f, "timeout"),
            RpcError::NodeLost => write!(f, "node lost"),
            RpcError::Unreachable => write!(f, "cannot connect"),
            RpcError::Disconnected => write!(f, "connection lost"),
            RpcError::Remote(Value::String(s)) => {
                write!(f, "{}", s.as_str().unwrap_or("(non-UTF-8 error)"))
            }
            RpcError::Remote(v) => write!(f, "{v}"),
        }
    }
}

pub type CallResult = Result<Value, RpcError>;
/// Runs once with the outcome of a call, on a worker or the timer thread; it must
/// not block.
pub type Callback = Box<dyn FnOnce(CallResult) + Send>;

/// The parameters of the keepalive call a peer sends on an idle link.
pub type KeepaliveFn = Box<dyn Fn() -> (String, Vec<Value>) + Send + Sync>;
/// Runs when a call has waited its soft deadline without an answer.
pub type SlowFn = Box<dyn FnOnce() + Send>;
/// Hears that a link to this address was found dead or could not be made.
pub type DownFn = Box<dyn Fn(SocketAddr) + Send + Sync>;

struct Pending {
    deadline: Instant,
    callback: Callback,
    /// The connection generation the request went out on; 0 while it is queued.
    sent_on: u64,
    /// A soft deadline and what to run when it passes unanswered.
    slow: Option<(Instant, SlowFn)>,
    /// A heartbeat probe: one at a time per link.
    probe: bool,
}

enum Link {
    /// No connection and none wanted until a call arrives.
    Idle,
    /// Waiting before the next attempt.
    Backoff { until: Instant },
    Connecting {
        writer: Arc<Writer>,
        since: Instant,
        generation: u64,
    },
    Up {
        writer: Arc<Writer>,
        generation: u64,
    },
}

struct State {
    link: Link,
    generation: u64,
    next_msgid: u32,
    pending: HashMap<u32, Pending>,
    /// Frames written while no connection was up, sent once one is, each with the
    /// msgid of its call (None for a notification).
    queued: Vec<(Option<u32>, Vec<u8>)>,
    /// Connect attempts that failed in a row.
    failures: u32,
    last_sent: Instant,
    /// Since when the link has owed an answer and given none: the later of its last
    /// response (or coming up) and the moment a call was made on an idle link. An
    /// idle link is not silent; measuring from its last response would call it
    /// dead on its first call after a quiet spell.
    last_heard: Instant,
    /// When a link was last found dead or a connect failed, until a response.
    down_at: Option<Instant>,
    /// When the timer last ran this peer's tick.
    last_tick: Instant,
    keepalive_outstanding: bool,
}

impl State {
    /// Counts a failed attempt; past the budget the node is lost.
    fn attempt_failed(&mut self) {
        self.failures += 1;
        self.link = Link::Backoff {
            until: Instant::now() + Duration::from_millis(RECONNECT_DELAY_MS),
        };
    }

    /// A connect failed: the calls waiting for it fail at once rather than at
    /// their timeout, since the caller may have elsewhere to go (the next replica,
    /// the next owner once the tables change). They were never sent.
    fn take_unsent(&mut self) -> Vec<Callback> {
        self.queued.clear();
        let ids: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.sent_on == 0)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .map(|p| p.callback)
            .collect()
    }

    /// Whether a call (a probe included) waits for an answer. O(1): it is asked
    /// on every read that picks among a key's owners.
    fn busy(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// One remote node. Create it with [`Peer::new`]; it lives as long as its Arc.
pub struct Peer {
    addr: SocketAddr,
    net: Net,
    state: Mutex<State>,
    keepalive: Option<KeepaliveFn>,
    on_lost: Option<Box<dyn Fn(SocketAddr) + Send + Sync>>,
    on_down: Option<DownFn>,
    timer: Mutex<Option<TimerId>>,
}

impl Peer {
    /// A peer that only connects when called.
    pub fn new(net: &Net, addr: SocketAddr) -> Arc<Peer> {
        Self::build(net, addr, None, None, None)
    }

    /// A peer that connects when called and runs `on_down` whenever a link to the
    /// node is found dead or a connect fails: the role reports such nodes.
    pub fn watched(net: &Net, addr: SocketAddr, on_down: DownFn) -> Arc<Peer> {
        Self::build(net, addr, None, None, Some(on_down))
    }

    /// A peer that stays connected, calls `keepalive()`'s method every `-Ci` while
    /// idle, and runs `on_lost` when the reconnect budget is spent.
    pub fn with_keepalive(
        net: &Net,
        addr: SocketAddr,
        keepalive: KeepaliveFn,
        on_lost: Box<dyn Fn(SocketAddr) + Send + Sync>,
    ) -> Arc<Peer> {
        Self::build(net, addr, Some(keepalive), Some(on_lost), None)
    }

    fn build(
        net: &Net,
        addr: SocketAddr,
        keepalive: Option<KeepaliveFn>,
        on_lost: Option<Box<dyn Fn(SocketAddr) + Send + Sync>>,
        on_down: Option<DownFn>,
    ) -> Arc<Peer> {
        let now = Instant::now();
        let peer = Arc::new(Peer {
            addr,
            net: net.clone(),
            state: Mutex::new(State {
                link: if keepalive.is_some() {
                    Link::Backoff { until: now }
                } else {
                    Link::Idle
                },
                generation: 0,
                next_msgid: 1,
                pending: HashMap::new(),
                queued: Vec::new(),
                failures: 0,
                last_sent: now,
                last_heard: now,
                down_at: None,
                last_tick: now,
                keepalive_outstanding: false,
            }),
            keepalive,
            on_lost,
            on_down,
            timer: Mutex::new(None),
        });
        let weak = Arc::downgrade(&peer);
        match net.timers().add(Arc::new(move |now| {
            if let Some(p) = weak.upgrade() {
                p.tick(now)
            }
        })) {
            Ok(id) => *peer.timer.lock().unwrap_or_else(|p| p.into_inner()) = Some(id),
            Err(e) => log::error!("{addr}: {e}; calls to this peer will not time out"),
        }
        peer
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while a connection is established.
    pub fn is_connected(&self) -> bool {
        matches!(self.lock().link, Link::Up { .. })
    }

    /// True after a connect attempt failed or a link was found dead, and before a
    /// response arrives again.
    pub fn is_failing(&self) -> bool {
        self.lock().failures > 0
    }

    /// A link to the node was found dead, or a connect failed, within `recently`,
    /// and no response has come since.
    pub fn was_down_within(&self, recently: Duration) -> bool {
        self.lock().down_at.is_some_and(|t| t.elapsed() < recently)
    }

    /// Failing, or silent for LINK_PROBE_AFTER while calls wait: callers with a
    /// choice of nodes should prefer another.
    pub fn is_suspect(&self) -> bool {
        let st = self.lock();
        st.failures > 0
            || (matches!(st.link, Link::Up { .. })
                && st.busy()
                && st.last_heard.elapsed() >= LINK_PROBE_AFTER)
    }

    /// Calls `method` and runs `callback` with the outcome within `timeout`.
    pub fn call(
        self: &Arc<Self>,
        method: &str,
        params: &[Value],
        timeout: Duration,
        callback: Callback,
    ) {
        self.call_full(method, params, timeout, None, false, callback)
    }

    /// Like [`Peer::call`], and runs `on_slow` once if no answer has come after
    /// `soft` (while the call itself goes on).
    pub fn call_hedged(
        self: &Arc<Self>,
        method: &str,
        params: &[Value],
        timeout: Duration,
        soft: Duration,
        on_slow: SlowFn,
        callback: Callback,
    ) {
        let slow = Some((Instant::now() + soft, on_slow));
        self.call_full(method, params, timeout, slow, false, callback)
    }

    fn call_full(
        self: &Arc<Self>,
        method: &str,
        params: &[Value],
        timeout: Duration,
        slow: Option<(Instant, SlowFn)>,
        probe: bool,
        callback: Callback,
    ) {
        let mut frame = Vec::new();
        let mut st = self.lock();
        // After a wrap, skip ids still waiting so no callback is overwritten.
        let mut msgid = st.next_msgid;
        while st.pending.contains_key(&msgid) {
            msgid = msgid.wrapping_add(1).max(1);
        }
        st.next_msgid = msgid.wrapping_add(1).max(1);
        rpc::encode_request(&mut frame, msgid, method, params);
        if st.pending.is_empty() {
            st.last_heard = st.last_heard.max(Instant::now());
        }
        st.pending.insert(
            msgid,
            Pending {
                deadline: Instant::now() + timeout,
                callback,
                sent_on: 0,
                slow,
                probe,
            },
        );
        if let Some(generation) = self.transmit(&mut st, Some(msgid), frame) {
            if let Some(p) = st.pending.get_mut(&msgid) {
                p.sent_on = generation;
            }
        }
    }

    /// Calls and waits. Never use it on a worker or the timer thread: the response
    /// would be delivered by the thread that is waiting.
    pub fn call_wait(
        self: &Arc<Self>,
        method: &str,
        params: &[Value],
        timeout: Duration,
    ) -> CallResult {
        let (tx, rx) = std::sync::mpsc::channel();
        self.call(method, params, timeout, Box::new(move |r| drop(tx.send(r))));
        rx.recv().unwrap_or(Err(RpcError::Timeout))
    }

    /// Sends a notification; it is dropped if the node is unreachable.
    pub fn notify(self: &Arc<Self>, method: &str, params: &[Value]) {
        let mut frame = Vec::new();
        rpc::encode_notify(&mut frame, method, params);
        let mut st = self.lock();
        self.transmit(&mut st, None, frame);
    }

    /// Sends `frame` now if a connection is up (returning its generation), or queues it.
    fn transmit(
        self: &Arc<Self>,
        st: &mut State,
        msgid: Option<u32>,
        frame: Vec<u8>,
    ) -> Option<u64> {
        st.last_sent = Instant::now();
        match &st.link {
            Link::Up { writer, generation } => {
                if writer.send(&frame) {
                    return Some(*generation);
                }
                // The connection died under us; on_close will follow and reconnect.
                st.queued.push((msgid, frame));
            }
            Link::Idle => {
                st.queued.push((msgid, frame));
                self.start_connect(st);
            }
            Link::Backoff { .. } | Link::Connecting { .. } => st.queued.push((msgid, frame)),
        }
        None
    }

    fn start_connect(self: &Arc<Self>, st: &mut State) {
        st.generation += 1;
        let generation = st.generation;
        let session = Box::new(ClientSession {
            peer: Arc::downgrade(self),
            generation,
        });
        match self.net.connect(self.addr, session) {
            Ok(writer) => {
                st.link = Link::Connecting {
                    writer,
                    since: Instant::now(),
                    generation,
                }
            }
            Err(e) => {
                log::debug!("{}: connect failed at once: {e}", self.addr);
                st.attempt_failed();
            }
        }
    }

    fn on_connected(self: &Arc<Self>, generation: u64, ok: bool) {
        let mut st = self.lock();
        let Link::Connecting {
            writer,
            generation: g,
            ..
        } = &st.link
        else {
            return;
        };
        if *g != generation {
            return;
        }
        if !ok {
            st.attempt_failed();
            let unsent = st.take_unsent();
            drop(st);
            for cb in unsent {
                cb(Err(RpcError::Unreachable));
            }
            self.down();
            return;
        }
        let writer = writer.clone();
        // `failures` is cleared by the first response, not here: a stopped process
        // still completes handshakes (the kernel does), and must still be lost.
        log::debug!("{}: connected", self.addr);
        let queued = std::mem::take(&mut st.queued);
        st.link = Link::Up {
            writer: writer.clone(),
            generation,
        };
        st.last_heard = Instant::now();
        // The cluster key goes first; its answer (msgid 0) is not waited for.
        if let Some(hello) = super::auth::opening_frame() {
            writer.send(&hello);
        }
        // Only frames whose call still waits: the rest were already answered as
        // timed out (see the module documentation).
        let live: Vec<u8> = queued
            .into_iter()
            .filter(|(id, _)| id.is_none_or(|id| st.pending.contains_key(&id)))
            .flat_map(|(_, f)| f)
            .collect();
        if !live.is_empty() {
            writer.send(&live);
        }
        for p in st.pending.values_mut().filter(|p| p.sent_on == 0) {
            p.sent_on = generation;
        }
    }

    fn on_closed(self: &Arc<Self>, generation: u64) {
        let orphans = self.close_link(generation);
        for cb in orphans {
            cb(Err(RpcError::Disconnected));
        }
    }

    /// Tells the role that the node cannot be reached now.
    fn down(&self) {
        self.lock().down_at = Some(Instant::now());
        if let Some(f) = &self.on_down {
            f(self.addr);
        }
    }

    /// Handles the end of connection `generation`; returns the calls sent on it,
    /// which can no longer be answered.
    fn close_link(self: &Arc<Self>, generation: u64) -> Vec<Callback> {
        let mut st = self.lock();
        Self::close_link_locked(&self.addr, &mut st, generation)
    }

    fn close_link_locked(addr: &SocketAddr, st: &mut State, generation: u64) -> Vec<Callback> {
        let current = match &st.link {
            Link::Up { generation: g, .. } | Link::Connecting { generation: g, .. } => {
                *g == generation
            }
            _ => false,
        };
        if !current {
            return Vec::new();
        }
        let was_up = matches!(st.link, Link::Up { .. });
        if was_up {
            log::debug!("{addr}: connection closed; reconnecting");
            st.link = Link::Backoff {
                until: Instant::now(),
            };
        } else {
            st.attempt_failed();
        }
        // Calls already sent on the dead connection cannot be answered on a new one.
        let orphaned: Vec<u32> = st
            .pending
            .iter()
            .filter(|(_, p)| p.sent_on == generation)
            .map(|(id, _)| *id)
            .collect();
        orphaned
            .into_iter()
            .filter_map(|id| st.pending.remove(&id))
            .map(|p| p.callback)
            .collect()
    }

    fn on_response(&self, msgid: u32, error: Value, result: Value) {
        let pending = {
            let mut st = self.lock();
            st.failures = 0;
            st.last_heard = Instant::now();
            st.down_at = None;
            st.pending.remove(&msgid)
        };
        match pending {
            Some(p) => (p.callback)(if error.is_nil() {
                Ok(result)
            } else {
                Err(RpcError::Remote(error))
            }),
            None => log::debug!(
                "{}: response to unknown or expired msgid {msgid}",
                self.addr
            ),
        }
    }

    /// Drives timeouts, heartbeats, reconnects and keepalives; called by the timer
    /// thread.
    fn tick(self: &Arc<Self>, now: Instant) {
        let mut expired = Vec::new();
        let mut slow = Vec::new();
        let mut orphans = Vec::new();
        let mut unsent = Vec::new();
        let mut lost = false;
        let mut down = false;
        let mut probe = false;
        let mut keepalive = None;
        {
            let mut st = self.lock();
            let ids: Vec<u32> = st
                .pending
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                if let Some(p) = st.pending.remove(&id) {
                    expired.push(p.callback);
                }
            }
            if !expired.is_empty() {
                // Their frames, if still queued, are never sent (no late deliveries).
                let st = &mut *st;
                let pending = &st.pending;
                st.queued
                    .retain(|(id, _)| id.is_none_or(|id| pending.contains_key(&id)));
            }
            for p in st.pending.values_mut() {
                if p.slow.as_ref().is_some_and(|(at, _)| *at <= now) {
                    slow.extend(p.slow.take().map(|(_, f)| f));
                }
            }
            // Time this process did not run (a loaded machine, a stopped process)
            // is not the peer's silence: the answer may be waiting in our socket.
            let gap = now.saturating_duration_since(st.last_tick);
            st.last_tick = now;
            if gap > TICK_STALL {
                st.last_heard += gap;
            }
            let config = self.net.config().clone();
            let busy = st.busy();
            let mut dead = None;
            match &st.link {
                Link::Connecting { writer, since, .. }
                    if now.duration_since(*since) >= config.connect_timeout =>
                {
                    log::debug!("{}: connect timed out", self.addr);
                    writer.close();
                    st.attempt_failed();
                    unsent = st.take_unsent();
                    down = true;
                }
                Link::Up { writer, generation } if busy => {
                    let silent = now.duration_since(st.last_heard);
                    if silent >= LINK_SILENCE_MAX {
                        log::warn!(
                            "{}: nothing heard for {} ms with calls waiting; the link is dead",
                            self.addr,
                            silent.as_millis()
                        );
                        writer.abort();
                        dead = Some(*generation);
                    } else if silent >= LINK_PROBE_AFTER && !st.pending.values().any(|p| p.probe) {
                        probe = true;
                    }
                }
                _ => {}
            }
            if let Some(generation) = dead {
                // As if the worker had seen the close: the calls sent on the link
                // fail now, the silence counts as a failed attempt, and the link is
                // made again after the usual pause.
                orphans = Self::close_link_locked(&self.addr, &mut st, generation);
                st.attempt_failed();
                down = true;
            }
            if st.failures > config.retry_limit {
                lost = true;
                st.failures = 0;
                st.queued.clear();
                st.link = if self.keepalive.is_some() {
                    Link::Backoff {
                        until: now + config.keepalive,
                    }
                } else {
                    Link::Idle
                };
                expired.extend(st.pending.drain().map(|(_, p)| p.callback));
            }
            let wanted =
                self.keepalive.is_some() || !st.pending.is_empty() || !st.queued.is_empty();
            if let Link::Backoff { until } = st.link {
                if now >= until && wanted {
                    self.start_connect(&mut st);
                } else if !wanted {
                    st.link = Link::Idle;
                }
            }
            if let (Some(_), Link::Up { .. }) = (&self.keepalive, &st.link) {
                if now.duration_since(st.last_sent) >= config.keepalive && !st.keepalive_outstanding
                {
                    st.keepalive_outstanding = true;
                    keepalive = Some(config.connect_timeout.max(config.keepalive));
                }
            }
        }
        for f in slow {
            f();
        }
        for cb in orphans {
            cb(Err(RpcError::Disconnected));
        }
        for cb in unsent {
            cb(Err(RpcError::Unreachable));
        }
        if probe {
            // Any node answers a bare KeepAlive; the answer is all a probe wants.
            self.call_full(
                crate::proto::cluster::KEEP_ALIVE,
                &[],
                LINK_SILENCE_MAX,
                None,
                true,
                Box::new(|_| {}),
            );
        }
        // The keepalive's parameters come from the role, which may take its own
        // locks (a manager's tables): never under this peer's lock, which the role
        // takes while holding them.
        let keepalive = match (keepalive, &self.keepalive) {
            (Some(timeout), Some(ka)) => Some((ka(), timeout)),
            _ => None,
        };
        if let Some(((method, params), timeout)) = keepalive {
            let me = Arc::downgrade(self);
            self.call(
                &method,
                &params,
                timeout,
                Box::new(move |r| {
                    let Some(p) = me.upgrade() else { return };
                    let mut st = p.lock();
                    st.keepalive_outstanding = false;
                    if r == Err(RpcError::Timeout) {
                        // A silent peer: drop the link so reconnects decide whether it
                        // is lost; the silence counts as a failed attempt.
                        log::debug!("{}: keepalive timed out", p.addr);
                        st.failures += 1;
                        if let Link::Up { writer, .. } = &st.link {
                            writer.abort();
                        }
                    }
                }),
            );
        }
        let error = if lost {
            RpcError::NodeLost
        } else {
            RpcError::Timeout
        };
        if lost {
            log::warn!(
                "{}: node lost after {} failed reconnects",
                self.addr,
                self.net.config().retry_limit + 1
            );
        }
        for cb in expired {
            cb(Err(error.clone()));
        }
        if down {
            self.down();
        }
        if lost {
            if let Some(f) = &self.on_lost {
                f(self.addr);
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Link::Up { writer, .. } | Link::Connecting { writer, .. } = &st.link {
            writer.close();
        }
    }
}

/// The session of a peer's outgoing connection.
struct ClientSession {
    peer: Weak<Peer>,
    generation: u64,
}

impl Session for ClientSession {
    fn on_input(&mut self, input: &[u8], _out: &Arc<Writer>) -> Result<usize, ()> {
        let Some(peer) = self.peer.upgrade() else {
            return Err(());
        };
        let mut used = 0;
        loop {
            match rpc::decode(&input[used..]) {
                Ok(Decoded::Incomplete) => return Ok(used),
                Ok(Decoded::Frame { message, len }) => {
                    used += len;
                    match message {
                        Message::Response {
                            msgid,
                            error,
                            result,
                        } => peer.on_response(msgid, error, result),
                        other => log::debug!("{}: ignored {:?} on a client link", peer.addr, other),
                    }
                }
                Err(e) => {
                    log::warn!("{}: {e}; closing the connection", peer.addr);
                    return Err(());
                }
            }
        }
    }

    fn on_connect(&mut self, result: &io::Result<()>, _out: &Arc<Writer>) {
        if let Some(peer) = self.peer.upgrade() {
            if let Err(e) = result {
                log::debug!("{}: connect failed: {e}", peer.addr);
            }
            peer.on_connected(self.generation, result.is_ok());
        }
    }

    fn on_close(&mut self) {
        if let Some(peer) = self.peer.upgrade() {
            peer.on_closed(self.generation);
        }
    }
}

/// A synchronous client over a plain socket, for the command-line tools and tests:
/// one call at a time, no event loop, no threads.
pub struct BlockingClient {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
    next_msgid: u32,
    timeout: Duration,
}

impl BlockingClient {
    /// Connects within `timeout`, which also bounds every later call.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<BlockingClient> {
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut c = BlockingClient {
            stream,
            buf: Vec::new(),
            next_msgid: 1,
            timeout,
        };
        if let Some(t) = super::auth::token() {
            c.call_with_id(
                super::auth::AUTH_MSGID,
                super::auth::AUTH,
                &[Value::Binary(t.to_vec())],
            )
            .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
        }
        Ok(c)
    }

    /// Calls `method` and waits for its response. Requests that arrive meanwhile
    /// (a manager pushing a hash space) are skipped.
    pub fn call(&mut self, method: &str, params: &[Value]) -> Result<Value, String> {
        let msgid = self.next_msgid;
        self.next_msgid = self.next_msgid.wrapping_add(1).max(1);
        self.call_with_id(msgid, method, params)
    }

    fn call_with_id(
        &mut self,
        msgid: u32,
        method: &str,
        params: &[Value],
    ) -> Result<Value, String> {
        use std::io::{Read, Write};
        let mut frame = Vec::new();
        rpc::encode_request(&mut frame, msgid, method, params);
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("send failed: {e}"))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match rpc::decode(&self.buf).map_err(|e| e.to_string())? {
                Decoded::Frame { message, len } => {
                    self.buf.drain(..len);
                    if let Message::Response {
                        msgid: id,
                        error,
                        result,
                    } = message
                    {
                        if id == msgid {
                            return if error.is_nil() {
                                Ok(result)
                            } else {
                                Err(RpcError::Remote(error).to_string())
                            };
                        }
                    }
                }
                Decoded::Incomplete => {
                    if Instant::now() >= deadline {
                        return Err("timeout".into());
                    }
                    let mut chunk = [0u8; 64 << 10];
                    match self.stream.read(&mut chunk) {
                        Ok(0) => return Err("connection closed by peer".into()),
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            return Err("timeout".into())
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("receive failed: {e}")),
                    }
                }
            }
        }
    }
}
