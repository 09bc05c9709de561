//! `stats` and its groups, answered from the gateway's counters and settings, and
//! the cluster's item count. The replies follow memcached 1.6's form; groups that
//! describe memcached's memory (slabs, sizes) say there is nothing of the kind.

use super::Gateway;
use crate::proto::memtext::StatsGroup;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Answers `stats` for `group` with the whole reply, `END` (or `RESET`, `OK`)
/// included.
pub(super) fn answer(gw: &Arc<Gateway>, group: StatsGroup, done: Box<dyn FnOnce(Vec<u8>) + Send>) {
    let lines = |lines: Vec<(String, String)>| {
        let mut out = String::new();
        for (k, v) in lines {
            out += &format!("STAT {k} {v}\r\n");
        }
        out += "END\r\n";
        out.into_bytes()
    };
    match group {
        StatsGroup::General => {
            let gw2 = gw.clone();
            gw.cluster_items(Box::new(move |copies, answered, servers| {
                done(lines(general(&gw2, copies, answered, servers)))
            }))
        }
        StatsGroup::Items => gw.cluster_items(Box::new(move |copies, answered, _| {
            // One class holds every item: kumo has no slabs.
            let items = items(copies, answered);
            let mut l = Vec::new();
            if items > 0 {
                l.push(("items:1:number".to_string(), items.to_string()));
            }
            done(lines(l))
        })),
        StatsGroup::Settings => done(lines(settings(gw))),
        StatsGroup::Conns => done(lines(gw.conns.lines(crate::time::unix_now()))),
        StatsGroup::Slabs => done(lines(vec![
            ("active_slabs".into(), "0".into()),
            ("total_malloced".into(), "0".into()),
        ])),
        StatsGroup::Sizes => done(lines(vec![("sizes_status".into(), "disabled".into())])),
        StatsGroup::Reset => {
            gw.counters.reset();
            done(b"RESET\r\n".to_vec())
        }
        StatsGroup::DetailOn | StatsGroup::DetailOff => {
            gw.detail.switch(group == StatsGroup::DetailOn);
            done(b"OK\r\n".to_vec())
        }
        StatsGroup::DetailDump => done(gw.detail.dump()),
    }
}

/// Every key is on up to three servers; the copies divided by the replication
/// factor is the number of keys.
fn items(copies: u64, answered: usize) -> u64 {
    copies / answered.clamp(1, crate::cluster::hash_space::REPLICAS) as u64
}

fn general(
    gw: &Arc<Gateway>,
    copies: u64,
    answered: usize,
    servers: usize,
) -> Vec<(String, String)> {
    let g = &gw;
    let c = &g.counters;
    let now = crate::time::unix_now();
    let mut lines: Vec<(&str, String)> = vec![
        ("pid", std::process::id().to_string()),
        ("uptime", g.uptime().to_string()),
        ("time", now.to_string()),
        ("version", super::version_text()),
        (
            "pointer_size",
            (8 * std::mem::size_of::<usize>()).to_string(),
        ),
    ];
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed).to_string();
    lines.extend([
        ("curr_connections", load(&c.curr_connections)),
        ("total_connections", load(&c.total_connections)),
        ("cmd_get", load(&c.cmd_get)),
        ("cmd_set", load(&c.cmd_set)),
        ("cmd_touch", load(&c.cmd_touch)),
        ("get_hits", load(&c.get_hits)),
        ("get_misses", load(&c.get_misses)),
        ("get_errors", load(&c.get_errors)),
        ("delete_misses", load(&c.delete_misses)),
        ("delete_hits", load(&c.delete_hits)),
        ("incr_misses", load(&c.incr_misses)),
        ("incr_hits", load(&c.incr_hits)),
        ("decr_misses", load(&c.decr_misses)),
        ("decr_hits", load(&c.decr_hits)),
        ("cas_misses", load(&c.cas_misses)),
        ("cas_hits", load(&c.cas_hits)),
        ("cas_badval", load(&c.cas_badval)),
        ("touch_hits", load(&c.touch_hits)),
        ("touch_misses", load(&c.touch_misses)),
        ("write_errors", load(&c.write_errors)),
        ("retries", load(&c.retries)),
    ]);
    lines.push(("curr_items", items(copies, answered).to_string()));
    lines.push(("cluster_items", copies.to_string()));
    lines.push(("cluster_servers", servers.to_string()));
    lines.push(("cluster_servers_answered", answered.to_string()));
    lines.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn settings(gw: &Gateway) -> Vec<(String, String)> {
    let on = |b: bool| if b { "yes" } else { "no" }.to_string();
    vec![
        ("item_size_max", gw.value_max.to_string()),
        ("cas_enabled", on(true)),
        ("evictions", "off".into()),
        ("detail_enabled", on(gw.detail.is_on())),
        ("deadline_ms", gw.deadline.as_millis().to_string()),
        ("get_retry", gw.get_attempts.to_string()),
        ("set_retry", gw.set_retry.to_string()),
        ("delete_retry", gw.delete_retry.to_string()),
        ("async_replicate_set", on(gw.async_set)),
        ("async_replicate_delete", on(gw.async_delete)),
        ("idle_timeout", gw.timeouts.idle.to_string()),
        ("command_timeout", gw.timeouts.command.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// What `stats detail` counts for a key.
#[derive(Debug, Clone, Copy)]
pub enum DetailOp {
    Get { hit: bool },
    Set,
    Delete,
}

/// `stats detail`: counts per key prefix (the part of a key before its first `:`,
/// memcached's default delimiter), kept only while switched on. Keys without the
/// delimiter are not counted, as in memcached.
#[derive(Default)]
pub struct Detail {
    on: std::sync::atomic::AtomicBool,
    /// Prefix to [get, hit, set, del].
    prefixes: std::sync::Mutex<std::collections::BTreeMap<Vec<u8>, [u64; 4]>>,
}

impl Detail {
    pub fn switch(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    pub fn record(&self, key: &[u8], op: DetailOp) {
        if !self.is_on() {
            return;
        }
        let Some(end) = key.iter().position(|&b| b == b':') else {
            return;
        };
        let mut p = self.prefixes.lock().unwrap_or_else(|p| p.into_inner());
        let c = p.entry(key[..end].to_vec()).or_default();
        match op {
            DetailOp::Get { hit } => {
                c[0] += 1;
                c[1] += u64::from(hit);
            }
            DetailOp::Set => c[2] += 1,
            DetailOp::Delete => c[3] += 1,
        }
    }

    /// memcached's `stats detail dump` reply.
    pub fn dump(&self) -> Vec<u8> {
        let p = self.prefixes.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (prefix, [get, hit, set, del]) in p.iter() {
            out.extend_from_slice(b"PREFIX ");
            out.extend_from_slice(prefix);
            out.extend_from_slice(
                format!(" get {get} hit {hit} set {set} del {del}\r\n").as_bytes(),
            );
        }
        out.extend_from_slice(b"END\r\n");
        out
    }
}

/// One open client connection, for `stats conns` and the timeouts.
pub struct ConnInfo {
    peer: std::net::SocketAddr,
    /// The address it came in on.
    listen: std::net::SocketAddr,
    /// Unix second of its last command.
    last_cmd: std::sync::atomic::AtomicU32,
    /// Unix second input last arrived while a command or value was incomplete;
    /// 0 when none is.
    partial_since: std::sync::atomic::AtomicU32,
    /// The session stopped reading for want of room: the wait is the gateway's.
    paused: std::sync::atomic::AtomicBool,
    /// To close it when it times out.
    writer: std::sync::OnceLock<Arc<crate::net::Writer>>,
}

impl ConnInfo {
    pub fn touched(&self, now: u32) {
        self.last_cmd.store(now, Ordering::Relaxed);
    }

    pub fn set_writer(&self, w: Arc<crate::net::Writer>) {
        let _ = self.writer.set(w);
    }

    /// What the session made of its input at `now`: whether a command or value is
    /// still incomplete, and whether it stopped reading for want of room.
    pub fn note_input(&self, now: u32, partial: bool, paused: bool) {
        self.partial_since
            .store(if partial { now } else { 0 }, Ordering::Relaxed);
        self.paused.store(paused, Ordering::Relaxed);
    }

    fn state(&self) -> &'static str {
        if self.paused.load(Ordering::Relaxed) {
            "conn_mwrite"
        } else if self.partial_since.load(Ordering::Relaxed) != 0 {
            "conn_nread"
        } else {
            "conn_parse_cmd"
        }
    }

    /// Why the connection should be closed at `now`, if it should. Each field is
    /// read once: the session stores them while this runs on the timer thread.
    fn expired(&self, now: u32, limits: &Timeouts) -> Option<&'static str> {
        expiry(
            now,
            self.partial_since.load(Ordering::Relaxed),
            self.paused.load(Ordering::Relaxed),
            self.last_cmd.load(Ordering::Relaxed),
            limits,
        )
    }
}

/// Why a connection should be closed at `now`, if it should: a command or value
/// incomplete since `partial_since` (0: none is) for `--command-timeout`, unless
/// the gateway itself stopped reading (`paused`); or no command since `last_cmd`
/// for `--idle-timeout`. (Reading `partial_since` twice, once to see whether a
/// command was incomplete and once for how long, closed a connection whose
/// command completed between the two reads: it had been incomplete "since 0".)
fn expiry(
    now: u32,
    partial_since: u32,
    paused: bool,
    last_cmd: u32,
    limits: &Timeouts,
) -> Option<&'static str> {
    let partial = partial_since != 0;
    if limits.command > 0
        && partial
        && !paused
        && now.saturating_sub(partial_since) >= limits.command
    {
        return Some("a command stopped arriving partway");
    }
    if limits.idle > 0 && !partial && now.saturating_sub(last_cmd) >= limits.idle {
        return Some("idle");
    }
    None
}

/// The connection timeouts in seconds; 0 is never.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    /// `--idle-timeout`: no command for this long.
    pub idle: u32,
    /// `--command-timeout`: a command or value that stopped arriving partway.
    pub command: u32,
}

/// The open client connections, for `stats conns`. The lock is taken when a
/// connection opens or closes and when the list is asked for, not per command.
#[derive(Default)]
pub struct Conns {
    next: std::sync::atomic::AtomicU64,
    open: std::sync::Mutex<std::collections::BTreeMap<u64, Arc<ConnInfo>>>,
}

impl Conns {
    pub fn open(
        &self,
        peer: std::net::SocketAddr,
        listen: std::net::SocketAddr,
        now: u32,
    ) -> (u64, Arc<ConnInfo>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let info = Arc::new(ConnInfo {
            peer,
            listen,
            last_cmd: std::sync::atomic::AtomicU32::new(now),
            partial_since: std::sync::atomic::AtomicU32::new(0),
            paused: std::sync::atomic::AtomicBool::new(false),
            writer: std::sync::OnceLock::new(),
        });
        self.lock().insert(id, info.clone());
        (id, info)
    }

    pub fn close(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the connections past their timeouts; returns how many.
    pub fn close_expired(&self, now: u32, limits: &Timeouts) -> usize {
        let expired: Vec<(Arc<ConnInfo>, &'static str)> = self
            .lock()
            .values()
            .filter_map(|c| c.expired(now, limits).map(|why| (c.clone(), why)))
            .collect();
        for (c, why) in &expired {
            log::info!("{}: closing the connection: {why}", c.peer);
            if let Some(w) = c.writer.get() {
                w.close();
            }
        }
        expired.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Arc<ConnInfo>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// memcached's `stats conns` lines: per connection its address, the address it
    /// came in on, its state and the seconds since its last command.
    fn lines(&self, now: u32) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (id, c) in self.lock().iter() {
            out.push((format!("{id}:addr"), format!("tcp:{}", c.peer)));
            out.push((format!("{id}:listen_addr"), format!("tcp:{}", c.listen)));
            out.push((format!("{id}:state"), c.state().to_string()));
            let idle = now.saturating_sub(c.last_cmd.load(Ordering::Relaxed));
            out.push((format!("{id}:secs_since_last_cmd"), idle.to_string()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_expires_only_on_what_it_did() {
        let both = Timeouts {
            idle: 30,
            command: 60,
        };
        let now = 1_800_000_000;
        // Nothing incomplete: never "partway", however late it is.
        assert_eq!(expiry(now, 0, false, now, &both), None);
        assert_eq!(expiry(u32::MAX, 0, false, u32::MAX, &both), None);
        // Incomplete for less than the timeout, and for it.
        assert_eq!(expiry(now, now - 59, false, now - 59, &both), None);
        assert_eq!(
            expiry(now, now - 60, false, now - 60, &both),
            Some("a command stopped arriving partway")
        );
        // The gateway stopped reading: its wait, not the client's.
        assert_eq!(expiry(now, now - 600, true, now - 600, &both), None);
        // Idle: no command for the idle timeout, and nothing incomplete.
        assert_eq!(expiry(now, 0, false, now - 30, &both), Some("idle"));
        assert_eq!(expiry(now, 0, false, now - 29, &both), None);
        let none = Timeouts::default();
        assert_eq!(expiry(now, 1, false, 1, &none), None);
    }
}
