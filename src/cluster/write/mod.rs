//! What a write does to a key: the memcached semantics of set, add, replace, append,
//! prepend, cas, incr, decr, touch and delete, decided at the coordinator from the
//! key's current record. Pure: the coordinator passes in the record it holds, a fresh
//! stamp and the time, and gets back the reply and the record to store and replicate.
//! Running it inside the store's per-key read-modify-write makes every conditional
//! command atomic. The meta protocol's extras (compare, invalidate, vivify, the
//! recache token) are decided here too, so that one client, and only one, wins a
//! token however many gateways ask at once.

use crate::record::{is_expired, Kind, Marks, Record};
use std::sync::Arc;

/// The operation of a coordinated write. The code is its wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    /// Store only if the current version is this CAS value.
    Cas(u64),
    Incr(u64),
    Decr(u64),
    /// Change the expiry time only.
    Touch,
    Delete,
    /// The meta get's changes (`T`, `N`, `R`, and the token of a stale item),
    /// decided where the key's writes are; the record comes back with the outcome.
    Get,
}

impl Op {
    /// The wire form: `[code, argument]`.
    pub fn encode(self) -> (u8, u64) {
        match self {
            Op::Set => (0, 0),
            Op::Add => (1, 0),
            Op::Replace => (2, 0),
            Op::Append => (3, 0),
            Op::Prepend => (4, 0),
            Op::Cas(v) => (5, v),
            Op::Incr(d) => (6, d),
            Op::Decr(d) => (7, d),
            Op::Touch => (8, 0),
            Op::Delete => (9, 0),
            Op::Get => (10, 0),
        }
    }

    pub fn decode(code: u64, arg: u64) -> Option<Op> {
        Some(match code {
            0 => Op::Set,
            1 => Op::Add,
            2 => Op::Replace,
            3 => Op::Append,
            4 => Op::Prepend,
            5 => Op::Cas(arg),
            6 => Op::Incr(arg),
            7 => Op::Decr(arg),
            8 => Op::Touch,
            9 => Op::Delete,
            10 => Op::Get,
            _ => return None,
        })
    }
}

/// A write as the gateway sends it. `exptime` is already absolute unix seconds
/// (0 = never), so every replica expires the key at the same moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub op: Op,
    pub flags: u32,
    pub exptime: u32,
    /// Shared, not copied: a gateway keeps it for retries while a link sends it.
    pub data: Arc<Vec<u8>>,
    pub meta: Meta,
}

/// What the meta protocol adds to a write; all off for the classic commands.
/// Times are absolute unix seconds, as `exptime` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// `C`: only if the item's CAS value (its clock) is this.
    pub compare: Option<u64>,
    /// `I`: a cas older than the item's still stores, marked stale; a delete marks
    /// the item stale instead of removing it.
    pub invalidate: bool,
    /// `N`: on a miss, create the item with this exptime (a get makes an empty
    /// stub and wins its recache token; arithmetic starts from `initial`).
    pub vivify: Option<u32>,
    /// `J`: arithmetic's first value on a miss.
    pub initial: u64,
    /// `T`: the item's new exptime when the command succeeds.
    pub ttl: Option<u32>,
    /// `R`: a get wins the recache token if the item expires before this time.
    pub recache_before: Option<u32>,
    /// Send the item as it is after the write back with the outcome.
    pub return_record: bool,
    /// The key came in base64: a value this write stores is marked so.
    pub key_binary: bool,
}

impl Write {
    /// Whether [`apply`] decides this write on the current record's
    /// [`Record::header`] alone (kind, clock, exptime): a set, add, replace, cas
    /// or delete that keeps nothing of the old item. The store then reads no old
    /// value for it.
    pub fn decides_on_header(&self) -> bool {
        matches!(
            self.op,
            Op::Set | Op::Add | Op::Replace | Op::Cas(_) | Op::Delete
        ) && !self.meta.invalidate
            && !self.meta.return_record
    }

    /// A classic memcached command's write.
    pub fn plain(op: Op, flags: u32, exptime: u32, data: Vec<u8>) -> Write {
        Write {
            op,
            flags,
            exptime,
            data: Arc::new(data),
            meta: Meta::default(),
        }
    }
}

/// The answer to a write, as memcached words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    NotStored,
    Exists,
    NotFound,
    Deleted,
    Touched,
    /// The new value of an incr or decr.
    Number(u64),
    /// incr or decr of a value that is not a decimal number.
    NonNumeric,
    /// A meta get found the item (or made it); `won` says this client won the
    /// recache token.
    Fetched {
        won: bool,
    },
    /// Meta arithmetic made the missing item with its initial value (`ma N`).
    Made(u64),
}

impl Outcome {
    pub fn code(self) -> (u8, u64) {
        match self {
            Outcome::Stored => (0, 0),
            Outcome::NotStored => (1, 0),
            Outcome::Exists => (2, 0),
            Outcome::NotFound => (3, 0),
            Outcome::Deleted => (4, 0),
            Outcome::Touched => (5, 0),
            Outcome::Number(n) => (6, n),
            Outcome::NonNumeric => (7, 0),
            Outcome::Fetched { won } => (8, u64::from(won)),
            Outcome::Made(n) => (9, n),
        }
    }

    pub fn from_code(code: u64, n: u64) -> Option<Outcome> {
        Some(match code {
            0 => Outcome::Stored,
            1 => Outcome::NotStored,
            2 => Outcome::Exists,
            3 => Outcome::NotFound,
            4 => Outcome::Deleted,
            5 => Outcome::Touched,
            6 => Outcome::Number(n),
            7 => Outcome::NonNumeric,
            8 => Outcome::Fetched { won: n != 0 },
            9 => Outcome::Made(n),
            _ => return None,
        })
    }
}

/// Whether `rec` is a value a client can see at `now`.
pub fn is_live(rec: &Record, now: u32) -> bool {
    rec.kind == Kind::Value && !is_expired(rec.exptime, now)
}

/// Decides `w` against the key's current record. `stamp` is a fresh ClockTime from
/// the coordinator's clock; the stored version is made strictly newer than the
/// current record's even when that came from a host whose clock runs ahead, so
/// replicas, which keep the newer version, always take this write.
pub fn apply(
    w: &Write,
    current: Option<&Record>,
    stamp: u64,
    now: u32,
) -> (Outcome, Option<Record>) {
    let live = current.filter(|r| is_live(r, now));
    let clock = match current {
        Some(r) => stamp.max(r.clock.saturating_add(1)),
        None => stamp,
    };
    let m = &w.meta;
    // A new value from the client carries the way its key came; memcached's other
    // new items (append, a made stub) do not.
    let stored = |flags, exptime, data| {
        let mut rec = Record::value(clock, flags, exptime, data);
        rec.marks.key_binary = m.key_binary;
        Some(rec)
    };
    let value = |flags, exptime, data| Some(Record::value(clock, flags, exptime, data));
    // `C` on anything but a cas: a live item whose version differs is left alone.
    // memcached refuses to count an empty value before it compares, and takes
    // `C0` on arithmetic as no compare at all (0 is never a version).
    if let (Some(expected), Some(r)) = (m.compare, live) {
        let counter = matches!(w.op, Op::Incr(_) | Op::Decr(_));
        let unchecked = counter && (r.data.is_empty() || expected == 0);
        if r.clock != expected && !matches!(w.op, Op::Cas(_) | Op::Add) && !unchecked {
            return (Outcome::Exists, None);
        }
    }
    match (w.op, live) {
        (Op::Set, _) | (Op::Add, None) | (Op::Replace, Some(_)) => {
            (Outcome::Stored, stored(w.flags, w.exptime, w.data.to_vec()))
        }
        (Op::Add, Some(_)) | (Op::Replace, None) | (Op::Append | Op::Prepend, None) => {
            (Outcome::NotStored, None)
        }
        (Op::Append, Some(r)) => {
            let mut data = r.data.clone();
            data.extend_from_slice(&w.data);
            (Outcome::Stored, value(r.flags, r.exptime, data))
        }
        (Op::Prepend, Some(r)) => {
            let mut data = w.data.to_vec();
            data.extend_from_slice(&r.data);
            (Outcome::Stored, value(r.flags, r.exptime, data))
        }
        (Op::Cas(_), None) => (Outcome::NotFound, None),
        (Op::Cas(expected), Some(r)) if r.clock == expected => {
            (Outcome::Stored, stored(w.flags, w.exptime, w.data.to_vec()))
        }
        // `ms ... C<older> I`: the late writer's value is kept, but as stale, with
        // the item's exptime and its token, so that a fresh recache still wins.
        // `C0` is no older version (memcached answers EX): none is ever 0.
        (Op::Cas(expected), Some(r)) if m.invalidate && expected != 0 && expected < r.clock => {
            let mut rec = Record::value(clock, w.flags, r.exptime, w.data.to_vec());
            rec.marks = Marks {
                stale: true,
                token_sent: r.marks.token_sent,
                key_binary: m.key_binary,
            };
            (Outcome::Stored, Some(rec))
        }
        (Op::Cas(_), Some(_)) => (Outcome::Exists, None),
        (Op::Incr(_) | Op::Decr(_), None) => match m.vivify {
            Some(exptime) => {
                let data = m.initial.to_string().into_bytes();
                (Outcome::Made(m.initial), value(0, exptime, data))
            }
            None => (Outcome::NotFound, None),
        },
        (Op::Incr(delta) | Op::Decr(delta), Some(r)) => {
            let Some(n) = parse_number(&r.data) else {
                return (Outcome::NonNumeric, None);
            };
            // memcached: incr wraps at 2^64, decr stops at 0.
            let n = match w.op {
                Op::Incr(_) => n.wrapping_add(delta),
                _ => n.saturating_sub(delta),
            };
            // memcached rewrites a counter in place when the new number is no
            // longer than the old value, padding it with spaces; clients see them.
            let mut data = n.to_string().into_bytes();
            let in_place = data.len() <= r.data.len();
            if data.len() < r.data.len() {
                data.resize(r.data.len(), b' ');
            }
            let mut rec = Record::value(clock, r.flags, m.ttl.unwrap_or(r.exptime), data);
            // A counter that grows is a new item in memcached, without the old
            // item's marks; one rewritten in place keeps them.
            if in_place {
                rec.marks = r.marks;
            }
            (Outcome::Number(n), Some(rec))
        }
        (Op::Touch, None) => (Outcome::NotFound, None),
        (Op::Touch, Some(r)) => {
            let mut rec = Record::value(clock, r.flags, w.exptime, r.data.clone());
            rec.marks = r.marks;
            (Outcome::Touched, Some(rec))
        }
        // `md <key> I`: the value stays, stale, and the next reader wins the token.
        (Op::Delete, Some(r)) if m.invalidate => {
            let mut rec = Record::value(clock, r.flags, m.ttl.unwrap_or(r.exptime), r.data.clone());
            rec.marks = Marks {
                stale: true,
                token_sent: false,
                key_binary: r.marks.key_binary,
            };
            (Outcome::Deleted, Some(rec))
        }
        // The answer is NOT_FOUND, but a tombstone is written and replicated all
        // the same: a coordinator that lacks the key (just restarted, or new to it
        // while data moves) must not leave the other owners' copies alive.
        (Op::Delete, None) => (Outcome::NotFound, Some(Record::tombstone(clock))),
        (Op::Delete, Some(_)) => (Outcome::Deleted, Some(Record::tombstone(clock))),
        (Op::Get, None) => match m.vivify {
            Some(exptime) => {
                let mut rec = Record::value(clock, 0, exptime, Vec::new());
                rec.marks.token_sent = true;
                (Outcome::Fetched { won: true }, Some(rec))
            }
            None => (Outcome::NotFound, None),
        },
        (Op::Get, Some(r)) => {
            // R looks at the exptime T leaves (memcached reads the flags in order,
            // and T usually comes first).
            let exptime = m.ttl.unwrap_or(r.exptime);
            let expiring = |before: u32| exptime != 0 && exptime < before;
            let won =
                !r.marks.token_sent && (r.marks.stale || m.recache_before.is_some_and(expiring));
            if !won && m.ttl.is_none() {
                return (Outcome::Fetched { won }, None);
            }
            let mut rec = Record::value(clock, r.flags, m.ttl.unwrap_or(r.exptime), r.data.clone());
            rec.marks = r.marks;
            rec.marks.token_sent |= won;
            (Outcome::Fetched { won }, Some(rec))
        }
    }
}

/// A counter value as memcached reads one (`safe_strtoull`): white space, an
/// optional sign, decimal digits that fit in a u64, and then white space or the end;
/// whatever follows that is ignored. A minus sign is refused unless the number is
/// zero (strtoull negates, and memcached refuses what then looks negative).
fn parse_number(data: &[u8]) -> Option<u64> {
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut i = data.iter().position(|&b| !space(b))?;
    let minus = data[i] == b'-';
    if matches!(data[i], b'+' | b'-') {
        i += 1;
    }
    let digits = data[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    // A NUL ends the number too: memcached reads the value as a C string.
    let ends = |b: u8| space(b) || b == 0;
    if digits == 0 || data.get(i + digits).is_some_and(|&b| !ends(b)) {
        return None;
    }
    let n: u64 = std::str::from_utf8(&data[i..i + digits])
        .ok()?
        .parse()
        .ok()?;
    match (minus, n) {
        (false, n) => Some(n),
        (true, 0) => Some(0),
        (true, _) => None,
    }
}

#[cfg(test)]
mod tests;
