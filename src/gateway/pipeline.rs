//! The order of one connection's commands: a [`Pipeline`] runs consecutive reads
//! together, but a write starts only when everything before it has finished, and
//! nothing after a write starts before it has; each command takes a slot in a
//! [`Replies`] queue, which sends the ready prefix, so answers go out in request
//! order even though they arrive in any order. The commands themselves run here,
//! against the cluster through [`Gateway`].

use super::stats::DetailOp;
use super::{Gateway, GetDone, WriteDone};
use crate::cluster::write::{self, Op, Outcome, Write};
use crate::net::Writer;
use crate::proto::cluster::WriteRequest;
use crate::proto::memtext::StatsGroup;
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

/// Where a command's answer goes: its place in the reply order, and whether the
/// client asked for silence (noreply). A silent command still holds its place, so
/// that a later answer tells the client it has run, as memcached's order does
/// (`flush_all noreply` then `version`: the flush is done when VERSION comes).
#[derive(Debug, Clone, Copy)]
pub(super) struct Place {
    pub seq: u64,
    pub silent: bool,
}

impl Place {
    fn answer(self, replies: &Replies, text: &[u8]) {
        if self.silent {
            replies.fill(self.seq, Slot::Ready(Vec::new()));
        } else {
            replies.answer(self.seq, text);
        }
    }
}

/// A command waiting for its turn, with its reply slot.
pub(super) enum Job {
    Get {
        keys: Vec<Vec<u8>>,
        with_cas: bool,
        /// `gat`: each key's new exptime (absolute), set before it is read.
        touch: Option<u32>,
        seq: u64,
    },
    Write {
        key: Vec<u8>,
        w: Write,
        place: Place,
    },
    Stats {
        group: StatsGroup,
        seq: u64,
    },
    /// `flush_all`: every key at once, so it runs alone, after everything before
    /// it and before everything after it.
    Flush {
        delay: i64,
        place: Place,
    },
    /// A meta command (`ms` with its data).
    Meta {
        req: Box<crate::proto::memmeta::Request>,
        data: Vec<u8>,
        seq: u64,
    },
}

/// What a job reads or writes: the keys it must not overtake, or be overtaken on;
/// a barrier touches every key.
pub(super) struct Footprint {
    pub keys: Vec<Vec<u8>>,
    pub write: bool,
    pub barrier: bool,
}

impl Job {
    fn footprint(&self) -> Footprint {
        match self {
            Job::Get { keys, touch, .. } => Footprint {
                keys: keys.clone(),
                write: touch.is_some(),
                barrier: false,
            },
            Job::Write { key, .. } => Footprint {
                keys: vec![key.clone()],
                write: true,
                barrier: false,
            },
            Job::Stats { .. } => Footprint::none(),
            Job::Flush { .. } => Footprint {
                keys: Vec::new(),
                write: true,
                barrier: true,
            },
            Job::Meta { req, .. } => Footprint::meta(req),
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

impl Footprint {
    /// A meta command's: its one key, read or written.
    pub(super) fn meta(req: &crate::proto::memmeta::Request) -> Footprint {
        Footprint {
            keys: vec![req.key.clone()],
            write: req.may_write(),
            barrier: false,
        }
    }

    fn none() -> Footprint {
        Footprint {
            keys: Vec::new(),
            write: false,
            barrier: false,
        }
    }
}

#[derive(Default)]
struct Running {
    jobs: usize,
    keys: KeyUse,
    waiting: VecDeque<Job>,
    /// A barrier runs: nothing else may start.
    barrier: bool,
}

impl Running {
    /// Whether a job of footprint `f` may start now, as far as running jobs go.
    fn admits(&self, f: &Footprint) -> bool {
        self.jobs < INFLIGHT_MAX
            && !self.barrier
            && !(f.barrier && self.jobs > 0)
            && !clashes(&self.keys, f)
    }

    fn take(&mut self, f: &Footprint) {
        self.jobs += 1;
        self.barrier |= f.barrier;
        add_use(&mut self.keys, f);
    }

    fn release(&mut self, f: &Footprint) {
        self.jobs -= 1;
        if f.barrier {
            self.barrier = false;
        }
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
    pub(super) gw: Arc<Gateway>,
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
            if r.waiting.is_empty() && r.admits(&f) {
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
    pub(super) fn finished(self: &Arc<Self>, f: Footprint) {
        let mut start = Vec::new();
        {
            let mut r = self.lock();
            r.release(&f);
            let mut blocked = KeyUse::new();
            let mut keep = VecDeque::new();
            // A waiting barrier holds back everything after it.
            let mut barrier_waits = false;
            let scan = r.waiting.len().min(PIPELINE_SCAN);
            for _ in 0..scan {
                let Some(job) = r.waiting.pop_front() else {
                    break;
                };
                let jf = job.footprint();
                let behind = barrier_waits || (jf.barrier && !keep.is_empty());
                if !behind && r.admits(&jf) && !clashes(&blocked, &jf) {
                    r.take(&jf);
                    start.push(job);
                } else {
                    barrier_waits |= jf.barrier;
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
                touch,
                seq,
            } => self.get(keys, with_cas, touch, seq),
            Job::Write { key, w, place } => self.write(key, w, place),
            Job::Stats { group, seq } => self.stats(group, seq),
            Job::Flush { delay, place } => self.flush(delay, place),
            Job::Meta { req, data, seq } => self.meta(req, data, seq),
        }
    }

    /// Runs one write; a silent one (`noreply`) answers nothing.
    fn write(self: &Arc<Self>, key: Vec<u8>, w: Write, place: Place) {
        let done_key = key.clone();
        let gw = &self.gw;
        gw.detail.record(
            &key,
            if w.op == Op::Delete {
                DetailOp::Delete
            } else {
                DetailOp::Set
            },
        );
        let c = &gw.counters;
        match w.op {
            Op::Touch => c.cmd_touch.fetch_add(1, Ordering::Relaxed),
            // memcached counts incr, decr and delete in their own hits and misses.
            Op::Delete | Op::Incr(_) | Op::Decr(_) => 0,
            _ => c.cmd_set.fetch_add(1, Ordering::Relaxed),
        };
        let async_ = place.silent
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
                Ok((o, _, _)) => {
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
            place.answer(&me.replies, &text);
            me.finished(Footprint {
                keys: vec![done_key],
                write: true,
                barrier: false,
            });
        });
        gw.write(req, done);
    }

    /// Reads `keys` and answers their VALUE lines in order; with `touch` (gat), each
    /// key's exptime is set first, and a key not there to touch is a miss.
    fn get(self: &Arc<Self>, keys: Vec<Vec<u8>>, with_cas: bool, touch: Option<u32>, seq: u64) {
        struct Multi {
            parts: Vec<Option<Vec<u8>>>,
            left: usize,
            failed: Option<String>,
            /// The keys, handed back to the pipeline when the last one is done.
            keys: Vec<Vec<u8>>,
        }
        let n = keys.len();
        if n == 0 {
            // `gat 10` names no key: memcached answers the empty list.
            self.replies.fill(seq, Slot::Ready(b"END\r\n".to_vec()));
            return self.finished(Footprint {
                keys,
                write: touch.is_some(),
                barrier: false,
            });
        }
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
        if touch.is_some() {
            self.gw
                .counters
                .cmd_touch
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        for (i, key) in keys.into_iter().enumerate() {
            let key = Arc::new(key);
            let (multi, me, k) = (multi.clone(), self.clone(), key.clone());
            let done: GetDone = Box::new(move |r| {
                let c = &me.gw.counters;
                let mut m = multi.lock().unwrap_or_else(|p| p.into_inner());
                match r {
                    Ok(Some(rec)) if write::is_live(&rec, crate::time::unix_now()) => {
                        c.get_hits.fetch_add(1, Ordering::Relaxed);
                        me.gw.detail.record(&k, DetailOp::Get { hit: true });
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
                        me.gw.detail.record(&k, DetailOp::Get { hit: false });
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
                me.finished(Footprint {
                    keys,
                    write: touch.is_some(),
                    barrier: false,
                });
            });
            let Some(exptime) = touch else {
                self.gw.get(key, done);
                continue;
            };
            let req = Arc::new(WriteRequest {
                key: key.to_vec(),
                write: Write::plain(Op::Touch, 0, exptime, Vec::new()),
                no_wait: false,
                budget_ms: None,
            });
            let gw = self.gw.clone();
            self.gw.write(
                req,
                Box::new(move |r| match r {
                    Ok((Outcome::Touched, _, _)) => {
                        gw.counters.touch_hits.fetch_add(1, Ordering::Relaxed);
                        gw.get(key, done)
                    }
                    Ok(_) => {
                        gw.counters.touch_misses.fetch_add(1, Ordering::Relaxed);
                        done(Ok(None))
                    }
                    Err(e) => done(Err(e)),
                }),
            );
        }
    }

    fn flush(self: &Arc<Self>, delay: i64, place: Place) {
        let me = self.clone();
        self.gw.flush(
            delay,
            Box::new(move |r| {
                match r {
                    Ok(()) => place.answer(&me.replies, b"OK"),
                    Err(e) => {
                        if place.silent {
                            log::warn!("flush_all noreply failed: {e}");
                        }
                        place.answer(&me.replies, format!("SERVER_ERROR {e}").as_bytes())
                    }
                }
                me.finished(Footprint {
                    keys: Vec::new(),
                    write: true,
                    barrier: true,
                });
            }),
        );
    }

    fn stats(self: &Arc<Self>, group: StatsGroup, seq: u64) {
        let me = self.clone();
        super::stats::answer(
            &self.gw,
            group,
            Box::new(move |text| {
                me.replies.fill(seq, Slot::Ready(text));
                me.finished(Footprint::none());
            }),
        );
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
        Outcome::Number(n) | Outcome::Made(n) => n.to_string().into_bytes(),
        // Only a meta get asks for this; the text commands never see it.
        Outcome::Fetched { .. } => b"SERVER_ERROR unexpected outcome".to_vec(),
        Outcome::NonNumeric => {
            b"CLIENT_ERROR cannot increment or decrement non-numeric value".to_vec()
        }
    }
}
