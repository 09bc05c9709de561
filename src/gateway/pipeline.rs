//! The order of one connection's commands: a [`Pipeline`] runs consecutive reads
//! together, but a write starts only when everything before it has finished, and
//! nothing after a write starts before it has; each command takes a slot in a
//! [`Replies`] queue, which sends the ready prefix, so answers go out in request
//! order even though they arrive in any order. The commands themselves run here,
//! against the cluster through [`Gateway`].

use super::{Gateway, GetDone, WriteDone};
use crate::cluster::write::{self, Op, Outcome, Write};
use crate::net::Writer;
use crate::proto::cluster::WriteRequest;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Commands one connection may run at once.
pub const INFLIGHT_MAX: usize = 1024;
/// Waiting commands looked at when one ends (the rest wait for the next).
pub const PIPELINE_SCAN: usize = 512;
/// Commands one connection may have waiting behind a running write. A client that
/// pipelines more is cut off rather than growing the gateway without bound.
pub const PIPELINE_MAX: usize = 16 * 1024;

pub(super) enum Slot {
    Waiting,
    Ready(Vec<u8>),
    /// `quit`: close once everything before it is sent.
    Close,
}

/// Answers in request order.
pub struct Replies {
    writer: Arc<Writer>,
    q: Mutex<(u64, VecDeque<Slot>)>,
}

impl Replies {
    fn new(writer: Arc<Writer>) -> Arc<Replies> {
        Arc::new(Replies {
            writer,
            q: Mutex::new((0, VecDeque::new())),
        })
    }

    /// Reserves the next answer's place.
    pub(super) fn reserve(&self) -> u64 {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        q.1.push_back(Slot::Waiting);
        q.0 + q.1.len() as u64 - 1
    }

    pub(super) fn fill(&self, seq: u64, slot: Slot) {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        let i = (seq - q.0) as usize;
        q.1[i] = slot;
        // Sending under the lock keeps the order of answers on the wire.
        let mut out = Vec::new();
        while matches!(q.1.front(), Some(Slot::Ready(_) | Slot::Close)) {
            q.0 += 1;
            match q.1.pop_front() {
                Some(Slot::Ready(b)) => out.extend_from_slice(&b),
                _ => {
                    if !out.is_empty() {
                        self.writer.send(&out);
                        out.clear();
                    }
                    self.writer.close_after_flush();
                }
            }
        }
        if !out.is_empty() {
            self.writer.send(&out);
        }
    }

    pub(super) fn answer(&self, seq: u64, text: &[u8]) {
        let mut b = Vec::with_capacity(text.len() + 2);
        b.extend_from_slice(text);
        b.extend_from_slice(b"\r\n");
        self.fill(seq, Slot::Ready(b));
    }
}

/// A command waiting for its turn, with its reply slot.
pub(super) enum Job {
    Get {
        keys: Vec<Vec<u8>>,
        with_cas: bool,
        seq: u64,
    },
    Write {
        key: Vec<u8>,
        w: Write,
        seq: Option<u64>,
    },
    Stats {
        seq: u64,
    },
}

/// What a job reads or writes: the keys it must not overtake, or be overtaken on.
struct Footprint {
    keys: Vec<Vec<u8>>,
    write: bool,
}

impl Job {
    fn footprint(&self) -> Footprint {
        match self {
            Job::Get { keys, .. } => Footprint {
                keys: keys.clone(),
                write: false,
            },
            Job::Write { key, .. } => Footprint {
                keys: vec![key.clone()],
                write: true,
            },
            Job::Stats { .. } => Footprint {
                keys: Vec::new(),
                write: false,
            },
        }
    }
}

/// Reads and writes per key.
type KeyUse = HashMap<Vec<u8>, (u32, u32)>;

/// Whether `f` must wait for the accesses in `uses`: a read waits for writes of
/// its keys, a write for any access of its key.
fn clashes(uses: &KeyUse, f: &Footprint) -> bool {
    f.keys.iter().any(|k| {
        uses.get(k)
            .is_some_and(|&(r, w)| w > 0 || (f.write && r > 0))
    })
}

fn add_use(uses: &mut KeyUse, f: &Footprint) {
    for k in &f.keys {
        let e = uses.entry(k.clone()).or_default();
        if f.write {
            e.1 += 1
        } else {
            e.0 += 1
        }
    }
}

#[derive(Default)]
struct Running {
    jobs: usize,
    keys: KeyUse,
    waiting: VecDeque<Job>,
}

impl Running {
    fn take(&mut self, f: &Footprint) {
        self.jobs += 1;
        add_use(&mut self.keys, f);
    }

    fn release(&mut self, f: &Footprint) {
        self.jobs -= 1;
        for k in &f.keys {
            if let Some(e) = self.keys.get_mut(k) {
                if f.write {
                    e.1 -= 1
                } else {
                    e.0 -= 1
                }
                if *e == (0, 0) {
                    self.keys.remove(k);
                }
            }
        }
    }
}

/// Orders one connection's commands as memcached would run them one by one, while
/// running at once those that cannot tell the difference: a command waits only for
/// earlier commands on the same keys (a read for writes, a write for anything), so
/// a client sees its own writes and a bulk load of different keys flows.
pub struct Pipeline {
    gw: Arc<Gateway>,
    pub(super) replies: Arc<Replies>,
    running: Mutex<Running>,
}

impl Pipeline {
    pub(super) fn new(gw: Arc<Gateway>, out: &Arc<Writer>) -> Arc<Pipeline> {
        Arc::new(Pipeline {
            gw,
            replies: Replies::new(out.clone()),
            running: Mutex::new(Running::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `job` now or queues it; gives it back if the queue is full.
    pub(super) fn submit(self: &Arc<Self>, job: Job) -> Result<(), Job> {
        let f = job.footprint();
        let start = {
            let mut r = self.lock();
            if r.waiting.is_empty() && r.jobs < INFLIGHT_MAX && !clashes(&r.keys, &f) {
                r.take(&f);
                Some(job)
            } else if r.waiting.len() >= PIPELINE_MAX {
                return Err(job);
            } else {
                r.waiting.push_back(job);
                None
            }
        };
        // Started outside the lock: a job may finish before run() returns.
        if let Some(j) = start {
            self.run(j);
        }
        Ok(())
    }

    /// A job ended: start the waiting jobs it held back, in order, each one only
    /// if no running job and no earlier waiting job holds it back.
    fn finished(self: &Arc<Self>, f: Footprint) {
        let mut start = Vec::new();
        {
            let mut r = self.lock();
            r.release(&f);
            let mut blocked = KeyUse::new();
            let mut keep = VecDeque::new();
            let scan = r.waiting.len().min(PIPELINE_SCAN);
            for _ in 0..scan {
                let Some(job) = r.waiting.pop_front() else {
                    break;
                };
                let jf = job.footprint();
                if r.jobs < INFLIGHT_MAX && !clashes(&r.keys, &jf) && !clashes(&blocked, &jf) {
                    r.take(&jf);
                    start.push(job);
                } else {
                    add_use(&mut blocked, &jf);
                    keep.push_back(job);
                }
            }
            while let Some(job) = keep.pop_back() {
                r.waiting.push_front(job);
            }
        }
        for j in start {
            self.run(j);
        }
    }

    fn run(self: &Arc<Self>, job: Job) {
        match job {
            Job::Get {
                keys,
                with_cas,
                seq,
            } => self.get(keys, with_cas, seq),
            Job::Write { key, w, seq } => self.write(key, w, seq),
            Job::Stats { seq } => self.stats(seq),
        }
    }

    /// Runs one write; without a slot (`noreply`) nothing is answered.
    fn write(self: &Arc<Self>, key: Vec<u8>, w: Write, seq: Option<u64>) {
        let done_key = key.clone();
        let gw = &self.gw;
        let c = &gw.counters;
        match w.op {
            Op::Touch => c.cmd_touch.fetch_add(1, Ordering::Relaxed),
            // memcached counts incr, decr and delete in their own hits and misses.
            Op::Delete | Op::Incr(_) | Op::Decr(_) => 0,
            _ => c.cmd_set.fetch_add(1, Ordering::Relaxed),
        };
        let async_ = seq.is_none()
            || if w.op == Op::Delete {
                gw.async_delete
            } else {
                gw.async_set
            };
        let op = w.op;
        let req = Arc::new(WriteRequest {
            key,
            write: w,
            no_wait: async_,
            budget_ms: None,
        });
        let me = self.clone();
        let done: WriteDone = Box::new(move |r| {
            let c = &me.gw.counters;
            let text = match r {
                Ok((o, _)) => {
                    let pair = match op {
                        Op::Delete => Some((&c.delete_hits, &c.delete_misses)),
                        Op::Incr(_) => Some((&c.incr_hits, &c.incr_misses)),
                        Op::Decr(_) => Some((&c.decr_hits, &c.decr_misses)),
                        Op::Touch => Some((&c.touch_hits, &c.touch_misses)),
                        Op::Cas(_) if o == Outcome::Exists => Some((&c.cas_badval, &c.cas_badval)),
                        Op::Cas(_) => Some((&c.cas_hits, &c.cas_misses)),
                        _ => None,
                    };
                    if let Some((hit, miss)) = pair {
                        let counter = if o == Outcome::NotFound { miss } else { hit };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    outcome_text(o)
                }
                Err(e) => {
                    c.write_errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!("write failed: {e}");
                    format!("SERVER_ERROR {e}").into_bytes()
                }
            };
            if let Some(seq) = seq {
                me.replies.answer(seq, &text);
            }
            me.finished(Footprint {
                keys: vec![done_key],
                write: true,
            });
        });
        gw.write(req, done);
    }

    fn get(self: &Arc<Self>, keys: Vec<Vec<u8>>, with_cas: bool, seq: u64) {
        struct Multi {
            parts: Vec<Option<Vec<u8>>>,
            left: usize,
            failed: Option<String>,
            /// The keys, handed back to the pipeline when the last one is done.
            keys: Vec<Vec<u8>>,
        }
        let n = keys.len();
        let multi = Arc::new(Mutex::new(Multi {
            parts: vec![None; n],
            left: n,
            failed: None,
            keys: keys.clone(),
        }));
        self.gw
            .counters
            .cmd_get
            .fetch_add(n as u64, Ordering::Relaxed);
        for (i, key) in keys.into_iter().enumerate() {
            let key = Arc::new(key);
            let (multi, me, k) = (multi.clone(), self.clone(), key.clone());
            let done: GetDone = Box::new(move |r| {
                let c = &me.gw.counters;
                let mut m = multi.lock().unwrap_or_else(|p| p.into_inner());
                match r {
                    Ok(Some(rec)) if write::is_live(&rec, crate::time::unix_now()) => {
                        c.get_hits.fetch_add(1, Ordering::Relaxed);
                        let mut b = Vec::with_capacity(rec.data.len() + k.len() + 48);
                        b.extend_from_slice(b"VALUE ");
                        b.extend_from_slice(&k);
                        b.extend_from_slice(
                            format!(" {} {}", rec.flags, rec.data.len()).as_bytes(),
                        );
                        if with_cas {
                            b.extend_from_slice(format!(" {}", rec.clock).as_bytes());
                        }
                        b.extend_from_slice(b"\r\n");
                        b.extend_from_slice(&rec.data);
                        b.extend_from_slice(b"\r\n");
                        m.parts[i] = Some(b);
                    }
                    Ok(_) => {
                        c.get_misses.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        c.get_errors.fetch_add(1, Ordering::Relaxed);
                        log::warn!("get failed: {e}");
                        m.failed.get_or_insert(e);
                    }
                }
                m.left -= 1;
                if m.left > 0 {
                    return;
                }
                // One failed key of a single get is an error; in a multi-get the
                // key is left out, as memcached leaves out what it cannot serve.
                let out = match (&m.failed, n) {
                    (Some(e), 1) => format!("SERVER_ERROR {e}\r\n").into_bytes(),
                    _ => {
                        let mut out = Vec::new();
                        for p in m.parts.iter_mut().flatten() {
                            out.append(p);
                        }
                        out.extend_from_slice(b"END\r\n");
                        out
                    }
                };
                let keys = std::mem::take(&mut m.keys);
                drop(m);
                me.replies.fill(seq, Slot::Ready(out));
                me.finished(Footprint { keys, write: false });
            });
            self.gw.get(key, done);
        }
    }

    fn stats(self: &Arc<Self>, seq: u64) {
        let me = self.clone();
        self.gw
            .cluster_items(Box::new(move |copies, answered, servers| {
                let g = &me.gw;
                let c = &g.counters;
                let now = crate::time::unix_now();
                let mut lines: Vec<(&str, String)> = vec![
                    ("pid", std::process::id().to_string()),
                    ("uptime", g.uptime().to_string()),
                    ("time", now.to_string()),
                    ("version", crate::cli::VERSION.to_string()),
                    (
                        "pointer_size",
                        (8 * std::mem::size_of::<usize>()).to_string(),
                    ),
                ];
                let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed).to_string();
                lines.extend([
                    ("curr_connections", load(&c.curr_connections)),
                    ("total_connections", load(&c.total_connections)),
                    ("cmd_get", load(&c.cmd_get)),
                    ("cmd_set", load(&c.cmd_set)),
                    ("cmd_touch", load(&c.cmd_touch)),
                    ("get_hits", load(&c.get_hits)),
                    ("get_misses", load(&c.get_misses)),
                    ("get_errors", load(&c.get_errors)),
                    ("delete_misses", load(&c.delete_misses)),
                    ("delete_hits", load(&c.delete_hits)),
                    ("incr_misses", load(&c.incr_misses)),
                    ("incr_hits", load(&c.incr_hits)),
                    ("decr_misses", load(&c.decr_misses)),
                    ("decr_hits", load(&c.decr_hits)),
                    ("cas_misses", load(&c.cas_misses)),
                    ("cas_hits", load(&c.cas_hits)),
                    ("cas_badval", load(&c.cas_badval)),
                    ("touch_hits", load(&c.touch_hits)),
                    ("touch_misses", load(&c.touch_misses)),
                    ("write_errors", load(&c.write_errors)),
                    ("retries", load(&c.retries)),
                ]);
                // Every key is on up to three servers; the copies divided by the
                // replication factor is the number of keys.
                let factor = answered.clamp(1, crate::cluster::hash_space::REPLICAS) as u64;
                lines.push(("curr_items", (copies / factor).to_string()));
                lines.push(("cluster_items", copies.to_string()));
                lines.push(("cluster_servers", servers.to_string()));
                lines.push(("cluster_servers_answered", answered.to_string()));
                let mut out = String::new();
                for (k, v) in lines {
                    out += &format!("STAT {k} {v}\r\n");
                }
                out += "END\r\n";
                me.replies.fill(seq, Slot::Ready(out.into_bytes()));
                me.finished(Footprint {
                    keys: Vec::new(),
                    write: false,
                });
            }));
    }
}

fn outcome_text(o: Outcome) -> Vec<u8> {
    match o {
        Outcome::Stored => b"STORED".to_vec(),
        Outcome::NotStored => b"NOT_STORED".to_vec(),
        Outcome::Exists => b"EXISTS".to_vec(),
        Outcome::NotFound => b"NOT_FOUND".to_vec(),
        Outcome::Deleted => b"DELETED".to_vec(),
        Outcome::Touched => b"TOUCHED".to_vec(),
        Outcome::Number(n) => n.to_string().into_bytes(),
        Outcome::NonNumeric => {
            b"CLIENT_ERROR cannot increment or decrement non-numeric value".to_vec()
        }
    }
}
