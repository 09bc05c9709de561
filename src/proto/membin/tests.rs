use super::*;

fn packet(opcode: u8, extras: &[u8], key: &[u8], value: &[u8], cas: u64) -> Vec<u8> {
    let mut b = vec![REQUEST, opcode];
    b.extend_from_slice(&(key.len() as u16).to_be_bytes());
    b.push(extras.len() as u8);
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
    b.extend_from_slice(&0xdead_beef_u32.to_be_bytes());
    b.extend_from_slice(&cas.to_be_bytes());
    b.extend_from_slice(extras);
    b.extend_from_slice(key);
    b.extend_from_slice(value);
    b
}

#[test]
fn requests_are_read_whole_or_not_at_all() {
    let mut extras = 7u32.to_be_bytes().to_vec();
    extras.extend_from_slice(&100u32.to_be_bytes());
    let p = packet(op::SETQ, &extras, b"k", b"value", 9);
    for cut in 0..p.len() {
        assert_eq!(
            parse(&p[..cut], 1 << 20),
            Parsed::Incomplete,
            "cut at {cut}"
        );
    }
    match parse(&p, 1 << 20) {
        Parsed::Request {
            header,
            command,
            len,
        } => {
            assert_eq!(len, p.len());
            assert!(header.quiet() && header.cas == 9 && header.opaque == 0xdead_beef);
            assert_eq!(
                command,
                Command::Store {
                    op: StoreOp::Set,
                    key: b"k",
                    flags: 7,
                    exptime: 100,
                    value: b"value"
                }
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_shapes_and_magic_are_refused_as_memcached_refuses_them() {
    // A GET with extras: invalid arguments, and the connection closes.
    let p = packet(op::GET, &[0; 4], b"k", b"", 0);
    assert!(matches!(
        parse(&p, 1 << 20),
        Parsed::Refused {
            status: Status::Invalid,
            close: true,
            ..
        }
    ));
    // An unknown opcode: unknown command, and the stream goes on.
    let p = packet(0x50, &[], b"", b"xyz", 0);
    assert!(matches!(
        parse(&p, 1 << 20),
        Parsed::Refused {
            status: Status::UnknownCommand,
            close: false,
            len: 27,
            ..
        }
    ));
    let mut bad = packet(op::NOOP, &[], b"", b"", 0);
    bad[0] = 0x42;
    assert!(matches!(
        parse(&bad, 1 << 20),
        Parsed::Refused {
            answer: false,
            close: true,
            ..
        }
    ));
    // A value over the limit is refused as soon as its key is in, and skipped.
    let mut extras = [0u8; 8].to_vec();
    extras[7] = 0;
    let mut p = packet(op::SET, &extras, b"big", &[], 0);
    p[8..12].copy_from_slice(&(8 + 3 + 2_000_000u32).to_be_bytes());
    match parse(&p, 1 << 20) {
        Parsed::Refused {
            status,
            len,
            swallow,
            invalidate,
            ..
        } => {
            assert_eq!(status, Status::TooLarge);
            assert_eq!((len, swallow), (HEADER_SIZE + 11, 2_000_000));
            assert_eq!(invalidate, Some(&b"big"[..]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn responses_echo_the_opcode_and_opaque() {
    let to = To {
        opcode: op::GETK,
        opaque: 5,
        quiet: false,
    };
    let r = value_response(to, Some(b"k"), 3, b"v", 77);
    assert_eq!(r.len(), HEADER_SIZE + 4 + 1 + 1);
    assert_eq!((r[0], r[1]), (RESPONSE, op::GETK));
    assert_eq!(u16::from_be_bytes([r[2], r[3]]), 1, "key length");
    assert_eq!(r[4], 4, "extras length");
    assert_eq!(u32::from_be_bytes(r[12..16].try_into().unwrap()), 5);
    assert_eq!(u64::from_be_bytes(r[16..24].try_into().unwrap()), 77);
    assert_eq!(&r[24..], b"\x00\x00\x00\x03kv");
    let miss = error(to, Status::NotFound);
    assert_eq!(&miss[24..], b"Not found");
    assert_eq!(u16::from_be_bytes([miss[6], miss[7]]), 1);
    let quiet = To { quiet: true, ..to };
    assert!(miss_response(quiet, None).is_empty());
}

/// A store whose body is still coming is gathered whole; its value starts after
/// the extras and key. What `parse` would refuse, or reads without a value, is not.
#[test]
fn only_a_store_parse_accepts_is_gathered() {
    let mut extras = 7u32.to_be_bytes().to_vec();
    extras.extend_from_slice(&0u32.to_be_bytes());
    let value = vec![b'v'; 1000];
    let p = packet(op::SET, &extras, b"key", &value, 0);
    for cut in [HEADER_SIZE, HEADER_SIZE + 5, p.len() - 1] {
        assert_eq!(gathers(&p[..cut], 1 << 20), Some(p.len()), "cut at {cut}");
    }
    assert_eq!(gathers(&p, 1 << 20), None, "whole: parsed where it lies");
    assert_eq!(gathers(&p[..10], 1 << 20), None, "no header yet");
    assert_eq!(
        gathers(&p[..30], 999),
        None,
        "too large: refused and skipped"
    );
    let h = Header::read(&p).unwrap();
    assert_eq!(&p[value_offset(&h)..], &value[..]);
    let get = packet(op::GET, &[], b"key", &[], 0);
    assert_eq!(gathers(&get[..HEADER_SIZE], 1 << 20), None);
    let no_extras = packet(op::SET, &[], b"key", &value, 0);
    assert_eq!(gathers(&no_extras[..30], 1 << 20), None, "bad shape");
    let mut wrong_magic = p.clone();
    wrong_magic[0] = 0x81;
    assert_eq!(gathers(&wrong_magic[..30], 1 << 20), None);
}
