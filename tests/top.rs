//! kumotop against a running cluster: one frame as text and as JSON, and the
//! screen in a real terminal (tmux): it refreshes, shows a killed server as down,
//! and quits on `q` and on Ctrl-C, giving the terminal back.

mod common;

use common::load::Load;
use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn one_frame_shows_every_server_with_its_rates() {
    let mut c = Cluster::start(3);
    let load = Load::start(c.gateway_addr, 2, 500);
    let m = c.manager_at(0).to_string();
    let (code, out, err) = run(&["top", "--once", "-i", "0.5", "-m", &m]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("kumotop ") && lines[0].ends_with("3 servers, 3 up"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("SERVER") && lines[1].contains("SET/s"),
        "{out}"
    );
    for s in &c.servers {
        let row = lines
            .iter()
            .find(|l| l.starts_with(&s.addr.to_string()))
            .expect("a row per server");
        assert!(row.contains(" up ") && row.ends_with("ready"), "{row}");
    }
    // Under load, somebody stores something every interval.
    let storing = |l: &&str| {
        let set = l.split_whitespace().nth(3).unwrap_or("-");
        set != "0" && set.trim_end_matches(['k', 'M']).parse::<f64>().is_ok()
    };
    assert!(lines[2..].iter().any(storing), "{out}");
    let (_, _, _, wrong) = load.stop();
    assert_eq!(wrong, 0, "the load read a wrong value");

    // A server that is gone is down, with why; the rest still show.
    let gone = c.servers[1].addr.to_string();
    c.kill_server(1);
    let addrs: Vec<String> = c.servers.iter().map(|s| s.addr.to_string()).collect();
    let mut args = vec!["top", "--json", "-i", "0.2"];
    args.extend(addrs.iter().map(String::as_str));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("{\"time\":") && out.trim_end().ends_with("]}"),
        "{out}"
    );
    assert_eq!(out.matches("\"up\":true").count(), 2, "{out}");
    assert!(
        out.contains(&format!("{{\"server\":\"{gone}\",\"up\":false,\"error\":")),
        "{out}"
    );
    // Nobody answers: a failure.
    let (code, _, _) = run(&["top", "--once", "-i", "0.1", &gone]);
    assert_eq!(code, 1);
    // Usage errors.
    assert_eq!(run(&["top"]).0, 2);
    assert_eq!(run(&["top", "-m", &m, &addrs[0]]).0, 2);
}

/// tmux on a socket of its own, with a session running `command`.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `command` in a new session; when it ends, the shell prints its exit
    /// status on the same terminal and waits, so that the screen can be read.
    fn start(command: &str) -> Tmux {
        let t = Tmux {
            socket: format!("kumotop-test-{}", free_port()),
        };
        let shell = format!("{command}; echo kumotop-exit=$?; sleep 600");
        let ok = t
            .cmd(&[
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "top",
                "-x",
                "150",
                "-y",
                "20",
                "sh",
                "-c",
                &shell,
            ])
            .status
            .success();
        assert!(ok, "tmux cannot start");
        t
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    fn wait_screen(&self, what: &str, check: impl Fn(&str) -> bool) {
        wait_until(Duration::from_secs(20), what, || check(&self.screen()));
    }

    /// Sends `key`, then waits for kumotop to exit; its exit status.
    fn quit_with(&self, key: &str) -> String {
        self.cmd(&["send-keys", "-t", "top", key]);
        self.wait_screen("kumotop to exit", |s| s.contains("kumotop-exit="));
        let screen = self.screen();
        let at = screen.find("kumotop-exit=").unwrap() + "kumotop-exit=".len();
        screen[at..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn the_screen_refreshes_follows_a_lost_server_and_quits_cleanly() {
    let mut c = Cluster::start(3);
    let m = c.manager_at(0).to_string();
    let bin = kumo_bin().display().to_string();
    let t = Tmux::start(&format!("{bin} top -i 0.3 -m {m}"));
    t.wait_screen("a frame with three servers up", |s| {
        s.contains("3 servers, 3 up")
    });
    let first = t.screen();
    assert!(
        first.contains("SERVER") && first.matches(" up ").count() >= 3,
        "{first}"
    );
    // It refreshes: the clock in the heading moves on.
    let heading = first.lines().next().unwrap_or("").to_string();
    t.wait_screen("the next frames", |s| {
        s.lines().next().unwrap_or("") != heading
    });
    // A server goes away; the screen says so and goes on.
    let gone = c.servers[2].addr.to_string();
    c.kill_server(2);
    t.wait_screen("the lost server shown down", |s| {
        s.lines()
            .any(|l| l.starts_with(&gone) && l.contains("down"))
    });
    assert_eq!(t.quit_with("q"), "0");
    // The alternate screen is gone: what kumotop drew is not left behind.
    let after = t.screen();
    assert!(
        !after.contains("SERVER"),
        "the terminal was not restored: {after}"
    );

    let t = Tmux::start(&format!("{bin} top -i 0.3 -m {m}"));
    t.wait_screen("a frame", |s| s.contains("SERVER"));
    assert_eq!(t.quit_with("C-c"), "0");
    assert!(!t.screen().contains("SERVER"));
}
