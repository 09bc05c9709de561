//! memcached's meta protocol (`mg`, `ms`, `md`, `ma`, `me`, `mn`), as a pure codec:
//! a parsed command line in, a [`Request`] or the exact error reply out; an item or
//! an outcome in, the reply line out. The text codec ([`super::memtext`]) hands it
//! every line whose command is a meta command, so both share one connection.
//!
//! The replies are memcached 1.6's, byte for byte, including its error strings and
//! the order of the flags it echoes (the order the client gave them). Flags kumo
//! cannot honour (`h` hit-before and `l` last-access, which would make every read a
//! write on three servers; `E`, which would let a client choose the version that
//! orders replicas) are refused as memcached refuses a flag it does not know.

use super::memcache::decimal;
use crate::cluster::write::Outcome;

/// memcached's limit on the words of a meta command line (the command and key
/// included), beyond which it refuses the line.
pub const WORDS_MAX: usize = 19;
/// memcached's limit on an opaque token (`O`), the flag letter included.
pub const OPAQUE_MAX: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Set,
    Delete,
    Arith,
    Debug,
    Noop,
}

/// A flag that asks for something in the reply, kept in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Echo {
    /// `s`: the value's size.
    Size,
    /// `t`: seconds the item has left, -1 for never.
    Ttl,
    /// `c`: the CAS value.
    Cas,
    /// `f`: the client flags.
    ClientFlags,
    /// `O<token>`: copied back as given (the `O` included).
    Opaque(Vec<u8>),
    /// `k`: the key (base64 again if it came so).
    Key,
}

/// Storage modes of `ms` (`M` flag) and arithmetic modes of `ma`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Incr,
    Decr,
}

/// One meta command. Times are as the client gave them (memcached exptimes); the
/// gateway makes them absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub verb: Verb,
    /// The key, decoded if it came in base64.
    pub key: Vec<u8>,
    /// `ms`: the bytes of data that follow the line.
    pub datalen: usize,
    /// `b`: the key came in base64.
    pub base64: bool,
    /// `v`: the value is wanted.
    pub value: bool,
    /// `q`: say nothing about the common outcome (a miss for `mg`, success for
    /// the others).
    pub quiet: bool,
    pub echo: Vec<Echo>,
    /// `F`.
    pub client_flags: u32,
    /// `C`.
    pub compare: Option<u64>,
    /// `I`.
    pub invalidate: bool,
    /// `N`: an item is made on a miss, with this exptime (`T`'s if it came later).
    pub vivify: Option<i64>,
    /// `T`.
    pub ttl: Option<i64>,
    /// `R`: win the recache token if fewer seconds than this are left.
    pub recache: Option<i64>,
    /// `J`.
    pub initial: u64,
    /// `D`.
    pub delta: u64,
    pub mode: Mode,
}

impl Request {
    /// Whether the command may change its item: every one but `me`, `mn`, and an
    /// `mg` without `N`, `T` or `R`. (Such an `mg` may still win a stale item's
    /// token, which the coordinator decides.)
    pub fn may_write(&self) -> bool {
        match self.verb {
            Verb::Get => self.vivify.is_some() || self.ttl.is_some() || self.recache.is_some(),
            Verb::Debug | Verb::Noop => false,
            Verb::Set | Verb::Delete | Verb::Arith => true,
        }
    }
}

/// A refused line: the reply, and how many data bytes (with their CRLF) follow it
/// and must be skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reply: &'static str,
    pub swallow: usize,
    /// memcached drops the old value of a key whose `ms` was too large.
    pub invalidate: Option<Vec<u8>>,
}

const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";
const BAD_TOKEN: &str = "CLIENT_ERROR bad token in command line format";

fn refuse(reply: &'static str) -> Refusal {
    Refusal {
        reply,
        swallow: 0,
        invalidate: None,
    }
}

/// Whether `name` is a meta command.
pub fn is_meta(name: &[u8]) -> bool {
    matches!(name, b"mg" | b"ms" | b"md" | b"ma" | b"me" | b"mn")
}

/// Parses a meta command line split into words (`name` first, then `args`).
/// `value_max` is the `-I` limit.
pub fn parse(name: &[u8], args: &[&[u8]], value_max: usize) -> Result<Request, Refusal> {
    let verb = match name {
        b"mg" => Verb::Get,
        b"ms" => Verb::Set,
        b"md" => Verb::Delete,
        b"ma" => Verb::Arith,
        b"me" => Verb::Debug,
        _ => Verb::Noop,
    };
    let mut req = Request {
        verb,
        key: Vec::new(),
        datalen: 0,
        base64: false,
        value: false,
        quiet: false,
        echo: Vec::new(),
        client_flags: 0,
        compare: None,
        invalidate: false,
        vivify: None,
        ttl: None,
        recache: None,
        initial: 0,
        delta: 1,
        mode: if verb == Verb::Arith {
            Mode::Incr
        } else {
            Mode::Set
        },
    };
    if verb == Verb::Noop {
        return Ok(req);
    }
    let Some((&key, rest)) = args.split_first() else {
        return Err(refuse(if verb == Verb::Debug {
            BAD_FORMAT
        } else {
            "ERROR"
        }));
    };
    if key.len() > super::memcache::KEY_SIZE_MAX {
        return Err(refuse(BAD_FORMAT));
    }
    if verb == Verb::Debug {
        return debug(req, key, rest);
    }
    if args.len() + 1 > WORDS_MAX {
        return Err(refuse(match verb {
            Verb::Get => "CLIENT_ERROR options flags are too long",
            _ => "CLIENT_ERROR options flags too long",
        }));
    }
    let mut flags = rest;
    if verb == Verb::Set {
        let Some((&len, more)) = rest.split_first() else {
            return Err(refuse(BAD_FORMAT));
        };
        // memcached reads the length as a 32-bit signed number.
        req.datalen = match decimal::<i32>(len) {
            Some(n) if n >= 0 && n < i32::MAX - 1 => n as usize,
            _ => return Err(refuse(BAD_FORMAT)),
        };
        flags = more;
    }
    // From here on, a refused `ms` still has its data to skip.
    let swallow = if verb == Verb::Set {
        req.datalen + 2
    } else {
        0
    };
    let fail = |reply| Refusal {
        reply,
        swallow,
        invalidate: None,
    };
    if let Err(e) = read_flags(&mut req, key, flags) {
        // memcached words any flag trouble of md and ma the same way.
        let e = match verb {
            Verb::Delete | Verb::Arith => "CLIENT_ERROR invalid or duplicate flag",
            _ => e,
        };
        return Err(fail(e));
    }
    if req
        .echo
        .iter()
        .any(|e| matches!(e, Echo::Opaque(o) if o.len() > OPAQUE_MAX))
    {
        return Err(fail("CLIENT_ERROR opaque token too long"));
    }
    req.mode = match (verb, req.mode) {
        (Verb::Set, Mode::Incr | Mode::Decr) => {
            return Err(fail("CLIENT_ERROR invalid mode for ms M token"))
        }
        (Verb::Arith, m) if !matches!(m, Mode::Incr | Mode::Decr) => {
            return Err(fail("CLIENT_ERROR invalid mode for ma M token"))
        }
        (_, m) => m,
    };
    if verb == Verb::Set && req.datalen > value_max {
        return Err(Refusal {
            reply: super::memcache::TOO_LARGE,
            swallow,
            invalidate: Some(req.key),
        });
    }
    Ok(req)
}

/// `me <key> [b]`: other words are ignored, as memcached ignores them.
fn debug(mut req: Request, key: &[u8], rest: &[&[u8]]) -> Result<Request, Refusal> {
    req.base64 = rest.first() == Some(&&b"b"[..]);
    req.key = if req.base64 {
        base64_decode(key).ok_or_else(|| refuse("CLIENT_ERROR error decoding key"))?
    } else {
        key.to_vec()
    };
    Ok(req)
}

/// Reads the flags as memcached does: a repeated flag or an unknown one stops at
/// once; a bad token is remembered and the rest still read.
fn read_flags(req: &mut Request, key: &[u8], flags: &[&[u8]]) -> Result<(), &'static str> {
    let mut seen = [false; 128];
    let mut error: Option<&'static str> = None;
    let mut mode: Option<u8> = None;
    req.key = key.to_vec();
    for &f in flags {
        let c = f[0];
        if c >= 127 || seen[c as usize] {
            return Err("CLIENT_ERROR duplicate flag");
        }
        seen[c as usize] = true;
        let token = &f[1..];
        let time = |error: &mut Option<&'static str>| {
            let t = decimal::<i32>(token).map(i64::from);
            if t.is_none() {
                *error = Some(BAD_TOKEN);
            }
            t
        };
        match (req.verb, c) {
            (_, b'b') => match base64_decode(key) {
                Some(k) => {
                    req.key = k;
                    req.base64 = true;
                }
                None => error = Some("CLIENT_ERROR error decoding key"),
            },
            (_, b'N') => req.vivify = time(&mut error),
            (_, b'T') => {
                req.ttl = time(&mut error);
                // memcached applies the flags in order: an item made on a miss
                // keeps whichever of N and T came last.
                if req.vivify.is_some() {
                    req.vivify = req.ttl;
                }
            }
            (_, b'R') => req.recache = time(&mut error),
            (_, b'O') => req.echo.push(Echo::Opaque(f.to_vec())),
            (_, b'P' | b'L' | b'u') => {}
            (_, b'k') => req.echo.push(Echo::Key),
            (_, b's') => req.echo.push(Echo::Size),
            (_, b't') => req.echo.push(Echo::Ttl),
            (_, b'c') => req.echo.push(Echo::Cas),
            (_, b'f') => req.echo.push(Echo::ClientFlags),
            (_, b'v') => req.value = true,
            (_, b'q') => req.quiet = true,
            (_, b'F') => match decimal::<u32>(token) {
                Some(v) => req.client_flags = v,
                // memcached sets no message of its own for a bad F.
                None => error = Some(error.unwrap_or(BAD_FORMAT)),
            },
            (_, b'C') => match decimal::<u64>(token) {
                Some(v) => req.compare = Some(v),
                None => error = Some(BAD_TOKEN),
            },
            (_, b'M') if token.len() != 1 => {
                error = Some("CLIENT_ERROR incorrect length for M token")
            }
            (_, b'M') => mode = Some(token[0]),
            (_, b'J') => match decimal::<u64>(token) {
                Some(v) => req.initial = v,
                None => error = Some("CLIENT_ERROR invalid numeric initial value"),
            },
            (_, b'D') => match decimal::<u64>(token) {
                Some(v) => req.delta = v,
                None => error = Some("CLIENT_ERROR invalid numeric delta value"),
            },
            (_, b'I') => req.invalidate = true,
            _ => return Err("CLIENT_ERROR invalid flag"),
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    req.mode = match (req.verb, mode) {
        (Verb::Arith, None | Some(b'I' | b'i' | b'+')) => Mode::Incr,
        (Verb::Arith, Some(b'D' | b'd' | b'-')) => Mode::Decr,
        (_, None | Some(b'S' | b's')) => Mode::Set,
        (Verb::Set, Some(b'E' | b'e')) => Mode::Add,
        (Verb::Set, Some(b'R' | b'r')) => Mode::Replace,
        (Verb::Set, Some(b'A' | b'a')) => Mode::Append,
        (Verb::Set, Some(b'P' | b'p')) => Mode::Prepend,
        // Checked by the caller, which knows the verb's own message.
        (Verb::Set, Some(_)) => Mode::Incr,
        (_, Some(_)) => Mode::Set,
    };
    Ok(())
}

/// What a meta command's reply shows of an item.
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a> {
    pub key: &'a [u8],
    pub client_flags: u32,
    /// Absolute unix seconds, 0 for never.
    pub exptime: u32,
    pub cas: u64,
    pub data: &'a [u8],
    pub stale: bool,
    pub token_sent: bool,
    /// The item's key came in base64 when it was stored.
    pub key_binary: bool,
}

/// The reply to `mg`: `item` is None for a miss. `won` says this request won the
/// recache token. Empty when the reply is suppressed.
pub fn get_reply(req: &Request, item: Option<Shown>, won: bool, now: u32) -> Vec<u8> {
    let Some(it) = item else {
        if req.quiet {
            return Vec::new();
        }
        let mut out = b"EN".to_vec();
        echo(&mut out, req, None, now);
        out.extend_from_slice(b"\r\n");
        return out;
    };
    let mut out = Vec::with_capacity(it.data.len() + 64);
    if req.value {
        out.extend_from_slice(format!("VA {}", it.data.len()).as_bytes());
    } else {
        out.extend_from_slice(b"HD");
    }
    echo(&mut out, req, Some(&it), now);
    // memcached's order: Z (a token went out before), X (stale), W (this one won).
    if it.token_sent && !won {
        out.extend_from_slice(b" Z");
    }
    if it.stale {
        out.extend_from_slice(b" X");
    }
    if won {
        out.extend_from_slice(b" W");
    }
    out.extend_from_slice(b"\r\n");
    if req.value {
        out.extend_from_slice(it.data);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The reply to `ms`, `md` or `ma`. `item` is the item after the write where it is
/// known (`ma` shows its value and TTL); `cas` is the version the write stored.
pub fn write_reply(
    req: &Request,
    outcome: Outcome,
    cas: u64,
    item: Option<Shown>,
    now: u32,
) -> Vec<u8> {
    let code: &[u8] = match outcome {
        Outcome::Stored | Outcome::Deleted | Outcome::Touched | Outcome::Fetched { .. } => b"HD",
        Outcome::Number(_) | Outcome::Made(_) if req.value => b"VA",
        Outcome::Number(_) | Outcome::Made(_) => b"HD",
        Outcome::NotStored => b"NS",
        Outcome::Exists => b"EX",
        Outcome::NotFound => b"NF",
        Outcome::NonNumeric => {
            return b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n".to_vec()
        }
    };
    // q hides success, except (as in memcached) an `ma` that made its item.
    if req.quiet
        && code != b"NS"
        && code != b"EX"
        && code != b"NF"
        && !matches!(outcome, Outcome::Made(_))
    {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(code);
    let number = match outcome {
        Outcome::Number(n) | Outcome::Made(n) => Some(n.to_string()),
        _ => None,
    };
    if let (true, Some(n)) = (req.value, &number) {
        out.extend_from_slice(format!(" {}", n.len()).as_bytes());
    }
    match req.verb {
        Verb::Set => {
            // ms echoes O, k and c whatever the outcome; c is 0 unless stored.
            let stored = if outcome == Outcome::Stored { cas } else { 0 };
            for e in &req.echo {
                match e {
                    Echo::Opaque(o) => push_word(&mut out, o),
                    Echo::Key => push_key(&mut out, req.base64, &req.key),
                    Echo::Cas => out.extend_from_slice(format!(" c{stored}").as_bytes()),
                    _ => {}
                }
            }
        }
        Verb::Arith if number.is_some() => echo(&mut out, req, item.as_ref(), now),
        _ => {
            for e in &req.echo {
                match e {
                    Echo::Opaque(o) => push_word(&mut out, o),
                    Echo::Key => push_key(&mut out, req.base64, &req.key),
                    _ => {}
                }
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    if let (true, Some(n)) = (req.value, number) {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The reply to `me`. memcached also shows the last access, whether the item was
/// fetched, and its slab class; kumo keeps none of them, so it shows what it has.
pub fn debug_reply(req: &Request, item: Option<Shown>, now: u32) -> Vec<u8> {
    let Some(it) = item else {
        return b"EN\r\n".to_vec();
    };
    let mut out = b"ME ".to_vec();
    if req.base64 {
        out.extend_from_slice(&base64_encode(it.key));
    } else {
        out.extend_from_slice(it.key);
    }
    let exp = match it.exptime {
        0 => -1,
        e => i64::from(e) - i64::from(now),
    };
    out.extend_from_slice(
        format!(" exp={exp} cas={} size={}\r\n", it.cas, it.data.len()).as_bytes(),
    );
    out
}

/// The flags that show something of the item, in the order given.
fn echo(out: &mut Vec<u8>, req: &Request, it: Option<&Shown>, now: u32) {
    for e in &req.echo {
        match (e, it) {
            (Echo::Opaque(o), _) => push_word(out, o),
            // An mg hit shows the key as it came when the item was stored;
            // everything else as it came in this request.
            (Echo::Key, Some(it)) if req.verb == Verb::Get => push_key(out, it.key_binary, it.key),
            (Echo::Key, _) => push_key(out, req.base64, it.map_or(&req.key[..], |it| it.key)),
            (Echo::Size, Some(it)) if req.verb == Verb::Get => {
                out.extend_from_slice(format!(" s{}", it.data.len()).as_bytes())
            }
            (Echo::Ttl, Some(it)) => {
                let t = match it.exptime {
                    0 => -1,
                    e => i64::from(e.saturating_sub(now)),
                };
                out.extend_from_slice(format!(" t{t}").as_bytes())
            }
            (Echo::Cas, Some(it)) => out.extend_from_slice(format!(" c{}", it.cas).as_bytes()),
            (Echo::ClientFlags, Some(it)) if req.verb == Verb::Get => {
                out.extend_from_slice(format!(" f{}", it.client_flags).as_bytes())
            }
            _ => {}
        }
    }
}

fn push_word(out: &mut Vec<u8>, w: &[u8]) {
    out.push(b' ');
    out.extend_from_slice(w);
}

fn push_key(out: &mut Vec<u8>, base64: bool, key: &[u8]) {
    out.extend_from_slice(b" k");
    if base64 {
        out.extend_from_slice(&base64_encode(key));
        out.extend_from_slice(b" b");
    } else {
        out.extend_from_slice(key);
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

/// Standard base64 with its padding; None for anything else, and for nothing.
pub fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.is_empty() || text.len() % 4 != 0 {
        return None;
    }
    let value = |c: u8| B64.iter().position(|&b| b == c).map(|v| v as u32);
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let last = text.len() / 4 - 1;
    for (i, quad) in text.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i != last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests;
