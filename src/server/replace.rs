//! The server's part of a replace (DESIGN §9). The manager starts each phase; the
//! work runs on a thread of its own, reading a snapshot of the store while the
//! server keeps serving.
//!
//! - Copy: every record this server must send ([`crate::cluster::replace`]) goes,
//!   tombstones included, in batches to the new owners' stream ports (`-L`), which
//!   apply newer-wins. Buffered output is bounded by `-M` in all.
//! - Delete: rhs := whs, then every record this server no longer owns is erased.
//!
//! Each replace has an id (the whs ClockTime it moves to). A newer replace stops an
//! older one at its next record. Each phase's end is reported to every manager that
//! asked for it, again and again until each acknowledges or a newer replace begins.

use super::node::Node;
use super::outbox::{Outbox, BATCH_BYTES};
use super::replace_state::Phase;
use crate::cluster::hash_space::{key_hash, HashSpace};
use crate::cluster::replace::{CopyPlan, KeepPlan};
use crate::net::rpc_client::BlockingClient;
use crate::net::Reply;
use crate::proto::cluster as msg;
use crate::record::Kind;
use crate::store::record as store_record;
use rmpv::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long one report to a manager may take (connect and answer).
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between reports the manager did not acknowledge.
pub const REPORT_RETRY: Duration = Duration::from_secs(1);
/// Wait between taking the new whs and reading the snapshot, so that writes other
/// coordinators sent under the old table have landed and are in it.
pub const SETTLE: Duration = Duration::from_millis(500);

fn is_current(node: &Node, id: u64) -> bool {
    node.replace.is_current(id)
}

enum Begin {
    Start,
    AlreadyRunning,
    Superseded,
}

/// Claims phase `phase` of replace `id` for this server.
fn begin(node: &Node, id: u64, phase: Phase, manager: SocketAddr) -> Begin {
    let mut running = node
        .replace
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    {
        let mut m = node
            .replace
            .managers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if m.0 != id {
            *m = (id, Vec::new());
        }
        if !m.1.contains(&manager) {
            m.1.push(manager);
        }
    }
    if !claim(node, id) {
        return Begin::Superseded;
    }
    if *running == Some((id, phase as u8)) {
        return Begin::AlreadyRunning;
    }
    *running = Some((id, phase as u8));
    node.replace.phase.store(phase as u8, Ordering::Release);
    Begin::Start
}

/// Marks phase `phase` of replace `id` finished (if it is still the one running).
fn end(node: &Node, id: u64, phase: Phase) {
    let mut running = node
        .replace
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if *running == Some((id, phase as u8)) {
        *running = None;
        node.replace
            .phase
            .store(Phase::Idle as u8, Ordering::Release);
    }
}

/// Claims `id` as the current replace unless a newer one is already running.
fn claim(node: &Node, id: u64) -> bool {
    let mut cur = node.replace.id.load(Ordering::Acquire);
    loop {
        if cur > id {
            return false;
        }
        match node
            .replace
            .id
            .compare_exchange(cur, id, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return true,
            Err(c) => cur = c,
        }
    }
}

/// `ReplaceCopyStart`: acknowledge, then copy on a thread.
pub fn copy_start(node: &Arc<Node>, params: &[Value], reply: Reply) {
    let parsed = (|| -> Result<_, String> {
        let id = params
            .get(1)
            .and_then(Value::as_u64)
            .ok_or("bad parameters: id")?;
        let manager = msg::addr_from_value(params.get(2))?;
        let (whs, rhs) = msg::spaces_from(params.get(3..).unwrap_or(&[]))?;
        let full = params
            .get(5)
            .and_then(Value::as_bool)
            .ok_or("bad parameters: full")?;
        let mut streams = HashMap::new();
        for s in params
            .get(6)
            .and_then(Value::as_array)
            .ok_or("bad parameters: streams")?
        {
            let pair = s.as_array().ok_or("bad parameters: stream")?;
            let addr = msg::addr_from_value(pair.first())?;
            let port = pair
                .get(1)
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or("bad port")?;
            streams.insert(addr, SocketAddr::new(addr.ip(), port));
        }
        Ok((id, manager, whs, rhs, full, streams))
    })();
    let (id, manager, whs, rhs, full, streams) = match parsed {
        Ok(p) => p,
        Err(e) => return reply.err(e),
    };
    // Writes follow the new table from now on; reads stay on the old one.
    let tables = (whs.clone(), HashSpace::empty());
    run_phase(
        node,
        id,
        Phase::Copying,
        manager,
        tables,
        reply,
        move |node| {
            log::info!(
                "replace {id:#x}: copy started ({} servers in whs)",
                whs.nodes().len()
            );
            std::thread::sleep(SETTLE);
            let began = std::time::Instant::now();
            let (records, bytes, failed) = copy(&node, id, &rhs, &whs, full, &streams);
            node.replace
                .copy_ms
                .store(began.elapsed().as_millis() as u64, Ordering::Relaxed);
            end(&node, id, Phase::Copying);
            if is_current(&node, id) {
                log::info!("replace {id:#x}: copy done, {records} records, {bytes} bytes sent");
                let ms = node.replace.copy_ms.load(Ordering::Relaxed);
                crate::daemon::event(
                    log::Level::Info,
                    "replace_copy_done",
                    &[
                        ("id", Value::from(format!("{id:#x}"))),
                        ("records", Value::from(records)),
                        ("bytes", Value::from(bytes)),
                        ("ms", Value::from(ms)),
                        ("failed", Value::from(failed)),
                    ],
                );
                let tail = vec![
                    Value::from(records),
                    Value::from(bytes),
                    Value::from(failed),
                ];
                report(&node, id, msg::REPLACE_COPY_END, tail);
            }
        },
    );
}

/// Starts `phase` of replace `id` on a thread of its own, after taking `tables`,
/// and answers the manager: at once if that phase already runs, with an error if
/// a newer replace runs or no thread can be started.
fn run_phase(
    node: &Arc<Node>,
    id: u64,
    phase: Phase,
    manager: SocketAddr,
    tables: (HashSpace, HashSpace),
    reply: Reply,
    work: impl FnOnce(Arc<Node>) + Send + 'static,
) {
    match begin(node, id, phase, manager) {
        Begin::Superseded => return reply.err(format!("replace {id:#x}: {}", msg::SUPERSEDED)),
        Begin::AlreadyRunning => return reply.ok(true),
        Begin::Start => {}
    }
    node.adopt(tables.0, tables.1);
    let worker = node.clone();
    let name = if phase == Phase::Copying {
        "replace-copy"
    } else {
        "replace-delete"
    };
    match std::thread::Builder::new()
        .name(name.into())
        .spawn(move || work(worker))
    {
        Ok(_) => reply.ok(true),
        Err(e) => {
            end(node, id, phase);
            reply.err(format!("cannot start {name}: {e}"))
        }
    }
}

/// Sends every record this server must send; returns (records, bytes) sent and
/// whether anything that should have gone could not (a target given up, a record
/// unreadable): the manager must then not move on to trimming.
fn copy(
    node: &Arc<Node>,
    id: u64,
    rhs: &HashSpace,
    whs: &HashSpace,
    full: bool,
    streams: &HashMap<SocketAddr, SocketAddr>,
) -> (u64, u64, bool) {
    let limit = node.replace_memory_limit.max(BATCH_BYTES as u64) as usize;
    let mut out = Outbox::default();
    let mut unreadable = false;
    let plan = CopyPlan::new(node.me, rhs, whs, full);
    let mut snapshot = node.store.snapshot();
    let mut targets: &[SocketAddr] = &[];
    // Most records stay where they are: those are passed over without a copy.
    while let Some(item) = snapshot.next_where(|key| {
        targets = plan.targets(key_hash(key));
        !targets.is_empty()
    }) {
        if !is_current(node, id) {
            log::info!("replace {id:#x}: superseded; copy stopped");
            return (out.records, out.bytes, true);
        }
        let record = match item {
            Ok(stored) => stored.bytes,
            Err(e) => {
                log::error!("replace {id:#x}: a record cannot be read and is not sent: {e}");
                unreadable = true;
                continue;
            }
        };
        // Sent in the store's own format, as it lies in the segment: the new
        // owner checks it and appends it as it is.
        for &t in targets {
            let full_batch = out.add(t, record);
            if full_batch >= BATCH_BYTES || out.buffered >= limit {
                out.send(node, id, t, streams);
            }
        }
    }
    let targets: Vec<SocketAddr> = out.links.keys().copied().collect();
    for t in targets {
        out.send(node, id, t, streams);
        out.settle(node, id, t, streams, 0);
    }
    (
        out.records,
        out.bytes,
        unreadable || !out.given_up.is_empty(),
    )
}

/// `ReplacePush` on the stream port: apply each record, newer wins. The records
/// come in the store's own format, back to back, each with its checksum: each is
/// checked, then appended as it came.
///
/// A push of an older replace than the newest this server was asked to run is
/// refused: its sender planned by tables that are gone, and a record it sends
/// after our delete phase has trimmed would stay as a copy nobody owns.
pub fn push(node: &Node, params: Vec<Value>, reply: Reply) {
    let Some(id) = params.get(1).and_then(Value::as_u64) else {
        return reply.err("bad parameters: id");
    };
    let Some(Value::Binary(records)) = params.get(2) else {
        return reply.err("bad parameters: records");
    };
    if id < node.replace.id.load(Ordering::Acquire) {
        return reply.err(format!("replace {id:#x}: {}", msg::SUPERSEDED));
    }
    let (mut count, mut applied, mut at) = (0u64, 0u64, 0usize);
    // Read once: a batch is thousands of records, and all arrived together.
    let now = crate::time::unix_now();
    while at < records.len() {
        let record = match store_record::stored(&records[at..]) {
            // An erase is a server's own bookkeeping, never sent.
            Ok(r) if r.head.kind != Kind::Erase => r,
            Ok(_) => return reply.err(format!("bad parameters: record {count} is an erase")),
            Err(why) => return reply.err(format!("bad parameters: record {count}: {why:?}")),
        };
        if let Err(e) = super::node::plausible(&record.head, now) {
            return reply.err(e);
        }
        match node.store.update_stored(&record) {
            Ok(true) => applied += 1,
            Ok(false) => {}
            Err(e) => return reply.err(super::node::store_error(&e)),
        }
        let len = record.bytes.len();
        at += len;
        count += 1;
    }
    node.replace
        .records_received
        .fetch_add(count, Ordering::Relaxed);
    // The sender counts a push delivered once answered, and the delete phase then
    // trims the old copies: the records must be as durable as `#sync=` promises.
    node.store.when_durable(move |r| match r {
        Ok(()) => reply.ok(applied),
        Err(e) => reply.err(super::node::store_error(&e)),
    });
}

/// `ReplaceDeleteStart`: rhs := whs, then erase what this server does not own.
pub fn delete_start(node: &Arc<Node>, params: &[Value], reply: Reply) {
    let parsed = (|| -> Result<_, String> {
        let id = params
            .get(1)
            .and_then(Value::as_u64)
            .ok_or("bad parameters: id")?;
        let manager = msg::addr_from_value(params.get(2))?;
        let whs = params
            .get(3)
            .and_then(HashSpace::from_value)
            .ok_or("bad parameters: whs")?;
        Ok((id, manager, whs))
    })();
    let (id, manager, whs) = match parsed {
        Ok(p) => p,
        Err(e) => return reply.err(e),
    };
    let tables = (whs.clone(), whs.clone());
    run_phase(
        node,
        id,
        Phase::Deleting,
        manager,
        tables,
        reply,
        move |node| {
            let began = std::time::Instant::now();
            let (mut erased, mut failed, mut superseded) = (0u64, 0u64, false);
            let plan = KeepPlan::new(node.me, &whs);
            node.store.for_each_key(|key, clock| {
                if superseded || plan.keeps(key_hash(key)) {
                    return;
                }
                // Looked at per key dropped, not per key kept: an atomic load.
                if !is_current(&node, id) {
                    superseded = true;
                    return;
                }
                match node.store.erase(key, clock) {
                    Ok(true) => erased += 1,
                    Ok(false) => {}
                    Err(e) => {
                        if failed == 0 {
                            log::error!("replace {id:#x}: cannot erase a key: {e}");
                        }
                        failed += 1;
                    }
                }
            });
            if superseded {
                end(&node, id, Phase::Deleting);
                return;
            }
            node.replace.erased.fetch_add(erased, Ordering::Relaxed);
            node.replace
                .delete_ms
                .store(began.elapsed().as_millis() as u64, Ordering::Relaxed);
            end(&node, id, Phase::Deleting);
            log::info!("replace {id:#x}: {erased} records this server no longer owns dropped");
            crate::daemon::event(
                log::Level::Info,
                "replace_delete_done",
                &[
                    ("id", Value::from(format!("{id:#x}"))),
                    ("erased", Value::from(erased)),
                    ("failed", Value::from(failed)),
                    (
                        "ms",
                        Value::from(node.replace.delete_ms.load(Ordering::Relaxed)),
                    ),
                ],
            );
            if failed > 0 {
                // The manager runs the replace again, by when the disk may have room.
                log::warn!("replace {id:#x}: {failed} records could not be dropped");
            }
            report(
                &node,
                id,
                msg::REPLACE_DELETE_END,
                vec![Value::from(erased), Value::from(0), Value::from(failed > 0)],
            );
        },
    );
}

/// Tells every manager that asked for replace `id` that a phase ended, with its
/// counts (`tail`), until each acknowledges or a newer replace starts. A manager
/// that asks while this runs is told too.
fn report(node: &Node, id: u64, method: &str, tail: Vec<Value>) {
    let mut params = vec![
        Value::from(node.clock.tick()),
        Value::from(id),
        msg::addr_to_value(&node.me),
    ];
    params.extend(tail);
    let params = params.as_slice();
    let mut told: Vec<SocketAddr> = Vec::new();
    while is_current(node, id) {
        let asked: Vec<SocketAddr> = {
            let m = node
                .replace
                .managers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if m.0 != id {
                return;
            }
            m.1.clone()
        };
        let untold: Vec<SocketAddr> = asked.into_iter().filter(|a| !told.contains(a)).collect();
        if untold.is_empty() {
            return;
        }
        for manager in untold {
            let result = BlockingClient::connect(manager, REPORT_TIMEOUT)
                .map_err(|e| e.to_string())
                .and_then(|mut c| c.call(method, params));
            match result {
                Ok(_) => told.push(manager),
                Err(e) => {
                    log::warn!("replace {id:#x}: {method} to {manager} failed: {e}; retrying")
                }
            }
        }
        if told.len() < node.replace.asked(id) {
            std::thread::sleep(REPORT_RETRY);
        }
    }
}

/// `CreateBackup`: writes `PATH-suffix` on a thread and answers its path.
pub fn backup(node: &Arc<Node>, params: &[Value], reply: Reply) {
    let suffix = match params.first().and_then(Value::as_str) {
        Some(s) if !s.is_empty() && !s.contains('/') => s.to_string(),
        _ => return reply.err("bad parameters: expected a non-empty suffix without '/'"),
    };
    let store = node.store.clone();
    let spawned = std::thread::Builder::new()
        .name("backup".into())
        .spawn(move || match store.backup(&suffix) {
            Ok(path) => reply.ok(path.display().to_string()),
            Err(e) => reply.err(format!("backup failed: {e}")),
        });
    if let Err(e) = spawned {
        log::error!("cannot start the backup: {e}");
    }
}
