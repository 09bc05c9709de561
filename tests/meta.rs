//! The meta protocol through a real cluster: the recache token is won by exactly
//! one client however many ask at once, and the meta marks (stale, token sent) are
//! kept by the servers through restarts, as the values are.

mod common;
mod conformance;

use common::Cluster;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};

/// `clients` connections send `line` at the same moment; returns every reply line.
fn all_at_once(addr: SocketAddr, clients: usize, line: &'static str) -> Vec<String> {
    let start = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let start = start.clone();
            std::thread::spawn(move || {
                let mut c = conformance::Conn::open(addr, &format!("client {i}"));
                start.wait();
                c.send(line);
                String::from_utf8(c.read_line()).unwrap()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn winners(replies: &[String]) -> usize {
    replies
        .iter()
        .filter(|r| r.trim_end().split(' ').any(|w| w == "W"))
        .count()
}

#[test]
fn one_client_of_many_wins_the_recache_token() {
    let c = Cluster::start(3);
    // A missing item: every client asks to make it; one makes it and wins.
    let replies = all_at_once(c.gateway_addr, 16, "mg hot N30 s\r\n");
    assert_eq!(winners(&replies), 1, "{replies:?}");
    assert!(
        replies
            .iter()
            .all(|r| r.starts_with("HD s0") && (r.contains(" W") || r.contains(" Z"))),
        "{replies:?}"
    );
    // The winner recaches it; then it is invalidated, and the next readers race.
    let mut conn = conformance::Conn::open(c.gateway_addr, "recache");
    conn.roundtrip("ms hot 5 T0\r\nfresh\r\n", "HD\r\n");
    conn.roundtrip("mg hot v\r\n", "VA 5\r\nfresh\r\n");
    conn.roundtrip("md hot I\r\n", "HD\r\n");
    let replies = all_at_once(c.gateway_addr, 16, "mg hot s\r\n");
    assert_eq!(winners(&replies), 1, "{replies:?}");
    assert!(replies.iter().all(|r| r.contains(" X")), "{replies:?}");
}

#[test]
fn meta_marks_outlive_restarts() {
    let mut c = Cluster::start(3);
    let mut conn = conformance::Conn::open(c.gateway_addr, "before");
    conn.roundtrip("ms page 4 T0\r\nold!\r\n", "HD\r\n");
    conn.roundtrip("md page I\r\n", "HD\r\n");
    drop(conn);
    for i in 0..3 {
        c.kill_server(i);
    }
    for i in 0..3 {
        c.restart_server(i);
    }
    let mut conn = conformance::Conn::open(c.gateway_addr, "after");
    // The first reader after the restarts still finds the item stale, and wins.
    common::wait_until(
        std::time::Duration::from_secs(20),
        "the restarted servers to serve",
        || {
            conn.send("mg page v\r\n");
            let line = conn.read_line();
            if line.starts_with(b"SERVER_ERROR") {
                return false;
            }
            assert_eq!(line, b"VA 4 X W\r\n");
            assert_eq!(conn.read_n(6), b"old!\r\n");
            true
        },
    );
    conn.roundtrip("mg page\r\n", "HD Z X\r\n");
}
