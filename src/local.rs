//! `kumo local`: a whole cluster on this host in one command, the quickest way to a
//! working kumo. It starts a manager, `-n` servers (stores under `--dir`) and a
//! gateway as child processes of the same binary, attaches the servers, waits until
//! the gateway answers, and prints how to connect. Ctrl-C (SIGINT) or SIGTERM stops
//! every child cleanly. The stores stay, so the next start serves the same data.

use crate::cli::options::{
    Kind, Opt, OptionList, BACKGROUND, GATEWAY_TEXT_PORT, LOGGING, MANAGER_PORT, SERVER_PORT,
};
use crate::cli::{Args, EXIT_FAILURE, EXIT_OK};
use crate::daemon;
use crate::net::rpc_client::BlockingClient;
use crate::proto::cluster::{self as msg, NodesInfo};
use rmpv::Value;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The options of kumo local: the shared groups, and its own.
pub static OPTIONS: OptionList = &[LOGGING, BACKGROUND, OWN_OPTIONS];

#[rustfmt::skip]
static OWN_OPTIONS: &[Opt] = &[
    Opt { short: Some("n"), long: "servers", kind: Kind::Count, default: Some("3"), required: false,
        help: "Number of servers to run." },
    Opt { short: None, long: "dir", kind: Kind::Path, default: Some("./kumo-data"), required: false,
        help: "Directory for the stores (server1, server2, ...) and the logs of every process. Data is kept across restarts." },
    Opt { short: Some("t"), long: "memcache-text", kind: Kind::Listen { port: GATEWAY_TEXT_PORT }, default: Some("127.0.0.1:11211"), required: false,
        help: "Address the gateway serves the memcached text protocol on." },
    Opt { short: Some("m"), long: "manager", kind: Kind::Address { port: MANAGER_PORT }, default: Some("127.0.0.1:19700"), required: false,
        help: "Address of the manager." },
    Opt { short: Some("l"), long: "listen", kind: Kind::Address { port: SERVER_PORT }, default: Some("127.0.0.1:19800"), required: false,
        help: "Address of the first server; the others take the next ports. Each server's stream port is its port plus 100." },
];

/// How long the cluster may take to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long children get to stop after SIGTERM before they are killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most servers `kumo local` runs.
pub const SERVERS_MAX: u64 = 64;
/// A server's stream port is its port plus this.
pub const STREAM_PORT_OFFSET: u16 = 100;

struct Kid {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Worker threads (`-TR`) for each server and the gateway of a local cluster:
/// they share the host's cores (the manager is mostly idle), at least one each.
/// Each taking every core, as a lone daemon does, runs several busy threads per
/// core and spends the difference switching between them.
pub fn local_workers(cores: usize, servers: usize) -> usize {
    (cores / (servers + 1)).max(1)
}

fn with_port(a: SocketAddr, offset: u16) -> Option<SocketAddr> {
    Some(SocketAddr::new(a.ip(), a.port().checked_add(offset)?))
}

fn spawn(
    exe: &Path,
    name: &str,
    logs: &Path,
    verbose: bool,
    args: &[String],
) -> Result<Kid, String> {
    let log = logs.join(format!("{name}.log"));
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .arg("-o")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if verbose {
        cmd.arg("-v");
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    Ok(Kid {
        name: name.to_string(),
        child,
        log,
    })
}

/// A child that exited: its name, status and what it said on stderr.
fn check(kids: &mut [Kid]) -> Result<(), String> {
    for k in kids.iter_mut() {
        if let Ok(Some(status)) = k.child.try_wait() {
            let mut err = String::new();
            if let Some(e) = k.child.stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!(
                "{} exited ({status}): {} (log: {})",
                k.name,
                err.trim(),
                k.log.display()
            ));
        }
    }
    Ok(())
}

fn stop(kids: &mut Vec<Kid>) {
    for k in kids.iter() {
        // SAFETY: kill(2) with a pid we spawned and have not reaped.
        unsafe { libc::kill(k.child.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for k in kids.iter_mut() {
        while matches!(k.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(k.child.try_wait(), Ok(None)) {
            log::warn!("{} did not stop in time; killing it", k.name);
            let _ = k.child.kill();
            let _ = k.child.wait();
        }
    }
    kids.clear();
}

/// Polls until the manager knows every server and they are attached, and the
/// gateway answers a memcached `version`.
fn bring_up(
    kids: &mut [Kid],
    manager: SocketAddr,
    servers: &[SocketAddr],
    text: SocketAddr,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        check(kids)?;
        if Instant::now() > deadline {
            return Err(format!(
                "the cluster did not come up within {}s",
                START_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
        let Ok(mut c) = BlockingClient::connect(manager, Duration::from_secs(2)) else {
            continue;
        };
        let Ok(info) = c
            .call(msg::GET_NODES_INFO, &[])
            .map(|v| NodesInfo::from_value(&v))
        else {
            continue;
        };
        let Ok(info) = info else { continue };
        let active = |a: &SocketAddr| info.whs.nodes().iter().any(|n| n.addr == *a && n.active);
        if !servers
            .iter()
            .all(|a| active(a) || info.newcomers.contains(a))
        {
            continue;
        }
        if !info.newcomers.is_empty()
            || (info.replace.is_none() && !info.whs.same_layout(&info.rhs))
        {
            // A manager that has just started holds an attach until it has heard
            // from the servers, which may outlast this call: ask again next round.
            if let Err(e) = c.call(msg::ATTACH, &[Value::from(true)]) {
                log::debug!("attach: {e}");
            }
            continue;
        }
        if info.replace.is_some() {
            continue;
        }
        if gateway_answers(text) {
            return Ok(());
        }
    }
}

fn gateway_answers(text: SocketAddr) -> bool {
    let target = if text.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], text.port()))
    } else {
        text
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 64];
    s.write_all(b"version\r\n").is_ok()
        && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"VERSION"))
}

/// `kumo local`'s own settings, typed.
pub struct Config {
    pub servers: u64,
    pub dir: PathBuf,
    pub memcache_text: SocketAddr,
    pub manager: SocketAddr,
    /// The first server's address.
    pub listen: SocketAddr,
    pub verbose: bool,
}

impl Config {
    pub fn from_args(args: &Args) -> Config {
        Config {
            servers: args.count("servers"),
            dir: args
                .opt_path("dir")
                .unwrap_or_else(|| PathBuf::from("./kumo-data")),
            memcache_text: args.addr("memcache-text"),
            manager: args.addr("manager"),
            listen: args.addr("listen"),
            verbose: args.switch("verbose"),
        }
    }
}

pub fn main(args: Args) -> i32 {
    let program = args.role.program();
    let config = Config::from_args(&args);
    daemon::block_signals();
    if let Err(e) = daemon::init_logging(&args) {
        return daemon::fatal(program, e);
    }
    let n = config.servers;
    if !(1..=SERVERS_MAX).contains(&n) {
        return daemon::fatal(program, format!("-n must be from 1 to {SERVERS_MAX}"));
    }
    let dir = config.dir.clone();
    let logs = dir.join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        return daemon::fatal(program, format!("cannot create {}: {e}", logs.display()));
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return daemon::fatal(program, format!("cannot find my own binary: {e}")),
    };
    let (manager, first, text) = (config.manager, config.listen, config.memcache_text);
    let servers: Option<Vec<SocketAddr>> = (0..n as u16).map(|i| with_port(first, i)).collect();
    let Some(servers) = servers else {
        return daemon::fatal(program, "server ports run past 65535");
    };
    if let Err(e) = daemon::daemonize_if_asked(&args) {
        return daemon::fatal(program, e);
    }
    let verbose = config.verbose;
    let mut kids = Vec::new();
    let started = (|| -> Result<(), String> {
        let s = |x: &dyn ToString| x.to_string();
        kids.push(spawn(
            &exe,
            "manager",
            &logs,
            verbose,
            &["manager".into(), "-l".into(), s(&manager)],
        )?);
        let workers = local_workers(daemon::cores(), servers.len()).to_string();
        for (i, a) in servers.iter().enumerate() {
            let stream = with_port(*a, STREAM_PORT_OFFSET).ok_or("stream port past 65535")?;
            let store = dir.join(format!("server{}", i + 1));
            kids.push(spawn(
                &exe,
                &format!("server{}", i + 1),
                &logs,
                verbose,
                &[
                    "server".into(),
                    "-l".into(),
                    s(a),
                    "-L".into(),
                    stream.port().to_string(),
                    "-m".into(),
                    s(&manager),
                    "-s".into(),
                    store.display().to_string(),
                    "-TR".into(),
                    workers.clone(),
                ],
            )?);
        }
        kids.push(spawn(
            &exe,
            "gateway",
            &logs,
            verbose,
            &[
                "gateway".into(),
                "-m".into(),
                s(&manager),
                "-t".into(),
                s(&text),
                "-TR".into(),
                workers,
            ],
        )?);
        bring_up(&mut kids, manager, &servers, text)
    })();
    if let Err(e) = started {
        stop(&mut kids);
        return daemon::fatal(program, e);
    }
    println!(
        "kumo local: ready. {n} servers, data in {}, logs in {}",
        dir.display(),
        logs.display()
    );
    println!("  memcached clients connect to {text}   (try: printf 'set k 0 0 1\\r\\nv\\r\\nget k\\r\\n' | nc {} {})", text.ip(), text.port());
    println!("  kumoctl {manager} status      kumostat -m {manager} items");
    println!("  Ctrl-C stops the cluster; the data stays for the next start.");
    let _ = std::io::stdout().flush();
    // A child that dies takes the cluster down with a message, rather than
    // leaving a cluster that silently lost a member.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let sig = std::thread::scope(|scope| {
        let kids_ref = &mut kids;
        scope.spawn(move || loop {
            if rx.recv_timeout(Duration::from_millis(500)).is_ok() {
                return;
            }
            if let Err(e) = check(kids_ref) {
                log::error!("{e}; stopping the cluster");
                eprintln!("{program}: {e}; stopping the cluster");
                // SAFETY: sends SIGTERM to this process, which wait_for_stop takes.
                unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
                return;
            }
        });
        let sig = daemon::wait_for_stop();
        let _ = tx.send(());
        sig
    });
    println!("kumo local: {sig} received; stopping");
    let failed = kids
        .iter_mut()
        .any(|k| matches!(k.child.try_wait(), Ok(Some(_))));
    stop(&mut kids);
    if failed {
        EXIT_FAILURE
    } else {
        EXIT_OK
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_local_cluster_shares_the_cores() {
        use super::local_workers;
        assert_eq!(local_workers(2, 3), 1, "a small host: one each");
        assert_eq!(local_workers(16, 3), 4);
        assert_eq!(local_workers(64, 1), 32);
        assert_eq!(local_workers(1, 5), 1, "never none");
    }
}
