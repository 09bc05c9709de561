//! Peers are not trusted blindly (issue #10, part 3): anyone who reaches a cluster
//! port can speak msgpack-rpc to it, so registrations are bounded, and clocks,
//! tables and records from the far future are refused rather than adopted.

mod common;

use common::{free_port, rpc, spawn, wait_until, Cluster};
use kumo::cluster::clock::{ClockTime, AHEAD_MAX_SECS};
use kumo::cluster::hash_space::{HashSpace, Node};
use kumo::proto::cluster as msg;
use kumo::store::Record;
use rmpv::Value;
use std::net::SocketAddr;
use std::time::Duration;

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn far_future() -> ClockTime {
    ClockTime::new(now() + AHEAD_MAX_SECS * 10, 1)
}

/// Keepalives from more strangers than a manager watches: the excess is refused,
/// the strangers (nobody answers at their addresses) are forgotten, and the cluster
/// serves throughout.
#[test]
fn a_flood_of_strangers_is_bounded_and_forgotten() {
    let c = Cluster::start(3);
    let max = kumo::manager::SERVERS_MAX;
    let mut refused = 0;
    let mut client =
        kumo::net::rpc_client::BlockingClient::connect(c.manager_addr, Duration::from_secs(5))
            .unwrap();
    for i in 0..(max + 50) {
        // 127.0.0.2-127.0.0.9 on low ports: nobody listens there.
        let addr = SocketAddr::from(([127, 0, 0, 2 + (i / 1000) as u8], 1 + (i % 1000) as u16));
        let params = [
            Value::from(1),
            msg::addr_to_value(&addr),
            HashSpace::empty().to_value(),
            HashSpace::empty().to_value(),
            Value::from(1),
            Value::from(i as u64),
        ];
        if let Err(e) = client.call(msg::KEEP_ALIVE, &params) {
            assert!(e.contains("refused"), "{e}");
            refused += 1;
        }
    }
    assert!(refused >= 50, "only {refused} keepalives refused");
    assert!(c.nodes_info().newcomers.len() <= max);
    c.client().set("during-the-flood", "1", 0).unwrap();
    wait_until(
        Duration::from_secs(60),
        "the strangers to be forgotten",
        || c.nodes_info().newcomers.is_empty(),
    );
    let got: Option<String> = c.client().get("during-the-flood").unwrap();
    assert_eq!(got.as_deref(), Some("1"));
}

/// A table stamped far in the future, pushed to a server or a manager, is not
/// taken; a record from the future is refused by a replica; a counter that would
/// wrap is not merged.
#[test]
fn versions_from_the_far_future_are_refused() {
    let c = Cluster::start(3);
    let server = c.servers[0].addr;
    let before = rpc(server, "GetStatus", &[Value::from("whs")]).unwrap();
    let lone = HashSpace::new(
        vec![Node {
            addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            active: true,
        }],
        far_future(),
    );
    let params = [Value::from(1), lone.to_value(), lone.to_value()];
    assert_eq!(
        rpc(server, msg::HASH_SPACE_SYNC, &params),
        Ok(Value::from(false))
    );
    assert_eq!(
        rpc(c.manager_addr, msg::HASH_SPACE_SYNC, &params),
        Ok(Value::from(false))
    );
    assert_eq!(
        rpc(server, "GetStatus", &[Value::from("whs")]).unwrap(),
        before
    );
    assert_eq!(c.nodes_info().whs.to_value(), before);

    // A replica refuses a record from the future for a key it owns.
    let key = b"from-the-future".to_vec();
    let owners = c
        .nodes_info()
        .whs
        .active_owners(kumo::cluster::hash_space::key_hash(&key));
    let rec = Record::value(far_future().0, 0, 0, b"forever".to_vec());
    let r = rpc(
        owners[1],
        msg::REPLICATE,
        &[
            Value::from(1),
            Value::Binary(key.clone()),
            msg::record_to_value(&rec),
            Value::from(u64::MAX),
        ],
    );
    assert!(r.as_ref().is_err_and(|e| e.contains("ahead")), "{r:?}");
    // So a normal write of the key still takes effect everywhere.
    let client = c.client();
    client.set("from-the-future", "now", 0).unwrap();
    let got: Option<String> = client.get("from-the-future").unwrap();
    assert_eq!(got.as_deref(), Some("now"));

    // A message counter that would wrap ours is not merged: stamps stay ordered.
    let _ = rpc(server, msg::KEEP_ALIVE, &[Value::from(u32::MAX - 2)]);
    let stamp = rpc(server, "GetStatus", &[Value::from("clocktime")])
        .unwrap()
        .as_u64()
        .unwrap();
    assert!(
        ClockTime(stamp).counter() < 1 << 30,
        "counter jumped to {:#x}",
        ClockTime(stamp).counter()
    );
    client.set("from-the-future", "later", 0).unwrap();
    let got: Option<String> = client.get("from-the-future").unwrap();
    assert_eq!(got.as_deref(), Some("later"));
}

/// A replace's push carries records in the store's format, and the receiving server
/// checks each before it appends it as it came: a record that fails its checksum,
/// an erase (a server's own bookkeeping), a record from the far future, or a push
/// in any other shape is refused with an error that names it, and what came before
/// it in the push is kept.
#[test]
fn a_replace_push_is_checked_record_by_record() {
    use kumo::store::record::encode;
    use kumo::store::Kind;
    let dir = tempfile::tempdir().unwrap();
    let (addr, stream) = (free_port(), free_port());
    let manager = free_port(); // nobody: the stream port serves without one
    let _server = spawn(
        dir.path(),
        "server",
        &[
            "server",
            "-l",
            &format!("127.0.0.1:{addr}"),
            "-L",
            &stream.to_string(),
            "-m",
            &format!("127.0.0.1:{manager}"),
            "-s",
            dir.path().join("store").to_str().unwrap(),
        ],
    );
    let stream = SocketAddr::from(([127, 0, 0, 1], stream));
    let push = |records: Value| {
        rpc(
            stream,
            msg::REPLACE_PUSH,
            &[Value::from(1), Value::from(0), records],
        )
    };
    wait_until(Duration::from_secs(10), "the stream port", || {
        push(Value::Binary(Vec::new())).is_ok()
    });
    let clock = ClockTime::new(now(), 1).0;
    let record = |key: &[u8], rec: &Record| {
        let mut out = Vec::new();
        encode(&mut out, key, rec);
        out
    };
    let a = record(b"a", &Record::value(clock, 7, 0, b"alpha".to_vec()));
    let b = record(b"b", &Record::tombstone(clock));
    let both = [a.clone(), b.clone()].concat();
    assert_eq!(push(Value::Binary(both.clone())), Ok(Value::from(2)));
    // Newer wins: the same records again change nothing, so they were stored.
    assert_eq!(push(Value::Binary(both)), Ok(Value::from(0)));

    let c = record(b"c", &Record::value(clock, 0, 0, b"gamma".to_vec()));
    let mut damaged = record(b"d", &Record::value(clock, 0, 0, b"delta".to_vec()));
    let last = damaged.len() - 1;
    damaged[last] ^= 0x20;
    let r = push(Value::Binary([c.clone(), damaged].concat()));
    assert!(
        r.as_ref()
            .is_err_and(|e| e.contains("record 1") && e.contains("Checksum")),
        "{r:?}"
    );
    assert_eq!(
        push(Value::Binary(c)),
        Ok(Value::from(0)),
        "c, before the damage, was kept"
    );

    let erase = record(
        b"a",
        &Record {
            kind: Kind::Erase,
            ..Record::tombstone(clock + 1)
        },
    );
    let r = push(Value::Binary(erase));
    assert!(r.as_ref().is_err_and(|e| e.contains("erase")), "{r:?}");
    let future = record(
        b"a",
        &Record::value(far_future().0, 0, 0, b"forever".to_vec()),
    );
    let r = push(Value::Binary(future));
    assert!(r.as_ref().is_err_and(|e| e.contains("ahead")), "{r:?}");
    let cut = record(b"e", &Record::value(clock, 0, 0, b"epsilon".to_vec()));
    let r = push(Value::Binary(cut[..cut.len() - 2].to_vec()));
    assert!(
        r.as_ref()
            .is_err_and(|e| e.contains("record 0") && e.contains("Short")),
        "{r:?}"
    );
    let r = push(Value::Array(vec![Value::Array(vec![Value::Binary(
        b"a".to_vec(),
    )])]));
    assert!(
        r.as_ref()
            .is_err_and(|e| e.contains("bad parameters: records")),
        "{r:?}"
    );
    // None of it replaced a's value.
    assert_eq!(push(Value::Binary(a)), Ok(Value::from(0)));
}

/// `--cluster-key`: a manager, a server, a gateway and kumoctl that share a key
/// form a cluster; a server without it never registers, a client without it is
/// refused and disconnected, and a wrong key is refused.
#[test]
fn a_cluster_key_keeps_strangers_off() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "s3cret\n").unwrap();
    let key_arg = key.to_str().unwrap();
    let manager = common::local(common::free_port());
    let m = manager.to_string();
    let _mgr = common::spawn(
        dir.path(),
        "manager",
        &[
            &["manager", "-l", &m, "--cluster-key", key_arg],
            common::FAST,
        ]
        .concat(),
    );
    let server = |name: &str, keyed: bool| {
        let addr = common::local(common::free_port());
        let store = dir.path().join(name);
        let mut args: Vec<String> = vec![
            "server".into(),
            "-l".into(),
            addr.to_string(),
            "-L".into(),
            common::free_port().to_string(),
            "-m".into(),
            m.clone(),
            "-s".into(),
            store.display().to_string(),
        ];
        if keyed {
            args.extend(["--cluster-key".into(), key_arg.into()]);
        }
        args.extend(common::FAST.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (addr, common::spawn(dir.path(), name, &args))
    };
    let ctl = |args: &[&str], keyed: bool| {
        let mut a = vec!["ctl", m.as_str()];
        a.extend(args);
        if keyed {
            a.extend(["--cluster-key", key_arg]);
        }
        common::run(&a)
    };
    let servers: Vec<_> = (0..3).map(|i| server(&format!("s{i}"), true)).collect();
    let (stranger, _s) = server("stranger", false);
    // The manager must be listening, or the keyless kumoctl below fails for
    // the wrong reason (connection refused, not the missing key).
    wait_until(Duration::from_secs(15), "the manager to listen", || {
        std::net::TcpStream::connect(manager).is_ok()
    });
    // kumoctl without the key is refused; with it, it sees the keyed servers only.
    let (code, _, err) = ctl(&["status"], false);
    assert_ne!(code, 0, "a keyless kumoctl was served");
    assert!(err.contains("key"), "{err}");
    wait_until(
        Duration::from_secs(20),
        "the keyed servers to register",
        || {
            let (code, out, _) = ctl(&["status"], true);
            code == 0 && servers.iter().all(|(a, _)| out.contains(&a.to_string()))
        },
    );
    let (_, out, _) = ctl(&["status"], true);
    assert!(
        !out.contains(&stranger.to_string()),
        "the stranger registered: {out}"
    );
    assert_eq!(ctl(&["attach"], true).0, 0);

    // A gateway with the key serves; the data path is keyed end to end.
    let gw = common::local(common::free_port());
    let _gw = common::spawn(
        dir.path(),
        "gateway",
        &[
            &[
                "gateway",
                "-t",
                &gw.to_string(),
                "-m",
                &m,
                "--cluster-key",
                key_arg,
            ][..],
            common::FAST,
        ]
        .concat(),
    );
    let client = common::client(gw);
    wait_until(Duration::from_secs(20), "a keyed set", || {
        client.set("k", "v", 0).is_ok()
    });
    let got: Option<String> = client.get("k").unwrap();
    assert_eq!(got.as_deref(), Some("v"));
    for i in 0..300 {
        client.set(&format!("k{i}"), "v", 0).unwrap();
    }
    // A replace moves data between keyed servers (stream ports, reports): attach a
    // 4th and wait until it is done, asking with the key from this process too.
    kumo::net::auth::load(&key).unwrap();
    let (fourth, _s4) = server("s3", true);
    wait_until(
        Duration::from_secs(20),
        "the 4th server to register",
        || {
            let (_, out, _) = ctl(&["status"], true);
            out.contains(&fourth.to_string())
        },
    );
    assert_eq!(ctl(&["attach"], true).0, 0);
    wait_until(Duration::from_secs(30), "the replace to the 4th", || {
        let info = rpc(manager, "GetNodesInfo", &[])
            .ok()
            .and_then(|v| kumo::proto::cluster::NodesInfo::from_value(&v).ok());
        info.is_some_and(|i| i.replace.is_none() && i.whs == i.rhs && i.whs.nodes().len() == 4)
    });
    let items: u64 = servers
        .iter()
        .map(|(a, _)| *a)
        .chain([fourth])
        .map(|a| {
            rpc(a, "GetStatus", &[Value::from("items")])
                .unwrap()
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(items, 3 * 301);

    // Any msgpack-rpc client: without the key, or with a wrong one, it gets an
    // error and a closed connection.
    let script = format!(
        r#"
import msgpack, socket, hashlib
def ask(first):
    s = socket.create_connection(("127.0.0.1", {port}))
    u = msgpack.Unpacker(raw=False)
    s.sendall(msgpack.packb(first) + msgpack.packb([0, 9, "GetStatus", ["pid"]]))
    out = []
    while True:
        data = s.recv(65536)
        if not data:
            out.append("closed")
            return out
        u.feed(data)
        for m in u:
            out.append(m[2] if m[2] is not None else "ok")
good = hashlib.sha1(b"kumo cluster key\0" + b"s3cret").digest()
print(ask([0, 1, "GetStatus", ["pid"]]))
print(ask([0, 0, "Auth", [b"wrong"]]))
s = socket.create_connection(("127.0.0.1", {port}))
u = msgpack.Unpacker(raw=False)
s.sendall(msgpack.packb([0, 0, "Auth", [good]]) + msgpack.packb([0, 9, "GetStatus", ["version"]]))
got = []
while len(got) < 2:
    u.feed(s.recv(65536))
    got.extend(m[3] for m in u)
print(got)
"#,
        port = servers[0].0.port()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("requires its key") && lines[0].contains("closed"),
        "{text}"
    );
    assert!(
        lines[1].contains("wrong cluster key") && lines[1].contains("closed"),
        "{text}"
    );
    assert_eq!(
        lines[2],
        format!("[True, '{}']", env!("CARGO_PKG_VERSION")),
        "{text}"
    );
}
