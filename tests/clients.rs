//! Real memcached clients and tools, unmodified, against kumo's gateway: pymemcache
//! with its defaults (its `flush_all` sends `noreply`, so a stray reply would put
//! every later command out of step), libmemcached's conformance tool and its copy
//! tools in both protocols, memcslap, and the Rust `memcache` crate in binary mode.
//! (It runs in text mode in every conformance check.)

mod common;

use common::Cluster;
use std::process::Command;

/// pymemcache (tests/peers.list installs it) runs a script of everyday calls; the
/// script checks every answer itself and exits non-zero on the first wrong one.
#[test]
fn pymemcache_speaks_to_the_gateway() {
    let c = Cluster::start(3);
    let script = r#"
import sys
from pymemcache.client.base import Client
c = Client(("127.0.0.1", int(sys.argv[1])), connect_timeout=5, timeout=5)
def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")
check("set", c.set("k1", b"v1"), True)
check("get", c.get("k1"), b"v1")
check("add existing", c.add("k1", b"x", noreply=False), False)
check("incr missing", c.incr("n", 1), None)
c.set("n", b"10")
check("incr", c.incr("n", 5), 15)
check("decr", c.decr("n", 5), 10)
value, cas = c.gets("k1")
check("gets value", value, b"v1")
check("cas", c.cas("k1", b"v2", cas), True)
check("get after cas", c.get("k1"), b"v2")
check("touch", c.touch("k1", 10, noreply=False), True)
check("get_many", c.get_many(["k1", "n", "nope"]), {"k1": b"v2", "n": b"10"})
check("flush_all (noreply)", c.flush_all(), True)
check("get after flush", c.get("k1"), None)
check("set after flush", c.set("k2", b"v", noreply=False), True)
check("get k2", c.get("k2"), b"v")
items = c.stats("items")
check("stats items is a dict", isinstance(items, dict), True)
general = c.stats()
check("stats has cmd_get", b"cmd_get" in general or "cmd_get" in general, True)
check("delete", c.delete("k2", noreply=False), True)
check("delete again", c.delete("k2", noreply=False), False)
check("version", isinstance(c.version(), bytes), True)
c.close()
print("ok")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(c.gateway_addr.port().to_string())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pymemcache: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// libmemcached's `memccapable -a` (Debian's libmemcached-tools) passes every ascii
/// test, as it does against memcached 1.6.
#[test]
fn memccapable_passes_every_ascii_test() {
    let c = Cluster::start(3);
    let out = Command::new("memccapable")
        .args(["-a", "-h", "127.0.0.1", "-t", "5", "-p"])
        .arg(c.gateway_addr.port().to_string())
        .output()
        .expect("memccapable runs (tests/peers.list installs libmemcached-tools)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("All tests passed"),
        "memccapable -a:\n{text}"
    );
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd} runs (tests/peers.list installs libmemcached-tools): {e}")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?}:\n{text}");
    text
}

/// `memccapable -b` passes every binary-protocol test, as against memcached 1.6.
#[test]
fn memccapable_passes_every_binary_test() {
    let c = Cluster::start(3);
    let port = c.gateway_binary_addr.port().to_string();
    let text = run(
        "memccapable",
        &["-b", "-h", "127.0.0.1", "-t", "5", "-p", &port],
    );
    assert!(text.contains("All tests passed"), "memccapable -b:\n{text}");
}

/// A 1 MB file goes in with `memccp --binary` and comes back whole with
/// `memccat --binary` (which adds a newline); memcslap's binary load runs clean.
#[test]
fn libmemcached_tools_round_trip_a_megabyte_in_binary() {
    let c = Cluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("megabyte.bin");
    let mut data = Vec::with_capacity(1_000_000);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    while data.len() < 1_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.push(x as u8);
    }
    std::fs::write(&file, &data).unwrap();
    let servers = format!("--servers={}", c.gateway_binary_addr);
    run("memccp", &[&servers, "--binary", file.to_str().unwrap()]);
    let out = Command::new("memccat")
        .args([&servers, "--binary", "megabyte.bin"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "memccat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len() + 1);
    assert!(
        out.stdout[..data.len()] == data[..],
        "the megabyte came back changed"
    );
    let text = run(
        "memcslap",
        &[
            &servers,
            "--binary",
            "--concurrency=4",
            "--execute-number=500",
        ],
    );
    assert!(text.contains("Time total"), "memcslap: {text}");
}

/// The Rust `memcache` crate, unmodified, in binary mode (its default).
#[test]
fn the_memcache_crate_speaks_binary() {
    let c = Cluster::start(3);
    let client =
        memcache::Client::connect(format!("memcache://{}", c.gateway_binary_addr)).unwrap();
    client.set("bin-k", "v1", 0).unwrap();
    assert_eq!(
        client.get::<String>("bin-k").unwrap().as_deref(),
        Some("v1")
    );
    assert!(
        client.add("bin-k", "x", 0).is_err(),
        "add of an existing key"
    );
    client.set("bin-n", 10u64, 0).unwrap();
    assert_eq!(client.increment("bin-n", 5).unwrap(), 15);
    assert_eq!(client.decrement("bin-n", 20).unwrap(), 0);
    client.append("bin-k", "+").unwrap();
    client.prepend("bin-k", "-").unwrap();
    assert_eq!(
        client.get::<String>("bin-k").unwrap().as_deref(),
        Some("-v1+")
    );
    let got: std::collections::HashMap<String, String> =
        client.gets(&["bin-k", "bin-none"]).unwrap();
    assert_eq!(got.get("bin-k").map(String::as_str), Some("-v1+"));
    assert!(client.touch("bin-k", 100).unwrap());
    assert!(client.delete("bin-k").unwrap());
    assert!(!client.delete("bin-k").unwrap());
    assert_eq!(client.get::<String>("bin-k").unwrap(), None);
    client.flush().unwrap();
    assert_eq!(client.get::<u64>("bin-n").unwrap(), None);
    assert!(!client.version().unwrap().is_empty());
}
