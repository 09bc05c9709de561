//! Worker threads (`-TR`) and the acceptor. A worker owns a mio `Poll` and the
//! connections handed to it; it reads, feeds the bytes to each connection's session,
//! and reaps connections that closed.

use super::conn::{Session, Writer};
use super::{Net, SessionFactory, CONNECTIONS_MAX};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAKE: Token = Token(usize::MAX);
/// Bytes one read(2) asks for.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Bytes a connection may read per wake-up before others get their turn (memcached's
/// `reqs_per_event`). A connection with more waiting is revisited without polling.
const READ_BUDGET_BYTES: usize = 256 << 10;
/// How long an idle worker sleeps in poll; it also bounds how late `stop` is seen.
const POLL_TIMEOUT_MS: u64 = 500;

pub(super) struct Adopt {
    pub stream: Arc<mio::net::TcpStream>,
    pub writer: Arc<Writer>,
    pub session: Box<dyn Session>,
    pub connecting: bool,
    /// The accepted-connection counter to decrement on close, if this was accepted.
    pub counted: Option<Arc<AtomicUsize>>,
}

pub(super) struct Handle {
    tx: std::sync::mpsc::SyncSender<Adopt>,
    waker: Arc<Waker>,
}

impl Handle {
    pub(super) fn adopt(&self, a: Adopt) {
        super::handoff(&self.tx, &self.waker, a);
    }
    pub(super) fn wake(&self) {
        let _ = self.waker.wake();
    }
}

pub(super) fn spawn(index: usize) -> io::Result<Handle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let (tx, rx) = super::queue();
    let resumed = Resumed {
        slots: Arc::new(Mutex::new(Vec::new())),
        waker: waker.clone(),
    };
    std::thread::Builder::new()
        .name(format!("worker-{index}"))
        .spawn(move || Worker::new(poll, rx, resumed).run())?;
    Ok(Handle { tx, waker })
}

/// Connections whose sessions asked to be read again, by slot. A slot reused by
/// another connection in the meantime is only read once more than it needed.
#[derive(Clone)]
struct Resumed {
    slots: Arc<Mutex<Vec<usize>>>,
    waker: Arc<Waker>,
}

impl Resumed {
    fn hook(&self, slot: usize) -> super::conn::Hook {
        let me = self.clone();
        Box::new(move || {
            me.slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(slot);
            let _ = me.waker.wake();
        })
    }

    fn take(&self) -> Vec<usize> {
        std::mem::take(&mut *self.slots.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

struct Conn {
    stream: Arc<mio::net::TcpStream>,
    writer: Arc<Writer>,
    session: Box<dyn Session>,
    input: Vec<u8>,
    connecting: bool,
    counted: Option<Arc<AtomicUsize>>,
}

struct Worker {
    poll: Poll,
    rx: Receiver<Adopt>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections that used their read budget and may have more input waiting.
    again: Vec<usize>,
    resumed: Resumed,
}

enum Outcome {
    Open,
    Close,
}

impl Worker {
    fn new(poll: Poll, rx: Receiver<Adopt>, resumed: Resumed) -> Worker {
        Worker {
            poll,
            rx,
            conns: Vec::new(),
            free: Vec::new(),
            again: Vec::new(),
            resumed,
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut stopping = false;
        while !stopping {
            let timeout = if self.again.is_empty() {
                Duration::from_millis(POLL_TIMEOUT_MS)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("worker poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let _turn = LoopTime::start();
            super::conn::cork();
            let corked = super::conn::Corked;
            let mut again = std::mem::take(&mut self.again);
            again.extend(self.resumed.take());
            for slot in again {
                LoopTime::refresh();
                self.service(slot, true, false);
            }
            for event in events.iter() {
                if event.token() == WAKE {
                    continue;
                }
                let slot = event.token().0;
                LoopTime::refresh();
                self.service(
                    slot,
                    event.is_readable() || event.is_read_closed() || event.is_error(),
                    event.is_writable(),
                );
            }
            drop(corked);
            loop {
                match self.rx.try_recv() {
                    Ok(a) => self.add(a),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        stopping = true;
                        break;
                    }
                }
            }
            // Net::stop is rare and only in-process; checking an Arc-free flag through
            // the waker path would need another channel, so the poll timeout bounds it.
        }
    }

    fn add(&mut self, a: Adopt) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let interest = if a.connecting {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let fd = {
            use std::os::fd::AsRawFd;
            a.stream.as_raw_fd()
        };
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut mio::unix::SourceFd(&fd), Token(slot), interest)
        {
            log::warn!("{}: cannot register connection: {e}", a.writer.peer());
            let mut session = a.session;
            a.writer.close();
            session.on_close();
            if let Some(c) = a.counted {
                c.fetch_sub(1, Ordering::Relaxed);
            }
            self.free.push(slot);
            return;
        }
        a.writer.set_resume(self.resumed.hook(slot));
        let mut session = a.session;
        session.on_open(&a.writer);
        self.conns[slot] = Some(Conn {
            stream: a.stream,
            writer: a.writer,
            session,
            input: Vec::new(),
            connecting: a.connecting,
            counted: a.counted,
        });
        // Data may have arrived before registration; edge-triggered polling would not
        // report it, so read once now.
        if !a.connecting {
            self.again.push(slot);
        }
    }

    fn service(&mut self, slot: usize, readable: bool, writable: bool) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let outcome = if conn.connecting {
            if writable || readable {
                match finish_connect(conn) {
                    ReadResult::MoreWaiting => {
                        self.again.push(slot);
                        Outcome::Open
                    }
                    ReadResult::Drained => Outcome::Open,
                    ReadResult::Closed => Outcome::Close,
                }
            } else {
                Outcome::Open
            }
        } else if readable {
            // A session that wants no input is left alone until it resumes reading.
            match read_and_dispatch(conn) {
                ReadResult::Drained => Outcome::Open,
                ReadResult::MoreWaiting => {
                    self.again.push(slot);
                    Outcome::Open
                }
                ReadResult::Closed => Outcome::Close,
            }
        } else {
            Outcome::Open
        };
        let closed_elsewhere = conn.writer.is_closed();
        if matches!(outcome, Outcome::Close) || closed_elsewhere {
            self.reap(slot);
        }
    }

    fn reap(&mut self, slot: usize) {
        let Some(mut conn) = self.conns[slot].take() else {
            return;
        };
        let fd = {
            use std::os::fd::AsRawFd;
            conn.stream.as_raw_fd()
        };
        let _ = self
            .poll
            .registry()
            .deregister(&mut mio::unix::SourceFd(&fd));
        conn.session.close_when_done(&conn.writer);
        conn.session.on_close();
        if let Some(c) = conn.counted {
            c.fetch_sub(1, Ordering::Relaxed);
        }
        self.again.retain(|s| *s != slot);
        self.free.push(slot);
    }
}

fn finish_connect(conn: &mut Conn) -> ReadResult {
    let result = match conn.stream.take_error() {
        Ok(Some(e)) | Err(e) => Err(e),
        Ok(None) => match conn.stream.peer_addr() {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return ReadResult::Drained,
            Err(e) => Err(e),
        },
    };
    conn.session.on_connect(&result, &conn.writer);
    match result {
        Ok(()) => {
            conn.connecting = false;
            conn.writer.connected();
            // Anything the peer sent already is waiting; edge-triggered, so read now.
            read_and_dispatch(conn)
        }
        Err(_) => ReadResult::Closed,
    }
}

enum ReadResult {
    Drained,
    MoreWaiting,
    Closed,
}

thread_local! {
    /// When a worker began the connection event it is handling (see [`now`]).
    static EVENT_STARTED: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// Marks a worker's loop turn: [`now`] answers the start of the event being
/// handled until it is dropped.
struct LoopTime;

impl LoopTime {
    fn start() -> LoopTime {
        Self::refresh();
        LoopTime
    }

    /// A new event: the time is read again, so that one event's work (a store
    /// write that waits for fsync, say) never ages the next one's deadlines.
    fn refresh() {
        EVENT_STARTED.with(|t| t.set(Some(std::time::Instant::now())));
    }
}

impl Drop for LoopTime {
    fn drop(&mut self) {
        EVENT_STARTED.with(|t| t.set(None));
    }
}

/// The time for deadlines, timeouts and latencies: on a worker, when it began the
/// connection event it is handling (one read of input, and the requests in it),
/// read once for all of them rather than a few times for each; elsewhere (timer
/// and sender threads, tools) the clock itself.
pub fn now() -> std::time::Instant {
    EVENT_STARTED
        .with(|t| t.get())
        .unwrap_or_else(std::time::Instant::now)
}

fn read_and_dispatch(conn: &mut Conn) -> ReadResult {
    let mut budget = READ_BUDGET_BYTES;
    // Input left over when the session paused comes first.
    if !conn.input.is_empty() && conn.session.wants_input() && !dispatch(conn) {
        return ReadResult::Closed;
    }
    loop {
        if !conn.session.wants_input() {
            // Paused: the rest waits in the socket; resume_reading brings us back.
            return ReadResult::Drained;
        }
        if budget == 0 {
            return ReadResult::MoreWaiting;
        }
        let start = conn.input.len();
        let read = read_into_spare(&conn.stream, &mut conn.input);
        let n = match read {
            Ok(n) => n,
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock => return ReadResult::Drained,
                io::ErrorKind::Interrupted => continue,
                _ => {
                    log::debug!("{}: read failed: {e}", conn.writer.peer());
                    return ReadResult::Closed;
                }
            },
        };
        debug_assert_eq!(conn.input.len(), start + n);
        if n == 0 {
            // The peer half-closed. Answer what it already sent, then close once the
            // replies are out (close_after_flush in reap).
            dispatch(conn);
            return ReadResult::Closed;
        }
        budget = budget.saturating_sub(n);
        if !dispatch(conn) {
            return ReadResult::Closed;
        }
        // A read that did not fill what it asked for emptied the socket. Linux's
        // edge-triggered epoll reports every later arrival as a new event, so the
        // extra read(2) that would only say EAGAIN is skipped: in request-reply
        // traffic it was every second syscall.
        if n < READ_CHUNK_BYTES {
            return ReadResult::Drained;
        }
    }
}

/// Reads up to READ_CHUNK_BYTES into the spare capacity of `input` and extends it
/// by what was read. Zero-filling 64 KiB before every read(2) cost more than the
/// read itself on small requests.
fn read_into_spare(stream: &mio::net::TcpStream, input: &mut Vec<u8>) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    input.reserve(READ_CHUNK_BYTES);
    let spare = input.spare_capacity_mut();
    let len = spare.len().min(READ_CHUNK_BYTES);
    // SAFETY: read(2) writes at most `len` bytes into the spare capacity, which is
    // allocated and ours; only the bytes it reports are then counted as initialized.
    let n = unsafe { libc::read(stream.as_raw_fd(), spare.as_mut_ptr().cast(), len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialized exactly n bytes past the old length.
    unsafe { input.set_len(input.len() + n) };
    Ok(n)
}

/// Offers buffered input to the session. False when the session asked to close.
fn dispatch(conn: &mut Conn) -> bool {
    if conn.input.is_empty() {
        return true;
    }
    // A bug in one session must cost that connection, not the worker and every
    // connection it serves.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        conn.session.on_input(&conn.input, &conn.writer)
    }));
    let outcome = outcome.unwrap_or_else(|_| {
        log::error!(
            "{}: a request handler panicked; closing the connection",
            conn.writer.peer()
        );
        Err(())
    });
    match outcome {
        Ok(used) if used > conn.input.len() => {
            log::error!(
                "{}: session consumed more than it was given; closing",
                conn.writer.peer()
            );
            false
        }
        Ok(used) => {
            conn.input.drain(..used);
            if conn.input.capacity() > 4 * READ_CHUNK_BYTES && conn.input.len() < READ_CHUNK_BYTES {
                conn.input.shrink_to(READ_CHUNK_BYTES);
            }
            !conn.writer.is_closed()
        }
        Err(()) => false,
    }
}

/// The acceptor: accepts until the listener would block, refusing connections over
/// CONNECTIONS_MAX, and hands each socket to a worker.
pub(super) fn accept_loop(net: Net, mut listener: TcpListener, factory: SessionFactory) {
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => return log::error!("acceptor cannot start: {e}"),
    };
    if let Err(e) = poll
        .registry()
        .register(&mut listener, Token(0), Interest::READABLE)
    {
        return log::error!("acceptor cannot watch the listener: {e}");
    }
    // A descriptor held in reserve: when accept(2) fails with EMFILE, closing it lets
    // us accept and close the waiting connection, so the client is not left hanging
    // and the edge-triggered listener does not go quiet (libevent's trick).
    let mut reserve = Some(std::fs::File::open("/dev/null"));
    let mut events = Events::with_capacity(64);
    let accepted = net.shared.accepted.clone();
    while !net.stopping() {
        // The timeout retries accepts that failed for lack of descriptors.
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(POLL_TIMEOUT_MS))) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("acceptor poll failed: {e}");
            }
            continue;
        }
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    if accepted.load(Ordering::Relaxed) >= CONNECTIONS_MAX {
                        log::warn!(
                            "{peer}: refused, already serving {CONNECTIONS_MAX} connections"
                        );
                        drop(stream);
                        continue;
                    }
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    let session = factory(peer);
                    net.adopt(stream, peer, session, false, Some(accepted.clone()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.raw_os_error() == Some(libc::EMFILE)
                        || e.raw_os_error() == Some(libc::ENFILE) =>
                {
                    log::warn!("out of file descriptors; refusing a connection");
                    drop(reserve.take());
                    if let Ok((stream, _)) = listener.accept() {
                        drop(stream);
                    }
                    reserve = Some(std::fs::File::open("/dev/null"));
                    break;
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    break;
                }
            }
        }
    }
}
