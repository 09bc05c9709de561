//! The I/O shell: event loops, thread pools, connections, timers and msgpack-rpc.
//!
//! ```text
//!             accept                 Adopt(stream) + Waker
//! listener ─────────► acceptor ─────────────────────────► worker 1..TR   (mio Poll each)
//!                                                          │ read, decode, run handler
//!                                                          ▼
//!                                        Writer::send ── write at once ──► socket
//!                                                          │ socket full
//!                                                          ▼
//!                                                 sender 1..TW  (flush on WRITABLE; conn.rs)
//! ticker: every TICK_MS runs the fixed timer table (call timeouts, reconnects, keepalives)
//! ```
//!
//! Each worker owns its connections and waits on edge-triggered readiness. A reply is
//! written by whichever thread produces it (a handler, or the callback of a call to
//! another node); only output the socket refuses is handed to a sender thread. Roles
//! plug in a [`Session`] per connection and never call `poll` themselves.
//!
//! Lock order: a connection's `Writer` lock is a leaf (nothing is taken while it is
//! held). `rpc_client::Peer` state is released before any callback runs.

pub mod auth;
pub mod chain;
mod conn;
pub mod metrics;
pub mod report;
pub mod rpc_client;
pub mod rpc_server;
mod sender;
pub mod timer;
mod worker;

pub use conn::{Session, Writer};
pub use rpc_client::{Hedge, Peer, RpcError};
pub use rpc_server::{Reply, Service};
pub use worker::now;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Accepted connections one process serves at once. One more is accepted and closed
/// at once, so the client sees a clean close rather than a hanging connect.
pub const CONNECTIONS_MAX: usize = 8192;
/// Depth of each worker's and sender's handoff queue. The acceptor blocks when a
/// worker's queue is full, which pushes back onto the listen backlog.
pub const HANDOFF_QUEUE_DEPTH: usize = 1024;
/// Period of the timer thread. Call timeouts and soft deadlines are accurate to this.
pub const TICK_MS: u64 = 25;
/// Pause between reconnect attempts to a peer that refused or dropped a connection.
pub const RECONNECT_DELAY_MS: u64 = 300;
/// Silence on a link with calls waiting after which a heartbeat probe is sent, and
/// the node is suspect (see `rpc_client`). A healthy node on loopback answers in
/// well under a millisecond; this leaves room for a loaded machine.
pub const LINK_PROBE_AFTER: Duration = Duration::from_millis(250);
/// Silence on a link with calls waiting after which the link is dead. It bounds
/// how long a cut link or a stopped process holds a request, and is the first step
/// of finding a silent node: detection within 3 s needs this plus a report.
pub const LINK_SILENCE_MAX: Duration = Duration::from_millis(1500);

/// Settings of one process's network layer, from the common daemon options.
#[derive(Debug, Clone)]
pub struct Config {
    /// `-TR`: worker threads.
    pub workers: usize,
    /// `-TW`: sender threads.
    pub senders: usize,
    /// `-Ys`: the longest a connect(2) may take.
    pub connect_timeout: Duration,
    /// `-Yn`: failed reconnects before a peer is lost.
    pub retry_limit: u32,
    /// `-Ci`: period of keepalives on idle peer links.
    pub keepalive: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 4,
            senders: 2,
            connect_timeout: Duration::from_secs(3),
            retry_limit: 4,
            keepalive: Duration::from_secs(2),
        }
    }
}

/// Creates one session per accepted connection; receives the peer's address.
pub type SessionFactory = Arc<dyn Fn(SocketAddr) -> Box<dyn Session> + Send + Sync>;

/// A handle on the running network layer. Cloning it is cheap.
#[derive(Clone)]
pub struct Net {
    shared: Arc<Shared>,
}

struct Shared {
    config: Config,
    workers: Vec<worker::Handle>,
    senders: Vec<sender::SenderHandle>,
    next_worker: AtomicUsize,
    next_sender: AtomicUsize,
    /// Accepted connections open now, checked against CONNECTIONS_MAX.
    accepted: Arc<AtomicUsize>,
    timers: timer::Timers,
    stopping: AtomicBool,
}

impl Net {
    /// Starts the worker, sender and timer threads.
    pub fn start(config: Config) -> io::Result<Net> {
        assert!(
            config.workers > 0 && config.senders > 0,
            "thread pools need at least one thread"
        );
        let senders = (0..config.senders)
            .map(sender::spawn_sender)
            .collect::<io::Result<Vec<_>>>()?;
        let workers = (0..config.workers)
            .map(worker::spawn)
            .collect::<io::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            config,
            workers,
            senders,
            next_worker: AtomicUsize::new(0),
            next_sender: AtomicUsize::new(0),
            accepted: Arc::new(AtomicUsize::new(0)),
            timers: timer::Timers::default(),
            stopping: AtomicBool::new(false),
        });
        timer::spawn_ticker(Arc::downgrade(&shared))?;
        Ok(Net { shared })
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The timer table, for periodic work of roles and RPC peers.
    pub fn timers(&self) -> &timer::Timers {
        &self.shared.timers
    }

    /// Serves `listener` on its own acceptor thread: each accepted socket gets a session
    /// from `factory` and goes to the next worker. Returns the bound address.
    pub fn listen(
        &self,
        listener: std::net::TcpListener,
        factory: SessionFactory,
    ) -> io::Result<SocketAddr> {
        let local = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let net = self.clone();
        std::thread::Builder::new()
            .name(format!("accept-{}", local.port()))
            .spawn(move || {
                worker::accept_loop(net, mio::net::TcpListener::from_std(listener), factory)
            })?;
        Ok(local)
    }

    /// Starts a non-blocking connect to `addr` and gives the connection to a worker.
    /// The session hears `on_connect` once the outcome is known; output written before
    /// that is held until the connection is up.
    pub fn connect(&self, addr: SocketAddr, session: Box<dyn Session>) -> io::Result<Arc<Writer>> {
        let stream = mio::net::TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        Ok(self.adopt(stream, addr, session, true, None))
    }

    /// Hands a connected or connecting stream to the next worker.
    fn adopt(
        &self,
        stream: mio::net::TcpStream,
        peer: SocketAddr,
        session: Box<dyn Session>,
        connecting: bool,
        counted: Option<Arc<AtomicUsize>>,
    ) -> Arc<Writer> {
        let s = &self.shared;
        let sender =
            s.senders[s.next_sender.fetch_add(1, Ordering::Relaxed) % s.senders.len()].clone();
        let stream = Arc::new(stream);
        let writer = Arc::new(Writer::new(stream.clone(), peer, sender, connecting));
        let worker = &s.workers[s.next_worker.fetch_add(1, Ordering::Relaxed) % s.workers.len()];
        worker.adopt(worker::Adopt {
            stream,
            writer: writer.clone(),
            session,
            connecting,
            counted,
        });
        writer
    }

    /// Asks every thread to stop at its next wake-up. Used by in-process tests and
    /// benchmarks; daemons simply exit.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for w in &self.shared.workers {
            w.wake();
        }
        for s in &self.shared.senders {
            s.wake();
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed)
    }
}

/// Sends `item` through a bounded queue and wakes the receiving loop. A full queue
/// blocks the caller: backpressure, not loss.
fn handoff<T>(tx: &SyncSender<T>, waker: &mio::Waker, item: T) {
    let mut item = item;
    loop {
        match tx.try_send(item) {
            Ok(()) => break,
            Err(TrySendError::Full(back)) => {
                item = back;
                let _ = waker.wake();
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
    let _ = waker.wake();
}

fn queue<T>() -> (SyncSender<T>, std::sync::mpsc::Receiver<T>) {
    sync_channel(HANDOFF_QUEUE_DEPTH)
}
