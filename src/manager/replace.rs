//! The manager runs replaces: the steps are decided by
//! [`crate::cluster::replace_run`]; here its actions become messages to servers and
//! tables published, and the servers' answers and the time go back in.

use super::{Manager, State, REPLACE_CALL_TIMEOUT};
use crate::cluster::replace_run::{Action, Phase, PhaseEnd, Replacer, View};
use crate::proto::cluster as msg;
use rmpv::Value;
use std::net::SocketAddr;
use std::sync::Arc;

impl Manager {
    /// Milliseconds since the manager started: the pure logic's clock.
    pub(super) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Gives the replace machine an event with a view of the cluster, and carries
    /// out the actions it returns.
    pub(super) fn with_replacer(
        self: &Arc<Self>,
        st: &mut State,
        event: impl FnOnce(&mut Replacer, &View) -> Vec<Action>,
    ) {
        let now = self.now_ms();
        let before = st
            .replace
            .run()
            .map(|r| (r.id, r.phase, r.records, r.bytes));
        let actions = {
            let State {
                members,
                servers,
                streams,
                replace,
                ..
            } = st;
            let in_touch = |a: &SocketAddr| servers.contains_key(a) && streams.contains_key(a);
            let view = View {
                tables: &members.tables,
                in_touch: &in_touch,
                now,
            };
            event(replace, &view)
        };
        replace_events(before, st.replace.run());
        for action in actions {
            match action {
                Action::Send { to, phase } => self.send_phase(st, to, phase),
                Action::GatewaysRead => self.answer_watchers(st),
                Action::Settle => {
                    st.members.settle();
                    self.publish(st, true);
                }
            }
        }
    }

    /// Starts (or restarts) a replace to the current whs.
    pub(super) fn start_replace(self: &Arc<Self>, st: &mut State, full: bool) {
        self.with_replacer(st, |r, v| r.start(v, full));
    }

    /// A server finished its part of a phase.
    pub(super) fn phase_done(self: &Arc<Self>, end: PhaseEnd) {
        let mut st = self.lock();
        self.with_replacer(&mut st, |r, v| r.phase_done(v, end));
    }

    /// Runs what is due: messages to send again, the end of a settle, a start.
    pub(super) fn tick_replace(self: &Arc<Self>) {
        let mut st = self.lock();
        self.with_replacer(&mut st, |r, v| r.tick(v));
    }

    /// Sends `phase` of the running replace to `addr`. A failure is given back to
    /// the machine, which sends it again while the server's end is awaited.
    fn send_phase(self: &Arc<Self>, st: &State, addr: SocketAddr, phase: Phase) {
        let Some(peer) = st.servers.get(&addr).cloned() else {
            return;
        };
        let Some(run) = st.replace.run() else { return };
        let id = run.id;
        let (method, params) = match phase {
            // Nothing is sent while settling.
            Phase::Settling => return,
            Phase::Copy => {
                let streams = st
                    .streams
                    .iter()
                    .map(|(a, p)| Value::Array(vec![msg::addr_to_value(a), Value::from(*p)]))
                    .collect();
                (
                    msg::REPLACE_COPY_START,
                    vec![
                        Value::from(self.clock.tick()),
                        Value::from(id),
                        msg::addr_to_value(&self.me),
                        run.tables.whs.to_value(),
                        run.tables.rhs.to_value(),
                        Value::from(run.full),
                        Value::Array(streams),
                    ],
                )
            }
            Phase::Delete => (
                msg::REPLACE_DELETE_START,
                vec![
                    Value::from(self.clock.tick()),
                    Value::from(id),
                    msg::addr_to_value(&self.me),
                    run.tables.whs.to_value(),
                ],
            ),
        };
        let weak = Arc::downgrade(self);
        peer.call(
            method,
            &params,
            REPLACE_CALL_TIMEOUT,
            Box::new(move |r| {
                let Err(e) = r else { return };
                let Some(m) = weak.upgrade() else { return };
                log::warn!("replace {id:#x}: {addr} did not take {method}: {e}");
                // A server running a newer replace: the other manager finishes it.
                let superseded = e.to_string().contains(msg::SUPERSEDED);
                let now = m.now_ms();
                m.lock()
                    .replace
                    .send_failed(addr, id, phase, superseded, now);
            }),
        );
    }

    /// Finishes a replace that was started and not finished: its manager restarted
    /// or was lost, or the run was dropped (see [`Replacer::owed`]). The leading
    /// manager, with no run of its own, starts it again (to the current whs: a
    /// replace always moves to the newest tables). So a replace finishes without
    /// an operator while any manager lives. A manager restarted after a
    /// `-noreplace` change has forgotten it, and finishes the move at once.
    pub(super) fn supervise(self: &Arc<Self>) {
        let mut st = self.lock();
        self.watch_tables(&mut st);
        let r = &st.replace;
        if !r.owed(&st.members.tables)
            || r.run().is_some()
            || r.is_waiting()
            || !self.leads()
            || self.learning().is_some()
        {
            return;
        }
        log::warn!("a replace was started and reads still use the old table; finishing it");
        self.start_replace(&mut st, false);
    }
}

/// The binary log's account of a replace: its start, each phase it enters, and its
/// end with what it moved, told from the run before and after an event.
fn replace_events(
    before: Option<(u64, Phase, u64, u64)>,
    after: Option<&crate::cluster::replace_run::Run>,
) {
    use crate::daemon::event;
    let phase = |p: Phase| match p {
        Phase::Copy => "copy",
        Phase::Settling => "settling",
        Phase::Delete => "delete",
    };
    let now = after.map(|r| (r.id, r.phase));
    if now == before.map(|(id, p, _, _)| (id, p)) {
        return;
    }
    if let Some((id, _, records, bytes)) = before.filter(|b| now.map(|(n, _)| n) != Some(b.0)) {
        let fields = [
            ("id", Value::from(format!("{id:#x}"))),
            ("records", Value::from(records)),
            ("bytes", Value::from(bytes)),
        ];
        event(log::Level::Info, "replace_end", &fields);
    }
    let Some(r) = after else { return };
    let fields = [
        ("id", Value::from(format!("{:#x}", r.id))),
        ("phase", Value::from(phase(r.phase))),
        ("servers", Value::from(r.targets.len() as u64)),
        ("records", Value::from(r.records)),
        ("bytes", Value::from(r.bytes)),
    ];
    if before.map(|b| b.0) != Some(r.id) {
        event(log::Level::Info, "replace_start", &fields);
    } else {
        event(log::Level::Info, "replace_phase", &fields);
    }
}
