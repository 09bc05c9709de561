//! A full disk (issue #18, part 3): a server's store on a small tmpfs fills up.
//! Writes that reach it are answered at once with memcached's words for a store
//! it cannot keep, never with a file path and never after twenty retries; reads
//! and deletes keep working; writes resume by themselves once space is freed;
//! nothing acknowledged is lost.
//!
//! Mounting a tmpfs needs root (CI runs as root); elsewhere the test says so and
//! passes without running.

mod common;

use common::{rpc, wait_until, Cluster};
use rmpv::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Size of the tmpfs under server 0's store.
const TMPFS: &str = "8m";
/// A file that takes most of it, removed to free space.
const BALLAST: usize = 5 << 20;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Sends one text-protocol set and returns the reply line and how long it took.
fn raw_set(
    conn: &mut (std::net::TcpStream, BufReader<std::net::TcpStream>),
    key: &str,
    value: &[u8],
) -> (String, Duration) {
    let t = Instant::now();
    conn.0
        .write_all(format!("set {key} 0 0 {}\r\n", value.len()).as_bytes())
        .unwrap();
    conn.0.write_all(value).unwrap();
    conn.0.write_all(b"\r\n").unwrap();
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
            let m = Tmpfs::mount(store).expect("mount a tmpfs");
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
    let _m = Tmpfs::mount(&at).expect("mount a tmpfs");
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
