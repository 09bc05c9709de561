//! kumo-server: the storage node. It serves cluster RPC on `-l`.

use crate::cli::Args;
use crate::daemon;
use crate::net::{self, rpc_server::RpcSession, Reply, Service};
use crate::store::{self, Store};
use rmpv::Value;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The server's RPC methods.
pub struct ServerService {
    started: Instant,
    store: Store,
}

/// How often the store is checked for segments worth compacting.
const COMPACT_INTERVAL_SECS: u64 = 30;

impl ServerService {
    pub fn new(store: Store) -> ServerService {
        ServerService {
            started: Instant::now(),
            store,
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
            "items" => Value::from(self.store.items()),
            _ => return None,
        })
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
    let store = match open_store(&args) {
        Ok(s) => s,
        Err(e) => return daemon::fatal(program, e),
    };
    if let Err(e) = daemon::daemonize_if_asked(&args) {
        return daemon::fatal(program, e);
    }
    let net = match net::Net::start(daemon::net_config(&args)) {
        Ok(n) => n,
        Err(e) => return daemon::fatal(program, format!("cannot start the network layer: {e}")),
    };
    store.claim_lock();
    let _compactor = start_compactor(&net, &store, &args);
    if let Err(e) = net.listen(
        listener,
        RpcSession::factory(Arc::new(ServerService::new(store.clone()))),
    ) {
        return daemon::fatal(program, format!("cannot serve {listen}: {e}"));
    }
    log::info!("listening on {listen}");
    let sig = daemon::wait_for_stop();
    log::info!("{sig} received; stopping");
    store.close();
    crate::cli::EXIT_OK
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Opens the `-s` store with its `#` options and the `-g` garbage settings.
fn open_store(args: &Args) -> Result<Store, String> {
    let (path, params) = args.store("store");
    let mut options = store::Options::default();
    options
        .apply(&params)
        .map_err(|e| format!("-s {}: {e}", path.display()))?;
    options.tombstone_max_age = args.seconds("garbage-max-time");
    options.tombstone_min_age = args
        .seconds("garbage-min-time")
        .min(options.tombstone_max_age);
    options.tombstone_mem_limit = args.count("garbage-mem-limit").saturating_mul(1024);
    let store = Store::open(&path, options)?;
    let r = store.open_report();
    log::info!(
        "store {} opened: {} segments ({} from hints), {} records scanned",
        path.display(),
        r.segments,
        r.from_hints,
        r.records
    );
    Ok(store)
}

/// Compacts on a timer; tombstones are collected on the `-gN` cadence, which keeps
/// the rewrite of live data that collection needs rare.
fn start_compactor(net: &net::Net, store: &Store, args: &Args) -> Option<net::timer::TimerId> {
    let store = store.clone();
    let gc_every = args.seconds("garbage-min-time").as_secs().max(1);
    let last_gc = std::sync::Mutex::new(unix_now());
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tick = move |_| {
        // Compaction does I/O for seconds; it runs on its own thread, one at a time.
        if busy.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let now = unix_now();
        let gc = {
            let mut l = last_gc.lock().unwrap_or_else(|p| p.into_inner());
            let due = now >= *l + gc_every;
            if due {
                *l = now;
            }
            due
        };
        let (store, busy) = (store.clone(), busy.clone());
        let _ = std::thread::Builder::new()
            .name("compact".into())
            .spawn(move || {
                if let Err(e) = store.compact(now, gc) {
                    log::error!("compaction failed: {e}");
                }
                busy.store(false, std::sync::atomic::Ordering::Release);
            });
    };
    match net
        .timers()
        .every(std::time::Duration::from_secs(COMPACT_INTERVAL_SECS), tick)
    {
        Ok(id) => Some(id),
        Err(e) => {
            log::error!("cannot schedule compaction: {e}");
            None
        }
    }
}
