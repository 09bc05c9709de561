//! rpc_bench: the ceiling of kumo's msgpack-rpc layer. N client connections make
//! pipelined Echo calls against a kumo RPC server in the same process; it prints
//! calls/s with p50 and p99 latency for 1 and 50 connections.
//!
//! Usage: cargo run --release --example rpc_bench [SECONDS_PER_RUN]

use kumo::net::{self, rpc_server::RpcSession, Peer, Reply, Service};
use rmpv::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Calls each connection keeps in flight.
const PIPELINE_DEPTH: usize = 32;

struct Echo;
impl Service for Echo {
    fn call(&self, _method: &str, params: Vec<Value>, reply: Reply) {
        reply.ok(Value::Array(params));
    }
}

struct Run {
    done: AtomicU64,
    stop: AtomicBool,
    latencies_us: Mutex<Vec<u32>>,
}

fn issue(peer: &Arc<Peer>, run: &Arc<Run>) {
    if run.stop.load(Ordering::Relaxed) {
        return;
    }
    let started = Instant::now();
    let (p2, r2) = (peer.clone(), run.clone());
    peer.call(
        "Echo",
        &[Value::from(7u32)],
        Duration::from_secs(30),
        Box::new(move |res| {
            if res.is_ok() {
                r2.done.fetch_add(1, Ordering::Relaxed);
                let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                if let Ok(mut l) = r2.latencies_us.try_lock() {
                    l.push(us);
                }
            }
            issue(&p2, &r2);
        }),
    );
}

fn bench(client: &net::Net, addr: std::net::SocketAddr, conns: usize, secs: u64) {
    let run = Arc::new(Run {
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        latencies_us: Mutex::new(Vec::new()),
    });
    let peers: Vec<_> = (0..conns).map(|_| Peer::new(client, addr)).collect();
    for p in &peers {
        let _ = p.call_wait("Echo", &[], Duration::from_secs(5));
    }
    let start = Instant::now();
    for p in &peers {
        for _ in 0..PIPELINE_DEPTH {
            issue(p, &run);
        }
    }
    std::thread::sleep(Duration::from_secs(secs));
    let done = run.done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    run.stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    let mut l = run.latencies_us.lock().unwrap().clone();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "rpc-bench: conns {conns:>2} depth {PIPELINE_DEPTH} calls/s {:>9.0} p50 {} us p99 {} us",
        done as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let config = net::Config {
        workers: 2,
        senders: 1,
        ..Default::default()
    };
    let server = net::Net::start(config.clone()).expect("server net");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = server
        .listen(listener, RpcSession::factory(Arc::new(Echo)))
        .expect("listen");
    let client = net::Net::start(config).expect("client net");
    for conns in [1, 50] {
        bench(&client, addr, conns, secs);
    }
}
