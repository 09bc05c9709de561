//! `flush_all` from the gateway: every server that holds data takes the same flush
//! point ([`crate::cluster::flush`]) before the client hears `OK`.

use super::route::within;
use super::Gateway;
use crate::cluster::flush::{delayed_point, point_after};
use crate::proto::cluster as msg;
use rmpv::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub type FlushDone = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Answers of one round of calls to every server, and what to do with them.
struct Round {
    left: usize,
    values: Vec<Value>,
    failed: Option<String>,
    then: Option<Box<dyn FnOnce(Result<Vec<Value>, String>) + Send>>,
}

impl Gateway {
    /// Flushes the cluster after `delay` seconds (now for 0 or less).
    pub fn flush(self: &Arc<Self>, delay: i64, done: FlushDone) {
        let deadline = Instant::now() + self.deadline;
        let servers = self.tables().active_servers();
        let now = crate::time::unix_now();
        if let Some(point) = delayed_point(delay, now) {
            return self.flush_at(servers, point, deadline, done);
        }
        let g = self.clone();
        let s = servers.clone();
        self.each_server(
            &servers,
            msg::CLOCK,
            Vec::new(),
            deadline,
            Box::new(move |stamps| match stamps {
                Ok(stamps) => {
                    // A server that answers anything but a stamp must not pick
                    // the point: the flush could then miss what it stored.
                    let stamps: Option<Vec<u64>> = stamps.iter().map(Value::as_u64).collect();
                    match stamps {
                        Some(stamps) => g.flush_at(s, point_after(&stamps), deadline, done),
                        None => done(Err("a server answered no clock stamp".into())),
                    }
                }
                Err(e) => done(Err(e)),
            }),
        );
    }

    fn flush_at(
        self: &Arc<Self>,
        servers: Vec<SocketAddr>,
        point: u64,
        deadline: Instant,
        done: FlushDone,
    ) {
        self.each_server(
            &servers,
            msg::FLUSH_ALL,
            vec![Value::from(point)],
            deadline,
            Box::new(move |r| done(r.map(|_| ()))),
        );
    }

    /// Calls `method` on every server in `servers` within the deadline; `then`
    /// gets every answer, or the first failure.
    fn each_server(
        self: &Arc<Self>,
        servers: &[SocketAddr],
        method: &'static str,
        params: Vec<Value>,
        deadline: Instant,
        then: Box<dyn FnOnce(Result<Vec<Value>, String>) + Send>,
    ) {
        if servers.is_empty() {
            return then(Ok(Vec::new()));
        }
        let round = Arc::new(Mutex::new(Round {
            left: servers.len(),
            values: Vec::new(),
            failed: None,
            then: Some(then),
        }));
        let left = deadline.saturating_duration_since(Instant::now());
        for &addr in servers {
            let round = round.clone();
            self.server(addr).call(
                method,
                &params,
                within(left),
                Box::new(move |r| {
                    let mut g = round.lock().unwrap_or_else(|p| p.into_inner());
                    match r {
                        Ok(v) => g.values.push(v),
                        Err(e) => {
                            g.failed.get_or_insert(format!("server {addr}: {e}"));
                        }
                    }
                    g.left -= 1;
                    if g.left > 0 {
                        return;
                    }
                    let result = match g.failed.take() {
                        Some(e) => Err(format!("flush_all did not reach every server ({e})")),
                        None => Ok(std::mem::take(&mut g.values)),
                    };
                    let then = g.then.take();
                    drop(g);
                    if let Some(then) = then {
                        then(result);
                    }
                }),
            );
        }
    }
}
