//! The shared harness of the integration tests: starts `kumo` processes on free
//! 127.0.0.1 ports, polls until they are ready (never a bare sleep), and kills
//! everything it started when the test ends, pass or fail.
#![allow(dead_code)]

use kumo::net::rpc_client::BlockingClient;
use rmpv::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn kumo_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kumo"))
}

/// A port nobody listens on right now. The kernel picks it, so parallel tests do not
/// collide; the small window until the daemon binds it is accepted.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A child process killed with SIGKILL when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `kumo ARGS...` with its output in `dir/name.log`.
pub fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(kumo_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Proc { child, log }
}

/// Calls one RPC method on `addr`, connecting afresh.
pub fn rpc(addr: SocketAddr, method: &str, params: &[Value]) -> Result<Value, String> {
    let mut c = BlockingClient::connect(addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    c.call(method, params)
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// Waits until the node at `addr` answers GetStatus.
pub fn wait_rpc_ready(addr: SocketAddr) {
    wait_until(
        Duration::from_secs(15),
        &format!("{addr} to answer"),
        || rpc(addr, "GetStatus", &[Value::from("pid")]).is_ok(),
    );
}
