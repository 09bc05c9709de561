//! A full disk (issue #18, part 3): a server's store on a small tmpfs fills up.
//! Writes that reach it are answered at once with memcached's words for a store
//! it cannot keep, never with a file path and never after twenty retries; reads
//! and deletes keep working; writes resume by themselves once space is freed;
//! nothing acknowledged is lost.
//!
//! Mounting a tmpfs needs root (CI runs as root); elsewhere the test says so and
//! passes without running.

mod common;

use common::{fill_to_the_brim, rpc, wait_until, Cluster, Tmpfs};
use rmpv::Value;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

/// Size of the tmpfs under server 0's store.
const TMPFS: &str = "8m";
/// A file that takes most of it, removed to free space.
const BALLAST: usize = 5 << 20;

/// Sends one text-protocol set and returns the reply line and how long it took.
fn raw_set(
    conn: &mut (std::net::TcpStream, BufReader<std::net::TcpStream>),
    key: &str,
    value: &[u8],
) -> (String, Duration) {
    let t = Instant::now();
    // One write: three would wait on each other's acknowledgements (Nagle).
    let mut request = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    request.extend_from_slice(value);
    request.extend_from_slice(b"\r\n");
    conn.0.write_all(&request).unwrap();
    let mut line = String::new();
    conn.1.read_line(&mut line).unwrap();
    (line.trim_end().to_string(), t.elapsed())
}

#[test]
fn a_full_disk_answers_at_once_loses_nothing_and_recovers() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("a_full_disk_...: not root, cannot mount a tmpfs; not run");
        return;
    }
    let mounts = std::sync::Mutex::new(Vec::new());
    let c = Cluster::start_with(3, &[], |i, store| {
        if i == 0 {
            let m = Tmpfs::mount(store, TMPFS).expect("mount a tmpfs");
            std::fs::write(store.join("ballast"), vec![0u8; BALLAST]).unwrap();
            mounts.lock().unwrap().push(m);
        }
    });
    let full_server = c.servers[0].addr;
    let stream = std::net::TcpStream::connect(c.gateway_addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut conn = (stream.try_clone().unwrap(), BufReader::new(stream));
    // Every key is on all three servers, so every set reaches the full one.
    let value = vec![b'v'; 64 << 10];
    let mut stored = Vec::new();
    let mut refusal = None;
    for i in 0..200 {
        let key = format!("fill-{i}");
        let (line, took) = raw_set(&mut conn, &key, &value);
        if line == "STORED" {
            stored.push(key);
            continue;
        }
        refusal = Some((line, took));
        break;
    }
    let (line, took) = refusal.expect("the disk never filled");
    assert_eq!(line, "SERVER_ERROR out of memory storing object");
    assert!(took < Duration::from_secs(2), "the refusal took {took:?}");
    assert!(!stored.is_empty());
    assert_eq!(
        rpc(full_server, "GetStatus", &[Value::from("store_full")]),
        Ok(Value::from(true))
    );
    // The operator sees it in kumoctl status, within a keepalive.
    wait_until(
        Duration::from_secs(5),
        "kumoctl status to show the full store",
        || {
            let (_, out, _) = c.ctl(&["status"]);
            out.contains("store full") && out.contains(&full_server.to_string())
        },
    );
    // A second refusal is as quick, and shows no path.
    let (line, took) = raw_set(&mut conn, "fill-again", &value);
    assert_eq!(line, "SERVER_ERROR out of memory storing object");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Reads and deletes keep working.
    let client = c.client();
    for k in &stored[..stored.len() / 2] {
        let got: Option<Vec<u8>> = client.get(k).unwrap();
        assert_eq!(got.as_deref(), Some(&value[..]), "{k}");
    }
    assert!(client.delete(&stored[0]).unwrap());
    // Space comes back: writes resume by themselves.
    std::fs::remove_file(c.servers[0].store.join("ballast")).unwrap();
    wait_until(Duration::from_secs(10), "writes to work again", || {
        raw_set(&mut conn, "after", &value).0 == "STORED"
    });
    assert_eq!(
        rpc(full_server, "GetStatus", &[Value::from("store_full")]),
        Ok(Value::from(false))
    );
    wait_until(
        Duration::from_secs(5),
        "kumoctl status to drop the full store",
        || !c.ctl(&["status"]).1.contains("store full"),
    );
    for k in &stored[1..] {
        let got: Option<Vec<u8>> = client.get(k).unwrap();
        assert_eq!(got.as_deref(), Some(&value[..]), "{k} lost");
    }
    let got: Option<Vec<u8>> = client.get(&stored[0]).unwrap();
    assert_eq!(got, None, "a delete during the full disk came back");
}

/// The store alone on a full tmpfs: every write it acknowledged before, during
/// and after the full disk is there after a clean close and reopen, and the
/// failed writes left nothing that costs a later record.
#[test]
fn a_store_that_was_full_reopens_with_every_acknowledged_write() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("a_store_that_was_full_...: not root, cannot mount a tmpfs; not run");
        return;
    }
    use kumo::store::{Options, Record, Store};
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("fs");
    let _m = Tmpfs::mount(&at, TMPFS).expect("mount a tmpfs");
    let ballast = at.join("ballast");
    std::fs::write(&ballast, vec![0u8; BALLAST]).unwrap();
    let path = at.join("db");
    let options = Options {
        segment_size: 512 << 10,
        ..Options::default()
    };
    let store = Store::open(&path, options.clone()).unwrap();
    let mut acked = std::collections::HashMap::new();
    let mut failures = 0;
    let mut n = 0u64;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut put = |store: &Store, acked: &mut std::collections::HashMap<String, usize>| {
        n += 1;
        let key = format!("k{}", n % 700);
        let len = 1000 + (n as usize * 7919) % 60_000;
        match store.put(
            key.as_bytes(),
            &Record::value((secs << 32) | n, 0, 0, vec![b'x'; len]),
        ) {
            Ok(()) => {
                acked.insert(key, len);
                true
            }
            Err(e) => {
                assert!(matches!(e, kumo::store::Error::Full(_)), "{e}");
                false
            }
        }
    };
    while failures < 50 {
        if !put(&store, &mut acked) {
            failures += 1;
        }
    }
    assert!(store.is_full());
    std::fs::remove_file(&ballast).unwrap();
    // About 3 MB of the 5 MB freed.
    for _ in 0..100 {
        assert!(
            put(&store, &mut acked),
            "a write failed after space came back"
        );
    }
    assert!(!store.is_full());
    store.close();
    drop(store);
    let store = Store::open(&path, options).unwrap();
    for (k, len) in &acked {
        let got = store.get(k.as_bytes()).unwrap();
        assert_eq!(
            got.map(|r| r.data.len()),
            Some(*len),
            "{k} lost or wrong after reopen"
        );
    }
}

/// The server's mix of writes (read-modify-write, newer-wins, deletes) from several
/// threads while compaction runs and fails for want of space, on a file system
/// that fills, is freed and fills again: after a clean close every write the store
/// acknowledged is there, deletes stay deleted, and the last write is not cut.
#[test]
fn the_server_write_mix_on_a_full_disk_keeps_every_acknowledged_write() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the_server_write_mix_...: not root, cannot mount a tmpfs; not run");
        return;
    }
    use kumo::store::{Kind, Options, Record, Store};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    const ROUNDS: u64 = 3;
    const WRITERS: u64 = 3;
    const KEYS_PER_WRITER: u64 = 40;
    // What the ballast leaves of the 8 MB tmpfs: about three times the live data.
    const ROOM: usize = 3 << 19;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("fs");
        let _m = Tmpfs::mount(&at, TMPFS).expect("mount a tmpfs");
        let ballast = at.join("ballast");
        std::fs::write(&ballast, vec![0u8; (8 << 20) - ROOM]).unwrap();
        let path = at.join("db");
        let options = Options {
            segment_size: 64 << 10,
            compact_min_bytes: 1,
            compact_ratio_percent: 30,
            tombstone_min_age: Duration::ZERO,
            tombstone_max_age: Duration::ZERO,
            ..Options::default()
        };
        let store = Store::open(&path, options.clone()).unwrap();
        // Per key, what its last acknowledged write left: Some(value length) or
        // None for a delete. Each writer owns its keys, so its order is the order.
        let model = Arc::new(Mutex::new(HashMap::<Vec<u8>, Option<usize>>::new()));
        let last = Arc::new(Mutex::new(None::<Vec<u8>>));
        let counter = Arc::new(AtomicU64::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let compactor = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = store.compact(secs + 10, true);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let phase = |ops: u64| {
            let writers: Vec<_> = (0..WRITERS)
                .map(|t| {
                    let (store, model, last, counter) =
                        (store.clone(), model.clone(), last.clone(), counter.clone());
                    std::thread::spawn(move || {
                        let mut full = 0;
                        for j in 0..ops {
                            let n = counter.fetch_add(1, Ordering::Relaxed);
                            let key =
                                format!("w{t}-k{}", (j * 7 + round) % KEYS_PER_WRITER).into_bytes();
                            let clock = (secs << 32) | n;
                            let len = 50 + (n as usize * 7919) % 9000;
                            let value = Record::value(clock, 0, 0, vec![b'x'; len]);
                            let done = match n % 5 {
                                0 => store.delete(&key, clock).map(|_| None),
                                1 => store.update(&key, &value).map(|_| Some(len)),
                                _ => store
                                    .modify(&key, |_| Some(value.clone()))
                                    .map(|_| Some(len)),
                            };
                            match done {
                                Ok(v) => {
                                    model.lock().unwrap().insert(key.clone(), v);
                                    *last.lock().unwrap() = Some(key);
                                }
                                Err(e) => {
                                    assert!(matches!(e, kumo::store::Error::Full(_)), "{e}");
                                    full += 1;
                                }
                            }
                        }
                        full
                    })
                })
                .collect();
            writers.into_iter().map(|w| w.join().unwrap()).sum::<u64>()
        };
        assert!(phase(3000) > 0, "round {round}: the disk never filled");
        std::fs::remove_file(&ballast).unwrap();
        phase(300);
        stop.store(true, Ordering::Relaxed);
        compactor.join().unwrap();
        store.close();
        drop(store);
        let store = Store::open(&path, options).unwrap();
        let report = store.open_report();
        assert_eq!(
            (report.torn_tail_bytes, report.damaged_records),
            (0, 0),
            "round {round}: a failed write left bytes behind: {report:?}"
        );
        for (key, want) in model.lock().unwrap().iter() {
            let k = String::from_utf8_lossy(key);
            let got = store.get(key).unwrap();
            match (want, &got) {
                (Some(len), Some(r)) if r.kind == Kind::Value && r.data.len() == *len => {}
                (None, None) => {}
                (None, Some(r)) if r.kind == Kind::Tombstone => {}
                _ => panic!(
                    "round {round}: {k}: acknowledged {want:?}, reopened as {:?}",
                    got.map(|r| (r.kind, r.data.len()))
                ),
            }
        }
        let last = last
            .lock()
            .unwrap()
            .clone()
            .expect("nothing was acknowledged");
        assert!(
            model.lock().unwrap().contains_key(&last),
            "the last acknowledged key is not in the model"
        );
    }
}

/// A hint that cannot be written because the disk is full leaves no temporary
/// file behind: one would keep the space it took after the space is freed, and
/// survive every restart.
#[test]
fn a_hint_that_fails_on_a_full_disk_leaves_no_temporary_file() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("a_hint_that_fails_...: not root, cannot mount a tmpfs; not run");
        return;
    }
    use kumo::store::{Error, Options, Record, Store, SyncPolicy};
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("fs");
    let _m = Tmpfs::mount(&at, TMPFS).expect("mount a tmpfs");
    let path = at.join("db");
    let options = Options {
        sync: SyncPolicy::None,
        segment_size: 64 << 10,
        ..Options::default()
    };
    let store = Store::open(&path, options.clone()).unwrap();
    let value = |b: u8| Record::value(1 << 32, 0, 0, vec![b; 40 << 10]);
    store.put(b"first", &value(b'a')).unwrap();
    let ballast = at.join("ballast");
    fill_to_the_brim(&ballast);
    // It does not fit the first segment: the store seals it, and its hint finds no space.
    let e = store.put(b"second", &value(b'b')).unwrap_err();
    assert!(matches!(e, Error::Full(_)), "{e}");
    std::fs::remove_file(&ballast).unwrap();
    store.put(b"second", &value(b'b')).unwrap();
    store.close();
    drop(store);
    let temporaries: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(temporaries.is_empty(), "left behind: {temporaries:?}");
    let store = Store::open(&path, options).unwrap();
    assert_eq!(store.get(b"first").unwrap().unwrap().data, value(b'a').data);
    assert_eq!(
        store.get(b"second").unwrap().unwrap().data,
        value(b'b').data
    );
}

/// The reported case: `kumo local` with every store on one small disk, which fills
/// and is freed; then a clean stop (Ctrl-C) and a start. Every write acknowledged
/// before, during and after the full disk is read back, the last one included.
#[test]
fn kumo_local_keeps_every_acknowledged_write_across_a_full_disk_and_a_restart() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("kumo_local_...: not root, cannot mount a tmpfs; not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "12m").expect("mount a tmpfs");
    let local = common::Local::new(&dir.path().join("disk/data"));
    let run = local.start();
    let stream = std::net::TcpStream::connect(local.text).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut conn = (stream.try_clone().unwrap(), BufReader::new(stream));
    let mut acked = Vec::new();
    let mut refused = 0;
    let mut write = |conn: &mut _, from: usize, n: usize| {
        for i in from..from + n {
            let key = format!("k{i}");
            let value = format!("{i}-").repeat(100).into_bytes();
            match raw_set(conn, &key, &value).0.as_str() {
                "STORED" => acked.push((key, value)),
                "SERVER_ERROR out of memory storing object" => refused += 1,
                other => panic!("{key}: {other}"),
            }
        }
    };
    write(&mut conn, 0, 200);
    disk.fill();
    // Enough to use up the space the segments had taken ahead.
    write(&mut conn, 200, 3000);
    disk.free();
    write(&mut conn, 3200, 200);
    assert!(refused > 0, "the disk never filled");
    local.stop(run);
    let _run = local.start();
    let client = common::client(local.text);
    for (key, value) in &acked {
        let got: Option<Vec<u8>> = client.get(key).unwrap();
        assert_eq!(got.as_deref(), Some(&value[..]), "{key} lost");
    }
}
