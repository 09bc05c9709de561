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
