//! The order of one connection's commands: a [`Pipeline`] runs consecutive reads
//! together, but a write starts only when everything before it has finished, and
//! nothing after a write starts before it has; each command takes a slot in a
//! [`Replies`] queue, which sends the ready prefix, so answers go out in request
//! order even though they arrive in any order. The commands themselves run here,
//! against the cluster through [`Gateway`].

use super::flow::{Fetching, GetRun, OUTPUT_BUDGET_BYTES};
use super::form::Form;
use super::stats::DetailOp;
use super::{Gateway, WriteDone};
use crate::cluster::write::{Op, Outcome, Write};
use crate::keyhash;
use crate::net::chain::Chain;
use crate::net::Writer;
use crate::proto::cluster::WriteRequest;
use crate::proto::memtext::StatsGroup;
use crate::proto::metrics::Histogram;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Commands one connection may run at once.
pub const INFLIGHT_MAX: usize = 1024;
/// Waiting commands looked at when one ends (the rest wait for the next).
pub const PIPELINE_SCAN: usize = 512;
/// Commands one connection may have waiting behind a running write. A client that
/// pipelines more is not read from until some have run: backpressure.
pub const PIPELINE_MAX: usize = 16 * 1024;

pub(super) enum Slot {
    Waiting,
    Ready(Chain),
    /// `quit`: close once everything before it is sent.
    Close,
}

/// Answers in request order.
pub struct Replies {
    writer: Arc<Writer>,
    q: Mutex<Queue>,
    /// Each command's time from being read whole to its answer going out
    /// (`--metrics`).
    latency: Arc<Histogram>,
}

struct Queue {
    /// The place of the front slot.
    first: u64,
    slots: VecDeque<Slot>,
    /// When each slot's command was read, beside `slots`: on the last slot of a
    /// command's places only, so that a command is timed once, when its answer
    /// has gone out whole.
    since: VecDeque<Option<Instant>>,
    /// Bytes of answers that wait for an earlier one.
    held: usize,
}

impl Replies {
    fn new(writer: Arc<Writer>, latency: Arc<Histogram>) -> Arc<Replies> {
        Arc::new(Replies {
            writer,
            q: Mutex::new(Queue {
                first: 0,
                slots: VecDeque::new(),
                since: VecDeque::new(),
                held: 0,
            }),
            latency,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves the next answer's place.
    pub(super) fn reserve(&self) -> u64 {
        self.reserve_many(1)
    }

    /// Reserves `n` places in a row; returns the first.
    pub(super) fn reserve_many(&self, n: usize) -> u64 {
        let mut q = self.lock();
        let first = q.first + q.slots.len() as u64;
        q.slots.extend((0..n).map(|_| Slot::Waiting));
        let now = crate::net::now();
        q.since.extend((0..n).map(|i| (i + 1 == n).then_some(now)));
        first
    }

    /// Bytes of answers not yet handed to the connection, and not yet sent by it.
    pub(super) fn unsent(&self) -> usize {
        let held = self.lock().held;
        held + self.writer.queued()
    }

    pub(super) fn writer(&self) -> &Arc<Writer> {
        &self.writer
    }

    pub(super) fn fill(&self, seq: u64, slot: Slot) {
        let mut q = self.lock();
        let i = (seq - q.first) as usize;
        if let Slot::Ready(b) = &slot {
            q.held += b.len();
        }
        q.slots[i] = slot;
        // Sending under the lock keeps the order of answers on the wire.
        let mut out = Chain::new();
        let mut now = None;
        while matches!(q.slots.front(), Some(Slot::Ready(_) | Slot::Close)) {
            q.first += 1;
            let since = q.since.pop_front().flatten();
            match q.slots.pop_front() {
                Some(Slot::Ready(b)) => {
                    q.held -= b.len();
                    out.append(b);
                    if let Some(t) = since {
                        let now = *now.get_or_insert_with(crate::net::now);
                        self.latency.observe(now.saturating_duration_since(t));
                    }
                }
                _ => {
                    if !out.is_empty() {
                        let _ = self.writer.send_chain(std::mem::take(&mut out));
                    }
                    self.writer.close_after_flush();
                }
            }
        }
        if !out.is_empty() {
            let _ = self.writer.send_chain(out);
        }
    }

    pub(super) fn answer(&self, seq: u64, text: &[u8]) {
        let mut b = Chain::new();
        b.bytes(text);
        b.bytes(b"\r\n");
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
    /// The protocol the answer is worded in, and whether it is silent.
    pub form: Form,
}

/// A command waiting for its turn, with its reply slot.
pub(super) enum Job {
    /// A get or gat line, or a part of a long one (see `multiget.rs`).
    Get(Arc<GetRun>),
    Write {
        key: Vec<u8>,
        w: Write,
        place: Place,
    },
    Stats {
        group: StatsGroup,
        place: Place,
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
/// a barrier touches every key. Keys are held by their hash ([`keyhash::hash`]):
/// two keys of one connection that share it only make one wait for the other,
/// which is never wrong, and no key is copied to be remembered.
pub(super) struct Footprint {
    pub keys: Vec<u64>,
    pub write: bool,
    pub barrier: bool,
}

impl Job {
    fn footprint(&self) -> Footprint {
        match self {
            Job::Get(run) => Footprint::get(run),
            Job::Write { key, .. } => Footprint::write(key),
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

/// Reads and writes per key hash.
type KeyUse = HashMap<u64, (u32, u32), crate::keyhash::BuildPrehashed>;

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
        let e = uses.entry(*k).or_default();
        if f.write {
            e.1 += 1
        } else {
            e.0 += 1
        }
    }
}

impl Footprint {
    /// A get run's: its keys, written too if it is a gat.
    pub(super) fn get(run: &GetRun) -> Footprint {
        Footprint {
            keys: run.keys.iter().map(|k| keyhash::hash(k)).collect(),
            write: run.touch.is_some(),
            barrier: false,
        }
    }

    /// A meta command's: its one key, read or written.
    pub(super) fn meta(req: &crate::proto::memmeta::Request) -> Footprint {
        Footprint {
            keys: vec![keyhash::hash(&req.key)],
            write: req.may_write(),
            barrier: false,
        }
    }

    /// A write's: its one key.
    fn write(key: &[u8]) -> Footprint {
        Footprint {
            keys: vec![keyhash::hash(key)],
            write: true,
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
    /// The reads of multi-gets (see `multiget.rs`).
    pub(super) fetching: Mutex<Fetching>,
    /// The session stopped reading commands for want of room.
    paused: AtomicBool,
}

impl Pipeline {
    pub(super) fn new(gw: Arc<Gateway>, out: &Arc<Writer>) -> Arc<Pipeline> {
        let replies = Replies::new(out.clone(), gw.latency.clone());
        let p = Arc::new(Pipeline {
            gw,
            replies,
            running: Mutex::new(Running::default()),
            fetching: Mutex::new(Fetching::default()),
            paused: AtomicBool::new(false),
        });
        // A slow reader that caught up makes room: ask for more values, and read
        // more commands.
        let weak = Arc::downgrade(&p);
        out.on_drained(Box::new(move || {
            if let Some(p) = weak.upgrade() {
                p.pump();
                p.room_made();
            }
        }));
        p
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes of answers the client has not been sent yet.
    pub(super) fn unsent(&self) -> usize {
        self.replies.unsent()
    }

    /// Whether the connection may take another command: fewer than PIPELINE_MAX
    /// wait, and the unsent answers are within the budget. When not, the session
    /// stops reading until [`Pipeline::room_made`] finds room again.
    pub(super) fn has_room(&self) -> bool {
        let room =
            || self.lock().waiting.len() < PIPELINE_MAX && self.unsent() < OUTPUT_BUDGET_BYTES;
        if room() {
            return true;
        }
        self.paused.store(true, Ordering::SeqCst);
        // Room may have been made between the check and the flag: look again, so
        // that no wake-up is lost.
        if room() {
            self.paused.store(false, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// Something finished or was sent: a paused session may read again.
    pub(super) fn room_made(&self) {
        if self.paused.load(Ordering::SeqCst) && self.has_room() {
            self.paused.store(false, Ordering::SeqCst);
            self.replies.writer().resume_reading();
        }
    }

    /// Starts `job` now or queues it. The session asks [`Pipeline::has_room`] first.
    pub(super) fn submit(self: &Arc<Self>, job: Job) {
        let f = job.footprint();
        let start = {
            let mut r = self.lock();
            if r.waiting.is_empty() && r.admits(&f) {
                r.take(&f);
                Some(job)
            } else {
                r.waiting.push_back(job);
                None
            }
        };
        // Started outside the lock: a job may finish before run() returns.
        if let Some(j) = start {
            self.run(j);
        }
    }

    /// A job ended: start the waiting jobs it held back, in order, each one only
    /// if no running job and no earlier waiting job holds it back.
    pub(super) fn finished(self: &Arc<Self>, f: Footprint) {
        let mut start = Vec::new();
        {
            let mut r = self.lock();
            r.release(&f);
            let mut blocked = KeyUse::default();
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
        // An answer went out: reads held back by the budget may go.
        self.pump();
        self.room_made();
    }

    fn run(self: &Arc<Self>, job: Job) {
        match job {
            Job::Get(run) => self.get(run),
            Job::Write { key, w, place } => self.write(key, w, place),
            Job::Stats { group, place } => self.stats(group, place),
            Job::Flush { delay, place } => self.flush(delay, place),
            Job::Meta { req, data, seq } => self.meta(req, data, seq),
        }
    }

    /// Runs one write; a silent one (`noreply`) answers nothing.
    fn write(self: &Arc<Self>, key: Vec<u8>, w: Write, place: Place) {
        let footprint = Footprint::write(&key);
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
        let async_ = place.form.is_silent()
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
            let reply = match r {
                Ok((o, cas, _)) => {
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
                    place.form.write(op, Ok((o, cas)))
                }
                Err(e) => {
                    c.write_errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!("write failed: {e}");
                    place.form.write(op, Err(&e))
                }
            };
            me.replies.fill(place.seq, Slot::Ready(reply.into()));
            me.finished(footprint);
        });
        gw.write(req, done);
    }

    fn flush(self: &Arc<Self>, delay: i64, place: Place) {
        let me = self.clone();
        self.gw.flush(
            delay,
            Box::new(move |r| {
                let reply = match r {
                    Ok(()) => place.form.ok(),
                    Err(e) => {
                        if place.form.is_silent() {
                            log::warn!("flush_all noreply failed: {e}");
                        }
                        match place.form {
                            Form::Text { silent: true } => Vec::new(),
                            f => f.error(&e),
                        }
                    }
                };
                me.replies.fill(place.seq, Slot::Ready(reply.into()));
                me.finished(Footprint {
                    keys: Vec::new(),
                    write: true,
                    barrier: true,
                });
            }),
        );
    }

    fn stats(self: &Arc<Self>, group: StatsGroup, place: Place) {
        let me = self.clone();
        super::stats::answer(
            &self.gw,
            group,
            Box::new(move |text| {
                me.replies
                    .fill(place.seq, Slot::Ready(place.form.stats(text).into()));
                me.finished(Footprint::none());
            }),
        );
    }
}
