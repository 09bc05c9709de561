//! The memcached text protocol session. Commands are parsed by
//! [`crate::proto::memtext`], run against the cluster through [`Gateway`], and
//! answered in request order even though their answers arrive in any order: each
//! command takes a slot in a [`Replies`] queue, and the queue sends the ready prefix.

use super::{Gateway, GetDone, WriteDone};
use crate::cluster::write::{self, Op, Outcome, Write};
use crate::net::{SessionFactory, Session, Writer};
use crate::proto::cluster::WriteRequest;
use crate::proto::memtext::{self, Command, Parsed, StoreOp};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// memcached: an exptime above this many seconds is an absolute unix time.
pub const RELATIVE_EXPTIME_MAX: i64 = 60 * 60 * 24 * 30;

enum Slot {
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
    fn reserve(&self) -> u64 {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        q.1.push_back(Slot::Waiting);
        q.0 + q.1.len() as u64 - 1
    }

    fn fill(&self, seq: u64, slot: Slot) {
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

    fn answer(&self, seq: u64, text: &[u8]) {
        let mut b = Vec::with_capacity(text.len() + 2);
        b.extend_from_slice(text);
        b.extend_from_slice(b"\r\n");
        self.fill(seq, Slot::Ready(b));
    }
}

pub struct TextSession {
    gw: Arc<Gateway>,
    replies: Option<Arc<Replies>>,
    /// Bytes of an oversized value still to be skipped.
    swallow: usize,
}

pub fn factory(gw: Arc<Gateway>) -> SessionFactory {
    Arc::new(move |_peer| {
        gw.counters.curr_connections.fetch_add(1, Ordering::Relaxed);
        gw.counters.total_connections.fetch_add(1, Ordering::Relaxed);
        Box::new(TextSession {
            gw: gw.clone(),
            replies: None,
            swallow: 0,
        })
    })
}

/// A memcached exptime as an absolute unix time (0 = never; in the past = gone).
pub fn absolute_exptime(exptime: i64, now: u32) -> u32 {
    match exptime {
        0 => 0,
        e if e < 0 => 1,
        e if e <= RELATIVE_EXPTIME_MAX => now.saturating_add(e as u32),
        e => e.min(u32::MAX as i64) as u32,
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
        Outcome::NonNumeric => b"CLIENT_ERROR cannot increment or decrement non-numeric value".to_vec(),
    }
}

impl TextSession {
    fn replies(&mut self, out: &Arc<Writer>) -> Arc<Replies> {
        self.replies.get_or_insert_with(|| Replies::new(out.clone())).clone()
    }

    /// Runs one write; `noreply` gets no slot and no answer.
    fn write(&self, replies: &Arc<Replies>, key: &[u8], w: Write, noreply: bool) {
        let gw = &self.gw;
        let c = &gw.counters;
        match w.op {
            Op::Touch => c.cmd_touch.fetch_add(1, Ordering::Relaxed),
            Op::Delete => 0,
            _ => c.cmd_set.fetch_add(1, Ordering::Relaxed),
        };
        let async_ = noreply || if w.op == Op::Delete { gw.async_delete } else { gw.async_set };
        let op = w.op;
        let req = Arc::new(WriteRequest {
            key: key.to_vec(),
            write: w,
            no_wait: async_,
        });
        let slot = (!noreply).then(|| (replies.clone(), replies.reserve()));
        let g = gw.clone();
        let done: WriteDone = Box::new(move |r| {
            let c = &g.counters;
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
            if let Some((replies, seq)) = slot {
                replies.answer(seq, &text);
            }
        });
        gw.write(req, 0, done);
    }

    fn get(&self, replies: &Arc<Replies>, keys: &[&[u8]], with_cas: bool) {
        struct Multi {
            parts: Vec<Option<Vec<u8>>>,
            left: usize,
            failed: Option<String>,
        }
        let seq = replies.reserve();
        let n = keys.len();
        let multi = Arc::new(Mutex::new(Multi {
            parts: vec![None; n],
            left: n,
            failed: None,
        }));
        self.gw.counters.cmd_get.fetch_add(n as u64, Ordering::Relaxed);
        for (i, key) in keys.iter().enumerate() {
            let key = Arc::new(key.to_vec());
            let (multi, replies, g) = (multi.clone(), replies.clone(), self.gw.clone());
            let k = key.clone();
            let done: GetDone = Box::new(move |r| {
                let c = &g.counters;
                let mut m = multi.lock().unwrap_or_else(|p| p.into_inner());
                match r {
                    Ok(Some(rec)) if write::is_live(&rec, crate::server::node::unix_now()) => {
                        c.get_hits.fetch_add(1, Ordering::Relaxed);
                        let mut b = Vec::with_capacity(rec.data.len() + k.len() + 48);
                        b.extend_from_slice(b"VALUE ");
                        b.extend_from_slice(&k);
                        b.extend_from_slice(format!(" {} {}", rec.flags, rec.data.len()).as_bytes());
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
                drop(m);
                replies.fill(seq, Slot::Ready(out));
            });
            self.gw.get(key, 0, done);
        }
    }

    fn stats(&self, replies: &Arc<Replies>) {
        let seq = replies.reserve();
        let (g, replies) = (self.gw.clone(), replies.clone());
        self.gw.cluster_items(Box::new(move |copies, answered, servers| {
            let c = &g.counters;
            let now = crate::server::node::unix_now();
            let mut lines: Vec<(&str, String)> = vec![
                ("pid", std::process::id().to_string()),
                ("uptime", g.uptime().to_string()),
                ("time", now.to_string()),
                ("version", crate::cli::VERSION.to_string()),
                ("pointer_size", (8 * std::mem::size_of::<usize>()).to_string()),
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
            let factor = servers.clamp(1, crate::cluster::hash_space::REPLICAS) as u64;
            lines.push(("curr_items", (copies / factor).to_string()));
            lines.push(("cluster_items", copies.to_string()));
            lines.push(("cluster_servers", servers.to_string()));
            lines.push(("cluster_servers_answered", answered.to_string()));
            let mut out = String::new();
            for (k, v) in lines {
                out += &format!("STAT {k} {v}\r\n");
            }
            out += "END\r\n";
            replies.fill(seq, Slot::Ready(out.into_bytes()));
        }));
    }
}

impl Session for TextSession {
    fn on_input(&mut self, input: &[u8], out: &Arc<Writer>) -> Result<usize, ()> {
        let replies = self.replies(out);
        let mut used = 0;
        loop {
            if self.swallow > 0 {
                let n = self.swallow.min(input.len() - used);
                self.swallow -= n;
                used += n;
                if self.swallow > 0 {
                    return Ok(used);
                }
            }
            let rest = &input[used..];
            match memtext::parse(rest, self.gw.value_max) {
                Parsed::Incomplete => return Ok(used),
                Parsed::Error { reply, len, swallow, close } => {
                    let seq = replies.reserve();
                    replies.answer(seq, reply.as_bytes());
                    used += len;
                    self.swallow = swallow;
                    if close {
                        let seq = replies.reserve();
                        replies.fill(seq, Slot::Close);
                        return Ok(input.len());
                    }
                }
                Parsed::Command { command, len } => {
                    let now = crate::server::node::unix_now();
                    match command {
                        Command::Get { keys, with_cas } => self.get(&replies, &keys, with_cas),
                        Command::Store { op, key, flags, exptime, bytes, cas, noreply } => {
                            if rest.len() < len + bytes + 2 {
                                return Ok(used);
                            }
                            let data = match memtext::value_of(&rest[len..], bytes) {
                                Ok(d) => d,
                                Err(e) => {
                                    // The value does not end where announced: the
                                    // stream cannot be trusted past this point.
                                    let seq = replies.reserve();
                                    replies.answer(seq, e.as_bytes());
                                    let seq = replies.reserve();
                                    replies.fill(seq, Slot::Close);
                                    return Ok(input.len());
                                }
                            };
                            let op = match op {
                                StoreOp::Set => Op::Set,
                                StoreOp::Add => Op::Add,
                                StoreOp::Replace => Op::Replace,
                                StoreOp::Append => Op::Append,
                                StoreOp::Prepend => Op::Prepend,
                                StoreOp::Cas => Op::Cas(cas),
                            };
                            let w = Write { op, flags, exptime: absolute_exptime(exptime, now), data: data.to_vec() };
                            self.write(&replies, key, w, noreply);
                            used += bytes + 2;
                        }
                        Command::Delete { key, noreply } => {
                            let w = Write { op: Op::Delete, flags: 0, exptime: 0, data: Vec::new() };
                            self.write(&replies, key, w, noreply);
                        }
                        Command::Arith { incr, key, delta, noreply } => {
                            let op = if incr { Op::Incr(delta) } else { Op::Decr(delta) };
                            self.write(&replies, key, Write { op, flags: 0, exptime: 0, data: Vec::new() }, noreply);
                        }
                        Command::Touch { key, exptime, noreply } => {
                            let w = Write { op: Op::Touch, flags: 0, exptime: absolute_exptime(exptime, now), data: Vec::new() };
                            self.write(&replies, key, w, noreply);
                        }
                        Command::Stats => self.stats(&replies),
                        Command::Version => {
                            let seq = replies.reserve();
                            replies.answer(seq, format!("VERSION {}", crate::cli::VERSION).as_bytes());
                        }
                        Command::Verbosity { noreply } => {
                            if !noreply {
                                let seq = replies.reserve();
                                replies.answer(seq, b"OK");
                            }
                        }
                        Command::Quit => {
                            let seq = replies.reserve();
                            replies.fill(seq, Slot::Close);
                            return Ok(input.len());
                        }
                    }
                    used += len;
                }
            }
        }
    }

    fn on_close(&mut self) {
        self.gw.counters.curr_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exptimes_follow_memcached() {
        assert_eq!(absolute_exptime(0, 1000), 0);
        assert_eq!(absolute_exptime(-1, 1000), 1);
        assert_eq!(absolute_exptime(10, 1000), 1010);
        assert_eq!(absolute_exptime(RELATIVE_EXPTIME_MAX + 1, 1000), RELATIVE_EXPTIME_MAX as u32 + 1);
        assert_eq!(absolute_exptime(i64::MAX, 1000), u32::MAX);
    }
}
