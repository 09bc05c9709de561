//! kumo-server: the storage node. It serves cluster RPC on `-l`.

use crate::cli::Args;
use crate::daemon;
use crate::net::{self, rpc_server::RpcSession, Reply, Service};
use rmpv::Value;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The server's RPC methods.
pub struct ServerService {
    started: Instant,
}

impl ServerService {
    pub fn new() -> ServerService {
        ServerService {
            started: Instant::now(),
        }
    }

    fn status(&self, name: &str) -> Option<Value> {
        Some(match name {
            "pid" => Value::from(std::process::id()),
            "uptime" => Value::from(self.started.elapsed().as_secs()),
            "time" => Value::from(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            ),
            "version" => Value::from(crate::cli::VERSION),
            _ => return None,
        })
    }
}

impl Default for ServerService {
    fn default() -> Self {
        Self::new()
    }
}

impl Service for ServerService {
    fn call(&self, method: &str, params: Vec<Value>, reply: Reply) {
        match method {
            "KeepAlive" => reply.ok(Value::Nil),
            "GetStatus" => {
                let name = params.first().and_then(Value::as_str).unwrap_or("");
                match self.status(name) {
                    Some(v) => reply.ok(v),
                    None => reply.err(format!("unknown status '{name}'")),
                }
            }
            _ => reply.unknown_method(method),
        }
    }
}

pub fn main(args: Args) -> i32 {
    let program = args.role.program();
    daemon::block_signals();
    if let Err(e) = daemon::init_logging(&args) {
        return daemon::fatal(program, e);
    }
    let listen = args.addr("listen");
    let listener = match std::net::TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => return daemon::fatal(program, format!("cannot listen on {listen}: {e}")),
    };
    if let Err(e) = daemon::daemonize_if_asked(&args) {
        return daemon::fatal(program, e);
    }
    let net = match net::Net::start(daemon::net_config(&args)) {
        Ok(n) => n,
        Err(e) => return daemon::fatal(program, format!("cannot start the network layer: {e}")),
    };
    if let Err(e) = net.listen(
        listener,
        RpcSession::factory(Arc::new(ServerService::new())),
    ) {
        return daemon::fatal(program, format!("cannot serve {listen}: {e}"));
    }
    log::info!("listening on {listen}");
    let sig = daemon::wait_for_stop();
    log::info!("{sig} received; stopping");
    crate::cli::EXIT_OK
}
