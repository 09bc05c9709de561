//! The text protocol parser, line by line, against memcached's replies.

use super::*;

const MAX: usize = 1 << 20;

fn cmd(line: &str) -> Command<'_> {
    match parse(line.as_bytes(), MAX) {
        Parsed::Command { command, len } => {
            assert_eq!(len, line.len());
            command
        }
        other => panic!("{line:?}: {other:?}"),
    }
}

fn error(line: &str) -> (&'static str, usize, bool) {
    match parse(line.as_bytes(), MAX) {
        Parsed::Error {
            reply,
            swallow,
            close,
            ..
        } => (reply, swallow, close),
        other => panic!("{line:?}: {other:?}"),
    }
}

#[test]
fn commands_parse() {
    assert_eq!(
        cmd("get a b c\r\n"),
        Command::Get {
            keys: vec![b"a", b"b", b"c"],
            with_cas: false
        }
    );
    assert_eq!(
        cmd("gets a\r\n"),
        Command::Get {
            keys: vec![b"a"],
            with_cas: true
        }
    );
    assert_eq!(
        cmd("set foo 5 0 6\r\n"),
        Command::Store {
            op: StoreOp::Set,
            key: b"foo",
            flags: 5,
            exptime: 0,
            bytes: 6,
            cas: 0,
            noreply: false
        }
    );
    assert_eq!(
        cmd("cas  foo 0 -1 3 77 noreply\r\n"),
        Command::Store {
            op: StoreOp::Cas,
            key: b"foo",
            flags: 0,
            exptime: -1,
            bytes: 3,
            cas: 77,
            noreply: true
        }
    );
    assert_eq!(
        cmd("delete k noreply\r\n"),
        Command::Delete {
            key: b"k",
            noreply: true
        }
    );
    assert_eq!(
        cmd("delete k 0\r\n"),
        Command::Delete {
            key: b"k",
            noreply: false
        }
    );
    assert_eq!(
        cmd("incr n 18446744073709551615\r\n"),
        Command::Arith {
            incr: true,
            key: b"n",
            delta: u64::MAX,
            noreply: false
        }
    );
    assert_eq!(
        cmd("touch k 10\r\n"),
        Command::Touch {
            key: b"k",
            exptime: 10,
            noreply: false
        }
    );
    assert_eq!(cmd("version\n"), Command::Version);
    assert_eq!(
        cmd("verbosity 1\r\n"),
        Command::Verbosity { noreply: false }
    );
    assert_eq!(cmd("quit\r\n"), Command::Quit);
    assert_eq!(parse(b"get a", MAX), Parsed::Incomplete);
}

#[test]
fn errors_are_memcacheds_strings() {
    // memcached 1.6: an HTTP request line closes the connection silently.
    assert_eq!(error("GET / HTTP/1.0\r\n"), ("", 0, true));
    assert_eq!(error("GET /\r\n"), ("ERROR", 0, false));
    assert_eq!(error("get\r\n"), ("ERROR", 0, false));
    assert_eq!(error("incr k\r\n"), ("ERROR", 0, false));
    assert_eq!(error("delete k 1\r\n"), (DELETE_USAGE, 0, false));
    assert_eq!(error("bogus\r\n"), ("ERROR", 0, false));
    assert_eq!(error("\r\n"), ("ERROR", 0, false));
    assert_eq!(error("set k 0 0\r\n"), ("ERROR", 0, false));
    assert_eq!(error("set k x 0 1\r\n"), (BAD_FORMAT, 0, false));
    // Lengths memcached cannot read as a 32-bit signed number are bad lines.
    assert_eq!(error("set k 0 0 -1\r\n"), (BAD_FORMAT, 0, false));
    assert_eq!(error("set k 0 0 3000000000\r\n"), (BAD_FORMAT, 0, false));
    assert_eq!(error("set k 0 0 99999999999\r\n"), (BAD_FORMAT, 0, false));
    assert_eq!(
        error("set k 0 0 2000000000\r\n"),
        (TOO_LARGE, 2000000002, false)
    );
    let long_key = format!("get {}\r\n", "k".repeat(251));
    assert_eq!(error(&long_key), (BAD_FORMAT, 0, false));
    assert!(matches!(
        cmd(&format!("get {}\r\n", "k".repeat(250))),
        Command::Get { .. }
    ));
    assert_eq!(
        error("incr n x\r\n"),
        ("CLIENT_ERROR invalid numeric delta argument", 0, false)
    );
    assert_eq!(
        error("incr n -1\r\n"),
        ("CLIENT_ERROR invalid numeric delta argument", 0, false)
    );
    let flood = vec![b'a'; LINE_SIZE_MAX + 10];
    assert!(matches!(
        parse(&flood, MAX),
        Parsed::Error { close: true, .. }
    ));
}

/// A get line of any length is taken key by key; nothing else may be that long.
#[test]
fn long_get_lines_are_taken_key_by_key() {
    let mut line = b"  gets ".to_vec();
    while line.len() <= LINE_SIZE_MAX {
        line.extend_from_slice(b"key ");
    }
    assert_eq!(
        parse(&line, MAX),
        Parsed::LongGet {
            with_cas: true,
            len: 7
        }
    );
    assert_eq!(
        take_keys(b"a bb cc"),
        Ok((vec![&b"a"[..], b"bb"], 5, false))
    );
    assert_eq!(
        take_keys(b"cc dd\r\nget"),
        Ok((vec![&b"cc"[..], b"dd"], 7, true))
    );
    assert_eq!(take_keys(b"partial"), Ok((vec![], 0, false)));
    let long = vec![b'k'; KEY_SIZE_MAX + 1];
    assert_eq!(
        take_keys(&long),
        Err((
            "CLIENT_ERROR bad command line format",
            KEY_SIZE_MAX + 1,
            false
        ))
    );
    let mut bad = b"ok ".to_vec();
    bad.extend_from_slice(&long);
    bad.extend_from_slice(b" x\r\nnext");
    assert_eq!(
        take_keys(&bad),
        Err(("CLIENT_ERROR bad command line format", bad.len() - 4, true))
    );
}

#[test]
fn noreply_silences_errors_of_quiet_commands_only() {
    assert_eq!(error("set k x 0 1 noreply\r\n"), ("", 0, false));
    assert_eq!(
        error("set k 0 0 2000000000 noreply\r\n"),
        ("", 2000000002, false)
    );
    assert_eq!(error("incr k x noreply\r\n"), ("", 0, false));
    assert_eq!(error("foo noreply\r\n"), ("ERROR", 0, false));
}

#[test]
fn values_need_their_crlf() {
    assert_eq!(value_of(b"fooval\r\n", 6), Ok(&b"fooval"[..]));
    assert_eq!(value_of(b"foovalXY", 6), Err(BAD_CHUNK));
    assert_eq!(value_of(b"\r\n", 0), Ok(&b""[..]));
}

/// The replies here are memcached 1.6's, taken from a real one.
#[test]
fn admin_commands_check_their_arguments_as_memcached_does() {
    assert_eq!(error("verbosity\r\n").0, "ERROR");
    assert_eq!(error("verbosity invalid\r\n").0, BAD_FORMAT);
    assert_eq!(error("verbosity -1\r\n").0, BAD_FORMAT);
    assert_eq!(error("verbosity 1 2 3\r\n").0, "ERROR");
    assert_eq!(
        cmd("verbosity 1 2\r\n"),
        Command::Verbosity { noreply: false }
    );
    assert_eq!(
        cmd("verbosity x noreply\r\n"),
        Command::Verbosity { noreply: true }
    );
    assert_eq!(cmd("version x\r\n"), Command::Version);
    assert_eq!(cmd("quit x\r\n"), Command::Quit);
    let flush = |delay, noreply| Command::Flush { delay, noreply };
    assert_eq!(cmd("flush_all\r\n"), flush(0, false));
    assert_eq!(cmd("flush_all noreply\r\n"), flush(0, true));
    assert_eq!(cmd("flush_all 10 noreply\r\n"), flush(10, true));
    assert_eq!(cmd("flush_all -1\r\n"), flush(-1, false));
    assert_eq!(cmd("flush_all 1 2\r\n"), flush(1, false));
    let bad = "CLIENT_ERROR invalid exptime argument";
    assert_eq!(error("flush_all x\r\n").0, bad);
    assert_eq!(error("flush_all noreply x\r\n").0, bad);
    assert_eq!(error("flush_all 99999999999999999999\r\n").0, bad);
    assert_eq!(
        error("flush_all x noreply\r\n").0,
        "",
        "noreply keeps it quiet"
    );
}

#[test]
fn stats_groups_and_gat() {
    assert_eq!(cmd("stats\r\n"), Command::Stats(StatsGroup::General));
    assert_eq!(cmd("stats items x\r\n"), Command::Stats(StatsGroup::Items));
    assert_eq!(cmd("stats reset\r\n"), Command::Stats(StatsGroup::Reset));
    assert_eq!(
        cmd("stats detail dump\r\n"),
        Command::Stats(StatsGroup::DetailDump)
    );
    assert_eq!(error("stats nosuch\r\n").0, "ERROR");
    assert_eq!(
        error("stats detail x\r\n").0,
        "CLIENT_ERROR usage: stats detail on|off|dump"
    );
    assert_eq!(error("gat\r\n").0, "ERROR");
    assert_eq!(
        cmd("gat 10\r\n"),
        Command::GetAndTouch {
            exptime: 10,
            keys: vec![],
            with_cas: false
        }
    );
    assert_eq!(
        cmd("gats -1 a noreply\r\n"),
        Command::GetAndTouch {
            exptime: -1,
            keys: vec![&b"a"[..], &b"noreply"[..]],
            with_cas: true
        }
    );
    assert_eq!(
        error("gat x k\r\n").0,
        "CLIENT_ERROR invalid exptime argument"
    );
}
