//! The gateway's bounds on one connection: a client that asks for far more than it
//! reads holds the gateway to its budget (it is paused, not cut off, and gets every
//! answer once it reads), and the idle and stalled-command timeouts close what they
//! should and nothing else.

mod common;
mod conformance;

use common::Cluster;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Resident memory of a process, in bytes.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

const VALUE_BYTES: usize = 1_000_000;
const KEYS: usize = 8;
/// Get lines sent before reading anything: 320 MB of answers asked for.
const LINES: usize = 40;
/// What the gateway may grow to meanwhile: its budget and the values in flight,
/// with room for its threads and buffers, and far from the 320 MB asked for.
const RSS_GROWTH_MAX: u64 = 96 << 20;

#[test]
fn a_reader_that_stops_reading_holds_the_gateway_to_its_budget() {
    let c = Cluster::start(3);
    let mut conn = conformance::Conn::open(c.gateway_addr, "loader");
    let value = |k: usize| vec![b'a' + k as u8; VALUE_BYTES];
    for k in 0..KEYS {
        let mut cmd = format!("set big{k} 0 0 {VALUE_BYTES}\r\n").into_bytes();
        cmd.extend_from_slice(&value(k));
        cmd.extend_from_slice(b"\r\n");
        conn.roundtrip(cmd, b"STORED\r\n");
    }
    let before = rss(c.gateway.pid());
    let mut slow = TcpStream::connect(c.gateway_addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let keys: Vec<String> = (0..KEYS).map(|k| format!("big{k}")).collect();
    let line = format!("get {}\r\n", keys.join(" "));
    for _ in 0..LINES {
        slow.write_all(line.as_bytes()).unwrap();
    }
    // The gateway is held back, not the other clients.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut peak = before;
    while Instant::now() < deadline {
        conn.roundtrip("get big0x\r\n", "END\r\n");
        peak = peak.max(rss(c.gateway.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "gateway RSS {} MB before, {} MB at most while {} MB of answers waited",
        before >> 20,
        peak >> 20,
        (LINES * KEYS * VALUE_BYTES) >> 20
    );
    assert!(
        peak < before + RSS_GROWTH_MAX,
        "the gateway grew from {} MB to {} MB for a client that reads nothing",
        before >> 20,
        peak >> 20
    );
    // Now it reads: every answer comes, whole and in order.
    let mut reader = std::io::BufReader::with_capacity(1 << 20, slow);
    for l in 0..LINES {
        for (k, key) in keys.iter().enumerate() {
            let mut header = String::new();
            std::io::BufRead::read_line(&mut reader, &mut header).unwrap();
            assert_eq!(
                header,
                format!("VALUE {key} 0 {VALUE_BYTES}\r\n"),
                "line {l}"
            );
            let mut data = vec![0; VALUE_BYTES + 2];
            reader.read_exact(&mut data).unwrap();
            assert!(data[..VALUE_BYTES] == value(k)[..], "line {l} key {k}");
        }
        let mut end = String::new();
        std::io::BufRead::read_line(&mut reader, &mut end).unwrap();
        assert_eq!(end, "END\r\n", "line {l}");
    }
}

/// The same in the binary protocol: GETKs pipelined for 320 MB, nothing read.
#[test]
fn a_binary_reader_that_stops_reading_holds_the_gateway_to_its_budget() {
    let c = Cluster::start(3);
    let mut conn = conformance::Conn::open(c.gateway_addr, "loader");
    let value = |k: usize| vec![b'A' + k as u8; VALUE_BYTES];
    for k in 0..KEYS {
        let mut cmd = format!("set bin{k} 3 0 {VALUE_BYTES}\r\n").into_bytes();
        cmd.extend_from_slice(&value(k));
        cmd.extend_from_slice(b"\r\n");
        conn.roundtrip(cmd, b"STORED\r\n");
    }
    let before = rss(c.gateway.pid());
    let mut slow = TcpStream::connect(c.gateway_binary_addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // GETK (0x0c), opaque = the request's number.
    let getk = |key: &str, opaque: u32| {
        let mut p = vec![0x80, 0x0c];
        p.extend_from_slice(&(key.len() as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(&(key.len() as u32).to_be_bytes());
        p.extend_from_slice(&opaque.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(key.as_bytes());
        p
    };
    let mut batch = Vec::new();
    for l in 0..LINES {
        for k in 0..KEYS {
            batch.extend(getk(&format!("bin{k}"), (l * KEYS + k) as u32));
        }
    }
    slow.write_all(&batch).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut peak = before;
    while Instant::now() < deadline {
        conn.roundtrip("get bin0x\r\n", "END\r\n");
        peak = peak.max(rss(c.gateway.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "binary: gateway RSS {} MB before, {} MB at most while {} MB of answers waited",
        before >> 20,
        peak >> 20,
        (LINES * KEYS * VALUE_BYTES) >> 20
    );
    assert!(
        peak < before + RSS_GROWTH_MAX,
        "the gateway grew from {} MB to {} MB for a binary client that reads nothing",
        before >> 20,
        peak >> 20
    );
    let mut reader = std::io::BufReader::with_capacity(1 << 20, slow);
    for n in 0..LINES * KEYS {
        let k = n % KEYS;
        let key = format!("bin{k}");
        let mut head = [0u8; 24];
        reader.read_exact(&mut head).unwrap();
        assert_eq!((head[0], head[1], head[7]), (0x81, 0x0c, 0), "answer {n}");
        assert_eq!(
            u32::from_be_bytes(head[12..16].try_into().unwrap()),
            n as u32
        );
        let body = u32::from_be_bytes(head[8..12].try_into().unwrap()) as usize;
        assert_eq!(body, 4 + key.len() + VALUE_BYTES, "answer {n}");
        let mut data = vec![0; body];
        reader.read_exact(&mut data).unwrap();
        assert_eq!(&data[..4], &3u32.to_be_bytes(), "flags of answer {n}");
        assert_eq!(&data[4..4 + key.len()], key.as_bytes());
        assert!(data[4 + key.len()..] == value(k)[..], "value of answer {n}");
    }
}

/// Reads until the server closes the connection; returns how long that took.
fn closed_within(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(start.elapsed())
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn idle_and_stalled_connections_time_out_and_busy_ones_do_not() {
    let c = Cluster::start(3);
    let dir = std::env::temp_dir().join(format!("kumo-timeouts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr: SocketAddr = common::local(common::free_port());
    let manager = c.live_manager().to_string();
    let _gw = common::spawn(
        &dir,
        "gateway-timeouts",
        &[
            "gateway",
            "-t",
            &addr.to_string(),
            "-m",
            &manager,
            "--idle-timeout",
            "2",
            "--command-timeout",
            "1",
        ],
    );
    common::wait_until(Duration::from_secs(10), "the gateway to serve", || {
        let Ok(mut s) = TcpStream::connect(addr) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"get nothing\r\n").unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).is_ok() && &b == b"END\r\n"
    });
    let idle = TcpStream::connect(addr).unwrap();
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(b"set k 0 0 10\r\nabc").unwrap();
    let mut busy = conformance::Conn::open(addr, "busy");
    let stalled_closed = std::thread::spawn(move || closed_within(stalled, Duration::from_secs(8)));
    let idle_closed = std::thread::spawn(move || closed_within(idle, Duration::from_secs(8)));
    // A connection that keeps sending commands stays.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        busy.send(b"version\r\n");
        assert!(busy.read_line().starts_with(b"VERSION "));
        std::thread::sleep(Duration::from_millis(300));
    }
    let stalled = stalled_closed
        .join()
        .unwrap()
        .expect("the stalled set was not cut off");
    assert!(
        stalled < Duration::from_millis(3500),
        "a value stalled for 1 s closed after {stalled:?}"
    );
    let idle = idle_closed
        .join()
        .unwrap()
        .expect("the idle connection stayed open");
    assert!(
        idle >= Duration::from_millis(1500) && idle < Duration::from_millis(4500),
        "an idle connection with a 2 s timeout closed after {idle:?}"
    );
    busy.expect_in_sync();
    let _ = std::fs::remove_dir_all(&dir);
}
