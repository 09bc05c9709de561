//! A value of `-I` bytes passes the gateway held once (issue #13): a set is
//! gathered as it arrives and sent on to its coordinator from where it is, and a
//! get's value goes from the server's answer to the client by reference. The
//! gateway's resident memory is sampled all along, in both protocols, while the
//! client sends and reads slowly, so that every stage holds the value at once.

mod common;

use common::Cluster;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The value: most of the `-I` the gateway is started with.
const VALUE_BYTES: usize = 24 << 20;
const ITEM_MAX: &str = "32m";
/// How much the gateway may grow per value in flight, in values: the value once,
/// and a quarter for the last step of gathering it and for the answers' buffers.
/// A second copy anywhere on the way fails it.
const GROWTH_MAX_VALUES: f64 = 1.5;
/// The client's pieces and its pause between them: slow enough that each stage
/// of the gateway holds the value while the next one starts.
const PIECE_BYTES: usize = 1 << 20;
const PAUSE: Duration = Duration::from_millis(4);

fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Samples a process's resident memory until dropped; `peak` is the most seen.
struct Sampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: i32) -> Sampler {
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Sampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Runs `work` and returns how many values' worth the gateway grew meanwhile.
fn growth(pid: i32, what: &str, work: impl FnOnce()) -> f64 {
    let before = rss(pid);
    let sampler = Sampler::start(pid);
    work();
    let peak = sampler.peak();
    let values = peak.saturating_sub(before) as f64 / VALUE_BYTES as f64;
    eprintln!(
        "{what}: gateway {} MB before, {} MB at most: {values:.2} values held",
        before >> 20,
        peak >> 20
    );
    values
}

fn slowly(conn: &mut TcpStream, bytes: &[u8]) {
    for piece in bytes.chunks(PIECE_BYTES) {
        conn.write_all(piece).unwrap();
        std::thread::sleep(PAUSE);
    }
}

/// Reads exactly `n` bytes in pieces, pausing between them.
fn read_slowly(r: &mut impl Read, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let end = (got + PIECE_BYTES).min(n);
        r.read_exact(&mut out[got..end]).unwrap();
        got = end;
        std::thread::sleep(PAUSE);
    }
    out
}

fn value(seed: u8) -> Vec<u8> {
    (0..VALUE_BYTES)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

#[test]
fn a_value_of_the_item_limit_is_held_once_by_the_gateway() {
    let c = Cluster::start_gateway_with(3, &["-I", ITEM_MAX]);
    let pid = c.gateway.pid();
    let text_value = value(1);
    let binary_value = value(2);
    let mut text = TcpStream::connect(c.gateway_addr).unwrap();
    text.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut binary = TcpStream::connect(c.gateway_binary_addr).unwrap();
    binary
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut results = Vec::new();

    results.push(growth(pid, "text set", || {
        text.write_all(format!("set big 5 0 {VALUE_BYTES}\r\n").as_bytes())
            .unwrap();
        slowly(&mut text, &text_value);
        text.write_all(b"\r\n").unwrap();
        let mut reply = [0u8; 8];
        text.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"STORED\r\n");
    }));

    results.push(growth(pid, "binary set", || {
        let mut packet = vec![0x80, 0x01, 0, 4, 8, 0, 0, 0];
        packet.extend_from_slice(&((8 + 4 + VALUE_BYTES) as u32).to_be_bytes());
        packet.extend_from_slice(&[0; 12]); // opaque, cas
        packet.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 0]); // flags 9, exptime 0
        packet.extend_from_slice(b"bin1");
        binary.write_all(&packet).unwrap();
        slowly(&mut binary, &binary_value);
        let mut head = [0u8; 24];
        binary.read_exact(&mut head).unwrap();
        assert_eq!(
            (head[0], head[1], head[7]),
            (0x81, 0x01, 0),
            "SET answered OK"
        );
        let body = u32::from_be_bytes(head[8..12].try_into().unwrap()) as usize;
        read_slowly(&mut binary, body);
    }));

    results.push(growth(pid, "text get", || {
        text.write_all(b"get big\r\n").unwrap();
        let mut r = BufReader::with_capacity(64 << 10, &mut text);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, format!("VALUE big 5 {VALUE_BYTES}\r\n"));
        let got = read_slowly(&mut r, VALUE_BYTES + 7);
        assert!(got[..VALUE_BYTES] == text_value[..], "the value read back");
        assert_eq!(&got[VALUE_BYTES..], b"\r\nEND\r\n");
    }));

    results.push(growth(pid, "binary get", || {
        let mut packet = vec![0x80, 0x00, 0, 4, 0, 0, 0, 0, 0, 0, 0, 4];
        packet.extend_from_slice(&[0; 12]);
        packet.extend_from_slice(b"bin1");
        binary.write_all(&packet).unwrap();
        let mut head = [0u8; 24];
        binary.read_exact(&mut head).unwrap();
        assert_eq!((head[1], head[7]), (0x00, 0), "GET answered OK");
        let body = u32::from_be_bytes(head[8..12].try_into().unwrap()) as usize;
        assert_eq!(body, 4 + VALUE_BYTES);
        let got = read_slowly(&mut binary, body);
        assert_eq!(&got[..4], &9u32.to_be_bytes(), "the flags");
        assert!(got[4..] == binary_value[..], "the value read back");
    }));

    for (what, v) in ["text set", "binary set", "text get", "binary get"]
        .iter()
        .zip(&results)
    {
        assert!(
            *v <= GROWTH_MAX_VALUES,
            "{what}: the gateway held {v:.2} values' worth for one value"
        );
    }
}
