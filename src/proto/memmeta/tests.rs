use super::*;

fn words(line: &str) -> Vec<&[u8]> {
    line.split(' ').map(str::as_bytes).collect()
}

fn parse_line(line: &str) -> Result<Request, Refusal> {
    let w = words(line);
    parse(w[0], &w[1..], 1 << 20)
}

fn reply_of(line: &str) -> &'static str {
    parse_line(line).expect_err(line).reply
}

#[test]
fn errors_are_worded_as_memcached_words_them() {
    assert_eq!(reply_of("mg"), "ERROR");
    assert_eq!(reply_of("me"), BAD_FORMAT);
    assert_eq!(reply_of("ms k"), BAD_FORMAT);
    assert_eq!(reply_of("ms k -1"), BAD_FORMAT);
    assert_eq!(reply_of("mg k v v"), "CLIENT_ERROR duplicate flag");
    assert_eq!(
        reply_of("md k C1 C2"),
        "CLIENT_ERROR invalid or duplicate flag"
    );
    assert_eq!(
        reply_of("ma k Dx"),
        "CLIENT_ERROR invalid or duplicate flag"
    );
    assert_eq!(reply_of("mg k x"), "CLIENT_ERROR invalid flag");
    assert_eq!(reply_of("mg k h"), "CLIENT_ERROR invalid flag");
    assert_eq!(reply_of("mg k E5"), "CLIENT_ERROR invalid flag");
    assert_eq!(reply_of("mg k Nabc"), BAD_TOKEN);
    assert_eq!(reply_of("mg k Fabc"), BAD_FORMAT);
    assert_eq!(
        reply_of("ms k 2 MX"),
        "CLIENT_ERROR invalid mode for ms M token"
    );
    assert_eq!(
        reply_of("ma k MX"),
        "CLIENT_ERROR invalid mode for ma M token"
    );
    assert_eq!(
        reply_of("ms k 2 MSS"),
        "CLIENT_ERROR incorrect length for M token"
    );
    assert_eq!(reply_of("mg !!! b"), "CLIENT_ERROR error decoding key");
    assert_eq!(
        reply_of("mg k a b c d e f g h i j k l m n o p q r"),
        "CLIENT_ERROR options flags are too long"
    );
    let long_key = format!("mg {} v", "k".repeat(251));
    assert_eq!(reply_of(&long_key), BAD_FORMAT);
}

#[test]
fn a_refused_set_skips_its_data() {
    let e = parse_line("ms k 5 Tx").unwrap_err();
    assert_eq!((e.reply, e.swallow), (BAD_TOKEN, 7));
    let w = words("ms k 2000000");
    let e = parse(w[0], &w[1..], 1 << 20).unwrap_err();
    assert_eq!(e.reply, crate::proto::memcache::TOO_LARGE);
    assert_eq!(e.swallow, 2_000_002);
    assert_eq!(e.invalidate, Some(b"k".to_vec()));
}

#[test]
fn flags_are_read_and_echoed_in_order() {
    let r = parse_line("mg Zm9v b c f k s t v O9 q").unwrap();
    assert_eq!(r.key, b"foo");
    assert!(r.base64 && r.value && r.quiet);
    let it = Shown {
        key: b"foo",
        client_flags: 5,
        exptime: 0,
        cas: 2,
        data: b"abc",
        stale: false,
        token_sent: false,
        key_binary: true,
    };
    assert_eq!(
        get_reply(&r, Some(it), false, 100),
        b"VA 3 c2 f5 kZm9v b s3 t-1 O9\r\nabc\r\n"
    );
    assert_eq!(get_reply(&r, None, false, 100), b"");
    let stale = Shown {
        stale: true,
        token_sent: true,
        ..it
    };
    let plain = parse_line("mg foo").unwrap();
    assert_eq!(get_reply(&plain, Some(stale), false, 100), b"HD Z X\r\n");
    let fresh = Shown {
        token_sent: false,
        ..stale
    };
    assert_eq!(get_reply(&plain, Some(fresh), true, 100), b"HD X W\r\n");
    assert_eq!(get_reply(&plain, None, false, 100), b"EN\r\n");
    let named = parse_line("mg foo O7 k v").unwrap();
    assert_eq!(get_reply(&named, None, false, 100), b"EN O7 kfoo\r\n");
}

#[test]
fn write_replies_follow_memcached() {
    let set = parse_line("ms k 2 c k O1 q").unwrap();
    assert_eq!(write_reply(&set, Outcome::Stored, 9, None, 0), b"");
    assert_eq!(
        write_reply(&set, Outcome::Exists, 9, None, 0),
        b"EX c0 kk O1\r\n"
    );
    let ma = parse_line("ma n N0 J3 v c t q").unwrap();
    let it = Shown {
        key: b"n",
        client_flags: 0,
        exptime: 0,
        cas: 21,
        data: b"3",
        stale: false,
        token_sent: false,
        key_binary: true,
    };
    assert_eq!(
        write_reply(&ma, Outcome::Made(3), 21, Some(it), 0),
        b"VA 1 c21 t-1\r\n3\r\n",
        "q does not hide an item made on a miss"
    );
    assert_eq!(write_reply(&ma, Outcome::Number(4), 22, Some(it), 0), b"");
    let md = parse_line("md c k O5").unwrap();
    assert_eq!(
        write_reply(&md, Outcome::NotFound, 0, None, 0),
        b"NF kc O5\r\n"
    );
}

#[test]
fn base64_round_trips_and_refuses_junk() {
    for data in [&b"f"[..], b"fo", b"foo", b"\x00\x01\x02\xff"] {
        assert_eq!(base64_decode(&base64_encode(data)).as_deref(), Some(data));
    }
    assert_eq!(base64_decode(b"Zm9v="), None);
    assert_eq!(base64_decode(b"Zm=v"), None);
    assert_eq!(base64_decode(b""), None);
    assert_eq!(base64_decode(b"aGk="), Some(b"hi".to_vec()));
}
