//! Group commit under `#sync=always`: a write is acknowledged only after an fsync
//! that began after it, and writes that arrive together share one fsync.

mod common;

use common::{rpc, Cluster};
use kumo::store::{Options, Record, Store, SyncPolicy};
use rmpv::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

/// Writers on several threads, each asking to hear once its write is durable: every
/// one hears, and only after a group commit; far fewer fsyncs are made than writes;
/// and everything is there after a reopen.
#[test]
fn writes_that_arrive_together_share_an_fsync() {
    const THREADS: u64 = 4;
    const WRITES: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: SyncPolicy::Always,
        ..Options::default()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    let (tx, rx) = mpsc::channel();
    let acknowledged_before_any_commit = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (store, tx) = (store.clone(), tx.clone());
            let early = acknowledged_before_any_commit.clone();
            s.spawn(move || {
                for i in 0..WRITES {
                    let key = format!("k{t}-{i}");
                    let rec = Record::value(1 + i, 0, 0, key.clone().into_bytes());
                    store.put(key.as_bytes(), &rec).unwrap();
                    let (probe, tx) = (store.clone(), tx.clone());
                    let early = early.clone();
                    store.when_durable(move |r| {
                        if probe.gauges().group_commits == 0 {
                            early.fetch_add(1, Ordering::Relaxed);
                        }
                        tx.send(r.is_ok()).unwrap();
                    });
                }
            });
        }
    });
    drop(tx);
    let answers: Vec<bool> = rx.iter().collect();
    assert_eq!(
        answers.len() as u64,
        THREADS * WRITES,
        "every write was answered"
    );
    assert!(answers.iter().all(|&ok| ok), "every fsync succeeded");
    assert_eq!(acknowledged_before_any_commit.load(Ordering::Relaxed), 0);
    let commits = store.gauges().group_commits;
    assert!(
        commits >= 1 && commits < THREADS * WRITES,
        "{commits} fsyncs for {} writes",
        THREADS * WRITES
    );
    drop(store);
    let store = Store::open(dir.path(), options).unwrap();
    for t in 0..THREADS {
        for i in 0..WRITES {
            let key = format!("k{t}-{i}");
            let got = store.get(key.as_bytes()).unwrap().map(|r| r.data);
            assert_eq!(got, Some(key.into_bytes()));
        }
    }
}

/// Under the other policies the page cache is what an acknowledgement promises:
/// the callback runs at once, on the writer's thread, and no fsync is made for it.
#[test]
fn without_sync_always_a_write_is_durable_at_once() {
    for sync in [
        SyncPolicy::None,
        SyncPolicy::Interval(std::time::Duration::from_secs(3600)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            Options {
                sync,
                ..Options::default()
            },
        )
        .unwrap();
        store
            .put(b"k", &Record::value(1, 0, 0, b"v".to_vec()))
            .unwrap();
        let mut heard = None;
        let here = std::thread::current().id();
        let (tx, rx) = mpsc::channel();
        store.when_durable(move |r| tx.send((r, std::thread::current().id())).unwrap());
        if let Ok(got) = rx.try_recv() {
            heard = Some(got);
        }
        assert_eq!(heard, Some((Ok(()), here)), "{sync:?}");
        // A close's fsync (or the interval's) is not one made for acknowledgements.
        store.close();
        assert_eq!(store.gauges().group_commits, 0);
    }
}

/// A cluster whose servers run `#sync=always`: many clients write at once through
/// the gateway, every write is answered and readable, each server committed in
/// groups, and the values survive kill -9 of every server.
#[test]
fn a_cluster_under_sync_always_answers_every_write_from_group_commits() {
    const CLIENTS: usize = 8;
    const WRITES: usize = 150;
    let mut c = Cluster::start_with_store_options(3, "#sync=always");
    std::thread::scope(|s| {
        for t in 0..CLIENTS {
            let client = c.client();
            s.spawn(move || {
                for i in 0..WRITES {
                    client
                        .set(&format!("gc-{t}-{i}"), format!("v{t}-{i}").as_str(), 0)
                        .unwrap();
                }
            });
        }
    });
    let writes = (CLIENTS * WRITES) as u64;
    for server in &c.servers {
        let commits = rpc(server.addr, "GetStatus", &[Value::from("group_commits")])
            .unwrap()
            .as_u64()
            .unwrap();
        // Every server holds a copy of every key, and each copy was committed.
        assert!(
            commits >= 1 && commits < writes,
            "{}: {commits} fsyncs for {writes} writes",
            server.addr
        );
    }
    for i in 0..c.servers.len() {
        c.kill_server(i);
    }
    for i in 0..c.servers.len() {
        c.restart_server(i);
    }
    // The manager saw them all fail: the operator attaches them again.
    let addrs: Vec<std::net::SocketAddr> = c.servers.iter().map(|s| s.addr).collect();
    c.wait_newcomers(&addrs);
    let (code, out, err) = c.ctl(&["attach"]);
    assert_eq!(code, 0, "{out}{err}");
    c.wait_settled();
    let client = c.client();
    common::wait_until(
        std::time::Duration::from_secs(30),
        "reads after the restarts",
        || client.get::<String>("gc-0-0").is_ok(),
    );
    for t in 0..CLIENTS {
        for i in 0..WRITES {
            let got: Option<String> = client.get(&format!("gc-{t}-{i}")).unwrap();
            assert_eq!(got, Some(format!("v{t}-{i}")));
        }
    }
}
