//! `--metrics`: every daemon's `/metrics` page, read over HTTP and parsed by the
//! Prometheus client's own parser (Python's `prometheus_client`), checked against
//! the traffic the test made, and against a killed server.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One sample: its name (with `_bucket`, `_sum`, ... for histograms), labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// GET `path` on `addr`: (status line, headers and body as text).
fn http(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let status = text.lines().next().unwrap_or("").to_string();
    (status, text)
}

/// The page at `addr`, parsed by prometheus_client: every sample, and the
/// families' types by name.
fn scrape(addr: SocketAddr) -> (Vec<Sample>, HashMap<String, String>) {
    let (status, text) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    // One line per sample and per family, tab-separated; labels joined by \x1f.
    const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    print("T\t%s\t%s" % (f.name, f.type))
    for s in f.samples:
        labels = "\x1f".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        print("S\t%s\t%s\t%r" % (s.name, labels, float(s.value)))
"#;
    let mut py = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the page: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut samples, mut types) = (Vec::new(), HashMap::new());
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "T" => {
                types.insert(f[1].to_string(), f[2].to_string());
            }
            _ => samples.push(Sample {
                name: f[1].to_string(),
                labels: f[2]
                    .split('\x1f')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_string(), v.to_string())
                    })
                    .collect(),
                value: f[3].parse().unwrap(),
            }),
        }
    }
    (samples, types)
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].value
}

struct Node {
    proc: Proc,
    metrics: SocketAddr,
}

fn start(dir: &std::path::Path, name: &str, args: &[&str]) -> Node {
    let metrics = local(free_port());
    let mut all: Vec<&str> = args.to_vec();
    let m = metrics.to_string();
    all.extend(["--metrics", &m]);
    Node {
        proc: spawn(dir, name, &all),
        metrics,
    }
}

#[test]
fn every_daemon_serves_metrics_that_prometheus_parses_and_that_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let manager = local(free_port());
    let m = manager.to_string();
    let mgr = start(d, "manager", &["manager", "-l", &m]);
    wait_rpc_ready_method(manager, "GetNodesInfo");
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..3 {
        let addr = local(free_port());
        let args = server_args(d, &format!("s{i}"), addr, manager, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        servers.push(start(d, &format!("server{i}"), &args));
        addrs.push(addr);
    }
    let text = local(free_port());
    let t = text.to_string();
    let gw = start(d, "gateway", &["gateway", "-m", &m, "-t", &t]);
    wait_until(
        Duration::from_secs(20),
        "the servers to be attached",
        || {
            run(&["ctl", &m, "attach"]);
            let (_, out, _) = run(&["ctl", &m, "status"]);
            out.matches("(active)").count() == 3
                && !out.contains("copying")
                && !out.contains("deleting")
        },
    );
    let client = client(text);
    let n = 50;
    for i in 0..n {
        client.set(&format!("k{i}"), "v", 0).unwrap();
    }
    for i in 0..n {
        assert_eq!(
            client.get::<String>(&format!("k{i}")).unwrap().as_deref(),
            Some("v")
        );
    }
    assert_eq!(client.get::<String>("absent").unwrap(), None);

    // The gateway: commands, results, one latency observation per command.
    let (g, types) = scrape(gw.metrics);
    assert_eq!(types["kumo_gateway_request_duration_seconds"], "histogram");
    assert_eq!(types["kumo_gateway_commands"], "counter", "{types:?}");
    assert_eq!(
        value(&g, "kumo_gateway_commands_total", &[("command", "set")]),
        n as f64
    );
    assert_eq!(
        value(&g, "kumo_gateway_commands_total", &[("command", "get")]),
        n as f64 + 1.0
    );
    assert_eq!(
        value(
            &g,
            "kumo_gateway_results_total",
            &[("command", "get"), ("result", "hit")]
        ),
        n as f64
    );
    assert_eq!(
        value(
            &g,
            "kumo_gateway_results_total",
            &[("command", "get"), ("result", "miss")]
        ),
        1.0
    );
    let timed = value(&g, "kumo_gateway_request_duration_seconds_count", &[]);
    assert!(timed >= (2 * n + 1) as f64, "every command timed: {timed}");
    assert_eq!(
        value(
            &g,
            "kumo_gateway_request_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        timed
    );
    assert!(value(&g, "kumo_gateway_connections", &[]) >= 1.0);
    for a in &addrs {
        assert_eq!(
            value(&g, "kumo_peer_link_up", &[("peer", &a.to_string())]),
            1.0
        );
    }

    // The servers: three copies of every key, and the clocks they route by.
    let mut items = 0.0;
    let mut clocks = Vec::new();
    for s in &servers {
        let (p, types) = scrape(s.metrics);
        assert_eq!(types["kumo_store_items"], "gauge");
        items += value(&p, "kumo_store_items", &[]);
        assert!(value(&p, "kumo_store_bytes", &[]) > 0.0);
        assert!(value(&p, "kumo_store_segments", &[]) >= 1.0);
        assert_eq!(value(&p, "kumo_store_full", &[]), 0.0);
        assert_eq!(value(&p, "kumo_replace_state", &[("state", "ready")]), 1.0);
        clocks.push(value(
            &p,
            "kumo_hash_space_time_seconds",
            &[("table", "whs")],
        ));
    }
    assert_eq!(items, (3 * n) as f64);

    // The manager: three active servers, no replace, the same tables.
    let (p, _) = scrape(mgr.metrics);
    assert_eq!(
        value(&p, "kumo_manager_servers", &[("state", "active")]),
        3.0
    );
    assert_eq!(
        value(&p, "kumo_manager_servers", &[("state", "fault")]),
        0.0
    );
    assert_eq!(
        value(&p, "kumo_manager_replace_phase", &[("phase", "none")]),
        1.0
    );
    let whs = value(&p, "kumo_hash_space_time_seconds", &[("table", "whs")]);
    assert!(clocks.iter().all(|c| *c == whs), "{clocks:?} vs {whs}");

    // A killed server: the manager counts it fault, the gateway's link goes down.
    let mut victim = servers.remove(0);
    victim.proc.kill9();
    let gone = addrs[0].to_string();
    wait_until(
        Duration::from_secs(20),
        "the manager to count a fault server",
        || {
            value(
                &scrape(mgr.metrics).0,
                "kumo_manager_servers",
                &[("state", "fault")],
            ) == 1.0
        },
    );
    assert_eq!(
        value(
            &scrape(mgr.metrics).0,
            "kumo_manager_servers",
            &[("state", "active")]
        ),
        2.0
    );
    wait_until(
        Duration::from_secs(20),
        "the gateway's link to it to go down",
        || {
            let _ = client.get::<String>("k1");
            let (g, _) = scrape(gw.metrics);
            let up = g
                .iter()
                .find(|s| s.name == "kumo_peer_link_up" && s.labels["peer"] == gone);
            up.is_some_and(|s| s.value == 0.0)
        },
    );
}

#[test]
fn the_metrics_listener_speaks_plain_http_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let manager = local(free_port());
    let m = manager.to_string();
    let mgr = start(dir.path(), "manager", &["manager", "-l", &m]);
    wait_rpc_ready_method(manager, "GetNodesInfo");
    let a = mgr.metrics;
    assert_eq!(
        http(a, b"GET / HTTP/1.1\r\n\r\n").0,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        http(a, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(http(a, b"hello\r\n\r\n").0, "HTTP/1.1 400 Bad Request");
    assert_eq!(
        http(a, &[b'x'; 9000]).0,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let (status, text) = http(a, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(text.ends_with("\r\n\r\n"), "no body to HEAD: {text}");
    // A request that comes a byte at a time is answered once it is whole.
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for b in b"GET /metrics?x=1 HTTP/1.1\r\nHost: slow\r\n\r\n" {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200 OK") && out.contains("kumo_uptime_seconds"),
        "{out}"
    );
    // A connection that sends nothing is closed once its time to ask has passed,
    // not held for ever.
    let limit = kumo::net::metrics::REQUEST_TIMEOUT;
    let mut idle = TcpStream::connect(a).unwrap();
    idle.set_read_timeout(Some(limit * 3)).unwrap();
    let began = std::time::Instant::now();
    let got = idle.read(&mut [0u8; 16]);
    assert!(
        matches!(&got, Ok(0))
            || matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "an idle metrics connection was not closed: {got:?}"
    );
    assert!(
        began.elapsed() + Duration::from_millis(500) >= limit,
        "closed after {:?}, before its {limit:?}",
        began.elapsed()
    );
    // A taken port is a start-up failure, told before going on.
    let (code, _, err) = run(&[
        "manager",
        "-l",
        &local(free_port()).to_string(),
        "--metrics",
        &a.to_string(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot listen for metrics"), "{err}");
}
