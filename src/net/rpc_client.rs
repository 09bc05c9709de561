//! The calling side of msgpack-rpc: a [`Peer`] is one remote node. It connects on
//! demand, matches responses to calls by msgid, times calls out, reconnects, sends
//! keepalives, and after `-Yn` failed reconnects declares the node lost, failing
//! every pending call with [`RpcError::NodeLost`].

use super::conn::{Session, Writer};
use super::timer::TimerId;
use super::{Net, RECONNECT_DELAY_MS};
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

struct Pending {
    deadline: Instant,
    callback: Callback,
    /// The connection generation the request went out on; 0 while it is queued.
    sent_on: u64,
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
    /// Frames written while no connection was up, sent once one is.
    queued: Vec<u8>,
    /// Connect attempts that failed in a row.
    failures: u32,
    last_sent: Instant,
    keepalive_outstanding: bool,
}

/// One remote node. Create it with [`Peer::new`]; it lives as long as its Arc.
pub struct Peer {
    addr: SocketAddr,
    net: Net,
    state: Mutex<State>,
    keepalive: Option<KeepaliveFn>,
    on_lost: Option<Box<dyn Fn(SocketAddr) + Send + Sync>>,
    timer: Mutex<Option<TimerId>>,
}

impl Peer {
    /// A peer that only connects when called.
    pub fn new(net: &Net, addr: SocketAddr) -> Arc<Peer> {
        Self::build(net, addr, None, None)
    }

    /// A peer that stays connected, calls `keepalive()`'s method every `-Ci` while
    /// idle, and runs `on_lost` when the reconnect budget is spent.
    pub fn with_keepalive(
        net: &Net,
        addr: SocketAddr,
        keepalive: KeepaliveFn,
        on_lost: Box<dyn Fn(SocketAddr) + Send + Sync>,
    ) -> Arc<Peer> {
        Self::build(net, addr, Some(keepalive), Some(on_lost))
    }

    fn build(
        net: &Net,
        addr: SocketAddr,
        keepalive: Option<KeepaliveFn>,
        on_lost: Option<Box<dyn Fn(SocketAddr) + Send + Sync>>,
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
                keepalive_outstanding: false,
            }),
            keepalive,
            on_lost,
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

    /// True after a connect attempt failed and before one succeeds: callers with a
    /// choice of nodes should prefer another.
    pub fn is_failing(&self) -> bool {
        self.lock().failures > 0
    }

    /// Calls `method` and runs `callback` with the outcome within `timeout`.
    pub fn call(
        self: &Arc<Self>,
        method: &str,
        params: &[Value],
        timeout: Duration,
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
        st.pending.insert(
            msgid,
            Pending {
                deadline: Instant::now() + timeout,
                callback,
                sent_on: 0,
            },
        );
        if let Some(generation) = self.transmit(&mut st, &frame) {
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
        self.transmit(&mut st, &frame);
    }

    /// Sends `frame` now if a connection is up (returning its generation), or queues it.
    fn transmit(self: &Arc<Self>, st: &mut State, frame: &[u8]) -> Option<u64> {
        st.last_sent = Instant::now();
        match &st.link {
            Link::Up { writer, generation } => {
                if writer.send(frame) {
                    return Some(*generation);
                }
                // The connection died under us; on_close will follow and reconnect.
                st.queued.extend_from_slice(frame);
            }
            Link::Idle => {
                st.queued.extend_from_slice(frame);
                self.start_connect(st);
            }
            Link::Backoff { .. } | Link::Connecting { .. } => st.queued.extend_from_slice(frame),
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
                self.attempt_failed(st);
            }
        }
    }

    /// Counts a failed attempt; past the budget the node is lost.
    fn attempt_failed(self: &Arc<Self>, st: &mut State) {
        st.failures += 1;
        st.link = Link::Backoff {
            until: Instant::now() + Duration::from_millis(RECONNECT_DELAY_MS),
        };
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
            self.attempt_failed(&mut st);
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
        // The cluster key goes first; its answer (msgid 0) is not waited for.
        if let Some(hello) = super::auth::opening_frame() {
            writer.send(&hello);
        }
        if !queued.is_empty() {
            writer.send(&queued);
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

    /// Handles the end of connection `generation`; returns the calls sent on it,
    /// which can no longer be answered.
    fn close_link(self: &Arc<Self>, generation: u64) -> Vec<Callback> {
        let mut st = self.lock();
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
            log::debug!("{}: connection closed; reconnecting", self.addr);
            st.link = Link::Backoff {
                until: Instant::now(),
            };
        } else {
            self.attempt_failed(&mut st);
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

    /// Drives timeouts, reconnects and keepalives; called by the timer thread.
    fn tick(self: &Arc<Self>, now: Instant) {
        let mut expired = Vec::new();
        let mut lost = false;
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
            let config = self.net.config().clone();
            match &st.link {
                Link::Connecting { writer, since, .. }
                    if now.duration_since(*since) >= config.connect_timeout =>
                {
                    log::debug!("{}: connect timed out", self.addr);
                    writer.close();
                    self.attempt_failed(&mut st);
                }
                _ => {}
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
                            writer.close();
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
