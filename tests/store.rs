//! The store against a model, through crashes, and through damaged files.

use kumo::record::is_expired;
use kumo::store::{CasOutcome, Kind, Options, Reclaimed, Record, Store, SyncPolicy, RECLAIM_BATCH};
use kumo::time::unix_now;
use proptest::prelude::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// Captures log lines so tests can check that damage is reported.
struct Capture;
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        LINES
            .lock()
            .unwrap()
            .push(format!("{} {}", r.level(), r.args()));
    }
    fn flush(&self) {}
}
fn capture_logs() {
    let _ = log::set_logger(&Capture);
    log::set_max_level(log::LevelFilter::Info);
}
fn logged(fragment: &str, path: &Path) -> bool {
    let p = path.display().to_string();
    LINES
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains(fragment) && l.contains(&p))
}

fn small() -> Options {
    Options {
        sync: SyncPolicy::None,
        segment_size: 4096,
        compact_ratio_percent: 30,
        compact_min_bytes: 0,
        ..Options::default()
    }
}

/// A ClockTime for now: unix seconds high, counter low.
fn clock(counter: u32) -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (secs << 32) | counter as u64
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Update(u8, u32, u8),
    Delete(u8, u32),
    Cas(u8, bool, u8),
    Reopen,
    Compact,
    /// Reclaims what expired, and what a flush at this counter's clock hides.
    Reclaim(Option<u32>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..40, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        4 => (0u8..40, 0u32..2000, any::<u8>()).prop_map(|(k, c, v)| Op::Update(k, c, v)),
        3 => (0u8..40, 0u32..2000).prop_map(|(k, c)| Op::Delete(k, c)),
        2 => (0u8..40, any::<bool>(), any::<u8>()).prop_map(|(k, m, v)| Op::Cas(k, m, v)),
        1 => Just(Op::Reopen),
        1 => Just(Op::Compact),
        1 => proptest::option::of(0u32..12_000).prop_map(Op::Reclaim),
    ]
}

/// Exptimes of every kind: never, long past, far ahead.
fn exptime(v: u8) -> u32 {
    [0, 1, u32::MAX][v as usize % 3]
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k:03}").into_bytes()
}
fn value(v: u8, len_seed: u8) -> Vec<u8> {
    vec![v; 20 + len_seed as usize * 3]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_a_hashmap_model(ops in proptest::collection::vec(op(), 1..250)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), small()).unwrap();
        let mut model: HashMap<Vec<u8>, Record> = HashMap::new();
        // Coordinator writes draw clocks above every replica clock used here.
        let mut counter = 10_000u32;
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    counter += 1;
                    let r = Record::value(clock(counter), v as u32, exptime(v), value(v, k));
                    store.put(&key(k), &r).unwrap();
                    model.insert(key(k), r);
                }
                Op::Update(k, c, v) => {
                    let r = Record::value(clock(c), 0, 7, value(v, k));
                    let newer = model.get(&key(k)).is_none_or(|m| m.clock < r.clock);
                    prop_assert_eq!(store.update(&key(k), &r).unwrap(), newer);
                    if newer { model.insert(key(k), r); }
                }
                Op::Delete(k, c) => {
                    let t = Record::tombstone(clock(c));
                    let cur = model.get(&key(k)).cloned();
                    let had_value = cur.as_ref().is_some_and(|m| m.is_value());
                    let got = store.delete(&key(k), t.clock).unwrap();
                    if cur.as_ref().is_none_or(|m| m.clock < t.clock) {
                        prop_assert_eq!(got, had_value);
                        model.insert(key(k), t);
                    }
                }
                Op::Cas(k, matching, v) => {
                    counter += 1;
                    let cur = model.get(&key(k)).cloned();
                    let expected = match (&cur, matching) {
                        (Some(m), true) => m.clock,
                        _ => 12345,
                    };
                    let r = Record::value(clock(counter), 1, 0, value(v, k));
                    let want = match &cur {
                        Some(m) if m.is_value() && m.clock == expected => CasOutcome::Stored,
                        Some(m) if m.is_value() => CasOutcome::Exists,
                        _ => CasOutcome::NotFound,
                    };
                    prop_assert_eq!(store.cas(&key(k), expected, &r).unwrap(), want);
                    if want == CasOutcome::Stored { model.insert(key(k), r); }
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open(dir.path(), small()).unwrap();
                }
                Op::Compact => {
                    store.compact(now_secs(), true).unwrap();
                }
                Op::Reclaim(point) => {
                    let now = unix_now();
                    let point = point.map(clock);
                    let flushed = |c: u64| point.is_some_and(|p| c < p);
                    let expected = Reclaimed {
                        expired: model
                            .values()
                            .filter(|r| r.is_value() && !flushed(r.clock) && is_expired(r.exptime, now))
                            .count(),
                        flushed: model.values().filter(|r| r.is_value() && flushed(r.clock)).count(),
                    };
                    prop_assert_eq!(store.reclaim_expired(now, flushed, RECLAIM_BATCH).unwrap(), expected);
                    model.retain(|_, r| !(r.is_value() && flushed(r.clock)));
                    for r in model.values_mut() {
                        if r.is_value() && is_expired(r.exptime, now) {
                            *r = Record::tombstone(r.clock);
                        }
                    }
                }
            }
        }
        drop(store);
        let store = Store::open(dir.path(), small()).unwrap();
        for k in 0..40u8 {
            prop_assert_eq!(store.get(&key(k)).unwrap(), model.get(&key(k)).cloned(), "key {}", k);
        }
        let now = unix_now();
        let live = |r: &&Record| r.is_value() && !is_expired(r.exptime, now);
        let items = model.values().filter(live).count() as u64;
        let expired = model.values().filter(|r| r.is_value()).count() as u64 - items;
        let stats = store.stats(now);
        prop_assert_eq!((stats.items, stats.expired), (items, expired));
        prop_assert_eq!(store.items(now), items);
        let mut seen = 0;
        for item in store.snapshot() {
            let (k, r) = item.unwrap();
            prop_assert_eq!(model.get(&k), Some(&r));
            seen += 1;
        }
        prop_assert_eq!(seen, model.len());
    }
}

#[test]
fn compaction_reclaims_space_and_collects_old_tombstones_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        tombstone_max_age: Duration::from_secs(0),
        ..small()
    };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    for round in 0..5u32 {
        for k in 0..50u8 {
            store
                .put(
                    &key(k),
                    &Record::value(clock(round * 100 + k as u32), 0, 0, value(k, round as u8)),
                )
                .unwrap();
        }
    }
    for k in 0..25u8 {
        assert!(store.delete(&key(k), clock(1000 + k as u32)).unwrap());
    }
    // Filler seals the segment holding the tombstones; only sealed segments compact.
    for k in 100..160u8 {
        store
            .put(
                &key(k),
                &Record::value(clock(2000 + k as u32), 0, 0, value(k, 0)),
            )
            .unwrap();
    }
    let before = store.stats(unix_now());
    assert!(before.dead_bytes > before.live_bytes);
    // A reader runs throughout compaction and must always see a whole value.
    let reader = {
        let s = store.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                for k in 25..50u8 {
                    let r = s.get(&key(k)).unwrap().unwrap();
                    assert_eq!(r.data, value(k, 4));
                }
            }
        })
    };
    // Tombstones are collected once they reach the oldest segment; a few passes
    // walk them there.
    for _ in 0..20 {
        store.compact(now_secs() + 10, true).unwrap();
    }
    reader.join().unwrap();
    let after = store.stats(unix_now());
    assert!(
        after.dead_bytes < before.dead_bytes / 4,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.items, 25 + 60);
    assert_eq!(after.tombstones, 0, "old tombstones were not collected");
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    for k in 0..25u8 {
        assert_eq!(
            store.get(&key(k)).unwrap(),
            None,
            "deleted key {k} came back"
        );
    }
    for k in 25..50u8 {
        assert_eq!(store.get(&key(k)).unwrap().unwrap().data, value(k, 4));
    }
}

#[test]
fn young_tombstones_survive_compaction_and_reopen() {
    // Every version is stamped in one fixed second, so that the "older" write below
    // is older whatever the wall clock does meanwhile (it used to be stamped with
    // the next second when the clock ticked during the test).
    let t0 = now_secs();
    let at = |counter: u32| (t0 << 32) | counter as u64;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    for k in 0..60u8 {
        store
            .put(&key(k), &Record::value(at(k as u32), 0, 0, value(k, 9)))
            .unwrap();
    }
    for k in 0..60u8 {
        store.delete(&key(k), at(500 + k as u32)).unwrap();
    }
    for _ in 0..10 {
        store.compact(t0, true).unwrap();
    }
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    assert_eq!(store.stats(unix_now()).tombstones, 60);
    // A replica write older than the delete must still lose.
    assert!(!store
        .update(&key(3), &Record::value(at(100), 0, 0, b"stale".to_vec()))
        .unwrap());
    assert_eq!(store.get(&key(3)).unwrap().unwrap().kind, Kind::Tombstone);
}

/// A store at `dir/db` holding keys 0..100, each with `value(k, 1)`.
fn hundred_keys_in(dir: &Path) -> Store {
    let store = Store::open(&dir.join("db"), small()).unwrap();
    for k in 0..100u8 {
        store
            .put(&key(k), &Record::value(clock(k as u32), 0, 0, value(k, 1)))
            .unwrap();
    }
    store
}

#[test]
fn backup_is_a_consistent_copy_taken_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let store = hundred_keys_in(dir.path());
    let b = store.backup("20261126").unwrap();
    assert_eq!(b, dir.path().join("db-20261126"));
    // Writes after the backup do not leak into it.
    store
        .put(&key(0), &Record::value(clock(999), 0, 0, b"after".to_vec()))
        .unwrap();
    let copy = Store::open(&b, small()).unwrap();
    assert_eq!(copy.stats(unix_now()).items, 100);
    assert_eq!(copy.get(&key(0)).unwrap().unwrap().data, value(0, 1));
    assert!(store.backup("a/b").is_err());
}

/// Backups taken while compaction rewrites and deletes segments under a writing
/// load: each one opens, and holds every key with one of the values it had.
#[test]
fn backups_during_compaction_are_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = hundred_keys_in(dir.path());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 1000u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for k in 0..100u8 {
                    n += 1;
                    store
                        .put(
                            &key(k),
                            &Record::value(clock(n), 0, 0, value(k, (n % 7) as u8)),
                        )
                        .unwrap();
                }
                store.compact(now_secs(), true).unwrap();
            }
        })
    };
    for round in 0..20 {
        let b = store.backup(&format!("r{round}")).unwrap();
        let copy = Store::open(&b, small()).unwrap();
        assert_eq!(copy.stats(unix_now()).items, 100, "backup {round}");
        for k in 0..100u8 {
            let got = copy.get(&key(k)).unwrap().unwrap().data;
            assert!(
                (0..7).any(|s| got == value(k, s)) || got == value(k, 1),
                "backup {round}: key {k} holds something never written"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn unknown_store_options_are_errors_and_tc_options_are_accepted() {
    let mut o = Options::default();
    let e = o.apply(&[("syncc".into(), "none".into())]).unwrap_err();
    assert!(e.starts_with("unknown store option 'syncc'"), "{e}");
    assert!(o.apply(&[("sync".into(), "sometimes".into())]).is_err());
    o.apply(&[
        ("xmsiz".into(), "600m".into()),
        ("rcnum".into(), "4k".into()),
    ])
    .unwrap();
    o.apply(&[
        ("sync".into(), "interval".into()),
        ("sync_ms".into(), "250".into()),
    ])
    .unwrap();
    assert_eq!(o.sync, SyncPolicy::Interval(Duration::from_millis(250)));
    o.apply(&[("segment_size".into(), "64m".into())]).unwrap();
    assert_eq!(o.segment_size, 64 << 20);
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "data"))
        .collect();
    v.sort();
    v
}

fn fill(dir: &Path, n: u8) {
    let store = Store::open(dir, small()).unwrap();
    for k in 0..n {
        store
            .put(&key(k), &Record::value(clock(k as u32), 0, 0, value(k, 5)))
            .unwrap();
    }
}

#[test]
fn a_flipped_byte_mid_segment_is_reported_and_never_served() {
    capture_logs();
    for with_hint in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), 100);
        let first = segments(dir.path())[0].clone();
        if !with_hint {
            std::fs::remove_file(first.with_extension("hint")).unwrap();
        }
        let mut bytes = std::fs::read(&first).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&first, &bytes).unwrap();
        let store = Store::open(dir.path(), small()).unwrap();
        let mut bad = 0;
        for k in 0..100u8 {
            match store.get(&key(k)) {
                Ok(Some(r)) => assert_eq!(r.data, value(k, 5), "wrong data served for key {k}"),
                Ok(None) => bad += 1,
                Err(e) => {
                    assert!(e.to_string().contains("damaged"), "{e}");
                    bad += 1
                }
            }
        }
        assert_eq!(
            bad, 1,
            "exactly the damaged record is unavailable (hint: {with_hint})"
        );
        if with_hint {
            assert!(
                logged("damaged record", &first),
                "no log line for the damage"
            );
        } else {
            assert_eq!(store.open_report().damaged_records, 1);
            assert!(logged("skipped", &first), "no log line for the damage");
        }
    }
}

/// A key whose newest record is damaged is not served, and the next write of it
/// supersedes the damage (it used to fail for ever, since every write of a key
/// reads its current record first).
#[test]
fn a_damaged_newest_record_is_superseded_by_the_next_write() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    let marker = b"damage-me-damage-me".to_vec();
    store
        .put(b"k", &Record::value(clock(1), 0, 0, marker.clone()))
        .unwrap();
    store
        .put(b"other", &Record::value(clock(2), 0, 0, b"fine".to_vec()))
        .unwrap();
    store.sync();
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_slice())
        .unwrap();
    bytes[at + 3] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let e = store.get(b"k").unwrap_err();
    assert!(e.to_string().contains("damaged"), "{e}");
    // An incr-like write sees the key as absent; a set stores.
    let out = store.modify(b"k", |cur| {
        assert!(cur.is_none(), "the damaged record was handed to the writer");
        Some(Record::value(clock(3), 0, 0, b"fresh".to_vec()))
    });
    assert!(
        matches!(out, Ok(kumo::store::Modified::Written(_))),
        "{out:?}"
    );
    assert!(logged("superseding it", &seg), "the damage was not logged");
    assert_eq!(store.get(b"k").unwrap().unwrap().data, b"fresh");
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    assert_eq!(store.get(b"k").unwrap().unwrap().data, b"fresh");
    assert_eq!(store.get(b"other").unwrap().unwrap().data, b"fine");
}

#[test]
fn a_truncated_tail_is_cut_with_a_log_line_and_writes_continue() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 30);
    let last = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    let r = store.open_report();
    assert!(r.torn_tail_bytes > 0 && r.torn_tail_bytes < 200, "{r:?}");
    assert!(logged("cut", &last) && logged("torn tail", &last));
    let present = (0..30u8)
        .filter(|k| store.get(&key(*k)).unwrap().is_some())
        .count();
    assert_eq!(present, 29, "only the torn record is lost");
    store
        .put(&key(200), &Record::value(clock(1), 0, 0, b"after".to_vec()))
        .unwrap();
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    assert_eq!(store.get(&key(200)).unwrap().unwrap().data, b"after");
    assert_eq!(store.open_report().torn_tail_bytes, 0);
}

#[test]
fn a_damaged_hint_is_ignored_with_a_warning() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 100);
    let hint = segments(dir.path())[0].with_extension("hint");
    let mut bytes = std::fs::read(&hint).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&hint, &bytes).unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    assert!(logged("ignoring the hint", &hint));
    for k in 0..100u8 {
        assert_eq!(store.get(&key(k)).unwrap().unwrap().data, value(k, 5));
    }
}

#[test]
fn a_stale_lock_is_reclaimed_and_a_live_one_refuses() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("LOCK"), "999999").unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    assert!(LINES
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("stale lock") && l.contains("999999")));
    let e = Store::open(dir.path(), small()).err().unwrap();
    assert!(
        e.contains(&format!("in use by process {}", std::process::id())),
        "{e}"
    );
    drop(store);
}

/// The child half of the crash test: writes keys forever, printing each one after
/// `put` returned. Runs only when the parent sets KUMO_CRASH_DIR.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("KUMO_CRASH_DIR") else {
        return;
    };
    let round: u32 = std::env::var("KUMO_CRASH_ROUND").unwrap().parse().unwrap();
    let opts = Options {
        segment_size: 64 << 10,
        ..small()
    };
    let store = Store::open(Path::new(&dir), opts).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0u32.. {
        let k = format!("r{round}-k{i}");
        let v = format!("value-{round}-{i}-").repeat(1 + i as usize % 7);
        store
            .put(k.as_bytes(), &Record::value(clock(i), i, 0, v.into_bytes()))
            .unwrap();
        use std::io::Write;
        writeln!(out, "{k}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    const ROUNDS: u32 = 50;
    for round in 0..ROUNDS {
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env("KUMO_CRASH_DIR", dir.path())
            .env("KUMO_CRASH_ROUND", round.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wanted = 50 + (seed % 400) as usize;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut got = 0;
        while got < wanted {
            match lines.next() {
                Some(Ok(l)) if l.starts_with(&format!("r{round}-k")) => {
                    let i: usize = l.rsplit('k').next().unwrap().parse().unwrap();
                    acked.push((l, format!("value-{round}-{i}-").repeat(1 + i % 7)));
                    got += 1;
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        child.kill().unwrap();
        // Keys acknowledged after our last read are in flight; they may or may not be
        // there, but never corrupt.
        child.wait().unwrap();
        assert!(
            got >= 50,
            "round {round}: child stopped early after {got} keys"
        );
        let store = Store::open(
            dir.path(),
            Options {
                segment_size: 64 << 10,
                ..small()
            },
        )
        .unwrap();
        for (k, v) in &acked {
            let r = store
                .get(k.as_bytes())
                .unwrap_or_else(|e| panic!("round {round}: {k}: {e}"));
            assert_eq!(
                r.map(|r| r.data),
                Some(v.clone().into_bytes()),
                "round {round}: {k}"
            );
        }
        for item in store.snapshot() {
            item.expect("a damaged record was served after a crash");
        }
    }
}

/// What a failed or torn append can leave: the first part of a record. It must
/// not cost a later record, whether the store is still open (the next write takes
/// its place) or reopens with an intact record after it (the scan resumes there),
/// and the reopened store keeps appending after the last intact record.
#[test]
fn a_half_written_record_never_costs_a_later_one() {
    use kumo::store::record;
    use std::io::Write;
    capture_logs();
    let rec = |n: u32, len: usize| Record::value(clock(n), 0, 0, vec![b'a' + n as u8; len]);
    let encode = |key: &[u8], r: &Record| {
        let mut buf = Vec::new();
        record::encode(&mut buf, key, r);
        buf
    };
    // On disk: an intact record, the first half of one, another intact record.
    let dir = tempfile::tempdir().unwrap();
    let half = encode(b"half", &rec(2, 300));
    let mut bytes = encode(b"before", &rec(1, 200));
    bytes.extend_from_slice(&half[..half.len() / 2]);
    bytes.extend_from_slice(&encode(b"after", &rec(3, 100)));
    let seg = dir.path().join("000000001.data");
    std::fs::write(&seg, &bytes).unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    assert_eq!(store.open_report().damaged_records, 1);
    assert_eq!(store.get(b"before").unwrap().unwrap(), rec(1, 200));
    assert_eq!(store.get(b"after").unwrap().unwrap(), rec(3, 100));
    assert_eq!(store.get(b"half").unwrap(), None);
    store.put(b"later", &rec(4, 50)).unwrap();
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    for (k, r) in [
        (&b"before"[..], rec(1, 200)),
        (b"after", rec(3, 100)),
        (b"later", rec(4, 50)),
    ] {
        assert_eq!(
            store.get(k).unwrap().unwrap(),
            r,
            "{}",
            String::from_utf8_lossy(k)
        );
    }
    drop(store);
    // The half at the very end, as a write cut short leaves it while the store runs:
    // the next write goes where it began, so nothing of it stays between records.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    store.put(b"before", &rec(1, 200)).unwrap();
    let seg = segments(dir.path()).pop().unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&half[..half.len() / 2])
        .unwrap();
    store.put(b"after", &rec(3, 100)).unwrap();
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    let r = store.open_report();
    // The half lies past the space the store allocated for appends, and a clean
    // close cuts the file back to its last record; a store killed instead would
    // find it as a torn tail. Either way nothing of it is between two records.
    assert_eq!(r.damaged_records, 0, "{r:?}");
    assert_eq!(store.get(b"before").unwrap().unwrap(), rec(1, 200));
    assert_eq!(store.get(b"after").unwrap().unwrap(), rec(3, 100));
}

/// Temporary hint files that a crash or an older version left are removed on
/// open; other files in the directory are not the store's to remove.
#[test]
fn leftover_hint_temporaries_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 100);
    let leftovers = ["000000001.tmp4242", "000000002.hint.tmp"];
    let others = [
        "member.tmp",
        "notes.tmp1",
        "x00000001.tmp1",
        "000000001.tmpx",
    ];
    for name in leftovers.iter().chain(&others) {
        std::fs::write(dir.path().join(name), b"partial").unwrap();
    }
    let store = Store::open(dir.path(), small()).unwrap();
    for name in leftovers {
        assert!(!dir.path().join(name).exists(), "{name} was left");
    }
    for name in others {
        assert!(dir.path().join(name).exists(), "{name} was removed");
    }
    for k in 0..100u8 {
        assert_eq!(store.get(&key(k)).unwrap().unwrap().data, value(k, 5));
    }
}

/// Far from any real time, so that counting does not depend on when the test runs.
const NOW: u32 = 1_000_000;

/// Never, at NOW (expired: memcached's rule), and a second after NOW.
fn exptime_around_now(k: u8) -> u32 {
    [0, NOW, NOW + 1][k as usize % 3]
}

#[test]
fn expired_values_are_not_items_and_the_index_keeps_exptimes_through_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    for k in 0..60u8 {
        let rec = Record::value(u64::from(k) + 1, 0, exptime_around_now(k), value(k, 30));
        store.put(&key(k), &rec).unwrap();
    }
    assert!(store.delete(&key(0), 100).unwrap());
    let check = |store: &Store| {
        assert_eq!(store.items(NOW - 1), 59, "nothing expired yet");
        assert_eq!(store.items(NOW), 39);
        assert_eq!(store.items(NOW + 1), 19);
        // From clock 31 on: keys 30..60, less the expired and the deleted.
        assert_eq!(store.items_since(31, NOW), 20);
        let st = store.stats(NOW);
        assert_eq!((st.items, st.expired, st.tombstones), (39, 20, 1));
        // Expired values are still stored until reclaimed: lazily hidden above.
        assert_eq!(store.get(&key(1)).unwrap().unwrap().exptime, NOW);
    };
    check(&store);
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    assert!(store.open_report().from_hints > 0);
    check(&store);
}

#[test]
fn reclaiming_expired_values_writes_tombstones_in_bounded_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    for k in 0..150u8 {
        let rec = Record::value(u64::from(k) + 1, 0, exptime_around_now(k), value(k, 1));
        store.put(&key(k), &rec).unwrap();
    }
    // Key 1 expired, then was set again: its newest record is not expired.
    store
        .put(&key(1), &Record::value(1_000, 0, 0, value(1, 1)))
        .unwrap();
    let before = store.stats(NOW);
    assert_eq!(before.expired, 49);
    let none = |_: u64| false;
    let mut passes = Vec::new();
    loop {
        let r = store.reclaim_expired(NOW, none, 20).unwrap();
        passes.push(r.expired);
        if r.total() < 20 {
            break;
        }
    }
    assert_eq!(passes, [20, 20, 9]);
    let after = store.stats(NOW);
    assert_eq!((after.items, after.expired), (before.items, 0));
    assert_eq!(after.tombstones, 49);
    assert!(after.dead_bytes > before.dead_bytes);
    for k in 0..150u8 {
        let got = store.get(&key(k)).unwrap().unwrap();
        match k % 3 {
            1 if k != 1 => assert_eq!(got, Record::tombstone(u64::from(k) + 1), "key {k}"),
            _ => assert!(got.is_value(), "key {k}"),
        }
    }
    assert_eq!(store.reclaim_expired(NOW, none, 20).unwrap().total(), 0);
    // A second later, the rest expire too.
    let r = store.reclaim_expired(NOW + 1, none, RECLAIM_BATCH).unwrap();
    assert_eq!(
        r,
        Reclaimed {
            expired: 50,
            flushed: 0
        }
    );
    assert_eq!(store.items(NOW + 1), 51);
}

/// The value under an expired one lives on in an older segment. The expired value
/// is reclaimed; neither a reopen, nor compaction, nor a replica offering the older
/// version (a replace, a pull) may bring that older value back.
#[test]
fn a_reclaimed_value_never_brings_back_the_one_it_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    let v1 = Record::value(1, 0, 0, b"v1".to_vec());
    store.put(b"k", &v1).unwrap();
    // Filler seals v1's segment, so that v2 lands in a later one.
    for k in 0..100u8 {
        store
            .put(
                &key(k),
                &Record::value(10 + u64::from(k), 0, 0, value(k, 5)),
            )
            .unwrap();
    }
    let v2 = Record::value(500, 0, NOW - 10, b"v2".to_vec());
    store.put(b"k", &v2).unwrap();
    assert_eq!(store.items(NOW), 100);
    let r = store
        .reclaim_expired(NOW, |_| false, RECLAIM_BATCH)
        .unwrap();
    assert_eq!(
        r,
        Reclaimed {
            expired: 1,
            flushed: 0
        }
    );
    let gone = |store: &Store, when: &str| {
        let got = store.get(b"k").unwrap();
        assert!(
            got.as_ref().is_none_or(|r| !r.is_value()),
            "{when}: {got:?}"
        );
    };
    gone(&store, "after reclaim");
    assert!(
        !store.update(b"k", &v1).unwrap(),
        "an older version was taken"
    );
    gone(&store, "after a replica offered v1");
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    gone(&store, "after reopen");
    assert_eq!(store.get(b"k").unwrap(), Some(Record::tombstone(500)));
    // Collection of tombstones walks them to the oldest segment and drops them.
    for _ in 0..20 {
        store.compact(now_secs() + 10, true).unwrap();
    }
    gone(&store, "after compaction");
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    gone(&store, "after compaction and reopen");
    assert_eq!(store.items(NOW), 100);
}

/// Values a flush hides are erased: gone on reopen, older versions included, while
/// what was written after the flush point stays.
#[test]
fn reclaiming_flushed_values_erases_them_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    let point = 1_000u64;
    store
        .put(b"k", &Record::value(1, 0, 0, b"v1".to_vec()))
        .unwrap();
    for k in 0..100u8 {
        // Keys 0..50 before the point, 50..100 after it.
        let clock = (if k < 50 { 10 } else { point }) + u64::from(k);
        store
            .put(&key(k), &Record::value(clock, 0, 0, value(k, 5)))
            .unwrap();
    }
    store
        .put(b"k", &Record::value(500, 0, 0, b"v2".to_vec()))
        .unwrap();
    assert_eq!(store.items_since(point, NOW), 50);
    let flushed = |clock: u64| clock < point;
    let r = store.reclaim_expired(NOW, flushed, RECLAIM_BATCH).unwrap();
    assert_eq!(
        r,
        Reclaimed {
            expired: 0,
            flushed: 51
        }
    );
    let check = |store: &Store| {
        assert_eq!(store.get(b"k").unwrap(), None);
        for k in 0..100u8 {
            assert_eq!(store.get(&key(k)).unwrap().is_some(), k >= 50, "key {k}");
        }
        assert_eq!(store.items(NOW), 50);
        assert_eq!(store.stats(NOW).tombstones, 0, "an erase is no tombstone");
    };
    check(&store);
    drop(store);
    let store = Store::open(dir.path(), small()).unwrap();
    check(&store);
    for _ in 0..20 {
        store.compact(now_secs(), true).unwrap();
    }
    drop(store);
    check(&Store::open(dir.path(), small()).unwrap());
}

/// Reads ask the index by hash tag only and let the record say whose it is: two
/// keys whose hashes share a tag (found by search) are each read as themselves,
/// in either order of writing, with a value, a tombstone or an erase in the way,
/// and across a reopen.
#[test]
fn keys_sharing_a_hash_tag_are_each_read_as_themselves() {
    use kumo::store::index::hash;
    let mut seen: HashMap<u32, u64> = HashMap::new();
    let (a, b) = (0u64..)
        .find_map(|i| {
            let tag = (hash(format!("tag-{i}").as_bytes()) >> 32) as u32;
            seen.insert(tag, i)
                .map(|j| (format!("tag-{j}"), format!("tag-{i}")))
        })
        .unwrap();
    assert_eq!(hash(a.as_bytes()) >> 32, hash(b.as_bytes()) >> 32);
    for (first, second) in [(&a, &b), (&b, &a)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let value = |k: &str| Record::value(10, 0, 0, k.as_bytes().to_vec());
        store.put(first.as_bytes(), &value(first)).unwrap();
        assert_eq!(store.get(second.as_bytes()).unwrap(), None);
        store.put(second.as_bytes(), &value(second)).unwrap();
        for k in [first, second] {
            assert_eq!(store.get(k.as_bytes()).unwrap().unwrap().data, k.as_bytes());
        }
        // A tombstone, then an erase, of the first: the second stays readable.
        store.put(first.as_bytes(), &Record::tombstone(11)).unwrap();
        assert_eq!(
            store.get(first.as_bytes()).unwrap().map(|r| r.kind),
            Some(Kind::Tombstone)
        );
        assert!(store.erase(first.as_bytes(), 11).unwrap());
        assert_eq!(store.get(first.as_bytes()).unwrap(), None);
        assert_eq!(
            store.get(second.as_bytes()).unwrap().unwrap().data,
            second.as_bytes()
        );
        drop(store);
        let store = Store::open(dir.path(), Options::default()).unwrap();
        assert_eq!(store.get(first.as_bytes()).unwrap(), None);
        assert_eq!(
            store.get(second.as_bytes()).unwrap().unwrap().data,
            second.as_bytes()
        );
    }
}

/// The item count a `stats` poll reads comes from the segments' counts when no
/// value can expire, and from a walk of the index when some can. Both agree with
/// the walk through random writes, tombstones, erases, expiring values, expiry
/// reclaim, compaction and reopens.
#[test]
fn the_counted_items_agree_with_a_walk_of_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_size: 4096,
        compact_min_bytes: 0,
        ..Options::default()
    };
    let mut store = Store::open(dir.path(), options.clone()).unwrap();
    let now = unix_now();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut roll = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut clock = 1u64 << 32;
    for step in 0..3000 {
        clock += 1;
        let key = format!("k{}", roll(200));
        match roll(10) {
            0..=4 => store
                .put(
                    key.as_bytes(),
                    &Record::value(clock, 0, 0, vec![b'v'; roll(300) as usize]),
                )
                .unwrap(),
            // Expiring values, some already expired.
            5 => store
                .put(
                    key.as_bytes(),
                    &Record::value(clock, 0, now - 100 + roll(200) as u32, b"e".to_vec()),
                )
                .unwrap(),
            6 => store
                .put(key.as_bytes(), &Record::tombstone(clock))
                .unwrap(),
            7 => {
                let _ = store.erase(key.as_bytes(), clock).unwrap();
            }
            8 => {
                store.reclaim_expired(now, |_| false, 1000).unwrap();
            }
            _ => {
                store.compact(u64::from(now) + 7200, true).unwrap();
            }
        }
        if step % 500 == 499 {
            drop(store);
            store = Store::open(dir.path(), options.clone()).unwrap();
        }
        let walked = store.stats(now);
        assert_eq!(store.items(now), walked.items, "step {step}");
        assert_eq!(
            store.value_counts().0,
            walked.items + walked.expired,
            "step {step}"
        );
    }
    // Once no expiring value is left, the count needs no walk and still agrees.
    for i in 0..200 {
        clock += 1;
        store
            .put(
                format!("k{i}").as_bytes(),
                &Record::value(clock, 0, 0, b"v".to_vec()),
            )
            .unwrap();
    }
    assert_eq!(store.value_counts(), (200, 0));
    assert_eq!(store.items(now), 200);
    assert_eq!(store.stats(now).items, 200);
}

/// Opening a store counts every segment's live and dead bytes, values, expiring
/// values and tombstones as writing them did: from hints for sealed segments, by a
/// scan for the last, with keys written again within a segment and across them,
/// deleted, and given exptimes, and more records in a segment than the open puts
/// into the index at a time.
#[test]
fn a_reopened_store_counts_what_the_written_one_counted() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sync: SyncPolicy::None,
        segment_size: 6 << 20,
        ..Options::default()
    };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let key = |k: u32| format!("k{k}").into_bytes();
    let mut c = 0;
    // 810k records of 30k keys, about 44 MB: six full segments, and a last one
    // of more than 65536 records.
    for round in 0..27u32 {
        for k in 0..30_000u32 {
            c += 1;
            let k = (k * 7919 + round * 13) % 30_000;
            let exptime = [0, NOW, NOW + 10][(k % 3) as usize];
            let rec = if (k + round) % 17 == 0 {
                Record::tombstone(clock(c))
            } else {
                Record::value(clock(c), k, exptime, vec![round as u8; (k % 40) as usize])
            };
            store.put(&key(k), &rec).unwrap();
        }
    }
    let before = store.stats(NOW);
    assert!(before.segments.len() >= 3, "{:?}", before.segments);
    assert!(before.dead_bytes > 0 && before.tombstones > 0 && before.expired > 0);
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    let report = store.open_report();
    // Sealed segments from their hints; the last scanned, in more than one batch.
    assert!(
        report.from_hints >= 2 && report.records > 1 << 16,
        "{report:?}"
    );
    let after = store.stats(NOW);
    assert_eq!(after, before);
    assert_eq!(store.items(NOW), before.items);
}

/// A snapshot taken while a writer overwrites keys and compaction deletes the
/// segments they leave behind reads every record it lists (the segments its
/// locations point into stay open), and lists every key written before it began.
#[test]
fn a_snapshot_amid_writes_and_compaction_reads_all_it_lists() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small()).unwrap();
    let key = |k: u32| format!("snap-{k:05}").into_bytes();
    for k in 0..2000u32 {
        store
            .put(&key(k), &Record::value(clock(k), 0, 0, value(k as u8, 1)))
            .unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Stops the helpers however the checks end, so that a failed one fails the
    // test rather than leave it waiting for them.
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            let mut c = 2000u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c += 1;
                let rec = Record::value(clock(c), 0, 0, value(c as u8, (c % 5) as u8));
                store.put(&key(c % 2000), &rec).unwrap();
            }
        });
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.compact(now_secs(), false).unwrap();
            }
        });
        for round in 0..150 {
            let mut seen = std::collections::HashSet::new();
            for item in store.snapshot() {
                let (k, r) = item.unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert!(r.is_value(), "round {round}");
                seen.insert(k);
            }
            assert_eq!(seen.len(), 2000, "round {round}");
        }
    });
}
