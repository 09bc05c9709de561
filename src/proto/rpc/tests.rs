//! The framing checked against rmpv and at its limits.

/// A write whose params are written in place and its value sent after them
/// decodes as the same request encoded whole from Values, at every binary size
/// boundary; so does a get's.
#[test]
fn params_written_in_place_are_the_params_encoded_whole() {
    use super::{decode, encode_request, encode_request_head, Decoded};
    use crate::cluster::write::{Op, Write};
    use crate::proto::cluster::{encode_get_params, WriteRequest};
    use rmpv::Value;
    for len in [0usize, 1, 0xff, 0x100, 0xffff, 0x1_0000, 0x2_0001] {
        let value: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let req = WriteRequest {
            key: b"key".to_vec(),
            write: Write::plain(Op::Set, 7, 100, value.clone()),
            no_wait: len % 2 == 0,
            budget_ms: Some(800),
        };
        let mut split = Vec::new();
        encode_request_head(&mut split, 9, "Write");
        req.encode_params_head(&mut split, req.budget_ms);
        split.extend_from_slice(&value);
        let mut whole = Vec::new();
        encode_request(&mut whole, 9, "Write", &req.to_params());
        assert_eq!(split, whole, "value of {len} bytes");
        assert!(matches!(decode(&split), Ok(Decoded::Frame { len, .. }) if len == split.len()));
    }
    for clock in [0u64, 0x7f, 0x80, u64::MAX] {
        let mut split = Vec::new();
        encode_request_head(&mut split, 3, "Get");
        encode_get_params(&mut split, b"k", true, clock);
        let params = [
            Value::Binary(b"k".to_vec()),
            Value::from(true),
            Value::from(clock),
        ];
        let mut whole = Vec::new();
        encode_request(&mut whole, 3, "Get", &params);
        assert_eq!(split, whole, "rhs clock {clock}");
    }
}

/// A write's params read in place are the request `from_params` reads from the
/// same bytes, for every op and every width of its fields; with meta options they
/// are refused in place (and read as Values).
#[test]
fn write_params_read_in_place_are_the_ones_read_as_values() {
    use crate::cluster::write::{Meta, Op, Write};
    use crate::proto::cluster::WriteRequest;
    use rmpv::Value;
    let widths = crate::proto::msgpack::UINT_BOUNDARIES;
    let ops: Vec<Op> = (0..32u64)
        .flat_map(|code| widths.iter().filter_map(move |&arg| Op::decode(code, arg)))
        .collect();
    assert!(ops.len() > 8, "{} ops", ops.len());
    let mut n = 0usize;
    for op in ops {
        for &small in &widths[..9] {
            n += 1;
            let mut write = Write::plain(
                op,
                small as u32,
                (small as u32).rotate_left(3),
                vec![7; n % 300],
            );
            let mut req = WriteRequest {
                key: vec![b'k'; n % 250 + 1],
                write: write.clone(),
                no_wait: n % 2 == 0,
                budget_ms: (n % 3 != 0).then_some(small),
            };
            let mut wire = Vec::new();
            crate::proto::msgpack::write_value(&mut wire, &Value::Array(req.to_params()));
            let mut values = super::params_as_values(&wire).unwrap();
            assert_eq!(
                WriteRequest::read_params(&wire),
                WriteRequest::from_params(&mut values),
                "{req:?}"
            );
            write.meta = Meta {
                return_record: true,
                ..Meta::default()
            };
            req.write = write;
            wire.clear();
            crate::proto::msgpack::write_value(&mut wire, &Value::Array(req.to_params()));
            assert!(WriteRequest::read_params(&wire).is_err());
            assert!(
                WriteRequest::from_params(&mut super::params_as_values(&wire).unwrap()).is_ok()
            );
        }
    }
}

/// A response whose result is written in place (a record, from where it is) is
/// the response encoded whole from its Value.
#[test]
fn a_result_written_in_place_is_the_result_encoded_whole() {
    use super::{encode_response, encode_response_head};
    use crate::proto::cluster::{encode_record, record_to_value};
    use crate::record::Record;
    for len in [0usize, 1, 0xff, 0x100, 0x1_0000] {
        let rec = Record::value(u64::MAX - len as u64, 7, 100, vec![3u8; len]);
        let mut split = Vec::new();
        encode_response_head(&mut split, 77);
        encode_record(&mut split, &rec);
        let mut whole = Vec::new();
        encode_response(&mut whole, 77, &Ok(record_to_value(&rec)));
        assert_eq!(split, whole, "record of {len} bytes");
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

    /// A walk taken up again as a frame grows piece by piece learns at every
    /// step what a walk from the start would.
    #[test]
    fn a_resumed_walk_agrees_with_a_fresh_one(
        v in arb_value(),
        pieces in proptest::collection::vec(1usize..40, 1..60),
        marked in any::<bool>(),
    ) {
        let mut wire = Vec::new();
        let v = if marked { Value::Array(vec![v, Value::Ext(0x7f, vec![0])]) } else { v };
        rmpv::encode::write_value(&mut wire, &v).unwrap();
        let mut walker = super::Walker::default();
        let (mut at, mut piece) = (0, pieces.iter().cycle());
        loop {
            let resumed = walker.walk(&wire[..at], FRAME_SIZE_MAX).unwrap();
            prop_assert_eq!(resumed, super::walk(&wire[..at], FRAME_SIZE_MAX).unwrap(), "at {}", at);
            if at == wire.len() {
                prop_assert_eq!(resumed.end, Some(wire.len()));
                break;
            }
            at = (at + piece.next().unwrap()).min(wire.len());
        }
    }

    /// A request read in place is the request `decode` gives: its msgid, method,
    /// length and params; a frame cut short, and any other message, is not one.
    #[test]
    fn a_request_read_in_place_is_the_decoded_one(
        params in proptest::collection::vec(arb_value(), 0..6),
        msgid in any::<u32>(),
        method in "[A-Za-z]{1,20}",
    ) {
        let mut wire = Vec::new();
        super::encode_request(&mut wire, msgid, &method, &params);
        prop_assert!(super::request_at(&wire, |m| m != method).is_none());
        let raw = super::request_at(&wire, |_| true).unwrap();
        prop_assert_eq!((raw.msgid, raw.method, raw.len), (msgid, method.as_str(), wire.len()));
        let (decoded, _) = crate::proto::msgpack::read_value(raw.params, 64).unwrap();
        prop_assert_eq!(decoded, Value::Array(params.clone()));
        for cut in 0..wire.len() {
            prop_assert!(super::request_at(&wire[..cut], |_| true).is_none());
        }
        let mut other = Vec::new();
        super::encode_notify(&mut other, &method, &params);
        prop_assert!(super::request_at(&other, |_| true).is_none());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
    }
}

/// Frames fed in pieces of every size: a large one is gathered and decoded with
/// its value in place, the small ones around it where they lie, and each comes
/// out as a whole decode of the same bytes would give it.
#[test]
fn a_frame_reader_gathers_large_frames_and_keeps_the_next_ones() {
    use super::{decode, encode_request, Decoded, FrameReader, GATHER_MIN_BYTES};
    use rmpv::Value;
    let big: Vec<u8> = (0..GATHER_MIN_BYTES * 3).map(|i| (i % 253) as u8).collect();
    let mut wire = Vec::new();
    encode_request(&mut wire, 1, "Small", &[Value::from(1)]);
    let with_big = [
        Value::Binary(b"key".to_vec()),
        Value::Binary(big.clone()),
        Value::Array(vec![Value::from(7), Value::Binary(vec![1, 2, 3])]),
    ];
    encode_request(&mut wire, 2, "Big", &with_big);
    // A marker of the reader's own inside a frame is just data.
    let marked = [Value::Ext(0x7f, vec![0]), Value::Binary(big.clone())];
    encode_request(&mut wire, 3, "Marked", &marked);
    encode_request(&mut wire, 4, "Small", &[]);
    let mut expected = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        match decode(&wire[at..]) {
            Ok(Decoded::Frame { message, len }) => {
                expected.push(message);
                at += len;
            }
            other => panic!("{other:?}"),
        }
    }
    for piece in [1usize, 7, 4096, 65536, 1 << 20, wire.len()] {
        let mut reader = FrameReader::default();
        let mut got = Vec::new();
        let mut input: Vec<u8> = Vec::new();
        let mut fed = 0;
        while got.len() < expected.len() {
            let end = (fed + piece).min(wire.len());
            input.extend_from_slice(&wire[fed..end]);
            fed = end;
            loop {
                let (n, m) = reader.read(&input).unwrap();
                input.drain(..n);
                match m {
                    Some(m) => got.push(m),
                    None if n == 0 || input.is_empty() => break,
                    None => {}
                }
            }
            assert!(
                input.len() <= piece.max(super::GATHER_MIN_BYTES) + 64,
                "the input holds no large frame ({} bytes)",
                input.len()
            );
            if fed == wire.len() && input.is_empty() {
                break;
            }
        }
        assert_eq!(got, expected, "fed {piece} bytes at a time");
    }
}

/// A frame of many small items (a replace's push) that arrives a piece at a time
/// is walked on from where the last piece ended, not from its start again: the
/// cost of reading it grows with its size, not with its size times its pieces.
#[test]
fn a_frame_of_many_items_is_walked_once_as_it_arrives() {
    use super::{decode, encode_request, Decoded, FrameReader};
    use rmpv::Value;
    let entries: Vec<Value> = (0..5000u32)
        .map(|i| {
            Value::Array(vec![
                Value::Binary(i.to_be_bytes().to_vec()),
                Value::from(i),
            ])
        })
        .collect();
    let mut wire = Vec::new();
    encode_request(
        &mut wire,
        9,
        "Push",
        &[Value::from(1), Value::Array(entries)],
    );
    let Ok(Decoded::Frame {
        message: expected, ..
    }) = decode(&wire)
    else {
        panic!("the frame does not decode whole");
    };
    let mut walker = super::Walker::default();
    let half = wire.len() / 2;
    assert!(walker
        .walk(&wire[..half], FRAME_SIZE_MAX)
        .unwrap()
        .end
        .is_none());
    assert!(
        walker.pos + 16 >= half,
        "the walk stopped at {} of {half}",
        walker.pos
    );

    let mut reader = FrameReader::default();
    for cut in (0..wire.len()).step_by(1000) {
        assert_eq!(reader.read(&wire[..cut]).unwrap(), (0, None));
    }
    let (n, got) = reader.read(&wire).unwrap();
    assert_eq!((n, got), (wire.len(), Some(expected)));
}

#[test]
fn a_frame_reader_refuses_what_decode_refuses() {
    use super::{DecodeError, FrameReader, FRAME_SIZE_MAX};
    let mut reader = FrameReader::default();
    assert!(matches!(
        reader.read(&[0xc1]),
        Err(DecodeError::Malformed(_))
    ));
    let mut huge = vec![0x94, 0x00, 0x01, 0xa1, b'x', 0x91, 0xc6];
    huge.extend_from_slice(&((FRAME_SIZE_MAX as u32) + 1).to_be_bytes());
    assert!(matches!(
        FrameReader::default().read(&huge),
        Err(DecodeError::TooLarge { .. })
    ));
}

/// While a large answer is gathered, its msgid is known from its first bytes.
#[test]
fn a_response_being_gathered_names_its_call() {
    use super::{encode_response, FrameReader, GATHER_MIN_BYTES};
    use rmpv::Value;
    for msgid in [5u32, 200, 300, 70_000] {
        let mut wire = Vec::new();
        let big = Value::Binary(vec![1; GATHER_MIN_BYTES * 2]);
        encode_response(&mut wire, msgid, &Ok(big));
        let mut reader = FrameReader::default();
        let (n, m) = reader.read(&wire[..4096]).unwrap();
        assert_eq!((n, m), (4096, None), "gathered");
        assert_eq!(reader.arriving_response(), Some(msgid));
        let (n, m) = reader.read(&wire[4096..]).unwrap();
        assert_eq!(n, wire.len() - 4096);
        assert!(m.is_some());
        assert_eq!(reader.arriving_response(), None, "nothing is on its way");
    }
}

/// A large answer no one waits for is skipped, not kept: the reader holds only
/// the frame around its value, and the frame after it is read as usual.
#[test]
fn a_discarded_frame_is_skipped_and_the_next_one_read() {
    use super::{encode_response, FrameReader, Message, GATHER_MIN_BYTES};
    use rmpv::Value;
    let mut wire = Vec::new();
    let record = Value::Array(vec![
        Value::from(1),
        Value::Binary(vec![9; GATHER_MIN_BYTES * 4]),
        Value::from(7),
    ]);
    encode_response(&mut wire, 11, &Ok(record));
    let first = wire.len();
    encode_response(&mut wire, 12, &Ok(Value::from("next")));
    let mut reader = FrameReader::default();
    let (n, m) = reader.read(&wire[..1000]).unwrap();
    assert_eq!((n, m), (1000, None));
    reader.discard();
    let mut at = 1000;
    let mut got = Vec::new();
    while at < wire.len() {
        let end = (at + 4096).min(wire.len());
        let (n, m) = reader.read(&wire[at..end]).unwrap();
        at += n;
        got.extend(m);
        let held = format!("{reader:?}").len();
        assert!(held < 10_000, "the skipped value is not held ({held})");
    }
    assert_eq!(got.len(), 2);
    assert!(matches!(&got[0], Message::Response { msgid: 11, .. }));
    assert_eq!(
        got[1],
        Message::Response {
            msgid: 12,
            error: Value::Nil,
            result: Value::from("next")
        }
    );
    assert!(at == wire.len() && first < at);
}

/// A request with a binary written from the caller's buffer is the request with
/// that binary as a Value, at every width of a binary's length.
#[test]
fn a_request_with_a_binary_encodes_as_one_with_a_binary_param() {
    use super::{encode_request, encode_request_with_binary};
    use rmpv::Value;
    for len in [0usize, 1, 255, 256, 65_535, 65_536, 300_000] {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let head = [Value::from(7u64), Value::from("id")];
        let mut got = Vec::new();
        encode_request_with_binary(&mut got, 42, "ReplacePush", &head, &bytes);
        let mut params = head.to_vec();
        params.push(Value::Binary(bytes));
        let mut want = Vec::new();
        encode_request(&mut want, 42, "ReplacePush", &params);
        assert_eq!(got, want, "{len} bytes");
    }
}
