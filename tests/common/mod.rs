//! The shared harness of the integration tests: starts `kumo` processes on free
//! 127.0.0.1 ports, polls until they are ready (never a bare sleep), and kills
//! everything it started when the test ends, pass or fail.
#![allow(dead_code)]

pub mod load;
pub mod memcached;
pub mod netfault;

use kumo::cluster::hash_space::key_hash;
use kumo::net::rpc_client::BlockingClient;
use kumo::proto::cluster as msg;
use rmpv::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn kumo_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kumo"))
}

/// A port nobody listens on right now, and never handed out before in this test
/// process. It is taken below the kernel's ephemeral range: a daemon restarted on its
/// old port (a manager, a server) must find it free, and a port in that range may
/// meanwhile be the local end of some outgoing connection ("address already in
/// use"). The small window until the daemon binds it is accepted.
pub fn free_port() -> u16 {
    netfault::free_port_on(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A small deterministic generator (xorshift), so that a failing run can be
/// repeated from its seed.
pub struct Dice(u64);

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn pick(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
    /// Two distinct indexes below `n`.
    pub fn two(&mut self, n: usize) -> (usize, usize) {
        let a = self.pick(n);
        let b = (a + 1 + self.pick(n - 1)) % n;
        (a, b)
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.pick(100) < percent
    }
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
    /// SIGSTOP (`true`) or SIGCONT (`false`).
    pub fn pause(&self, stop: bool) {
        let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) on our own child's pid; it only sends a signal.
        unsafe { libc::kill(self.pid(), sig) };
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

/// The arguments of a server on `addr` with a free stream port, reporting to
/// `manager`, its store `dir/name`; `extra` follows.
pub fn server_args(
    dir: &Path,
    name: &str,
    addr: SocketAddr,
    manager: SocketAddr,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "server",
        "-l",
        &addr.to_string(),
        "-L",
        &free_port().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "-m".into(),
        manager.to_string(),
        "-s".into(),
        dir.join(name).display().to_string(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts `kumo ARGS...` with its output in `dir/name.log`.
pub fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
    spawn_as(dir, name, args, None)
}

/// Like [`spawn`]; with `who` (a binary every user may run, and a user), the
/// process runs under that user's uid (see [`netfault`]).
pub fn spawn_as(dir: &Path, name: &str, args: &[&str], who: Option<(&Path, (u32, u32))>) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let bin = who.map_or_else(kumo_bin, |(b, _)| b.to_path_buf());
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    if let Some((_, user)) = who {
        netfault::run_as(&mut cmd, user);
    }
    Proc {
        child: cmd.spawn().unwrap(),
        log,
    }
}

/// A tmpfs mounted at a directory while this lives (root only): a small disk that
/// a test can fill.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as mount(8) takes it: `8m`) at `at`, creating it.
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }

    /// Fills the disk with a ballast file until it is full.
    pub fn fill(&self) {
        fill_to_the_brim(&self.0.join(BALLAST));
    }

    /// Frees what `fill` took.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.0.join(BALLAST));
    }
}

/// The file that fills a [`Tmpfs`].
const BALLAST: &str = "ballast";

/// Fills the file system under `file` to its last byte.
pub fn fill_to_the_brim(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).unwrap();
    for chunk in [1 << 20, 4 << 10, 1] {
        while f.write_all(&vec![0u8; chunk]).is_ok() {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A `kumo local` cluster of three servers on free ports, its stores under `dir`.
pub struct Local {
    pub text: SocketAddr,
    pub manager: SocketAddr,
    /// server1, server2, server3.
    pub servers: Vec<SocketAddr>,
    args: Vec<String>,
}

impl Local {
    pub fn new(dir: &Path) -> Local {
        let text = local(free_port());
        let manager = local(free_port());
        // Servers take consecutive ports from -l, and each its port plus 100: find a
        // free run of four.
        let base = loop {
            let p = free_port();
            if p < 60000
                && (0..4).all(|i| {
                    std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()
                        && std::net::TcpListener::bind(("127.0.0.1", p + i + 100)).is_ok()
                })
            {
                break p;
            }
        };
        let args = vec![
            "local".to_string(),
            "--dir".into(),
            dir.display().to_string(),
            "-t".into(),
            text.to_string(),
            "-m".into(),
            manager.to_string(),
            "-l".into(),
            local(base).to_string(),
        ];
        let servers = (0..3).map(|i| local(base + i)).collect();
        Local {
            text,
            manager,
            servers,
            args,
        }
    }

    /// Starts it and returns once it says it is ready.
    pub fn start(&self) -> LocalRun {
        use std::io::BufRead;
        let mut child = Command::new(kumo_bin())
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut first)
            .unwrap();
        let run = LocalRun(Some(child));
        assert!(first.starts_with("kumo local: ready. 3 servers"), "{first}");
        run
    }

    /// Stops it as Ctrl-C does, and checks that it stopped cleanly.
    pub fn stop(&self, mut run: LocalRun) {
        let status = run.interrupt().unwrap();
        assert!(status.success(), "{status}");
    }
}

/// The pid of the process on this host whose command line holds every one of
/// `words` (a child of `kumo local`, found by its role and address).
pub fn pid_running(words: &[&str]) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if words.iter().all(|w| args.iter().any(|a| a == w)) {
            return Some(pid);
        }
    }
    None
}

/// A running `kumo local`, interrupted (so that it stops its children) if a test
/// fails while it runs.
pub struct LocalRun(Option<Child>);

impl LocalRun {
    pub fn pid(&self) -> i32 {
        self.0.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn interrupt(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.0.take()?;
        // SAFETY: signals our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        child.wait().ok()
    }
}

impl Drop for LocalRun {
    fn drop(&mut self) {
        self.interrupt();
    }
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

/// Runs `kumo ARGS...` to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(kumo_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fast failure detection for tests: keepalives every 0.5 s, a lost node after 2
/// failed reconnects of at most 1 s.
pub const FAST: &[&str] = &["-Ci", "0.5", "-Ys", "1", "-Yn", "2", "-v"];

/// The size of each server's disk in an isolated cluster: room for what the tests
/// write, small enough to fill at once.
pub const SMALL_DISK: &str = "64m";

/// The gateway's default `--deadline`. Clusters whose links are cut run with it.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(800);
/// The deadline of the other test clusters: a patient client. Their faults are
/// kills and restarts, found at once (a refused connect), so a write waits for the
/// cluster to route around the dead server instead of failing, and the tests can
/// require that no request fails at all.
pub const PATIENT_DEADLINE: Duration = Duration::from_secs(5);

/// One kumo-server of a test cluster.
pub struct ServerNode {
    pub proc: Option<Proc>,
    pub addr: SocketAddr,
    pub store: PathBuf,
}

/// Which process of a cluster: the slot of its user and address when each process
/// runs under its own uid (see [`Cluster::start_isolated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Manager 0, or 1 for the partner.
    Manager(usize),
    Gateway,
    /// Server `i`, by its index in the cluster.
    Server(usize),
}

impl End {
    pub fn slot(self) -> usize {
        match self {
            End::Manager(i) => 1 + i,
            End::Gateway => 3,
            End::Server(i) => 4 + i,
        }
    }
}

/// A manager, servers and a gateway on 127.0.0.1, as the guide's tutorial builds
/// them. Everything is killed when it is dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// With each process under its own uid on its own address: the binary they run
    /// (a copy every user may run). None: everything runs as this user on 127.0.0.1.
    pub isolated: Option<PathBuf>,
    pub manager: Option<Proc>,
    pub manager_addr: SocketAddr,
    /// The second manager of a pair (`-p`), if the cluster has one.
    pub partner: Option<Proc>,
    pub partner_addr: Option<SocketAddr>,
    manager_args: Vec<String>,
    /// Extra options for every server started from now on.
    pub server_args: Vec<String>,
    /// Appended to every server's store path (`#sync=always`, say).
    pub store_options: String,
    pub servers: Vec<ServerNode>,
    pub gateway: Proc,
    pub gateway_addr: SocketAddr,
    /// Where the gateway serves the binary protocol (`-b`).
    pub gateway_binary_addr: SocketAddr,
    /// The gateway's `--deadline`: every request is answered within it.
    pub deadline: Duration,
    /// In an isolated cluster, each server's store is on a small disk of its own,
    /// by server index.
    pub disks: std::collections::BTreeMap<usize, Tmpfs>,
}

impl Cluster {
    /// Starts the processes, attaches the servers and waits until a set works.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, &[], |_, _| {})
    }

    /// Like `start`, with extra manager options, and `prepare(i, store)` run before
    /// server `i` starts (to put a store in place).
    pub fn start_with(n: usize, manager_args: &[&str], prepare: impl Fn(usize, &Path)) -> Cluster {
        Self::start_full(n, false, manager_args, prepare)
    }

    /// Two managers, each naming the other with -p; servers and the gateway know both.
    pub fn start_pair(n: usize) -> Cluster {
        Self::start_full(n, true, &[], |_, _| {})
    }

    /// Like `start_pair`, but returns as soon as `kumoctl attach` has answered, as a
    /// new user would go on: the first replace may still run, and the gateway may
    /// not have heard of any server yet.
    /// `store_options` follow every server's store path.
    pub fn start_pair_unsettled(n: usize, store_options: &str) -> Cluster {
        Self::start_inner(n, true, &[], |_, _| {}, false, false, &[], store_options)
    }

    /// Like `start_pair_unsettled` (or a single manager, and settled), with every
    /// process under its own uid on its own 127.0.0.x address, so that links between
    /// them can be cut ([`netfault`]). The caller holds a [`netfault::Chain`],
    /// created before this: connections opened before it are only half cut.
    /// `store_options` follow every server's store path.
    pub fn start_isolated(n: usize, pair: bool, store_options: &str) -> Cluster {
        Self::start_inner(n, pair, &[], |_, _| {}, !pair, true, &[], store_options)
    }

    fn start_full(
        n: usize,
        pair: bool,
        manager_args: &[&str],
        prepare: impl Fn(usize, &Path),
    ) -> Cluster {
        Self::start_inner(n, pair, manager_args, prepare, true, false, &[], "")
    }

    /// Like `start`, with extra gateway options.
    pub fn start_gateway_with(n: usize, gateway_args: &[&str]) -> Cluster {
        Self::start_inner(n, false, &[], |_, _| {}, true, false, gateway_args, "")
    }

    /// Like `start`, with `options` after every server's store path.
    pub fn start_with_store_options(n: usize, options: &str) -> Cluster {
        Self::start_inner(n, false, &[], |_, _| {}, true, false, &[], options)
    }

    fn start_inner(
        n: usize,
        pair: bool,
        manager_args: &[&str],
        prepare: impl Fn(usize, &Path),
        settle: bool,
        isolated: bool,
        gateway_args: &[&str],
        store_options: &str,
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let isolated = isolated.then(|| shared_binary(dir.path()));
        let addr_of = |end: End| match isolated {
            Some(_) => netfault::free_addr(end.slot()),
            None => local(free_port()),
        };
        let manager_addr = addr_of(End::Manager(0));
        let partner_addr = pair.then(|| addr_of(End::Manager(1)));
        let gateway_addr = addr_of(End::Gateway);
        let gateway_binary_addr =
            SocketAddr::new(gateway_addr.ip(), netfault::free_port_on(gateway_addr.ip()));
        let deadline = if isolated.is_some() {
            DEFAULT_DEADLINE
        } else {
            PATIENT_DEADLINE
        };
        let mut c = Cluster {
            isolated,
            manager: None,
            manager_addr,
            partner: None,
            partner_addr,
            manager_args: manager_args.iter().map(|a| a.to_string()).collect(),
            server_args: Vec::new(),
            store_options: store_options.to_string(),
            servers: Vec::new(),
            gateway: Proc {
                child: Command::new("true").spawn().unwrap(),
                log: PathBuf::new(),
            },
            gateway_addr,
            gateway_binary_addr,
            deadline,
            disks: Default::default(),
            dir,
        };
        c.start_manager(0);
        if pair {
            c.start_manager(1);
        }
        for i in 0..n {
            prepare(i, &c.dir.path().join(format!("server{i}")));
            c.add_server();
        }
        // The product's default is kept where links are cut (see PATIENT_DEADLINE).
        let deadline = format!("{}", c.deadline.as_secs_f64());
        let deadline_flag: &[&str] = if c.isolated.is_some() {
            &[]
        } else {
            &["--deadline", &deadline]
        };
        c.gateway = c.spawn_node(
            End::Gateway,
            "gateway",
            &[
                &[
                    "gateway",
                    "-t",
                    &gateway_addr.to_string(),
                    "-b",
                    &gateway_binary_addr.to_string(),
                ],
                deadline_flag,
                gateway_args,
                &c.manager_flags()
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()[..],
                FAST,
            ]
            .concat(),
        );
        let all: Vec<SocketAddr> = c.servers.iter().map(|s| s.addr).collect();
        c.wait_newcomers(&all);
        let (code, out, err) = c.ctl(&["attach"]);
        assert_eq!(code, 0, "attach: {out} {err}");
        if settle {
            c.wait_attached(&all);
            c.wait_gateway_ready();
        }
        c
    }

    /// Starts one more server (not attached).
    pub fn add_server(&mut self) -> usize {
        let i = self.servers.len();
        let addr = match self.isolated {
            Some(_) => netfault::free_addr(End::Server(i).slot()),
            None => local(free_port()),
        };
        let store = self.dir.path().join(format!("server{i}"));
        if self.isolated.is_some() {
            let disk = Tmpfs::mount(&store, SMALL_DISK).expect("mount a small disk");
            self.disks.insert(i, disk);
        }
        let mut node = ServerNode {
            proc: None,
            addr,
            store,
        };
        node.proc = Some(self.spawn_server(&node, i));
        wait_rpc_ready(addr);
        self.servers.push(node);
        i
    }

    /// Starts a process of the cluster, under its own user if the cluster is
    /// isolated.
    fn spawn_node(&self, end: End, name: &str, args: &[&str]) -> Proc {
        let user = self
            .isolated
            .as_ref()
            .map(|bin| (bin.as_path(), netfault::test_user(end.slot())));
        spawn_as(self.dir.path(), name, args, user)
    }

    /// The uid and address of a process, for cutting its links.
    pub fn peer_of(&self, end: End) -> netfault::Peer {
        assert!(self.isolated.is_some(), "the cluster is not isolated");
        netfault::peer(end.slot())
    }

    fn spawn_server(&self, node: &ServerNode, i: usize) -> Proc {
        let stream = match self.isolated {
            Some(_) => netfault::free_port_on(node.addr.ip()),
            None => free_port(),
        }
        .to_string();
        if self.isolated.is_some() {
            netfault::hand_over(&node.store, netfault::test_user(End::Server(i).slot()));
        }
        self.spawn_node(
            End::Server(i),
            &format!("server{i}-{}", rand_tag()),
            &[
                &[
                    "server",
                    "-l",
                    &node.addr.to_string(),
                    "-L",
                    &stream,
                    "-s",
                    &format!("{}{}", node.store.display(), self.store_options),
                ],
                &self
                    .manager_flags()
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()[..],
                FAST,
                &self
                    .server_args
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()[..],
            ]
            .concat(),
        )
    }

    pub fn kill_server(&mut self, i: usize) {
        if let Some(mut p) = self.servers[i].proc.take() {
            p.kill9();
        }
    }

    /// Kills server `i` and starts it again on its address with an empty store, as
    /// kumofs's regression tests do.
    pub fn restart_server_fresh(&mut self, i: usize) {
        self.kill_server(i);
        let _ = std::fs::remove_dir_all(&self.servers[i].store);
        let p = self.spawn_server(&self.servers[i], i);
        self.servers[i].proc = Some(p);
        wait_rpc_ready(self.servers[i].addr);
    }

    /// Waits until the live manager shows server `i` as fault.
    pub fn wait_fault(&self, i: usize) {
        let a = self.servers[i].addr;
        wait_until(
            Duration::from_secs(15),
            &format!("{a} to be marked fault"),
            || {
                self.nodes_info()
                    .whs
                    .nodes()
                    .iter()
                    .any(|n| n.addr == a && !n.active)
            },
        );
    }

    /// Restarts server `i` on its old address with its old store.
    pub fn restart_server(&mut self, i: usize) {
        self.kill_server(i);
        let p = self.spawn_server(&self.servers[i], i);
        self.servers[i].proc = Some(p);
        wait_rpc_ready(self.servers[i].addr);
    }

    /// `-m M1 [-p M2]` for servers and gateways.
    fn manager_flags(&self) -> Vec<String> {
        let mut f = vec!["-m".to_string(), self.manager_addr.to_string()];
        if let Some(p) = self.partner_addr {
            f.extend(["-p".to_string(), p.to_string()]);
        }
        f
    }

    /// The address of manager `i` (0, or 1 for the partner).
    pub fn manager_at(&self, i: usize) -> SocketAddr {
        if i == 0 {
            self.manager_addr
        } else {
            self.partner_addr.expect("no second manager")
        }
    }

    fn start_manager(&mut self, i: usize) {
        let me = self.manager_at(i);
        let mut extra: Vec<String> = self.manager_args.clone();
        if self.partner_addr.is_some() {
            extra.extend(["-p".to_string(), self.manager_at(1 - i).to_string()]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let p = self.spawn_node(
            End::Manager(i),
            &format!("manager-{}", rand_tag()),
            &[&["manager", "-l", &me.to_string()], FAST, &extra[..]].concat(),
        );
        wait_rpc_ready_method(me, "GetNodesInfo");
        if i == 0 {
            self.manager = Some(p);
        } else {
            self.partner = Some(p);
        }
    }

    pub fn kill_manager(&mut self) {
        self.kill_manager_at(0);
    }

    pub fn kill_manager_at(&mut self, i: usize) {
        let p = if i == 0 {
            self.manager.take()
        } else {
            self.partner.take()
        };
        if let Some(mut p) = p {
            p.kill9();
        }
    }

    pub fn restart_manager(&mut self) {
        self.restart_manager_at(0);
    }

    /// Restarts manager `i` on its old address and waits until it has relearnt the
    /// tables (from its partner or the servers).
    pub fn restart_manager_at(&mut self, i: usize) {
        self.kill_manager_at(i);
        self.start_manager(i);
    }

    fn manager_alive(&self, i: usize) -> bool {
        if i == 0 {
            self.manager.is_some()
        } else {
            self.partner.is_some()
        }
    }

    /// A live manager's address, the first one by preference.
    pub fn live_manager(&self) -> SocketAddr {
        (0..if self.partner_addr.is_some() { 2 } else { 1 })
            .find(|i| self.manager_alive(*i))
            .map(|i| self.manager_at(i))
            .expect("no manager alive")
    }

    /// Runs `kumoctl MANAGER ARGS...` on a live manager.
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let m = self.live_manager().to_string();
        run(&[&["ctl", &m], args].concat())
    }

    pub fn nodes_info(&self) -> kumo::proto::cluster::NodesInfo {
        let v = rpc(self.live_manager(), "GetNodesInfo", &[]).unwrap();
        kumo::proto::cluster::NodesInfo::from_value(&v).unwrap()
    }

    pub fn wait_newcomers(&self, addrs: &[SocketAddr]) {
        wait_until(
            Duration::from_secs(20),
            "servers to reach the manager",
            || {
                let info = self.nodes_info();
                addrs.iter().all(|a| info.newcomers.contains(a))
            },
        );
    }

    pub fn wait_attached(&self, addrs: &[SocketAddr]) {
        wait_until(
            Duration::from_secs(20),
            "servers to be attached everywhere",
            || {
                let info = self.nodes_info();
                let active =
                    |a: &SocketAddr| info.whs.nodes().iter().any(|n| n.addr == *a && n.active);
                addrs.iter().all(active)
                    && info.replace.is_none()
                    && info.whs == info.rhs
                    && self.servers.iter().filter(|s| s.proc.is_some()).all(|s| {
                        let status =
                            |name: &str| rpc(s.addr, "GetStatus", &[Value::from(name)]).ok();
                        status("whs") == Some(info.whs.to_value())
                            && status("rhs") == Some(info.rhs.to_value())
                            && status("replstat").as_ref().and_then(Value::as_str) == Some("ready")
                    })
            },
        );
    }

    /// Waits until the gateway routes a write.
    pub fn wait_gateway_ready(&self) {
        let c = self.client();
        wait_until(
            Duration::from_secs(20),
            "the gateway to route a set",
            || c.set("kumo-test-ready", "1", 0).is_ok(),
        );
    }

    /// A memcached client on the gateway, text protocol.
    pub fn client(&self) -> memcache::Client {
        client(self.gateway_addr)
    }

    /// Waits until no replace runs and every live server reads and writes by the
    /// same, current tables (hscheck true everywhere).
    pub fn wait_settled(&self) {
        wait_until(Duration::from_secs(60), "the replace to finish", || {
            self.is_settled()
        });
    }

    /// No replace runs and every live server reads and writes by the same,
    /// current tables.
    pub fn is_settled(&self) -> bool {
        let info = self.nodes_info();
        info.replace.is_none()
            && info.whs == info.rhs
            && self.servers.iter().filter(|s| s.proc.is_some()).all(|s| {
                let status = |name: &str| rpc(s.addr, "GetStatus", &[Value::from(name)]).ok();
                status("whs") == Some(info.whs.to_value())
                    && status("hscheck") == Some(Value::from(true))
                    && status("replstat").as_ref().and_then(Value::as_str) == Some("ready")
            })
    }

    /// Every key of `expect` (key to value) is stored, with that value, on exactly its
    /// three owners in whs; and the servers hold no other values, but for copies of
    /// the `undefined` keys (their last write failed: each owner may hold the old
    /// value, the new one, or none).
    pub fn check_three_copies(
        &self,
        expect: &std::collections::HashMap<String, String>,
        undefined: &[String],
    ) {
        let info = self.nodes_info();
        let raw = |o: SocketAddr, k: &str| {
            rpc(
                o,
                msg::GET,
                &[Value::Binary(k.as_bytes().to_vec()), true.into()],
            )
            .unwrap_or_else(|e| panic!("{o} get {k}: {e}"))
        };
        let mut missing = Vec::new();
        for (k, v) in expect {
            let owners = info.whs.active_owners(key_hash(k.as_bytes()));
            assert_eq!(owners.len(), 3, "{k} has owners {owners:?}");
            for o in owners {
                let got = raw(o, k);
                let ok = msg::record_from_value(&got).is_ok_and(|r| {
                    r.kind == kumo::store::record::Kind::Value && r.data == v.as_bytes()
                });
                if !ok {
                    missing.push(format!("{k} on {o}: {got:?}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "{} copies missing or wrong, first: {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        let undefined_copies: u64 = undefined
            .iter()
            .map(|k| {
                info.whs
                    .active_owners(key_hash(k.as_bytes()))
                    .into_iter()
                    .filter(|o| {
                        msg::record_from_value(&raw(*o, k))
                            .is_ok_and(|r| r.kind == kumo::store::record::Kind::Value)
                    })
                    .count() as u64
            })
            .sum();
        assert_eq!(
            self.items_total(),
            3 * expect.len() as u64 + undefined_copies,
            "the servers hold values beyond three copies of every key"
        );
    }

    /// `kumostat SERVER items`, summed over the live servers.
    pub fn items_total(&self) -> u64 {
        self.servers
            .iter()
            .filter(|s| s.proc.is_some())
            .map(|s| {
                rpc(s.addr, "GetStatus", &[Value::from("items")])
                    .unwrap()
                    .as_u64()
                    .unwrap()
            })
            .sum()
    }
}

fn rand_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 100_000
}

/// The kumo binary, copied where every test user may run it: the build tree may
/// sit in a directory only root can enter (a fresh clone under `mktemp -d`).
fn shared_binary(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("kumo");
    std::fs::copy(kumo_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Waits until `method` answers on `addr`.
pub fn wait_rpc_ready_method(addr: SocketAddr, method: &str) {
    wait_until(
        Duration::from_secs(15),
        &format!("{addr} to answer {method}"),
        || rpc(addr, method, &[]).is_ok(),
    );
}

/// A memcached text-protocol client with generous timeouts.
pub fn client(addr: SocketAddr) -> memcache::Client {
    let url = format!("memcache://{addr}?protocol=ascii&timeout=30&connect_timeout=5");
    memcache::Client::connect(url).unwrap()
}

impl Drop for Cluster {
    /// A failing test shows what the manager saw, and keeps every log on disk.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dir = self.dir.path().to_path_buf();
            eprintln!("--- cluster logs kept in {} ---", dir.display());
            if let Some(m) = &self.manager {
                let text = m.log_text();
                let lines: Vec<&str> = text.lines().filter(|l| !l.contains("DEBUG")).collect();
                for l in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("manager: {l}");
                }
            }
            let keep = std::env::temp_dir().join(format!("kumo-failed-{}", rand_tag()));
            let _ = std::process::Command::new("cp")
                .arg("-r")
                .arg(&dir)
                .arg(&keep)
                .status();
            eprintln!("--- copied to {} ---", keep.display());
        }
    }
}
