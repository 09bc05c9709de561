//! Where a request goes: a get to the key's readers in rhs, hedged and retried
//! within its deadline, and a write to its coordinator in whs, retried where that
//! is harmless (see the module documentation of the gateway).

use super::{Gateway, GetDone, WriteDone, HEDGE_AFTER, RETRY_DELAY};
use crate::cluster::hash_space::key_hash;
use crate::cluster::routing;
use crate::cluster::write::Op;
use crate::net::{self, Hedge, RpcError};
use crate::proto::cluster::{self as msg, WriteRequest};
use rmpv::Value;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The timeout of a call that must be answered within `left`: a timer tick less,
/// since timeouts fire on the tick after they pass.
pub(super) fn within(left: Duration) -> Duration {
    left.saturating_sub(Duration::from_millis(net::TICK_MS))
        .max(Duration::from_millis(1))
}

/// One get on its way to the key's owners.
struct Read {
    key: Arc<Vec<u8>>,
    deadline: Instant,
    state: Mutex<ReadState>,
}

struct ReadState {
    /// The answer owed; taken by the first answer (or the deadline).
    done: Option<GetDone>,
    /// Owners asked in this round.
    asked: Vec<SocketAddr>,
    /// Calls out now.
    out: usize,
    /// Rounds over every owner that failed.
    rounds: u32,
    /// The last error, for the client if nothing better comes.
    error: Option<String>,
    /// The calls out, by server and msgid.
    flying: Vec<(SocketAddr, u32)>,
    /// The server whose answer has started to arrive: the others are forgotten,
    /// so that a large value does not come twice.
    arriving: Option<SocketAddr>,
}

impl Read {
    fn lock(&self) -> std::sync::MutexGuard<'_, ReadState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether an error means the server did not run the write, so it is safe to retry
/// any write.
fn not_run(e: &RpcError) -> bool {
    match e {
        RpcError::NodeLost | RpcError::Unreachable => true,
        RpcError::Remote(v) => {
            msg::obsolete_tables(v).is_some() || v.as_str() == Some(msg::NOT_READY)
        }
        _ => false,
    }
}

impl Gateway {
    /// Reads `key` from its owners, as the module documentation says.
    pub fn get(self: &Arc<Self>, key: Arc<Vec<u8>>, done: GetDone) {
        let read = Arc::new(Read {
            key,
            deadline: crate::net::now() + self.deadline,
            state: Mutex::new(ReadState {
                done: Some(done),
                asked: Vec::new(),
                out: 0,
                rounds: 0,
                error: None,
                flying: Vec::new(),
                arriving: None,
            }),
        });
        self.read(&read);
    }

    /// Sends `read` to one more owner, or ends its round, or answers it.
    fn read(self: &Arc<Self>, read: &Arc<Read>) {
        let t = self.tables();
        // Reads follow rhs; an rhs that routes nothing (the managers never publish
        // one while whs routes, but a gateway may hold older tables) means the
        // write owners are the ones holding the data (see `routing::readers`).
        let reads = if t.rhs.is_empty() { &t.whs } else { &t.rhs };
        let owners = routing::readers(&t, key_hash(&read.key));
        let left = read.deadline.saturating_duration_since(crate::net::now());
        let mut st = read.lock();
        if st.done.is_none() {
            return;
        }
        if left.is_zero() {
            // Only an answer (a callback) gets here, never the first call: answer
            // now rather than a timer tick later.
            let (done, e) = (st.done.take(), st.error.take());
            drop(st);
            if let Some(done) = done {
                done(Err(self.too_late(e)));
            }
            return;
        }
        let pick = routing::next_reader(&owners, &st.asked, |a| self.server(*a).is_suspect());
        let Some(addr) = pick else {
            if st.out > 0 {
                return; // an owner asked already may still answer
            }
            // Every owner was asked and failed (or none is known yet): another
            // round after a pause, if the attempts and the deadline allow.
            st.rounds += 1;
            if st.rounds >= self.get_attempts || left <= RETRY_DELAY {
                let e = st
                    .error
                    .take()
                    .unwrap_or_else(|| "no server holds this key".into());
                return self.answer_later(st.done.take(), Err(e));
            }
            st.asked.clear();
            drop(st);
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            if owners.is_empty() {
                self.refresh();
            }
            let (g, read) = (self.clone(), read.clone());
            return self.net.timers().after(RETRY_DELAY, move || g.read(&read));
        };
        st.asked.push(addr);
        st.out += 1;
        drop(st);
        let (g, r) = (self.clone(), read.clone());
        let (g2, r2) = (self.clone(), read.clone());
        let (g3, r3) = (self.clone(), read.clone());
        let hedge = Hedge {
            after: HEDGE_AFTER,
            on_slow: Box::new(move || g2.read(&r2)),
            on_arrival: Box::new(move || g3.arriving(&r3, addr)),
        };
        // The rhs stamp tells the server which table we read by (see the server's
        // `serves_read`).
        let rhs_clock = reads.clocktime.0;
        let msgid = self.server(addr).call_hedged(
            msg::GET,
            &|out| msg::encode_get_params(out, &read.key, false, rhs_clock),
            within(left),
            hedge,
            Box::new(move |result| {
                let answer = match result {
                    Ok(Value::Nil) => Ok(None),
                    Ok(v) => msg::record_take(v)
                        .map(Some)
                        .map_err(|e| format!("server {addr}: {e}")),
                    Err(e) => {
                        g.after_error(&e);
                        let mut st = r.lock();
                        st.out -= 1;
                        st.error = Some(format!("server {addr}: {e}"));
                        st.flying.retain(|(a, _)| *a != addr);
                        if st.arriving == Some(addr) {
                            st.arriving = None;
                        }
                        drop(st);
                        return g.read(&r);
                    }
                };
                // The first answer wins; a hedged twin answering later is ignored.
                let done = r.lock().done.take();
                if let Some(done) = done {
                    done(answer);
                }
            }),
        );
        let mut st = read.lock();
        if st.arriving.is_some_and(|a| a != addr) {
            // Another server's answer started to come meanwhile.
            st.out -= 1;
            drop(st);
            return self.server(addr).forget(msgid);
        }
        st.flying.push((addr, msgid));
    }

    /// The answer from `addr` has started to arrive: the read's other calls are
    /// forgotten, so that a large value comes once (their bytes are skipped as
    /// they arrive). Should this answer fail, the read goes on to the next owner.
    fn arriving(&self, read: &Read, addr: SocketAddr) {
        let others: Vec<(SocketAddr, u32)> = {
            let mut st = read.lock();
            if st.done.is_none() {
                return;
            }
            st.arriving = Some(addr);
            let (mine, others) = st.flying.drain(..).partition(|(a, _)| *a == addr);
            st.flying = mine;
            st.out -= others.len();
            others
        };
        for (a, id) in others {
            self.server(a).forget(id);
        }
    }

    /// Answers from the timer thread: `read` may run inside a caller that holds a
    /// queue of work, which an answer would re-enter.
    fn answer_later<T: Send + 'static>(&self, done: Option<Box<dyn FnOnce(T) + Send>>, answer: T) {
        if let Some(done) = done {
            self.net
                .timers()
                .after(Duration::ZERO, move || done(answer));
        }
    }

    /// No owner of a key is known (a gateway started before the first attach, or
    /// before its first answer from a manager): ask the managers and try again
    /// after RETRY_DELAY, within the request's attempts.
    fn wait_for_tables(self: &Arc<Self>, then: impl FnOnce(Arc<Self>) + Send + 'static) {
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        self.refresh();
        let g = self.clone();
        self.net.timers().after(RETRY_DELAY, move || then(g));
    }

    /// Sends a write to its coordinator, retrying as the module documentation says.
    pub fn write(self: &Arc<Self>, req: Arc<WriteRequest>, done: WriteDone) {
        let deadline = crate::net::now() + self.deadline;
        self.write_attempt(req, 0, deadline, None, done)
    }

    fn write_attempt(
        self: &Arc<Self>,
        req: Arc<WriteRequest>,
        attempt: u32,
        deadline: Instant,
        last: Option<String>,
        done: WriteDone,
    ) {
        let left = deadline.saturating_duration_since(crate::net::now());
        if left.is_zero() {
            return self.answer_later(Some(done), Err(self.too_late(last)));
        }
        let t = self.tables();
        let retries = match req.write.op {
            Op::Delete => self.delete_retry,
            _ => self.set_retry,
        };
        let Some(&coordinator) = t.whs.active_owners(key_hash(&req.key)).first() else {
            if attempt < retries && left > RETRY_DELAY {
                return self.wait_for_tables(move |g| {
                    g.write_attempt(req, attempt + 1, deadline, last, done)
                });
            }
            return self.answer_later(Some(done), Err("no server holds this key".into()));
        };
        let g = self.clone();
        let value = req.write.data.clone();
        let sent = req.clone();
        self.server(coordinator).call_with_tail(
            msg::WRITE,
            &|out| sent.encode_params_head(out, Some(left.as_millis() as u64)),
            &value,
            within(left),
            Box::new(move |r| {
                let e = match r.map(|v| msg::outcome_from_value(&v)) {
                    Ok(Ok(o)) => return done(Ok(o)),
                    Ok(Err(e)) => return done(Err(format!("server {coordinator}: {e}"))),
                    // A store that cannot keep the write, or owners that could not
                    // store it in time, is the answer, at once: retrying would only
                    // make the client wait for the same.
                    Err(RpcError::Remote(v))
                        if matches!(
                            v.as_str(),
                            Some(msg::STORE_FULL | msg::STORE_FAILED | msg::DEADLINE)
                        ) =>
                    {
                        return done(Err(v.as_str().unwrap_or_default().to_string()));
                    }
                    Err(e) => e,
                };
                g.after_error(&e);
                let idempotent = matches!(req.write.op, Op::Set | Op::Touch | Op::Delete);
                let what = format!("server {coordinator}: {e}");
                if attempt >= retries || !(idempotent || not_run(&e)) {
                    return done(Err(what));
                }
                // New tables came with the refusal: go at once to the new owner.
                let fresh_tables =
                    matches!(&e, RpcError::Remote(v) if msg::obsolete_tables(v).is_some());
                let pause = if fresh_tables {
                    Duration::ZERO
                } else {
                    RETRY_DELAY
                };
                // No time for another attempt after the pause: answer now, not
                // after it.
                let tick = Duration::from_millis(net::TICK_MS);
                if Instant::now() + pause + tick >= deadline {
                    return done(Err(g.too_late(Some(what))));
                }
                g.counters.retries.fetch_add(1, Ordering::Relaxed);
                let g2 = g.clone();
                g.net.timers().after(pause, move || {
                    g2.write_attempt(req, attempt + 1, deadline, Some(what), done)
                });
            }),
        );
    }
}
