//! Consistent hashing (DESIGN §5). Kept bit-for-bit as kumofs does it, so that
//! `kumohash` output matches and a key lives where kumofs would put it.
//!
//! - A key's hash is SHA-1 of the key; the first 8 digest bytes read as a
//!   little-endian u64.
//! - A server has 128 virtual nodes. The first point is the hash of its address
//!   encoding (port big-endian, then the IPv4 bytes); each next point is the hash of
//!   the previous point's 8 little-endian bytes. All points are sorted by value; ties
//!   keep node order.
//! - The owners of a key: from the first point ≥ its hash (wrapping), walk forward
//!   and take the first [`REPLICAS`] distinct servers. Fault servers keep their
//!   points; callers skip them. A key with a fault owner has fewer live copies until
//!   the fault server is detached.

use super::clock::ClockTime;
use std::net::{IpAddr, SocketAddr};

/// Copies of every key.
pub const REPLICAS: usize = 3;
/// Points per server on the ring.
pub const VIRTUAL_NODES: usize = 128;

/// The hash of a key, or of a ring point.
pub fn key_hash(bytes: &[u8]) -> u64 {
    let digest = super::sha1::digest(bytes);
    u64::from_le_bytes(digest[..8].try_into().expect("SHA-1 has 20 bytes"))
}

/// The wire encoding of an address: port (2 bytes, big-endian) then the IPv4
/// address (4 bytes); for IPv6, the 16 address bytes and a 4-byte scope id.
pub fn encode_addr(addr: &SocketAddr) -> Vec<u8> {
    let mut v = addr.port().to_be_bytes().to_vec();
    match addr {
        SocketAddr::V4(a) => v.extend_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => {
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&a.scope_id().to_be_bytes());
        }
    }
    v
}

/// The inverse of [`encode_addr`].
pub fn decode_addr(raw: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]);
    match raw.len() {
        6 => {
            let ip: [u8; 4] = raw[2..6].try_into().ok()?;
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        22 => {
            let ip: [u8; 16] = raw[2..18].try_into().ok()?;
            let scope = u32::from_be_bytes(raw[18..22].try_into().ok()?);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip.into(),
                port,
                0,
                scope,
            )))
        }
        _ => None,
    }
}

/// Up to [`REPLICAS`] items kept inline: the owners of a hash are asked for on
/// every request, and a vector would cost an allocation each time.
#[derive(Clone, Copy)]
pub struct Few<T: Copy> {
    items: [T; REPLICAS],
    len: usize,
}

impl<T: Copy> Few<T> {
    /// An empty list; `filler` only occupies the unused places.
    pub fn new(filler: T) -> Few<T> {
        Few {
            items: [filler; REPLICAS],
            len: 0,
        }
    }

    /// The items `keep` accepts, in their order.
    pub fn filter(mut self, keep: impl Fn(&T) -> bool) -> Few<T> {
        let mut kept = 0;
        for i in 0..self.len {
            if keep(&self.items[i]) {
                self.items[kept] = self.items[i];
                kept += 1;
            }
        }
        self.len = kept;
        self
    }

    /// Appends `item`. A ring never yields more than [`REPLICAS`] owners.
    pub fn push(&mut self, item: T) {
        assert!(self.len < REPLICAS, "more than {REPLICAS} owners");
        self.items[self.len] = item;
        self.len += 1;
    }
}

impl<T: Copy> std::ops::Deref for Few<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items[..self.len]
    }
}

impl<T: Copy> IntoIterator for Few<T> {
    type Item = T;
    type IntoIter = std::iter::Take<std::array::IntoIter<T, REPLICAS>>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter().take(self.len)
    }
}

impl<'a, T: Copy> IntoIterator for &'a Few<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: Copy + PartialEq> PartialEq for Few<T> {
    fn eq(&self, other: &Few<T>) -> bool {
        **self == **other
    }
}

impl<T: Copy + std::fmt::Debug> std::fmt::Debug for Few<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The filler of unused places in a [`Few`] of addresses.
const UNSPECIFIED: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// One server of a hash space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub addr: SocketAddr,
    pub active: bool,
}

/// The two routing tables every node keeps: whs routes writes, rhs routes reads.
/// They differ only while data moves between servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub whs: HashSpace,
    pub rhs: HashSpace,
}

impl Tables {
    pub fn empty() -> Tables {
        Tables {
            whs: HashSpace::empty(),
            rhs: HashSpace::empty(),
        }
    }

    /// Every server active in either table, each once, in address order: the
    /// servers that hold data or take writes.
    pub fn active_servers(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .whs
            .nodes()
            .iter()
            .chain(self.rhs.nodes())
            .filter(|n| n.active)
            .map(|n| n.addr)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Takes whichever of `whs` and `rhs` is newer (see [`HashSpace::should_adopt`]),
    /// `now` being our unix time. Returns whether anything changed.
    pub fn adopt(&mut self, whs: HashSpace, rhs: HashSpace, now: u32) -> bool {
        let mut changed = false;
        if self.whs.should_adopt(&whs, now) {
            self.whs = whs;
            changed = true;
        }
        if self.rhs.should_adopt(&rhs, now) {
            self.rhs = rhs;
            changed = true;
        }
        changed
    }
}

/// The tables a node routes by now, shared by its threads: readers take a cheap
/// snapshot, and newer tables replace it whole. Servers and gateways both keep one.
/// The last few write tables are kept too (see [`CurrentTables::recent_whs`]).
#[derive(Debug)]
pub struct CurrentTables {
    now: std::sync::RwLock<std::sync::Arc<Tables>>,
    /// Write tables replaced lately, newest last.
    recent: std::sync::Mutex<std::collections::VecDeque<HashSpace>>,
}

/// Write tables a node remembers after they are replaced.
pub const RECENT_WHS_MAX: usize = 8;

impl Default for CurrentTables {
    fn default() -> Self {
        CurrentTables {
            now: std::sync::RwLock::new(std::sync::Arc::new(Tables::empty())),
            recent: Default::default(),
        }
    }
}

impl CurrentTables {
    pub fn get(&self) -> std::sync::Arc<Tables> {
        self.now.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes whichever of `whs` and `rhs` is newer, `now` being our unix time.
    /// Returns whether anything changed.
    pub fn adopt(&self, whs: HashSpace, rhs: HashSpace, now: u32) -> bool {
        let mut t = self.now.write().unwrap_or_else(|p| p.into_inner());
        let mut next = (**t).clone();
        if !next.adopt(whs, rhs, now) {
            return false;
        }
        log::info!(
            "hash spaces now whs {} servers (clock {:#x}), rhs {} servers (clock {:#x})",
            next.whs.nodes().len(),
            next.whs.clocktime.0,
            next.rhs.nodes().len(),
            next.rhs.clocktime.0
        );
        if next.whs.clocktime != t.whs.clocktime {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.push_back(t.whs.clone());
            if recent.len() > RECENT_WHS_MAX {
                recent.pop_front();
            }
        }
        *t = std::sync::Arc::new(next);
        true
    }

    /// The write table stamped `clock`, the current one or one replaced lately.
    /// A gateway may read by a settled table (rhs := a whs of ours) before we
    /// hear of the settle, and even after our whs has moved on since.
    pub fn recent_whs(&self, clock: u64) -> Option<HashSpace> {
        let t = self.get();
        if t.whs.clocktime.0 == clock {
            return Some(t.whs.clone());
        }
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .rev()
            .find(|h| h.clocktime.0 == clock)
            .cloned()
    }
}

/// A routing table: servers in attach order, their ring, and the table's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashSpace {
    nodes: Vec<Node>,
    /// (point, index into `nodes`), sorted by point, ties in node order.
    ring: Vec<(u64, u32)>,
    pub clocktime: ClockTime,
}

impl HashSpace {
    pub fn new(nodes: Vec<Node>, clocktime: ClockTime) -> HashSpace {
        let mut ring = Vec::with_capacity(nodes.len() * VIRTUAL_NODES);
        for (i, n) in nodes.iter().enumerate() {
            let mut point = key_hash(&encode_addr(&n.addr));
            ring.push((point, i as u32));
            for _ in 1..VIRTUAL_NODES {
                point = key_hash(&point.to_le_bytes());
                ring.push((point, i as u32));
            }
        }
        // Stable: equal points keep node order, as kumofs does.
        ring.sort_by_key(|&(p, _)| p);
        HashSpace {
            nodes,
            ring,
            clocktime,
        }
    }

    pub fn empty() -> HashSpace {
        HashSpace::new(Vec::new(), ClockTime(0))
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// True when no server is active: such a table routes nothing and is never
    /// adopted over a table that does.
    pub fn is_empty(&self) -> bool {
        !self.nodes.iter().any(|n| n.active)
    }

    /// Every ring point as (point, address), in ring order (`kumohash dump`).
    pub fn points(&self) -> impl Iterator<Item = (u64, SocketAddr)> + '_ {
        self.ring
            .iter()
            .map(|&(p, i)| (p, self.nodes[i as usize].addr))
    }

    /// The up-to-three owners of `hash` in ring order, fault servers included.
    pub fn owners(&self, hash: u64) -> Few<Node> {
        let Some(&(_, first)) = self.ring.first() else {
            return Few::new(Node {
                addr: UNSPECIFIED,
                active: false,
            });
        };
        let mut out = Few::new(self.nodes[first as usize]);
        let start = self.ring.partition_point(|&(p, _)| p < hash);
        let (after, before) = self.ring.split_at(start);
        for &(_, i) in before.iter().chain(after) {
            let n = self.nodes[i as usize];
            if !out.iter().any(|o| o.addr == n.addr) {
                out.push(n);
                if out.len() == REPLICAS {
                    break;
                }
            }
        }
        out
    }

    /// The active owners of `hash`, in ring order; the first is the coordinator.
    pub fn active_owners(&self, hash: u64) -> Few<SocketAddr> {
        let mut out = Few::new(UNSPECIFIED);
        for n in self.owners(hash).iter().filter(|n| n.active) {
            out.push(n.addr);
        }
        out
    }

    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.nodes.iter().any(|n| n.addr == *addr)
    }

    /// Same servers and flags, whatever the version (kumofs compared timestamps
    /// only, and so missed real differences; §14 item 7).
    pub fn same_layout(&self, other: &HashSpace) -> bool {
        self.nodes == other.nodes
    }

    /// Whether a node holding `self` takes `incoming`, `now` being its unix time: a
    /// table that routes nothing is never taken (a restarted manager starts empty,
    /// and its emptiness must not stop a running cluster), nor one stamped far in
    /// the future (it would win over every real change); otherwise the newer wins.
    pub fn should_adopt(&self, incoming: &HashSpace, now: u32) -> bool {
        if super::clock::from_the_future(incoming.clocktime, now) {
            log::warn!(
                "a hash space stamped {:#x}, more than {}s ahead of this host's clock, is refused",
                incoming.clocktime.0,
                super::clock::AHEAD_MAX_SECS
            );
            return false;
        }
        !incoming.is_empty() && (self.is_empty() || incoming.clocktime > self.clocktime)
    }

    /// Whether `addr` is an active server of this table.
    pub fn is_active(&self, addr: &SocketAddr) -> bool {
        self.nodes.iter().any(|n| n.addr == *addr && n.active)
    }

    /// Whether `addr` is an active owner of `hash`.
    pub fn is_active_owner(&self, hash: u64, addr: &SocketAddr) -> bool {
        self.owners(hash)
            .iter()
            .any(|n| n.active && n.addr == *addr)
    }

    /// Marks `addr` fault, keeping its ring points. Returns whether it changed.
    pub fn mark_fault(&mut self, addr: &SocketAddr, clocktime: ClockTime) -> bool {
        self.set_active(addr, false, clocktime)
    }

    fn set_active(&mut self, addr: &SocketAddr, active: bool, clocktime: ClockTime) -> bool {
        match self.nodes.iter_mut().find(|n| n.addr == *addr) {
            Some(n) if n.active != active => {
                n.active = active;
                self.clocktime = clocktime;
                true
            }
            _ => false,
        }
    }

    /// Attaches `addrs`: fault servers among them become active again, the others
    /// are appended. Returns whether anything changed.
    pub fn attach(&mut self, addrs: &[SocketAddr], clocktime: ClockTime) -> bool {
        let mut nodes = self.nodes.clone();
        let mut changed = false;
        for a in addrs {
            match nodes.iter_mut().find(|n| n.addr == *a) {
                Some(n) if !n.active => {
                    n.active = true;
                    changed = true;
                }
                Some(_) => {}
                None => {
                    nodes.push(Node {
                        addr: *a,
                        active: true,
                    });
                    changed = true;
                }
            }
        }
        if changed {
            *self = HashSpace::new(nodes, clocktime);
        }
        changed
    }

    /// Removes every fault server. Returns whether anything changed.
    pub fn detach_faults(&mut self, clocktime: ClockTime) -> bool {
        if self.nodes.iter().all(|n| n.active) {
            return false;
        }
        let nodes = self.nodes.iter().copied().filter(|n| n.active).collect();
        *self = HashSpace::new(nodes, clocktime);
        true
    }

    /// The wire form (kumofs's seed): `[[node...], clocktime]`, each node a binary of
    /// one active byte followed by the address encoding.
    pub fn to_value(&self) -> rmpv::Value {
        let nodes = self
            .nodes
            .iter()
            .map(|n| {
                let mut raw = vec![u8::from(n.active)];
                raw.extend(encode_addr(&n.addr));
                rmpv::Value::Binary(raw)
            })
            .collect();
        rmpv::Value::Array(vec![
            rmpv::Value::Array(nodes),
            rmpv::Value::from(self.clocktime.0),
        ])
    }

    /// Parses the wire form; None if any part is malformed.
    pub fn from_value(v: &rmpv::Value) -> Option<HashSpace> {
        let parts = v.as_array()?;
        let [nodes, clock] = parts.as_slice() else {
            return None;
        };
        let mut out = Vec::new();
        for n in nodes.as_array()? {
            let raw = match n {
                rmpv::Value::Binary(b) => b.as_slice(),
                rmpv::Value::String(s) => s.as_bytes(),
                _ => return None,
            };
            let (&flag, addr) = raw.split_first()?;
            let addr = decode_addr(addr)?;
            if flag > 1 || out.iter().any(|o: &Node| o.addr == addr) {
                return None;
            }
            out.push(Node {
                addr,
                active: flag == 1,
            });
        }
        Some(HashSpace::new(out, ClockTime(clock.as_u64()?)))
    }
}

#[cfg(test)]
mod tests;

/// Tables for the unit tests of the cluster logic: servers on 127.0.0.1 by port.
#[cfg(test)]
pub(crate) mod testing {
    use super::{HashSpace, Node};
    use crate::cluster::clock::ClockTime;
    use std::net::SocketAddr;

    pub fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A table of `(port, active)` servers, stamped `clock`.
    pub fn space(nodes: &[(u16, bool)], clock: u64) -> HashSpace {
        HashSpace::new(
            nodes
                .iter()
                .map(|&(p, active)| Node { addr: a(p), active })
                .collect(),
            ClockTime(clock),
        )
    }
}
