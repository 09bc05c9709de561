//! Reports of unreachable servers. A gateway or a server that finds a link to a
//! server dead (see [`super::rpc_client`]) tells every manager which servers it
//! cannot reach now; a manager that sees everyone fine could not route around such
//! a cut by itself. What a manager decides is `cluster::membership::report_faults`.

use super::rpc_client::Peer;
use crate::proto::cluster as msg;
use rmpv::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The same report is not sent again sooner than this: a dead link is found once
/// per request that meets it, and the managers need to hear it once.
pub const REPORT_REPEAT: Duration = Duration::from_millis(500);
/// How long a manager may take to take a report.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Reporter {
    /// This node's address if it is a server (a gateway reports as nil).
    me: Option<SocketAddr>,
    managers: Vec<Arc<Peer>>,
    last: Mutex<Option<(Instant, BTreeSet<SocketAddr>)>>,
}

impl Reporter {
    pub fn new(me: Option<SocketAddr>, managers: Vec<Arc<Peer>>) -> Reporter {
        Reporter {
            me,
            managers,
            last: Mutex::new(None),
        }
    }

    /// Reports `unreachable` (every server this node cannot reach now).
    pub fn report(&self, unreachable: BTreeSet<SocketAddr>) {
        if unreachable.is_empty() {
            return;
        }
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last
                .as_ref()
                .is_some_and(|(at, set)| *set == unreachable && at.elapsed() < REPORT_REPEAT)
            {
                return;
            }
            *last = Some((Instant::now(), unreachable.clone()));
        }
        log::warn!("cannot reach {unreachable:?}; telling the managers");
        let params = [
            self.me
                .as_ref()
                .map(msg::addr_to_value)
                .unwrap_or(Value::Nil),
            Value::Array(unreachable.iter().map(msg::addr_to_value).collect()),
        ];
        for m in &self.managers {
            let addr = m.addr();
            m.call(
                msg::REPORT_UNREACHABLE,
                &params,
                REPORT_TIMEOUT,
                Box::new(move |r| {
                    if let Err(e) = r {
                        log::debug!("manager {addr} did not take the report: {e}");
                    }
                }),
            );
        }
    }
}
