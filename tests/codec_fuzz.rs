//! Fuzzing the client protocol codecs with arbitrary and mutated bytes: the text
//! codec (with the meta commands it hands on) and the long-get key reader. Whatever
//! the input, a codec answers without panicking, never claims more bytes than it
//! was given, and asks to skip no more than a value memcached would read; and a
//! line it calls complete parses the same with more bytes behind it.
//!
//! Then the same through a gateway: connections send random bytes and random
//! mutations of real commands, and the gateway still answers everyone else.

mod common;
mod conformance;

use kumo::proto::membin;
use kumo::proto::memtext::{self, Parsed, LINE_SIZE_MAX};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

const VALUE_MAX: usize = 1 << 20;

/// Real commands, the material the mutations start from.
const SEEDS: &[&[u8]] = &[
    b"get a b c\r\n",
    b"gets k\r\n",
    b"set k 0 0 5\r\nhello\r\n",
    b"cas k 1 2 3 4 noreply\r\n",
    b"append k 0 0 1\r\nx\r\n",
    b"incr k 18446744073709551615\r\n",
    b"touch k -1\r\n",
    b"gat 100 a b\r\n",
    b"delete k 0 noreply\r\n",
    b"flush_all 10 noreply\r\n",
    b"stats detail dump\r\n",
    b"verbosity 1\r\n",
    b"mg k v c f t s k O123 q b N30 R5 T7\r\n",
    b"ms Zm9v 3 T0 F5 c k MS I C9 b\r\nabc\r\n",
    b"md k q I T30 C1\r\n",
    b"ma k N0 J10 D5 MD v t c\r\n",
    b"me k b\r\n",
    b"mn\r\n",
];

/// A mutation of one of the seeds: bytes flipped, cut, doubled, or spliced.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        0..SEEDS.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 0..6),
    )
        .prop_map(|(seed, edits)| {
            let mut b = SEEDS[seed].to_vec();
            for (at, byte, how) in edits {
                let i = if b.is_empty() { 0 } else { at % (b.len() + 1) };
                match how {
                    0 if i < b.len() => b[i] = byte,
                    1 => b.insert(i, byte),
                    2 if i < b.len() => {
                        b.remove(i);
                    }
                    _ => {
                        let tail = b[i..].to_vec();
                        b.extend_from_slice(&tail);
                    }
                }
            }
            b
        })
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec(
            prop_oneof![Just(b' '), Just(b'\r'), Just(b'\n'), any::<u8>()],
            0..256
        ),
        mutated(),
    ]
}

/// What every parse must respect.
fn check(input: &[u8]) {
    match memtext::parse(input, VALUE_MAX) {
        Parsed::Incomplete => {
            assert!(input.len() <= LINE_SIZE_MAX || !input.contains(&b'\n'));
        }
        Parsed::Command { len, .. } => {
            assert!(
                len > 0 && len <= input.len(),
                "len {len} of {}",
                input.len()
            );
            assert_eq!(input[len - 1], b'\n');
            // The same line with more behind it is the same command.
            let mut more = input.to_vec();
            more.extend_from_slice(b"get x\r\n");
            match memtext::parse(&more, VALUE_MAX) {
                Parsed::Command { len: l2, .. } => assert_eq!(l2, len),
                other => panic!("{input:?} then more parsed as {other:?}"),
            }
        }
        Parsed::LongGet { len, .. } => assert!(len <= input.len()),
        Parsed::Error { len, swallow, .. } => {
            assert!(len <= input.len());
            // memcached reads a length as a signed 32-bit number.
            assert!(swallow <= i32::MAX as usize + 2, "swallow {swallow}");
        }
    }
    match memtext::take_keys(input) {
        Ok((keys, used, _)) => {
            assert!(used <= input.len());
            assert!(keys.iter().all(|k| !k.is_empty() && k.len() <= 250));
        }
        Err((_, skip, _)) => assert!(skip <= input.len()),
    }
}

/// A binary request packet with the given fields (the body as given, whatever the
/// lengths say), the material of the binary mutations.
fn packet(opcode: u8, key_len: u16, extras_len: u8, body: &[u8], declared: u32) -> Vec<u8> {
    let mut b = vec![membin::REQUEST, opcode];
    b.extend_from_slice(&key_len.to_be_bytes());
    b.push(extras_len);
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(&declared.to_be_bytes());
    b.extend_from_slice(&[0; 12]);
    b.extend_from_slice(body);
    b
}

fn binary_input() -> impl Strategy<Value = Vec<u8>> {
    let sane = (
        0u8..0x30,
        0u16..300,
        prop_oneof![Just(0u8), Just(4), Just(8), Just(20), any::<u8>()],
        proptest::collection::vec(any::<u8>(), 0..400),
    )
        .prop_map(|(op, k, e, body)| {
            let declared = body.len() as u32;
            packet(op, k.min(body.len() as u16), e, &body, declared)
        });
    let lying = (
        any::<u8>(),
        any::<u16>(),
        any::<u8>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(op, k, e, declared, body)| packet(op, k, e, &body, declared));
    prop_oneof![sane, lying, proptest::collection::vec(any::<u8>(), 0..128)]
}

/// What every binary parse must respect.
fn check_binary(input: &[u8]) {
    match membin::parse(input, VALUE_MAX) {
        membin::Parsed::Incomplete => {}
        membin::Parsed::Request { len, header, .. } => {
            assert!(len <= input.len());
            // The whole packet, or (STAT, TOUCH, GAT) its header, extras and key.
            assert!(len <= membin::HEADER_SIZE + header.body_len as usize);
            assert!(len >= membin::HEADER_SIZE);
        }
        membin::Parsed::Refused { len, swallow, .. } => {
            assert!(len <= input.len());
            assert!(swallow <= u32::MAX as usize);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn the_text_and_meta_codecs_take_any_bytes(input in any_input()) {
        check(&input);
    }

    #[test]
    fn the_binary_codec_takes_any_bytes(input in binary_input()) {
        check_binary(&input);
    }
}

/// Every prefix of every seed: a command cut anywhere is incomplete or an error,
/// never a different command.
#[test]
fn every_cut_of_a_real_command_is_safe() {
    for seed in SEEDS {
        for cut in 0..=seed.len() {
            check(&seed[..cut]);
        }
    }
}

/// A gateway fed garbage on some connections keeps serving the others, and each
/// garbage connection is either answered or closed, never left hanging forever.
#[test]
fn a_gateway_fed_garbage_keeps_serving() {
    use std::io::{Read, Write};
    let c = common::Cluster::start(3);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = proptest::collection::vec(any_input(), 1..8);
    let binary = proptest::collection::vec(binary_input(), 1..8);
    let mut healthy = conformance::Conn::open(c.gateway_addr, "healthy");
    for round in 0..30 {
        let mut inputs = strategy.new_tree(&mut runner).unwrap().current();
        if round % 2 == 1 {
            inputs.extend(binary.new_tree(&mut runner).unwrap().current());
        }
        // Even rounds go to the text listener, odd ones to the binary one.
        let target = if round % 2 == 0 {
            c.gateway_addr
        } else {
            c.gateway_binary_addr
        };
        let mut s = std::net::TcpStream::connect(target).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_millis(150)))
            .unwrap();
        for input in &inputs {
            if s.write_all(input).is_err() {
                break;
            }
        }
        let mut sink = [0u8; 65536];
        while let Ok(n) = s.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        drop(s);
        let key = format!("fuzz{round}");
        healthy.roundtrip(format!("set {key} 0 0 2\r\nok\r\n"), b"STORED\r\n".to_vec());
        healthy.roundtrip(
            format!("get {key}\r\n"),
            format!("VALUE {key} 0 2\r\nok\r\nEND\r\n"),
        );
    }
    healthy.expect_in_sync();
}
