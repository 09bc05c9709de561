//! The gateway's `/metrics` page (`--metrics`): its commands and their results,
//! the latency of every command, its connections, its links to the servers and the
//! clocks of the hash spaces it routes by.

use super::Gateway;
use crate::proto::metrics::{cluster_view, Kind, Page};
use std::sync::atomic::{AtomicU64, Ordering};

pub(super) fn page(gw: &Gateway) -> String {
    let c = &gw.counters;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    let mut p = Page::new();
    p.by_label(
        "kumo_gateway_commands_total",
        Kind::Counter,
        "Commands received, by command.",
        "command",
        &[
            ("get", n(&c.cmd_get)),
            ("set", n(&c.cmd_set)),
            ("touch", n(&c.cmd_touch)),
        ],
    );
    p.family(
        "kumo_gateway_results_total",
        Kind::Counter,
        "Outcomes of the commands that find a key or not, by command and result.",
    );
    for (command, result, count) in [
        ("get", "hit", &c.get_hits),
        ("get", "miss", &c.get_misses),
        ("get", "error", &c.get_errors),
        ("delete", "hit", &c.delete_hits),
        ("delete", "miss", &c.delete_misses),
        ("incr", "hit", &c.incr_hits),
        ("incr", "miss", &c.incr_misses),
        ("decr", "hit", &c.decr_hits),
        ("decr", "miss", &c.decr_misses),
        ("cas", "hit", &c.cas_hits),
        ("cas", "miss", &c.cas_misses),
        ("cas", "badval", &c.cas_badval),
        ("touch", "hit", &c.touch_hits),
        ("touch", "miss", &c.touch_misses),
    ] {
        let labels = [("command", command), ("result", result)];
        p.sample("kumo_gateway_results_total", &labels, n(count));
    }
    for (name, kind, help, value) in [
        (
            "kumo_gateway_write_errors_total",
            Kind::Counter,
            "Writes answered with SERVER_ERROR.",
            n(&c.write_errors),
        ),
        (
            "kumo_gateway_retries_total",
            Kind::Counter,
            "Requests sent again to a server after an error.",
            n(&c.retries),
        ),
        (
            "kumo_gateway_connections",
            Kind::Gauge,
            "Client connections open.",
            n(&c.curr_connections),
        ),
        (
            "kumo_gateway_connections_total",
            Kind::Counter,
            "Client connections accepted.",
            n(&c.total_connections),
        ),
        (
            "kumo_uptime_seconds",
            Kind::Gauge,
            "Seconds since the process started.",
            gw.uptime() as f64,
        ),
    ] {
        p.single(name, kind, help, value);
    }
    p.family(
        "kumo_gateway_request_duration_seconds",
        Kind::Histogram,
        "Time from a command read whole to its answer handed to the connection.",
    )
    .histogram("kumo_gateway_request_duration_seconds", &[], &gw.latency);
    let t = gw.tables();
    cluster_view(
        &mut p,
        &gw.servers.states(),
        t.whs.clocktime,
        t.rhs.clocktime,
    );
    p.into_text()
}
