//! What a write does to a key: the memcached semantics of set, add, replace, append,
//! prepend, cas, incr, decr, touch and delete, decided at the coordinator from the
//! key's current record. Pure: the coordinator passes in the record it holds, a fresh
//! stamp and the time, and gets back the reply and the record to store and replicate.
//! Running it inside the store's per-key read-modify-write makes every conditional
//! command atomic.

use crate::record::{Kind, Record};

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
    pub data: Vec<u8>,
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
            _ => return None,
        })
    }
}

/// Whether `rec` is a value a client can see at `now`.
pub fn is_live(rec: &Record, now: u32) -> bool {
    rec.kind == Kind::Value && (rec.exptime == 0 || rec.exptime > now)
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
    let value = |flags, exptime, data| Some(Record::value(clock, flags, exptime, data));
    match (w.op, live) {
        (Op::Set, _) | (Op::Add, None) | (Op::Replace, Some(_)) => {
            (Outcome::Stored, value(w.flags, w.exptime, w.data.clone()))
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
            let mut data = w.data.clone();
            data.extend_from_slice(&r.data);
            (Outcome::Stored, value(r.flags, r.exptime, data))
        }
        (Op::Cas(_), None) => (Outcome::NotFound, None),
        (Op::Cas(expected), Some(r)) if r.clock != expected => (Outcome::Exists, None),
        (Op::Cas(_), Some(_)) => (Outcome::Stored, value(w.flags, w.exptime, w.data.clone())),
        (Op::Incr(_) | Op::Decr(_), None) => (Outcome::NotFound, None),
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
            if data.len() < r.data.len() {
                data.resize(r.data.len(), b' ');
            }
            (Outcome::Number(n), value(r.flags, r.exptime, data))
        }
        (Op::Touch, None) => (Outcome::NotFound, None),
        (Op::Touch, Some(r)) => (Outcome::Touched, value(r.flags, w.exptime, r.data.clone())),
        // The answer is NOT_FOUND, but a tombstone is written and replicated all
        // the same: a coordinator that lacks the key (just restarted, or new to it
        // while data moves) must not leave the other owners' copies alive.
        (Op::Delete, None) => (Outcome::NotFound, Some(Record::tombstone(clock))),
        (Op::Delete, Some(_)) => (Outcome::Deleted, Some(Record::tombstone(clock))),
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
    if digits == 0 || data.get(i + digits).is_some_and(|&b| !space(b)) {
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
mod tests {
    use super::*;

    const NOW: u32 = 1_000_000;

    fn w(op: Op, data: &str) -> Write {
        Write {
            op,
            flags: 7,
            exptime: 0,
            data: data.as_bytes().to_vec(),
        }
    }

    fn val(clock: u64, data: &str) -> Record {
        Record::value(clock, 3, 0, data.as_bytes().to_vec())
    }

    #[test]
    fn conditional_stores_follow_memcached() {
        let cur = val(10, "a");
        assert_eq!(
            apply(&w(Op::Add, "b"), Some(&cur), 20, NOW).0,
            Outcome::NotStored
        );
        assert_eq!(apply(&w(Op::Add, "b"), None, 20, NOW).0, Outcome::Stored);
        assert_eq!(
            apply(&w(Op::Replace, "b"), None, 20, NOW).0,
            Outcome::NotStored
        );
        let (o, r) = apply(&w(Op::Replace, "b"), Some(&cur), 20, NOW);
        assert_eq!((o, r.unwrap().data), (Outcome::Stored, b"b".to_vec()));
        let (_, r) = apply(&w(Op::Append, "b"), Some(&cur), 20, NOW);
        let r = r.unwrap();
        assert_eq!(
            (r.data.as_slice(), r.flags),
            (&b"ab"[..], 3),
            "append keeps flags"
        );
        let (_, r) = apply(&w(Op::Prepend, "b"), Some(&cur), 20, NOW);
        assert_eq!(r.unwrap().data, b"ba");
        assert_eq!(
            apply(&w(Op::Append, "b"), None, 20, NOW).0,
            Outcome::NotStored
        );
    }

    #[test]
    fn cas_compares_the_version() {
        let cur = val(10, "a");
        assert_eq!(
            apply(&w(Op::Cas(10), "b"), Some(&cur), 20, NOW).0,
            Outcome::Stored
        );
        assert_eq!(
            apply(&w(Op::Cas(9), "b"), Some(&cur), 20, NOW),
            (Outcome::Exists, None)
        );
        assert_eq!(
            apply(&w(Op::Cas(10), "b"), None, 20, NOW),
            (Outcome::NotFound, None)
        );
        let tomb = Record::tombstone(10);
        assert_eq!(
            apply(&w(Op::Cas(10), "b"), Some(&tomb), 20, NOW).0,
            Outcome::NotFound
        );
    }

    /// As memcached: a counter that shrinks keeps its length, padded with spaces,
    /// and a counter with white space around its digits still counts.
    #[test]
    fn counters_keep_their_length_as_memcached_does() {
        let (o, r) = apply(&w(Op::Decr(1), ""), Some(&val(10, "10")), 20, NOW);
        assert_eq!((o, r.unwrap().data), (Outcome::Number(9), b"9 ".to_vec()));
        let (o, r) = apply(&w(Op::Incr(1), ""), Some(&val(10, "9 ")), 20, NOW);
        assert_eq!((o, r.unwrap().data), (Outcome::Number(10), b"10".to_vec()));
        let (o, r) = apply(&w(Op::Incr(91), ""), Some(&val(10, "9 ")), 20, NOW);
        assert_eq!(
            (o, r.unwrap().data),
            (Outcome::Number(100), b"100".to_vec())
        );
        assert_eq!(
            apply(&w(Op::Incr(1), ""), Some(&val(10, " 7")), 20, NOW).0,
            Outcome::Number(8)
        );
        assert_eq!(
            apply(&w(Op::Incr(1), ""), Some(&val(10, "7 x")), 20, NOW).0,
            Outcome::Number(8),
            "what follows the space is not read"
        );
        assert_eq!(
            apply(&w(Op::Incr(1), ""), Some(&val(10, "7x")), 20, NOW).0,
            Outcome::NonNumeric
        );
        assert_eq!(
            apply(&w(Op::Incr(1), ""), Some(&val(10, "+7")), 20, NOW).0,
            Outcome::Number(8)
        );
        assert_eq!(
            apply(&w(Op::Incr(1), ""), Some(&val(10, "-7")), 20, NOW).0,
            Outcome::NonNumeric
        );
    }

    #[test]
    fn counters_wrap_floor_and_refuse_text() {
        let max = val(10, "18446744073709551615");
        assert_eq!(
            apply(&w(Op::Incr(1), ""), Some(&max), 20, NOW).0,
            Outcome::Number(0)
        );
        let (o, r) = apply(&w(Op::Decr(5), ""), Some(&val(10, "3")), 20, NOW);
        assert_eq!((o, r.unwrap().data), (Outcome::Number(0), b"0".to_vec()));
        assert_eq!(
            apply(&w(Op::Incr(1), ""), Some(&val(10, "x1")), 20, NOW),
            (Outcome::NonNumeric, None)
        );
        assert_eq!(
            apply(&w(Op::Incr(1), ""), Some(&val(10, "")), 20, NOW).0,
            Outcome::NonNumeric
        );
        assert_eq!(
            apply(&w(Op::Incr(1), ""), None, 20, NOW).0,
            Outcome::NotFound
        );
    }

    #[test]
    fn expired_and_deleted_keys_are_absent() {
        let mut old = val(10, "a");
        old.exptime = NOW;
        assert_eq!(
            apply(&w(Op::Add, "b"), Some(&old), 20, NOW).0,
            Outcome::Stored
        );
        assert_eq!(
            apply(&w(Op::Delete, ""), Some(&old), 20, NOW).0,
            Outcome::NotFound
        );
        assert_eq!(
            apply(&w(Op::Touch, ""), Some(&old), 20, NOW).0,
            Outcome::NotFound
        );
        let (o, r) = apply(&w(Op::Delete, ""), Some(&val(10, "a")), 20, NOW);
        assert_eq!(o, Outcome::Deleted);
        assert_eq!(r.unwrap().kind, Kind::Tombstone);
    }

    #[test]
    fn the_new_version_is_newer_than_the_current_one() {
        // The current record came from a host whose clock runs ahead.
        let ahead = val(500, "a");
        let (_, r) = apply(&w(Op::Set, "b"), Some(&ahead), 20, NOW);
        assert_eq!(r.unwrap().clock, 501);
        let (_, r) = apply(&w(Op::Set, "b"), Some(&val(10, "a")), 20, NOW);
        assert_eq!(r.unwrap().clock, 20);
    }

    #[test]
    fn wire_codes_round_trip() {
        for op in [
            Op::Set,
            Op::Add,
            Op::Replace,
            Op::Append,
            Op::Prepend,
            Op::Cas(9),
            Op::Incr(3),
            Op::Decr(4),
            Op::Touch,
            Op::Delete,
        ] {
            let (c, a) = op.encode();
            assert_eq!(Op::decode(c as u64, a), Some(op));
        }
        for o in [
            Outcome::Stored,
            Outcome::NotStored,
            Outcome::Exists,
            Outcome::NotFound,
            Outcome::Deleted,
            Outcome::Touched,
            Outcome::Number(5),
            Outcome::NonNumeric,
        ] {
            let (c, n) = o.code();
            assert_eq!(Outcome::from_code(c as u64, n), Some(o));
        }
        assert_eq!(Op::decode(99, 0), None);
    }
}
