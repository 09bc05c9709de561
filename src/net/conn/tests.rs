//! The writer against a real socket.
use super::*;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A writer on one end of a loopback connection, with a sender thread of its own,
/// and the other end.
fn writer_and_peer() -> (Arc<Writer>, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (theirs, _) = listener.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    let peer = ours.peer_addr().unwrap();
    let stream = Arc::new(mio::net::TcpStream::from_std(ours));
    let sender = super::super::sender::spawn_sender(0).unwrap();
    (Arc::new(Writer::new(stream, peer, sender, false)), theirs)
}

/// A connection a sender thread took over once (its peer stopped reading) is
/// corked again once its queue has drained: two messages of one turn leave
/// together at the uncork, not one by one.
#[test]
fn a_connection_once_slow_is_corked_again() {
    let (w, mut theirs) = writer_and_peer();
    // Fill the socket until output waits for the sender.
    let block = vec![7u8; 1 << 20];
    let mut sent = 0;
    while w.queued() == 0 {
        assert!(w.send(&block));
        sent += block.len();
    }
    assert!(w.lock().with_sender);
    // The peer reads it all; the sender writes what waited.
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < sent {
        got += theirs.read(&mut buf).unwrap();
    }
    while w.queued() > 0 {
        std::thread::yield_now();
    }
    theirs.set_nonblocking(true).unwrap();
    cork();
    assert!(w.send(b"one "));
    assert!(w.send(b"turn"));
    let nothing_yet = theirs.read(&mut buf);
    assert!(
        matches!(&nothing_yet, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        "written before the uncork: {nothing_yet:?}"
    );
    uncork();
    theirs.set_nonblocking(false).unwrap();
    let mut both = [0u8; 8];
    theirs.read_exact(&mut both).unwrap();
    assert_eq!(&both, b"one turn");
}

/// Output gathered under the cork counts as waiting; once the uncork has sent it
/// all, the drained hook runs, so that whoever held back for it (a gateway
/// connection over its output budget) goes on.
#[test]
fn output_sent_at_the_uncork_is_drained_output() {
    let (w, mut theirs) = writer_and_peer();
    let drained = Arc::new(AtomicUsize::new(0));
    let d = drained.clone();
    w.on_drained(Box::new(move || {
        d.fetch_add(1, Ordering::SeqCst);
    }));
    cork();
    assert!(w.send(b"answer"));
    assert_eq!(w.queued(), 6, "gathered output is counted as waiting");
    assert_eq!(drained.load(Ordering::SeqCst), 0);
    uncork();
    assert_eq!(w.queued(), 0);
    assert_eq!(drained.load(Ordering::SeqCst), 1);
    let mut got = [0u8; 6];
    theirs.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"answer");
}
