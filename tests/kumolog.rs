//! The binary log (`-g`) of real daemons, read back with kumolog: the events of
//! servers joining, an attach, a replace and a lost server; -t, -h and -n with
//! their negatives; damage skipped; and -f following the log through a rotation.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn kumolog(args: &[&str]) -> (i32, Vec<String>, String) {
    let (code, out, err) = run(&[&["log"], args].concat());
    (code, out.lines().map(str::to_string).collect(), err)
}

/// The event names of kumolog's lines (the fourth word).
fn events(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.split_whitespace().nth(4).unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_managers_binary_log_tells_what_happened_and_kumolog_reads_it_every_way() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = d.join("manager.mpac");
    let log_s = log.to_str().unwrap().to_string();
    let manager = local(free_port());
    let m = manager.to_string();
    let mut mgr = spawn(d, "manager", &["manager", "-l", &m, "-g", &log_s]);
    wait_rpc_ready_method(manager, "GetNodesInfo");
    let server = |i: usize| {
        let addr = local(free_port());
        let args = server_args(d, &format!("s{i}"), addr, manager, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (spawn(d, &format!("server{i}"), &args), addr)
    };
    let (_s0, a0) = server(0);
    let (mut s1, a1) = server(1);
    let all_attached = |n: usize| {
        run(&["ctl", &m, "attach"]);
        let (_, out, _) = run(&["ctl", &m, "status"]);
        out.matches("(active)").count() == n
            && !out.contains("copying")
            && !out.contains("deleting")
    };
    wait_until(Duration::from_secs(20), "two servers attached", || {
        all_attached(2)
    });
    let (_s2, a2) = server(2);
    wait_until(
        Duration::from_secs(30),
        "the third attached and moved to",
        || all_attached(3),
    );

    wait_until(
        Duration::from_secs(30),
        "the replace's end in the log",
        || {
            kumolog(&[&log_s])
                .1
                .last()
                .is_some_and(|l| l.contains("replace_end"))
        },
    );
    // -f from here on: it prints the last records, then what comes.
    let child = Command::new(kumo_bin())
        .args(["log", "-f", "-n", "1", &log_s])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut follow = Proc {
        child,
        log: log.clone(),
    }; // killed when dropped
    let mut followed = BufReader::new(follow.child.stdout.take().unwrap());
    let mut next = || {
        let mut l = String::new();
        followed.read_line(&mut l).unwrap();
        l
    };
    assert!(
        next().contains("replace_end"),
        "-f -n 1 starts with the last record"
    );

    s1.kill9();
    wait_until(
        Duration::from_secs(20),
        "the lost server in the log",
        || {
            kumolog(&[&log_s])
                .1
                .iter()
                .any(|l| l.contains("server_lost"))
        },
    );
    let lost = next();
    assert!(
        lost.contains("server_lost") && lost.contains(&a1.to_string()),
        "{lost}"
    );

    // Rotated as logrotate does: renamed, then SIGHUP.
    std::fs::rename(&log, d.join("manager.mpac.1")).unwrap();
    unsafe { libc::kill(mgr.pid(), libc::SIGHUP) };
    wait_until(Duration::from_secs(10), "a new log file", || log.exists());
    let (_s3, a3) = server(3);
    let joined = next();
    assert!(
        joined.contains("server_joined") && joined.contains(&a3.to_string()),
        "-f after the rotation: {joined}"
    );
    follow.kill9();

    // The whole first file, in order.
    let old = d.join("manager.mpac.1");
    let old_s = old.to_str().unwrap();
    let (code, lines, err) = kumolog(&[old_s]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
    let ev = events(&lines);
    let at = |e: &str| {
        ev.iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("no {e} in {lines:#?}"))
    };
    assert_eq!(ev[0], "start");
    assert!(at("server_joined") < at("attach_detach"));
    assert!(at("attach_detach") < at("replace_start"));
    assert!(at("replace_start") < at("replace_end") && at("replace_end") < at("server_lost"));
    for a in [a0, a1, a2] {
        let joined = format!("server_joined server={a}");
        assert!(
            lines.iter().any(|l| l.ends_with(&joined)),
            "{joined}: {lines:#?}"
        );
    }
    let line = &lines[at("replace_start")];
    assert!(
        line.contains(" INFO  manager replace_start ")
            && line.contains("phase=copy")
            && line.contains("servers=3"),
        "{line}"
    );
    // Each line: date, time with milliseconds, level, role, event.
    let first: Vec<&str> = lines[0].split_whitespace().collect();
    assert!(
        first[0].len() == 10 && first[1].len() == 12 && first[1].as_bytes()[8] == b'.',
        "{}",
        lines[0]
    );

    // -t, -h, -n and their negatives.
    let n = lines.len();
    assert_eq!(kumolog(&["-t", "-n", "2", old_s]).1, lines[n - 2..]);
    assert_eq!(kumolog(&["-h", "-n", "1", old_s]).1, lines[..1]);
    assert_eq!(kumolog(&["--tail", "--lines=-3", old_s]).1, lines[3..]);
    assert_eq!(kumolog(&["-h", "-n", "-3", old_s]).1, lines[..n - 3]);
    assert_eq!(kumolog(&["-t", old_s]).1.len(), n.min(10));
    assert_eq!(kumolog(&["-h", "-t", old_s]).0, 2);
    assert_eq!(kumolog(&["-n", "x", old_s]).0, 2);
    assert_eq!(kumolog(&[d.join("none").to_str().unwrap()]).0, 1);

    // Damage in the middle: skipped and counted; the records after it still read.
    let mut bytes = std::fs::read(&old).unwrap();
    let cut = bytes.len() / 2;
    bytes.splice(cut..cut, [0xff; 9]);
    bytes.extend_from_slice(&[0, 0, 0, 40, 0x95]); // a record cut short at the end
    let damaged = d.join("damaged.mpac");
    std::fs::write(&damaged, &bytes).unwrap();
    let (code, got, err) = kumolog(&[damaged.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        err.contains("damaged bytes skipped") && err.contains("unfinished record"),
        "{err}"
    );
    assert!(got.len() >= n - 1 && got.last() == lines.last(), "{got:#?}");
    mgr.kill9();
}
