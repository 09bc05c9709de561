//! The command line of every role, parsed and explained by the cli library from
//! the role's own option list, without running the role; and the man pages.

use super::options_of;
use crate::cli::man::{esc, page};
use crate::cli::options::{self, parse_value, Kind, Value};
use crate::cli::{help, Role, Stop};
use std::ffi::OsString;
use std::time::Duration;

fn parse(role: Role, args: Vec<OsString>) -> Result<crate::cli::Args, Stop> {
    crate::cli::parse(role, options_of(role), args)
}

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

fn usage(role: Role, list: &[&str]) -> String {
    match parse(role, args(list)) {
        Err(Stop::Usage(m)) => m,
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn every_option_parses_in_short_and_long_form() {
    for role in Role::ALL {
        let required: Vec<String> = options::each(options_of(*role))
            .filter(|o| o.required)
            .flat_map(|o| [format!("--{}", o.long), sample(o.kind).to_string()])
            .collect();
        for o in options::each(options_of(*role)) {
            let forms = [
                o.short.map(|s| format!("-{s}")),
                Some(format!("--{}", o.long)),
            ];
            for form in forms.into_iter().flatten() {
                let mut list: Vec<String> = required.clone();
                list.push(form.clone());
                if o.kind != Kind::Switch {
                    list.push(sample(o.kind).into());
                }
                let parsed = parse(*role, list.iter().map(OsString::from).collect())
                    .unwrap_or_else(|e| panic!("{form}: {e:?}"));
                let want = if o.kind == Kind::Switch {
                    Value::Switch(true)
                } else {
                    options::parse_value(o.kind, sample(o.kind)).unwrap()
                };
                assert_eq!(parsed.get(o.long), Some(&want), "{form}");
            }
        }
    }
}

fn sample(kind: Kind) -> &'static str {
    match kind {
        Kind::Address { .. } | Kind::Listen { .. } => "127.0.0.1:4000",
        Kind::Port => "4001",
        Kind::Seconds => "2.5",
        Kind::Count => "7",
        Kind::Size => "4k",
        Kind::StorePath => "/tmp/x#sync=none",
        Kind::Path => "/tmp/p",
        Kind::Text => "t",
        Kind::Switch => "",
    }
}

#[test]
fn multi_letter_short_options_take_the_next_word() {
    let a = parse(
        Role::Server,
        args(&[
            "-s",
            "x",
            "-m",
            "127.0.0.1",
            "-l",
            "127.0.0.1",
            "-gS",
            "100",
            "-TR",
            "8",
            "-Ys",
            "2.5",
            "-TW",
            "3",
        ]),
    )
    .unwrap();
    assert_eq!(a.count("worker-threads"), 8);
    assert_eq!(a.count("sender-threads"), 3);
    assert_eq!(a.seconds("connect-timeout"), Duration::from_millis(2500));
    assert_eq!(a.count("garbage-mem-limit"), 100);
    assert_eq!(a.addr("listen"), "127.0.0.1:19800".parse().unwrap());
    let a = parse(
        Role::Server,
        args(&["-m", "127.0.0.1", "-s", "/tmp/x", "-l127.0.0.2:5"]),
    )
    .unwrap();
    assert_eq!(a.addr("listen"), "127.0.0.2:5".parse().unwrap());
    let a = parse(
        Role::Server,
        args(&["-mlocalhost", "-s", "/tmp/x", "--listen=127.0.0.3"]),
    )
    .unwrap();
    assert_eq!(a.addr("listen"), "127.0.0.3:19800".parse().unwrap());
}

#[test]
fn defaults_fill_in() {
    let a = parse(
        Role::Server,
        args(&["-s", "/tmp/x", "-l", "127.0.0.1", "-m", "127.0.0.1"]),
    )
    .unwrap();
    assert_eq!(a.count("connect-retry-limit"), 4);
    assert_eq!(a.addr("manager1"), "127.0.0.1:19700".parse().unwrap());
    assert_eq!(a.port("stream-listen"), 19900);
    let g = parse(Role::Gateway, args(&["-m", "127.0.0.1"])).unwrap();
    assert_eq!(g.size("max-item-size"), 1 << 20);
    // Neither -t nor -b: the text protocol on 11211. -b alone: binary only.
    let c = crate::gateway::Config::from_args(&g);
    assert_eq!(c.memcache_text, Some("0.0.0.0:11211".parse().unwrap()));
    assert_eq!(c.memcache_binary, None);
    let b = parse(Role::Gateway, args(&["-m", "127.0.0.1", "-b", "11311"])).unwrap();
    let c = crate::gateway::Config::from_args(&b);
    assert_eq!(c.memcache_text, None);
    assert_eq!(c.memcache_binary, Some("0.0.0.0:11311".parse().unwrap()));
    let h = parse(Role::Hash, args(&["a", "b", "--", "assign", "k"])).unwrap();
    assert_eq!((h.positional.len(), h.before_dashdash), (4, Some(2)));
    assert_eq!(a.seconds("clock-interval"), Duration::from_secs(2));
    assert!(!a.switch("verbose"));
    assert_eq!(a.opt_path("log"), None);
}

#[test]
fn errors_name_the_option_and_the_expected_form() {
    assert_eq!(
        usage(Role::Server, &["--lsten", "x"]),
        "unrecognized option '--lsten' (similar: --listen)"
    );
    assert_eq!(
        usage(Role::Server, &["-TQ", "1"]),
        "unrecognized option '-TQ' (similar: -TR)"
    );
    assert_eq!(
        usage(Role::Server, &["--zzzzzzzz"]),
        "unrecognized option '--zzzzzzzz'"
    );
    let m = usage(Role::Server, &[]);
    assert!(
        m.starts_with("missing required option -l/--listen ADDRESS"),
        "{m}"
    );
    let m = usage(Role::Server, &["-s", "x", "-l", "127.0.0.1", "-TR", "many"]);
    assert_eq!(
        m,
        "invalid value 'many' for -TR/--worker-threads: expected a whole number such as 8"
    );
    let m = usage(Role::Server, &["-s", "x", "-l", "127.0.0.1", "-Ys"]);
    assert!(
        m.starts_with("option -Ys/--connect-timeout needs a value"),
        "{m}"
    );
    let m = usage(Role::Server, &["-s", "x", "-l", "127.0.0.1:notaport"]);
    assert!(m.contains("-l/--listen") && m.contains("host:port"), "{m}");
}

#[test]
fn help_lists_every_option_of_the_role() {
    let h = help(Role::Server, options_of(Role::Server));
    for o in options::each(options_of(Role::Server)) {
        assert!(h.contains(&format!("--{}", o.long)), "{}", o.long);
    }
    assert!(matches!(
        parse(Role::Server, args(&["--help"])),
        Err(Stop::Help(_))
    ));
}

/// The committed pages must be what the table produces. `make man` regenerates
/// them (it runs this test with KUMO_WRITE_MAN=1).
#[test]
fn man_pages_in_the_tree_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let write = std::env::var_os("KUMO_WRITE_MAN").is_some();
    for (name, content) in super::man_pages() {
        let path = dir.join(&name);
        if write {
            std::fs::write(&path, &content).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(on_disk == content, "man/{name} is stale: run `make man`");
    }
}

#[test]
fn every_option_is_in_its_page() {
    for r in Role::ALL {
        let p = page(*r, options_of(*r));
        for o in options::each(options_of(*r)) {
            assert!(
                p.contains(&format!("\\-\\-{}", esc(o.long))),
                "{} lacks --{}",
                r.program(),
                o.long
            );
        }
    }
}

#[test]
fn every_entry_is_well_formed_and_unique_per_role() {
    for role in Role::ALL {
        let opts: Vec<_> = options::each(options_of(*role)).collect();
        for (i, a) in opts.iter().enumerate() {
            assert!(
                !a.help.is_empty() && a.help.ends_with('.'),
                "{} help",
                a.long
            );
            if let Some(d) = a.default {
                parse_value(a.kind, d).unwrap_or_else(|e| panic!("default of {}: {e}", a.long));
            }
            assert!(
                !(a.required && a.default.is_some()),
                "{} required with default",
                a.long
            );
            for b in &opts[i + 1..] {
                assert_ne!(a.long, b.long, "{role:?}");
                assert!(
                    a.short.is_none() || a.short != b.short,
                    "{role:?} -{:?}",
                    a.short
                );
            }
        }
    }
}
