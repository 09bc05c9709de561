//! Proves the network-fault technique of tests/common/netfault.rs with plain TCP and
//! no kumo: an echo server and clients in python3, each under its own uid, the
//! server on its own loopback address. Skips (with a message) unless root.

#[path = "common/netfault.rs"]
mod netfault;

use netfault::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

/// An echo server: echoes each line on each connection. On stdin, `PUSH TEXT` sends
/// TEXT to every connection (answers `PUSHED N`), `LAST` answers the last line it
/// received (`LAST TEXT`).
const SERVER: &str = r#"
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(128)
conns, last, lock = [], ['-'], threading.Lock()
def serve(c):
    buf = b''
    while True:
        try:
            d = c.recv(4096)
        except OSError:
            return
        if not d:
            return
        buf += d
        while b'\n' in buf:
            line, buf = buf.split(b'\n', 1)
            with lock:
                last[0] = line.decode()
            try:
                c.sendall(line + b'\n')
            except OSError:
                return
def accept():
    while True:
        c, _ = s.accept()
        with lock:
            conns.append(c)
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
print('READY', flush=True)
for cmd in sys.stdin:
    w = cmd.split(None, 1)
    if w[0] == 'PUSH':
        with lock:
            cs = list(conns)
        for c in cs:
            try:
                c.sendall(w[1].encode())
            except OSError:
                pass
        print('PUSHED', len(cs), flush=True)
    elif w[0] == 'LAST':
        with lock:
            print('LAST', last[0], flush=True)
"#;

/// A client driven by stdin, one answer line per command:
/// `connect NAME HOST PORT TIMEOUT` -> OK | TIMEOUT | REFUSED,
/// `send NAME TEXT` -> SENT, `recv NAME TIMEOUT` -> LINE TEXT | TIMEOUT | EOF,
/// `tries NAME HOST PORT N TIMEOUT` -> `OK K`: K of N parallel connects succeeded.
const CLIENT: &str = r#"
import socket, sys, threading, time
conns, bufs = {}, {}
def out(*a):
    print(*a, flush=True)
for cmd in sys.stdin:
    w = cmd.split()
    op, name = w[0], w[1]
    try:
        if op == 'connect':
            try:
                conns[name] = socket.create_connection((w[2], int(w[3])), timeout=float(w[4]))
                bufs[name] = b''
                out('OK')
            except socket.timeout:
                out('TIMEOUT')
            except ConnectionRefusedError:
                out('REFUSED')
        elif op == 'send':
            conns[name].settimeout(5)
            conns[name].sendall((w[2] + '\n').encode())
            out('SENT')
        elif op == 'recv':
            end = time.monotonic() + float(w[2])
            c = conns[name]
            while b'\n' not in bufs[name]:
                left = end - time.monotonic()
                if left <= 0:
                    break
                c.settimeout(left)
                try:
                    d = c.recv(4096)
                except socket.timeout:
                    break
                if not d:
                    break
                bufs[name] += d
            if b'\n' in bufs[name]:
                line, bufs[name] = bufs[name].split(b'\n', 1)
                out('LINE ' + line.decode())
            else:
                out('TIMEOUT' if time.monotonic() >= end else 'EOF')
        elif op == 'tries':
            ok, lk = [0], threading.Lock()
            def one():
                try:
                    socket.create_connection((w[2], int(w[3])), timeout=float(w[5])).close()
                    with lk:
                        ok[0] += 1
                except OSError:
                    pass
            ts = [threading.Thread(target=one) for _ in range(int(w[4]))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            out('OK', ok[0])
    except Exception as e:
        out('ERR', type(e).__name__, e)
"#;

/// A python3 helper under a test user, killed when dropped.
struct Py {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Py {
    fn start(user: (u32, u32), script: &str, args: &[String]) -> Py {
        // /usr/bin/python3, not a pyenv shim under /root, which other uids cannot
        // enter; -I ignores the environment and the user site.
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.args(["-I", "-u", "-c", script])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = run_as(&mut cmd, user).spawn().unwrap();
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Py {
            child,
            input,
            output,
        }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.output.read_line(&mut l).unwrap();
        assert!(!l.is_empty(), "the python helper died");
        l.trim_end().to_string()
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.input, "{cmd}").unwrap();
        self.line()
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tests of this file run one at a time, so that the cleanup checks see only
/// their own chain.
static ORDER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn order() -> std::sync::MutexGuard<'static, ()> {
    ORDER.lock().unwrap_or_else(|p| p.into_inner())
}

/// The chain, or None (and a message) when this machine cannot cut links.
fn lab() -> Option<Chain> {
    if let Err(why) = available() {
        eprintln!("skipping: no network faults on this machine: {why}");
        return None;
    }
    Some(Chain::new().unwrap())
}

/// An echo server of slot `n` on a free port of host(n): (helper, port).
fn server(n: usize) -> (Py, u16) {
    let port = free_port_on(host(n));
    let mut p = Py::start(
        test_user(n),
        SERVER,
        &[host(n).to_string(), port.to_string()],
    );
    assert_eq!(p.line(), "READY");
    (p, port)
}

fn client(n: usize) -> Py {
    Py::start(test_user(n), CLIENT, &[])
}

fn our_rules_in_output() -> Vec<String> {
    let name = format!("KUMO-TEST-{}", std::process::id());
    let out = Command::new("iptables")
        .args(["-w", "-S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&name))
        .map(String::from)
        .collect()
}

#[test]
fn a_cut_stalls_connects_and_established_connections_both_ways_then_heals() {
    let _order = order();
    let Some(chain) = lab() else { return };
    let t0 = Instant::now();
    let (a, b, c) = (peer(1), peer(2), peer(3));
    let (mut srv, port) = server(1);
    let h = host(1);
    let mut cl = client(2);
    let mut third = client(3);

    assert_eq!(cl.ask(&format!("connect e {h} {port} 2")), "OK");
    assert_eq!(cl.ask("send e hello"), "SENT");
    assert_eq!(cl.ask("recv e 2"), "LINE hello");

    let cut = chain.link(b, a);
    let rules = chain.rules();
    assert!(
        rules.contains(&format!("-d {h}/32 -m owner --uid-owner {}", b.0)),
        "{rules}"
    );

    // A new connection stalls in SYN retransmits: a timeout, not a refusal.
    assert_eq!(cl.ask(&format!("connect n {h} {port} 1")), "TIMEOUT");
    // The established connection stalls both ways: what the server pushes does
    // not arrive, and what the client sends (and its echo) does not either.
    assert_eq!(srv.ask("PUSH pushed"), "PUSHED 1");
    assert_eq!(cl.ask("send e during"), "SENT");
    assert_eq!(cl.ask("recv e 1"), "TIMEOUT");
    assert_eq!(srv.ask("LAST"), "LAST hello");
    // Other links of the server stay up.
    assert_eq!(third.ask(&format!("connect o {h} {port} 2")), "OK");
    assert_eq!(third.ask("send o third"), "SENT");
    assert_eq!(third.ask("recv o 2"), "LINE third");
    let dropped = cut.dropped();
    assert!(dropped > 0, "{}", chain.rules());
    let _ = c;

    let healed_at = Instant::now();
    cut.heal();
    assert!(!chain.rules().contains("kumo-cut"), "{}", chain.rules());
    // The stalled segments are retransmitted and arrive, in order.
    assert_eq!(cl.ask("recv e 10"), "LINE pushed");
    assert_eq!(cl.ask("recv e 10"), "LINE during");
    let resumed = healed_at.elapsed();
    assert_eq!(srv.ask("LAST"), "LAST during");
    assert_eq!(cl.ask(&format!("connect n2 {h} {port} 2")), "OK");
    assert_eq!(cl.ask("send n2 again"), "SENT");
    assert_eq!(cl.ask("recv n2 2"), "LINE again");
    eprintln!(
        "cut: {dropped} packets dropped; the established connection resumed {resumed:?} \
         after the heal; test took {:?}",
        t0.elapsed()
    );
}

#[test]
fn b_a_lossy_link_drops_some_packets_but_delivers() {
    let _order = order();
    let Some(chain) = lab() else { return };
    let t0 = Instant::now();
    let (a, b) = (peer(1), peer(2));
    let (_srv, port) = server(1);
    let h = host(1);
    let mut cl = client(2);

    // At 0.5 a connect succeeds within 0.5 s only when neither its SYN nor the
    // SYN-ACK is dropped (the retransmits come after 1 s): about a quarter of them.
    let lossy = chain.lossy(b, a, 0.5);
    let rules = chain.rules();
    assert!(
        rules.contains("-m statistic --mode random --probability 0.5"),
        "{rules}"
    );
    let tries = 40;
    let ok: usize = cl.ask(&format!("tries t {h} {port} {tries} 0.5"))[3..]
        .parse()
        .unwrap();
    assert!(0 < ok && ok < tries, "{ok} of {tries} connects got through");
    let dropped_half = lossy.dropped();
    assert!(dropped_half > 0, "{}", chain.rules());
    lossy.heal();

    // A milder loss: TCP retransmits and every line gets through.
    let lossy = chain.lossy(b, a, 0.1);
    assert_eq!(cl.ask(&format!("connect e {h} {port} 10")), "OK");
    let mut round_trips = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        assert_eq!(cl.ask(&format!("send e line{i}")), "SENT");
        assert_eq!(cl.ask("recv e 15"), format!("LINE line{i}"));
        round_trips.push(t.elapsed().as_millis());
    }
    eprintln!(
        "lossy 0.5: {ok} of {tries} connects within 0.5 s, {dropped_half} packets dropped; \
         lossy 0.1: {} dropped, round trips {round_trips:?} ms; test took {:?}",
        lossy.dropped(),
        t0.elapsed()
    );
}

#[test]
fn c_isolate_cuts_the_named_links_only() {
    let _order = order();
    let Some(chain) = lab() else { return };
    let (a, b, c) = (peer(1), peer(2), peer(3));
    let (_srv, port) = server(1);
    let h = host(1);
    let (mut cb, mut cc, mut cd) = (client(2), client(3), client(4));
    let cut = chain.isolate(a, &[b, c]);
    assert_eq!(cb.ask(&format!("connect x {h} {port} 1")), "TIMEOUT");
    assert_eq!(cc.ask(&format!("connect x {h} {port} 1")), "TIMEOUT");
    assert_eq!(cd.ask(&format!("connect x {h} {port} 2")), "OK");
    drop(cut);
    assert_eq!(cb.ask(&format!("connect y {h} {port} 2")), "OK");
    assert_eq!(cc.ask(&format!("connect y {h} {port} 2")), "OK");
}

#[test]
fn d_the_chain_goes_away_on_panic() {
    let _order = order();
    if let Err(why) = available() {
        eprintln!("skipping: no network faults on this machine: {why}");
        return;
    }
    let r = std::panic::catch_unwind(|| {
        let chain = Chain::new().unwrap();
        let _cut = chain.link(peer(1), peer(2));
        assert!(!our_rules_in_output().is_empty());
        panic!("a test fails with a link cut");
    });
    assert!(r.is_err());
    assert_eq!(our_rules_in_output(), Vec::<String>::new());
}

#[test]
fn e_a_handed_over_directory_is_writable_by_the_test_user() {
    let _order = order();
    if let Err(why) = available() {
        eprintln!("skipping: no network faults on this machine: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let user = test_user(1);
    hand_over(&store, user);
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args([
        "-I",
        "-c",
        "import sys; open(sys.argv[1] + '/f', 'w').write('x')",
    ])
    .arg(&store);
    let status = run_as(&mut cmd, user).status().unwrap();
    assert!(status.success());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(store.join("f")).unwrap().uid(), user.0);
}
