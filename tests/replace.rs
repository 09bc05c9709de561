//! Replace and recovery (DESIGN §9), as real processes under a background load that
//! sets, reads back and deletes its own keys: scale out, detaching a dead server,
//! a server returning with its old store, auto replace, and backup, merge and
//! restore.

mod common;

use common::load::{check_acked, Load};
use common::{rpc, run, wait_until, Cluster};
use rmpv::Value;
use std::time::Duration;

/// Sets `n` keys `base-i` through the gateway.
fn fill(c: &Cluster, base: &str, n: usize) {
    let client = c.client();
    for i in 0..n {
        client
            .set(&format!("{base}-{i}"), format!("{base}:{i}").as_str(), 0)
            .unwrap();
    }
}

/// Every `base-i` reads back as written.
fn check_filled(c: &Cluster, base: &str, n: usize) {
    let client = c.client();
    for i in 0..n {
        let got: Option<String> = client.get(&format!("{base}-{i}")).unwrap();
        assert_eq!(
            got.as_deref(),
            Some(format!("{base}:{i}").as_str()),
            "{base}-{i}"
        );
    }
}

/// Keys with a value in the cluster, from the load's view plus the fixed keys.
fn live_keys(acked: &std::collections::HashMap<String, String>, fixed: usize) -> u64 {
    (acked.values().filter(|v| !v.is_empty()).count() + fixed) as u64
}

fn attach(c: &Cluster) {
    let (code, out, err) = c.ctl(&["attach"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A new user's first cluster (issue #10, items 1 and 2): keys set at once after
/// the first attach read back at once, and a 4th server attached right after them
/// loses none of them.
#[test]
fn the_first_attach_serves_reads_at_once_and_an_attach_right_after_loses_nothing() {
    let mut c = Cluster::start_pair_unsettled(3, "");
    let client = c.client();
    for i in 0..2000 {
        let (k, v) = (format!("first-{i}"), format!("first:{i}"));
        client.set(&k, v.as_str(), 0).unwrap();
        let got: Option<String> = client.get(&k).unwrap();
        assert_eq!(got.as_deref(), Some(v.as_str()), "{k} right after its set");
    }
    // A multi-get leaves nothing out either.
    let keys: Vec<String> = (0..100).map(|i| format!("first-{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got: std::collections::HashMap<String, String> = client.gets(&refs).unwrap();
    assert_eq!(got.len(), 100);
    fill(&c, "first", 10_000);
    let four = c.add_server();
    c.wait_newcomers(&[c.servers[four].addr]);
    attach(&c);
    check_filled(&c, "first", 10_000);
    c.wait_settled();
    check_filled(&c, "first", 10_000);
    assert_eq!(c.items_total(), 3 * 10_000);
}

/// A server detached, then back with its old store after longer than -gN: the
/// deletes made meanwhile may have been collected elsewhere, so it must not serve
/// its old values. It copies its store aside, starts empty, says so, and the
/// replace after its attach fills it.
#[test]
fn a_server_back_after_the_tombstone_horizon_resyncs_instead_of_resurrecting() {
    let mut c = Cluster::start(3);
    c.server_args = ["-gN", "1", "-gX", "1"].map(String::from).to_vec();
    let four = c.add_server();
    c.wait_newcomers(&[c.servers[four].addr]);
    attach(&c);
    c.wait_settled();
    fill(&c, "h", 400);
    // It has recorded its membership in its store.
    wait_until(Duration::from_secs(10), "the member mark", || {
        c.servers[four].store.join("member").exists()
    });
    c.kill_server(four);
    c.wait_fault(four);
    let (code, out, err) = c.ctl(&["detach"]);
    assert_eq!(code, 0, "{out}{err}");
    c.wait_settled();
    let client = c.client();
    for i in 0..200 {
        assert!(client.delete(&format!("h-{i}")).unwrap());
    }
    std::thread::sleep(Duration::from_millis(2100)); // longer than -gN 1: a user's wait
    c.restart_server(four);
    let addr = c.servers[four].addr;
    wait_until(
        Duration::from_secs(10),
        "the stale store to be emptied",
        || {
            c.servers[four]
                .proc
                .as_ref()
                .is_some_and(|p| p.log_text().contains("stale records dropped"))
        },
    );
    let items = rpc(addr, "GetStatus", &[Value::from("items")]).unwrap();
    assert_eq!(
        items.as_u64(),
        Some(0),
        "the stale store still serves values"
    );
    let aside = std::fs::read_dir(c.servers[four].store.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("server{four}-stale-"))
        });
    assert!(aside, "the stale store was not copied aside");
    c.wait_newcomers(&[addr]);
    attach(&c);
    c.wait_settled();
    for i in 0..400 {
        let got: Option<String> = client.get(&format!("h-{i}")).unwrap();
        let want = (i >= 200).then(|| format!("h:{i}"));
        assert_eq!(got, want, "h-{i}");
    }
    assert_eq!(c.items_total(), 3 * (200 + 1));
}

/// 3 servers with 20,000 keys; attach a 4th, then a 5th and 6th together. Every
/// key ends on exactly three servers and no client notices.
#[test]
fn scale_out_under_load_keeps_three_copies() {
    let mut c = Cluster::start(3);
    fill(&c, "scale", 20_000);
    let load = Load::start(c.gateway_addr, 2, 150);
    load.run_for_ops(300);

    let four = c.add_server();
    c.wait_newcomers(&[c.servers[four].addr]);
    attach(&c);
    // kumoctl status shows the replace's progress while it runs.
    let mut progress = Vec::new();
    wait_until(Duration::from_secs(60), "the replace to end", || {
        let (_, out, _) = c.ctl(&["status"]);
        let mut lines = out.lines().skip_while(|l| *l != "replace:");
        if let Some(l) = lines.nth(1) {
            progress.push(l.trim().to_string());
        }
        c.is_settled()
    });
    assert!(
        progress.iter().any(|l| l.starts_with("copying (")
            && l.contains(" of 4 servers done), ")
            && l.ends_with(" bytes copied")),
        "{progress:?}"
    );
    c.wait_settled();
    load.run_for_ops(300);

    let five = c.add_server();
    let six = c.add_server();
    c.wait_newcomers(&[c.servers[five].addr, c.servers[six].addr]);
    attach(&c);
    c.wait_settled();
    load.run_for_ops(300);

    let (acked, get_errors, set_errors, wrong) = load.stop();
    assert_eq!(
        (get_errors, set_errors, wrong),
        (0, 0, 0),
        "the clients noticed"
    );
    check_acked(c.gateway_addr, &acked);
    check_filled(&c, "scale", 20_000);
    // 20,000 keys, the load's live keys and the readiness probe, three copies each.
    assert_eq!(c.items_total(), 3 * live_keys(&acked, 20_001));
    for s in &c.servers {
        let (code, out, _) = run(&["stat", &s.addr.to_string(), "hscheck"]);
        assert_eq!((code, out.as_str()), (0, "true\n"), "{}", s.addr);
        let items = rpc(s.addr, "GetStatus", &[Value::from("items")])
            .unwrap()
            .as_u64()
            .unwrap();
        assert!(items > 0, "{} holds nothing", s.addr);
    }
}

/// Detaching a dead server brings its keys back to three live copies.
#[test]
fn detaching_a_dead_server_restores_three_copies() {
    let mut c = Cluster::start(4);
    fill(&c, "detach", 3000);
    let load = Load::start(c.gateway_addr, 2, 100);
    load.run_for_ops(200);
    let dead = c.servers[2].addr;
    c.kill_server(2);
    wait_until(Duration::from_secs(10), "the fault", || {
        c.nodes_info()
            .whs
            .nodes()
            .iter()
            .any(|n| n.addr == dead && !n.active)
    });
    let (code, out, _) = c.ctl(&["detach"]);
    assert_eq!((code, out.as_str()), (0, "detach: done\n"));
    c.wait_settled();
    load.run_for_ops(200);
    let (acked, get_errors, set_errors, wrong) = load.stop();
    assert_eq!((get_errors, set_errors, wrong), (0, 0, 0));
    check_acked(c.gateway_addr, &acked);
    check_filled(&c, "detach", 3000);
    assert_eq!(c.items_total(), 3 * live_keys(&acked, 3001));
    assert!(!c.nodes_info().whs.contains(&dead));
}

/// A server that missed deletes and overwrites comes back with its old store: no
/// deleted key returns and no old value wins.
#[test]
fn a_server_returning_with_its_old_store_resurrects_nothing() {
    let mut c = Cluster::start(3);
    fill(&c, "old", 600);
    c.kill_server(1);
    let back = c.servers[1].addr;
    wait_until(Duration::from_secs(10), "the fault", || {
        c.nodes_info()
            .whs
            .nodes()
            .iter()
            .any(|n| n.addr == back && !n.active)
    });
    let client = c.client();
    for i in 0..600 {
        let k = format!("old-{i}");
        match i % 3 {
            0 => assert!(client.delete(&k).unwrap()),
            1 => client.set(&k, "new", 0).unwrap(),
            _ => {}
        }
    }
    c.restart_server(1);
    c.wait_newcomers(&[back]);
    let load = Load::start(c.gateway_addr, 2, 100);
    attach(&c);
    c.wait_settled();
    load.run_for_ops(200);
    let (acked, get_errors, set_errors, wrong) = load.stop();
    assert_eq!((get_errors, set_errors, wrong), (0, 0, 0));
    check_acked(c.gateway_addr, &acked);
    // Read each key from every server that holds it: the returned server too.
    for i in 0..600 {
        let k = format!("old-{i}");
        let want: Option<String> = match i % 3 {
            0 => None,
            1 => Some("new".into()),
            _ => Some(format!("old:{i}")),
        };
        assert_eq!(client.get::<String>(&k).unwrap(), want, "{k}");
        for s in &c.servers {
            if let Ok(v) = rpc(s.addr, "Get", &[Value::Binary(k.clone().into_bytes())]) {
                let got = kumo::proto::cluster::record_from_value(&v)
                    .ok()
                    .map(|r| String::from_utf8(r.data).unwrap());
                assert_eq!(got, want, "{k} on {}", s.addr);
            }
        }
    }
    assert_eq!(c.items_total(), 3 * live_keys(&acked, 400 + 1));
}

/// With -a -Rs 2 a killed server is detached and its keys copied again without
/// any kumoctl command.
#[test]
fn auto_replace_detaches_and_recopies_by_itself() {
    let mut c = Cluster::start_with(4, &["-a", "-Rs", "2"], |_, _| {});
    fill(&c, "auto", 2000);
    let dead = c.servers[0].addr;
    c.kill_server(0);
    wait_until(
        Duration::from_secs(30),
        "auto replace to detach the dead server",
        || !c.nodes_info().whs.contains(&dead),
    );
    c.wait_settled();
    check_filled(&c, "auto", 2000);
    assert_eq!(c.items_total(), 3 * 2001);
    // A new server is attached by itself too.
    let extra = c.add_server();
    let addr = c.servers[extra].addr;
    wait_until(
        Duration::from_secs(30),
        "auto replace to attach the new server",
        || c.nodes_info().whs.is_active(&addr),
    );
    c.wait_settled();
    assert_eq!(c.items_total(), 3 * 2001);
}

/// The guide's restore: back up every server, merge the backups, start servers
/// from the merged store, attach; the delete phase trims what each does not own.
#[test]
fn backup_merge_and_restore() {
    let mut c = Cluster::start(3);
    fill(&c, "bk", 1500);
    let (code, out, err) = c.ctl(&["backup", "snap"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("suffix=snap\n"), "{out}");
    let backups: Vec<std::path::PathBuf> = c
        .servers
        .iter()
        .map(|s| std::path::PathBuf::from(format!("{}-snap", s.store.display())))
        .collect();
    for b in &backups {
        assert!(b.is_dir(), "{} missing: {out}", b.display());
    }
    let merged = c.dir.path().join("merged");
    let mut args = vec!["mergedb".to_string(), merged.display().to_string()];
    args.extend(backups.iter().map(|b| b.display().to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run(&argv);
    assert_eq!(code, 0, "{out}{err}");
    for i in 0..c.servers.len() {
        c.kill_server(i);
    }
    // A new cluster, every server starting from the merged store.
    let merged2 = merged.clone();
    let r = Cluster::start_with(3, &[], move |_, store| {
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(&merged2)
            .arg(store)
            .status()
            .unwrap();
        assert!(status.success());
    });
    r.wait_settled();
    check_filled(&r, "bk", 1500);
    // 1,500 keys and the readiness probe (one key in both clusters): each on exactly
    // three servers after trimming.
    assert_eq!(r.items_total(), 3 * 1501);
}
