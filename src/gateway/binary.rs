//! One memcached binary-protocol connection (`-b`), as a state machine over the
//! packets [`crate::proto::membin`] reads: a packet is taken whole (`Packet`), an
//! oversized value is skipped (`Swallow`), and after QUIT or a stream that cannot be
//! read in step the input is ignored (`Closing`). Each request becomes a job of the
//! same pipeline the text protocol uses, answered in the binary [`Form`].

use super::client::Client;
use super::flow::{Gathering, GetRun};
use super::form::Form;
use super::pipeline::{Job, Pipeline, Place, Slot};
use super::Gateway;
use crate::cluster::write::{Meta, Op, Write};
use crate::net::{Session, SessionFactory, Writer};
use crate::proto::membin::{self, Command, Header, Parsed, Status, StoreOp, To, NO_CREATE};
use crate::proto::memcache::absolute_exptime;
use crate::proto::memtext;
use std::sync::Arc;

enum State {
    /// At the start of a packet.
    Packet,
    /// A store packet whose header was read, gathered as the rest of it comes.
    Body(Gathering),
    /// Skipping this many bytes of an oversized value.
    Swallow(usize),
    /// After QUIT, or input that cannot be read in step.
    Closing,
}

pub struct BinarySession {
    client: Client,
    state: State,
}

/// Sessions for the connections accepted on `listen`.
pub fn factory(gw: Arc<Gateway>, listen: std::net::SocketAddr) -> SessionFactory {
    Arc::new(move |peer| {
        Box::new(BinarySession {
            client: Client::open(&gw, peer, listen),
            state: State::Packet,
        })
    })
}

impl Session for BinarySession {
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
            // A store whose body has not all come is gathered, not left waiting
            // in the input.
            let gather = match self.state {
                State::Packet => membin::gathers(rest, self.client.gw.value_max),
                _ => None,
            };
            match std::mem::replace(&mut self.state, State::Packet) {
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
                State::Body(mut packet) => {
                    used += packet.take(rest);
                    if !packet.is_complete() {
                        self.state = State::Body(packet);
                        break;
                    }
                    if !self.gathered(&pipe, packet.into_inner(), now) {
                        return Ok(input.len());
                    }
                }
                State::Packet if !pipe.has_room() => {
                    paused = true;
                    break;
                }
                State::Packet if gather.is_some() => {
                    let mut packet = Gathering::new(gather.unwrap_or_default());
                    used += packet.take(rest);
                    self.state = State::Body(packet);
                }
                State::Packet => match membin::parse(rest, self.client.gw.value_max) {
                    Parsed::Incomplete => break,
                    Parsed::Refused {
                        to,
                        status,
                        len,
                        swallow,
                        close,
                        answer,
                        invalidate,
                    } => {
                        if answer {
                            reply(&pipe, membin::error(to, status));
                        }
                        if let Some(key) = invalidate {
                            // memcached drops the old value of a key whose SET was
                            // refused as too large.
                            let form = Form::Text { silent: true };
                            let place = Place {
                                seq: pipe.replies.reserve(),
                                form,
                            };
                            let w = Write::plain(Op::Delete, 0, 0, Vec::new());
                            let key = key.to_vec();
                            pipe.submit(Job::Write { key, w, place });
                        }
                        used += len.min(rest.len());
                        if swallow > 0 {
                            self.state = State::Swallow(swallow);
                        }
                        if close {
                            self.close(&pipe);
                            return Ok(input.len());
                        }
                    }
                    Parsed::Request {
                        header,
                        command,
                        len,
                    } => {
                        used += len;
                        if !self.command(&pipe, &header, command, now) {
                            return Ok(input.len());
                        }
                    }
                },
            }
        }
        let partial = used < input.len() || !matches!(self.state, State::Packet);
        self.client.info.note_input(now, partial, paused);
        Ok(used)
    }

    fn on_close(&mut self) {
        self.client.closed();
    }
}

/// The write of a store request: SET, ADD, REPLACE, APPEND, PREPEND, quiet or not.
fn store_job(
    pipe: &Pipeline,
    h: &Header,
    (op, key, flags, exptime): (StoreOp, Vec<u8>, u32, i64),
    value: Vec<u8>,
    now: u32,
) -> Job {
    let cas = (h.cas != 0).then_some(h.cas);
    let (op, compare) = match (op, cas) {
        // memcached: a cas turns set, add and replace into cas.
        (StoreOp::Set | StoreOp::Add | StoreOp::Replace, Some(c)) => (Op::Cas(c), None),
        (StoreOp::Set, None) => (Op::Set, None),
        (StoreOp::Replace, None) => (Op::Replace, None),
        (StoreOp::Add, None) => (Op::Add, None),
        (StoreOp::Append, c) => (Op::Append, c),
        (StoreOp::Prepend, c) => (Op::Prepend, c),
    };
    Job::Write {
        key,
        w: Write {
            meta: Meta {
                compare,
                ..Meta::default()
            },
            ..Write::plain(op, flags, absolute_exptime(exptime, now), value)
        },
        place: Place {
            seq: pipe.replies.reserve(),
            form: Form::Binary {
                to: To::of(h),
                with_key: false,
            },
        },
    }
}

/// Answers `bytes` in the next place of the reply order.
fn reply(pipe: &Pipeline, bytes: Vec<u8>) {
    let seq = pipe.replies.reserve();
    pipe.replies.fill(seq, Slot::Ready(bytes.into()));
}

impl BinarySession {
    /// Runs one request; false when the connection is to close.
    fn command(&mut self, pipe: &Arc<Pipeline>, h: &Header, command: Command, now: u32) -> bool {
        let to = To::of(h);
        let form = Form::Binary {
            to,
            with_key: false,
        };
        let place = |pipe: &Pipeline| Place {
            seq: pipe.replies.reserve(),
            form,
        };
        // A cas of 0 is none.
        let cas = (h.cas != 0).then_some(h.cas);
        let write = |op, flags, exptime, data: &[u8], meta| Write {
            meta,
            ..Write::plain(op, flags, exptime, data.to_vec())
        };
        let job = match command {
            Command::Get {
                key,
                with_key,
                touch,
            } => {
                let form = Form::Binary { to, with_key };
                let touch = touch.map(|e| absolute_exptime(e, now));
                let seq = pipe.replies.reserve();
                let run = GetRun::new(vec![key.to_vec()], true, touch, seq, false, form);
                Job::Get(run)
            }
            Command::Store {
                op,
                key,
                flags,
                exptime,
                value,
            } => {
                let key = key.to_vec();
                store_job(pipe, h, (op, key, flags, exptime), value.to_vec(), now)
            }
            Command::Delete { key } => Job::Write {
                key: key.to_vec(),
                w: write(
                    Op::Delete,
                    0,
                    0,
                    b"",
                    Meta {
                        compare: cas,
                        ..Meta::default()
                    },
                ),
                place: place(pipe),
            },
            Command::Arith {
                incr,
                key,
                delta,
                initial,
                exptime,
            } => {
                let op = if incr {
                    Op::Incr(delta)
                } else {
                    Op::Decr(delta)
                };
                let meta = Meta {
                    compare: cas,
                    vivify: (exptime != NO_CREATE)
                        .then(|| absolute_exptime(i64::from(exptime), now)),
                    initial,
                    ..Meta::default()
                };
                Job::Write {
                    key: key.to_vec(),
                    w: write(op, 0, 0, b"", meta),
                    place: place(pipe),
                }
            }
            // TOUCH answers with the item's flags, as a get without its value.
            Command::Touch { key, exptime } => {
                let touch = Some(absolute_exptime(exptime, now));
                let seq = pipe.replies.reserve();
                Job::Get(GetRun::new(
                    vec![key.to_vec()],
                    true,
                    touch,
                    seq,
                    false,
                    form,
                ))
            }
            Command::Flush { delay } => Job::Flush {
                delay: i64::from(delay),
                place: place(pipe),
            },
            Command::Stat { group } => {
                // The group is read as the text protocol reads `stats <group>`.
                let mut line = b"stats ".to_vec();
                line.extend_from_slice(group);
                line.extend_from_slice(b"\r\n");
                match memtext::parse(&line, 0) {
                    memtext::Parsed::Command {
                        command: memtext::Command::Stats(group),
                        ..
                    } => Job::Stats {
                        group,
                        place: place(pipe),
                    },
                    _ => {
                        reply(pipe, membin::error(to, Status::NotFound));
                        return true;
                    }
                }
            }
            Command::Version => {
                let v = super::version_text();
                reply(
                    pipe,
                    membin::response(to, Status::Ok, 0, &[], &[], v.as_bytes()),
                );
                return true;
            }
            Command::Noop => {
                reply(pipe, membin::response(to, Status::Ok, 0, &[], &[], &[]));
                return true;
            }
            Command::Quit => {
                if !to.quiet {
                    reply(pipe, membin::response(to, Status::Ok, 0, &[], &[], &[]));
                }
                self.close(pipe);
                return false;
            }
        };
        pipe.submit(job);
        true
    }

    /// Runs a store packet gathered whole (see [`State::Body`]): its value is
    /// taken out of the packet's own buffer, not copied. False when the connection
    /// is to close.
    fn gathered(&mut self, pipe: &Arc<Pipeline>, mut packet: Vec<u8>, now: u32) -> bool {
        let store = match membin::parse(&packet, self.client.gw.value_max) {
            Parsed::Request {
                header,
                command:
                    Command::Store {
                        op,
                        key,
                        flags,
                        exptime,
                        ..
                    },
                ..
            } => (header, (op, key.to_vec(), flags, exptime)),
            // `gathers` takes only what `parse` reads as a store.
            _ => {
                log::warn!("a gathered binary packet does not read as a store; closing");
                self.close(pipe);
                return false;
            }
        };
        let (header, fields) = store;
        packet.drain(..membin::value_offset(&header));
        pipe.submit(store_job(pipe, &header, fields, packet, now));
        true
    }

    /// Closes the connection once every answer before this point is out.
    fn close(&mut self, pipe: &Arc<Pipeline>) {
        let seq = pipe.replies.reserve();
        pipe.replies.fill(seq, Slot::Close);
        self.state = State::Closing;
    }
}
