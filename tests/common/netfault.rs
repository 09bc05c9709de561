//! Real network faults between processes on one machine. Each process runs under its
//! own uid (a system user `kumo-fault-N` per slot N) and listens on its own loopback
//! address (127.0.0.(10+N)); a link between two of them is cut with iptables owner
//! rules, so the kernel drops their packets as a broken network would: a connect
//! stalls (SYN retransmits, no RST), an established connection stalls both ways, and
//! everything resumes when the link heals.
//!
//! Needs root and iptables (any backend); `available()` says why not, and the tests
//! skip then. All rules live in one chain per test process, `KUMO-TEST-<pid>`, jumped
//! to from the top of OUTPUT; a [`Chain`] guard creates it and removes it on drop
//! (also when a test panics), and chains left by killed test processes are swept the
//! next time one is created. Users and addresses are shared by slot between tests, so
//! a `Chain` also serialises the tests that hold one (a process mutex plus a flock
//! across test processes): hold it for the whole test, and create it before the
//! processes start (see "connection marks" below).
//!
//! Why more than the two rules `--uid-owner A -d ADDR_B -j DROP` and its mirror: on
//! loopback an outgoing connection has source address 127.0.0.1 whatever its owner
//! listens on, so on a connection A opened to B, B's packets go to 127.0.0.1 and not
//! to A's address, and would flow on during the cut (A would still read what B
//! sends). Every connection a fault user opens is therefore marked with the opener's
//! uid (a conntrack mark, set on its first packet by a rule of the chain), and a cut
//! also drops B's packets on connections marked A and A's packets on connections
//! marked B. Connections opened before the chain existed carry no mark and are only
//! half cut.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

/// A process slot's identity on the network: its uid and the address it listens on.
pub type Peer = (u32, IpAddr);

/// The conntrack mark bits this module uses: the opener's uid, shifted by 8.
const MARK_MASK: u32 = 0x00ff_ff00;
const CHAIN_PREFIX: &str = "KUMO-TEST-";
const LOCK_FILE: &str = "/tmp/kumo-netfault.lock";

/// Runs `iptables -w ARGS` (split at spaces; no argument here contains one):
/// Ok(stdout) or Err(the command and its stderr).
fn iptables(args: &str) -> Result<String, String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args.split_whitespace())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "iptables {args}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Ok when this machine can cut links: we are root, iptables runs, and a chain with
/// an owner rule, a statistic rule and a conntrack mark rule can be created and
/// removed. Otherwise why not, for the test to print as it skips.
pub fn available() -> Result<(), String> {
    // Probed once per test process: the tests of one binary ask at the same time,
    // and the probe chain is named by the process.
    static PROBED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    PROBED.get_or_init(probe_available).clone()
}

fn probe_available() -> Result<(), String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("network faults need root (iptables owner rules, one uid per process)".into());
    }
    if Command::new("useradd").arg("--help").output().is_err() {
        return Err("useradd is not on PATH".into());
    }
    let name = format!("KUMO-PROBE-{}", std::process::id());
    remove_chain(&name);
    let probe = || -> Result<(), String> {
        iptables(&format!("-N {name}"))?;
        let owner = "-m owner --uid-owner 65534";
        let mark = mark_of(65534);
        iptables(&format!(
            "-A {name} {owner} -d 127.0.0.254 \
             -m statistic --mode random --probability 0.5 -m comment --comment probe -j DROP"
        ))?;
        iptables(&format!(
            "-A {name} -m conntrack --ctstate NEW {owner} -j CONNMARK --set-xmark {mark}"
        ))?;
        iptables(&format!(
            "-A {name} {owner} -m connmark --mark {mark} -j DROP"
        ))?;
        Ok(())
    };
    let result = probe();
    remove_chain(&name);
    result.map_err(|e| format!("iptables cannot install the fault rules: {e}"))
}

/// The system user of process slot `n`, `kumo-fault-N`: (uid, gid). Creates it with
/// useradd the first time (it stays, for the next runs). A live [`Chain`] starts
/// marking its connections at once.
pub fn test_user(n: usize) -> (u32, u32) {
    static MADE: Mutex<Vec<(usize, (u32, u32))>> = Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    let user = match made.iter().find(|(m, _)| *m == n) {
        Some((_, u)) => *u,
        None => {
            let name = format!("kumo-fault-{n}");
            let user = lookup_user(&name).unwrap_or_else(|| {
                let out = Command::new("useradd")
                    .args([
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                    ])
                    .arg(&name)
                    .output()
                    .expect("cannot run useradd");
                // Another test process may have created it in the meantime.
                lookup_user(&name).unwrap_or_else(|| {
                    panic!("useradd {name}: {}", String::from_utf8_lossy(&out.stderr))
                })
            });
            made.push((n, user));
            user
        }
    };
    drop(made);
    mark_connections_of(user.0);
    user
}

/// (uid, gid) of a user in /etc/passwd.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// The uids of every `kumo-fault-N` user already on the machine.
fn existing_fault_uids() -> Vec<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter(|l| l.starts_with("kumo-fault-"))
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect()
}

/// Makes `cmd` run as `user` (uid, gid; supplementary groups dropped). Its sockets
/// then belong to that uid, as the owner rules need. Files it opens by path (a store
/// directory) must be [`hand_over`]ed; stdout/stderr redirected to files opened here
/// are inherited and need nothing.
pub fn run_as(cmd: &mut Command, user: (u32, u32)) -> &mut Command {
    cmd.uid(user.0).gid(user.1)
}

/// Gives `path` (and everything under it, if it is a directory) to `user`, creating
/// it as a directory when it does not exist, and opens its parent for traversal
/// (mode 0755): a `tempfile::tempdir()` is 0700 root, which another uid cannot enter.
pub fn hand_over(path: &Path, user: (u32, u32)) {
    use std::os::unix::fs::PermissionsExt;
    if !path.exists() {
        std::fs::create_dir_all(path).unwrap();
    }
    if let Some(parent) = path.parent() {
        let mode = std::fs::metadata(parent).unwrap().permissions().mode();
        if mode & 0o011 != 0o011 {
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode | 0o755))
                .unwrap();
        }
    }
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.0, user.1))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown -R {path:?}");
}

/// The loopback address of process slot `n`: 127.0.0.(10+n).
pub fn host(n: usize) -> IpAddr {
    assert!(n < 240, "slot {n} out of range");
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + n as u8))
}

/// Slot `n`'s peer: its user's uid and its address. Creates the user if needed.
pub fn peer(n: usize) -> Peer {
    (test_user(n).0, host(n))
}

/// A free port on `ip`, below the kernel's ephemeral range (see `common::free_port`),
/// never handed out before in this test process.
pub fn free_port_on(ip: IpAddr) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<SocketAddr>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    const LOW: u16 = 10_000;
    if ephemeral_low > LOW + 1_000 {
        let span = u32::from(ephemeral_low - LOW);
        // Different test processes start at different places.
        let mut x = std::process::id().wrapping_mul(2_654_435_761) ^ given.len() as u32;
        for _ in 0..span {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let addr = SocketAddr::new(ip, LOW + ((x >> 8) % span) as u16);
            if !given.contains(&addr) && std::net::TcpListener::bind(addr).is_ok() {
                given.push(addr);
                return addr.port();
            }
        }
    }
    // No room below the ephemeral range: let the kernel pick, holding the ports
    // given so it cannot offer one again.
    let mut held = Vec::new();
    loop {
        let l = std::net::TcpListener::bind((ip, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        if !given.contains(&addr) {
            given.push(addr);
            return addr.port();
        }
        held.push(l);
    }
}

/// A free address of slot `n`: host(n) and a free port on it.
pub fn free_addr(n: usize) -> SocketAddr {
    let ip = host(n);
    SocketAddr::new(ip, free_port_on(ip))
}

/// The chain of this process while a [`Chain`] lives, and the uids it marks.
struct Live {
    name: String,
    marked: HashSet<u32>,
}

static LIVE: Mutex<Option<Live>> = Mutex::new(None);
/// Serialises the tests of this process that hold a Chain.
static SERIAL: Mutex<()> = Mutex::new(());

fn mark_of(uid: u32) -> String {
    assert!(uid > 0 && uid < 0x1_0000, "uid {uid} does not fit the mark");
    format!("0x{:x}/0x{MARK_MASK:x}", uid << 8)
}

/// Adds the rule that marks the connections `uid` opens, if a chain lives and does
/// not mark them yet.
fn mark_connections_of(uid: u32) {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = live.as_mut() {
        if l.marked.insert(uid) {
            iptables(&format!(
                "-I {} 1 -m conntrack --ctstate NEW -m owner --uid-owner {uid} \
                 -j CONNMARK --set-xmark {}",
                l.name,
                mark_of(uid)
            ))
            .unwrap();
        }
    }
}

/// Removes chain `name` and every jump to it from OUTPUT. Quiet: it may be gone.
fn remove_chain(name: &str) {
    while iptables(&format!("-D OUTPUT -j {name}")).is_ok() {}
    let _ = iptables(&format!("-F {name}"));
    let _ = iptables(&format!("-X {name}"));
}

/// Removes the chains of test processes that are gone (killed before their guard
/// could run).
fn sweep_stale_chains() {
    let Ok(rules) = iptables("-S") else { return };
    for line in rules.lines() {
        let Some(name) = line.strip_prefix("-N ") else {
            continue;
        };
        let Some(pid) = name.strip_prefix(CHAIN_PREFIX) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        let alive = pid != std::process::id() as i32 && unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            remove_chain(name);
        }
    }
}

/// The guard of this test's rules: creates `KUMO-TEST-<pid>` and jumps to it from the
/// top of OUTPUT; on drop (pass or panic) flushes and deletes it, so no rule outlives
/// the test. Only one lives at a time on the machine: `new` waits for the others.
pub struct Chain {
    name: String,
    _lock: std::fs::File,
    _serial: MutexGuard<'static, ()>,
}

impl Chain {
    /// Creates the chain, after any other holder (thread or test process) is done.
    /// Marks the connections of every `kumo-fault-N` user from now on; create it
    /// before the processes whose links you will cut open their connections.
    pub fn new() -> Result<Chain, String> {
        available()?;
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .map_err(|e| format!("{LOCK_FILE}: {e}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor we own; released when the file closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "flock {LOCK_FILE}: {}",
                std::io::Error::last_os_error()
            ));
        }
        sweep_stale_chains();
        let name = format!("{CHAIN_PREFIX}{}", std::process::id());
        remove_chain(&name);
        iptables(&format!("-N {name}"))?;
        if let Err(e) = iptables(&format!("-I OUTPUT 1 -j {name}")) {
            remove_chain(&name);
            return Err(e);
        }
        *LIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Live {
            name: name.clone(),
            marked: HashSet::new(),
        });
        for uid in existing_fault_uids() {
            mark_connections_of(uid);
        }
        Ok(Chain {
            name,
            _lock: lock,
            _serial: serial,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The chain's rules as `iptables -S` prints them, with packet counters.
    pub fn rules(&self) -> String {
        iptables(&format!("-v -S {}", self.name)).unwrap_or_default()
    }

    /// Cuts the link between `a` and `b` (see [`Cut::link`]).
    pub fn link(&self, a: Peer, b: Peer) -> Cut<'_> {
        Cut::link(self, a, b)
    }

    /// Makes the link between `a` and `b` lossy (see [`Cut::lossy`]).
    pub fn lossy(&self, a: Peer, b: Peer, probability: f64) -> Cut<'_> {
        Cut::lossy(self, a, b, probability)
    }

    /// Cuts `x` from each of `others` (see [`Cut::isolate`]).
    pub fn isolate(&self, x: Peer, others: &[Peer]) -> Cut<'_> {
        Cut::isolate(self, x, others)
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        *LIVE.lock().unwrap_or_else(|p| p.into_inner()) = None;
        remove_chain(&self.name);
    }
}

/// Some links cut (or made lossy) until the guard is dropped or `heal`ed. Several
/// cuts may overlap; each removes only its own rules.
pub struct Cut<'a> {
    chain: &'a Chain,
    /// The rules' specifications (what follows `-A CHAIN`).
    rules: Vec<String>,
    tag: String,
    healed: bool,
}

impl<'a> Cut<'a> {
    /// Drops every packet between the processes of `a` and `b`, both ways, on the
    /// connections either opened to the other and on new ones (which stall in SYN
    /// retransmits, not refused). Other links of a and b stay up.
    pub fn link(chain: &'a Chain, a: Peer, b: Peer) -> Cut<'a> {
        Self::build(chain, &[(a, b)], None)
    }

    /// Like `link`, but each packet between them is dropped with `probability`
    /// (0..1, the `statistic` match; netem is not needed).
    pub fn lossy(chain: &'a Chain, a: Peer, b: Peer, probability: f64) -> Cut<'a> {
        assert!(
            (0.0..=1.0).contains(&probability),
            "probability {probability}"
        );
        Self::build(chain, &[(a, b)], Some(probability))
    }

    /// Cuts the link between `x` and each of `others` (a partition of x from them).
    pub fn isolate(chain: &'a Chain, x: Peer, others: &[Peer]) -> Cut<'a> {
        let pairs: Vec<(Peer, Peer)> = others.iter().map(|o| (x, *o)).collect();
        Self::build(chain, &pairs, None)
    }

    fn build(chain: &'a Chain, pairs: &[(Peer, Peer)], probability: Option<f64>) -> Cut<'a> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let loss = probability
            .map(|p| format!("-m statistic --mode random --probability {p}"))
            .unwrap_or_default();
        let mut cut = Cut {
            chain,
            rules: Vec::new(),
            tag: format!("kumo-cut-{id}"),
            healed: false,
        };
        for &(a, b) in pairs {
            assert_ne!(a.0, b.0, "the two ends of a link need different uids");
            mark_connections_of(a.0);
            mark_connections_of(b.0);
            for (from, to) in [(a, b), (b, a)] {
                let owner = format!("-m owner --uid-owner {}", from.0);
                // `from`'s packets to `to`'s address: on the connections `from`
                // opened to `to` (and their SYNs);
                let by_addr = format!("{owner} -d {}", to.1);
                // and on the connections `to` opened to `from`: they go to 127.0.0.1.
                let by_mark = format!("{owner} -m connmark --mark {}", mark_of(to.0));
                for r in [by_addr, by_mark] {
                    let rule = format!("{r} {loss} -m comment --comment {} -j DROP", cut.tag);
                    iptables(&format!("-A {} {rule}", chain.name)).unwrap();
                    cut.rules.push(rule);
                }
            }
        }
        cut
    }

    /// Packets these rules have dropped so far.
    pub fn dropped(&self) -> u64 {
        let tag = format!("--comment {} ", self.tag);
        self.chain
            .rules()
            .lines()
            .filter(|l| l.contains(&tag))
            .filter_map(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                let i = c.iter().position(|w| *w == "-c")?;
                c.get(i + 1)?.parse::<u64>().ok()
            })
            .sum()
    }

    /// Heals the links now (dropping the guard does the same).
    pub fn heal(mut self) {
        self.remove();
    }

    fn remove(&mut self) {
        if self.healed {
            return;
        }
        self.healed = true;
        for r in &self.rules {
            if let Err(e) = iptables(&format!("-D {} {r}", self.chain.name)) {
                eprintln!("netfault: {e}");
            }
        }
    }
}

impl Drop for Cut<'_> {
    fn drop(&mut self) {
        self.remove();
    }
}
