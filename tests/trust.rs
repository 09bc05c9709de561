//! Peers are not trusted blindly (issue #10, part 3): anyone who reaches a cluster
//! port can speak msgpack-rpc to it, so registrations are bounded, and clocks,
//! tables and records from the far future are refused rather than adopted.

mod common;

use common::{rpc, wait_until, Cluster};
use kumo::cluster::clock::{ClockTime, AHEAD_MAX_SECS};
use kumo::cluster::hash_space::{HashSpace, Node};
use kumo::proto::cluster as msg;
use kumo::store::Record;
use rmpv::Value;
use std::net::SocketAddr;
use std::time::Duration;

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn far_future() -> ClockTime {
    ClockTime::new(now() + AHEAD_MAX_SECS * 10, 1)
}

/// Keepalives from more strangers than a manager watches: the excess is refused,
/// the strangers (nobody answers at their addresses) are forgotten, and the cluster
/// serves throughout.
#[test]
fn a_flood_of_strangers_is_bounded_and_forgotten() {
    let c = Cluster::start(3);
    let max = kumo::manager::SERVERS_MAX;
    let mut refused = 0;
    let mut client = kumo::net::rpc_client::BlockingClient::connect(c.manager_addr, Duration::from_secs(5))
        .unwrap();
    for i in 0..(max + 50) {
        // 127.0.0.2-127.0.0.9 on low ports: nobody listens there.
        let addr = SocketAddr::from(([127, 0, 0, 2 + (i / 1000) as u8], 1 + (i % 1000) as u16));
        let params = [
            Value::from(1),
            msg::addr_to_value(&addr),
            HashSpace::empty().to_value(),
            HashSpace::empty().to_value(),
            Value::from(1),
            Value::from(i as u64),
        ];
        if let Err(e) = client.call(msg::KEEP_ALIVE, &params) {
            assert!(e.contains("refused"), "{e}");
            refused += 1;
        }
    }
    assert!(refused >= 50, "only {refused} keepalives refused");
    assert!(c.nodes_info().newcomers.len() <= max);
    c.client().set("during-the-flood", "1", 0).unwrap();
    wait_until(Duration::from_secs(60), "the strangers to be forgotten", || {
        c.nodes_info().newcomers.is_empty()
    });
    let got: Option<String> = c.client().get("during-the-flood").unwrap();
    assert_eq!(got.as_deref(), Some("1"));
}

/// A table stamped far in the future, pushed to a server or a manager, is not
/// taken; a record from the future is refused by a replica; a counter that would
/// wrap is not merged.
#[test]
fn versions_from_the_far_future_are_refused() {
    let c = Cluster::start(3);
    let server = c.servers[0].addr;
    let before = rpc(server, "GetStatus", &[Value::from("whs")]).unwrap();
    let lone = HashSpace::new(
        vec![Node {
            addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            active: true,
        }],
        far_future(),
    );
    let params = [Value::from(1), lone.to_value(), lone.to_value()];
    assert_eq!(rpc(server, msg::HASH_SPACE_SYNC, &params), Ok(Value::from(false)));
    assert_eq!(rpc(c.manager_addr, msg::HASH_SPACE_SYNC, &params), Ok(Value::from(false)));
    assert_eq!(rpc(server, "GetStatus", &[Value::from("whs")]).unwrap(), before);
    assert_eq!(c.nodes_info().whs.to_value(), before);

    // A replica refuses a record from the future for a key it owns.
    let key = b"from-the-future".to_vec();
    let owners = c.nodes_info().whs.active_owners(kumo::cluster::hash_space::key_hash(&key));
    let rec = Record::value(far_future().0, 0, 0, b"forever".to_vec());
    let r = rpc(
        owners[1],
        msg::REPLICATE,
        &[
            Value::from(1),
            Value::Binary(key.clone()),
            msg::record_to_value(&rec),
            Value::from(u64::MAX),
        ],
    );
    assert!(r.as_ref().is_err_and(|e| e.contains("ahead")), "{r:?}");
    // So a normal write of the key still takes effect everywhere.
    let client = c.client();
    client.set("from-the-future", "now", 0).unwrap();
    let got: Option<String> = client.get("from-the-future").unwrap();
    assert_eq!(got.as_deref(), Some("now"));

    // A message counter that would wrap ours is not merged: stamps stay ordered.
    let _ = rpc(server, msg::KEEP_ALIVE, &[Value::from(u32::MAX - 2)]);
    let stamp = rpc(server, "GetStatus", &[Value::from("clocktime")])
        .unwrap()
        .as_u64()
        .unwrap();
    assert!(
        ClockTime(stamp).counter() < 1 << 30,
        "counter jumped to {:#x}",
        ClockTime(stamp).counter()
    );
    client.set("from-the-future", "later", 0).unwrap();
    let got: Option<String> = client.get("from-the-future").unwrap();
    assert_eq!(got.as_deref(), Some("later"));
}
