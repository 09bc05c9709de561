//! Multi-gets that stream, with the connection's memory bounded. Each key of a
//! `get` has its own place in the reply order, so its VALUE goes out as soon as it
//! and every answer before it are in; the connection does not wait for the last key.
//!
//! What bounds memory is the connection's budget of unsent reply bytes (answers
//! waiting for an earlier one, and what the socket has not taken yet) plus the
//! values still on their way (`flow.rs` decides which key may go next); a reader
//! that stops reading stops the reads, and the session stops reading its commands
//! (see `Pipeline::has_room`).

use super::flow::GetRun;
use super::form::Form;
use super::pipeline::{Footprint, Pipeline, Slot};
use super::stats::DetailOp;
use super::GetDone;
use crate::cluster::write::{self, Op, Outcome, Write};
use crate::net::chain::Chain;
use crate::proto::cluster::WriteRequest;
use crate::record::Record;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What ends a text get's answers.
const END: &[u8] = b"END\r\n";

impl Pipeline {
    /// Starts a get run: its keys are asked for as the budget allows.
    pub(super) fn get(self: &Arc<Self>, run: Arc<GetRun>) {
        let n = run.keys.len() as u64;
        let c = &self.gw.counters;
        c.cmd_get.fetch_add(n, Ordering::Relaxed);
        if run.touch.is_some() {
            c.cmd_touch.fetch_add(n, Ordering::Relaxed);
        }
        if run.keys.is_empty() {
            // `gat 10` names no key: memcached answers the empty list.
            if run.end {
                self.replies.fill(run.seq, Slot::Ready(END.to_vec().into()));
            }
            return self.finished(Footprint::get(&run));
        }
        self.fetching().add(run);
        self.pump();
    }

    fn fetching(&self) -> std::sync::MutexGuard<'_, super::flow::Fetching> {
        self.fetching.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for the next keys of the waiting runs, in order, while the budget
    /// allows (`flow.rs`); what stops here starts again when an answer has gone
    /// out (a read arrives, a job ends, or the connection drains).
    pub(super) fn pump(self: &Arc<Self>) {
        loop {
            let unsent = self.unsent();
            let Some((run, i)) = self.fetching().admit(unsent) else {
                return;
            };
            self.fetch(run, i);
        }
    }

    /// Reads key `i` of `run` (touching it first for gat) and fills its place.
    fn fetch(self: &Arc<Self>, run: Arc<GetRun>, i: usize) {
        let key = run.keys[i].clone();
        let touch = run.touch;
        let me = self.clone();
        let done: GetDone = Box::new(move |r| me.fetched(run, i, r));
        match touch {
            None => self.gw.get(key, done),
            Some(exptime) => touch_then_get(&self.gw, key, exptime, done),
        }
    }

    fn fetched(self: &Arc<Self>, run: Arc<GetRun>, i: usize, r: Result<Option<Record>, String>) {
        let key = &run.keys[i];
        let c = &self.gw.counters;
        let now = crate::time::unix_now();
        let single = run.end && run.keys.len() == 1;
        let mut failed = false;
        let answer: Chain = match r {
            Ok(Some(rec)) if write::is_live(&rec, now) => {
                c.get_hits.fetch_add(1, Ordering::Relaxed);
                self.gw.detail.record(key, DetailOp::Get { hit: true });
                run.form
                    .value(key, rec.flags, rec.data, rec.clock, run.with_cas)
            }
            Ok(_) => {
                c.get_misses.fetch_add(1, Ordering::Relaxed);
                self.gw.detail.record(key, DetailOp::Get { hit: false });
                run.form.miss(key).into()
            }
            // One failed key of a single get is an error; in a multi-get the key is
            // left out, as memcached leaves out what it cannot serve.
            Err(e) => {
                c.get_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!("get failed: {e}");
                failed = single && matches!(run.form, Form::Text { .. });
                if single || matches!(run.form, Form::Binary { .. }) {
                    run.form.error(&e).into()
                } else {
                    Chain::new()
                }
            }
        };
        // A single get's END goes out in its answer's buffer (its own place is
        // filled empty): one buffer less for the commonest command.
        let mut answer = answer;
        let end_in_answer = single && !failed;
        if end_in_answer {
            answer.bytes(END);
        }
        self.fetching().arrived(answer.len());
        self.replies.fill(run.seq + i as u64, Slot::Ready(answer));
        let last = run.answered();
        if last {
            if run.end {
                let end = if failed || end_in_answer {
                    Chain::new()
                } else {
                    END.to_vec().into()
                };
                self.replies
                    .fill(run.seq + run.keys.len() as u64, Slot::Ready(end));
            }
            self.finished(Footprint::get(&run));
        }
        self.pump();
        self.room_made();
    }
}

/// gat: sets the key's exptime, then reads it; a key not there to touch is a miss.
fn touch_then_get(gw: &Arc<super::Gateway>, key: Arc<Vec<u8>>, exptime: u32, done: GetDone) {
    let req = Arc::new(WriteRequest {
        key: key.to_vec(),
        write: Write::plain(Op::Touch, 0, exptime, Vec::new()),
        no_wait: false,
        budget_ms: None,
    });
    let g = gw.clone();
    gw.write(
        req,
        Box::new(move |r| match r {
            Ok((Outcome::Touched, _, _)) => {
                g.counters.touch_hits.fetch_add(1, Ordering::Relaxed);
                g.get(key, done)
            }
            Ok(_) => {
                g.counters.touch_misses.fetch_add(1, Ordering::Relaxed);
                done(Ok(None))
            }
            Err(e) => done(Err(e)),
        }),
    );
}
