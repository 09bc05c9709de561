//! tests/peers.sh, the script `make test` runs first: it reads tests/peers.list, reports
//! what is missing and installs it, or says what to install by hand. A clean machine is not
//! available here, so each test runs the script with a PATH that hides the real peers and
//! holds only stand-ins made for the test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers.sh")
}

/// The peers of `group` as the list names them: (name, check, apt package, pip package).
fn listed(group: &str) -> Vec<(String, String, String, String)> {
    let list =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers.list"))
            .unwrap();
    let mut out: Vec<(String, String, String, String)> = Vec::new();
    for line in list.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() || f[0].starts_with('#') || f[0] != group {
            continue;
        }
        assert!(f.len() >= 6, "peers.list line without a reason: {line}");
        if !out.iter().any(|p| p.0 == f[1]) {
            out.push((f[1].into(), f[2].into(), f[3].into(), f[4].into()));
        }
    }
    out
}

/// A directory to use as the whole PATH, holding stand-in programs.
struct FakePath(tempfile::TempDir);

impl FakePath {
    fn new() -> FakePath {
        FakePath(tempfile::tempdir().unwrap())
    }
    /// A program `name` on the fake PATH that runs `body` under /bin/sh.
    fn program(&self, name: &str, body: &str) -> &FakePath {
        let p = self.0.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new("/bin/bash")
            .arg(script())
            .args(args)
            .env("PATH", self.0.path())
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_list_names_the_suites_peers_and_the_readme_names_the_list() {
    let test = listed("test");
    let names: Vec<&str> = test.iter().map(|p| p.0.as_str()).collect();
    assert!(
        names.contains(&"memcached") && names.contains(&"msgpack"),
        "{names:?}"
    );
    for (name, check, apt, pip) in &test {
        assert!(
            check.starts_with("cmd:") || check.starts_with("py:"),
            "{name}: {check}"
        );
        assert!(
            apt != "-" || pip != "-",
            "{name} has no way to be installed"
        );
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains("tests/peers.list"),
        "README does not name tests/peers.list"
    );
}

#[test]
fn check_reports_every_hidden_peer_with_its_install_command() {
    let path = FakePath::new();
    let o = path.run(&["--check", "test"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for (name, check, apt, pip) in listed("test") {
        let how = if check.starts_with("py:") {
            format!("python3 -m pip install {pip}")
        } else {
            format!("apt-get install -y {apt}")
        };
        assert!(
            out.contains(&format!("missing {name} (install: {how})")),
            "{name}: {out}"
        );
    }
}

#[test]
fn check_sees_a_python_without_the_module_and_a_program_that_is_there() {
    let path = FakePath::new();
    path.program("memcached", "exit 0");
    // A python3 that has no module at all: every `import` fails.
    path.program("python3", "exit 1");
    let o = path.run(&["--check", "test"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("missing msgpack"), "{out}");
    assert!(!out.contains("missing memcached"), "{out}");
}

#[test]
fn every_peer_present_is_one_line_and_success() {
    let path = FakePath::new();
    for (_, check, _, _) in listed("test") {
        if let Some(cmd) = check.strip_prefix("cmd:") {
            path.program(cmd, "exit 0");
        }
    }
    path.program("python3", "exit 0");
    for args in [&["--check", "test"][..], &["test"][..]] {
        let o = path.run(args);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {out}");
        assert_eq!(out.lines().count(), 1, "{out}");
        let n = listed("test").len();
        assert!(
            out.contains(&format!("all {n} test peers are present")),
            "{out}"
        );
    }
}

#[test]
fn without_a_package_manager_it_says_what_to_install_by_hand_and_fails() {
    let path = FakePath::new();
    // apt-get and python3 are hidden: nothing can be installed.
    let o = path.run(&["test"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("apt-get is not on PATH"), "{out}");
    assert!(out.contains("python3 is not on PATH"), "{out}");
    assert!(out.contains("Install them by hand"), "{out}");
    assert!(out.contains("apt-get install -y memcached"), "{out}");
    assert!(out.contains("python3 -m pip install msgpack"), "{out}");
}

#[test]
fn a_failing_install_is_retried_once_after_apt_get_update() {
    let path = FakePath::new();
    let log = path.0.path().join("apt.log");
    let log = log.display();
    // An apt-get whose first install fails (stale lists) and whose install after an update
    // puts every listed program on the PATH. A python3 that has every module.
    let dir = path.0.path().display().to_string();
    let installs: String = listed("test")
        .iter()
        .filter_map(|(_, check, _, _)| check.strip_prefix("cmd:"))
        .map(|cmd| {
            format!(
                "printf '#!/bin/sh\\nexit 0\\n' > {dir}/{cmd}\n\
                 /bin/chmod +x {dir}/{cmd}\n"
            )
        })
        .collect();
    path.program(
        "apt-get",
        &format!(
            "echo \"$*\" >> {log}\n\
             case \"$*\" in\n\
             *update*) : > {log}.updated ;;\n\
             *install*) [ -e {log}.updated ] || exit 100\n\
                {installs} ;;\n\
             esac"
        ),
    );
    path.program("python3", "exit 0");
    if unsafe { libc::geteuid() } != 0 {
        // apt-get is only used as root or through a password-less sudo.
        path.program("sudo", "[ \"$1\" = -n ] && shift; exec \"$@\"");
    }
    let o = path.run(&["test"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("installed memcached (apt)"), "{out}");
    let calls = std::fs::read_to_string(path.0.path().join("apt.log")).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    // The first install fails, the update runs once, then each program's install.
    let programs = listed("test")
        .iter()
        .filter(|(_, check, _, _)| check.starts_with("cmd:"))
        .count();
    assert_eq!(
        calls.len(),
        2 + programs,
        "install, update, installs: {calls:?}"
    );
    assert!(
        calls[0].contains("install") && calls[1].contains("update"),
        "{calls:?}"
    );
    assert!(
        calls[2..].iter().all(|c| c.contains("install")),
        "{calls:?}"
    );
}

#[test]
fn a_wrong_option_or_no_group_is_refused() {
    let path = FakePath::new();
    assert_eq!(path.run(&["--nosuch", "test"]).status.code(), Some(2));
    assert_eq!(path.run(&[]).status.code(), Some(2));
}
