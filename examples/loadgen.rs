//! loadgen: a closed-loop load generator for any server that speaks the memcached text
//! protocol (memcached itself, twemproxy, a kumo gateway).
//!
//! Every connection has its own thread with a blocking socket and keeps exactly one
//! request in flight, so the generator sleeps in the kernel while it waits and never
//! spins. Keys are `key:<n>`, uniform over `--keys`; each operation's latency goes into
//! a log-linear histogram (about 3% resolution). It prints one line per run:
//!
//!     LABEL get: 123456 ops/s  p50 210us p99 900us p999 2100us  errors 0 misses 0
//!
//! or, with `--json`, one JSON object on one line. It exits non-zero when it cannot
//! connect at all, so scripts can tell a dead target from a slow one.
//!
//! Usage: cargo run --release --example loadgen -- [OPTIONS]   (see --help)
//!
//! Only std: this file also builds on its own with `rustc -O --edition 2021`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const USAGE: &str = "\
loadgen: closed-loop memcached text-protocol load generator

Usage: loadgen [OPTIONS]

Options:
  --addr HOST:PORT     target (default 127.0.0.1:11211)
  --threads N          client thread groups (default 2)
  --conns N            connections per thread group (default 25); every connection
                       has its own OS thread and one request in flight
  --value-size BYTES   size of each stored value (default 32)
  --keys N             key space: key:0 .. key:N-1, chosen uniformly (default 100000)
  --duration SECS      measured time, may be fractional (default 10)
  --mix get|set|R:W    operation mix: all gets, all sets, or R gets to W sets (default get)
  --prefill            set every key once, spread over the connections, before measuring
  --label NAME         name printed at the head of the result (default: the address)
  --json               print the result as one JSON line
  --timeout SECS       connect and per-reply timeout (default 5)
  --ping               send `version` once; exit 0 when the target answers VERSION
  -h, --help           this help
";

/// Longest reply line or value accepted before the reply counts as garbage.
const MAX_LINE: usize = 64 * 1024;
const MAX_VALUE: usize = 64 * 1024 * 1024;

#[derive(Clone)]
struct Opts {
    addr: String,
    threads: usize,
    conns: usize,
    value_size: usize,
    keys: u64,
    duration: Duration,
    /// Out of `read + write` operations, `read` are gets.
    read: u32,
    write: u32,
    prefill: bool,
    label: Option<String>,
    json: bool,
    timeout: Duration,
    ping: bool,
}

fn die(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    eprintln!("try `loadgen --help`");
    exit(2);
}

fn parse_num<T: std::str::FromStr>(name: &str, v: &str) -> T {
    v.parse()
        .unwrap_or_else(|_| die(&format!("{name}: not a number: {v:?}")))
}

fn parse_secs(name: &str, v: &str) -> Duration {
    let s: f64 = parse_num(name, v);
    if !(s.is_finite() && s > 0.0) {
        die(&format!("{name}: must be a positive number of seconds"));
    }
    Duration::from_secs_f64(s)
}

fn parse_args() -> Opts {
    let mut o = Opts {
        addr: "127.0.0.1:11211".into(),
        threads: 2,
        conns: 25,
        value_size: 32,
        keys: 100_000,
        duration: Duration::from_secs(10),
        read: 1,
        write: 0,
        prefill: false,
        label: None,
        json: false,
        timeout: Duration::from_secs(5),
        ping: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // Accept both `--opt value` and `--opt=value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> String {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| die(&format!("{name} needs a value")))
        };
        match name.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                exit(0);
            }
            "--addr" => o.addr = value("--addr"),
            "--threads" => o.threads = parse_num("--threads", &value("--threads")),
            "--conns" => o.conns = parse_num("--conns", &value("--conns")),
            "--value-size" => o.value_size = parse_num("--value-size", &value("--value-size")),
            "--keys" => o.keys = parse_num("--keys", &value("--keys")),
            "--duration" => o.duration = parse_secs("--duration", &value("--duration")),
            "--timeout" => o.timeout = parse_secs("--timeout", &value("--timeout")),
            "--mix" => {
                let m = value("--mix");
                (o.read, o.write) = match m.as_str() {
                    "get" => (1, 0),
                    "set" => (0, 1),
                    _ => match m.split_once(':') {
                        Some((r, w)) => (parse_num("--mix", r), parse_num("--mix", w)),
                        None => die(&format!("--mix: expected get, set or R:W, got {m:?}")),
                    },
                };
                if o.read as u64 + o.write as u64 == 0
                    || o.read as u64 + o.write as u64 > u32::MAX as u64
                {
                    die("--mix: R + W must be between 1 and 2^32-1");
                }
            }
            "--prefill" => o.prefill = true,
            "--label" => o.label = Some(value("--label")),
            "--json" => o.json = true,
            "--ping" => o.ping = true,
            _ => die(&format!("unknown argument {arg:?}")),
        }
        if inline.is_some() && matches!(name.as_str(), "--prefill" | "--json" | "--ping") {
            die(&format!("{name} takes no value"));
        }
    }
    if o.threads == 0 || o.conns == 0 {
        die("--threads and --conns must be at least 1");
    }
    if o.keys == 0 {
        die("--keys must be at least 1");
    }
    if o.value_size > MAX_VALUE {
        die(&format!("--value-size must be at most {MAX_VALUE}"));
    }
    o
}

fn mix_name(o: &Opts) -> String {
    match (o.read, o.write) {
        (_, 0) => "get".into(),
        (0, _) => "set".into(),
        (r, w) => format!("{r}:{w}"),
    }
}

// ---------------------------------------------------------------------------------------
// Histogram: exact below 64us, then 32 linear sub-buckets per power of two (<= 3.2% wide).

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS; // 32
const LINEAR: u64 = 2 * SUB; // values below 64 have their own bucket
const MAX_EXP: u32 = 40; // clamp at 2^41 us (~25 days)
const BUCKETS: usize = (LINEAR + (MAX_EXP as u64 - SUB_BITS as u64) * SUB) as usize;

struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let v = v.min((1u64 << (MAX_EXP + 1)) - 1);
        let exp = 63 - v.leading_zeros(); // >= SUB_BITS + 1
        let shift = exp - SUB_BITS;
        let mantissa = (v >> shift) - SUB; // 0..SUB
        (LINEAR + (exp - SUB_BITS - 1) as u64 * SUB + mantissa) as usize
    }

    /// The highest value that falls in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < LINEAR {
            return i;
        }
        let exp = (i - LINEAR) / SUB + SUB_BITS as u64 + 1;
        let mantissa = (i - LINEAR) % SUB + SUB;
        ((mantissa + 1) << (exp - SUB_BITS as u64)) - 1
    }

    fn record(&mut self, us: u64) {
        self.counts[Self::index(us)] += 1;
        self.total += 1;
        self.sum += us as u128;
        self.max = self.max.max(us);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1), reported as its bucket's upper bound.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }

    fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }
}

// ---------------------------------------------------------------------------------------

/// xorshift64*: fast, good enough for picking keys.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 the seed so that nearby seeds give unrelated streams; never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n without modulo bias worth mentioning (Lemire's multiply-shift).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Hit,
    Miss,
    Stored,
    /// The server answered, but with an error or something unexpected. The connection
    /// is still in step when `resync` is false.
    ServerError {
        resync: bool,
    },
}

/// One connection with one request in flight at a time.
struct Conn {
    addr: SocketAddr,
    timeout: Duration,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    req: Vec<u8>,
    line: Vec<u8>,
    data: Vec<u8>,
    value: Vec<u8>,
}

impl Conn {
    fn connect(addr: SocketAddr, timeout: Duration, value_size: usize) -> std::io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let writer = s.try_clone()?;
        // A value that is not all one byte, so a broken proxy that mangles data shows.
        let value = (0..value_size).map(|i| b'a' + (i % 26) as u8).collect();
        Ok(Conn {
            addr,
            timeout,
            reader: BufReader::with_capacity(64 * 1024, s),
            writer,
            req: Vec::with_capacity(value_size + 64),
            line: Vec::with_capacity(256),
            data: Vec::new(),
            value,
        })
    }

    fn reconnect(&mut self) -> std::io::Result<()> {
        let fresh = Conn::connect(self.addr, self.timeout, self.value.len())?;
        *self = fresh;
        Ok(())
    }

    /// Reads one `\r\n`-terminated line into `self.line`, without the terminator.
    fn read_line(&mut self) -> std::io::Result<()> {
        self.line.clear();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ));
        }
        if !self.line.ends_with(b"\r\n") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "reply line too long or not CRLF-terminated",
            ));
        }
        self.line.truncate(self.line.len() - 2);
        Ok(())
    }

    fn is_error_line(line: &[u8]) -> bool {
        line == b"ERROR" || line.starts_with(b"CLIENT_ERROR") || line.starts_with(b"SERVER_ERROR")
    }

    fn get(&mut self, key: u64) -> std::io::Result<Outcome> {
        self.req.clear();
        write!(self.req, "get key:{key}\r\n")?;
        self.writer.write_all(&self.req)?;
        let mut hit = false;
        loop {
            self.read_line()?;
            if self.line == b"END" {
                return Ok(if hit { Outcome::Hit } else { Outcome::Miss });
            }
            if Self::is_error_line(&self.line) {
                return Ok(Outcome::ServerError { resync: false });
            }
            // VALUE <key> <flags> <bytes> [<cas>]
            let bytes = {
                let mut f = self.line.split(|&b| b == b' ');
                let ok = f.next() == Some(&b"VALUE"[..]) && !hit;
                let key_ok = f.next().is_some();
                let flags_ok = f.next().is_some();
                let bytes = f
                    .next()
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|b| b.parse::<usize>().ok());
                match bytes {
                    Some(n) if ok && key_ok && flags_ok && n <= MAX_VALUE => n,
                    _ => return Ok(Outcome::ServerError { resync: true }),
                }
            };
            self.data.resize(bytes + 2, 0);
            self.reader.read_exact(&mut self.data)?;
            if !self.data.ends_with(b"\r\n") {
                return Ok(Outcome::ServerError { resync: true });
            }
            hit = true;
        }
    }

    fn set(&mut self, key: u64) -> std::io::Result<Outcome> {
        self.req.clear();
        write!(self.req, "set key:{key} 0 0 {}\r\n", self.value.len())?;
        self.req.extend_from_slice(&self.value);
        self.req.extend_from_slice(b"\r\n");
        self.writer.write_all(&self.req)?;
        self.read_line()?;
        if self.line == b"STORED" {
            Ok(Outcome::Stored)
        } else if self.line == b"NOT_STORED" || Self::is_error_line(&self.line) {
            Ok(Outcome::ServerError { resync: false })
        } else {
            Ok(Outcome::ServerError { resync: true })
        }
    }

    fn version(&mut self) -> std::io::Result<String> {
        self.writer.write_all(b"version\r\n")?;
        self.read_line()?;
        Ok(String::from_utf8_lossy(&self.line).into_owned())
    }
}

#[derive(Default)]
struct Counts {
    gets: u64,
    sets: u64,
    misses: u64,
    errors: u64,
}

struct WorkerResult {
    hist: Histogram,
    counts: Counts,
    prefill_errors: u64,
    /// When this connection finished its last measured operation.
    finished: Instant,
    first_error: Option<String>,
}

/// One operation with error accounting: reconnects after I/O errors and garbage replies,
/// pausing briefly so a dead target does not turn this into a spin.
fn one_op(
    conn: &mut Conn,
    is_get: bool,
    key: u64,
    first_error: &mut Option<String>,
) -> (Option<Outcome>, u64) {
    let res = if is_get { conn.get(key) } else { conn.set(key) };
    let note = |first_error: &mut Option<String>, msg: String| {
        if first_error.is_none() {
            *first_error = Some(msg);
        }
    };
    match res {
        Ok(Outcome::ServerError { resync }) => {
            note(
                first_error,
                format!("server replied {:?}", String::from_utf8_lossy(&conn.line)),
            );
            if resync {
                if let Err(e) = conn.reconnect() {
                    note(first_error, format!("reconnect: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            (Some(Outcome::ServerError { resync }), 1)
        }
        Ok(o) => (Some(o), 0),
        Err(e) => {
            note(
                first_error,
                format!("{}: {e}", if is_get { "get" } else { "set" }),
            );
            std::thread::sleep(Duration::from_millis(100));
            if let Err(e) = conn.reconnect() {
                note(first_error, format!("reconnect: {e}"));
            }
            (None, 1)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn worker(
    mut conn: Conn,
    index: u64,
    total_conns: u64,
    o: Arc<Opts>,
    start: Arc<Barrier>,
    go: Arc<(std::sync::Mutex<Option<Instant>>, std::sync::Condvar)>,
    stop: Arc<AtomicBool>,
) -> WorkerResult {
    let mut first_error = None;
    let mut prefill_errors = 0;
    if o.prefill {
        let mut key = index;
        while key < o.keys {
            let (_, e) = one_op(&mut conn, false, key, &mut first_error);
            prefill_errors += e;
            key += total_conns;
        }
    }
    start.wait();
    // Main sets the start instant once every connection has prefilled.
    let begin = {
        let (lock, cv) = &*go;
        let mut g = lock.lock().unwrap();
        while g.is_none() {
            g = cv.wait(g).unwrap();
        }
        g.unwrap()
    };
    let deadline = begin + o.duration;
    let seed = index ^ (begin.elapsed().as_nanos() as u64) ^ ((std::process::id() as u64) << 32);
    let mut rng = Rng::new(seed);
    let mut hist = Histogram::new();
    let mut counts = Counts::default();
    let total = o.read as u64 + o.write as u64;
    let mut finished = begin;
    loop {
        let now = Instant::now();
        if now >= deadline || stop.load(Ordering::Relaxed) {
            break;
        }
        let is_get = o.write == 0 || (o.read != 0 && rng.below(total) < o.read as u64);
        let key = rng.below(o.keys);
        let t0 = Instant::now();
        let (outcome, errors) = one_op(&mut conn, is_get, key, &mut first_error);
        let t1 = Instant::now();
        counts.errors += errors;
        if let Some(outcome) = outcome {
            if is_get {
                counts.gets += 1;
            } else {
                counts.sets += 1;
            }
            if outcome == Outcome::Miss {
                counts.misses += 1;
            }
            hist.record(t1.duration_since(t0).as_micros() as u64);
        }
        finished = t1;
    }
    WorkerResult {
        hist,
        counts,
        prefill_errors,
        finished,
        first_error,
    }
}

use kumo::tools::json_str;

fn resolve(addr: &str) -> SocketAddr {
    match addr.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) => die(&format!("--addr {addr}: no address")),
        Err(e) => die(&format!("--addr {addr}: {e}")),
    }
}

fn main() {
    let o = parse_args();
    let addr = resolve(&o.addr);

    if o.ping {
        match Conn::connect(addr, o.timeout, 0).and_then(|mut c| c.version()) {
            Ok(v) if v.starts_with("VERSION") => {
                println!("{v}");
                exit(0);
            }
            Ok(v) => {
                eprintln!("loadgen: {}: unexpected reply to version: {v:?}", o.addr);
                exit(1);
            }
            Err(e) => {
                eprintln!("loadgen: {}: {e}", o.addr);
                exit(1);
            }
        }
    }

    let label = o.label.clone().unwrap_or_else(|| o.addr.clone());
    let total_conns = o.threads * o.conns;
    // Open every connection up front: a target that refuses them is reported, not measured.
    let mut conns = Vec::with_capacity(total_conns);
    for i in 0..total_conns {
        match Conn::connect(addr, o.timeout, o.value_size) {
            Ok(c) => conns.push(c),
            Err(e) => {
                eprintln!(
                    "loadgen: {label}: connection {i} of {total_conns} to {}: {e}",
                    o.addr
                );
                exit(1);
            }
        }
    }

    let o = Arc::new(o);
    let start = Arc::new(Barrier::new(total_conns + 1));
    let go = Arc::new((std::sync::Mutex::new(None), std::sync::Condvar::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(total_conns);
    for (i, conn) in conns.into_iter().enumerate() {
        let (o, start, go, stop) = (o.clone(), start.clone(), go.clone(), stop.clone());
        let h = std::thread::Builder::new()
            .name(format!("loadgen-{i}"))
            .stack_size(256 * 1024)
            .spawn(move || worker(conn, i as u64, total_conns as u64, o, start, go, stop))
            .unwrap_or_else(|e| die(&format!("cannot start a thread: {e}")));
        handles.push(h);
    }

    let prefill_started = Instant::now();
    start.wait();
    let prefill_secs = prefill_started.elapsed().as_secs_f64();
    let begin = Instant::now();
    {
        let (lock, cv) = &*go;
        *lock.lock().unwrap() = Some(begin);
        cv.notify_all();
    }

    let mut hist = Histogram::new();
    let mut counts = Counts::default();
    let mut prefill_errors = 0;
    let mut end = begin;
    let mut first_error = None;
    for h in handles {
        let r = match h.join() {
            Ok(r) => r,
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                die("a connection thread panicked");
            }
        };
        hist.merge(&r.hist);
        counts.gets += r.counts.gets;
        counts.sets += r.counts.sets;
        counts.misses += r.counts.misses;
        counts.errors += r.counts.errors;
        prefill_errors += r.prefill_errors;
        end = end.max(r.finished);
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    // The measured window: from the common start to the last reply, never less than asked
    // for (every connection keeps going until the deadline).
    let secs = end
        .duration_since(begin)
        .as_secs_f64()
        .max(o.duration.as_secs_f64());
    let ops = counts.gets + counts.sets;
    let ops_per_sec = ops as f64 / secs;
    let (p50, p99, p999) = (
        hist.quantile(0.50),
        hist.quantile(0.99),
        hist.quantile(0.999),
    );
    let mix = mix_name(&o);

    if o.json {
        println!(
            "{{\"label\":{},\"addr\":{},\"mix\":{},\"threads\":{},\"conns\":{},\"value_size\":{},\"keys\":{},\
\"prefill\":{},\"prefill_secs\":{:.3},\"prefill_errors\":{},\"secs\":{:.3},\"ops\":{},\"gets\":{},\"sets\":{},\
\"ops_per_sec\":{:.0},\"errors\":{},\"misses\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"mean_us\":{:.1}}}",
            json_str(&label),
            json_str(&o.addr),
            json_str(&mix),
            o.threads,
            total_conns,
            o.value_size,
            o.keys,
            o.prefill,
            prefill_secs,
            prefill_errors,
            secs,
            ops,
            counts.gets,
            counts.sets,
            ops_per_sec,
            counts.errors,
            counts.misses,
            p50,
            p99,
            p999,
            hist.max,
            hist.mean(),
        );
    } else {
        println!(
            "{label} {mix}: {ops_per_sec:.0} ops/s  p50 {p50}us p99 {p99}us p999 {p999}us  errors {} misses {}",
            counts.errors, counts.misses
        );
    }
    if o.prefill && prefill_errors > 0 {
        eprintln!("loadgen: {label}: {prefill_errors} errors while prefilling");
    }
    if let Some(e) = first_error {
        eprintln!("loadgen: {label}: first error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_ordered_and_tight() {
        let mut last = 0;
        for v in (0..200_000u64).chain([1 << 30, u64::MAX]) {
            let i = Histogram::index(v);
            assert!(i < BUCKETS);
            assert!(i >= last || v > 200_000);
            last = i;
            if v < (1 << 41) {
                assert!(Histogram::upper(i) >= v);
                assert!(Histogram::upper(i) as f64 <= v as f64 * 1.032 + 1.0);
            }
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.0), 1);
        let p50 = h.quantile(0.5);
        assert!((500..=516).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0), 1000);
    }
}
