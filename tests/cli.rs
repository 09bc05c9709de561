//! The binary's entry: roles, symlinks, option errors, logging and daemon mode.

mod common;
use common::*;
use rmpv::Value;
use std::process::Command;

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn symlinked(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let link = dir.join(name);
    std::os::unix::fs::symlink(kumo_bin(), &link).unwrap();
    link
}

#[test]
fn top_level_help_lists_the_built_roles_and_version() {
    let (code, out, _) = run(Command::new(kumo_bin()).arg("--help"));
    assert_eq!(code, 0);
    assert!(
        out.contains("server") && out.contains("kumo-server"),
        "{out}"
    );
    let (code, out, _) = run(Command::new(kumo_bin()).arg("--version"));
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("kumo {}", env!("CARGO_PKG_VERSION")));
    let (code, _, err) = run(Command::new(kumo_bin()).arg("serverr"));
    assert_eq!(code, 2);
    assert!(err.contains("unknown role 'serverr'"), "{err}");
}

#[test]
fn a_symlink_named_kumo_server_behaves_as_kumo_server() {
    let dir = tempfile::tempdir().unwrap();
    let link = symlinked(dir.path(), "kumo-server");
    let via_link = run(Command::new(&link).args(["--lsten", "x"]));
    let via_arg = run(Command::new(kumo_bin()).args(["server", "--lsten", "x"]));
    assert_eq!(via_link, via_arg);
    let (code, _, err) = via_link;
    assert_eq!(code, 2);
    assert!(
        err.starts_with("kumo-server: unrecognized option '--lsten' (similar: --listen)\n"),
        "{err}"
    );
    assert!(err.contains("Try 'kumo-server --help'"), "{err}");
    assert_eq!(
        run(Command::new(&link).arg("--help")),
        run(Command::new(kumo_bin()).args(["server", "--help"]))
    );

    // And it really serves, under the symlink's name.
    let port = free_port();
    let out = std::fs::File::create(dir.path().join("srv.log")).unwrap();
    let child = Command::new(&link)
        .args([
            "-m",
            "127.0.0.1:9",
            "-L",
            &free_port().to_string(),
            "-s",
            dir.path().join("db").to_str().unwrap(),
            "-l",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut p = Proc {
        child,
        log: dir.path().join("srv.log"),
    };
    wait_rpc_ready(local(port));
    assert_eq!(
        rpc(local(port), "GetStatus", &[Value::from("pid")]),
        Ok(Value::from(p.pid() as u32))
    );
    p.kill9();
}

#[test]
fn bad_values_and_missing_options_exit_2_naming_the_option() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["-s", "x"],
            "kumo-server: missing required option -l/--listen ADDRESS",
        ),
        (
            &["-s", "x", "-l", "127.0.0.1", "-TR", "x"],
            "invalid value 'x' for -TR/--worker-threads: expected a whole number",
        ),
        (
            &["-s", "x", "-l", "127.0.0.1", "-Ys", "soon"],
            "invalid value 'soon' for -Ys/--connect-timeout: expected seconds",
        ),
        (
            &["-s", "x", "-l", "127.0.0.1", "--connect-retry-limit", "-1"],
            "invalid value '-1' for -Yn/--connect-retry-limit",
        ),
        (
            &["-s", "x", "-l", "127.0.0.1:99999"],
            "invalid value '127.0.0.1:99999' for -l/--listen",
        ),
        (
            &["-s", "x", "-l", "127.0.0.1", "-TW"],
            "option -TW/--sender-threads needs a value",
        ),
        (
            &["-s", "x", "-l", "127.0.0.1", "-Q"],
            "unrecognized option '-Q'",
        ),
    ];
    for (args, want) in cases {
        let (code, out, err) = run(Command::new(kumo_bin()).arg("server").args(*args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty());
        assert!(err.contains(want), "{args:?}: wanted {want:?} in {err:?}");
    }
}

#[test]
fn a_port_in_use_is_a_runtime_failure_with_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (code, _, err) = run(Command::new(kumo_bin()).args([
        "server",
        "-m",
        "127.0.0.1:9",
        "-L",
        &free_port().to_string(),
        "-s",
        std::env::temp_dir()
            .join(format!("kumo-inuse-{port}"))
            .to_str()
            .unwrap(),
        "-l",
        &format!("127.0.0.1:{port}"),
    ]));
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn log_file_lines_carry_time_level_module_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("kumo.log");
    let _p = spawn(
        dir.path(),
        "srv",
        &[
            "server",
            "-v",
            "-o",
            log.to_str().unwrap(),
            "-m",
            "127.0.0.1:9",
            "-L",
            &free_port().to_string(),
            "-s",
            dir.path().join("db").to_str().unwrap(),
            "-l",
            &format!("127.0.0.1:{port}"),
        ],
    );
    wait_rpc_ready(local(port));
    wait_until(std::time::Duration::from_secs(5), "a log line", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("listening on")).unwrap();
    // "2026-11-26 05:40:00 INFO  kumo::server: listening on 127.0.0.1:PORT"
    let b = line.as_bytes();
    assert!(
        b[4] == b'-' && b[7] == b'-' && b[10] == b' ' && b[13] == b':' && b[16] == b':',
        "{line}"
    );
    assert!(
        line[20..].starts_with("INFO  kumo::server: listening on"),
        "{line}"
    );
    assert!(!line.contains('\x1b'), "no colours in a file: {line:?}");
}

/// logrotate's way: the log is renamed, SIGHUP makes the daemon open a new file of
/// the old name, and what it logs afterwards goes there, not to the renamed one.
#[test]
fn sighup_reopens_the_log_file_after_it_is_moved() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("manager.log");
    let p = spawn(
        dir.path(),
        "mgr",
        &[
            "manager",
            "-o",
            log.to_str().unwrap(),
            "-l",
            &format!("127.0.0.1:{port}"),
        ],
    );
    wait_rpc_ready_method(local(port), "GetNodesInfo");
    let hup = || unsafe { libc::kill(p.pid(), libc::SIGHUP) };
    hup();
    wait_until(
        std::time::Duration::from_secs(5),
        "the first reopen logged",
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("reopened")
        },
    );
    let rotated = dir.path().join("manager.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    hup();
    wait_until(std::time::Duration::from_secs(5), "a new log file", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("SIGHUP: 1 log file(s) reopened")
    });
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(
        old.matches("reopened").count(),
        1,
        "the second reopen went to the new file: {old}"
    );
    // Still serving after both.
    assert!(rpc(local(port), "GetNodesInfo", &[]).is_ok());
}

/// examples/logrotate/kumo, as logrotate runs it: the log is renamed, the daemon
/// (found by its name, kumo-manager) is sent SIGHUP, and it logs to a new file.
#[test]
fn the_example_logrotate_config_rotates_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("log");
    std::fs::create_dir(&logs).unwrap();
    let port = free_port();
    let log = logs.join("manager.log");
    let manager = symlinked(dir.path(), "kumo-manager");
    let child = Command::new(&manager)
        .args([
            "-o",
            log.to_str().unwrap(),
            "-l",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc {
        child,
        log: log.clone(),
    }; // killed when dropped, even on a failure
    wait_rpc_ready_method(local(port), "GetNodesInfo");
    // A first line, so that the log is not empty (the example skips empty logs).
    unsafe { libc::kill(p.pid(), libc::SIGHUP) };
    wait_until(std::time::Duration::from_secs(5), "a first line", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("reopened")
    });
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/logrotate/kumo"),
    )
    .unwrap();
    let head = example.lines().find(|l| l.starts_with('/')).unwrap();
    let conf = dir.path().join("kumo.logrotate");
    let ours = example.replace(head, &format!("{}/*.log {{", logs.display()));
    std::fs::write(&conf, ours).unwrap();
    let state = dir.path().join("state");
    let (code, out, err) = run(Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(&state)
        .arg(&conf));
    assert_eq!(code, 0, "{out}{err}");
    wait_until(
        std::time::Duration::from_secs(5),
        "the daemon to reopen its log",
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("reopened")
        },
    );
    let rotated = std::fs::read_to_string(logs.join("manager.log.1")).unwrap();
    assert_eq!(rotated.matches("reopened").count(), 1, "{rotated}");
}

/// examples/systemd/*.service pass `systemd-analyze verify` (pointed at this
/// build's binary through the symlink each names).
#[test]
fn the_example_systemd_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/systemd");
    let mut units = Vec::new();
    for role in ["manager", "server", "gateway", "local"] {
        let name = format!("kumo-{role}");
        let link = symlinked(dir.path(), &name);
        let text = std::fs::read_to_string(examples.join(format!("{name}.service"))).unwrap();
        let installed = format!("/usr/local/bin/{name}");
        assert!(text.contains(&installed), "{name}.service runs {installed}");
        let unit = dir.path().join(format!("{name}.service"));
        std::fs::write(&unit, text.replace(&installed, link.to_str().unwrap())).unwrap();
        units.push(unit);
    }
    let (code, out, err) = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(&units));
    assert!(code == 0 && err.trim().is_empty(), "{out}{err}");
}

/// `make static` builds a kumo that starts in an empty root (a chroot holding the
/// binary alone), and finds a manager there by a name from its /etc/hosts.
#[test]
fn a_static_build_runs_in_an_empty_root_and_reads_etc_hosts() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: chroot is not possible, the static build is not checked");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // A target directory of its own: the suite's own build holds `target`.
    let target = root.join("target/static");
    let (code, out, err) = run(Command::new("make")
        .arg("-s")
        .arg("static")
        .current_dir(root)
        .env("CARGO_TARGET_DIR", &target));
    assert_eq!(code, 0, "{out}{err}");
    let built = out
        .lines()
        .find_map(|l| l.strip_prefix("static binary: "))
        .expect("the path");
    let jail = tempfile::tempdir().unwrap();
    std::fs::copy(built, jail.path().join("kumo")).unwrap();
    let in_jail = |args: &[&str]| {
        run(Command::new("chroot")
            .arg(jail.path())
            .arg("/kumo")
            .args(args))
    };
    let (code, out, err) = in_jail(&["--version"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("kumo "), "{out}");
    let port = free_port();
    let _m = spawn(
        jail.path(),
        "manager",
        &["manager", "-l", &format!("127.0.0.1:{port}")],
    );
    wait_rpc_ready_method(local(port), "GetNodesInfo");
    let (code, _, err) = in_jail(&["ctl", &format!("svr1:{port}"), "status"]);
    assert_ne!(code, 0, "no /etc/hosts yet: {err}");
    let (code, out, err) = in_jail(&["ctl", &format!("localhost:{port}"), "status"]);
    assert_eq!(code, 0, "localhost needs no file: {err}");
    assert!(out.contains("hash space timestamp"), "{out}");
    std::fs::create_dir(jail.path().join("etc")).unwrap();
    std::fs::write(
        jail.path().join("etc/hosts"),
        "# the jail's hosts\n127.0.0.1 svr1 svr1.example\n",
    )
    .unwrap();
    let (code, out, err) = in_jail(&["ctl", &format!("svr1:{port}"), "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hash space timestamp"), "{out}");
}

#[test]
fn daemon_mode_detaches_and_writes_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pidfile = dir.path().join("srv.pid");
    let (code, _, err) = run(Command::new(kumo_bin()).args([
        "server",
        "-d",
        pidfile.to_str().unwrap(),
        "-o",
        dir.path().join("d.log").to_str().unwrap(),
        "-m",
        "127.0.0.1:9",
        "-L",
        &free_port().to_string(),
        "-s",
        dir.path().join("db").to_str().unwrap(),
        "-l",
        &format!("127.0.0.1:{port}"),
    ]));
    assert_eq!(code, 0, "{err}");
    wait_until(std::time::Duration::from_secs(10), "the pid file", || {
        pidfile.exists()
    });
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_rpc_ready(local(port));
    let reported = rpc(local(port), "GetStatus", &[Value::from("pid")]).unwrap();
    // SIGTERM the daemon before asserting, so a failure leaves nothing behind.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(reported, Value::from(pid as u32));
    wait_until(
        std::time::Duration::from_secs(10),
        "the daemon to exit",
        || unsafe { libc::kill(pid, 0) } != 0,
    );
}

/// Every command kumoctl, kumostat and kumohash accept is in their --help.
#[test]
fn tool_commands_are_all_in_help() {
    let help = |tool: &str| run(Command::new(kumo_bin()).args([tool, "--help"])).1;
    let ctl = help("ctl");
    for c in [
        "status",
        "attach",
        "attach-noreplace",
        "detach",
        "detach-noreplace",
        "replace",
        "full-replace",
        "backup",
        "enable-auto-replace",
        "disable-auto-replace",
    ] {
        assert!(
            ctl.lines()
                .any(|l| l.trim_start().starts_with(&format!("{c} "))),
            "kumoctl --help lacks {c}"
        );
    }
    let stat = help("stat");
    for c in [
        "pid",
        "uptime",
        "time",
        "version",
        "cmd_get",
        "cmd_set",
        "cmd_delete",
        "items",
        "stats",
        "whs",
        "rhs",
        "hscheck",
        "replstat",
        "set_delay",
        "unset_delay",
    ] {
        assert!(
            stat.lines()
                .any(|l| l.trim_start().starts_with(&format!("{c} "))),
            "kumostat --help lacks {c}"
        );
    }
    let hash = help("hash");
    for c in ["hash", "assign", "dump"] {
        assert!(
            hash.lines()
                .any(|l| l.trim_start().starts_with(&format!("{c} "))),
            "kumohash --help lacks {c}"
        );
    }
}

/// The design card fixes the runtime dependencies: exactly these crates, nothing
/// else in `[dependencies]` (dev-dependencies are free).
#[test]
fn the_runtime_dependencies_are_the_design_cards() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let mut section = "";
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[dependencies]" && !line.is_empty() && !line.starts_with('#') {
            deps.push(line.split(['=', ' ']).next().unwrap().to_string());
        }
    }
    deps.sort();
    assert_eq!(
        deps,
        [
            "crc32fast",
            "env_logger",
            "lexopt",
            "libc",
            "log",
            "mio",
            "rmpv",
            "sha1_smol"
        ]
    );
}
