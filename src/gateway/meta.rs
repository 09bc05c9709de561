//! The meta commands, run against the cluster. [`crate::proto::memmeta`] parses
//! them and words their replies; this file decides where each one goes:
//!
//! - `mg` reads from any owner, as `get` does, unless it may change the item
//!   (`N`, `T`, `R`, or a stale item whose recache token nobody holds yet). Then it
//!   goes to the key's coordinator, which decides atomically, so that exactly one
//!   client in the cluster is told it won.
//! - `ms`, `md` and `ma` are coordinated writes, with the meta options
//!   ([`crate::cluster::write::Meta`]) the coordinator applies.
//! - `me` is a read.

use super::pipeline::{Footprint, Pipeline, Slot};
use crate::cluster::write::{self, Meta, Op, Outcome, Write};
use crate::proto::cluster::WriteRequest;
use crate::proto::memcache::absolute_exptime;
use crate::proto::memmeta::{self, Mode, Request, Shown, Verb};
use crate::record::Record;
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn shown<'a>(req: &'a Request, rec: &'a Record) -> Shown<'a> {
    Shown {
        key: &req.key,
        client_flags: rec.flags,
        exptime: rec.exptime,
        cas: rec.clock,
        data: &rec.data,
        stale: rec.marks.stale,
        token_sent: rec.marks.token_sent,
        key_binary: rec.marks.key_binary,
    }
}

impl Pipeline {
    /// Runs one meta command; its reply goes in slot `seq`. `data` is an `ms`'s value.
    pub(super) fn meta(self: &Arc<Self>, req: Box<Request>, data: Vec<u8>, seq: u64) {
        match req.verb {
            Verb::Get if req.may_write() => self.meta_get_at_coordinator(req, seq),
            Verb::Get | Verb::Debug => self.meta_read(req, seq),
            Verb::Noop => self.meta_done(&req, seq, b"MN\r\n".to_vec()),
            Verb::Set | Verb::Delete | Verb::Arith => self.meta_write(req, data, seq),
        }
    }

    fn meta_done(self: &Arc<Self>, req: &Request, seq: u64, reply: Vec<u8>) {
        self.replies.fill(seq, Slot::Ready(reply.into()));
        self.finished(Footprint::meta(req));
    }

    fn meta_read(self: &Arc<Self>, req: Box<Request>, seq: u64) {
        let me = self.clone();
        let key = Arc::new(req.key.clone());
        self.gw.get(
            key,
            Box::new(move |r| {
                let now = crate::time::unix_now();
                let c = &me.gw.counters;
                let rec = match r {
                    Ok(rec) => rec.filter(|rec| write::is_live(rec, now)),
                    Err(e) => {
                        c.get_errors.fetch_add(1, Ordering::Relaxed);
                        let reply = format!("SERVER_ERROR {e}\r\n").into_bytes();
                        return me.meta_done(&req, seq, reply);
                    }
                };
                if req.verb == Verb::Debug {
                    let reply =
                        memmeta::debug_reply(&req, rec.as_ref().map(|r| shown(&req, r)), now);
                    return me.meta_done(&req, seq, reply);
                }
                // The first reader of a stale item wins its recache token; only
                // the coordinator may hand it out.
                if rec
                    .as_ref()
                    .is_some_and(|r| r.marks.stale && !r.marks.token_sent)
                {
                    return me.meta_get_at_coordinator(req, seq);
                }
                me.count_get(rec.is_some());
                let reply =
                    memmeta::get_reply(&req, rec.as_ref().map(|r| shown(&req, r)), false, now);
                me.meta_done(&req, seq, reply);
            }),
        );
    }

    fn count_get(&self, hit: bool) {
        let c = &self.gw.counters;
        c.cmd_get.fetch_add(1, Ordering::Relaxed);
        let counter = if hit { &c.get_hits } else { &c.get_misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn meta_get_at_coordinator(self: &Arc<Self>, req: Box<Request>, seq: u64) {
        let now = crate::time::unix_now();
        let meta = Meta {
            vivify: req.vivify.map(|e| absolute_exptime(e, now)),
            ttl: req.ttl.map(|e| absolute_exptime(e, now)),
            recache_before: req.recache.map(|e| absolute_exptime(e, now)),
            return_record: true,
            ..Meta::default()
        };
        if req.ttl.is_some() {
            self.gw.counters.cmd_touch.fetch_add(1, Ordering::Relaxed);
        }
        let w = Write {
            meta,
            ..Write::plain(Op::Get, 0, 0, Vec::new())
        };
        self.send_meta_write(req, w, seq, false);
    }

    fn meta_write(self: &Arc<Self>, req: Box<Request>, data: Vec<u8>, seq: u64) {
        let now = crate::time::unix_now();
        // memcached: a cas of 0 is no cas for append, prepend and arithmetic, and
        // a cas turns set and replace into cas.
        let nonzero = req.compare.filter(|&c| c != 0);
        let (op, compare) = match (req.verb, req.mode) {
            (Verb::Set, Mode::Set | Mode::Replace) if req.compare.is_some() => {
                (Op::Cas(req.compare.unwrap_or(0)), None)
            }
            (Verb::Set, Mode::Add) => (Op::Add, None),
            (Verb::Set, Mode::Replace) => (Op::Replace, None),
            (Verb::Set, Mode::Append) => (Op::Append, nonzero),
            (Verb::Set, Mode::Prepend) => (Op::Prepend, nonzero),
            (Verb::Set, _) => (Op::Set, None),
            (Verb::Arith, Mode::Decr) => (Op::Decr(req.delta), nonzero),
            (Verb::Arith, _) => (Op::Incr(req.delta), nonzero),
            _ => (Op::Delete, req.compare),
        };
        let ttl = req.ttl.map(|e| absolute_exptime(e, now));
        let meta = Meta {
            compare,
            invalidate: req.invalidate,
            vivify: match req.verb {
                Verb::Arith => req.vivify.map(|e| absolute_exptime(e, now)),
                _ => None,
            },
            initial: req.initial,
            // ms takes its T as the item's exptime; md only with I.
            ttl: match req.verb {
                Verb::Arith => ttl,
                Verb::Delete if req.invalidate => ttl,
                _ => None,
            },
            recache_before: None,
            return_record: req.verb == Verb::Arith,
            key_binary: req.base64,
        };
        let exptime = if req.verb == Verb::Set {
            ttl.unwrap_or(0)
        } else {
            0
        };
        let c = &self.gw.counters;
        if req.verb == Verb::Set {
            c.cmd_set.fetch_add(1, Ordering::Relaxed);
        }
        let w = Write {
            meta,
            ..Write::plain(op, req.client_flags, exptime, data)
        };
        let no_wait = match op {
            Op::Delete => self.gw.async_delete,
            _ => self.gw.async_set,
        };
        self.send_meta_write(req, w, seq, no_wait);
    }

    fn send_meta_write(self: &Arc<Self>, req: Box<Request>, w: Write, seq: u64, no_wait: bool) {
        let op = w.op;
        let wr = Arc::new(WriteRequest {
            key: req.key.clone(),
            write: w,
            no_wait,
            budget_ms: None,
        });
        let me = self.clone();
        self.gw.write(
            wr,
            Box::new(move |r| {
                let now = crate::time::unix_now();
                let (outcome, cas, rec) = match r {
                    Ok(answer) => answer,
                    Err(e) => {
                        me.gw.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                        log::warn!("meta command failed: {e}");
                        let reply = format!("SERVER_ERROR {e}\r\n").into_bytes();
                        return me.meta_done(&req, seq, reply);
                    }
                };
                me.count_write(op, outcome);
                let item = rec.as_ref().map(|r| shown(&req, r));
                let reply = match op {
                    Op::Get => {
                        let won = matches!(outcome, Outcome::Fetched { won: true });
                        me.count_get(item.is_some());
                        if req.ttl.is_some() {
                            let c = &me.gw.counters;
                            let t = if item.is_some() {
                                &c.touch_hits
                            } else {
                                &c.touch_misses
                            };
                            t.fetch_add(1, Ordering::Relaxed);
                        }
                        memmeta::get_reply(&req, item, won, now)
                    }
                    _ => memmeta::write_reply(&req, outcome, cas, item, now),
                };
                me.meta_done(&req, seq, reply);
            }),
        );
    }

    fn count_write(&self, op: Op, o: Outcome) {
        let c = &self.gw.counters;
        let pair = match op {
            Op::Delete => (&c.delete_hits, &c.delete_misses),
            Op::Incr(_) => (&c.incr_hits, &c.incr_misses),
            Op::Decr(_) => (&c.decr_hits, &c.decr_misses),
            _ => return,
        };
        let counter = if o == Outcome::NotFound {
            pair.1
        } else {
            pair.0
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
