//! One memcached text connection, as a state machine. Bytes come in; the codecs of
//! `proto/` ([`memtext`], and [`crate::proto::memmeta`] for the meta commands) say
//! what they are; each command becomes a job of the connection's pipeline
//! (`gateway/pipeline.rs`), which runs it against the cluster and answers in
//! request order. A connection sees its own writes, as with memcached.
//!
//! ```text
//!              line read                     value + CRLF in
//!   Command ─────────────────► Value ──────────────────────────► Command
//!     │  │ get line > 64 KiB                 keys taken as they come, until \n
//!     │  └──────────────────► GetKeys ─────────────────────────► Command
//!     │ value over -I                        its bytes skipped
//!     ├─────────────────────► Swallow ─────────────────────────► Command
//!     │ quit, or input that cannot be resynchronised
//!     └─────────────────────► Closing (input ignored; closed once answers are out)
//! ```
//!
//! A line is parsed once: a store's value is then awaited in `Value`, not found by
//! parsing its line again. Before each command the session asks the pipeline for
//! room; without it the session stops reading (backpressure), and the pipeline
//! brings it back once answers have gone out.

use super::client::Client;
use super::flow::{Gathering, GetRun};
use super::form::Form;
use super::pipeline::{Job, Pipeline, Place, Slot};
use super::Gateway;
use crate::cluster::write::{Op, Write};
use crate::net::{Session, SessionFactory, Writer};
use crate::proto::memcache::absolute_exptime;
use crate::proto::memmeta::{self, Verb};
use crate::proto::memtext::{self, Command, Parsed, StoreOp};
use std::sync::Arc;

/// Where the connection is in its input.
enum State {
    /// At the start of a command line.
    Command,
    /// A storage line was read; its value and CRLF are awaited, gathered as
    /// they come.
    Value(Pending, Gathering),
    /// Inside a get line longer than `LINE_SIZE_MAX`: its keys are taken as they
    /// arrive.
    GetKeys { with_cas: bool },
    /// Dropping the rest of a line refused partway.
    SkipLine,
    /// Skipping this many bytes of an oversized value and its CRLF.
    Swallow(usize),
    /// After quit or a fatal error: input is ignored until the connection closes.
    Closing,
}

/// A storage command whose value is on its way.
enum Pending {
    Store {
        op: Op,
        key: Vec<u8>,
        flags: u32,
        exptime: i64,
        bytes: usize,
        noreply: bool,
    },
    Meta(Box<memmeta::Request>),
}

impl Pending {
    fn bytes(&self) -> usize {
        match self {
            Pending::Store { bytes, .. } => *bytes,
            Pending::Meta(req) => req.datalen,
        }
    }
}

pub struct TextSession {
    client: Client,
    state: State,
}

/// Sessions for the connections accepted on `listen`.
pub fn factory(gw: Arc<Gateway>, listen: std::net::SocketAddr) -> SessionFactory {
    Arc::new(move |peer| {
        Box::new(TextSession {
            client: Client::open(&gw, peer, listen),
            state: State::Command,
        })
    })
}

impl Session for TextSession {
    fn on_open(&mut self, out: &Arc<Writer>) {
        self.client.opened(out);
    }

    fn on_input(&mut self, input: &[u8], out: &Arc<Writer>) -> Result<usize, ()> {
        if matches!(self.state, State::Closing) {
            return Ok(input.len());
        }
        let now = crate::time::unix_now();
        let pipe = self.client.input(out, now);
        let mut used = 0;
        let mut paused = false;
        while used < input.len() {
            let rest = &input[used..];
            match std::mem::replace(&mut self.state, State::Command) {
                State::Closing => {
                    self.state = State::Closing;
                    return Ok(input.len());
                }
                State::Swallow(n) => {
                    let k = n.min(rest.len());
                    used += k;
                    if k < n {
                        self.state = State::Swallow(n - k);
                    }
                }
                State::SkipLine => match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => used += i + 1,
                    None => {
                        self.state = State::SkipLine;
                        used = input.len();
                    }
                },
                // Every other state starts work: only with room for it.
                state if !pipe.has_room() => {
                    self.state = state;
                    paused = true;
                    break;
                }
                State::GetKeys { with_cas } => match memtext::take_keys(rest) {
                    Ok((keys, n, last)) => {
                        if !keys.is_empty() || last {
                            submit_get(&pipe, &keys, with_cas, None, last);
                        }
                        used += n;
                        if !last {
                            self.state = State::GetKeys { with_cas };
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    Err((reply, n, line_ended)) => {
                        answer(&pipe, reply);
                        used += n;
                        if !line_ended {
                            self.state = State::SkipLine;
                        }
                    }
                },
                State::Value(p, mut value) => {
                    used += value.take(rest);
                    if !value.is_complete() {
                        self.state = State::Value(p, value);
                        break;
                    }
                    value_arrived(&pipe, p, value.into_inner(), now);
                }
                State::Command => match memtext::parse(rest, self.client.gw.value_max) {
                    Parsed::Incomplete => break,
                    Parsed::LongGet { with_cas, len } => {
                        used += len;
                        self.state = State::GetKeys { with_cas };
                    }
                    Parsed::Error {
                        reply,
                        len,
                        swallow,
                        close,
                        invalidate,
                    } => {
                        if !reply.is_empty() {
                            answer(&pipe, reply);
                        }
                        if let Some(key) = invalidate {
                            // memcached drops the old value of a key whose set was
                            // refused as too large.
                            let w = Write::plain(Op::Delete, 0, 0, Vec::new());
                            let place = Place {
                                seq: pipe.replies.reserve(),
                                form: Form::Text { silent: true },
                            };
                            pipe.submit(Job::Write { key, w, place });
                        }
                        used += len;
                        if swallow > 0 {
                            self.state = State::Swallow(swallow);
                        }
                        if close {
                            self.close(&pipe);
                            return Ok(input.len());
                        }
                    }
                    Parsed::Command { command, len } => {
                        used += len;
                        self.state = self.command(&pipe, command, now);
                        if matches!(self.state, State::Closing) {
                            return Ok(input.len());
                        }
                    }
                },
            }
        }
        // A command or value that stopped arriving partway is timed from here (see
        // `--command-timeout`); time the pipeline made it wait does not count.
        let partial = used < input.len() || !matches!(self.state, State::Command);
        self.client.info.note_input(now, partial, paused);
        Ok(used)
    }

    fn on_close(&mut self) {
        self.client.closed();
    }
}

impl TextSession {
    /// Runs one parsed command; returns the state the connection goes on in.
    fn command(&mut self, pipe: &Arc<Pipeline>, command: Command, now: u32) -> State {
        let replies = &pipe.replies;
        let write = |key: &[u8], op, exptime, noreply| Job::Write {
            key: key.to_vec(),
            w: Write::plain(op, 0, exptime, Vec::new()),
            place: Place {
                seq: replies.reserve(),
                form: Form::Text { silent: noreply },
            },
        };
        let job = match command {
            Command::Get { keys, with_cas } => {
                submit_get(pipe, &keys, with_cas, None, true);
                return State::Command;
            }
            Command::GetAndTouch {
                exptime,
                keys,
                with_cas,
            } => {
                let touch = Some(absolute_exptime(exptime, now));
                submit_get(pipe, &keys, with_cas, touch, true);
                return State::Command;
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
                let op = match op {
                    StoreOp::Set => Op::Set,
                    StoreOp::Add => Op::Add,
                    StoreOp::Replace => Op::Replace,
                    StoreOp::Append => Op::Append,
                    StoreOp::Prepend => Op::Prepend,
                    StoreOp::Cas => Op::Cas(cas),
                };
                return State::Value(
                    Pending::Store {
                        op,
                        key: key.to_vec(),
                        flags,
                        exptime,
                        bytes,
                        noreply,
                    },
                    Gathering::new(bytes + 2),
                );
            }
            Command::Delete { key, noreply } => write(key, Op::Delete, 0, noreply),
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
                write(key, op, 0, noreply)
            }
            Command::Touch {
                key,
                exptime,
                noreply,
            } => write(key, Op::Touch, absolute_exptime(exptime, now), noreply),
            Command::Stats(group) => Job::Stats {
                group,
                place: Place {
                    seq: replies.reserve(),
                    form: Form::text(),
                },
            },
            Command::Flush { delay, noreply } => Job::Flush {
                delay,
                place: Place {
                    seq: replies.reserve(),
                    form: Form::Text { silent: noreply },
                },
            },
            Command::Version => {
                answer(pipe, &format!("VERSION {}", super::version_text()));
                return State::Command;
            }
            Command::Verbosity { noreply } => {
                if !noreply {
                    answer(pipe, "OK");
                }
                return State::Command;
            }
            Command::Meta(req) if req.verb == Verb::Noop => {
                answer(pipe, "MN");
                return State::Command;
            }
            Command::Meta(req) if req.verb == Verb::Set => {
                let value = Gathering::new(req.datalen + 2);
                return State::Value(Pending::Meta(req), value);
            }
            Command::Meta(req) => Job::Meta {
                req,
                data: Vec::new(),
                seq: replies.reserve(),
            },
            Command::Quit => {
                self.close(pipe);
                return State::Closing;
            }
        };
        pipe.submit(job);
        State::Command
    }

    /// Closes the connection once every answer before this point is out.
    fn close(&mut self, pipe: &Arc<Pipeline>) {
        let seq = pipe.replies.reserve();
        pipe.replies.fill(seq, Slot::Close);
        self.state = State::Closing;
    }
}

/// Answers `text` in the next place of the reply order.
fn answer(pipe: &Pipeline, text: &str) {
    let seq = pipe.replies.reserve();
    pipe.replies.answer(seq, text.as_bytes());
}

/// Queues a get of `keys`: their answers take places in a row, then `END` if `end`.
fn submit_get(pipe: &Arc<Pipeline>, keys: &[&[u8]], with_cas: bool, touch: Option<u32>, end: bool) {
    let seq = pipe.replies.reserve_many(GetRun::places(keys.len(), end));
    let keys = keys.iter().map(|k| k.to_vec()).collect();
    let run = GetRun::new(keys, with_cas, touch, seq, end, Form::text());
    pipe.submit(Job::Get(run));
}

/// A storage command's value and its CRLF (`data`) have arrived.
fn value_arrived(pipe: &Arc<Pipeline>, p: Pending, mut data: Vec<u8>, now: u32) {
    let value = memtext::value_of(&data, p.bytes()).map(<[u8]>::len);
    match (p, value) {
        (Pending::Store { noreply, .. }, Err(e)) => {
            // memcached reads exactly the announced bytes and goes on after them
            // (silently under noreply).
            if !noreply {
                answer(pipe, e);
            }
        }
        // Meta errors are never quiet.
        (Pending::Meta(_), Err(e)) => answer(pipe, e),
        (
            Pending::Store {
                op,
                key,
                flags,
                exptime,
                noreply,
                ..
            },
            Ok(len),
        ) => {
            data.truncate(len);
            let w = Write::plain(op, flags, absolute_exptime(exptime, now), data);
            let place = Place {
                seq: pipe.replies.reserve(),
                form: Form::Text { silent: noreply },
            };
            pipe.submit(Job::Write { key, w, place });
        }
        (Pending::Meta(req), Ok(len)) => {
            data.truncate(len);
            pipe.submit(Job::Meta {
                req,
                data,
                seq: pipe.replies.reserve(),
            })
        }
    }
}
