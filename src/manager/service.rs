//! The manager's RPC handlers: each method's parameters in, the work to the
//! manager, the answer out.

use super::{Manager, SETTLE_POLL};
use crate::cluster::replace_run::{Phase, PhaseEnd};
use crate::net::{Reply, Service};
use crate::proto::cluster as msg;
use rmpv::Value;
use std::sync::Arc;

pub struct ManagerService(pub Arc<Manager>);

impl Service for ManagerService {
    fn call(&self, method: &str, params: Vec<Value>, reply: Reply) {
        let m = &self.0;
        let flag = |i: usize| params.get(i).and_then(Value::as_bool);
        let changes_tables = matches!(
            method,
            msg::ATTACH | msg::DETACH | msg::START_REPLACE | msg::SET_AUTO_REPLACE
        );
        if changes_tables {
            let wait = m
                .learning()
                .map(|left| (left, "learns the cluster"))
                .or_else(|| {
                    (matches!(method, msg::ATTACH | msg::DETACH) && m.settling())
                        .then_some((SETTLE_POLL, "hands the settled table to the servers"))
                });
            if let Some((left, why)) = wait {
                log::info!("{method} waits {left:?} while this manager {why}");
                let (m, method) = (m.clone(), method.to_string());
                return self
                    .0
                    .net
                    .timers()
                    .after(left, move || ManagerService(m).call(&method, params, reply));
            }
        }
        match method {
            msg::KEEP_ALIVE => {
                if let Some(c) = msg::clk(&params) {
                    m.clock.merge(c);
                }
                if params.len() > 1 {
                    m.server_keepalive(&params, reply)
                } else {
                    reply.ok(Value::Nil)
                }
            }
            msg::HASH_SPACE_REQUEST => m.watch(&params, reply),
            msg::REPORT_UNREACHABLE => match m.unreachable_reported(&params) {
                Ok(()) => reply.ok(Value::Nil),
                Err(e) => reply.err(e),
            },
            msg::HASH_SPACE_SYNC => {
                if let Some(c) = msg::clk(&params) {
                    m.clock.merge(c);
                }
                match msg::spaces_from(params.get(1..).unwrap_or(&[])) {
                    Ok((w, r)) => {
                        m.learnt();
                        let mut st = m.lock();
                        let adopted = m.adopt(&mut st, w, r);
                        if adopted {
                            m.log_tables(&st, "tables learnt from the partner");
                            m.publish(&mut st, false);
                        }
                        reply.ok(adopted)
                    }
                    Err(e) => reply.err(e),
                }
            }
            msg::GET_NODES_INFO => reply.ok(m.nodes_info()),
            msg::ATTACH | msg::DETACH => match flag(0) {
                Some(replace) => {
                    let mut st = m.lock();
                    let changed = m.change(
                        &mut st,
                        method == msg::ATTACH,
                        method == msg::DETACH,
                        replace,
                    );
                    reply.ok(changed)
                }
                None => reply.err("bad parameters: expected [replace: bool]"),
            },
            msg::START_REPLACE => {
                let full = flag(0).unwrap_or(false);
                let mut st = m.lock();
                m.start_replace(&mut st, full);
                reply.ok(st.replace.run().is_some())
            }
            msg::REPLACE_COPY_END | msg::REPLACE_DELETE_END => {
                if let Some(c) = msg::clk(&params) {
                    m.clock.merge(c);
                }
                let id = params.get(1).and_then(Value::as_u64);
                let addr = msg::addr_from_value(params.get(2));
                let n = |i: usize| params.get(i).and_then(Value::as_u64).unwrap_or(0);
                match (id, addr) {
                    (Some(id), Ok(addr)) => {
                        // Acknowledged whatever it is, so the server stops repeating it.
                        reply.ok(true);
                        let phase = if method == msg::REPLACE_COPY_END {
                            Phase::Copy
                        } else {
                            Phase::Delete
                        };
                        let failed = params.get(5).and_then(Value::as_bool).unwrap_or(false);
                        m.phase_done(PhaseEnd {
                            id,
                            from: addr,
                            phase,
                            records: n(3),
                            bytes: n(4),
                            failed,
                        });
                    }
                    _ => reply.err("bad parameters: expected [clock, id, address, ...]"),
                }
            }
            msg::CREATE_BACKUP => match params.first().and_then(Value::as_str) {
                Some(s) if !s.is_empty() && !s.contains('/') => m.backup(s.to_string(), reply),
                _ => reply.err("empty suffix or a suffix with '/'"),
            },
            msg::SET_AUTO_REPLACE => match flag(0) {
                Some(on) => {
                    let mut st = m.lock();
                    let old = st.auto_replace;
                    st.auto_replace = on;
                    if on {
                        m.change(&mut st, true, true, true);
                    }
                    log::info!("auto replace {}", if on { "enabled" } else { "disabled" });
                    reply.ok(old)
                }
                None => reply.err("bad parameters: expected [enable: bool]"),
            },
            _ => reply.unknown_method(method),
        }
    }
}
