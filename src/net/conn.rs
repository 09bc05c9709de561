//! A connection as the roles see it: a [`Session`] that consumes input, and a
//! [`Writer`] that any thread may use to send output. This file owns the whole
//! write path: the writer, the cork of a worker's batch, and the sender threads
//! (`-TW`) that flush what a socket refused. A worker or callback writes first;
//! only the remainder goes to a sender, so a slow reader never blocks the thread
//! that produced its reply.

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Output a connection may have queued before the peer is considered too slow to
/// keep. A peer that stops reading while it keeps sending requests is cut off here
/// rather than growing the process without bound.
pub const OUTPUT_BUFFER_MAX_BYTES: usize = 256 << 20;

/// The protocol half of a connection. The worker that owns the connection calls these
/// in order; none of them may block.
pub trait Session: Send {
    /// Bytes have arrived. Consume complete requests from the front of `input` and
    /// return how many bytes were used; the rest is offered again with more bytes.
    /// `Err` closes the connection (after a log line, which the session writes).
    fn on_input(&mut self, input: &[u8], out: &Arc<Writer>) -> Result<usize, ()>;

    /// The connection is in a worker's hands; `out` is its sending half.
    fn on_open(&mut self, _out: &Arc<Writer>) {}

    /// Whether the session takes more input now. While it says no, the worker
    /// reads nothing more from the connection (what the client sends waits in the
    /// socket, and its sends block: backpressure) until the session calls
    /// [`Writer::resume_reading`].
    fn wants_input(&self) -> bool {
        true
    }

    /// An outgoing connect finished; `Err` means it failed and `on_close` follows.
    fn on_connect(&mut self, _result: &io::Result<()>, _out: &Arc<Writer>) {}

    /// The worker is done with the connection (the peer half-closed, or an error):
    /// close it once what is owed has been sent. A session whose answers come
    /// later (from other threads) closes after its last one instead.
    fn close_when_done(&mut self, out: &Arc<Writer>) {
        out.close_after_flush();
    }

    /// The connection is gone, for whatever reason. Called exactly once.
    fn on_close(&mut self) {}
}

struct Out {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    sent: usize,
    closed: bool,
    /// Close once `buf` is flushed (the peer half-closed after its last request).
    close_when_flushed: bool,
    /// A sender thread watches this connection for writability.
    with_sender: bool,
    /// The connect has not completed; hold output until it has.
    connecting: bool,
    /// Output waits in `buf` for the cork of the worker that queued it.
    corked: bool,
}

thread_local! {
    /// While a worker handles one batch of events, output is gathered here and
    /// written once per connection at the end of the batch: a server answering 20
    /// pipelined calls, or a gateway forwarding 20 clients' requests over one link,
    /// makes one write(2) instead of 20.
    static CORK: std::cell::RefCell<Option<Vec<Arc<Writer>>>> = const { std::cell::RefCell::new(None) };
}

/// Starts gathering this thread's output (a worker, before a batch of events).
pub(super) fn cork() {
    CORK.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(Vec::new());
        }
    });
}

/// Uncorks when dropped, so a panic in a session cannot leave output gathered and
/// never written.
pub(super) struct Corked;

impl Drop for Corked {
    fn drop(&mut self) {
        uncork();
    }
}

/// Writes what this thread gathered since [`cork`] and stops gathering.
pub(super) fn uncork() {
    let writers = CORK.with(|c| c.borrow_mut().take()).unwrap_or_default();
    for w in writers {
        let mut out = w.lock();
        out.corked = false;
        if !w.flush_locked(&mut out) {
            w.ensure_sender(&mut out);
        }
    }
}

/// A hook a thread calls without holding any lock of the connection.
pub type Hook = Box<dyn Fn() + Send + Sync>;

/// The sending half of a connection, shared by every thread that replies on it.
pub struct Writer {
    stream: Arc<mio::net::TcpStream>,
    peer: SocketAddr,
    sender: SenderHandle,
    out: Mutex<Out>,
    /// Set by the owning worker: brings a paused connection back to reading.
    resume: std::sync::OnceLock<Hook>,
    /// Set by the session: called when output a slow reader left queued is sent.
    drained: std::sync::OnceLock<Hook>,
}

impl Writer {
    pub(super) fn new(
        stream: Arc<mio::net::TcpStream>,
        peer: SocketAddr,
        sender: SenderHandle,
        connecting: bool,
    ) -> Writer {
        Writer {
            stream,
            peer,
            sender,
            out: Mutex::new(Out {
                buf: Vec::new(),
                sent: 0,
                closed: false,
                close_when_flushed: false,
                with_sender: false,
                connecting,
                corked: false,
            }),
            resume: std::sync::OnceLock::new(),
            drained: std::sync::OnceLock::new(),
        }
    }

    /// Bytes of output waiting for the socket.
    pub fn queued(&self) -> usize {
        let out = self.lock();
        out.buf.len() - out.sent
    }

    /// Asks the worker to read this connection again after its session said it
    /// wanted no input (see [`Session::wants_input`]).
    pub fn resume_reading(&self) {
        if let Some(f) = self.resume.get() {
            f();
        }
    }

    pub(super) fn set_resume(&self, f: Hook) {
        let _ = self.resume.set(f);
    }

    /// Calls `f` each time queued output has all been sent.
    pub fn on_drained(&self, f: Hook) {
        let _ = self.drained.set(f);
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn lock(&self) -> MutexGuard<'_, Out> {
        // A panic while holding this lock is a bug elsewhere; the buffer itself is
        // still consistent, so keep serving.
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `bytes`: written at once if the socket takes them, otherwise queued for
    /// a sender thread. Returns false if the connection is closed.
    pub fn send(self: &Arc<Self>, bytes: &[u8]) -> bool {
        let mut out = self.lock();
        if out.closed {
            return false;
        }
        if out.buf.len() - out.sent + bytes.len() > OUTPUT_BUFFER_MAX_BYTES {
            log::warn!(
                "{}: peer is not reading; {} bytes of output queued, closing",
                self.peer,
                out.buf.len()
            );
            self.close_locked(&mut out);
            return false;
        }
        if out.corked {
            out.buf.extend_from_slice(bytes);
            return true;
        }
        if out.buf.len() == out.sent && !out.connecting && !out.with_sender {
            let gathered = CORK.with(|c| match c.borrow_mut().as_mut() {
                Some(list) => {
                    list.push(self.clone());
                    true
                }
                None => false,
            });
            if gathered {
                out.corked = true;
                out.buf.extend_from_slice(bytes);
                return true;
            }
        }
        let mut written = 0;
        if out.buf.len() == out.sent && !out.connecting {
            match write_some(&self.stream, bytes) {
                Ok(n) => written = n,
                Err(_) => {
                    self.close_locked(&mut out);
                    return false;
                }
            }
        }
        if written < bytes.len() {
            out.buf.extend_from_slice(&bytes[written..]);
            self.ensure_sender(&mut out);
        }
        true
    }

    /// The connect completed: release held output.
    pub(super) fn connected(self: &Arc<Self>) {
        let mut out = self.lock();
        out.connecting = false;
        if !self.flush_locked(&mut out) {
            self.ensure_sender(&mut out);
        }
    }

    fn ensure_sender(self: &Arc<Self>, out: &mut Out) {
        if !out.with_sender && !out.connecting {
            out.with_sender = true;
            self.sender.watch(self.clone());
        }
    }

    /// Writes as much queued output as the socket takes. True when nothing is left.
    pub(super) fn flush(&self) -> bool {
        let mut out = self.lock();
        let had = out.buf.len() > out.sent;
        let done = self.flush_locked(&mut out);
        drop(out);
        if had && done {
            if let Some(f) = self.drained.get() {
                f();
            }
        }
        done
    }

    fn flush_locked(&self, out: &mut Out) -> bool {
        if out.closed {
            return true;
        }
        while out.sent < out.buf.len() {
            match write_some(&self.stream, &out.buf[out.sent..]) {
                Ok(0) => return false,
                Ok(n) => out.sent += n,
                Err(_) => {
                    self.close_locked(out);
                    return true;
                }
            }
        }
        out.buf.clear();
        out.sent = 0;
        if out.buf.capacity() > 1 << 20 {
            out.buf.shrink_to(64 << 10);
        }
        if out.close_when_flushed {
            self.close_locked(out);
        }
        true
    }

    /// Closes the connection now; queued output is dropped.
    pub fn close(&self) {
        let mut out = self.lock();
        self.close_locked(&mut out);
    }

    /// Aborts the connection: the kernel drops what it has not delivered and
    /// answers with a reset, so nothing sent on a dead link arrives once it heals.
    pub fn abort(&self) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt only reads `linger`, and the descriptor stays open for
        // as long as this Writer holds the stream.
        unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        self.close();
    }

    /// Closes the connection once queued output has been written.
    pub fn close_after_flush(&self) {
        let mut out = self.lock();
        if out.buf.len() == out.sent {
            self.close_locked(&mut out);
        } else {
            out.close_when_flushed = true;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn close_locked(&self, out: &mut Out) {
        if !out.closed {
            out.closed = true;
            out.buf = Vec::new();
            out.sent = 0;
            // The owning worker sees the shutdown as an error or EOF and reaps the
            // connection; the file descriptor stays valid until every Arc is gone.
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }

    pub(super) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.stream.as_raw_fd()
    }
}

/// Writes until the socket would block. Returns bytes written; errors other than
/// WouldBlock and Interrupted mean the connection is dead.
fn write_some(mut stream: &mio::net::TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match stream.write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

// ---- sender threads ----

const WAKE: Token = Token(usize::MAX);
/// How often a sender sweeps connections that were closed while it watched them.
const SWEEP_INTERVAL_MS: u64 = 500;

#[derive(Clone)]
pub(super) struct SenderHandle {
    tx: SyncSender<Arc<Writer>>,
    waker: Arc<Waker>,
}

impl SenderHandle {
    /// Asks this sender to flush `writer` now and whenever its socket becomes writable.
    pub(super) fn watch(&self, writer: Arc<Writer>) {
        super::handoff(&self.tx, &self.waker, writer);
    }

    pub(super) fn wake(&self) {
        let _ = self.waker.wake();
    }
}

pub(super) fn spawn_sender(index: usize) -> io::Result<SenderHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let (tx, rx) = super::queue();
    let handle = SenderHandle { tx, waker };
    std::thread::Builder::new()
        .name(format!("sender-{index}"))
        .spawn(move || run_sender(poll, rx))?;
    Ok(handle)
}

fn run_sender(mut poll: Poll, rx: Receiver<Arc<Writer>>) {
    let mut events = Events::with_capacity(256);
    // Slots indexed by token; freed slots are reused.
    let mut watched: Vec<Option<Arc<Writer>>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut last_sweep = std::time::Instant::now();
    loop {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(SWEEP_INTERVAL_MS))) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("sender poll failed: {e}");
            }
            continue;
        }
        for event in events.iter() {
            if event.token() == WAKE {
                continue;
            }
            if let Some(Some(w)) = watched.get(event.token().0) {
                w.flush();
            }
        }
        loop {
            let w = match rx.try_recv() {
                Ok(w) => w,
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            };
            let slot = free.pop().unwrap_or_else(|| {
                watched.push(None);
                watched.len() - 1
            });
            let fd = w.raw_fd();
            if let Err(e) =
                poll.registry()
                    .register(&mut SourceFd(&fd), Token(slot), Interest::WRITABLE)
            {
                log::warn!("{}: cannot watch for writability: {e}; closing", w.peer());
                w.close();
                free.push(slot);
                continue;
            }
            // The socket may have drained between the refused write and registration;
            // edge-triggered readiness would not tell us, so flush once now.
            w.flush();
            watched[slot] = Some(w);
        }
        if last_sweep.elapsed() >= Duration::from_millis(SWEEP_INTERVAL_MS) {
            last_sweep = std::time::Instant::now();
            for (slot, entry) in watched.iter_mut().enumerate() {
                if entry.as_ref().is_some_and(|w| w.is_closed()) {
                    if let Some(w) = entry.take() {
                        let fd = w.raw_fd();
                        let _ = poll.registry().deregister(&mut SourceFd(&fd));
                    }
                    free.push(slot);
                }
            }
        }
    }
}
