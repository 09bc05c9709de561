//! Replace benchmark: three servers hold N keys of 100 bytes (default 1,000,000),
//! a fourth is attached, and the replace that moves its share of the data is timed.
//! Prints the seconds it took, the MB/s copied, and the records moved against the
//! ideal (the keys the fourth server must own), a ratio that should stay near 1.0.
//!
//!     cargo build --release && cargo run --release --example replace_bench [-- KEYS]
//!
//! The stores are written directly before the servers start (each of the three
//! servers owns every key), so the run measures the replace, not the loading.

use kumo::cluster::clock::ClockTime;
use kumo::cluster::hash_space::{key_hash, HashSpace, Node};
use kumo::net::rpc_client::BlockingClient;
use kumo::proto::cluster::NodesInfo;
use kumo::store::{Options, Record, Store, SyncPolicy};
use rmpv::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 100;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn call(a: SocketAddr, method: &str, params: &[Value]) -> Result<Value, String> {
    BlockingClient::connect(a, Duration::from_secs(5))
        .map_err(|e| e.to_string())?
        .call(method, params)
}

struct Kill(Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() {
    let keys: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let exe = std::env::current_exe().unwrap();
    let kumo: PathBuf = exe.parent().unwrap().parent().unwrap().join("kumo");
    assert!(
        kumo.exists(),
        "build the binary first: cargo build --release"
    );
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("REPLACE_BENCH_KEEP").is_some() {
        println!("replace-bench: logs are kept in {}", dir.path().display());
    }
    let manager = addr(free_port());
    let servers: Vec<SocketAddr> = (0..4).map(|_| addr(free_port())).collect();

    let t = Instant::now();
    let options = Options {
        sync: SyncPolicy::None,
        ..Options::default()
    };
    let value = vec![b'v'; VALUE_BYTES];
    std::thread::scope(|s| {
        for i in 0..3 {
            let (dir, options, value) = (dir.path().to_path_buf(), options.clone(), value.clone());
            s.spawn(move || {
                let store = Store::open(&dir.join(format!("s{i}")), options).unwrap();
                for k in 0..keys {
                    let rec = Record::value(ClockTime::new(1, k as u32 + 1).0, 0, 0, value.clone());
                    store.put(format!("key:{k:08}").as_bytes(), &rec).unwrap();
                }
                store.close();
            });
        }
    });
    println!(
        "replace-bench: {keys} keys of {VALUE_BYTES} B written to 3 stores in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let mut kids = Kill(Vec::new());
    let spawn = |args: Vec<String>, log: &str| {
        Command::new(&kumo)
            .args(args)
            .arg("-o")
            .arg(dir.path().join(log))
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    };
    kids.0.push(spawn(
        vec![
            "manager".into(),
            "-l".into(),
            manager.to_string(),
            "-v".into(),
        ],
        "manager.log",
    ));
    let start_server = |i: usize| {
        spawn(
            vec![
                "server".into(),
                "-l".into(),
                servers[i].to_string(),
                "-L".into(),
                free_port().to_string(),
                "-m".into(),
                manager.to_string(),
                "-s".into(),
                dir.path().join(format!("s{i}")).display().to_string(),
            ],
            &format!("s{i}.log"),
        )
    };
    for i in 0..3 {
        kids.0.push(start_server(i));
    }
    let info = || {
        call(manager, "GetNodesInfo", &[])
            .ok()
            .and_then(|v| NodesInfo::from_value(&v).ok())
    };
    let settled = |n: usize| {
        info().is_some_and(|i| {
            i.replace.is_none()
                && i.whs == i.rhs
                && i.whs.nodes().iter().filter(|x| x.active).count() == n
        })
    };
    wait("3 servers", Duration::from_secs(120), || {
        info().is_some_and(|i| i.newcomers.len() == 3)
    });
    call(manager, "AttachNewServers", &[Value::from(true)]).unwrap();
    wait("the first attach", Duration::from_secs(300), || settled(3));

    kids.0.push(start_server(3));
    wait("the 4th server", Duration::from_secs(60), || {
        info().is_some_and(|i| i.newcomers.len() == 1)
    });
    let t = Instant::now();
    call(manager, "AttachNewServers", &[Value::from(true)]).unwrap();
    // The copy ends when the manager's run leaves "copying"; polled every 10 ms.
    let (mut copy_secs, mut delete_from) = (None, None);
    wait("the replace", Duration::from_secs(1800), || {
        let Some(i) = info() else { return false };
        let phase = i.replace.as_ref().map(|r| r.phase.as_str());
        let copying = phase.is_none_or(|p| p == "copying") && !i.whs.same_layout(&i.rhs);
        if copy_secs.is_none() && !copying {
            copy_secs = Some(t.elapsed().as_secs_f64());
        }
        if delete_from.is_none() && phase.is_none_or(|p| p == "deleting") && !copying {
            delete_from = Some(t.elapsed().as_secs_f64());
        }
        i.replace.is_none()
            && i.whs == i.rhs
            && i.whs.nodes().iter().filter(|x| x.active).count() == 4
    });
    let secs = t.elapsed().as_secs_f64();
    let copy_secs = copy_secs.unwrap_or(secs);
    let delete_secs = secs - delete_from.unwrap_or(secs);

    let status = |a: SocketAddr| call(a, "GetStatus", &[Value::from("replace")]).unwrap();
    let field = |v: &Value, name: &str| {
        v.as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(name)))
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(0)
    };
    let (mut records, mut bytes, mut copy_ms, mut delete_ms) = (0, 0, 0, 0);
    for a in &servers[..3] {
        let v = status(*a);
        records += field(&v, "records_sent");
        bytes += field(&v, "bytes_sent");
        copy_ms = copy_ms.max(field(&v, "copy_ms"));
        delete_ms = delete_ms.max(field(&v, "delete_ms"));
    }
    let whs = HashSpace::new(
        servers
            .iter()
            .map(|a| Node {
                addr: *a,
                active: true,
            })
            .collect(),
        ClockTime(0),
    );
    let ideal = (0..keys)
        .filter(|k| whs.is_active_owner(key_hash(format!("key:{k:08}").as_bytes()), &servers[3]))
        .count();
    let items: u64 = servers
        .iter()
        .map(|a| {
            call(*a, "GetStatus", &[Value::from("items")])
                .unwrap()
                .as_u64()
                .unwrap()
        })
        .sum();
    let mb = bytes as f64 / 1e6;
    println!(
        "replace-bench: attach 1 server to 3 holding {keys} keys: {mb:.1} MB copied in {:.2} s by the slowest server, {:.1} MB/s; the copy phase {copy_secs:.2} s ({:.1} MB/s, with its fixed {:.1} s wait before reading); the whole replace {secs:.2} s ({:.1} MB/s, with the settle's fixed {:.1} s and the delete phase's {delete_secs:.2} s, of which the slowest server's deletes {:.2} s); {records} records moved, ideal {ideal}, ratio {:.3}; items after {items} (3 x keys = {})",
        copy_ms as f64 / 1000.0,
        mb / (copy_ms.max(1) as f64 / 1000.0),
        mb / copy_secs,
        kumo::server::replace::SETTLE.as_secs_f64(),
        mb / secs,
        kumo::cluster::replace_run::SETTLE_GRACE_MS as f64 / 1000.0,
        delete_ms as f64 / 1000.0,
        records as f64 / ideal.max(1) as f64,
        3 * keys
    );
    if std::env::var_os("REPLACE_BENCH_KEEP").is_some() {
        drop(kids);
        let _ = dir.keep();
    }
}
