//! The sender threads (`-TW`): each watches the connections whose output a socket
//! refused, and flushes them when they become writable, so that a slow reader never
//! blocks the thread that produced its reply.

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

/// What a sender needs of a connection it watches (a `conn::Writer`).
pub(super) trait Watched: Send + Sync {
    /// Writes queued output; true when none is left.
    fn flush(&self) -> bool;
    fn raw_fd(&self) -> std::os::fd::RawFd;
    fn peer(&self) -> std::net::SocketAddr;
    fn close(&self);
    fn is_closed(&self) -> bool;
}

const WAKE: Token = Token(usize::MAX);
/// How often a sender sweeps connections that were closed while it watched them.
const SWEEP_INTERVAL_MS: u64 = 500;

#[derive(Clone)]
pub(super) struct SenderHandle {
    tx: SyncSender<Arc<dyn Watched>>,
    waker: Arc<Waker>,
}

impl SenderHandle {
    /// Asks this sender to flush `writer` now and whenever its socket becomes writable.
    pub(super) fn watch(&self, writer: Arc<dyn Watched>) {
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

fn run_sender(mut poll: Poll, rx: Receiver<Arc<dyn Watched>>) {
    let mut events = Events::with_capacity(256);
    // Slots indexed by token; freed slots are reused.
    let mut watched: Vec<Option<Arc<dyn Watched>>> = Vec::new();
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
