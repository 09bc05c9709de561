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

/// Tokyo Cabinet's own test of random puts and gets: `tchtest write -rnd` puts `n`
/// keys drawn at random from 1..=n (so it holds about 63% of n distinct records),
/// and `tchtest read -rnd` then gets as many random keys as it holds records. Each
/// rate is the operations tchtest did over the time it printed.
fn tchtest(n: u64, dir: &std::path::Path) -> Option<(f64, f64, u64)> {
    std::process::Command::new("tchtest").output().ok()?;
    let path = dir.join("tc.tch");
    let run = |mode: &str| -> Option<(f64, u64)> {
        let mut args = vec![mode.to_string(), "-rnd".into(), path.to_str()?.to_string()];
        if mode == "write" {
            args.push(n.to_string());
        }
        let out = std::process::Command::new("tchtest")
            .args(&args)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // A field is a line of its own, `name: value`, after the progress dots
        // tchtest prints without a newline ("sys_utime:" is another field).
        let field = |name: &str| {
            text.lines().find_map(|l| {
                l.trim_start_matches('.')
                    .strip_prefix(name)
                    .map(|v| v.trim().to_string())
            })
        };
        let records: u64 = field("record number:")?.parse().ok()?;
        let secs: f64 = field("time:")?.parse().ok()?;
        let ops = if mode == "write" { n } else { records };
        Some((ops as f64 / secs, records))
    };
    let (w, records) = run("write")?;
    let (r, _) = run("read")?;
    Some((w, r, records))
}

/// The same work as `tchtest write -rnd` and `read -rnd` (see [`tchtest`]), on a
/// kumo store: `n` puts of 8-digit keys drawn at random from 1..=n with the key as
/// the value, then as many random gets over 1..=records as the store holds
/// records, misses included. Returns the put and get rates and the record count.
fn tc_shaped(n: u64, path: &std::path::Path, options: Options) -> (f64, f64, u64) {
    let store = Store::open(path, options).expect("open");
    let mut s = 0x2545_f491_4f6c_dd1d_u64;
    let mut draw = |range: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % range + 1
    };
    let t = Instant::now();
    for c in 0..n {
        let k = format!("{:08}", draw(n));
        store
            .put(
                k.as_bytes(),
                &Record::value(c + 1, 0, 0, k.clone().into_bytes()),
            )
            .expect("put");
    }
    let put = n as f64 / t.elapsed().as_secs_f64();
    let records = store.items(kumo::time::unix_now());
    let t = Instant::now();
    let mut found = 0u64;
    for _ in 0..records {
        let k = format!("{:08}", draw(records));
        found += store.get(k.as_bytes()).expect("get").is_some() as u64;
    }
    let get = records as f64 / t.elapsed().as_secs_f64();
    assert!(found > 0 && found < records, "{found} of {records} found");
    (put, get, records)
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile_dir();
    let path = dir.join("store");
    // A server's default: fsynced once a second.
    let options = Options::default();
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
    let (snapshot_ms, write_wait_ms) = snapshot_beside_a_writer(&store, n);
    drop(store);

    println!("store-bench: {n} keys, 16-byte keys, 100-byte values");
    println!("  random put  {put:>10.0} ops/s");
    println!("  random get  {get:>10.0} ops/s");
    println!("  update      {update:>10.0} ops/s");
    println!("  index       {per_key:>10.1} bytes/key plus the key");
    println!("  reopen      {reopen_ms:>10} ms");
    println!("  item count  {items_us:>10} us (a walk of the index: {walk_us} us)");
    println!(
        "  snapshot    {snapshot_ms:>10} ms (a replace's first step); the longest write meanwhile {write_wait_ms:.1} ms"
    );
    let (tcp, tcg) = match tchtest(n, &dir) {
        Some((w, r, records)) => {
            let (kp, kg, ours) = tc_shaped(n, &dir.join("tc-shaped"), Options::default());
            println!(
                "  tchtest     write {w:.0}/s read {r:.0}/s ({records} records of 8-byte keys and values)"
            );
            println!(
                "  same work   put {kp:.0}/s get {kg:.0}/s ({ours} records): {:.2}x and {:.2}x Tokyo Cabinet",
                kp / w,
                kg / r
            );
            (format!("{:.2}", kp / w), format!("{:.2}", kg / r))
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

/// Takes a snapshot (what a replace reads) while another thread writes new keys,
/// as a server keeps serving during a replace. Returns the snapshot's milliseconds
/// and the longest single write meanwhile, in milliseconds.
fn snapshot_beside_a_writer(store: &Store, n: u64) -> (u128, f64) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let value = vec![b'w'; 100];
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut longest = std::time::Duration::ZERO;
            let mut i = n;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                store
                    .put(
                        &key(i),
                        &Record::value(u64::MAX / 2 + i, 0, 0, value.clone()),
                    )
                    .expect("put");
                longest = longest.max(t.elapsed());
                i += 1;
            }
            longest
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        let t = Instant::now();
        let snapshot = store.snapshot();
        let ms = t.elapsed().as_millis();
        assert!(snapshot.len() as u64 >= n);
        std::thread::sleep(std::time::Duration::from_millis(20));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let longest = writer.join().expect("writer");
        (ms, longest.as_secs_f64() * 1e3)
    })
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
