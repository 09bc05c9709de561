//! store_bench: the store alone, at 1M keys of 16 bytes and values of 100 bytes.
//! Prints random put, random get and update throughput, the index bytes per key, and
//! the time to reopen; beside Tokyo Cabinet's `tchtest` (the store kumofs used) when
//! Debian's tokyocabinet-bin is installed.
//!
//! Usage: cargo run --release --example store_bench [KEYS]

use kumo::store::{Options, Record, Store, SyncPolicy};
use std::time::Instant;

fn key(i: u64) -> [u8; 16] {
    // Spread keys like kumo's hashed keys do.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&h.to_le_bytes());
    k[8..].copy_from_slice(&i.to_le_bytes());
    k
}

fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut s = seed | 1;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

fn tchtest(n: u64, dir: &std::path::Path) -> Option<(f64, f64)> {
    std::process::Command::new("tchtest").output().ok()?;
    let path = dir.join("tc.tch");
    let run = |mode: &str| -> Option<f64> {
        let t = Instant::now();
        let mut args = vec![mode.to_string(), "-rnd".into(), path.to_str()?.to_string()];
        if mode == "write" {
            args.push(n.to_string());
        }
        let ok = std::process::Command::new("tchtest")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .status()
            .ok()?
            .success();
        ok.then(|| n as f64 / t.elapsed().as_secs_f64())
    };
    let w = run("write")?;
    let r = run("read")?;
    Some((w, r))
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile_dir();
    let path = dir.join("store");
    let options = Options {
        sync: SyncPolicy::Interval(std::time::Duration::from_millis(1000)),
        ..Options::default()
    };
    let store = Store::open(&path, options.clone()).expect("open");
    let value = vec![b'v'; 100];

    let order = shuffled(n, 42);
    let t = Instant::now();
    for (c, &i) in order.iter().enumerate() {
        store
            .put(&key(i), &Record::value(c as u64 + 1, 0, 0, value.clone()))
            .expect("put");
    }
    let put = n as f64 / t.elapsed().as_secs_f64();

    let order = shuffled(n, 7);
    let t = Instant::now();
    for &i in &order {
        let r = store.get(&key(i)).expect("get").expect("present");
        assert_eq!(r.data.len(), 100);
    }
    let get = n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    for &i in &order {
        store
            .update(&key(i), &Record::value(u64::MAX - i, 0, 0, value.clone()))
            .expect("update");
    }
    let update = n as f64 / t.elapsed().as_secs_f64();

    // What a `stats` poll costs a server: the item count, from the segments'
    // counts, against a walk of the whole index.
    let t = Instant::now();
    assert_eq!(store.items(kumo::time::unix_now()), n);
    let items_us = t.elapsed().as_micros();
    let t = Instant::now();
    let st = store.stats(kumo::time::unix_now());
    let walk_us = t.elapsed().as_micros();
    let per_key = (st.index_bytes - st.index_key_bytes) as f64 / n as f64;
    drop(store);
    let t = Instant::now();
    let store = Store::open(&path, options).expect("reopen");
    let reopen_ms = t.elapsed().as_millis();
    assert_eq!(store.stats(kumo::time::unix_now()).items, n);
    drop(store);

    println!("store-bench: {n} keys, 16-byte keys, 100-byte values");
    println!("  random put  {put:>10.0} ops/s");
    println!("  random get  {get:>10.0} ops/s");
    println!("  update      {update:>10.0} ops/s");
    println!("  index       {per_key:>10.1} bytes/key plus the key");
    println!("  reopen      {reopen_ms:>10} ms");
    println!("  item count  {items_us:>10} us (a walk of the index: {walk_us} us)");
    let (tcp, tcg) = match tchtest(n, &dir) {
        Some((w, r)) => {
            println!("  tchtest     write {w:.0}/s read {r:.0}/s");
            (format!("{:.2}", put / w), format!("{:.2}", get / r))
        }
        None => {
            println!("  tchtest     not installed (apt-get install tokyocabinet-bin)");
            ("-".into(), "-".into())
        }
    };
    let (compact_ms, compact_anon_mib) = compaction(&dir.join("compact"));
    println!(
        "  compaction  {compact_ms:>10} ms for a full 256 MiB segment 60% dead; anonymous memory peak +{compact_anon_mib:.1} MiB"
    );
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "store-bench: put {put:.0}/s get {get:.0}/s index {per_key:.0} B/key reopen {reopen_ms} ms tc-put-ratio {tcp} tc-get-ratio {tcg}"
    );
}

/// Fills a store past one default segment with 1 KB values, overwrites 60% of
/// them, and compacts the sealed segment, sampling the process's anonymous memory
/// (not the page cache a map reads through) every millisecond meanwhile. Returns
/// the compaction's milliseconds and its peak anonymous memory over the start, MiB.
fn compaction(path: &std::path::Path) -> (u128, f64) {
    let options = Options {
        sync: SyncPolicy::None,
        ..Options::default()
    };
    let store = Store::open(path, options).expect("open");
    let value = vec![b'c'; 1000];
    let keys = (options_segment_bytes() * 11 / 10 / 1024) as u64;
    for i in 0..keys {
        store
            .put(&key(i), &Record::value(i + 1, 0, 0, value.clone()))
            .expect("put");
    }
    for i in (0..keys).filter(|i| i % 10 < 6) {
        store
            .put(&key(i), &Record::value(keys + i + 1, 0, 0, value.clone()))
            .expect("overwrite");
    }
    let anon_kib = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("RssAnon:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let base = anon_kib();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (ms, peak) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(anon_kib());
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            peak
        });
        let t = Instant::now();
        let n = store
            .compact(kumo::time::unix_now() as u64, false)
            .expect("compact");
        let ms = t.elapsed().as_millis();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(n >= 1, "nothing was compacted");
        (ms, sampler.join().expect("sampler"))
    });
    drop(store);
    (ms, peak.saturating_sub(base) as f64 / 1024.0)
}

fn options_segment_bytes() -> u64 {
    Options::default().segment_size
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kumo-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
