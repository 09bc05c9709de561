//! The server's `/metrics` page (`--metrics`): requests, the store, replaces, its
//! links to the other servers and the clocks of its hash spaces.

use super::node::Node;
use crate::proto::metrics::{cluster_view, Kind, Page};
use crate::time::unix_now;
use std::sync::atomic::{AtomicU64, Ordering};

/// The states `replstat` takes, each a sample of `kumo_replace_state`.
const REPLACE_STATES: [&str; 5] = ["inactive", "ready", "waiting", "copying", "deleting"];

pub(super) fn page(node: &Node) -> String {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let (c, store, r) = (&node.counters, &node.store, &node.replace);
    let g = store.gauges();
    let state = node.replstat();
    let mut p = Page::new();
    p.by_label(
        "kumo_server_requests_total",
        Kind::Counter,
        "Requests served: reads, and writes coordinated or replicated here.",
        "command",
        &[("get", n(&c.cmd_get)), ("set", n(&c.cmd_set)), ("delete", n(&c.cmd_delete))],
    )
    .single(
        "kumo_server_replicate_failures_total",
        Kind::Counter,
        "Writes that failed because a replica could not store them.",
        n(&c.replicate_failures),
    )
    .single(
        "kumo_store_items",
        Kind::Gauge,
        "Keys holding a value that has not expired.",
        store.items(unix_now()) as f64,
    )
    .single(
        "kumo_store_bytes",
        Kind::Gauge,
        "Bytes of the store's segments, live and dead records.",
        g.bytes as f64,
    )
    .single("kumo_store_segments", Kind::Gauge, "Segment files of the store.", g.segments as f64)
    .single(
        "kumo_store_compactions_total",
        Kind::Counter,
        "Segments rewritten by compaction since the server started.",
        g.compactions as f64,
    )
    .single(
        "kumo_store_group_commits_total",
        Kind::Counter,
        "Fsyncs that made acknowledged writes durable under #sync=always; each serves every write that arrived while the one before it ran.",
        g.group_commits as f64,
    )
    .single(
        "kumo_store_full",
        Kind::Gauge,
        "1 while the store's disk is full and writes to it fail.",
        flag(store.is_full()),
    )
    .by_label(
        "kumo_replace_state",
        Kind::Gauge,
        "1 for the state this server is in: inactive (not attached), ready, waiting (for a replace to start), copying, deleting.",
        "state",
        &REPLACE_STATES.map(|s| (s, flag(s == state))),
    )
    .single(
        "kumo_replace_id",
        Kind::Gauge,
        "The id of the newest replace this server took part in.",
        n(&r.id),
    )
    .by_label(
        "kumo_replace_records_total",
        Kind::Counter,
        "Records moved by the newest replace, by direction.",
        "direction",
        &[("sent", n(&r.records_sent)), ("received", n(&r.records_received))],
    )
    .single(
        "kumo_replace_sent_bytes_total",
        Kind::Counter,
        "Bytes this server sent in the newest replace.",
        n(&r.bytes_sent),
    )
    .single(
        "kumo_replace_erased_total",
        Kind::Counter,
        "Keys this server let go of in the newest replace's delete phase.",
        n(&r.erased),
    )
    .by_label(
        "kumo_replace_phase_seconds",
        Kind::Gauge,
        "How long each phase of the newest replace took here.",
        "phase",
        &[("copy", n(&r.copy_ms) / 1000.0), ("delete", n(&r.delete_ms) / 1000.0)],
    );
    let t = node.tables();
    cluster_view(
        &mut p,
        &node.peers.states(),
        t.whs.clocktime,
        t.rhs.clocktime,
    );
    p.single(
        "kumo_uptime_seconds",
        Kind::Gauge,
        "Seconds since the process started.",
        node.uptime() as f64,
    );
    p.into_text()
}
