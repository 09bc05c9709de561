//! A peer's connection: making it, taking responses off it, and closing it.

use super::{Callback, Link, LinkNews, Peer, RpcError, State};
use crate::net::auth;
use crate::net::chain::Chain;
use crate::net::conn::{Session, Writer};
use crate::proto::rpc::{FrameReader, Message};
use rmpv::Value;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;

impl Peer {
    pub(super) fn start_connect(self: &Arc<Self>, st: &mut State) {
        st.generation += 1;
        let generation = st.generation;
        let session = Box::new(ClientSession {
            peer: Arc::downgrade(self),
            generation,
            frames: FrameReader::default(),
        });
        match self.net.connect(self.addr, session) {
            Ok(writer) => {
                st.link = Link::Connecting {
                    writer,
                    since: Instant::now(),
                    generation,
                }
            }
            Err(e) => {
                log::debug!("{}: connect failed at once: {e}", self.addr);
                st.attempt_failed();
            }
        }
    }

    pub(super) fn on_connected(self: &Arc<Self>, generation: u64, ok: bool) {
        let mut st = self.lock();
        let Link::Connecting {
            writer,
            generation: g,
            ..
        } = &st.link
        else {
            return;
        };
        if *g != generation {
            return;
        }
        if !ok {
            st.attempt_failed();
            let unsent = st.take_unsent();
            drop(st);
            // The role hears first (see `tick`).
            self.down();
            for cb in unsent {
                cb(Err(RpcError::Unreachable));
            }
            return;
        }
        let writer = writer.clone();
        // `failures` is cleared by the first response, not here: a stopped process
        // still completes handshakes (the kernel does), and must still be lost.
        log::debug!("{}: connected", self.addr);
        let queued = std::mem::take(&mut st.queued);
        st.link = Link::Up {
            writer: writer.clone(),
            generation,
        };
        st.last_heard = Instant::now();
        // The cluster key goes first; its answer (msgid 0) is not waited for.
        if let Some(hello) = auth::opening_frame() {
            writer.send(&hello);
        }
        // Only frames whose call still waits: the rest were already answered as
        // timed out (see the module documentation).
        let mut live = Chain::new();
        for (_, f) in queued
            .into_iter()
            .filter(|(id, _)| id.is_none_or(|id| st.pending.contains_key(&id)))
        {
            live.append(f);
        }
        if !live.is_empty() {
            let _ = writer.send_chain(live);
        }
        for p in st.pending.values_mut().filter(|p| p.sent_on == 0) {
            p.sent_on = generation;
        }
    }

    pub(super) fn on_closed(self: &Arc<Self>, generation: u64) {
        let orphans = self.close_link(generation);
        for cb in orphans {
            cb(Err(RpcError::Disconnected));
        }
    }

    /// Tells the role that the node cannot be reached now.
    pub(super) fn down(&self) {
        self.lock().down_at = Some(Instant::now());
        self.tell(LinkNews::Down);
    }

    fn tell(&self, news: LinkNews) {
        if let Some(f) = &self.watch {
            f(self.addr, news);
        }
    }

    /// Handles the end of connection `generation`; returns the calls sent on it,
    /// which can no longer be answered.
    pub(super) fn close_link(self: &Arc<Self>, generation: u64) -> Vec<Callback> {
        let mut st = self.lock();
        Self::close_link_locked(&self.addr, &mut st, generation)
    }

    pub(super) fn close_link_locked(
        addr: &SocketAddr,
        st: &mut State,
        generation: u64,
    ) -> Vec<Callback> {
        let current = match &st.link {
            Link::Up { generation: g, .. } | Link::Connecting { generation: g, .. } => {
                *g == generation
            }
            _ => false,
        };
        if !current {
            return Vec::new();
        }
        let was_up = matches!(st.link, Link::Up { .. });
        if was_up {
            log::debug!("{addr}: connection closed; reconnecting");
            st.link = Link::Backoff {
                until: Instant::now(),
            };
        } else {
            st.attempt_failed();
        }
        // Calls already sent on the dead connection cannot be answered on a new one.
        let orphaned: Vec<u32> = st
            .pending
            .iter()
            .filter(|(_, p)| p.sent_on == generation)
            .map(|(id, _)| *id)
            .collect();
        orphaned
            .into_iter()
            .filter_map(|id| st.pending.remove(&id))
            .map(|p| p.callback)
            .collect()
    }

    /// The answer to call `msgid` is arriving (a large one, in pieces): the
    /// server is not silent, and asking another one too would only fetch the
    /// value twice.
    /// Returns false when no call waits for it (forgotten, or timed out).
    fn arriving(&self, msgid: u32) -> bool {
        let arrival = {
            let mut st = self.lock();
            st.last_heard = crate::net::now();
            let Some(p) = st.pending.get_mut(&msgid) else {
                return false;
            };
            p.slow = None;
            p.arrival.take()
        };
        if let Some(f) = arrival {
            f();
        }
        true
    }

    pub(super) fn on_response(&self, msgid: u32, error: Value, result: Value) {
        let (pending, back) = {
            let mut st = self.lock();
            st.failures = 0;
            st.last_heard = crate::net::now();
            let back = st.down_at.take().is_some();
            (st.pending.remove(&msgid), back)
        };
        if back {
            self.tell(LinkNews::Back);
        }
        match pending {
            Some(p) => (p.callback)(if error.is_nil() {
                Ok(result)
            } else {
                Err(RpcError::Remote(error))
            }),
            None => log::debug!(
                "{}: response to unknown or expired msgid {msgid}",
                self.addr
            ),
        }
    }
}

/// The session of a peer's outgoing connection.
struct ClientSession {
    peer: Weak<Peer>,
    generation: u64,
    frames: FrameReader,
}

impl Session for ClientSession {
    fn on_input(&mut self, input: &[u8], _out: &Arc<Writer>) -> Result<usize, ()> {
        let Some(peer) = self.peer.upgrade() else {
            return Err(());
        };
        let mut used = 0;
        loop {
            match self.frames.read(&input[used..]) {
                Ok((n, None)) => {
                    used += n;
                    if n == 0 || used == input.len() {
                        if let Some(id) = self.frames.arriving_response() {
                            if !peer.arriving(id) {
                                // Forgotten: its bytes are skipped, not kept.
                                self.frames.discard();
                            }
                        }
                        return Ok(used);
                    }
                }
                Ok((n, Some(message))) => {
                    used += n;
                    match message {
                        Message::Response {
                            msgid,
                            error,
                            result,
                        } => peer.on_response(msgid, error, result),
                        other => log::debug!("{}: ignored {:?} on a client link", peer.addr, other),
                    }
                }
                Err(e) => {
                    log::warn!("{}: {e}; closing the connection", peer.addr);
                    return Err(());
                }
            }
        }
    }

    fn on_connect(&mut self, result: &io::Result<()>, _out: &Arc<Writer>) {
        if let Some(peer) = self.peer.upgrade() {
            if let Err(e) = result {
                log::debug!("{}: connect failed: {e}", peer.addr);
            }
            peer.on_connected(self.generation, result.is_ok());
        }
    }

    fn on_close(&mut self) {
        if let Some(peer) = self.peer.upgrade() {
            peer.on_closed(self.generation);
        }
    }
}
