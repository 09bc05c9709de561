//! msgpack-rpc framing: the messages every kumo node exchanges (DESIGN §4).
//!
//! A connection carries msgpack objects back to back, with no length prefix:
//!
//! ```text
//! request       [0, msgid, method, params]
//! response      [1, msgid, error, result]
//! notification  [2, method, params]
//! ```
//!
//! This is the msgpack-rpc specification as any client library implements it, so a
//! Python script with `msgpack` and a socket can call a kumo method.
//!
//! Decoding is incremental and allocation-safe. [`frame_len`] walks the bytes already
//! received, without allocating, to learn where the next object ends. A partial
//! object is an ordinary [`Decoded::Incomplete`]; an object that announces more than
//! [`FRAME_SIZE_MAX`] bytes is refused before anything of that size is allocated.
//! Only a complete, bounded frame is handed to rmpv.

use super::msgpack::{write_array_len, write_bin_len, write_str, write_uint, write_value};
use rmpv::Value;

mod read;
#[cfg(test)]
use read::walk;
use read::Walker;
pub use read::{decode, decode_owned, frame_len, FrameReader, GATHER_MIN_BYTES};

/// The largest value a frame carries: the store's record data limit, which also
/// bounds the gateway's `-I`.
pub const FRAME_VALUE_MAX: usize = 64 << 20;
/// Room beside that value for its key (at most 1 KiB), the record's fields, the
/// message envelope and msgpack's length prefixes.
pub const FRAME_ENVELOPE_MAX: usize = 64 << 10;
/// The largest frame a node accepts: one value of the largest size with its key
/// and headers (so a max-size value, or an append that grows a value to the limit,
/// replicates without dropping the link). Replace batches are cut well below
/// this, so anything bigger is a broken or hostile peer.
pub const FRAME_SIZE_MAX: usize = FRAME_VALUE_MAX + FRAME_ENVELOPE_MAX;

/// The deepest nesting of arrays and maps a frame may have. kumo's own messages nest
/// three levels; the bound keeps rmpv's recursive decoder far from the stack limit.
pub const FRAME_DEPTH_MAX: usize = 32;

const TYPE_REQUEST: u64 = 0;
const TYPE_RESPONSE: u64 = 1;
const TYPE_NOTIFY: u64 = 2;

/// One msgpack-rpc message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        msgid: u32,
        method: String,
        params: Vec<Value>,
    },
    Response {
        msgid: u32,
        error: Value,
        result: Value,
    },
    Notify {
        method: String,
        params: Vec<Value>,
    },
}

/// Why a byte stream cannot be decoded. Either way the connection is beyond repair:
/// without a length prefix there is no way to find the next frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The object announces `announced` bytes or more, over [`FRAME_SIZE_MAX`].
    TooLarge { announced: u64 },
    /// The bytes are not a msgpack-rpc message; the text says which rule broke.
    Malformed(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLarge { announced } => write!(
                f,
                "frame of at least {announced} bytes exceeds the limit of {FRAME_SIZE_MAX} bytes"
            ),
            DecodeError::Malformed(why) => write!(f, "malformed msgpack-rpc frame: {why}"),
        }
    }
}

/// The result of looking at the front of a receive buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// More bytes are needed; nothing was consumed.
    Incomplete,
    /// One message, which took the first `len` bytes of the buffer.
    Frame { message: Message, len: usize },
}

fn message_from_value(value: Value) -> Result<Message, DecodeError> {
    let bad = |why: &str| DecodeError::Malformed(why.to_string());
    let Value::Array(mut items) = value else {
        return Err(bad("frame is not an array"));
    };
    let kind = items
        .first()
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("missing type"))?;
    let msgid = |v: &Value| {
        v.as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| bad("msgid is not a u32"))
    };
    let method = |v: Value| match v {
        Value::String(s) => s.into_str().ok_or_else(|| bad("method is not UTF-8")),
        _ => Err(bad("method is not a string")),
    };
    let params = |v: Value| match v {
        Value::Array(p) => Ok(p),
        _ => Err(bad("params is not an array")),
    };
    match (kind, items.len()) {
        (TYPE_REQUEST, 4) => {
            let p = items.pop().unwrap_or(Value::Nil);
            let m = items.pop().unwrap_or(Value::Nil);
            Ok(Message::Request {
                msgid: msgid(&items[1])?,
                method: method(m)?,
                params: params(p)?,
            })
        }
        (TYPE_RESPONSE, 4) => {
            let result = items.pop().unwrap_or(Value::Nil);
            let error = items.pop().unwrap_or(Value::Nil);
            Ok(Message::Response {
                msgid: msgid(&items[1])?,
                error,
                result,
            })
        }
        (TYPE_NOTIFY, 3) => {
            let p = items.pop().unwrap_or(Value::Nil);
            let m = items.pop().unwrap_or(Value::Nil);
            Ok(Message::Notify {
                method: method(m)?,
                params: params(p)?,
            })
        }
        (0..=2, n) => Err(DecodeError::Malformed(format!(
            "message of type {kind} has {n} fields"
        ))),
        _ => Err(DecodeError::Malformed(format!(
            "unknown message type {kind}"
        ))),
    }
}

/// A request whole at the front of a byte stream, read in place: its params are
/// left encoded, for a service that reads them without building Values.
#[derive(Debug, PartialEq, Eq)]
pub struct RawRequest<'a> {
    pub msgid: u32,
    pub method: &'a str,
    /// The params array, encoded.
    pub params: &'a [u8],
    /// The bytes the whole frame takes.
    pub len: usize,
}

/// The request at the front of `buf`, if a whole one is there in the usual shape
/// (`[0, msgid, method, [params...]]`) and within [`FRAME_SIZE_MAX`]. Anything
/// else, a frame cut short included, is None and left to [`FrameReader`].
/// Only a method `wanted` accepts is read on: its params are walked to find their
/// end, which the others are spared.
pub fn request_at(buf: &[u8], wanted: impl Fn(&str) -> bool) -> Option<RawRequest<'_>> {
    let mut c = super::msgpack::Cursor::new(buf);
    if c.array().ok()? != 4 || c.uint().ok()? != TYPE_REQUEST {
        return None;
    }
    let msgid = u32::try_from(c.uint().ok()?).ok()?;
    let method = c.str().ok()?;
    if !wanted(method) {
        return None;
    }
    let start = c.at();
    if !matches!(buf.get(start), Some(0x90..=0x9f | 0xdc | 0xdd)) {
        return None;
    }
    let rest = FRAME_SIZE_MAX.checked_sub(start)?;
    let end = start + Walker::default().walk(&buf[start..], rest).ok()?.end?;
    Some(RawRequest {
        msgid,
        method,
        params: &buf[start..end],
        len: end,
    })
}

/// A [`RawRequest`]'s params as Values, for a service that reads them in place
/// only when they have the shape it expects.
pub fn params_as_values(params: &[u8]) -> Result<Vec<Value>, DecodeError> {
    match super::msgpack::read_value(params, FRAME_DEPTH_MAX) {
        Ok((Value::Array(v), _)) => Ok(v),
        Ok(_) => Err(DecodeError::Malformed(
            "params that are not an array".into(),
        )),
        Err(why) => Err(DecodeError::Malformed(why)),
    }
}

/// Appends the encoding of a request to `out`.
pub fn encode_request(out: &mut Vec<u8>, msgid: u32, method: &str, params: &[Value]) {
    encode_parts(out, TYPE_REQUEST, Some(msgid), method, params);
}

/// Appends a request whose last param is the binary `bytes`, after `params`: a
/// batch of records goes out without being built into a Value first.
pub fn encode_request_with_binary(
    out: &mut Vec<u8>,
    msgid: u32,
    method: &str,
    params: &[Value],
    bytes: &[u8],
) {
    encode_request_head(out, msgid, method);
    write_array_len(out, params.len() + 1);
    for p in params {
        write_value(out, p);
    }
    write_bin_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends the head of a request whose params are already encoded: the caller
/// sends their bytes (one msgpack array) right after. A write sent to several
/// replicas is so encoded once for all of them.
pub fn encode_request_head(out: &mut Vec<u8>, msgid: u32, method: &str) {
    write_array_len(out, 4);
    write_uint(out, TYPE_REQUEST);
    write_uint(out, msgid as u64);
    write_str(out, method);
}

/// Appends the encoding of a notification to `out`.
pub fn encode_notify(out: &mut Vec<u8>, method: &str, params: &[Value]) {
    encode_parts(out, TYPE_NOTIFY, None, method, params);
}

/// Appends the encoding of a response to `out`. `Ok` sends `[1, msgid, nil, result]`,
/// `Err` sends `[1, msgid, error, nil]`.
pub fn encode_response(out: &mut Vec<u8>, msgid: u32, outcome: &Result<Value, Value>) {
    let (error, result) = match outcome {
        Ok(v) => (&Value::Nil, v),
        Err(e) => (e, &Value::Nil),
    };
    write_array_len(out, 4);
    write_uint(out, TYPE_RESPONSE);
    write_uint(out, msgid as u64);
    write_value(out, error);
    write_value(out, result);
}

/// Appends the head of a successful response, `[1, msgid, nil, `, whose result the
/// caller writes right after: a record is so written from where it is, never built
/// as a Value first.
pub fn encode_response_head(out: &mut Vec<u8>, msgid: u32) {
    write_array_len(out, 4);
    write_uint(out, TYPE_RESPONSE);
    write_uint(out, msgid as u64);
    out.push(0xc0);
}

fn encode_parts(out: &mut Vec<u8>, kind: u64, msgid: Option<u32>, method: &str, params: &[Value]) {
    write_array_len(out, if msgid.is_some() { 4 } else { 3 });
    write_uint(out, kind);
    if let Some(id) = msgid {
        write_uint(out, id as u64);
    }
    write_str(out, method);
    write_array_len(out, params.len());
    for p in params {
        write_value(out, p);
    }
}

/// Encodes any message; used by tests and tools that build frames by value.
pub fn encode(out: &mut Vec<u8>, message: &Message) {
    match message {
        Message::Request {
            msgid,
            method,
            params,
        } => encode_request(out, *msgid, method, params),
        Message::Response {
            msgid,
            error,
            result,
        } => {
            let outcome = if error.is_nil() {
                Ok(result.clone())
            } else {
                Err(error.clone())
            };
            encode_response(out, *msgid, &outcome)
        }
        Message::Notify { method, params } => encode_notify(out, method, params),
    }
}

#[cfg(test)]
mod tests;
