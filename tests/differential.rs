//! Differential testing against a real memcached: a seeded generator makes random
//! command sequences over two connections (every storage and retrieval command,
//! noreply, empty and oversized values, counters, expiry in the past and the far
//! future, cas with fresh and stale numbers, flush_all, bad lines), sends each to
//! memcached and to kumo's gateway, and compares the replies byte for byte.
//!
//! The intended differences are in [`DIFFERENCES`], the one place that lists them.
//! A failure prints the seed, the step and the recent history;
//! `KUMO_DIFF_SEED=N` replays one seed, `KUMO_DIFF_SEEDS` and `KUMO_DIFF_OPS` set how
//! many seeds and steps run (`make differential` runs a long series), and
//! `KUMO_DIFF_HISTORY` how many steps a failure shows (default 12).

mod common;

use common::memcached::start_memcached;
use common::{Cluster, Dice};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Where kumo answers differently from memcached on purpose, and how the
/// comparison allows for it.
const DIFFERENCES: &[&str] = &[
    "cas numbers: each server has its own; VALUE lines are compared with the number \
     masked, and `cas` sends each server the number it gave",
    "the version string: `version` is a sync point here and is not compared",
    "touch and gat give a key a new cas number in kumo (the cas is the record's version, \
     and a new exptime is a new version); memcached keeps it. After either, neither \
     side's old number is used again",
    "a counter that incr or decr shortened: memcached pads it with spaces when it \
     rewrites the item in place, which depends on whether another connection still \
     holds the item; kumo always pads. Such values (and their meta sizes) are compared \
     without trailing spaces, and the generator does not append to or prepend to such \
     a counter until it is set again. For the same reason a counter's meta marks \
     (X, W, Z) and whether its key is shown as binary (`k` in base64 with `b`) are not \
     compared: memcached drops them when it makes a new item",
    "incr or decr of a value of white space only: memcached reads on past the value's \
     end (what it finds there decides), kumo answers that it is not a number. The \
     generator makes no such value",
    "meta flags kumo does not honour: h and l (hit before, last access) would make \
     every read a write on three servers, and E would let a client choose the version \
     that orders replicas; kumo refuses them as memcached refuses a flag it does not \
     know. The generator sends none",
    "me (meta debug): kumo shows exp, cas and size, not memcached's slab details; \
     not generated",
    "meta t tokens: compared as there or not and -1 or not, not by their seconds (a \
     second can turn between the two servers)",
    "a t flag before an N or T flag: memcached shows the TTL as it stood when it read \
     the t, kumo the TTL the command leaves. The generator puts N and T first",
    "an mg that wins a recache token (W), makes an item (N) or sets a TTL (T) gives the \
     item a new cas number in kumo, as touch does; neither side's old number is used \
     again after one",
];

/// Keys whose last write was an incr or decr (see DIFFERENCES).
type Counters = std::collections::HashSet<String>;

/// A cas number neither server has given.
const NEVER_GIVEN: u64 = u64::MAX - 7;

/// The largest value either server takes (`-I` 1m, both defaults).
const VALUE_MAX: usize = 1 << 20;

/// One connection to one server, with a reader that knows reply shapes.
struct Side {
    conns: [TcpStream; 2],
    bufs: [Vec<u8>; 2],
    /// The cas number this server last gave for each key.
    cas: HashMap<String, u64>,
    /// The last meta reply handed out a recache token (W).
    won: bool,
}

impl Side {
    fn open(addr: SocketAddr) -> Side {
        let open = || {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.set_nodelay(true).unwrap();
            s
        };
        Side {
            conns: [open(), open()],
            bufs: [Vec::new(), Vec::new()],
            cas: HashMap::new(),
            won: false,
        }
    }

    fn send(&mut self, c: usize, bytes: &[u8]) {
        self.conns[c].write_all(bytes).unwrap();
    }

    fn line(&mut self, c: usize) -> Vec<u8> {
        loop {
            if let Some(i) = self.bufs[c].windows(2).position(|w| w == b"\r\n") {
                return self.bufs[c].drain(..i + 2).collect();
            }
            self.fill(c);
        }
    }

    fn exact(&mut self, c: usize, n: usize) -> Vec<u8> {
        while self.bufs[c].len() < n {
            self.fill(c);
        }
        self.bufs[c].drain(..n).collect()
    }

    fn fill(&mut self, c: usize) {
        let mut b = [0u8; 65536];
        match self.conns[c].read(&mut b) {
            Ok(0) => panic!("the connection closed"),
            Ok(n) => self.bufs[c].extend_from_slice(&b[..n]),
            Err(e) => panic!("no reply: {e}"),
        }
    }

    /// Reads one reply of the given shape, masking cas numbers (and keeping them).
    fn reply(&mut self, c: usize, shape: Shape, key: &str, counters: &Counters) -> Vec<u8> {
        match shape {
            Shape::None => Vec::new(),
            Shape::Line => self.line(c),
            Shape::Meta => self.meta_reply(c, key, counters),
            Shape::UntilNoop => {
                let mut out = Vec::new();
                loop {
                    let r = self.meta_reply(c, key, counters);
                    out.extend_from_slice(&r);
                    if r == b"MN\r\n" {
                        return out;
                    }
                }
            }
            Shape::Values => {
                let mut out = Vec::new();
                loop {
                    let line = self.line(c);
                    let text = String::from_utf8_lossy(&line).into_owned();
                    let words: Vec<&str> = text.trim_end().split(' ').collect();
                    if words[0] != "VALUE" {
                        out.extend_from_slice(&line);
                        return out;
                    }
                    let len: usize = words[3].parse().unwrap();
                    let mut data = self.exact(c, len + 2);
                    if counters.contains(words[1]) {
                        data.truncate(len);
                        while data.last() == Some(&b' ') {
                            data.pop();
                        }
                        data.extend_from_slice(b"\r\n");
                    }
                    let shown = data.len() - 2;
                    let cas = match words.get(4) {
                        Some(cas) => {
                            self.cas.insert(words[1].to_string(), cas.parse().unwrap());
                            " CAS"
                        }
                        None => "",
                    };
                    out.extend_from_slice(
                        format!("VALUE {} {} {shown}{cas}\r\n", words[1], words[2]).as_bytes(),
                    );
                    out.extend_from_slice(&data);
                }
            }
        }
    }

    /// Reads one meta reply about `key`: cas tokens are masked (and kept), TTLs
    /// masked, and a counter's padding trimmed (see DIFFERENCES).
    fn meta_reply(&mut self, c: usize, key: &str, counters: &Counters) -> Vec<u8> {
        let line = self.line(c);
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let mut words: Vec<String> = text.split(' ').map(String::from).collect();
        let mut data = Vec::new();
        if words[0] == "VA" {
            let len: usize = words[1].parse().unwrap();
            data = self.exact(c, len + 2);
            if counters.contains(key) {
                data.truncate(len);
                while data.last() == Some(&b' ') {
                    data.pop();
                }
                data.extend_from_slice(b"\r\n");
                words[1] = (data.len() - 2).to_string();
            }
        }
        if words.iter().any(|w| w == "W") {
            self.won = true;
        }
        if counters.contains(key) {
            // See DIFFERENCES: whether a counter kept its marks.
            words.retain(|w| !matches!(w.as_str(), "W" | "X" | "Z"));
            let encoded = kumo::proto::memmeta::base64_encode(key.as_bytes());
            let shown_binary = format!("k{}", String::from_utf8(encoded).unwrap());
            if let Some(at) = words.iter().position(|w| *w == shown_binary) {
                words[at] = format!("k{key}");
                words.retain(|w| w != "b");
            }
        }
        if !text.starts_with("CLIENT_ERROR") && !text.starts_with("SERVER_ERROR") {
            for w in words.iter_mut().skip(1) {
                if let Some(n) = w.strip_prefix('c').and_then(|n| n.parse::<u64>().ok()) {
                    if n != 0 {
                        self.cas.insert(key.to_string(), n);
                    }
                    *w = "cCAS".into();
                } else if w.starts_with('t') && w != "t-1" && w[1..].parse::<i64>().is_ok() {
                    *w = "tTTL".into();
                } else if w.starts_with('s')
                    && counters.contains(key)
                    && w[1..].parse::<u64>().is_ok()
                {
                    // See DIFFERENCES: a counter's padding, and so its size.
                    *w = "sSIZE".into();
                }
            }
        }
        let mut out = words.join(" ").into_bytes();
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&data);
        out
    }

    /// Waits until everything sent on `c` has been run: `version` answers after it.
    fn sync(&mut self, c: usize) {
        self.send(c, b"version\r\n");
        let line = self.line(c);
        assert!(line.starts_with(b"VERSION "), "{line:?}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// noreply: nothing comes back.
    None,
    Line,
    /// VALUE lines and their data, then END (or a one-line error).
    Values,
    /// One meta reply (a VA line and its data, or one line).
    Meta,
    /// Meta replies up to `MN` (a quiet meta command, then `mn`).
    UntilNoop,
}

/// One generated step, rendered for one side (cas numbers differ per side).
#[derive(Debug, Clone)]
enum Step {
    Store {
        verb: &'static str,
        key: String,
        flags: u32,
        exptime: i64,
        data: Vec<u8>,
        noreply: bool,
    },
    Cas {
        key: String,
        data: Vec<u8>,
        fresh: bool,
        noreply: bool,
    },
    Get {
        verb: &'static str,
        keys: Vec<String>,
    },
    Gat {
        verb: &'static str,
        exptime: i64,
        keys: Vec<String>,
    },
    Line {
        text: String,
        noreply: bool,
        shape: Shape,
    },
    /// A meta command; `compare` asks for a C token with a fresh or a stale cas.
    Meta {
        verb: &'static str,
        key: String,
        base64: bool,
        flags: Vec<String>,
        compare: Option<bool>,
        data: Option<Vec<u8>>,
    },
}

/// The next step. `counters` holds the keys last written by incr or decr and not
/// set since (see DIFFERENCES).
fn generate(d: &mut Dice, prefix: &str, counters: &mut Counters) -> Step {
    let key = |d: &mut Dice| format!("{prefix}{}", d.pick(8));
    let exptime = |d: &mut Dice| match d.pick(6) {
        0 => -1,
        1 => 100_000,
        _ => 0,
    };
    let data = |d: &mut Dice| -> Vec<u8> {
        match d.pick(10) {
            0 => Vec::new(),
            1 => d.pick(1000).to_string().into_bytes(),
            2 => format!(" {}", d.pick(99)).into_bytes(),
            3 if d.chance(5) => vec![b'x'; VALUE_MAX + 1],
            4 => vec![b'\r', b'\n', 0, 255],
            _ => (0..d.pick(40)).map(|_| b"abc\r\n 012"[d.pick(9)]).collect(),
        }
    };
    // See DIFFERENCES: no value of white space only.
    let data = |d: &mut Dice| -> Vec<u8> {
        let mut v = data(d);
        if !v.is_empty() && v.iter().all(|b| b" \t\r\n".contains(b)) {
            v.push(b'a');
        }
        v
    };
    let noreply = |d: &mut Dice| d.chance(20);
    if d.chance(30) {
        let k = key(d);
        return generate_meta(d, &k, counters);
    }
    match d.pick(20) {
        0..=4 => {
            let key = key(d);
            let mut verb = ["set", "add", "replace", "append", "prepend"][d.pick(5)];
            if matches!(verb, "append" | "prepend") && counters.contains(&key) {
                verb = "set";
            }
            if verb == "set" {
                counters.remove(&key);
            }
            Step::Store {
                verb,
                key,
                flags: [0, 1, 4_294_967_295, d.pick(1 << 16) as u32][d.pick(4)],
                exptime: exptime(d),
                data: data(d),
                noreply: noreply(d),
            }
        }
        5 | 6 => Step::Cas {
            key: key(d),
            data: data(d),
            fresh: d.chance(70),
            noreply: noreply(d),
        },
        7..=9 => Step::Get {
            verb: ["get", "gets"][d.pick(2)],
            keys: (0..1 + d.pick(4)).map(|_| key(d)).collect(),
        },
        10 => Step::Gat {
            verb: ["gat", "gats"][d.pick(2)],
            exptime: [0, 100_000][d.pick(2)],
            keys: (0..1 + d.pick(3)).map(|_| key(d)).collect(),
        },
        11 | 12 => {
            let nr = noreply(d);
            let verb = ["incr", "decr"][d.pick(2)];
            let delta = [0u64, 1, 7, 18_446_744_073_709_551_615][d.pick(4)];
            let key = key(d);
            counters.insert(key.clone());
            Step::Line {
                text: format!("{verb} {key} {delta}{}", if nr { " noreply" } else { "" }),
                noreply: nr,
                shape: Shape::Line,
            }
        }
        13 | 14 => {
            let nr = noreply(d);
            Step::Line {
                text: format!("delete {}{}", key(d), if nr { " noreply" } else { "" }),
                noreply: nr,
                shape: Shape::Line,
            }
        }
        15 => {
            let nr = noreply(d);
            Step::Line {
                text: format!(
                    "touch {} {}{}",
                    key(d),
                    exptime(d),
                    if nr { " noreply" } else { "" }
                ),
                noreply: nr,
                shape: Shape::Line,
            }
        }
        16 if d.chance(15) => {
            let nr = noreply(d);
            Step::Line {
                text: format!("flush_all{}", if nr { " noreply" } else { "" }),
                noreply: nr,
                shape: Shape::Line,
            }
        }
        _ => {
            // Lines memcached refuses, each with its exact error.
            let bad = [
                "nosuchcommand".to_string(),
                "get".to_string(),
                format!("get {}", "k".repeat(251)),
                format!("incr {} x", key(d)),
                format!("incr {}", key(d)),
                format!("touch {} x", key(d)),
                "verbosity x".to_string(),
                format!("delete {} 5", key(d)),
                "stats nosuchgroup".to_string(),
                format!("set {} 0 0 -1", key(d)),
                format!("gat x {}", key(d)),
            ];
            Step::Line {
                text: bad[d.pick(bad.len())].clone(),
                noreply: false,
                shape: Shape::Line,
            }
        }
    }
}

/// A meta command on `key`, with a random choice of the flags memcached documents
/// (less those in DIFFERENCES), bad tokens now and then included.
fn generate_meta(d: &mut Dice, key: &str, counters: &mut Counters) -> Step {
    let ttl = |d: &mut Dice| ["0", "100000", "-1"][d.pick(3)];
    let verb = ["mg", "mg", "ms", "ms", "md", "ma", "mn"][d.pick(7)];
    let mut pool: Vec<String> = ["O1", "Oabc", "k", "q", "b"].map(String::from).to_vec();
    let mut data = None;
    let mut compare = None;
    match verb {
        "mg" => {
            pool.extend(["v", "v", "c", "f", "s", "t", "u"].map(String::from));
            pool.push(format!("T{}", ttl(d)));
            pool.push(format!("N{}", ttl(d)));
            pool.push(format!("R{}", ["0", "30", "200000"][d.pick(3)]));
        }
        "ms" => {
            pool.extend(["c", "I"].map(String::from));
            pool.push(format!("F{}", [0, 7, 4_294_967_295u64][d.pick(3)]));
            pool.push(format!("T{}", ttl(d)));
            let mut mode = ["S", "E", "R", "A", "P", "X"][d.pick(6)];
            if matches!(mode, "A" | "P") && counters.contains(key) {
                mode = "S";
            }
            pool.push(format!("M{mode}"));
            pool.push(format!("M{mode}"));
            if d.chance(40) {
                compare = Some(d.chance(70));
            }
            let len = match d.pick(12) {
                0 => 0,
                1 if d.chance(10) => VALUE_MAX + 1,
                _ => d.pick(20),
            };
            data = Some(match d.pick(4) {
                0 => d.pick(100).to_string().into_bytes(),
                _ => (0..len).map(|_| b"ab\r\n 01"[d.pick(7)]).collect(),
            });
        }
        "md" => {
            pool.push("I".into());
            pool.push(format!("T{}", ttl(d)));
            if d.chance(30) {
                compare = Some(d.chance(70));
            }
        }
        "ma" => {
            pool.extend(["v", "v", "c", "t"].map(String::from));
            pool.push(format!("N{}", ttl(d)));
            pool.push(format!(
                "J{}",
                [0u64, 5, 18_446_744_073_709_551_615][d.pick(3)]
            ));
            pool.push(format!("D{}", [0u64, 1, 9][d.pick(3)]));
            pool.push(format!("M{}", ["I", "+", "D", "-", "Z"][d.pick(5)]));
            if d.chance(20) {
                compare = Some(d.chance(70));
            }
            counters.insert(key.to_string());
        }
        _ => {}
    }
    // Now and then a token memcached refuses.
    if d.chance(5) {
        pool.push(["Nx", "Tx", "Fx", "Dx", "zz", "MSS"][d.pick(6)].into());
    }
    let mut flags: Vec<String> = Vec::new();
    for _ in 0..d.pick(6) {
        let f = pool[d.pick(pool.len())].clone();
        // A repeated flag is an error both sides word alike, but only now and then.
        if !flags.contains(&f) || d.chance(3) {
            flags.push(f);
        }
    }
    if verb == "ms" && data.as_ref().is_some_and(|v| !v.is_empty()) {
        let v = data.as_ref().unwrap();
        if v.iter().all(|b| b" \t\r\n".contains(b)) {
            data = Some(b"a".to_vec());
        }
    }
    // An ms may be refused (a cas, a mode, a bad flag): the key stays a counter
    // for the generator until a text set, which always replaces it.
    // See DIFFERENCES: N and T before the flags that show a TTL.
    flags.sort_by_key(|f| !(f.starts_with('N') || f.starts_with('T')));
    let base64 = flags.iter().any(|f| f == "b");
    flags.retain(|f| f != "b");
    Step::Meta {
        verb,
        key: key.to_string(),
        base64,
        flags,
        compare,
        data,
    }
}

/// Renders `step` for `side` and sends it; returns the shape of its reply.
fn send(side: &mut Side, c: usize, step: &Step) -> Shape {
    let storage = |verb: &str, key: &str, flags: u32, exptime: i64, data: &[u8], extra: &str| {
        let mut b =
            format!("{verb} {key} {flags} {exptime} {}{extra}\r\n", data.len()).into_bytes();
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
        b
    };
    let nr = |n: bool| if n { " noreply" } else { "" };
    match step {
        Step::Store {
            verb,
            key,
            flags,
            exptime,
            data,
            noreply,
        } => {
            side.send(c, &storage(verb, key, *flags, *exptime, data, nr(*noreply)));
            // An oversized value under noreply is refused silently too.
            if *noreply {
                Shape::None
            } else {
                Shape::Line
            }
        }
        Step::Cas {
            key,
            data,
            fresh,
            noreply,
        } => {
            let number = match side.cas.get(key) {
                Some(&seen) if *fresh => seen,
                Some(&seen) => seen.wrapping_add(1_000_003),
                None => NEVER_GIVEN,
            };
            let extra = format!(" {number}{}", nr(*noreply));
            side.send(c, &storage("cas", key, 0, 0, data, &extra));
            if *noreply {
                Shape::None
            } else {
                Shape::Line
            }
        }
        Step::Get { verb, keys } => {
            side.send(c, format!("{verb} {}\r\n", keys.join(" ")).as_bytes());
            Shape::Values
        }
        Step::Gat {
            verb,
            exptime,
            keys,
        } => {
            side.send(
                c,
                format!("{verb} {exptime} {}\r\n", keys.join(" ")).as_bytes(),
            );
            Shape::Values
        }
        Step::Line {
            text,
            noreply,
            shape,
        } => {
            side.send(c, format!("{text}\r\n").as_bytes());
            if *noreply {
                Shape::None
            } else {
                *shape
            }
        }
        Step::Meta { .. } => send_meta(side, c, step),
    }
}

fn send_meta(side: &mut Side, c: usize, step: &Step) -> Shape {
    let Step::Meta {
        verb,
        key,
        base64,
        flags,
        compare,
        data,
    } = step
    else {
        unreachable!()
    };
    let mut line = verb.to_string();
    if *verb != "mn" {
        line.push(' ');
        if *base64 {
            line.push_str(
                &String::from_utf8(kumo::proto::memmeta::base64_encode(key.as_bytes())).unwrap(),
            );
        } else {
            line.push_str(key);
        }
    }
    if let Some(v) = data {
        line.push_str(&format!(" {}", v.len()));
    }
    for f in flags {
        line.push(' ');
        line.push_str(f);
    }
    if *base64 {
        line.push_str(" b");
    }
    if let Some(fresh) = compare {
        let number = match side.cas.get(key) {
            Some(&seen) if *fresh => seen,
            Some(&seen) => seen.wrapping_sub(1),
            None => NEVER_GIVEN,
        };
        line.push_str(&format!(" C{number}"));
    }
    let mut bytes = format!("{line}\r\n").into_bytes();
    if let Some(v) = data {
        bytes.extend_from_slice(v);
        bytes.extend_from_slice(b"\r\n");
    }
    let quiet = *verb != "mn" && flags.iter().any(|f| f == "q");
    if quiet {
        bytes.extend_from_slice(b"mn\r\n");
    }
    side.send(c, &bytes);
    if quiet {
        Shape::UntilNoop
    } else {
        Shape::Meta
    }
}

fn short(step: &Step) -> String {
    let s = format!("{step:?}");
    if s.len() > 300 {
        format!("{}...", &s[..300])
    } else {
        s
    }
}

fn run(seed: u64, steps: usize, memcached: SocketAddr, kumo: SocketAddr) {
    let mut d = Dice::new(seed);
    let prefix = format!("d{seed}-");
    let mut mc = Side::open(memcached);
    let mut km = Side::open(kumo);
    let mut history: Vec<String> = Vec::new();
    let mut counters = Counters::new();
    let mut generated_counters = Counters::new();
    for i in 0..steps {
        let step = generate(&mut d, &prefix, &mut generated_counters);
        let c = d.pick(2);
        history.push(format!("{i} conn {c}: {}", short(&step)));
        let shape = send(&mut mc, c, &step);
        send(&mut km, c, &step);
        // See DIFFERENCES: a touched key's cas numbers are forgotten on both sides.
        let touched: Vec<String> = match &step {
            Step::Gat { keys, .. } => keys.clone(),
            Step::Line { text, .. } if text.starts_with("touch ") => text
                .split(' ')
                .nth(1)
                .map(String::from)
                .into_iter()
                .collect(),
            // See DIFFERENCES: an mg that may change its item.
            Step::Meta {
                verb: "mg",
                key,
                flags,
                ..
            } if flags.iter().any(|f| f.starts_with(['N', 'R', 'T'])) => vec![key.clone()],
            _ => Vec::new(),
        };
        for k in &touched {
            mc.cas.remove(k);
            km.cas.remove(k);
        }
        match &step {
            Step::Line { text, .. } if text.starts_with("incr ") || text.starts_with("decr ") => {
                counters.extend(text.split(' ').nth(1).map(String::from));
            }
            _ => {}
        }
        if shape == Shape::None {
            // noreply: the next command on the other connection must see it.
            mc.sync(c);
            km.sync(c);
            continue;
        }
        if let Step::Meta {
            verb: "ma", key, ..
        } = &step
        {
            counters.insert(key.clone());
        }
        let key = match &step {
            Step::Meta { key, .. } => key.as_str(),
            _ => "",
        };
        let (want, got) = (
            mc.reply(c, shape, key, &counters),
            km.reply(c, shape, key, &counters),
        );
        // See DIFFERENCES: a won token is a new version in kumo.
        if std::mem::take(&mut mc.won) | std::mem::take(&mut km.won) {
            mc.cas.remove(key);
            km.cas.remove(key);
        }
        // A store that happened ends a counter's padding; one that did not, not.
        if let (Step::Store { key, .. } | Step::Cas { key, .. }, b"STORED\r\n") =
            (&step, want.as_slice())
        {
            counters.remove(key);
        }
        if want != got {
            let shown = common::memcached::history_shown();
            let recent = history[history.len().saturating_sub(shown)..].join("\n  ");
            panic!(
                "differential: seed {seed}, step {i}: memcached answered {:?}, kumo {:?}\n\
                 recent steps:\n  {recent}\n\
                 replay with KUMO_DIFF_SEED={seed} (intended differences: {DIFFERENCES:?})",
                String::from_utf8_lossy(&want),
                String::from_utf8_lossy(&got)
            );
        }
    }
}

#[test]
fn random_command_sequences_get_memcacheds_replies() {
    let mc = start_memcached();
    // memcached numbers its first item 1, and a stale compare of it would be
    // `C0`, which memcached reads as no version at all (EX even with I; seed
    // 214563). One item first makes every stale number a real, older version.
    let mut warm = TcpStream::connect(mc.addr).unwrap();
    warm.write_all(b"set differential-warm-up 0 0 1\r\nx\r\n")
        .unwrap();
    let mut stored = [0u8; 8];
    warm.read_exact(&mut stored).unwrap();
    assert_eq!(&stored, b"STORED\r\n");
    let c = Cluster::start(3);
    let (seeds, steps) = common::memcached::diff_plan();
    for seed in seeds {
        eprintln!("differential: seed {seed}, {steps} steps");
        run(seed, steps, mc.addr, c.gateway_addr);
    }
}
