//! The command line as a library: which role to run, and its options. It knows no
//! role's code; [`crate::dispatch`] runs the role it names.
//!
//! `kumo` picks its role from the basename of argv[0] (`kumo-server`, installed as a
//! symlink) or from its first argument (`kumo server ...`). Options come from the one
//! table in [`options`]; `--help` and the man pages ([`man`]) are generated from it.
//!
//! Exit status: 0 success, 1 a runtime failure (a peer unreachable, a store that will
//! not open), 2 a usage error (an unknown option, a bad value, a missing argument).

pub mod commands;
pub mod man;
pub mod options;

use options::{Kind, Opt, Value};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// The roles this binary can play. A role appears here only once it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Manager,
    Server,
    Gateway,
    Ctl,
    Stat,
    Hash,
    MergeDb,
    Local,
}

impl Role {
    pub const ALL: &'static [Role] = &[
        Role::Local,
        Role::Manager,
        Role::Server,
        Role::Gateway,
        Role::Ctl,
        Role::Stat,
        Role::Hash,
        Role::MergeDb,
    ];

    /// The installed name, also the symlink name.
    pub fn program(self) -> &'static str {
        match self {
            Role::Manager => "kumo-manager",
            Role::Server => "kumo-server",
            Role::Gateway => "kumo-gateway",
            Role::Ctl => "kumoctl",
            Role::Stat => "kumostat",
            Role::Hash => "kumohash",
            Role::MergeDb => "kumomergedb",
            Role::Local => "kumo-local",
        }
    }

    /// The name after `kumo` (`kumo server`).
    pub fn subcommand(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Server => "server",
            Role::Gateway => "gateway",
            Role::Ctl => "ctl",
            Role::Stat => "stat",
            Role::Hash => "hash",
            Role::MergeDb => "mergedb",
            Role::Local => "local",
        }
    }

    /// One line for `kumo --help` and the man page NAME section.
    pub fn summary(self) -> &'static str {
        match self {
            Role::Manager => "cluster manager: keeps the server list and the hash spaces",
            Role::Server => "storage node: keeps data, coordinates and replicates writes",
            Role::Gateway => "memcached protocol front end that routes requests to servers",
            Role::Ctl => "control a cluster through its manager",
            Role::Stat => "show the status and counters of servers",
            Role::Hash => "show where keys are placed on the hash ring",
            Role::MergeDb => "merge stores or backups into one, newer ClockTime wins",
            Role::Local => "run a whole cluster on 127.0.0.1: a manager, servers and a gateway",
        }
    }

    /// Positional arguments shown after the options in the usage line.
    pub fn positional_usage(self) -> &'static str {
        match self {
            Role::Ctl => "MANAGER[:PORT] COMMAND [ARG]",
            Role::Stat => "SERVER[:PORT] COMMAND | -m MANAGER COMMAND",
            Role::Hash => "SERVER[:PORT]... -- COMMAND [KEY...] | -m MANAGER COMMAND [KEY...]",
            Role::MergeDb => "DST SRC...",
            _ => "",
        }
    }

    /// The commands a tool takes after its addresses, with their help.
    pub fn commands(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Role::Ctl => commands::CTL,
            Role::Stat => commands::STAT,
            Role::Hash => commands::HASH,
            _ => &[],
        }
    }

    /// Daemons ignore SIGPIPE; tools die of it quietly.
    pub fn is_daemon(self) -> bool {
        matches!(
            self,
            Role::Manager | Role::Server | Role::Gateway | Role::Local
        )
    }

    fn from_program(name: &str) -> Option<Role> {
        Role::ALL.iter().copied().find(|r| r.program() == name)
    }

    fn from_subcommand(name: &str) -> Option<Role> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.subcommand() == name || r.program() == name)
    }
}

/// The parsed command line of one role, with defaults filled in.
#[derive(Debug)]
pub struct Args {
    pub role: Role,
    values: Vec<(&'static Opt, Value)>,
    pub positional: Vec<String>,
    /// How many positional arguments came before a literal `--`, if one was given.
    pub before_dashdash: Option<usize>,
}

impl Args {
    fn get(&self, long: &str) -> Option<&Value> {
        self.values
            .iter()
            .rev()
            .find(|(o, _)| o.long == long)
            .map(|(_, v)| v)
    }

    fn expect<T>(&self, long: &str, pick: impl Fn(&Value) -> Option<T>) -> T {
        let v = self
            .get(long)
            .unwrap_or_else(|| panic!("option --{long} has no value and no default"));
        pick(v).unwrap_or_else(|| panic!("option --{long} has another kind: {v:?}"))
    }

    pub fn addr(&self, long: &str) -> SocketAddr {
        self.expect(long, |v| {
            if let Value::Addr(a) = v {
                Some(*a)
            } else {
                None
            }
        })
    }
    pub fn opt_addr(&self, long: &str) -> Option<SocketAddr> {
        self.get(long).map(|_| self.addr(long))
    }
    pub fn seconds(&self, long: &str) -> Duration {
        self.expect(long, |v| {
            if let Value::Seconds(d) = v {
                Some(*d)
            } else {
                None
            }
        })
    }
    pub fn count(&self, long: &str) -> u64 {
        self.expect(long, |v| {
            if let Value::Count(n) = v {
                Some(*n)
            } else {
                None
            }
        })
    }
    pub fn size(&self, long: &str) -> u64 {
        self.expect(long, |v| {
            if let Value::Size(n) = v {
                Some(*n)
            } else {
                None
            }
        })
    }
    pub fn port(&self, long: &str) -> u16 {
        self.expect(long, |v| {
            if let Value::Port(n) = v {
                Some(*n)
            } else {
                None
            }
        })
    }
    pub fn opt_path(&self, long: &str) -> Option<PathBuf> {
        self.get(long).map(|v| match v {
            Value::Path(p) => p.clone(),
            other => panic!("option --{long} has another kind: {other:?}"),
        })
    }
    pub fn switch(&self, long: &str) -> bool {
        matches!(self.get(long), Some(Value::Switch(true)))
    }
    pub fn store(&self, long: &str) -> (PathBuf, Vec<(String, String)>) {
        self.expect(long, |v| match v {
            Value::Store { path, params } => Some((path.clone(), params.clone())),
            _ => None,
        })
    }
    pub fn text(&self, long: &str) -> Option<String> {
        self.get(long).map(|v| match v {
            Value::Text(t) => t.clone(),
            other => panic!("option --{long} has another kind: {other:?}"),
        })
    }
}

/// What stops a parse short of a runnable role.
#[derive(Debug, PartialEq)]
pub enum Stop {
    /// `--help`: print this and exit 0.
    Help(String),
    /// `--version`.
    Version,
    /// A usage error: print this, a hint, and exit 2.
    Usage(String),
}

/// Parses the arguments of `role` (without the program name).
pub fn parse(role: Role, args: Vec<OsString>) -> Result<Args, Stop> {
    use lexopt::Arg;
    // Everything after a literal `--` is positional, and where it started matters
    // (kumohash SERVER... -- COMMAND).
    let mut args = args;
    let tail = match args.iter().position(|a| a == "--") {
        Some(i) => {
            let tail: Vec<OsString> = args.split_off(i).into_iter().skip(1).collect();
            Some(tail)
        }
        None => None,
    };
    let mut parser = lexopt::Parser::from_args(args);
    let mut values: Vec<(&'static Opt, Value)> = Vec::new();
    let mut positional = Vec::new();
    let opts: Vec<&'static Opt> = options::for_role(role).collect();
    loop {
        let arg = match parser.next() {
            Ok(Some(a)) => a,
            Ok(None) => break,
            Err(e) => return Err(Stop::Usage(e.to_string())),
        };
        let (opt, attached) = match arg {
            Arg::Long("help") | Arg::Short('h') => return Err(Stop::Help(help(role))),
            Arg::Long("version") => return Err(Stop::Version),
            Arg::Long(name) => {
                let name = name.to_string();
                match opts.iter().find(|o| o.long == name) {
                    Some(o) => (*o, None),
                    None => return Err(Stop::Usage(unrecognized(&format!("--{name}"), &opts))),
                }
            }
            Arg::Short(c) => {
                // The guide's multi-letter short options (-TR, -gS) arrive as one letter
                // followed by the rest of the word; a single-letter option may also
                // carry its value attached (-l127.0.0.1).
                let rest = match parser.optional_value() {
                    Some(r) => Some(r.into_string().map_err(|r| {
                        Stop::Usage(format!(
                            "option -{c}{} is not valid UTF-8",
                            r.to_string_lossy()
                        ))
                    })?),
                    None => None,
                };
                let whole = format!("{c}{}", rest.as_deref().unwrap_or(""));
                if let Some(o) = opts.iter().find(|o| o.short == Some(whole.as_str())) {
                    (*o, None)
                } else if let Some(o) = opts
                    .iter()
                    .find(|o| o.short == Some(&whole[..c.len_utf8()]) && o.kind != Kind::Switch)
                {
                    (*o, rest)
                } else {
                    return Err(Stop::Usage(unrecognized(&format!("-{whole}"), &opts)));
                }
            }
            Arg::Value(v) => {
                let v = v.into_string().map_err(|v| {
                    Stop::Usage(format!(
                        "argument '{}' is not valid UTF-8",
                        v.to_string_lossy()
                    ))
                })?;
                positional.push(v);
                continue;
            }
        };
        let value = if opt.kind == Kind::Switch {
            Value::Switch(true)
        } else {
            let text = match attached {
                Some(t) => t,
                None => match parser.value() {
                    Ok(v) => v.into_string().map_err(|v| {
                        Stop::Usage(format!(
                            "value '{}' of {} is not valid UTF-8",
                            v.to_string_lossy(),
                            names(opt)
                        ))
                    })?,
                    Err(_) => {
                        return Err(Stop::Usage(format!(
                            "option {} needs a value: {}",
                            names(opt),
                            opt.kind.expected()
                        )))
                    }
                },
            };
            options::parse_value(opt.kind, &text).map_err(|why| {
                Stop::Usage(format!(
                    "invalid value '{text}' for {}: expected {why}",
                    names(opt)
                ))
            })?
        };
        values.push((opt, value));
    }
    for opt in &opts {
        if values.iter().any(|(o, _)| o.long == opt.long) {
            continue;
        }
        if opt.required {
            return Err(Stop::Usage(format!(
                "missing required option {} {}: {}",
                names(opt),
                opt.kind.placeholder(),
                opt.kind.expected()
            )));
        }
        if let Some(d) = opt.default {
            let v = options::parse_value(opt.kind, d).expect("defaults are checked by a unit test");
            values.push((opt, v));
        }
    }
    let before_dashdash = tail.as_ref().map(|_| positional.len());
    for t in tail.into_iter().flatten() {
        positional.push(t.into_string().map_err(|v| {
            Stop::Usage(format!(
                "argument '{}' is not valid UTF-8",
                v.to_string_lossy()
            ))
        })?);
    }
    Ok(Args {
        role,
        values,
        positional,
        before_dashdash,
    })
}

/// `-l/--listen`, as errors name an option.
fn names(opt: &Opt) -> String {
    match opt.short {
        Some(s) => format!("-{s}/--{}", opt.long),
        None => format!("--{}", opt.long),
    }
}

fn unrecognized(given: &str, opts: &[&'static Opt]) -> String {
    let bare = given.trim_start_matches('-');
    let mut best: Option<(usize, String)> = None;
    for o in opts {
        let mut candidates = vec![(o.long, format!("--{}", o.long))];
        if let Some(s) = o.short {
            candidates.push((s, format!("-{s}")));
        }
        for (name, shown) in candidates {
            let d = edit_distance(bare, name);
            let close = d <= 2.max(name.len() / 3) && d < name.len().max(bare.len());
            if close && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
                best = Some((d, shown));
            }
        }
    }
    match best {
        Some((_, s)) => format!("unrecognized option '{given}' (similar: {s})"),
        None => format!("unrecognized option '{given}'"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The `--help` text of a role.
pub fn help(role: Role) -> String {
    let mut s = format!(
        "{} - {}\n\nUsage: {}",
        role.program(),
        role.summary(),
        role.program()
    );
    for o in options::for_role(role).filter(|o| o.required) {
        s += &format!(" -{} {}", o.short.unwrap_or(o.long), o.kind.placeholder());
    }
    s += " [options]";
    if !role.positional_usage().is_empty() {
        s += " ";
        s += role.positional_usage();
    }
    s += "\n\nOptions:\n";
    for o in options::for_role(role) {
        let mut left = match o.short {
            Some(sh) => format!("  -{sh}, --{}", o.long),
            None => format!("      --{}", o.long),
        };
        if o.kind != Kind::Switch {
            left += " ";
            left += o.kind.placeholder();
        }
        let mut text = o.help.to_string();
        if o.required {
            text += " Required.";
        }
        if let Some(d) = o.default {
            text += &format!(" [default: {d}]");
        }
        s += &format_entry(&left, &text);
    }
    s += &format_entry("  -h, --help", "Print this help and exit.");
    s += &format_entry("      --version", "Print the version and exit.");
    let commands = role.commands();
    if !commands.is_empty() {
        s += "\nCommands:\n";
        for (name, text) in commands {
            s += &format_entry(&format!("  {name}"), text);
        }
    }
    s += &format!("\nSee {}(1) for details.\n", role.program());
    s
}

const HELP_WIDTH: usize = 79;
const HELP_INDENT: usize = 32;

fn format_entry(left: &str, text: &str) -> String {
    let mut out = String::from(left);
    let mut col = left.len();
    if col + 2 > HELP_INDENT {
        out.push('\n');
        col = 0;
    }
    out.push_str(&" ".repeat(HELP_INDENT - col));
    col = HELP_INDENT;
    for word in text.split_whitespace() {
        if col + 1 + word.len() > HELP_WIDTH && col > HELP_INDENT {
            out.push('\n');
            out.push_str(&" ".repeat(HELP_INDENT));
            col = HELP_INDENT;
        } else if col > HELP_INDENT {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
    }
    out.push('\n');
    out
}

/// `kumo --help`: the roles that exist, one line each.
pub fn top_help() -> String {
    let mut s = format!(
        "kumo {VERSION} - a distributed key-value store speaking the memcached protocol\n\n\
         Usage: kumo ROLE [options]\n       \
         kumo-ROLE [options]   (through a symlink; kumoctl, kumostat, kumohash have no dash)\n\nRoles:\n"
    );
    for r in Role::ALL {
        s += &format!(
            "  {:<10} {:<14} {}\n",
            r.subcommand(),
            r.program(),
            r.summary()
        );
    }
    s += "\nRun 'kumo ROLE --help' for the options of a role. See kumo(1).\n";
    s
}

/// The command line, start to end: picks the role from argv[0] or the first word,
/// parses its options, answers `--help` and `--version`, and hands the role and
/// its arguments to `run` (the dispatch at the top, which knows the roles; this
/// library of options knows none). Returns the process exit status.
pub fn start(mut argv: Vec<OsString>, run: impl FnOnce(Role, Args) -> i32) -> i32 {
    let argv0 = if argv.is_empty() {
        OsString::from("kumo")
    } else {
        argv.remove(0)
    };
    let base = std::path::Path::new(&argv0)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kumo".into());
    let role = match Role::from_program(&base) {
        Some(r) => r,
        None => {
            let Some(first) = argv.first().map(|a| a.to_string_lossy().into_owned()) else {
                eprint!("{}", top_help());
                return EXIT_USAGE;
            };
            match first.as_str() {
                "-h" | "--help" | "help" => {
                    print!("{}", top_help());
                    return EXIT_OK;
                }
                "-V" | "--version" | "version" => {
                    println!("kumo {VERSION}");
                    return EXIT_OK;
                }
                _ => {}
            }
            match Role::from_subcommand(&first) {
                Some(r) => {
                    argv.remove(0);
                    r
                }
                None => {
                    let known: Vec<_> = Role::ALL.iter().map(|r| r.subcommand()).collect();
                    eprintln!("kumo: unknown role '{first}' (roles: {})", known.join(", "));
                    eprintln!("Try 'kumo --help' for more information.");
                    return EXIT_USAGE;
                }
            }
        }
    };
    if !role.is_daemon() {
        // A tool piped into `head` should end quietly, not panic on EPIPE.
        // SAFETY: resetting a signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match parse(role, argv) {
        Ok(args) => {
            let keyed = options::OPTIONS
                .iter()
                .any(|o| o.long == "cluster-key" && o.roles.contains(&role));
            if let Some(path) = keyed.then(|| args.opt_path("cluster-key")).flatten() {
                if let Err(e) = crate::net::auth::load(&path) {
                    eprintln!("{}: {e}", role.program());
                    return EXIT_USAGE;
                }
            }
            run(role, args)
        }
        Err(Stop::Help(text)) => {
            print!("{text}");
            EXIT_OK
        }
        Err(Stop::Version) => {
            println!("{} (kumo) {VERSION}", role.program());
            EXIT_OK
        }
        Err(Stop::Usage(msg)) => {
            eprintln!("{}: {msg}", role.program());
            eprintln!("Try '{} --help' for more information.", role.program());
            EXIT_USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let required: Vec<String> = options::for_role(*role)
                .filter(|o| o.required)
                .flat_map(|o| [format!("--{}", o.long), sample(o.kind).to_string()])
                .collect();
            for o in options::for_role(*role) {
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
        assert_eq!(g.addr("memcache-text"), "0.0.0.0:11211".parse().unwrap());
        assert_eq!(g.size("max-item-size"), 1 << 20);
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
        let h = help(Role::Server);
        for o in options::for_role(Role::Server) {
            assert!(h.contains(&format!("--{}", o.long)), "{}", o.long);
        }
        assert!(matches!(
            parse(Role::Server, args(&["--help"])),
            Err(Stop::Help(_))
        ));
    }

    #[test]
    fn edit_distance_is_levenshtein() {
        assert_eq!(edit_distance("lsten", "listen"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
