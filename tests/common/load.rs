//! The background load of the fault tests: client threads that set, read back and
//! delete their own keys through the gateway and check every reply against what
//! they last wrote.

use super::wait_until;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A client loop that sets and reads back its own keys, checking every reply.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    acked: Arc<Mutex<HashMap<String, String>>>,
    get_errors: Arc<AtomicU64>,
    set_errors: Arc<AtomicU64>,
    wrong: Arc<AtomicU64>,
    ops: Arc<AtomicU64>,
    /// The longest any one request took, in milliseconds.
    slowest_ms: Arc<AtomicU64>,
    /// Requests by how many milliseconds they took (the last bucket: that or more).
    took_ms: Arc<Vec<AtomicU64>>,
    /// Every key a write was sent for.
    written: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// Buckets of the latency histogram, one per millisecond.
const LATENCY_BUCKETS: usize = 2048;

impl Load {
    pub fn start(addr: SocketAddr, threads: usize, keys: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let (get_errors, set_errors, wrong, ops, slowest_ms) = Default::default();
        let mut l = Load {
            stop,
            threads: Vec::new(),
            acked,
            get_errors,
            set_errors,
            wrong,
            ops,
            slowest_ms,
            took_ms: Arc::new((0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect()),
            written: Default::default(),
        };
        for t in 0..threads {
            let (stop, acked, written) = (l.stop.clone(), l.acked.clone(), l.written.clone());
            let (ge, se, wrong, ops, slowest, took_ms) = (
                l.get_errors.clone(),
                l.set_errors.clone(),
                l.wrong.clone(),
                l.ops.clone(),
                l.slowest_ms.clone(),
                l.took_ms.clone(),
            );
            l.threads.push(std::thread::spawn(move || {
                let client = super::client(addr);
                // Every request is timed: the gateway answers within its deadline.
                let timed = |since: std::time::Instant| {
                    let ms = since.elapsed().as_millis() as u64;
                    slowest.fetch_max(ms, Ordering::Relaxed);
                    took_ms[(ms as usize).min(LATENCY_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
                };
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    for i in 0..keys {
                        let k = format!("load-{t}-{i}");
                        let v = format!("{t}-{i}-{round}");
                        written.lock().unwrap().insert(k.clone());
                        let t0 = std::time::Instant::now();
                        let r = client.set(&k, v.as_str(), 0);
                        timed(t0);
                        match r {
                            Ok(()) => {
                                acked.lock().unwrap().insert(k.clone(), v.clone());
                            }
                            Err(e) => {
                                eprintln!("set {k}: {e}");
                                se.fetch_add(1, Ordering::Relaxed);
                                // A failed set leaves the key undefined.
                                acked.lock().unwrap().remove(&k);
                                continue;
                            }
                        }
                        let t0 = std::time::Instant::now();
                        let r = client.get::<String>(&k);
                        timed(t0);
                        match r {
                            Ok(Some(got)) if got == v => {}
                            Ok(other) => {
                                eprintln!("get {k}: {other:?}, expected {v}");
                                wrong.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                eprintln!("get {k}: {e}");
                                ge.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        ops.fetch_add(2, Ordering::Relaxed);
                        // Every seventh key is deleted again and must then be gone.
                        if (i as u64 + round).is_multiple_of(7) {
                            let t0 = std::time::Instant::now();
                            let r = client.delete(&k);
                            timed(t0);
                            match r {
                                Ok(_) => {
                                    acked.lock().unwrap().insert(k.clone(), String::new());
                                }
                                Err(e) => {
                                    eprintln!("delete {k}: {e}");
                                    se.fetch_add(1, Ordering::Relaxed);
                                    acked.lock().unwrap().remove(&k);
                                    continue;
                                }
                            }
                            let t0 = std::time::Instant::now();
                            let r = client.get::<String>(&k);
                            timed(t0);
                            match r {
                                Ok(None) => {}
                                Ok(Some(v)) => {
                                    eprintln!("get {k} after delete: {v}");
                                    wrong.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    eprintln!("get {k} after delete: {e}");
                                    ge.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            ops.fetch_add(2, Ordering::Relaxed);
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                }
            }));
        }
        l
    }

    /// Lets the load run until it has done `n` more operations.
    pub fn run_for_ops(&self, n: u64) {
        let target = self.ops.load(Ordering::Relaxed) + n;
        wait_until(Duration::from_secs(60), "the load to make progress", || {
            self.ops.load(Ordering::Relaxed) >= target
        });
    }

    /// The longest any one request has taken so far.
    pub fn slowest(&self) -> Duration {
        Duration::from_millis(self.slowest_ms.load(Ordering::Relaxed))
    }

    /// The 99th percentile of the requests' times so far (to the millisecond).
    pub fn p99(&self) -> Duration {
        let counts: Vec<u64> = self
            .took_ms
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let mut seen = 0;
        for (ms, n) in counts.iter().enumerate() {
            seen += n;
            if seen * 100 >= total * 99 {
                return Duration::from_millis(ms as u64);
            }
        }
        Duration::ZERO
    }

    /// Operations done so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Every key the load wrote whose last write failed: its value is undefined.
    /// Final only once the load is halted.
    pub fn undefined(&self) -> Vec<String> {
        let acked = self.acked.lock().unwrap();
        self.written
            .lock()
            .unwrap()
            .iter()
            .filter(|k| !acked.contains_key(*k))
            .cloned()
            .collect()
    }

    /// Stops the client threads and waits for them (the counts are final after).
    pub fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }

    pub fn stop(mut self) -> (HashMap<String, String>, u64, u64, u64) {
        self.halt();
        let acked = self.acked.lock().unwrap().clone();
        (
            acked,
            self.get_errors.load(Ordering::Relaxed),
            self.set_errors.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
        )
    }
}

/// Reads every acknowledged key back: a value must be the last one written, a
/// deleted key must be absent.
pub fn check_acked(addr: SocketAddr, acked: &HashMap<String, String>) {
    let client = super::client(addr);
    for (k, v) in acked {
        let got: Option<String> = client.get(k).unwrap();
        if v.is_empty() {
            assert_eq!(got, None, "deleted {k} came back");
        } else {
            assert_eq!(
                got.as_deref(),
                Some(v.as_str()),
                "acknowledged {k} lost or wrong"
            );
        }
    }
}
