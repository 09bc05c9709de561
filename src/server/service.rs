//! The server's RPC services: each method to its handler. The handlers are in
//! `node` (reads, tables, status), `write` (the write path) and `replace`.

use super::node::Node;
use super::replace;
use crate::net::{Reply, Service};
use crate::proto::cluster::{self as msg, WriteRequest};
use rmpv::Value;
use std::sync::Arc;

/// Sets or clears TCP_NODELAY on every socket of this process (kumostat
/// set_delay/unset_delay). Returns how many sockets took it.
fn set_nodelay_everywhere(on: bool) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let flag: libc::c_int = on.into();
    let mut n = 0;
    for e in dir.flatten() {
        let Some(fd) = e
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::c_int>().ok())
        else {
            continue;
        };
        // SAFETY: setsockopt only reads `flag`; on an fd that is not a TCP socket it
        // fails with ENOTSOCK or ENOPROTOOPT and changes nothing.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &flag as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            n += 1;
        }
    }
    n
}

/// The server's RPC service.
pub struct ServerService(pub Arc<Node>);

impl Service for ServerService {
    fn call(&self, method: &str, params: Vec<Value>, reply: Reply) {
        let node = &self.0;
        if let Some(c) = msg::clk(&params) {
            if matches!(
                method,
                msg::KEEP_ALIVE | msg::HASH_SPACE_SYNC | msg::REPLICATE
            ) {
                node.clock.merge(c);
            }
        }
        match method {
            msg::GET => node.get_values(&params, reply),
            msg::WRITE => node.write(params, reply),
            msg::REPLICATE => node.apply_replica(params, reply),
            msg::KEEP_ALIVE => reply.ok(Value::Nil),
            msg::HASH_SPACE_SYNC => node.sync(&params, reply),
            msg::REPLACE_COPY_START => replace::copy_start(node, &params, reply),
            msg::REPLACE_DELETE_START => replace::delete_start(node, &params, reply),
            msg::CREATE_BACKUP => replace::backup(node, &params, reply),
            msg::CLOCK => reply.ok(Value::from(node.clock.stamp(crate::time::unix_now()).0)),
            msg::FLUSH_ALL => match params.first().and_then(Value::as_u64) {
                Some(point) => match node.raise_flush(point) {
                    Ok(()) => reply.ok(true),
                    Err(e) => reply.err(format!("cannot record the flush: {e}")),
                },
                None => reply.err("bad parameters: expected [point]"),
            },
            msg::GET_STATUS => {
                let name = params.first().and_then(Value::as_str).unwrap_or("");
                match node.status(name) {
                    Some(v) => reply.ok(v),
                    None => reply.err(format!("unknown status '{name}'")),
                }
            }
            msg::SET_CONFIG => match (
                params.first().and_then(Value::as_str),
                params.get(1).and_then(Value::as_bool),
            ) {
                (Some("nodelay"), Some(on)) => reply.ok(set_nodelay_everywhere(on)),
                _ => reply.err("unknown config; expected [\"nodelay\", bool]"),
            },
            _ => reply.unknown_method(method),
        }
    }

    /// The messages of every read and write, `Get`, `Write` to a coordinator
    /// and `Replicate` to the other owners, are read without Values.
    fn reads_raw(&self, method: &str) -> bool {
        method == msg::GET || method == msg::REPLICATE || method == msg::WRITE
    }

    fn call_raw(&self, method: &str, params: &[u8], reply: Reply) {
        let node = &self.0;
        if method == msg::GET {
            if let Ok(p) = msg::read_get(params) {
                return node.get(p.key, p.as_stored, Some(p.rhs_clock), reply);
            }
        } else if method == msg::WRITE {
            if let Ok(req) = WriteRequest::read_params(params) {
                return node.coordinate(req, reply);
            }
        } else if let Ok(p) = msg::read_replicate(params) {
            // Truncated as `msg::clk` reads it on the Value path.
            node.clock.merge(p.clk as u32);
            return node.replica(p.key, p.record, p.whs_clock, Some(p.coordinator), reply);
        }
        // Not the shape the encoders write: the Value path takes what it takes.
        match crate::proto::rpc::params_as_values(params) {
            Ok(params) => self.call(method, params, reply),
            Err(e) => reply.err(format!("bad parameters: {e}")),
        }
    }
}

/// The stream port's service: replace data from other servers, and nothing else.
pub struct StreamService(pub Arc<Node>);

impl Service for StreamService {
    fn call(&self, method: &str, params: Vec<Value>, reply: Reply) {
        if let Some(c) = msg::clk(&params) {
            self.0.clock.merge(c);
        }
        match method {
            msg::REPLACE_PUSH => replace::push(&self.0, params, reply),
            msg::KEEP_ALIVE => reply.ok(Value::Nil),
            _ => reply.unknown_method(method),
        }
    }
}
