//! msgpack-rpc end to end: in-process servers and clients, real processes, a Python
//! client, bad frames, and a peer killed with SIGKILL.

mod common;
use common::*;
use kumo::net::rpc_client::LinkNews;
use kumo::net::{self, rpc_server::RpcSession, Peer, Reply, RpcError, Service};
use rmpv::Value;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Echo returns its params; Fail answers an error.
struct Echo;
impl Service for Echo {
    fn call(&self, method: &str, params: Vec<Value>, reply: Reply) {
        match method {
            "Echo" => reply.ok(Value::Array(params)),
            "Fail" => reply.err("deliberate failure"),
            _ => reply.unknown_method(method),
        }
    }
}

fn echo_server() -> (net::Net, std::net::SocketAddr) {
    let n = net::Net::start(net::Config {
        workers: 2,
        senders: 1,
        ..Default::default()
    })
    .unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = n.listen(l, RpcSession::factory(Arc::new(Echo))).unwrap();
    (n, addr)
}

#[test]
fn fifty_clients_times_a_thousand_calls_each_get_their_own_answers() {
    let (_server, addr) = echo_server();
    let client = net::Net::start(net::Config {
        workers: 2,
        senders: 1,
        ..Default::default()
    })
    .unwrap();
    const CLIENTS: usize = 50;
    const CALLS: usize = 1000;
    let wrong = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let peers: Vec<_> = (0..CLIENTS).map(|_| Peer::new(&client, addr)).collect();
    for (c, peer) in peers.iter().enumerate() {
        for i in 0..CALLS {
            let token = (c * CALLS + i) as u64;
            let (tx, wrong) = (tx.clone(), wrong.clone());
            peer.call(
                "Echo",
                &[Value::from(token)],
                Duration::from_secs(30),
                Box::new(move |r| {
                    if r != Ok(Value::Array(vec![Value::from(token)])) {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    tx.send(()).unwrap();
                }),
            );
        }
    }
    for n in 0..CLIENTS * CALLS {
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("only {n} answers"));
    }
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
}

#[test]
fn a_handler_error_comes_back_and_the_connection_stays_usable() {
    let (_server, addr) = echo_server();
    let client = net::Net::start(net::Config {
        workers: 1,
        senders: 1,
        ..Default::default()
    })
    .unwrap();
    let peer = Peer::new(&client, addr);
    let t = Duration::from_secs(10);
    assert_eq!(
        peer.call_wait("Fail", &[], t),
        Err(RpcError::Remote(Value::from("deliberate failure")))
    );
    assert_eq!(
        peer.call_wait("Nope", &[], t),
        Err(RpcError::Remote(Value::from("unknown method Nope")))
    );
    assert_eq!(
        peer.call_wait("Echo", &[Value::from(5)], t),
        Ok(Value::Array(vec![Value::from(5)]))
    );
}

#[test]
fn any_msgpack_rpc_client_can_call_a_kumo_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut p = spawn(
        dir.path(),
        "srv",
        &[
            "server",
            "-m",
            "127.0.0.1:9",
            "-L",
            &free_port().to_string(),
            "-s",
            dir.path().join("db").to_str().unwrap(),
            "-l",
            &format!("127.0.0.1:{port}"),
        ],
    );
    wait_rpc_ready(local(port));
    let script = format!(
        r#"
import msgpack, socket
s = socket.create_connection(("127.0.0.1", {port}))
u = msgpack.Unpacker(raw=False)
def call(msgid, method, params):
    s.sendall(msgpack.packb([0, msgid, method, params]))
    while True:
        for m in u:
            return m
        u.feed(s.recv(65536))
print(call(7, "GetStatus", ["version"]))
print(call(8, "NoSuchMethod", []))
print(call(9, "GetStatus", ["pid"]))
"#
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("[1, 7, None, '{}']", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(lines[1], "[1, 8, 'unknown method NoSuchMethod', None]");
    assert_eq!(lines[2], format!("[1, 9, None, {}]", p.pid()));
    assert!(p.is_alive());
}

fn closed_within(s: &mut std::net::TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn garbage_and_oversized_frames_close_that_connection_only() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut p = spawn(
        dir.path(),
        "srv",
        &[
            "server",
            "-m",
            "127.0.0.1:9",
            "-L",
            &free_port().to_string(),
            "-s",
            dir.path().join("db").to_str().unwrap(),
            "-l",
            &format!("127.0.0.1:{port}"),
        ],
    );
    wait_rpc_ready(local(port));
    let bystander = std::net::TcpStream::connect(local(port)).unwrap();
    let rss_before = rss_kib(p.pid());

    let mut s = std::net::TcpStream::connect(local(port)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)),
        "garbage did not close the connection"
    );

    // A request whose single param announces 3 GB: refused from its header.
    let mut s = std::net::TcpStream::connect(local(port)).unwrap();
    s.write_all(&[
        0x94, 0x00, 0x01, 0xa1, b'm', 0x91, 0xc6, 0xb2, 0xd0, 0x5e, 0x00,
    ])
    .unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)),
        "oversized frame did not close the connection"
    );
    assert!(
        rss_kib(p.pid()) < rss_before + 64 * 1024,
        "the announced size was allocated"
    );

    assert!(p.is_alive());
    // The bystander connection and new connections are unaffected.
    let mut c = kumo::net::rpc_client::BlockingClient::connect(local(port), Duration::from_secs(5))
        .unwrap();
    assert_eq!(c.call("KeepAlive", &[]), Ok(Value::Nil));
    drop(bystander);
}

#[test]
fn pending_calls_fail_with_node_lost_within_the_reconnect_budget_after_kill_9() {
    // A real kumo server, stopped with SIGSTOP once the link is up, so that calls stay
    // pending (the kernel still takes the bytes) until it is killed with SIGKILL.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = spawn(
        dir.path(),
        "srv",
        &[
            "server",
            "-m",
            "127.0.0.1:9",
            "-L",
            &free_port().to_string(),
            "-s",
            dir.path().join("db").to_str().unwrap(),
            "-l",
            &format!("127.0.0.1:{port}"),
        ],
    );
    wait_rpc_ready(local(port));

    let connect_timeout = Duration::from_millis(500);
    let retry_limit = 2;
    let client = net::Net::start(net::Config {
        workers: 1,
        senders: 1,
        connect_timeout,
        retry_limit,
        keepalive: Duration::from_secs(1),
    })
    .unwrap();
    let peer = Peer::new(&client, local(port));
    assert_eq!(
        peer.call_wait("KeepAlive", &[], Duration::from_secs(10)),
        Ok(Value::Nil)
    );
    unsafe { libc::kill(server.pid(), libc::SIGSTOP) };
    // SIGSTOP lands asynchronously; wait until every thread is stopped.
    let pid = server.pid();
    common::wait_until(Duration::from_secs(5), "the server to stop", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('T')
            })
            .unwrap_or(false)
    });
    let (tx, rx) = mpsc::channel();
    for i in 0..10 {
        let tx = tx.clone();
        peer.call(
            "Echo",
            &[Value::from(i)],
            Duration::from_secs(120),
            Box::new(move |r| tx.send(r).unwrap()),
        );
    }
    let killed = Instant::now();
    server.kill9();
    // Budget: Yn+1 attempts, each at most Ys plus the reconnect delay, plus ticks.
    let budget = (connect_timeout + Duration::from_millis(net::RECONNECT_DELAY_MS))
        * (retry_limit + 1)
        + Duration::from_secs(2);
    for _ in 0..10 {
        let r = rx
            .recv_timeout(budget)
            .expect("a pending call hung past the budget");
        // Sent on the connection that died: they fail as soon as it closes.
        assert_eq!(r, Err(RpcError::Disconnected));
    }
    assert!(killed.elapsed() <= budget, "took {:?}", killed.elapsed());
}

/// A node that accepts the connection and then says nothing (a stopped process,
/// or a link cut after the handshake): the call does not wait for its own long
/// timeout or for TCP. Heartbeats find the link dead within LINK_SILENCE_MAX, the
/// call fails as Disconnected, the role hears of it, and the node is suspect.
#[test]
fn a_silent_node_is_found_dead_by_heartbeats_and_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        // Read nothing, answer nothing, for longer than the call may wait.
        std::thread::sleep(net::LINK_SILENCE_MAX + Duration::from_secs(2));
        drop(conn);
    });
    let client = net::Net::start(net::Config::default()).unwrap();
    let downs = Arc::new(AtomicUsize::new(0));
    let d = downs.clone();
    let peer = Peer::watched(
        &client,
        addr,
        Box::new(move |_, news| {
            if news == LinkNews::Down {
                d.fetch_add(1, Ordering::Relaxed);
            }
        }),
    );
    let t0 = Instant::now();
    let r = peer.call_wait("Echo", &[Value::from(1)], Duration::from_secs(30));
    let took = t0.elapsed();
    assert_eq!(r, Err(RpcError::Disconnected));
    assert!(
        took >= net::LINK_SILENCE_MAX && took < net::LINK_SILENCE_MAX + Duration::from_secs(1),
        "found dead after {took:?}"
    );
    assert!(downs.load(Ordering::Relaxed) >= 1, "the role was not told");
    assert!(peer.is_suspect() && peer.is_failing());
    held.join().unwrap();
}

/// A link that sat idle for longer than LINK_SILENCE_MAX is not silent: its first
/// call after the quiet spell waits for an answer like any other, and a peer that
/// takes a while (but less than LINK_SILENCE_MAX) to answer it is neither dead nor
/// suspect. (Measured from the last response, the link was called dead on the
/// first tick after the call, and the manager faulted a healthy server.)
#[test]
fn a_quiet_link_is_not_silent_when_its_next_call_is_made() {
    struct Slow;
    impl Service for Slow {
        fn call(&self, _method: &str, params: Vec<Value>, reply: Reply) {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(600));
                reply.ok(Value::Array(params));
            });
        }
    }
    let n = net::Net::start(net::Config::default()).unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = n.listen(l, RpcSession::factory(Arc::new(Slow))).unwrap();
    let client = net::Net::start(net::Config::default()).unwrap();
    let downs = Arc::new(AtomicUsize::new(0));
    let d = downs.clone();
    let peer = Peer::watched(
        &client,
        addr,
        Box::new(move |_, news| {
            if news == LinkNews::Down {
                d.fetch_add(1, Ordering::Relaxed);
            }
        }),
    );
    let first = peer.call_wait("Echo", &[Value::from(1)], Duration::from_secs(5));
    assert_eq!(first, Ok(Value::Array(vec![Value::from(1)])));
    std::thread::sleep(net::LINK_SILENCE_MAX + Duration::from_millis(500));
    let second = peer.call_wait("Echo", &[Value::from(2)], Duration::from_secs(5));
    assert_eq!(second, Ok(Value::Array(vec![Value::from(2)])));
    assert_eq!(
        downs.load(Ordering::Relaxed),
        0,
        "a healthy link was reported down"
    );
    assert!(!peer.is_failing());
}

/// A node the role heard was down is heard back at its first answer, once: a
/// reporter tells the managers, so that a cut that healed blames no one.
#[test]
fn a_node_that_answers_again_is_heard_back_once() {
    let addr = local(free_port());
    let client = net::Net::start(net::Config::default()).unwrap();
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = heard.clone();
    let peer = Peer::watched(
        &client,
        addr,
        Box::new(move |a, news| {
            assert_eq!(a, addr);
            h.lock().unwrap().push(news);
        }),
    );
    let r = peer.call_wait("Echo", &[], Duration::from_secs(30));
    assert_eq!(r, Err(RpcError::Unreachable));
    assert_eq!(*heard.lock().unwrap(), vec![LinkNews::Down]);
    let server = net::Net::start(net::Config::default()).unwrap();
    let l = std::net::TcpListener::bind(addr).unwrap();
    server
        .listen(l, RpcSession::factory(Arc::new(Echo)))
        .unwrap();
    for i in 0..3 {
        let r = peer.call_wait("Echo", &[Value::from(i)], Duration::from_secs(5));
        assert_eq!(r, Ok(Value::Array(vec![Value::from(i)])));
    }
    assert_eq!(*heard.lock().unwrap(), vec![LinkNews::Down, LinkNews::Back]);
    assert!(!peer.is_failing() && !peer.was_down_within(Duration::from_secs(60)));
}

/// A connect that is refused fails the calls waiting for it at once, as not sent.
#[test]
fn a_refused_connect_fails_its_calls_at_once() {
    let addr = local(free_port());
    let client = net::Net::start(net::Config::default()).unwrap();
    let peer = Peer::new(&client, addr);
    let t0 = Instant::now();
    let r = peer.call_wait("Echo", &[], Duration::from_secs(30));
    assert_eq!(r, Err(RpcError::Unreachable));
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
}
