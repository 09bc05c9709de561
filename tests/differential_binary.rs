//! Differential testing of the binary protocol against a real memcached (`-B
//! binary`): a seeded generator makes random request sequences over two
//! connections (every opcode, the quiet forms each followed by a NOOP, CAS fresh and
//! stale, counters with and without creation, expiry, oversized values, malformed
//! packets), sends each to memcached and to kumo's `-b` listener, and compares the
//! response packets byte for byte.
//!
//! The intended differences are in [`DIFFERENCES`]. A failure prints the seed, the
//! step and the recent history; `KUMO_DIFF_SEED=N` replays it, `KUMO_DIFF_SEEDS`
//! and `KUMO_DIFF_OPS` set how many seeds and steps run.

mod common;

use common::memcached::start_memcached_binary;
use common::{Cluster, Dice};
use kumo::proto::membin::{self, op, HEADER_SIZE, REQUEST};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Where kumo answers differently from memcached on purpose, and how the
/// comparison allows for it.
const DIFFERENCES: &[&str] = &[
    "CAS values: each server has its own; the CAS field of every response is compared \
     as zero or not, and each side is sent the CAS it gave",
    "VERSION's body (kumo's names its own version); not compared",
    "STAT values; not generated",
    "TOUCH and GAT give a key a new CAS in kumo (the CAS is the record's version); \
     after either, neither side's old CAS is used again",
    "a counter shortened by DECREMENT is padded with spaces by memcached only when it \
     rewrites the item in place (which depends on other connections); kumo always \
     pads. Such values are compared without trailing spaces, and the generator does \
     not append to or prepend to a counter until it is set again",
    "an unknown opcode: memcached skips the body after the extras and key it already \
     read (eating bytes of the next request); kumo skips exactly the packet. The \
     generator sends unknown opcodes without extras or key, where both agree",
    "VERBOSITY, an unknown opcode with extras in memcached 1.6: not generated",
    "a counter of white space only: memcached reads on past the value's end (what it \
     finds there decides), kumo answers that it is not a number. The generator makes \
     no such value",
];

/// The largest value either server takes, less memcached's item overhead.
const VALUE_MAX: usize = 1 << 20;

struct Side {
    addr: SocketAddr,
    conns: [TcpStream; 2],
    /// The CAS this server last gave for each key.
    cas: HashMap<Vec<u8>, u64>,
}

fn open(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

impl Side {
    fn new(addr: SocketAddr) -> Side {
        Side {
            addr,
            conns: [open(addr), open(addr)],
            cas: HashMap::new(),
        }
    }

    fn send(&mut self, c: usize, b: &[u8]) {
        self.conns[c].write_all(b).unwrap();
    }

    /// One response packet.
    fn packet(&mut self, c: usize) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_SIZE];
        self.conns[c].read_exact(&mut h).unwrap();
        let body = u32::from_be_bytes(h[8..12].try_into().unwrap()) as usize;
        let mut b = vec![0u8; body];
        self.conns[c].read_exact(&mut b).unwrap();
        h.extend(b);
        h
    }

    /// Expects the connection to be closed by the server, then opens it again.
    fn reopen_after_close(&mut self, c: usize) {
        let mut b = [0u8; 64];
        match self.conns[c].read(&mut b) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("the connection was to close, but {n} more bytes came"),
        }
        self.conns[c] = open(self.addr);
    }
}

/// One request, rendered per side (the CAS differs).
#[derive(Debug, Clone)]
struct Step {
    opcode: u8,
    key: Vec<u8>,
    extras: Vec<u8>,
    value: Vec<u8>,
    /// Send a CAS: the one this side gave (fresh) or another one.
    cas: Option<bool>,
    /// The server closes the connection after its answer.
    closes: bool,
    /// Sent with a wrong magic byte: the server closes without a word.
    bad_magic: bool,
}

fn generate(d: &mut Dice, prefix: &str, counters: &mut HashSet<Vec<u8>>) -> Step {
    let key = format!("{prefix}{}", d.pick(8)).into_bytes();
    let exptime = |d: &mut Dice| -> u32 { [0u32, 100_000, u32::MAX][d.pick(3)] };
    let value = |d: &mut Dice| -> Vec<u8> {
        let mut v: Vec<u8> = match d.pick(8) {
            0 => Vec::new(),
            1 => d.pick(1000).to_string().into_bytes(),
            2 if d.chance(10) => vec![b'x'; VALUE_MAX + 1],
            _ => (0..d.pick(30))
                .map(|_| b"ab\r\n 0\x001"[d.pick(8)])
                .collect(),
        };
        // See DIFFERENCES: no value of white space only.
        if !v.is_empty() && v.iter().all(|b| b" \t\r\n".contains(b)) {
            v.push(b'a');
        }
        v
    };
    let step = |opcode, key, extras, value, cas| Step {
        opcode,
        key,
        extras,
        value,
        cas,
        closes: false,
        bad_magic: false,
    };
    let cas = |d: &mut Dice| match d.pick(4) {
        0 => Some(true),
        1 => Some(false),
        _ => None,
    };
    match d.pick(20) {
        0..=4 => {
            let opcode = [op::GET, op::GETQ, op::GETK, op::GETKQ][d.pick(4)];
            step(opcode, key, Vec::new(), Vec::new(), None)
        }
        5..=8 => {
            let opcode = [
                op::SET,
                op::SETQ,
                op::ADD,
                op::ADDQ,
                op::REPLACE,
                op::REPLACEQ,
            ][d.pick(6)];
            let flags = [0u32, 1, u32::MAX, d.pick(1 << 16) as u32][d.pick(4)];
            let mut extras = flags.to_be_bytes().to_vec();
            extras.extend_from_slice(&exptime(d).to_be_bytes());
            let v = value(d);
            let cas = cas(d);
            // Only a set that cannot be refused ends a counter (see DIFFERENCES).
            if matches!(opcode, op::SET | op::SETQ) && cas.is_none() && v.len() <= VALUE_MAX {
                counters.remove(&key);
            }
            step(opcode, key, extras, v, cas)
        }
        9 if !counters.contains(&key) => {
            let opcode = [op::APPEND, op::APPENDQ, op::PREPEND, op::PREPENDQ][d.pick(4)];
            let v = value(d);
            step(opcode, key, Vec::new(), v, cas(d))
        }
        10 | 11 => {
            let opcode = [op::INCREMENT, op::INCREMENTQ, op::DECREMENT, op::DECREMENTQ][d.pick(4)];
            counters.insert(key.clone());
            let mut extras = [0u64, 1, 7, u64::MAX][d.pick(4)].to_be_bytes().to_vec();
            extras.extend_from_slice(&[0u64, 5, 100][d.pick(3)].to_be_bytes());
            extras.extend_from_slice(&[0u32, 100_000, u32::MAX, u32::MAX][d.pick(4)].to_be_bytes());
            step(opcode, key, extras, Vec::new(), cas(d))
        }
        12 | 13 => {
            let opcode = [op::DELETE, op::DELETEQ][d.pick(2)];
            step(opcode, key, Vec::new(), Vec::new(), cas(d))
        }
        14 => {
            let opcode = [op::TOUCH, op::GAT, op::GATQ, op::GATK, op::GATKQ][d.pick(5)];
            let extras = exptime(d).to_be_bytes().to_vec();
            step(opcode, key, extras, Vec::new(), None)
        }
        15 if d.chance(10) => {
            let opcode = [op::FLUSH, op::FLUSHQ][d.pick(2)];
            step(opcode, Vec::new(), Vec::new(), Vec::new(), None)
        }
        16 => step(op::NOOP, Vec::new(), Vec::new(), Vec::new(), None),
        17 => {
            // An unknown opcode, without extras or key (see DIFFERENCES).
            let opcode = [0x1f, 0x25, 0x50, 0xee][d.pick(4)];
            let v = (0..d.pick(10)).map(|i| i as u8).collect();
            step(opcode, Vec::new(), Vec::new(), v, None)
        }
        18 if d.chance(20) => {
            // Malformed: memcached answers invalid arguments and closes.
            let (opcode, extras, value) = [
                (op::GET, vec![0; 4], Vec::new()),
                (op::SET, vec![0; 4], b"x".to_vec()),
                (op::DELETE, Vec::new(), b"x".to_vec()),
                (op::INCREMENT, vec![0; 16], Vec::new()),
            ][d.pick(4)]
            .clone();
            Step {
                closes: true,
                ..step(opcode, key, extras, value, None)
            }
        }
        19 if d.chance(10) => Step {
            closes: true,
            bad_magic: true,
            ..step(op::GET, key, Vec::new(), Vec::new(), None)
        },
        _ => step(op::GET, key, Vec::new(), Vec::new(), None),
    }
}

fn render(side: &Side, s: &Step) -> Vec<u8> {
    let cas = match s.cas {
        None => 0,
        Some(fresh) => match side.cas.get(&s.key) {
            Some(&c) if fresh => c,
            Some(&c) => c.wrapping_add(1_000_003),
            None => u64::MAX - 7,
        },
    };
    let body = s.extras.len() + s.key.len() + s.value.len();
    let magic = if s.bad_magic { 0x42 } else { REQUEST };
    let mut b = vec![magic, s.opcode];
    b.extend_from_slice(&(s.key.len() as u16).to_be_bytes());
    b.push(s.extras.len() as u8);
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(&(body as u32).to_be_bytes());
    b.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    b.extend_from_slice(&cas.to_be_bytes());
    b.extend_from_slice(&s.extras);
    b.extend_from_slice(&s.key);
    b.extend_from_slice(&s.value);
    b
}

/// Masks what DIFFERENCES allows in one response to `s`, keeping the CAS it gave.
fn normalise(side: &mut Side, s: &Step, mut p: Vec<u8>, counters: &HashSet<Vec<u8>>) -> Vec<u8> {
    let cas = u64::from_be_bytes(p[16..24].try_into().unwrap());
    let status = u16::from_be_bytes([p[6], p[7]]);
    if cas != 0 && status == 0 && !s.key.is_empty() {
        side.cas.insert(s.key.clone(), cas);
    }
    if cas != 0 {
        p[16..24].copy_from_slice(&1u64.to_be_bytes());
    }
    if p[1] == op::VERSION {
        p.truncate(HEADER_SIZE);
    }
    let is_get = matches!(
        p[1],
        op::GET | op::GETQ | op::GETK | op::GETKQ | op::GAT | op::GATQ | op::GATK | op::GATKQ
    );
    if is_get && status == 0 && counters.contains(&s.key) {
        while p.last() == Some(&b' ') {
            p.pop();
        }
        let body = (p.len() - HEADER_SIZE) as u32;
        p[8..12].copy_from_slice(&body.to_be_bytes());
    }
    p
}

fn run(seed: u64, steps: usize, memcached: SocketAddr, kumo: SocketAddr) {
    let mut d = Dice::new(seed);
    let prefix = format!("b{seed}-");
    let mut mc = Side::new(memcached);
    let mut km = Side::new(kumo);
    let mut counters = HashSet::new();
    // Keys ever counted: their values are compared without trailing spaces.
    let mut padded: HashSet<Vec<u8>> = HashSet::new();
    let mut history: Vec<String> = Vec::new();
    for i in 0..steps {
        let s = generate(&mut d, &prefix, &mut counters);
        padded.extend(counters.iter().cloned());
        let c = d.pick(2);
        history.push(format!("{i} conn {c}: {s:?}").chars().take(300).collect());
        let mut answers = Vec::new();
        for side in [&mut mc, &mut km] {
            let mut bytes = render(side, &s);
            let q = membin::is_quiet(s.opcode);
            if q {
                bytes.extend(render(
                    side,
                    &Step {
                        opcode: op::NOOP,
                        key: Vec::new(),
                        extras: Vec::new(),
                        value: Vec::new(),
                        cas: None,
                        closes: false,
                        bad_magic: false,
                    },
                ));
            }
            side.send(c, &bytes);
            let mut got = Vec::new();
            while !s.bad_magic {
                let p = side.packet(c);
                let done = !q || p[1] == op::NOOP;
                got.extend(normalise(side, &s, p, &padded));
                if done {
                    break;
                }
            }
            if s.closes {
                side.reopen_after_close(c);
            }
            answers.push(got);
        }
        // See DIFFERENCES: after TOUCH or GAT, no side's old CAS is used.
        if matches!(
            s.opcode,
            op::TOUCH | op::GAT | op::GATQ | op::GATK | op::GATKQ
        ) {
            mc.cas.remove(&s.key);
            km.cas.remove(&s.key);
        }
        if answers[0] != answers[1] {
            let shown = common::memcached::history_shown();
            let recent = history[history.len().saturating_sub(shown)..].join("\n  ");
            panic!(
                "binary differential: seed {seed}, step {i}: memcached answered {:02x?}, kumo {:02x?}\n\
                 recent steps:\n  {recent}\n\
                 replay with KUMO_DIFF_SEED={seed} (intended differences: {DIFFERENCES:?})",
                answers[0], answers[1]
            );
        }
    }
}

#[test]
fn random_binary_sequences_get_memcacheds_responses() {
    let mc = start_memcached_binary();
    let c = Cluster::start(3);
    let (seeds, steps) = common::memcached::diff_plan();
    for seed in seeds {
        eprintln!("binary differential: seed {seed}, {steps} steps");
        run(seed, steps, mc.addr, c.gateway_binary_addr);
    }
}
