//! Real memcached clients and tools, unmodified, against kumo's gateway: pymemcache
//! with its defaults (its `flush_all` sends `noreply`, so a stray reply would put
//! every later command out of step), and libmemcached's conformance tool. (The Rust
//! `memcache` crate runs in every conformance check.)

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
