//! memcached's binary protocol, as a pure codec: bytes in, a request (or the exact
//! error to answer) out; outcomes and values in, response packets out. The
//! gateway's binary connection (`gateway/binary.rs`) drives it; nothing here
//! touches a socket.
//!
//! A packet is a 24-byte header (magic, opcode, key length, extras length, data
//! type, vbucket or status, body length, opaque, CAS, big-endian), then the extras,
//! the key and the value. Responses echo the request's opcode and opaque. The
//! quiet opcodes (GETQ, SETQ, ...) say nothing about their common outcome; a NOOP
//! after them tells the client they have all run.

use super::memcache::KEY_SIZE_MAX;

pub const HEADER_SIZE: usize = 24;
/// The most of a header, its extras and its key memcached reads at once.
pub const HEADER_READ_MAX: usize = 16384;
pub const REQUEST: u8 = 0x80;
pub const RESPONSE: u8 = 0x81;

/// The opcodes memcached serves.
pub mod op {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCREMENTQ: u8 = 0x15;
    pub const DECREMENTQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const VERBOSITY: u8 = 0x1b;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}

/// Response statuses, with the words memcached sends in an error's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 0x00,
    NotFound = 0x01,
    Exists = 0x02,
    TooLarge = 0x03,
    Invalid = 0x04,
    NotStored = 0x05,
    NonNumeric = 0x06,
    UnknownCommand = 0x81,
    OutOfMemory = 0x82,
    /// The cluster could not answer in time (kumo's, for what text calls
    /// SERVER_ERROR); the body says why.
    TemporaryFailure = 0x86,
}

impl Status {
    pub fn message(self) -> &'static str {
        match self {
            Status::Ok => "",
            Status::NotFound => "Not found",
            Status::Exists => "Data exists for key.",
            Status::TooLarge => "Too large.",
            Status::Invalid => "Invalid arguments",
            Status::NotStored => "Not stored.",
            Status::NonNumeric => "Non-numeric server-side value for incr or decr",
            Status::UnknownCommand => "Unknown command",
            Status::OutOfMemory => "Out of memory",
            Status::TemporaryFailure => "Temporary failure",
        }
    }
}

/// A request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub magic: u8,
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
}

impl Header {
    pub fn read(b: &[u8]) -> Option<Header> {
        let b = b.get(..HEADER_SIZE)?;
        Some(Header {
            magic: b[0],
            opcode: b[1],
            key_len: u16::from_be_bytes([b[2], b[3]]),
            extras_len: b[4],
            body_len: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            opaque: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
            cas: u64::from_be_bytes(b[16..24].try_into().expect("8 bytes")),
        })
    }

    /// Whether the opcode is a quiet one.
    pub fn quiet(&self) -> bool {
        is_quiet(self.opcode)
    }
}

/// Whether `opcode` is a quiet one: it says nothing about its common outcome.
pub fn is_quiet(opcode: u8) -> bool {
    matches!(
        opcode,
        op::GETQ
            | op::GETKQ
            | op::SETQ
            | op::ADDQ
            | op::REPLACEQ
            | op::DELETEQ
            | op::INCREMENTQ
            | op::DECREMENTQ
            | op::QUITQ
            | op::FLUSHQ
            | op::APPENDQ
            | op::PREPENDQ
            | op::GATQ
            | op::GATKQ
    )
}

/// Where a response goes: the request's opcode and opaque, echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct To {
    pub opcode: u8,
    pub opaque: u32,
    pub quiet: bool,
}

impl To {
    pub fn of(h: &Header) -> To {
        To {
            opcode: h.opcode,
            opaque: h.opaque,
            quiet: h.quiet(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

/// A request, with its key and value borrowed from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// GET, GETK and their quiet forms; with `touch`, GAT and GATK.
    Get {
        key: &'a [u8],
        with_key: bool,
        touch: Option<i64>,
    },
    Store {
        op: StoreOp,
        key: &'a [u8],
        flags: u32,
        exptime: i64,
        value: &'a [u8],
    },
    Delete {
        key: &'a [u8],
    },
    /// INCREMENT and DECREMENT: on a miss, `initial` is stored unless `exptime`
    /// is 0xffffffff.
    Arith {
        incr: bool,
        key: &'a [u8],
        delta: u64,
        initial: u64,
        exptime: u32,
    },
    Touch {
        key: &'a [u8],
        exptime: i64,
    },
    Flush {
        delay: u32,
    },
    Stat {
        group: &'a [u8],
    },
    Version,
    Noop,
    Quit,
}

/// The exptime that makes INCREMENT and DECREMENT miss rather than create.
pub const NO_CREATE: u32 = 0xffff_ffff;

/// What the front of the input holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Not a whole packet yet.
    Incomplete,
    /// A request whose packet took `len` bytes.
    Request {
        header: Header,
        command: Command<'a>,
        len: usize,
    },
    /// A packet to answer with `status` (its error body); `len` bytes of it are
    /// used, then `swallow` more are skipped; `close` ends the connection after
    /// the answer. `answer: false` closes without a word (a wrong magic byte).
    Refused {
        to: To,
        status: Status,
        len: usize,
        swallow: usize,
        close: bool,
        answer: bool,
        /// memcached drops the old value of a key whose SET was too large.
        invalidate: Option<&'a [u8]>,
    },
}

/// Parses the packet at the front of `input`. `value_max` is the `-I` limit.
/// A store request whose header `parse` accepts and whose body has not all come:
/// the length of the whole packet, for a caller to gather it as it arrives rather
/// than hold it in the connection's input. None for anything else.
pub fn gathers(input: &[u8], value_max: usize) -> Option<usize> {
    let h = Header::read(input)?;
    let (klen, elen, blen) = (
        h.key_len as usize,
        h.extras_len as usize,
        h.body_len as usize,
    );
    let ok = h.magic == REQUEST
        && HEADER_SIZE + elen + klen <= HEADER_READ_MAX
        && klen + elen <= blen
        && klen <= KEY_SIZE_MAX
        && is_store(h.opcode)
        && blen - klen - elen <= value_max
        && shape_ok(&h, blen - klen - elen)
        && input.len() < HEADER_SIZE + blen;
    ok.then_some(HEADER_SIZE + blen)
}

/// Where a store request's value starts in its packet.
pub fn value_offset(h: &Header) -> usize {
    HEADER_SIZE + h.extras_len as usize + h.key_len as usize
}

fn is_store(opcode: u8) -> bool {
    matches!(
        opcode,
        op::SET
            | op::SETQ
            | op::ADD
            | op::ADDQ
            | op::REPLACE
            | op::REPLACEQ
            | op::APPEND
            | op::APPENDQ
            | op::PREPEND
            | op::PREPENDQ
    )
}

pub fn parse(input: &[u8], value_max: usize) -> Parsed<'_> {
    let Some(h) = Header::read(input) else {
        return Parsed::Incomplete;
    };
    let to = To::of(&h);
    // What memcached does to a stream it cannot read: close it without a word.
    let silent_close = Parsed::Refused {
        to,
        status: Status::Invalid,
        len: input.len(),
        swallow: 0,
        close: true,
        answer: false,
        invalidate: None,
    };
    let refuse = |status, len, swallow, close| Parsed::Refused {
        to,
        status,
        len,
        swallow,
        close,
        answer: true,
        invalidate: None,
    };
    if h.magic != REQUEST {
        return silent_close;
    }
    let (klen, elen, blen) = (
        h.key_len as usize,
        h.extras_len as usize,
        h.body_len as usize,
    );
    // memcached reads a header's extras and key into a buffer of this size; more
    // and it closes without a word.
    if HEADER_SIZE + elen + klen > HEADER_READ_MAX {
        return silent_close;
    }
    // A body shorter than its extras and key cannot be read in step.
    if klen + elen > blen {
        return refuse(Status::UnknownCommand, HEADER_SIZE, 0, true);
    }
    if klen > KEY_SIZE_MAX {
        return refuse(Status::Invalid, HEADER_SIZE, 0, true);
    }
    let value_len = blen - klen - elen;
    // A value over the limit is refused before it has all come, and skipped.
    if is_store(h.opcode) && value_len > value_max && shape_ok(&h, value_len) {
        if input.len() < HEADER_SIZE + elen + klen {
            return Parsed::Incomplete;
        }
        let key = &input[HEADER_SIZE + elen..HEADER_SIZE + elen + klen];
        let set = matches!(h.opcode, op::SET | op::SETQ);
        return Parsed::Refused {
            to,
            status: Status::TooLarge,
            len: HEADER_SIZE + elen + klen,
            swallow: value_len,
            close: false,
            answer: true,
            invalidate: set.then_some(key),
        };
    }
    // STAT, TOUCH and the GATs take no value, and memcached does not read one:
    // bytes after the key are the next request.
    let takes_value = !matches!(
        h.opcode,
        op::STAT | op::TOUCH | op::GAT | op::GATQ | op::GATK | op::GATKQ
    );
    let len = if takes_value {
        HEADER_SIZE + blen
    } else {
        HEADER_SIZE + elen + klen
    };
    if input.len() < len {
        return Parsed::Incomplete;
    }
    if !shape_ok(&h, if takes_value { value_len } else { 0 }) {
        return match known(h.opcode) {
            true => refuse(Status::Invalid, len, 0, true),
            false => refuse(Status::UnknownCommand, len, 0, false),
        };
    }
    let body = &input[HEADER_SIZE..len];
    let extras = &body[..elen];
    let key = &body[elen..elen + klen];
    let value = body.get(elen + klen..).unwrap_or_default();
    let u32_at = |i: usize| u32::from_be_bytes(extras[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_be_bytes(extras[i..i + 8].try_into().expect("8 bytes"));
    // Unlike the text protocol's, a binary exptime is unsigned: 0xffffffff is a
    // time in 2106, not one in the past.
    let exptime = |i: usize| i64::from(u32_at(i));
    let command = match h.opcode {
        op::GET | op::GETQ | op::GETK | op::GETKQ => Command::Get {
            key,
            with_key: matches!(h.opcode, op::GETK | op::GETKQ),
            touch: None,
        },
        op::GAT | op::GATQ | op::GATK | op::GATKQ => Command::Get {
            key,
            with_key: matches!(h.opcode, op::GATK | op::GATKQ),
            touch: Some(exptime(0)),
        },
        op::SET | op::SETQ | op::ADD | op::ADDQ | op::REPLACE | op::REPLACEQ => Command::Store {
            op: match h.opcode {
                op::SET | op::SETQ => StoreOp::Set,
                op::ADD | op::ADDQ => StoreOp::Add,
                _ => StoreOp::Replace,
            },
            key,
            flags: u32_at(0),
            exptime: exptime(4),
            value,
        },
        op::APPEND | op::APPENDQ | op::PREPEND | op::PREPENDQ => Command::Store {
            op: if matches!(h.opcode, op::APPEND | op::APPENDQ) {
                StoreOp::Append
            } else {
                StoreOp::Prepend
            },
            key,
            flags: 0,
            exptime: 0,
            value,
        },
        op::DELETE | op::DELETEQ => Command::Delete { key },
        op::INCREMENT | op::INCREMENTQ | op::DECREMENT | op::DECREMENTQ => Command::Arith {
            incr: matches!(h.opcode, op::INCREMENT | op::INCREMENTQ),
            key,
            delta: u64_at(0),
            initial: u64_at(8),
            exptime: u32_at(16),
        },
        op::TOUCH => Command::Touch {
            key,
            exptime: exptime(0),
        },
        op::FLUSH | op::FLUSHQ => Command::Flush {
            delay: if elen == 4 { u32_at(0) } else { 0 },
        },
        op::STAT => Command::Stat { group: key },
        op::VERSION => Command::Version,
        op::NOOP => Command::Noop,
        op::QUIT | op::QUITQ => Command::Quit,
        _ => return refuse(Status::UnknownCommand, len, 0, false),
    };
    Parsed::Request {
        header: h,
        command,
        len,
    }
}

/// Opcodes whose malformed requests are invalid arguments rather than unknown.
/// memcached 1.6 does not serve VERBOSITY in binary: it is unknown.
fn known(opcode: u8) -> bool {
    matches!(opcode, 0x00..=0x1a | 0x1c..=0x1e | op::GATK | op::GATKQ)
}

/// Whether the extras, key and value lengths are those the opcode takes.
fn shape_ok(h: &Header, value_len: usize) -> bool {
    let (k, e, v) = (h.key_len as usize, h.extras_len as usize, value_len);
    match h.opcode {
        op::GET | op::GETQ | op::GETK | op::GETKQ => e == 0 && k > 0 && v == 0,
        op::SET | op::SETQ | op::ADD | op::ADDQ | op::REPLACE | op::REPLACEQ => e == 8 && k > 0,
        op::APPEND | op::APPENDQ | op::PREPEND | op::PREPENDQ => e == 0 && k > 0,
        op::DELETE | op::DELETEQ => e == 0 && k > 0 && v == 0,
        op::INCREMENT | op::INCREMENTQ | op::DECREMENT | op::DECREMENTQ => {
            e == 20 && k > 0 && v == 0
        }
        op::TOUCH | op::GAT | op::GATQ | op::GATK | op::GATKQ => e == 4 && k > 0 && v == 0,
        op::FLUSH | op::FLUSHQ => k == 0 && v == 0 && (e == 0 || e == 4),
        op::STAT => e == 0 && v == 0,
        op::VERSION | op::NOOP | op::QUIT | op::QUITQ => e == 0 && k == 0 && v == 0,
        // Other opcodes are refused as unknown whatever their shape.
        _ => false,
    }
}

/// A response packet.
pub fn response(
    to: To,
    status: Status,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) -> Vec<u8> {
    let mut out = response_head(to, status, cas, extras, key, value.len());
    out.extend_from_slice(value);
    out
}

/// A response up to its value, for a value of `value_len` bytes sent after it.
pub fn response_head(
    to: To,
    status: Status,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value_len: usize,
) -> Vec<u8> {
    let body = extras.len() + key.len() + value_len;
    let mut out = Vec::with_capacity(HEADER_SIZE + extras.len() + key.len());
    out.push(RESPONSE);
    out.push(to.opcode);
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.push(extras.len() as u8);
    out.push(0);
    out.extend_from_slice(&(status as u16).to_be_bytes());
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&to.opaque.to_be_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out
}

/// An error response: the status and memcached's words for it.
pub fn error(to: To, status: Status) -> Vec<u8> {
    response(to, status, 0, &[], &[], status.message().as_bytes())
}

/// A get's hit: the flags as extras, the key for GETK and GATK, the value (none
/// for TOUCH).
pub fn value_response(to: To, key: Option<&[u8]>, flags: u32, value: &[u8], cas: u64) -> Vec<u8> {
    let (mut out, with_value) = value_response_head(to, key, flags, value.len(), cas);
    if with_value {
        out.extend_from_slice(value);
    }
    out
}

/// [`value_response`] up to its value, and whether the value follows (TOUCH
/// answers without it).
pub fn value_response_head(
    to: To,
    key: Option<&[u8]>,
    flags: u32,
    value_len: usize,
    cas: u64,
) -> (Vec<u8>, bool) {
    let with_value = to.opcode != op::TOUCH;
    let head = response_head(
        to,
        Status::Ok,
        cas,
        &flags.to_be_bytes(),
        key.unwrap_or_default(),
        if with_value { value_len } else { 0 },
    );
    (head, with_value)
}

/// A get's miss: silent when quiet; GETK names the key instead of the words.
pub fn miss_response(to: To, key: Option<&[u8]>) -> Vec<u8> {
    match (to.quiet, key) {
        (true, _) => Vec::new(),
        (false, Some(k)) => response(to, Status::NotFound, 0, &[], k, &[]),
        (false, None) => error(to, Status::NotFound),
    }
}

#[cfg(test)]
mod tests;
