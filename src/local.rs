//! `kumo local`: a whole cluster on this host in one command, the quickest way to a
//! working kumo. It starts a manager, `-n` servers (stores under `--dir`) and a
//! gateway as child processes of the same binary, attaches the servers, waits until
//! the gateway answers, and prints how to connect. Ctrl-C (SIGINT) or SIGTERM stops
//! every child cleanly. The stores stay, so the next start serves the same data.
//!
//! Once the cluster is up, `kumo local` supervises it, so that killing a server
//! shows failover rather than ending the demonstration: a child that dies is logged
//! and started again after a back-off ([`restart_delay`]), a server on its own
//! store, and a restarted server is attached again once the manager sees it. Until
//! then `kumoctl status` shows it as fault and the other servers serve its keys.

use crate::cli::options::{
    Kind, Opt, OptionList, BACKGROUND, GATEWAY_TEXT_PORT, LOGGING, MANAGER_PORT, SERVER_PORT,
};
use crate::cli::{Args, EXIT_OK};
use crate::daemon;
use crate::net::rpc_client::BlockingClient;
use crate::proto::cluster::{self as msg, NodesInfo};
use rmpv::Value;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The first wait before a child that died is started again: longer than the
/// manager takes to find a silent server (a few seconds), so that the failover
/// shows: the server is fault for a while and its keys are served by the others.
/// It doubles for each death that follows a start closely (a child that cannot
/// run, as when its port is taken), up to [`RESTART_DELAY_MAX`].
pub const RESTART_DELAY_MIN: Duration = Duration::from_secs(5);
pub const RESTART_DELAY_MAX: Duration = Duration::from_secs(60);
/// A child that ran this long before it died had worked: it is started again after
/// the shortest wait.
pub const RAN_LONG_ENOUGH: Duration = Duration::from_secs(60);
/// How often the supervisor looks at its children.
const SUPERVISE_TICK: Duration = Duration::from_millis(250);

/// The wait before starting again a child that died after running for `ran`;
/// `quick` counts the deaths in a row that came soon after a start, and is updated.
pub fn restart_delay(ran: Duration, quick: &mut u32) -> Duration {
    if ran >= RAN_LONG_ENOUGH {
        *quick = 0;
    }
    let delay = RESTART_DELAY_MIN.saturating_mul(1 << (*quick).min(16));
    *quick = quick.saturating_add(1);
    delay.min(RESTART_DELAY_MAX)
}

/// One child process: what it runs, so that it can be started again.
struct Kid {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    /// None while it waits to be started again.
    child: Option<Child>,
    started: Instant,
    /// Deaths in a row soon after a start (see [`restart_delay`]).
    quick: u32,
    restart_at: Option<Instant>,
    /// A server's address: it is attached again after a restart.
    server: Option<SocketAddr>,
}

impl Kid {
    /// Why it exited, once, when it has (its status and what it said on stderr).
    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok()??;
        let mut err = String::new();
        if let Some(e) = child.stderr.as_mut() {
            let _ = e.read_to_string(&mut err);
        }
        self.child = None;
        let said = if err.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", err.trim())
        };
        Some(format!(
            "{} exited ({status}){said} (log: {})",
            self.name,
            self.log.display()
        ))
    }
}

/// Starts children: this binary, in a role, logging under `logs`.
struct Launcher {
    exe: PathBuf,
    logs: PathBuf,
    verbose: bool,
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

impl Launcher {
    fn spawn(
        &self,
        name: &str,
        server: Option<SocketAddr>,
        args: Vec<String>,
    ) -> Result<Kid, String> {
        let mut kid = Kid {
            name: name.to_string(),
            log: self.logs.join(format!("{name}.log")),
            args,
            child: None,
            started: Instant::now(),
            quick: 0,
            restart_at: None,
            server,
        };
        self.start(&mut kid)?;
        Ok(kid)
    }

    fn start(&self, kid: &mut Kid) -> Result<(), String> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(&kid.args)
            .arg("-o")
            .arg(&kid.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if self.verbose {
            cmd.arg("-v");
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", kid.name))?;
        kid.child = Some(child);
        kid.started = Instant::now();
        kid.restart_at = None;
        Ok(())
    }
}

/// A child that exited: its name, status and what it said on stderr.
fn check(kids: &mut [Kid]) -> Result<(), String> {
    match kids.iter_mut().find_map(Kid::exited) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

fn stop(kids: &mut Vec<Kid>) {
    for c in kids.iter().filter_map(|k| k.child.as_ref()) {
        // SAFETY: kill(2) with a pid we spawned and have not reaped.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for k in kids.iter_mut() {
        let Some(c) = k.child.as_mut() else { continue };
        while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(c.try_wait(), Ok(None)) {
            log::warn!("{} did not stop in time; killing it", k.name);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    kids.clear();
}

/// Says what the supervisor did, in the log and on the terminal that started it.
fn tell(program: &str, what: &str) {
    log::warn!("{what}");
    eprintln!("{program}: {what}");
}

/// Keeps the children running until `stop` says the cluster stops: a child that
/// dies is started again after [`restart_delay`], and a server that was started
/// again is attached once the manager sees it (it was marked fault meanwhile, and
/// its keys were served by the other owners). A `hangup` is passed on to every
/// child.
fn supervise(
    program: &str,
    kids: &mut [Kid],
    launcher: &Launcher,
    manager: SocketAddr,
    hangup: &AtomicBool,
    stop: &std::sync::mpsc::Receiver<()>,
) {
    // Restarted servers not yet attached: name, address, and whether the manager
    // has been seen to hold it out since (until then an "active" is the old
    // incarnation's, before the manager heard of the restart).
    let mut to_attach: Vec<(String, SocketAddr, bool)> = Vec::new();
    while stop.recv_timeout(SUPERVISE_TICK).is_err() {
        if hangup.swap(false, Ordering::Relaxed) {
            for c in kids.iter().filter_map(|k| k.child.as_ref()) {
                // SAFETY: kill(2) with a pid we spawned and have not reaped.
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGHUP) };
            }
        }
        let now = Instant::now();
        for k in kids.iter_mut() {
            if let Some(why) = k.exited() {
                let delay = restart_delay(now - k.started, &mut k.quick);
                tell(
                    program,
                    &format!("{why}; starting it again in {}s", delay.as_secs()),
                );
                k.restart_at = Some(now + delay);
            }
            if k.restart_at.is_some_and(|t| now >= t) {
                match launcher.start(k) {
                    Ok(()) => {
                        tell(program, &format!("{} started again", k.name));
                        if let Some(a) = k.server {
                            to_attach.retain(|(_, b, _)| *b != a);
                            to_attach.push((k.name.clone(), a, false));
                        }
                    }
                    Err(e) => {
                        let delay = restart_delay(Duration::ZERO, &mut k.quick);
                        tell(
                            program,
                            &format!("{e}; trying again in {}s", delay.as_secs()),
                        );
                        k.restart_at = Some(now + delay);
                    }
                }
            }
        }
        to_attach.retain_mut(|(name, a, seen_out)| match attach_again(manager, *a) {
            Ok(Standing::In) if *seen_out => {
                tell(program, &format!("{name} is attached again"));
                false
            }
            Ok(Standing::In | Standing::Moving) => true,
            Ok(Standing::Out) => {
                *seen_out = true;
                true
            }
            Err(e) => {
                log::debug!("attaching {name} again: {e}");
                true
            }
        });
    }
}

/// Where a restarted server stands with the manager.
enum Standing {
    /// Held out of the hash space (fault, or a newcomer the manager was just
    /// asked to attach).
    Out,
    /// An active owner, and a replace runs.
    Moving,
    /// An active owner, with no replace running.
    In,
}

/// One step of attaching a restarted server: where it stands. A manager that lists
/// it as a newcomer is asked to attach it.
fn attach_again(manager: SocketAddr, server: SocketAddr) -> Result<Standing, String> {
    let mut c =
        BlockingClient::connect(manager, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    let info = c
        .call(msg::GET_NODES_INFO, &[])
        .map_err(|e| e.to_string())?;
    let info = NodesInfo::from_value(&info).map_err(|e| e.to_string())?;
    if info.newcomers.contains(&server) {
        c.call(msg::ATTACH, &[Value::from(true)])
            .map_err(|e| e.to_string())?;
        return Ok(Standing::Out);
    }
    let active = info
        .whs
        .nodes()
        .iter()
        .any(|n| n.addr == server && n.active);
    Ok(match (active, info.replace.is_some()) {
        (false, _) => Standing::Out,
        (true, true) => Standing::Moving,
        (true, false) => Standing::In,
    })
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
    let launcher = Launcher {
        exe,
        logs: logs.clone(),
        verbose: config.verbose,
    };
    let mut kids = Vec::new();
    let started = (|| -> Result<(), String> {
        let s = |x: &dyn ToString| x.to_string();
        kids.push(launcher.spawn(
            "manager",
            None,
            vec!["manager".into(), "-l".into(), s(&manager)],
        )?);
        let workers = local_workers(daemon::cores(), servers.len()).to_string();
        for (i, a) in servers.iter().enumerate() {
            let stream = with_port(*a, STREAM_PORT_OFFSET).ok_or("stream port past 65535")?;
            let store = dir.join(format!("server{}", i + 1));
            kids.push(launcher.spawn(
                &format!("server{}", i + 1),
                Some(*a),
                vec![
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
        kids.push(launcher.spawn(
            "gateway",
            None,
            vec![
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
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let hangup = AtomicBool::new(false);
    let sig = std::thread::scope(|scope| {
        let kids_ref = &mut kids;
        let launcher = &launcher;
        let hangup = &hangup;
        scope.spawn(move || supervise(program, kids_ref, launcher, manager, hangup, &rx));
        // The children reopen their logs too (logrotate signals kumo local only).
        let sig = daemon::wait_for_stop_with(&|| hangup.store(true, Ordering::Relaxed));
        let _ = tx.send(());
        sig
    });
    println!("kumo local: {sig} received; stopping");
    stop(&mut kids);
    EXIT_OK
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

    #[test]
    fn a_child_that_keeps_dying_waits_longer_each_time() {
        use super::*;
        let mut quick = 0;
        let long = RAN_LONG_ENOUGH;
        assert_eq!(
            restart_delay(long, &mut quick),
            RESTART_DELAY_MIN,
            "it had worked"
        );
        let soon = Duration::from_millis(300);
        let waits: Vec<u64> = (0..8)
            .map(|_| restart_delay(soon, &mut quick).as_secs())
            .collect();
        assert_eq!(waits, [10, 20, 40, 60, 60, 60, 60, 60]);
        assert_eq!(
            restart_delay(long, &mut quick),
            RESTART_DELAY_MIN,
            "a long run resets it"
        );
        assert_eq!(restart_delay(soon, &mut quick), 2 * RESTART_DELAY_MIN);
    }
}
