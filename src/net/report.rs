//! A node's links to the servers, and reports of the unreachable ones. A gateway
//! or a server keeps its links to servers in one [`ServerLinks`]; when it finds a
//! link dead or a connect fails (see [`super::rpc_client`]), it tells every manager
//! which servers it cannot reach now: a manager that sees everyone fine could not
//! route around such a cut by itself. When such a server answers again, it tells
//! them again, so that a cut that healed before the managers decided blames no
//! one. What a manager decides is `cluster::partition`.

use super::rpc_client::{LinkNews, Peer};
use super::Net;
use crate::proto::cluster as msg;
use rmpv::Value;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The same report is not sent again sooner than this: a dead link is found once
/// per request that meets it, and the managers need to hear it once.
pub const REPORT_REPEAT: Duration = Duration::from_millis(500);
/// How long a manager may take to take a report. Short: a report held back by a
/// link that is down says little by the time it could be delivered, and is not
/// delivered once this has passed (see `rpc_client`).
pub const REPORT_TIMEOUT: Duration = Duration::from_millis(500);
/// A server counts as unreachable in a report if a link to it was found dead, or
/// a connect to it failed, this recently (and nothing has been heard since): the
/// links a cut breaks die within about this of each other, and an older failure
/// may be of a server that is back.
pub const REPORT_FRESH: Duration = Duration::from_millis(1500);

pub struct ServerLinks {
    net: Net,
    /// Who reports: a server's address, or a gateway's id (see `ReportUnreachable`).
    me: Value,
    managers: Vec<Arc<Peer>>,
    links: Mutex<HashMap<SocketAddr, Arc<Peer>>>,
    last: Mutex<Option<(Instant, BTreeSet<SocketAddr>)>>,
}

impl ServerLinks {
    pub fn new(net: &Net, me: Value, managers: Vec<Arc<Peer>>) -> Arc<ServerLinks> {
        Arc::new(ServerLinks {
            net: net.clone(),
            me,
            managers,
            links: Mutex::new(HashMap::new()),
            last: Mutex::new(None),
        })
    }

    /// Every link made so far, and whether it is up (connected, and not
    /// suspect), by address.
    pub fn states(&self) -> Vec<(SocketAddr, bool)> {
        link_states(&self.links.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The link to server `addr`, made on first use.
    pub fn get(self: &Arc<Self>, addr: SocketAddr) -> Arc<Peer> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .entry(addr)
            .or_insert_with(|| {
                let me = Arc::downgrade(self);
                Peer::watched(
                    &self.net,
                    addr,
                    Box::new(move |_, _: LinkNews| {
                        if let Some(l) = me.upgrade() {
                            l.report();
                        }
                    }),
                )
            })
            .clone()
    }

    /// Reports the servers this node cannot reach now, when that is news.
    fn report(&self) {
        let unreachable: BTreeSet<SocketAddr> = self
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|p| p.was_down_within(REPORT_FRESH))
            .map(|p| p.addr())
            .collect();
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if !worth_reporting(last.as_ref(), &unreachable, Instant::now()) {
                return;
            }
            *last = Some((Instant::now(), unreachable.clone()));
        }
        if unreachable.is_empty() {
            log::info!("every server reported unreachable answers again; telling the managers");
        } else {
            log::warn!("cannot reach {unreachable:?}; telling the managers");
        }
        let params = [
            self.me.clone(),
            Value::Array(unreachable.iter().map(msg::addr_to_value).collect()),
        ];
        for m in &self.managers {
            let addr = m.addr();
            m.call(
                msg::REPORT_UNREACHABLE,
                &params,
                REPORT_TIMEOUT,
                Box::new(move |r| {
                    if let Err(e) = r {
                        log::debug!("manager {addr} did not take the report: {e}");
                    }
                }),
            );
        }
    }
}

/// Whether the servers a node cannot reach now, `unreachable`, are worth a report,
/// given the last one it sent (when, and what it named). The same servers are
/// named again after REPORT_REPEAT (a cut that lasts is reported again, since a
/// manager's decision consumes the reports); none at all is news only after a
/// report that named some: the managers must drop the links it named.
fn worth_reporting(
    last: Option<&(Instant, BTreeSet<SocketAddr>)>,
    unreachable: &BTreeSet<SocketAddr>,
    now: Instant,
) -> bool {
    match last {
        None => !unreachable.is_empty(),
        Some((_, named)) if unreachable.is_empty() => !named.is_empty(),
        Some((at, named)) => named != unreachable || now.duration_since(*at) >= REPORT_REPEAT,
    }
}

/// Whether each link of `links` is up (connected, and not suspect), by address in
/// order: what `--metrics` shows as `kumo_peer_link_up`.
pub fn link_states(links: &HashMap<SocketAddr, Arc<Peer>>) -> Vec<(SocketAddr, bool)> {
    let mut out: Vec<_> = links.iter().map(|(a, p)| (*a, p.is_up())).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ports: &[u16]) -> BTreeSet<SocketAddr> {
        ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect()
    }

    #[test]
    fn a_report_is_sent_when_it_is_news() {
        let t0 = Instant::now();
        let soon = t0 + REPORT_REPEAT / 2;
        let later = t0 + REPORT_REPEAT;
        assert!(!worth_reporting(None, &set(&[]), t0), "nothing to say");
        assert!(worth_reporting(None, &set(&[1]), t0));
        let sent = (t0, set(&[1]));
        assert!(
            !worth_reporting(Some(&sent), &set(&[1]), soon),
            "said already"
        );
        assert!(
            worth_reporting(Some(&sent), &set(&[1]), later),
            "a cut that lasts"
        );
        assert!(
            worth_reporting(Some(&sent), &set(&[1, 2]), soon),
            "one more"
        );
        assert!(worth_reporting(Some(&sent), &set(&[]), soon), "healed");
        let healed = (soon, set(&[]));
        assert!(
            !worth_reporting(Some(&healed), &set(&[]), later),
            "said already"
        );
        assert!(worth_reporting(Some(&healed), &set(&[2]), later));
    }
}
