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

use rmpv::Value;

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

/// Returns the length of the msgpack object at the front of `buf`, `Ok(None)` if it is
/// not all there yet, or an error if it is malformed or announces more than `max` bytes.
/// Never allocates and never recurses.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, DecodeError> {
    // `open[d]` counts the items still to read at nesting depth d.
    let mut open = [0u64; FRAME_DEPTH_MAX + 1];
    let mut depth = 0usize;
    open[0] = 1;
    let mut pos = 0usize;
    loop {
        while open[depth] == 0 {
            if depth == 0 {
                return Ok(Some(pos));
            }
            depth -= 1;
        }
        open[depth] -= 1;
        let Some(&marker) = buf.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        // (bytes of length field, fixed payload bytes, child items)
        let (len_bytes, fixed, children): (usize, u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, 0),
            0x80..=0x8f => (0, 0, 2 * (marker & 0x0f) as u64),
            0x90..=0x9f => (0, 0, (marker & 0x0f) as u64),
            0xa0..=0xbf => (0, (marker & 0x1f) as u64, 0),
            0xc1 => return Err(DecodeError::Malformed("reserved marker 0xc1".into())),
            0xc4 | 0xd9 => (1, 0, 0),
            0xc5 | 0xda => (2, 0, 0),
            0xc6 | 0xdb => (4, 0, 0),
            0xc7 => (1, 1, 0),
            0xc8 => (2, 1, 0),
            0xc9 => (4, 1, 0),
            0xca => (0, 4, 0),
            0xcb => (0, 8, 0),
            0xcc | 0xd0 => (0, 1, 0),
            0xcd | 0xd1 => (0, 2, 0),
            0xce | 0xd2 => (0, 4, 0),
            0xcf | 0xd3 => (0, 8, 0),
            0xd4 => (0, 2, 0),
            0xd5 => (0, 3, 0),
            0xd6 => (0, 5, 0),
            0xd7 => (0, 9, 0),
            0xd8 => (0, 17, 0),
            0xdc | 0xde => (2, 0, 0),
            0xdd | 0xdf => (4, 0, 0),
        };
        let mut payload = fixed;
        let mut children = children;
        if len_bytes > 0 {
            let Some(field) = buf.get(pos..pos + len_bytes) else {
                return Ok(None);
            };
            pos += len_bytes;
            let n = field.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64);
            match marker {
                0xdc | 0xdd => children = n,
                0xde | 0xdf => children = 2 * n,
                _ => payload += n,
            }
        }
        // Every child takes at least one byte, so the announced size is a lower bound
        // that can be checked before any of it has arrived.
        let announced = pos as u64 + payload + children;
        if announced > max as u64 {
            return Err(DecodeError::TooLarge { announced });
        }
        pos += payload as usize;
        if children > 0 {
            if depth == FRAME_DEPTH_MAX {
                return Err(DecodeError::Malformed(format!(
                    "nesting deeper than {FRAME_DEPTH_MAX} levels"
                )));
            }
            depth += 1;
            open[depth] = children;
        }
        if pos > buf.len() {
            return Ok(None);
        }
    }
}

/// Decodes the message at the front of `buf`, if it is complete.
pub fn decode(buf: &[u8]) -> Result<Decoded, DecodeError> {
    let Some(len) = frame_len(buf, FRAME_SIZE_MAX)? else {
        return Ok(Decoded::Incomplete);
    };
    let mut slice = &buf[..len];
    let value = rmpv::decode::read_value_with_max_depth(&mut slice, FRAME_DEPTH_MAX + 1)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok(Decoded::Frame {
        message: message_from_value(value)?,
        len,
    })
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

/// Appends the encoding of a request to `out`.
pub fn encode_request(out: &mut Vec<u8>, msgid: u32, method: &str, params: &[Value]) {
    encode_parts(out, TYPE_REQUEST, Some(msgid), method, params);
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

// The envelope is written field by field, so that params (a value of up to 64 MiB)
// are encoded in place rather than copied into one Value first. msgpack's headers,
// in their shortest form as every encoder writes them:

fn write_array_len(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=15 => out.push(0x90 | n as u8),
        16..=0xffff => {
            out.push(0xdc);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdd);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

fn write_uint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    match n {
        0..=31 => out.push(0xa0 | n as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, n as u8]),
        0x100..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    // Writing to a Vec cannot fail; the expect documents that, it never fires.
    rmpv::encode::write_value(out, v).expect("Vec write");
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
mod tests {
    /// The hand-written headers are the ones rmpv writes for the same values, at
    /// every size boundary.
    #[test]
    fn headers_match_rmpv_at_every_boundary() {
        use super::{write_array_len, write_str, write_uint};
        use rmpv::Value;
        let by_rmpv = |v: &Value| {
            let mut b = Vec::new();
            rmpv::encode::write_value(&mut b, v).unwrap();
            b
        };
        for n in [
            0u64,
            1,
            0x7f,
            0x80,
            0xff,
            0x100,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            0x1_0000_0000,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            write_uint(&mut b, n);
            assert_eq!(b, by_rmpv(&Value::from(n)), "uint {n}");
        }
        for n in [0usize, 15, 16, 0xffff, 0x1_0000] {
            let mut b = Vec::new();
            write_array_len(&mut b, n);
            let full = by_rmpv(&Value::Array(vec![Value::Nil; n]));
            assert_eq!(b, full[..full.len() - n], "array of {n}");
        }
        for len in [0usize, 31, 32, 0xff, 0x100, 0xffff, 0x1_0000] {
            let s = "y".repeat(len);
            let mut b = Vec::new();
            write_str(&mut b, &s);
            assert_eq!(b, by_rmpv(&Value::from(s.as_str())), "str of {len}");
        }
    }

    /// A write of the largest value with the longest key, as the coordinator sends
    /// it to a replica, fits in one frame: the link is not dropped.
    #[test]
    fn the_largest_replication_fits_in_a_frame() {
        use crate::record::{Record, DATA_SIZE_MAX, KEY_SIZE_MAX};
        assert_eq!(FRAME_VALUE_MAX, DATA_SIZE_MAX);
        let rec = Record::value(u64::MAX, u32::MAX, u32::MAX, vec![7u8; DATA_SIZE_MAX]);
        let params = [
            Value::from(u64::MAX),
            Value::Binary(vec![b'k'; KEY_SIZE_MAX]),
            crate::proto::cluster::record_to_value(&rec),
            Value::from(u64::MAX),
        ];
        let mut wire = Vec::new();
        super::encode_request(&mut wire, u32::MAX, "Replicate", &params);
        assert_eq!(frame_len(&wire, FRAME_SIZE_MAX), Ok(Some(wire.len())));
        assert!(matches!(decode(&wire), Ok(Decoded::Frame { len, .. }) if len == wire.len()));
    }

    use super::*;
    use proptest::prelude::*;

    fn request(id: u32) -> Message {
        Message::Request {
            msgid: id,
            method: "Echo".into(),
            params: vec![Value::from(id), Value::Binary(vec![7; id as usize % 300])],
        }
    }

    #[test]
    fn byte_at_a_time_is_incomplete_until_the_last_byte() {
        let mut wire = Vec::new();
        encode(&mut wire, &request(42));
        for cut in 0..wire.len() {
            assert_eq!(
                decode(&wire[..cut]),
                Ok(Decoded::Incomplete),
                "cut at {cut}"
            );
        }
        assert_eq!(
            decode(&wire),
            Ok(Decoded::Frame {
                message: request(42),
                len: wire.len()
            })
        );
    }

    #[test]
    fn many_frames_in_one_buffer_decode_in_order() {
        let mut wire = Vec::new();
        for id in 0..100 {
            encode(&mut wire, &request(id));
        }
        let mut at = 0;
        for id in 0..100 {
            match decode(&wire[at..]).unwrap() {
                Decoded::Frame { message, len } => {
                    assert_eq!(message, request(id));
                    at += len;
                }
                Decoded::Incomplete => panic!("frame {id} incomplete"),
            }
        }
        assert_eq!(at, wire.len());
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header_alone() {
        // [0, 1, "m", [bin32 of 3 GB]]: only the headers are present.
        let wire = [
            0x94, 0x00, 0x01, 0xa1, b'm', 0x91, 0xc6, 0xb2, 0xd0, 0x5e, 0x00,
        ];
        assert!(matches!(decode(&wire), Err(DecodeError::TooLarge { .. })));
        // An array announcing 2^32-1 elements is refused the same way.
        let wire = [0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(decode(&wire), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert!(matches!(
            decode(b"GET / HTTP/1.0\r\n"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(decode(&[0xc1]), Err(DecodeError::Malformed(_))));
        assert!(matches!(
            decode(&[0x93, 0x07, 0x01, 0x02]),
            Err(DecodeError::Malformed(_))
        ));
        let deep = [0x91u8; 100];
        assert!(matches!(decode(&deep), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn response_round_trips_with_error_and_result() {
        for outcome in [
            Ok(Value::from("yes")),
            Err(Value::from("obsolete hash space")),
        ] {
            let mut wire = Vec::new();
            encode_response(&mut wire, 9, &outcome);
            let Decoded::Frame { message, .. } = decode(&wire).unwrap() else {
                panic!()
            };
            let (error, result) = match outcome {
                Ok(v) => (Value::Nil, v),
                Err(e) => (e, Value::Nil),
            };
            assert_eq!(
                message,
                Message::Response {
                    msgid: 9,
                    error,
                    result
                }
            );
        }
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Binary),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn frame_len_agrees_with_rmpv(v in arb_value(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut wire = Vec::new();
            rmpv::encode::write_value(&mut wire, &v).unwrap();
            let exact = wire.len();
            wire.extend_from_slice(&tail);
            prop_assert_eq!(frame_len(&wire, FRAME_SIZE_MAX), Ok(Some(exact)));
            for cut in 0..exact {
                prop_assert_eq!(frame_len(&wire[..cut], FRAME_SIZE_MAX), Ok(None));
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
