//! The calling side of msgpack-rpc: a [`Peer`] is one remote node. It connects on
//! demand, matches responses to calls by msgid, times calls out, reconnects, sends
//! keepalives, and after `-Yn` failed reconnects declares the node lost, failing
//! every pending call with [`RpcError::NodeLost`].
//!
//! The files: this one holds the peer and its calls, `link` its connection,
//! `tick` its time, and `blocking` a synchronous client for tools and tests.
//!
//! A TCP connection behind a cut link or to a stopped process stays open for
//! minutes while nothing comes back, so a peer does not wait for TCP to tell:
//!
//! - **Heartbeats.** While calls are outstanding and nothing has been heard for
//!   [`LINK_PROBE_AFTER`], the peer sends a `KeepAlive` probe (any node answers it).
//!   After [`super::LINK_SILENCE_MAX`] of silence with calls outstanding the link is dead:
//!   it is aborted (RST, its unsent bytes dropped), its calls fail with
//!   [`RpcError::Disconnected`], and the role hears of it ([`LinkNews::Down`]). A
//!   connect that fails (refused, or timed out) fails the calls waiting for it at
//!   once with [`RpcError::Unreachable`], and the role hears of it too. The first
//!   response after that is [`LinkNews::Back`]: a role that reported the node
//!   unreachable says it is not any more.
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

mod blocking;
mod link;
mod tick;

pub use blocking::BlockingClient;

use super::chain::{Chain, Shared};
use super::conn::Writer;
use super::timer::TimerId;
use super::{Net, LINK_PROBE_AFTER, RECONNECT_DELAY_MS, TICK_MS};
use crate::proto::rpc;
use rmpv::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Room for a request's head (method, key and small params) so that encoding it
/// takes one allocation rather than a growth per field.
const REQUEST_HEAD_CAPACITY: usize = 128;
/// A gap between two ticks longer than this means the process did not run.
const TICK_STALL: Duration = Duration::from_millis(8 * TICK_MS);

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

/// A call that may be asked of another node too: `on_slow` runs if nothing of its
/// answer has come `after` it was made, `on_arrival` once its answer starts to come
/// (a large one arrives in pieces), and then `on_slow` no longer runs.
pub struct Hedge {
    pub after: Duration,
    pub on_slow: SlowFn,
    pub on_arrival: SlowFn,
}

/// A call's params, as its caller has them.
enum Params<'a> {
    Values(&'a [Value]),
    /// Written by the caller into the frame, then the bytes of the last item,
    /// if any, sent from where they are.
    Written {
        write: &'a dyn Fn(&mut Vec<u8>),
        tail: Option<&'a Shared>,
    },
    /// The params array, encoded.
    Encoded(&'a Shared),
}

/// What a call carries besides its callback.
#[derive(Default)]
struct Extra {
    slow: Option<(Instant, SlowFn)>,
    arrival: Option<SlowFn>,
    /// A heartbeat probe: one at a time per link.
    probe: bool,
}
/// What a watched peer tells its role about its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkNews {
    /// A link was found dead, or a connect failed.
    Down,
    /// A response came after `Down`: the node is reachable again.
    Back,
}
/// Hears the [`LinkNews`] of the link to this address.
pub type WatchFn = Box<dyn Fn(SocketAddr, LinkNews) + Send + Sync>;

struct Pending {
    deadline: Instant,
    callback: Callback,
    /// The connection generation the request went out on; 0 while it is queued.
    sent_on: u64,
    /// A soft deadline and what to run when it passes unanswered.
    slow: Option<(Instant, SlowFn)>,
    /// What to run when the answer starts to arrive.
    arrival: Option<SlowFn>,
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
    pending: HashMap<u32, Pending, crate::keyhash::BuildPrehashed>,
    /// Frames written while no connection was up, sent once one is, each with the
    /// msgid of its call (None for a notification).
    queued: Vec<(Option<u32>, Chain)>,
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
    watch: Option<WatchFn>,
    timer: Mutex<Option<TimerId>>,
}

impl Peer {
    /// A peer that only connects when called.
    pub fn new(net: &Net, addr: SocketAddr) -> Arc<Peer> {
        Self::build(net, addr, None, None, None)
    }

    /// A peer that connects when called and tells `watch` whenever a link to the
    /// node is found dead or a connect fails, and when it answers again after
    /// that: the role reports the nodes it cannot reach.
    pub fn watched(net: &Net, addr: SocketAddr, watch: WatchFn) -> Arc<Peer> {
        Self::build(net, addr, None, None, Some(watch))
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
        watch: Option<WatchFn>,
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
                pending: HashMap::default(),
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
            watch,
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

    /// Connected, and not suspect (`--metrics`' `kumo_peer_link_up`).
    pub fn is_up(&self) -> bool {
        self.is_connected() && !self.is_suspect()
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
        self.call_full(
            method,
            Params::Values(params),
            timeout,
            Extra::default(),
            callback,
        );
    }

    /// Like [`Peer::call`], with params already encoded: `params` holds one
    /// msgpack array, sent from where it is when it is large (see `net::chain`).
    pub fn call_encoded(
        self: &Arc<Self>,
        method: &str,
        params: &Shared,
        timeout: Duration,
        callback: Callback,
    ) {
        self.call_full(
            method,
            Params::Encoded(params),
            timeout,
            Extra::default(),
            callback,
        );
    }

    /// Like [`Peer::call`], with a [`Hedge`]. Returns the call's msgid, for
    /// [`Peer::forget`].
    pub fn call_hedged(
        self: &Arc<Self>,
        method: &str,
        params: &dyn Fn(&mut Vec<u8>),
        timeout: Duration,
        hedge: Hedge,
        callback: Callback,
    ) -> u32 {
        let slow = Some((crate::net::now() + hedge.after, hedge.on_slow));
        let extra = Extra {
            slow,
            arrival: Some(hedge.on_arrival),
            probe: false,
        };
        let params = Params::Written {
            write: params,
            tail: None,
        };
        self.call_full(method, params, timeout, extra, callback)
    }

    /// Drops call `msgid`: its callback is never run, and its answer, if it comes,
    /// is not kept (a hedged read answered by another server).
    pub fn forget(&self, msgid: u32) {
        let mut st = self.lock();
        st.pending.remove(&msgid);
        st.queued.retain(|(id, _)| *id != Some(msgid));
    }

    /// Like [`Peer::call`], with the params written by `params` (the array's
    /// header and all its items, the last one up to its length), and then `tail`,
    /// the last item's bytes, sent from where they are, never copied into the
    /// frame (see `net::chain`).
    pub fn call_with_tail(
        self: &Arc<Self>,
        method: &str,
        params: &dyn Fn(&mut Vec<u8>),
        tail: &Shared,
        timeout: Duration,
        callback: Callback,
    ) {
        self.call_full(
            method,
            Params::Written {
                write: params,
                tail: Some(tail),
            },
            timeout,
            Extra::default(),
            callback,
        );
    }

    fn call_full(
        self: &Arc<Self>,
        method: &str,
        params: Params,
        timeout: Duration,
        extra: Extra,
        callback: Callback,
    ) -> u32 {
        let mut head = Vec::with_capacity(REQUEST_HEAD_CAPACITY);
        let mut st = self.lock();
        // After a wrap, skip ids still waiting so no callback is overwritten.
        let mut msgid = st.next_msgid;
        while st.pending.contains_key(&msgid) {
            msgid = msgid.wrapping_add(1).max(1);
        }
        st.next_msgid = msgid.wrapping_add(1).max(1);
        let frame = match params {
            Params::Values(params) => {
                rpc::encode_request(&mut head, msgid, method, params);
                Chain::from(head)
            }
            Params::Written { write, tail } => {
                rpc::encode_request_head(&mut head, msgid, method);
                write(&mut head);
                let mut frame = Chain::from(head);
                if let Some(t) = tail {
                    frame.shared(t);
                }
                frame
            }
            Params::Encoded(params) => {
                rpc::encode_request_head(&mut head, msgid, method);
                let mut frame = Chain::from(head);
                frame.shared(params);
                frame
            }
        };
        if st.pending.is_empty() {
            st.last_heard = st.last_heard.max(crate::net::now());
        }
        st.pending.insert(
            msgid,
            Pending {
                deadline: crate::net::now() + timeout,
                callback,
                sent_on: 0,
                slow: extra.slow,
                arrival: extra.arrival,
                probe: extra.probe,
            },
        );
        if let Some(generation) = self.transmit(&mut st, Some(msgid), frame) {
            if let Some(p) = st.pending.get_mut(&msgid) {
                p.sent_on = generation;
            }
        }
        msgid
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
        self.transmit(&mut st, None, Chain::from(frame));
    }

    /// Sends `frame` now if a connection is up (returning its generation), or queues it.
    fn transmit(self: &Arc<Self>, st: &mut State, msgid: Option<u32>, frame: Chain) -> Option<u64> {
        st.last_sent = crate::net::now();
        match &st.link {
            Link::Up { writer, generation } => {
                match writer.send_chain(frame) {
                    Ok(()) => return Some(*generation),
                    // The connection died under us; on_close will follow and
                    // reconnect.
                    Err(frame) => st.queued.push((msgid, frame)),
                }
            }
            Link::Idle => {
                st.queued.push((msgid, frame));
                self.start_connect(st);
            }
            Link::Backoff { .. } | Link::Connecting { .. } => st.queued.push((msgid, frame)),
        }
        None
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
