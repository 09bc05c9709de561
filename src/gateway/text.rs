//! The memcached text protocol session. Commands are parsed by
//! [`crate::proto::memtext`] and handed to the connection's pipeline
//! (`gateway/pipeline.rs`), which runs them against the cluster and answers in
//! request order. A connection sees its own writes, as with memcached.

use super::pipeline::{Job, Pipeline, Place, Slot, PIPELINE_MAX};
use super::Gateway;
use crate::cluster::write::{Op, Write};
use crate::net::{Session, SessionFactory, Writer};
use crate::proto::memcache::absolute_exptime;
use crate::proto::memmeta::Verb;
use crate::proto::memtext::{self, Command, Parsed, StoreOp};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct TextSession {
    gw: Arc<Gateway>,
    pipeline: Option<Arc<Pipeline>>,
    /// Bytes of an oversized value still to be skipped.
    swallow: usize,
    /// After `quit` (or a refusal) input is ignored until the connection closes.
    closing: bool,
    /// This connection in `stats conns`.
    id: u64,
    info: Arc<super::stats::ConnInfo>,
}

impl TextSession {
    fn pipeline(&mut self, out: &Arc<Writer>) -> Arc<Pipeline> {
        let gw = self.gw.clone();
        self.pipeline
            .get_or_insert_with(|| Pipeline::new(gw, out))
            .clone()
    }
}

pub fn factory(gw: Arc<Gateway>) -> SessionFactory {
    Arc::new(move |peer| {
        gw.counters.curr_connections.fetch_add(1, Ordering::Relaxed);
        gw.counters
            .total_connections
            .fetch_add(1, Ordering::Relaxed);
        let (id, info) = gw.conns.open(peer, crate::time::unix_now());
        Box::new(TextSession {
            gw: gw.clone(),
            pipeline: None,
            swallow: 0,
            closing: false,
            id,
            info,
        })
    })
}

impl Session for TextSession {
    fn on_input(&mut self, input: &[u8], out: &Arc<Writer>) -> Result<usize, ()> {
        if self.closing {
            return Ok(input.len());
        }
        self.info.touched(crate::time::unix_now());
        let pipe = self.pipeline(out);
        let replies = &pipe.replies;
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
            let (job, len) = match memtext::parse(rest, self.gw.value_max) {
                Parsed::Incomplete => return Ok(used),
                Parsed::Error {
                    reply,
                    len,
                    swallow,
                    close,
                    invalidate,
                } => {
                    if !reply.is_empty() {
                        let seq = replies.reserve();
                        replies.answer(seq, reply.as_bytes());
                    }
                    if let Some(key) = invalidate {
                        let w = Write::plain(Op::Delete, 0, 0, Vec::new());
                        if pipe
                            .submit(Job::Write {
                                key,
                                w,
                                place: Place {
                                    seq: replies.reserve(),
                                    silent: true,
                                },
                            })
                            .is_err()
                        {
                            return Err(());
                        }
                    }
                    used += len;
                    self.swallow = swallow;
                    if close {
                        let seq = replies.reserve();
                        replies.fill(seq, Slot::Close);
                        self.closing = true;
                        return Ok(input.len());
                    }
                    continue;
                }
                Parsed::Command { command, len } => {
                    let now = crate::time::unix_now();
                    let write =
                        |op, exptime, data: &[u8]| Write::plain(op, 0, exptime, data.to_vec());
                    let slot = |noreply: bool| Place {
                        seq: replies.reserve(),
                        silent: noreply,
                    };
                    match command {
                        Command::Get { keys, with_cas } => {
                            let keys = keys.iter().map(|k| k.to_vec()).collect();
                            (
                                Job::Get {
                                    keys,
                                    with_cas,
                                    touch: None,
                                    seq: replies.reserve(),
                                },
                                len,
                            )
                        }
                        Command::GetAndTouch {
                            exptime,
                            keys,
                            with_cas,
                        } => {
                            let keys = keys.iter().map(|k| k.to_vec()).collect();
                            (
                                Job::Get {
                                    keys,
                                    with_cas,
                                    touch: Some(absolute_exptime(exptime, now)),
                                    seq: replies.reserve(),
                                },
                                len,
                            )
                        }
                        Command::Store {
                            op,
                            key,
                            flags,
                            exptime,
                            bytes,
                            cas,
                            noreply,
                        } => {
                            if rest.len() < len + bytes + 2 {
                                return Ok(used);
                            }
                            let data = match memtext::value_of(&rest[len..], bytes) {
                                Ok(d) => d,
                                Err(e) => {
                                    // memcached reads exactly the announced bytes and
                                    // goes on after them (silently under noreply).
                                    if !noreply {
                                        let seq = replies.reserve();
                                        replies.answer(seq, e.as_bytes());
                                    }
                                    used += len + bytes + 2;
                                    continue;
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
                            let w = Write::plain(
                                op,
                                flags,
                                absolute_exptime(exptime, now),
                                data.to_vec(),
                            );
                            (
                                Job::Write {
                                    key: key.to_vec(),
                                    w,
                                    place: slot(noreply),
                                },
                                len + bytes + 2,
                            )
                        }
                        Command::Delete { key, noreply } => (
                            Job::Write {
                                key: key.to_vec(),
                                w: write(Op::Delete, 0, b""),
                                place: slot(noreply),
                            },
                            len,
                        ),
                        Command::Arith {
                            incr,
                            key,
                            delta,
                            noreply,
                        } => {
                            let op = if incr {
                                Op::Incr(delta)
                            } else {
                                Op::Decr(delta)
                            };
                            (
                                Job::Write {
                                    key: key.to_vec(),
                                    w: write(op, 0, b""),
                                    place: slot(noreply),
                                },
                                len,
                            )
                        }
                        Command::Touch {
                            key,
                            exptime,
                            noreply,
                        } => {
                            let w = write(Op::Touch, absolute_exptime(exptime, now), b"");
                            (
                                Job::Write {
                                    key: key.to_vec(),
                                    w,
                                    place: slot(noreply),
                                },
                                len,
                            )
                        }
                        Command::Stats(group) => (
                            Job::Stats {
                                group,
                                seq: replies.reserve(),
                            },
                            len,
                        ),
                        Command::Flush { delay, noreply } => (
                            Job::Flush {
                                delay,
                                place: slot(noreply),
                            },
                            len,
                        ),
                        Command::Version => {
                            let seq = replies.reserve();
                            replies.answer(
                                seq,
                                format!("VERSION {}", super::version_text()).as_bytes(),
                            );
                            used += len;
                            continue;
                        }
                        Command::Verbosity { noreply } => {
                            if !noreply {
                                let seq = replies.reserve();
                                replies.answer(seq, b"OK");
                            }
                            used += len;
                            continue;
                        }
                        Command::Meta(req) if req.verb == Verb::Noop => {
                            let seq = replies.reserve();
                            replies.answer(seq, b"MN");
                            used += len;
                            continue;
                        }
                        Command::Meta(req) => {
                            let mut taken = len;
                            let mut data = Vec::new();
                            if req.verb == Verb::Set {
                                if rest.len() < len + req.datalen + 2 {
                                    return Ok(used);
                                }
                                taken += req.datalen + 2;
                                match memtext::value_of(&rest[len..], req.datalen) {
                                    Ok(d) => data = d.to_vec(),
                                    Err(e) => {
                                        // Meta errors are never quiet.
                                        let seq = replies.reserve();
                                        replies.answer(seq, e.as_bytes());
                                        used += taken;
                                        continue;
                                    }
                                }
                            }
                            (
                                Job::Meta {
                                    req,
                                    data,
                                    seq: replies.reserve(),
                                },
                                taken,
                            )
                        }
                        Command::Quit => {
                            let seq = replies.reserve();
                            replies.fill(seq, Slot::Close);
                            self.closing = true;
                            return Ok(input.len());
                        }
                    }
                }
            };
            used += len;
            if let Err(job) = pipe.submit(job) {
                log::warn!(
                    "{}: more than {PIPELINE_MAX} commands queued; closing",
                    out.peer()
                );
                // The refused command's own slot carries the error, then the close;
                // nothing after it runs.
                let refused = b"SERVER_ERROR too many pipelined commands";
                match job {
                    Job::Get { seq, .. }
                    | Job::Stats { seq, .. }
                    | Job::Write {
                        place: Place { seq, .. },
                        ..
                    }
                    | Job::Flush {
                        place: Place { seq, .. },
                        ..
                    }
                    | Job::Meta { seq, .. } => replies.answer(seq, refused),
                }
                let seq = replies.reserve();
                replies.fill(seq, Slot::Close);
                self.closing = true;
                return Ok(input.len());
            }
        }
    }

    fn on_close(&mut self) {
        self.gw.conns.close(self.id);
        self.gw
            .counters
            .curr_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}
