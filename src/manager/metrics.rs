//! The manager's `/metrics` page (`--metrics`): the servers by state, the replace
//! it runs, its links to the servers and the clocks of the hash spaces it keeps.

use super::Manager;
use crate::cluster::replace_run::Phase;
use crate::proto::metrics::{cluster_view, Kind, Page};

pub(super) fn page(m: &Manager) -> String {
    let st = m.lock();
    let t = &st.members.tables;
    let nodes = t.whs.nodes();
    let active = nodes.iter().filter(|n| n.active).count();
    let mut p = Page::new();
    p.by_label(
        "kumo_manager_servers",
        Kind::Gauge,
        "Servers by state: active in the write hash space, fault (in it, but lost), or not attached yet.",
        "state",
        &[
            ("active", active as f64),
            ("fault", (nodes.len() - active) as f64),
            ("not_attached", st.members.newcomers().len() as f64),
        ],
    );
    p.single(
        "kumo_manager_full_servers",
        Kind::Gauge,
        "Servers whose last keepalive said their store is full.",
        st.full.len() as f64,
    );
    p.single(
        "kumo_manager_auto_replace",
        Kind::Gauge,
        "1 when the manager starts replaces by itself (-a).",
        if st.auto_replace { 1.0 } else { 0.0 },
    );
    let run = st.replace.run();
    let phase = run.map_or("none", |r| match r.phase {
        Phase::Copy => "copying",
        Phase::Settling => "settling",
        Phase::Delete => "deleting",
    });
    p.by_label(
        "kumo_manager_replace_phase",
        Kind::Gauge,
        "1 for the phase of the replace this manager runs (none when there is none).",
        "phase",
        &["none", "copying", "settling", "deleting"]
            .map(|s| (s, if s == phase { 1.0 } else { 0.0 })),
    );
    let (servers, done, records, bytes) = run.map_or((0, 0, 0, 0), |r| {
        (
            r.targets.len(),
            r.targets.len() - r.pending.len(),
            r.records,
            r.bytes,
        )
    });
    p.single(
        "kumo_manager_replace_servers",
        Kind::Gauge,
        "Servers taking part in the running replace.",
        servers as f64,
    );
    p.single(
        "kumo_manager_replace_servers_done",
        Kind::Gauge,
        "Servers done with the running replace's phase.",
        done as f64,
    );
    p.single(
        "kumo_manager_replace_records",
        Kind::Gauge,
        "Records the running replace has moved so far.",
        records as f64,
    );
    p.single(
        "kumo_manager_replace_bytes",
        Kind::Gauge,
        "Bytes the running replace has moved so far.",
        bytes as f64,
    );
    let links = crate::net::report::link_states(&st.servers);
    cluster_view(&mut p, &links, t.whs.clocktime, t.rhs.clocktime);
    p.single(
        "kumo_uptime_seconds",
        Kind::Gauge,
        "Seconds since the process started.",
        m.started.elapsed().as_secs() as f64,
    );
    p.into_text()
}
