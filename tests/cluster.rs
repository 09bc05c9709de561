//! The cluster end to end, as separate processes on 127.0.0.1: the user guide's
//! tutorial, memcached conformance through the gateway, killed servers, a lost
//! manager, and `kumo local`. Every client is the `memcache` crate or raw TCP.

mod common;
mod conformance;

use common::load::Load;
use common::{rpc, run, wait_until, Cluster};
use rmpv::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn value_of(i: usize) -> String {
    format!("value-{i}-{}", "x".repeat(i % 50))
}

/// The guide's localhost tutorial: 1 manager, 3 servers, attach, then 10,000 keys.
#[test]
fn tutorial_ten_thousand_keys_on_three_servers() {
    let c = Cluster::start(3);
    let (code, status, _) = c.ctl(&["status"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines[0], "hash space timestamp:");
    assert!(
        lines[1].starts_with("  ") && lines[1].contains(" clock "),
        "{status}"
    );
    assert_eq!(lines[2], "attached node:");
    for s in &c.servers {
        assert!(
            status.contains(&format!("  {}  (active)\n", s.addr)),
            "{status}"
        );
    }
    assert_eq!(lines.last(), Some(&"not attached node:"), "{status}");

    let client = c.client();
    for i in 0..10_000 {
        client
            .set(&format!("tutorial-{i}"), value_of(i).as_str(), 0)
            .unwrap();
    }
    for i in 0..10_000 {
        let v: Option<String> = client.get(&format!("tutorial-{i}")).unwrap();
        assert_eq!(v.as_deref(), Some(value_of(i).as_str()), "key {i}");
    }
    // Every key on three servers; the readiness probe key is one more.
    assert_eq!(c.items_total(), 3 * 10_001);
    let (code, out, _) = run(&["stat", "-m", &c.manager_addr.to_string(), "items"]);
    assert_eq!(code, 0);
    let total: u64 = out
        .lines()
        .map(|l| {
            let (addr, n) = l.split_once(":  ").expect("ADDRESS:  VALUE");
            assert!(c.servers.iter().any(|s| s.addr.to_string() == addr), "{l}");
            n.parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(total, 3 * 10_001);

    // kumohash assign names where the data is: read each store after the servers
    // are gone, and find the key on exactly the servers named.
    let samples = ["tutorial-0", "tutorial-4242", "tutorial-9999"];
    let mut assigned: HashMap<&str, Vec<SocketAddr>> = HashMap::new();
    for k in samples {
        let (code, out, err) = run(&["hash", "-m", &c.manager_addr.to_string(), "assign", k]);
        assert_eq!(code, 0, "{err}");
        let mut lines = out.lines();
        let first = lines.next().unwrap();
        assert!(
            first.ends_with(&format!("  {k}")) && first.len() == 16 + 2 + k.len(),
            "{out}"
        );
        let owners: Vec<SocketAddr> = lines
            .map(|l| l.trim().split_once(": ").unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(owners.len(), 3, "{out}");
        // The server-list form with the servers in attach order agrees.
        let mut args: Vec<String> = vec!["hash".into()];
        args.extend(
            c.nodes_info()
                .whs
                .nodes()
                .iter()
                .map(|n| n.addr.to_string()),
        );
        args.extend(["--".into(), "assign".into(), k.into()]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(run(&argv).1, out);
        assigned.insert(k, owners);
    }
    let mut c = c;
    let stores: Vec<(SocketAddr, std::path::PathBuf)> = c
        .servers
        .iter()
        .map(|s| (s.addr, s.store.clone()))
        .collect();
    for i in 0..c.servers.len() {
        c.kill_server(i);
    }
    for (addr, path) in stores {
        let store = kumo::store::Store::open(&path, kumo::store::Options::default()).unwrap();
        for k in samples {
            let here = store.get(k.as_bytes()).unwrap().is_some();
            assert_eq!(here, assigned[k].contains(&addr), "{k} on {addr}");
        }
    }
}

/// Every memcached conformance check, through the gateway of a 3-server cluster.
#[test]
fn the_gateway_answers_like_memcached() {
    let c = Cluster::start(3);
    conformance::run_all(c.gateway_addr);
}

fn status_of(c: &Cluster, addr: SocketAddr) -> Option<String> {
    let (_, out, _) = c.ctl(&["status"]);
    out.lines()
        .find(|l| l.starts_with(&format!("  {addr}  (")))
        .map(|l| l.trim().to_string())
}

/// kill -9 one server under load, then a second: no get fails or is wrong, the
/// manager shows the server as fault within the detection time, and every
/// acknowledged key is still readable from the last server.
#[test]
fn killed_servers_cost_no_read_and_lose_no_write() {
    let mut c = Cluster::start(3);
    let load = Load::start(c.gateway_addr, 2, 200);
    load.run_for_ops(400);

    let victim = c.servers[1].addr;
    c.kill_server(1);
    let killed_at = Instant::now();
    // -Ci 0.5 -Ys 1 -Yn 2: a refused reconnect is instant, so 3 attempts 0.3 s apart.
    wait_until(
        Duration::from_secs(10),
        "the killed server to show as fault",
        || status_of(&c, victim).as_deref() == Some(&format!("{victim}  (fault)")),
    );
    eprintln!("fault detected after {:?}", killed_at.elapsed());
    load.run_for_ops(400);

    c.kill_server(2);
    let second = c.servers[2].addr;
    wait_until(
        Duration::from_secs(10),
        "the second server to show as fault",
        || status_of(&c, second).as_deref() == Some(&format!("{second}  (fault)")),
    );
    load.run_for_ops(400);
    let (acked, get_errors, set_errors, wrong) = load.stop();
    assert_eq!((get_errors, wrong), (0, 0), "reads failed or were wrong");
    assert_eq!(set_errors, 0, "writes failed");
    common::load::check_acked(c.gateway_addr, &acked);
    assert!(
        acked.len() >= 200,
        "the load touched only {} keys",
        acked.len()
    );
}

/// With the manager gone, the last hash spaces keep routing; a restarted manager
/// relearns the cluster from its servers without an attach.
#[test]
fn a_lost_manager_does_not_stop_traffic() {
    let mut c = Cluster::start(3);
    let client = c.client();
    client.set("before", "1", 0).unwrap();
    c.kill_manager();
    let load = Load::start(c.gateway_addr, 2, 100);
    load.run_for_ops(1000);
    assert_eq!(
        client.get::<String>("before").unwrap().as_deref(),
        Some("1")
    );
    c.restart_manager();
    let addrs: Vec<SocketAddr> = c.servers.iter().map(|s| s.addr).collect();
    wait_until(
        Duration::from_secs(10),
        "the manager to relearn the servers",
        || {
            let info = c.nodes_info();
            info.newcomers.is_empty()
                && addrs
                    .iter()
                    .all(|a| info.whs.nodes().iter().any(|n| n.addr == *a && n.active))
        },
    );
    load.run_for_ops(400);
    let (acked, get_errors, set_errors, wrong) = load.stop();
    assert_eq!((get_errors, set_errors, wrong), (0, 0, 0));
    common::load::check_acked(c.gateway_addr, &acked);
}

/// Server status through kumostat, in each output form.
#[test]
fn kumostat_reports_counters_and_tables() {
    let c = Cluster::start(3);
    let client = c.client();
    for i in 0..30 {
        client.set(&format!("s{i}"), "v", 0).unwrap();
        let _: Option<String> = client.get(&format!("s{i}")).unwrap();
    }
    client.delete("s0").unwrap();
    let s = c.servers[0].addr.to_string();
    let stat = |cmd: &str| {
        let (code, out, err) = run(&["stat", &s, cmd]);
        assert_eq!(code, 0, "{cmd}: {err}");
        out
    };
    assert!(stat("pid").trim().parse::<u32>().is_ok());
    assert_eq!(stat("version").trim(), env!("CARGO_PKG_VERSION"));
    assert_eq!(stat("hscheck").trim(), "true");
    let total = |name: &str| -> u64 {
        c.servers
            .iter()
            .map(|x| {
                rpc(x.addr, "GetStatus", &[Value::from(name)])
                    .unwrap()
                    .as_u64()
                    .unwrap()
            })
            .sum()
    };
    // Each write and delete is coordinated once, by one server.
    assert_eq!(total("cmd_set"), 31, "30 sets and the readiness probe");
    assert_eq!(total("cmd_delete"), 1);
    assert_eq!(total("cmd_get"), 30);
    let stats = stat("stats");
    assert!(
        stats.starts_with("STAT pid ") && stats.ends_with("END\n"),
        "{stats}"
    );
    assert!(stats.contains("STAT curr_items "), "{stats}");
    let whs = stat("whs");
    assert!(
        whs.contains("node:\n") && whs.matches("(active)").count() == 3,
        "{whs}"
    );
    let (code, json, _) = run(&["stat", "--json", "-m", &c.manager_addr.to_string(), "items"]);
    assert_eq!(code, 0);
    assert!(
        json.starts_with('{') && json.matches("\"127.0.0.1:").count() == 3,
        "{json}"
    );
    let (code, _, err) = run(&["stat", "127.0.0.1:1", "items"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach 127.0.0.1:1"), "{err}");
    let (code, _, err) = run(&["stat", &s, "nonsense"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = run(&["stat", &s, "set_delay"]);
    assert_eq!(code, 0);
    assert!(out.trim().ends_with("sockets"), "{out}");
}

/// kumoctl's commands, errors and JSON output.
#[test]
fn kumoctl_attaches_detaches_and_explains_errors() {
    // -c opens a second port for kumoctl.
    let control = common::local(common::free_port());
    let mut c = Cluster::start_with(3, &["-c", &control.to_string()], |_, _| {});
    let (code, via_control, _) = run(&["ctl", &control.to_string(), "status"]);
    assert_eq!(code, 0);
    assert_eq!(via_control, c.ctl(&["status"]).1);
    let extra = c.add_server();
    let extra_addr = c.servers[extra].addr;
    c.wait_newcomers(&[extra_addr]);
    let (_, json, _) = c.ctl(&["status", "--json"]);
    assert!(
        json.contains(&format!("\"not_attached\":[\"{extra_addr}\"]")),
        "{json}"
    );
    let (code, out, _) = c.ctl(&["attach-noreplace"]);
    assert_eq!((code, out.as_str()), (0, "attach-noreplace: done\n"));
    let (_, out, _) = c.ctl(&["attach"]);
    assert_eq!(out, "attach: nothing to do\n");
    c.kill_server(extra);
    wait_until(Duration::from_secs(10), "the fault", || {
        status_of(&c, extra_addr).as_deref() == Some(&format!("{extra_addr}  (fault)"))
    });
    let (_, out, _) = c.ctl(&["detach", "--json"]);
    assert_eq!(out, "{\"command\":\"detach\",\"changed\":true}\n");
    assert_eq!(status_of(&c, extra_addr), None);
    let (_, out, _) = c.ctl(&["enable-auto-replace"]);
    assert_eq!(out, "auto replace on (was off)\n");
    let (_, out, _) = c.ctl(&["disable-auto-replace"]);
    assert_eq!(out, "auto replace off (was on)\n");
    let (code, _, err) = run(&["ctl", "127.0.0.1:1", "status"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach 127.0.0.1:1"), "{err}");
    let (code, _, err) = c.ctl(&["explode"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown command 'explode'"), "{err}");
    // Data still flows after all that.
    c.client().set("after", "ok", 0).unwrap();
}

/// `kumo local` starts a working cluster, stops on SIGINT, and keeps its data.
#[test]
fn kumo_local_serves_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let local = common::Local::new(dir.path());
    let child = local.start();
    let client = common::client(local.text);
    client.set("local-key", "kept", 0).unwrap();
    // logrotate signals kumo local alone: its children reopen their logs too.
    let log = dir.path().join("logs/server1.log");
    std::fs::rename(&log, dir.path().join("logs/server1.log.1")).unwrap();
    unsafe { libc::kill(child.pid(), libc::SIGHUP) };
    wait_until(Duration::from_secs(10), "server1 to reopen its log", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("reopened")
    });
    local.stop(child);
    let child = local.start();
    let client = common::client(local.text);
    assert_eq!(
        client.get::<String>("local-key").unwrap().as_deref(),
        Some("kept")
    );
    local.stop(child);
    assert!(dir.path().join("server1").is_dir() && dir.path().join("logs/gateway.log").is_file());
}

/// kumofs's `-F` and `-E` (store flags, store exptime) start kumo's gateway
/// unchanged, and change nothing: flags and exptimes are always kept.
#[test]
fn a_kumofs_gateway_command_line_with_f_and_e_runs_unchanged() {
    let c = Cluster::start_gateway_with(3, &["-F", "-E"]);
    let mut s = std::net::TcpStream::connect(c.gateway_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"set kept 4242 0 2\r\nhi\r\nset brief 7 1 2\r\nno\r\n")
        .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"STORED\r\nSTORED\r\n") {
        let mut b = [0u8; 256];
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    std::thread::sleep(Duration::from_millis(2100));
    s.write_all(b"get kept brief\r\n").unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"END\r\n") {
        let mut b = [0u8; 256];
        let n = s.read(&mut b).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
    assert_eq!(
        got,
        b"VALUE kept 4242 2\r\nhi\r\nEND\r\n",
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// `kumo local` keeps serving through the loss of a server (kill -9), shows it as
/// fault, starts it again on its store and attaches it: every acknowledged write
/// is read back, before, during and after, and every request is answered.
#[test]
fn kumo_local_restarts_a_killed_server_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let local = common::Local::new(dir.path());
    let child = local.start();
    let url = format!(
        "memcache://{}?protocol=ascii&timeout=5&connect_timeout=5",
        local.text
    );
    let client = memcache::Client::connect(url).unwrap();
    let mut acked: HashMap<String, String> = HashMap::new();
    for i in 0..200 {
        let (k, v) = (format!("before-{i}"), value_of(i));
        client.set(&k, v.as_str(), 0).unwrap();
        acked.insert(k, v);
    }
    let victim = local.servers[1].to_string();
    let pid = common::pid_running(&["server", "-l", &victim]).expect("server2 runs");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status = || run(&["ctl", &local.manager.to_string(), "status"]).1;
    let line_of = |st: &str| {
        st.lines()
            .find(|l| l.contains(&victim))
            .unwrap_or("")
            .to_string()
    };
    // Through the outage: writes either succeed or fail with an answer (a failed
    // write leaves its key undefined), and every acknowledged key reads back.
    let (mut seen_fault, mut back) = (false, false);
    let started = Instant::now();
    let mut i = 0;
    while !back {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "server2 never came back: {}",
            status()
        );
        let (k, v) = (format!("during-{i}"), value_of(i));
        match client.set(&k, v.as_str(), 0) {
            Ok(()) => {
                acked.insert(k, v);
            }
            Err(memcache::MemcacheError::ServerError(_)) => {}
            Err(e) => panic!("write {k}: {e} (no answer in time?)"),
        }
        let probe = format!("before-{}", i % 200);
        let got: Option<String> = client.get(&probe).unwrap();
        assert_eq!(got.as_ref(), acked.get(&probe), "{probe} during the outage");
        i += 1;
        if i % 20 == 0 {
            let st = status();
            let line = line_of(&st);
            seen_fault |= line.contains("fault");
            back = seen_fault
                && line.contains("active")
                && !st.contains("copying")
                && !st.contains("deleting");
        }
    }
    let again = common::pid_running(&["server", "-l", &victim]).expect("server2 runs again");
    assert_ne!(again, pid, "a new process");
    for (k, v) in &acked {
        let got: Option<String> = client.get(k).unwrap();
        assert_eq!(got.as_ref(), Some(v), "{k} after the restart");
    }
    local.stop(child);
}

/// A stopped server (SIGSTOP: the kernel still accepts connections for it) is
/// declared lost by its silence, and reads and writes go on without it.
#[test]
fn a_stopped_server_is_detected_by_its_silence() {
    let c = Cluster::start(3);
    let client = c.client();
    client.set("before-stop", "1", 0).unwrap();
    let pid = c.servers[0].proc.as_ref().unwrap().pid();
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    c.wait_fault(0);
    for i in 0..50 {
        client.set(&format!("stopped-{i}"), "v", 0).unwrap();
        assert_eq!(
            client
                .get::<String>(&format!("stopped-{i}"))
                .unwrap()
                .as_deref(),
            Some("v")
        );
    }
    assert_eq!(
        client.get::<String>("before-stop").unwrap().as_deref(),
        Some("1")
    );
    unsafe { libc::kill(pid, libc::SIGCONT) };
}

/// A client that pipelines many commands sees them run as if one by one: each get
/// returns the value the command just before it set, even with commands on other
/// keys running at the same time.
#[test]
fn a_pipelining_client_sees_its_own_writes() {
    use std::io::{BufRead, BufReader, Write};
    let c = Cluster::start(3);
    let mut s = std::net::TcpStream::connect(c.gateway_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut batch = Vec::new();
    let mut want = Vec::new();
    for i in 0..2000 {
        let k = format!("pipe-{}", i % 7);
        let v = format!("v{i}");
        batch.extend_from_slice(format!("set {k} 0 0 {}\r\n{v}\r\n", v.len()).as_bytes());
        want.push("STORED".to_string());
        if i % 3 == 0 {
            batch.extend_from_slice(format!("append {k} 0 0 1\r\nx\r\n").as_bytes());
            want.push("STORED".to_string());
            batch.extend_from_slice(format!("get {k}\r\n").as_bytes());
            want.push(format!("VALUE {k} 0 {}", v.len() + 1));
            want.push(format!("{v}x"));
            want.push("END".to_string());
        }
        if i % 11 == 0 {
            batch.extend_from_slice(format!("delete {k} noreply\r\nget {k}\r\n").as_bytes());
            want.push("END".to_string());
        }
    }
    s.write_all(&batch).unwrap();
    let mut r = BufReader::new(s);
    for (n, w) in want.iter().enumerate() {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), w, "reply {n}");
    }
}

/// flush_all is cluster-wide: every server hides what was stored before it, a
/// server that was down during it learns it before serving again, and it outlives
/// a restart of every process (servers keep the point in their stores).
#[test]
fn flush_all_reaches_every_server_and_outlives_restarts() {
    let mut c = Cluster::start(3);
    let client = c.client();
    let keys = 300;
    for i in 0..keys {
        client.set(&format!("old-{i}"), "v", 0).unwrap();
    }
    // One server misses the flush: it is down, and comes back on its old store.
    c.kill_server(2);
    c.wait_fault(2);
    client.flush().unwrap();
    client.set("new", "n", 0).unwrap();
    let all_gone = |c: &Cluster, when: &str| {
        let client = c.client();
        for i in 0..keys {
            let got: Option<String> = client.get(&format!("old-{i}")).unwrap();
            assert_eq!(got, None, "{when}: old-{i} came back");
        }
        let new: Option<String> = client.get("new").unwrap();
        assert_eq!(
            new.as_deref(),
            Some("n"),
            "{when}: a key set after the flush"
        );
    };
    all_gone(&c, "after the flush");
    // Flushed keys are not items any more: only the key set after the flush is.
    let mut conn = conformance::Conn::open(c.gateway_addr, "stats after flush_all");
    conn.send(b"stats\r\n");
    let stats = conformance::read_stats(&mut conn);
    assert_eq!(stats.get("curr_items").map(String::as_str), Some("1"));
    c.restart_server(2);
    c.wait_newcomers(&[c.servers[2].addr]);
    let (code, out, err) = c.ctl(&["attach"]);
    assert_eq!(code, 0, "{out}{err}");
    c.wait_settled();
    all_gone(&c, "after the server that missed it came back");
    // Every process restarts; the managers know nothing, the stores remember.
    c.kill_manager();
    for i in 0..3 {
        c.kill_server(i);
    }
    c.restart_manager();
    for i in 0..3 {
        c.restart_server(i);
    }
    // Nobody kept the tables: the operator attaches the servers again.
    let addrs: Vec<SocketAddr> = c.servers.iter().map(|s| s.addr).collect();
    c.wait_newcomers(&addrs);
    let (code, out, err) = c.ctl(&["attach"]);
    assert_eq!(code, 0, "{out}{err}");
    c.wait_settled();
    all_gone(&c, "after every process restarted");
}

/// An expired item leaves curr_items when it expires, and every server holding it
/// reclaims it in the background (on the compaction tick) without a client asking.
#[test]
fn expired_items_leave_curr_items_and_are_reclaimed() {
    let c = Cluster::start(3);
    let client = c.client();
    let mut conn = conformance::Conn::open(c.gateway_addr, "stats and expiry");
    let mut items = || -> u64 {
        conformance::read_stats(&mut conn)["curr_items"]
            .parse()
            .unwrap()
    };
    // The cluster's own readiness probe is an item too.
    let base = items();
    client.set("stays", "v", 0).unwrap();
    client.set("goes", "v", 3).unwrap();
    assert_eq!(items(), base + 2);
    wait_until(
        Duration::from_secs(10),
        "the expired item to leave curr_items",
        || items() == base + 1,
    );
    let got: Option<String> = client.get("goes").unwrap();
    assert_eq!(got, None);
    wait_until(
        Duration::from_secs(75),
        "every server to reclaim the expired item",
        || {
            c.servers.iter().all(|s| {
                s.proc
                    .as_ref()
                    .is_some_and(|p| p.log_text().contains("reclaimed 1 expired"))
            })
        },
    );
    assert_eq!(items(), base + 1);
    let got: Option<String> = client.get("stays").unwrap();
    assert_eq!(got.as_deref(), Some("v"));
}

/// `stats conns` lists the open client connections, as memcached's does: each with
/// its address, the address it came in on, its state and its idle seconds.
#[test]
fn stats_conns_lists_the_open_connections() {
    let c = Cluster::start(3);
    let mut a = conformance::Conn::open(c.gateway_addr, "stats conns (a)");
    // A connection is listed once the gateway has taken it: b's first answer says so.
    let mut b = conformance::Conn::open(c.gateway_addr, "stats conns (b)");
    b.send(b"version\r\n");
    b.read_line();
    let b_addr = b.local_addr();
    a.send(b"stats conns\r\n");
    let stats = conformance::read_stats(&mut a);
    let peers: Vec<&String> = stats
        .iter()
        .filter(|(k, _)| k.ends_with(":addr"))
        .map(|(_, v)| v)
        .collect();
    assert!(
        peers.contains(&&format!("tcp:{b_addr}")),
        "{b_addr} not in {stats:?}"
    );
    assert!(peers.len() >= 2, "{stats:?}");
    let listen = format!("tcp:{}", c.gateway_addr);
    assert!(
        stats
            .iter()
            .filter(|(k, _)| k.ends_with(":listen_addr"))
            .all(|(_, v)| *v == listen),
        "{stats:?}"
    );
    drop(b);
    // A closed connection leaves the list.
    common::wait_until(
        Duration::from_secs(5),
        "the closed connection to leave",
        || {
            a.send(b"stats conns\r\n");
            let stats = conformance::read_stats(&mut a);
            !stats.values().any(|v| *v == format!("tcp:{b_addr}"))
        },
    );
}
