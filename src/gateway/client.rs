//! What every client connection has, whatever protocol it speaks: its place in
//! `stats conns` and the connection counters, and its pipeline, made when its first
//! bytes arrive.

use super::pipeline::Pipeline;
use super::stats::ConnInfo;
use super::Gateway;
use crate::net::Writer;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Client {
    pub gw: Arc<Gateway>,
    pipeline: Option<Arc<Pipeline>>,
    /// This connection in `stats conns`.
    id: u64,
    pub info: Arc<ConnInfo>,
}

impl Client {
    /// A connection from `peer` accepted on `listen`.
    pub fn open(gw: &Arc<Gateway>, peer: SocketAddr, listen: SocketAddr) -> Client {
        gw.counters.curr_connections.fetch_add(1, Ordering::Relaxed);
        gw.counters
            .total_connections
            .fetch_add(1, Ordering::Relaxed);
        let (id, info) = gw.conns.open(peer, listen, crate::time::unix_now());
        Client {
            gw: gw.clone(),
            pipeline: None,
            id,
            info,
        }
    }

    /// The timeouts may close it before it has sent a byte.
    pub fn opened(&self, out: &Arc<Writer>) {
        self.info.set_writer(out.clone());
    }

    /// Bytes arrived at `now`: the pipeline they go to.
    pub fn input(&mut self, out: &Arc<Writer>, now: u32) -> Arc<Pipeline> {
        self.info.touched(now);
        let gw = self.gw.clone();
        self.pipeline
            .get_or_insert_with(|| Pipeline::new(gw, out))
            .clone()
    }

    pub fn closed(&self) {
        self.gw.conns.close(self.id);
        self.gw
            .counters
            .curr_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}
