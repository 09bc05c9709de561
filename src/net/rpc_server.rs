//! The serving side of msgpack-rpc: frames in, method calls to a [`Service`], replies
//! out through a [`Reply`] that may be answered later from another thread.

use super::conn::{Session, Writer};
use super::SessionFactory;
use crate::proto::rpc::{self, FrameReader, Message};
use rmpv::Value;
use std::net::SocketAddr;
use std::sync::Arc;

/// What a role implements to serve RPC. `call` runs on a worker thread and must not
/// block; work that waits on other nodes keeps the `Reply` and answers from the
/// callback of its own calls.
pub trait Service: Send + Sync + 'static {
    fn call(&self, method: &str, params: Vec<Value>, reply: Reply);

    /// Whether [`Service::call_raw`] serves `method`: its requests that arrive
    /// whole are then handed over with their params still encoded, not as Values
    /// (the hot path's messages, whose shape the service knows).
    fn reads_raw(&self, _method: &str) -> bool {
        false
    }

    /// A request of a method [`Service::reads_raw`] named; `params` is its encoded
    /// params array.
    fn call_raw(&self, method: &str, _params: &[u8], reply: Reply) {
        reply.unknown_method(method)
    }

    /// A notification: no reply is possible. The default ignores it.
    fn notify(&self, method: &str, _params: Vec<Value>) {
        log::debug!("ignored notification {method}");
    }
}

/// The right to answer one request. Dropping it unanswered sends an error, so a
/// handler bug can never leave a caller waiting for its timeout.
pub struct Reply {
    msgid: u32,
    writer: Option<Arc<Writer>>,
}

/// Room a reply is encoded into first: an acknowledgement or a small record fits,
/// so most replies are one allocation with no growing.
const REPLY_CAPACITY: usize = 128;

impl Reply {
    pub fn ok(mut self, result: impl Into<Value>) {
        self.send(Ok(result.into()));
    }

    /// Sends a result that `write` encodes (one msgpack object) into the reply,
    /// which has room for `size_hint` bytes of it.
    pub fn ok_written(mut self, size_hint: usize, write: impl FnOnce(&mut Vec<u8>)) {
        if let Some(w) = self.writer.take() {
            let mut buf = Vec::with_capacity(REPLY_CAPACITY + size_hint);
            rpc::encode_response_head(&mut buf, self.msgid);
            write(&mut buf);
            w.send(&buf);
        }
    }

    /// Sends an error reply; the connection stays open.
    pub fn err(mut self, error: impl Into<Value>) {
        self.send(Err(error.into()));
    }

    pub fn send_result(mut self, outcome: Result<Value, Value>) {
        self.send(outcome);
    }

    /// The standard answer to a method the service does not know.
    pub fn unknown_method(self, method: &str) {
        self.err(format!("unknown method {method}"));
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        self.writer.as_ref().map(|w| w.peer())
    }

    fn send(&mut self, outcome: Result<Value, Value>) {
        if let Some(w) = self.writer.take() {
            let mut buf = Vec::with_capacity(REPLY_CAPACITY);
            rpc::encode_response(&mut buf, self.msgid, &outcome);
            w.send(&buf);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if self.writer.is_some() {
            log::error!("reply to msgid {} dropped unanswered", self.msgid);
            self.send(Err(Value::from("internal error: request dropped")));
        }
    }
}

/// One accepted RPC connection.
pub struct RpcSession {
    service: Arc<dyn Service>,
    peer: SocketAddr,
    /// The peer presented the cluster key (always true without one; see
    /// [`super::auth`]).
    authenticated: bool,
    frames: FrameReader,
}

impl RpcSession {
    pub fn factory(service: Arc<dyn Service>) -> SessionFactory {
        Arc::new(move |peer| {
            Box::new(RpcSession {
                service: service.clone(),
                peer,
                authenticated: super::auth::token().is_none(),
                frames: FrameReader::default(),
            })
        })
    }
}

impl Session for RpcSession {
    fn on_input(&mut self, input: &[u8], out: &Arc<Writer>) -> Result<usize, ()> {
        let mut used = 0;
        loop {
            if self.authenticated && !self.frames.is_inside_a_frame() {
                let raw = rpc::request_at(&input[used..], |m| self.service.reads_raw(m));
                if let Some(r) = raw {
                    self.frames.taken_whole();
                    used += r.len;
                    let reply = Reply {
                        msgid: r.msgid,
                        writer: Some(out.clone()),
                    };
                    self.service.call_raw(r.method, r.params, reply);
                    if used == input.len() {
                        return Ok(used);
                    }
                    continue;
                }
            }
            match self.frames.read(&input[used..]) {
                Ok((n, None)) => {
                    used += n;
                    if n == 0 || used == input.len() {
                        return Ok(used);
                    }
                }
                Ok((n, Some(message))) => {
                    used += n;
                    match message {
                        Message::Request {
                            msgid,
                            method,
                            params,
                        } if method == super::auth::AUTH || !self.authenticated => {
                            let reply = Reply {
                                msgid,
                                writer: Some(out.clone()),
                            };
                            if method == super::auth::AUTH && super::auth::accepts(&params) {
                                self.authenticated = true;
                                reply.ok(true);
                                continue;
                            }
                            let why = if method == super::auth::AUTH {
                                "wrong cluster key"
                            } else {
                                "this cluster requires its key (--cluster-key) first"
                            };
                            log::warn!("{}: {why}; closing the connection", self.peer);
                            reply.err(why);
                            return Err(());
                        }
                        Message::Request {
                            msgid,
                            method,
                            params,
                        } => self.service.call(
                            &method,
                            params,
                            Reply {
                                msgid,
                                writer: Some(out.clone()),
                            },
                        ),
                        Message::Notify { method, params } if self.authenticated => {
                            self.service.notify(&method, params)
                        }
                        Message::Notify { .. } => {
                            log::warn!(
                                "{}: a notification before the cluster key; closing",
                                self.peer
                            );
                            return Err(());
                        }
                        Message::Response { msgid, .. } => {
                            log::debug!(
                                "{}: unexpected response to msgid {msgid} ignored",
                                self.peer
                            )
                        }
                    }
                }
                Err(e) => {
                    // Without a length prefix there is no way to find the next frame.
                    log::warn!("{}: {e}; closing the connection", self.peer);
                    return Err(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
