//! The memcached text protocol, as a pure codec: bytes in, a command or the exact
//! error reply out; outcomes and values in, reply bytes out. The gateway's
//! connection state machine (`gateway/text.rs`: read a line, read a value, take a
//! long get's keys, swallow an oversized value) drives it; nothing here touches a
//! socket. Meta commands on the same connection go on to [`super::memmeta`].

use super::memcache::{decimal, push_decimal};
pub use super::memcache::{BAD_CHUNK, KEY_SIZE_MAX, TOO_LARGE};
use crate::cluster::write::Outcome;

/// The longest command line held whole. A `get` or `gets` line may be longer (as
/// in memcached, a multi-get has no limit): past this it is taken key by key as it
/// arrives ([`Parsed::LongGet`], [`take_keys`]). Any other command that sends more
/// without a newline is not speaking memcached, and is cut off.
pub const LINE_SIZE_MAX: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    Get {
        keys: Vec<&'a [u8]>,
        with_cas: bool,
    },
    /// The data (`bytes` long, then CRLF) follows the line.
    Store {
        op: StoreOp,
        key: &'a [u8],
        flags: u32,
        exptime: i64,
        bytes: usize,
        cas: u64,
        noreply: bool,
    },
    Delete {
        key: &'a [u8],
        noreply: bool,
    },
    Arith {
        incr: bool,
        key: &'a [u8],
        delta: u64,
        noreply: bool,
    },
    Touch {
        key: &'a [u8],
        exptime: i64,
        noreply: bool,
    },
    /// `gat`/`gats`: a get that also sets each found key's exptime.
    GetAndTouch {
        exptime: i64,
        keys: Vec<&'a [u8]>,
        with_cas: bool,
    },
    Stats(StatsGroup),
    Version,
    Verbosity {
        noreply: bool,
    },
    /// `flush_all [delay] [noreply]`: every item stored before now + `delay`
    /// seconds is gone from then on.
    Flush {
        delay: i64,
        noreply: bool,
    },
    Quit,
    /// A meta command (`mg`, `ms`, `md`, `ma`, `me`, `mn`); an `ms`'s data
    /// (`datalen` bytes, then CRLF) follows the line.
    Meta(Box<super::memmeta::Request>),
}

/// What `stats` was asked for; memcached answers `ERROR` for a group it lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsGroup {
    General,
    Items,
    Settings,
    Conns,
    Slabs,
    Sizes,
    Reset,
    DetailOn,
    DetailOff,
    DetailDump,
}

/// What the front of the input holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// No complete line yet.
    Incomplete,
    /// A command whose line took `len` bytes (CRLF included).
    Command { command: Command<'a>, len: usize },
    /// A `get` or `gets` line longer than [`LINE_SIZE_MAX`]: its first `len` bytes
    /// (the command word) are read; its keys follow, for [`take_keys`].
    LongGet { with_cas: bool, len: usize },
    /// A line that gets `reply` (CRLF not included; empty means no reply). Skip `len` bytes, then
    /// `swallow` more (an oversized value and its CRLF). `close` ends the connection
    /// after the reply, for input that cannot be resynchronised.
    Error {
        reply: &'static str,
        len: usize,
        swallow: usize,
        close: bool,
        /// memcached drops the old value of a key whose `set` was refused as too
        /// large, so a reader cannot mistake it for the new one.
        invalidate: Option<Vec<u8>>,
    },
}

const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";
const DELETE_USAGE: &str = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";

/// Parses the line at the front of `input`. `value_max` is the `-I` limit.
pub fn parse(input: &[u8], value_max: usize) -> Parsed<'_> {
    match parse_line(input, value_max) {
        // memcached keeps quiet about a bad update, delete, incr or touch line that
        // asked for noreply (the oversized value is still skipped); a client that
        // asked for silence would read the error as the next command's reply.
        Parsed::Error {
            reply,
            len,
            swallow,
            close,
            invalidate,
        } if (reply.starts_with("CLIENT_ERROR") || reply.starts_with("SERVER_ERROR"))
            && asks_noreply(&input[..len.min(input.len())]) =>
        {
            Parsed::Error {
                reply: "",
                len,
                swallow,
                close,
                invalidate,
            }
        }
        other => other,
    }
}

/// Whether a complete line is an update, delete, incr, decr or touch ending in
/// `noreply`.
fn asks_noreply(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let quiet = matches!(
        words.next(),
        Some(
            b"set"
                | b"add"
                | b"replace"
                | b"append"
                | b"prepend"
                | b"cas"
                | b"delete"
                | b"incr"
                | b"decr"
                | b"touch"
                | b"flush_all"
        )
    );
    quiet && words.next_back() == Some(&b"noreply"[..])
}

fn parse_line(input: &[u8], value_max: usize) -> Parsed<'_> {
    let Some(nl) = input
        .iter()
        .take(LINE_SIZE_MAX + 2)
        .position(|&b| b == b'\n')
    else {
        if input.len() > LINE_SIZE_MAX {
            if let Some((with_cas, len)) = long_get(input) {
                return Parsed::LongGet { with_cas, len };
            }
            return Parsed::Error {
                reply: "CLIENT_ERROR line too long",
                len: input.len(),
                swallow: 0,
                close: true,
                invalidate: None,
            };
        }
        return Parsed::Incomplete;
    };
    let len = nl + 1;
    let line = input[..nl].strip_suffix(b"\r").unwrap_or(&input[..nl]);
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let err = |reply| Parsed::Error {
        reply,
        len,
        swallow: 0,
        close: false,
        invalidate: None,
    };
    let Some(name) = words.next() else {
        return err("ERROR");
    };
    let args: Vec<&[u8]> = words.collect();
    let noreply = args.last() == Some(&&b"noreply"[..]);
    let n = args.len() - usize::from(noreply);
    let command = match name {
        b"get" | b"gets" => {
            if args.is_empty() {
                return err("ERROR");
            }
            if !args.iter().all(|k| key_ok(k)) {
                return err(BAD_FORMAT);
            }
            Command::Get {
                keys: args,
                with_cas: name == b"gets",
            }
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            let op = match name {
                b"set" => StoreOp::Set,
                b"add" => StoreOp::Add,
                b"replace" => StoreOp::Replace,
                b"append" => StoreOp::Append,
                b"prepend" => StoreOp::Prepend,
                _ => StoreOp::Cas,
            };
            let want = if op == StoreOp::Cas { 5 } else { 4 };
            if n < want || n > want + 1 {
                return err("ERROR");
            }
            if !key_ok(args[0]) {
                return err(BAD_FORMAT);
            }
            let (Some(flags), Some(exptime)) = (decimal::<u32>(args[1]), decimal::<i64>(args[2]))
            else {
                return err(BAD_FORMAT);
            };
            // memcached reads the length as a 32-bit signed number; anything else
            // is a bad line, and what follows is read as commands.
            let Some(bytes) = decimal::<u64>(args[3]).filter(|b| *b <= i32::MAX as u64) else {
                return err(BAD_FORMAT);
            };
            let cas = if op == StoreOp::Cas {
                match decimal::<u64>(args[4]) {
                    Some(c) => c,
                    None => return err(BAD_FORMAT),
                }
            } else {
                0
            };
            if bytes as usize > value_max {
                return Parsed::Error {
                    reply: TOO_LARGE,
                    len,
                    swallow: bytes as usize + 2,
                    close: false,
                    invalidate: (op == StoreOp::Set).then(|| args[0].to_vec()),
                };
            }
            Command::Store {
                op,
                key: args[0],
                flags,
                exptime,
                bytes: bytes as usize,
                cas,
                noreply,
            }
        }
        b"delete" => {
            // memcached still accepts a legacy "0" time argument.
            let legacy_zero = n == 2 && args[1] == b"0";
            if n == 0 {
                return err("ERROR");
            }
            if !(n == 1 || legacy_zero) {
                return err(DELETE_USAGE);
            }
            if !key_ok(args[0]) {
                return err(BAD_FORMAT);
            }
            Command::Delete {
                key: args[0],
                noreply,
            }
        }
        b"incr" | b"decr" => {
            if n != 2 {
                return err("ERROR");
            }
            if !key_ok(args[0]) {
                return err(BAD_FORMAT);
            }
            let Some(delta) = decimal::<u64>(args[1]) else {
                return err("CLIENT_ERROR invalid numeric delta argument");
            };
            Command::Arith {
                incr: name == b"incr",
                key: args[0],
                delta,
                noreply,
            }
        }
        b"touch" => {
            if n != 2 {
                return err("ERROR");
            }
            if !key_ok(args[0]) {
                return err(BAD_FORMAT);
            }
            let Some(exptime) = decimal::<i64>(args[1]) else {
                return err("CLIENT_ERROR invalid exptime argument");
            };
            Command::Touch {
                key: args[0],
                exptime,
                noreply,
            }
        }
        b"gat" | b"gats" => {
            // Every word after the exptime is a key, `noreply` included.
            let Some((exptime, keys)) = args.split_first() else {
                return err("ERROR");
            };
            let Some(exptime) = decimal::<i64>(exptime) else {
                return err("CLIENT_ERROR invalid exptime argument");
            };
            if !keys.iter().all(|k| key_ok(k)) {
                return err(BAD_FORMAT);
            }
            Command::GetAndTouch {
                exptime,
                keys: keys.to_vec(),
                with_cas: name == b"gats",
            }
        }
        b"stats" => {
            let group = match (args.first().map(|w| &w[..]), args.get(1).map(|w| &w[..])) {
                (None, _) => StatsGroup::General,
                (Some(b"items"), _) => StatsGroup::Items,
                (Some(b"settings"), _) => StatsGroup::Settings,
                (Some(b"conns"), _) => StatsGroup::Conns,
                (Some(b"slabs"), _) => StatsGroup::Slabs,
                (Some(b"sizes"), _) => StatsGroup::Sizes,
                (Some(b"reset"), _) => StatsGroup::Reset,
                (Some(b"detail"), Some(b"on")) => StatsGroup::DetailOn,
                (Some(b"detail"), Some(b"off")) => StatsGroup::DetailOff,
                (Some(b"detail"), Some(b"dump")) => StatsGroup::DetailDump,
                (Some(b"detail"), _) => return err("CLIENT_ERROR usage: stats detail on|off|dump"),
                _ => return err("ERROR"),
            };
            Command::Stats(group)
        }
        // memcached ignores anything after `version` and `quit`.
        b"version" => Command::Version,
        b"verbosity" if (1..=2).contains(&args.len()) => {
            if !noreply && decimal::<u64>(args[0]).is_none() {
                return err(BAD_FORMAT);
            }
            Command::Verbosity { noreply }
        }
        b"verbosity" => return err("ERROR"),
        b"flush_all" => {
            // The delay is the first word unless that word is the closing noreply;
            // words after it are ignored, as memcached ignores them.
            let delay = match args.first() {
                Some(w) if !(noreply && args.len() == 1) => match decimal::<i64>(w) {
                    Some(d) => d,
                    None => return err("CLIENT_ERROR invalid exptime argument"),
                },
                _ => 0,
            };
            Command::Flush { delay, noreply }
        }
        b"quit" => Command::Quit,
        _ if super::memmeta::is_meta(name) => match super::memmeta::parse(name, &args, value_max) {
            Ok(req) => Command::Meta(Box::new(req)),
            Err(r) => {
                return Parsed::Error {
                    reply: r.reply,
                    len,
                    swallow: r.swallow,
                    close: false,
                    invalidate: r.invalidate,
                }
            }
        },
        // An HTTP request line: memcached closes without a word.
        _ if args.last().is_some_and(|w| w.starts_with(b"HTTP/")) => {
            return Parsed::Error {
                reply: "",
                len,
                swallow: 0,
                close: true,
                invalidate: None,
            }
        }
        _ => return err("ERROR"),
    };
    Parsed::Command { command, len }
}

/// What memcached takes for a key in a command line.
fn key_ok(k: &[u8]) -> bool {
    k.len() <= KEY_SIZE_MAX && !k.iter().any(|&b| b < 0x21 || b == 0x7f)
}

/// Whether a line with no newline yet is a `get` or `gets`: (with_cas, the bytes
/// of the leading spaces, the command word and its space).
fn long_get(input: &[u8]) -> Option<(bool, usize)> {
    let spaces = input.iter().take_while(|&&b| b == b' ').count();
    let word = &input[spaces..];
    if word.starts_with(b"get ") {
        Some((false, spaces + 4))
    } else if word.starts_with(b"gets ") {
        Some((true, spaces + 5))
    } else {
        None
    }
}

/// The keys at the front of the rest of a long get line: those complete so far
/// (each followed by a space, or by the end of the line), the bytes they took, and
/// whether the line ended. A key too long or malformed is `Err`, with the bytes to
/// drop up to the end of the line (or all of `input` when it has not come yet).
pub fn take_keys(input: &[u8]) -> Result<(Vec<&[u8]>, usize, bool), (&'static str, usize, bool)> {
    let nl = input.iter().position(|&b| b == b'\n');
    let (region, used) = match nl {
        Some(i) => {
            let line = &input[..i];
            (line.strip_suffix(b"\r").unwrap_or(line), i + 1)
        }
        None => match input.iter().rposition(|&b| b == b' ') {
            Some(i) => (&input[..i], i + 1),
            None => (&input[..0], 0),
        },
    };
    let refuse = || match nl {
        Some(i) => Err((BAD_FORMAT, i + 1, true)),
        None => Err((BAD_FORMAT, input.len(), false)),
    };
    // A word still arriving that is already too long for a key.
    if nl.is_none() && input.len() - used > KEY_SIZE_MAX {
        return refuse();
    }
    let keys: Vec<&[u8]> = region
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .collect();
    if !keys.iter().all(|k| key_ok(k)) {
        return refuse();
    }
    Ok((keys, used, nl.is_some()))
}

/// Appends the reply line, with its CRLF, to a storage, delete, incr/decr or touch
/// command.
pub fn push_outcome_line(out: &mut Vec<u8>, o: Outcome) {
    let line: &[u8] = match o {
        Outcome::Stored => b"STORED",
        Outcome::NotStored => b"NOT_STORED",
        Outcome::Exists => b"EXISTS",
        Outcome::NotFound => b"NOT_FOUND",
        Outcome::Deleted => b"DELETED",
        Outcome::Touched => b"TOUCHED",
        Outcome::Number(n) | Outcome::Made(n) => {
            push_decimal(out, n);
            b""
        }
        // Only meta commands ask for what gives this; a text command never does.
        Outcome::Fetched { .. } => b"SERVER_ERROR unexpected outcome",
        Outcome::NonNumeric => b"CLIENT_ERROR cannot increment or decrement non-numeric value",
    };
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

/// Appends the line before a value of `len` bytes; the value and [`VALUE_END`]
/// follow.
pub fn push_value_head(out: &mut Vec<u8>, key: &[u8], flags: u32, len: usize, cas: Option<u64>) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    push_decimal(out, flags as u64);
    out.push(b' ');
    push_decimal(out, len as u64);
    if let Some(cas) = cas {
        out.push(b' ');
        push_decimal(out, cas);
    }
    out.extend_from_slice(b"\r\n");
}

/// What ends a value in a reply.
pub const VALUE_END: &[u8] = b"\r\n";
/// The longest VALUE line less its key: "VALUE", three numbers of at most 20
/// digits, their spaces and the CRLF.
pub const VALUE_HEAD_MAX: usize = 5 + 3 * 21 + 2;

/// Checks that `data` (at least `bytes + 2` long) holds the value and its CRLF.
pub fn value_of(data: &[u8], bytes: usize) -> Result<&[u8], &'static str> {
    match data.get(bytes..bytes + 2) {
        Some(b"\r\n") => Ok(&data[..bytes]),
        _ => Err(BAD_CHUNK),
    }
}

#[cfg(test)]
mod tests;
