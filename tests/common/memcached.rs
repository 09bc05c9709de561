//! A real memcached for the tests that compare kumo with it: started on a free
//! 127.0.0.1 port and SIGKILLed when dropped. It must be installed (`apt-get
//! install -y memcached`; `make test` installs it); a missing binary FAILS the test
//! rather than skipping it. `MEMCACHED_BIN` may point at another binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// memcached's path: `$MEMCACHED_BIN`, else the first `memcached` on PATH or in the
/// usual system directories (a root-less PATH may lack /usr/sbin).
fn memcached_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MEMCACHED_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join("memcached"))
        .find(|p| p.is_file())
}

/// A running memcached, SIGKILLed (through super::Proc) when dropped.
pub struct Memcached {
    pub proc: super::Proc,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// True once `addr` answers `version` with a `VERSION ` line (or, `binary`, a
/// NOOP with its response).
fn answers(addr: SocketAddr, binary: bool) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut noop = [0u8; 24];
    noop[0] = 0x80;
    noop[1] = 0x0a;
    let ask: &[u8] = if binary { &noop } else { b"version\r\n" };
    if s.write_all(ask).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) if binary => n >= 2 && buf[0] == 0x81 && buf[1] == 0x0a,
        Ok(n) => buf[..n].starts_with(b"VERSION "),
        Err(_) => false,
    }
}

pub fn start_memcached() -> Memcached {
    start(false)
}

/// A memcached that speaks only the binary protocol (`-B binary`).
pub fn start_memcached_binary() -> Memcached {
    start(true)
}

fn start(binary: bool) -> Memcached {
    let bin = memcached_bin().unwrap_or_else(|| {
        panic!(
            "the `memcached` binary is not installed, and the memcached conformance test needs \
             the real server: install it with `apt-get install -y memcached` \
             (`make test` installs it through tests/peers.sh), or set MEMCACHED_BIN"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let port = super::free_port();
    let addr = super::local(port);
    let log = dir.path().join("memcached.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(&bin);
    // -U 0: no UDP. Defaults otherwise: -I 1m item size limit, -m 64 MiB, 4 threads.
    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"]);
    if binary {
        cmd.args(["-B", "binary"]);
    }
    // memcached refuses to run as root unless told which user to be (CI runs as root).
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "root"]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut proc = super::Proc { child, log };
    super::wait_until(
        Duration::from_secs(10),
        &format!("memcached on {addr} to answer"),
        || {
            if !proc.is_alive() {
                panic!(
                    "memcached exited at start; its output:\n{}",
                    proc.log_text()
                );
            }
            answers(addr, binary)
        },
    );
    Memcached {
        proc,
        addr,
        _dir: dir,
    }
}

/// The seeds and steps of a differential run: `KUMO_DIFF_SEED` replays one seed;
/// otherwise `KUMO_DIFF_SEEDS` fresh ones (3 by default) of `KUMO_DIFF_OPS` steps
/// (400 by default).
/// How many of the last steps a differential failure shows: `KUMO_DIFF_HISTORY`,
/// 12 unless set (a key's story may begin far back).
pub fn history_shown() -> usize {
    std::env::var("KUMO_DIFF_HISTORY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
}

pub fn diff_plan() -> (Vec<u64>, usize) {
    let env = |name: &str| -> Option<u64> { std::env::var(name).ok()?.parse().ok() };
    let steps = env("KUMO_DIFF_OPS").unwrap_or(400) as usize;
    let seeds = match env("KUMO_DIFF_SEED") {
        Some(s) => vec![s],
        None => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000;
            (0..env("KUMO_DIFF_SEEDS").unwrap_or(3))
                .map(|n| base + n)
                .collect()
        }
    };
    (seeds, steps)
}
