//! The time of a peer: call timeouts, soft deadlines, heartbeats on a silent
//! link, reconnects, keepalives, and losing the node.

use super::{Link, Peer, RpcError, TICK_STALL};
use crate::net::{LINK_PROBE_AFTER, LINK_SILENCE_MAX};
use std::sync::Arc;
use std::time::Instant;

impl Peer {
    /// Drives timeouts, heartbeats, reconnects and keepalives; called by the timer
    /// thread.
    pub(super) fn tick(self: &Arc<Self>, now: Instant) {
        let mut expired = Vec::new();
        let mut slow = Vec::new();
        let mut orphans = Vec::new();
        let mut unsent = Vec::new();
        let mut lost = false;
        let mut down = false;
        let mut probe = false;
        let mut keepalive = None;
        {
            let mut st = self.lock();
            let ids: Vec<u32> = st
                .pending
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                if let Some(p) = st.pending.remove(&id) {
                    expired.push(p.callback);
                }
            }
            if !expired.is_empty() {
                // Their frames, if still queued, are never sent (no late deliveries).
                let st = &mut *st;
                let pending = &st.pending;
                st.queued
                    .retain(|(id, _)| id.is_none_or(|id| pending.contains_key(&id)));
            }
            for p in st.pending.values_mut() {
                if p.slow.as_ref().is_some_and(|(at, _)| *at <= now) {
                    slow.extend(p.slow.take().map(|(_, f)| f));
                }
            }
            // Time this process did not run (a loaded machine, a stopped process)
            // is not the peer's silence: the answer may be waiting in our socket.
            let gap = now.saturating_duration_since(st.last_tick);
            st.last_tick = now;
            if gap > TICK_STALL {
                st.last_heard += gap;
            }
            let config = self.net.config().clone();
            let busy = st.busy();
            let mut dead = None;
            match &st.link {
                Link::Connecting { writer, since, .. }
                    if now.duration_since(*since) >= config.connect_timeout =>
                {
                    log::debug!("{}: connect timed out", self.addr);
                    writer.close();
                    st.attempt_failed();
                    unsent = st.take_unsent();
                    down = true;
                }
                Link::Up { writer, generation } if busy => {
                    let silent = now.duration_since(st.last_heard);
                    if silent >= LINK_SILENCE_MAX {
                        log::warn!(
                            "{}: nothing heard for {} ms with calls waiting; the link is dead",
                            self.addr,
                            silent.as_millis()
                        );
                        writer.abort();
                        dead = Some(*generation);
                    } else if silent >= LINK_PROBE_AFTER && !st.pending.values().any(|p| p.probe) {
                        probe = true;
                    }
                }
                _ => {}
            }
            if let Some(generation) = dead {
                // As if the worker had seen the close: the calls sent on the link
                // fail now, the silence counts as a failed attempt, and the link is
                // made again after the usual pause.
                orphans = Self::close_link_locked(&self.addr, &mut st, generation);
                st.attempt_failed();
                down = true;
            }
            if st.failures > config.retry_limit {
                lost = true;
                st.failures = 0;
                st.queued.clear();
                st.link = if self.keepalive.is_some() {
                    Link::Backoff {
                        until: now + config.keepalive,
                    }
                } else {
                    Link::Idle
                };
                expired.extend(st.pending.drain().map(|(_, p)| p.callback));
            }
            let wanted =
                self.keepalive.is_some() || !st.pending.is_empty() || !st.queued.is_empty();
            if let Link::Backoff { until } = st.link {
                if now >= until && wanted {
                    self.start_connect(&mut st);
                } else if !wanted {
                    st.link = Link::Idle;
                }
            }
            if let (Some(_), Link::Up { .. }) = (&self.keepalive, &st.link) {
                if now.duration_since(st.last_sent) >= config.keepalive && !st.keepalive_outstanding
                {
                    st.keepalive_outstanding = true;
                    keepalive = Some(config.connect_timeout.max(config.keepalive));
                }
            }
        }
        for f in slow {
            f();
        }
        // The role hears of the dead link before the calls on it fail: a caller that
        // acts on the failure then finds the peer already reported.
        if down {
            self.down();
        }
        for cb in orphans {
            cb(Err(RpcError::Disconnected));
        }
        for cb in unsent {
            cb(Err(RpcError::Unreachable));
        }
        if probe {
            // Any node answers a bare KeepAlive; the answer is all a probe wants.
            let probe = super::Extra {
                probe: true,
                ..Default::default()
            };
            self.call_full(
                crate::proto::cluster::KEEP_ALIVE,
                super::Params::Values(&[]),
                LINK_SILENCE_MAX,
                probe,
                Box::new(|_| {}),
            );
        }
        // The keepalive's parameters come from the role, which may take its own
        // locks (a manager's tables): never under this peer's lock, which the role
        // takes while holding them.
        let keepalive = match (keepalive, &self.keepalive) {
            (Some(timeout), Some(ka)) => Some((ka(), timeout)),
            _ => None,
        };
        if let Some(((method, params), timeout)) = keepalive {
            let me = Arc::downgrade(self);
            self.call(
                &method,
                &params,
                timeout,
                Box::new(move |r| {
                    let Some(p) = me.upgrade() else { return };
                    let mut st = p.lock();
                    st.keepalive_outstanding = false;
                    if r == Err(RpcError::Timeout) {
                        // A silent peer: drop the link so reconnects decide whether it
                        // is lost; the silence counts as a failed attempt.
                        log::debug!("{}: keepalive timed out", p.addr);
                        st.failures += 1;
                        if let Link::Up { writer, .. } = &st.link {
                            writer.abort();
                        }
                    }
                }),
            );
        }
        let error = if lost {
            RpcError::NodeLost
        } else {
            RpcError::Timeout
        };
        if lost {
            log::warn!(
                "{}: node lost after {} failed reconnects",
                self.addr,
                self.net.config().retry_limit + 1
            );
        }
        for cb in expired {
            cb(Err(error.clone()));
        }
        if lost {
            if let Some(f) = &self.on_lost {
                f(self.addr);
            }
        }
    }
}
