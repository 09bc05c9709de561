//! A connection as the roles see it: a [`Session`] that consumes input, and a
//! [`Writer`] that any thread may use to send output. This file owns the write
//! path: the writer, its queue of pieces (`chain`), and the cork of a worker's
//! batch. A worker or callback writes first; only the remainder goes to a sender
//! thread (`sender.rs`), so a slow reader never blocks the thread that produced
//! its reply.

use super::chain::{Chain, Piece, SHARE_MIN_BYTES};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// Output not yet written, front first (see [`super::chain`]).
    queue: VecDeque<Piece>,
    /// Bytes of the front piece already written.
    sent: usize,
    /// Bytes in `queue` not yet written.
    unsent: usize,
    /// An emptied buffer, kept to gather the next small output in.
    spare: Vec<u8>,
    closed: bool,
    /// Close once the queue is flushed (the peer half-closed after its last request).
    close_when_flushed: bool,
    /// A sender thread watches this connection for writability.
    with_sender: bool,
    /// The connect has not completed; hold output until it has.
    connecting: bool,
    /// Output waits in the queue for the cork of the worker that queued it.
    corked: bool,
}

/// The most pieces one `writev` takes.
const IOV_MAX_PIECES: usize = 64;
/// A gathering buffer larger than this is not kept for reuse once written.
const SPARE_KEEP_MAX_BYTES: usize = 64 << 10;

impl Out {
    /// Queues a copy of `b`, in the last owned piece where there is one.
    fn push_bytes(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        self.unsent += b.len();
        if let Some(Piece::Own(last)) = self.queue.back_mut() {
            return last.extend_from_slice(b);
        }
        let mut v = std::mem::take(&mut self.spare);
        v.extend_from_slice(b);
        self.queue.push_back(Piece::Own(v));
    }

    /// Queues a chain's pieces, shared values by reference.
    fn push_chain(&mut self, chain: Chain) {
        for p in chain.into_pieces() {
            match (p, self.queue.back_mut()) {
                (Piece::Own(b), Some(Piece::Own(last))) if b.len() < SHARE_MIN_BYTES => {
                    self.unsent += b.len();
                    last.extend_from_slice(&b);
                }
                (p, _) => {
                    self.unsent += p.bytes().len();
                    self.queue.push_back(p);
                }
            }
        }
    }

    /// `n` more bytes were written: drop the pieces that are done.
    fn advance(&mut self, mut n: usize) {
        self.unsent -= n;
        while n > 0 {
            let Some(front) = self.queue.front() else {
                break;
            };
            let left = front.bytes().len() - self.sent;
            if n < left {
                self.sent += n;
                return;
            }
            n -= left;
            self.sent = 0;
            if let Some(Piece::Own(mut v)) = self.queue.pop_front() {
                if v.capacity() <= SPARE_KEEP_MAX_BYTES && v.capacity() > self.spare.capacity() {
                    v.clear();
                    self.spare = v;
                }
            }
        }
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.sent = 0;
        self.unsent = 0;
    }
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

/// Writes what this thread gathered since [`cork`] and stops gathering. Output that
/// all went out is drained output (see [`Writer::on_drained`]): gathered, it was
/// counted as waiting, and whoever held back for it hears that it is gone.
pub(super) fn uncork() {
    let writers = CORK.with(|c| c.borrow_mut().take()).unwrap_or_default();
    for w in writers {
        let mut out = w.lock();
        out.corked = false;
        let had = out.unsent > 0;
        let done = w.flush_locked(&mut out);
        if !done {
            w.ensure_sender(&mut out);
        }
        drop(out);
        if had && done {
            if let Some(f) = w.drained.get() {
                f();
            }
        }
    }
}

/// A hook a thread calls without holding any lock of the connection.
pub type Hook = Box<dyn Fn() + Send + Sync>;

/// The sending half of a connection, shared by every thread that replies on it.
pub struct Writer {
    stream: Arc<mio::net::TcpStream>,
    peer: SocketAddr,
    sender: super::sender::SenderHandle,
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
        sender: super::sender::SenderHandle,
        connecting: bool,
    ) -> Writer {
        Writer {
            stream,
            peer,
            sender,
            out: Mutex::new(Out {
                queue: VecDeque::new(),
                sent: 0,
                unsent: 0,
                spare: Vec::new(),
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
        self.lock().unsent
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
        if !self.room_for(&mut out, bytes.len()) {
            return false;
        }
        if self.gathered(&mut out) {
            out.push_bytes(bytes);
            return true;
        }
        let mut written = 0;
        if out.unsent == 0 && !out.connecting {
            match write_some(&self.stream, bytes) {
                Ok(n) => written = n,
                Err(_) => {
                    self.close_locked(&mut out);
                    return false;
                }
            }
        }
        if written < bytes.len() {
            out.push_bytes(&bytes[written..]);
            self.ensure_sender(&mut out);
        }
        true
    }

    /// Sends a chain of pieces, its shared values by reference (see
    /// [`super::chain`]). Gives the chain back, unsent, if the connection is
    /// closed or dies on this write.
    pub fn send_chain(self: &Arc<Self>, chain: Chain) -> Result<(), Chain> {
        let mut out = self.lock();
        if !self.room_for(&mut out, chain.len()) {
            return Err(chain);
        }
        if self.gathered(&mut out) {
            out.push_chain(chain);
            return Ok(());
        }
        if out.unsent > 0 || out.connecting {
            out.push_chain(chain);
            self.ensure_sender(&mut out);
            return Ok(());
        }
        let total = chain.len();
        let pieces = chain.into_pieces();
        let mut written = 0;
        loop {
            if written == total {
                return Ok(());
            }
            match write_pieces(&self.stream, &pieces, written) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(_) => {
                    self.close_locked(&mut out);
                    let mut back = Chain::new();
                    for p in pieces {
                        back.push(p);
                    }
                    return Err(back);
                }
            }
        }
        // The socket is full: queue what is left, the first piece part-sent.
        for p in pieces {
            let len = p.bytes().len();
            if written >= len {
                written -= len;
                continue;
            }
            if out.queue.is_empty() {
                out.sent = written;
                out.unsent += len - written;
                out.queue.push_back(p);
            } else {
                out.unsent += len;
                out.queue.push_back(p);
            }
            written = 0;
        }
        self.ensure_sender(&mut out);
        Ok(())
    }

    /// Whether `more` bytes may be queued; a peer that lets too much pile up is
    /// cut off (see [`OUTPUT_BUFFER_MAX_BYTES`]).
    fn room_for(&self, out: &mut Out, more: usize) -> bool {
        if out.closed {
            return false;
        }
        if out.unsent + more > OUTPUT_BUFFER_MAX_BYTES {
            log::warn!(
                "{}: peer is not reading; {} bytes of output queued, closing",
                self.peer,
                out.unsent
            );
            self.close_locked(out);
            return false;
        }
        true
    }

    /// Whether output goes to this thread's cork (see [`cork`]) rather than to the
    /// socket now: true when the connection is corked already or joins the cork.
    fn gathered(self: &Arc<Self>, out: &mut Out) -> bool {
        if out.corked {
            return true;
        }
        // A connection a sender thread watches is corked as any other once its
        // queue is empty: the sender only writes what is queued, in order, under
        // this same lock. (Left out of the cork for good, a link that was once
        // slow would make a write(2) per message from then on.)
        if out.unsent != 0 || out.connecting {
            return false;
        }
        let joined = CORK.with(|c| match c.borrow_mut().as_mut() {
            Some(list) => {
                list.push(self.clone());
                true
            }
            None => false,
        });
        out.corked = joined;
        joined
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
        let had = out.unsent > 0;
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
        while out.unsent > 0 {
            match write_queue(&self.stream, out) {
                Ok(0) => return false,
                Ok(n) => out.advance(n),
                Err(_) => {
                    self.close_locked(out);
                    return true;
                }
            }
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
        if out.unsent == 0 {
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
            out.clear();
            out.spare = Vec::new();
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

impl super::sender::Watched for Writer {
    fn flush(&self) -> bool {
        Writer::flush(self)
    }
    fn raw_fd(&self) -> std::os::fd::RawFd {
        Writer::raw_fd(self)
    }
    fn peer(&self) -> SocketAddr {
        Writer::peer(self)
    }
    fn close(&self) {
        Writer::close(self)
    }
    fn is_closed(&self) -> bool {
        Writer::is_closed(self)
    }
}

/// Writes the front of the queue with one `writev`. Returns bytes written, 0 when
/// the socket would block; errors other than WouldBlock and Interrupted mean the
/// connection is dead.
fn write_queue(stream: &mio::net::TcpStream, out: &Out) -> io::Result<usize> {
    writev(stream, out.queue.iter(), out.sent)
}

/// Writes `pieces`, less their first `skip` bytes, with one `writev`.
fn write_pieces(stream: &mio::net::TcpStream, pieces: &[Piece], skip: usize) -> io::Result<usize> {
    writev(stream, pieces.iter(), skip)
}

fn writev<'a>(
    mut stream: &mio::net::TcpStream,
    pieces: impl Iterator<Item = &'a Piece>,
    mut skip: usize,
) -> io::Result<usize> {
    let mut slices = [io::IoSlice::new(&[]); IOV_MAX_PIECES];
    let mut n = 0;
    for p in pieces {
        let b = p.bytes();
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        if n == IOV_MAX_PIECES {
            break;
        }
        slices[n] = io::IoSlice::new(&b[skip..]);
        skip = 0;
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    loop {
        match stream.write_vectored(&slices[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => return Ok(w),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
