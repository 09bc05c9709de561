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
mod help;
pub mod hosts;
pub mod man;
mod man_text;
mod man_tools;
pub mod options;

pub use help::{help, top_help};

pub use options::OptionList;
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
    Top,
    Log,
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
        Role::Top,
        Role::Log,
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
            Role::Top => "kumotop",
            Role::Log => "kumolog",
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
            Role::Top => "top",
            Role::Log => "log",
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
            Role::Top => "watch every server of a cluster, refreshed like top",
            Role::Log => "print a binary log (-g) as text",
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
            Role::Top => "SERVER[:PORT]... | -m MANAGER[:PORT]",
            Role::Log => "FILE | -",
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
    /// The value given (or defaulted) for the option named `long`.
    pub fn get(&self, long: &str) -> Option<&Value> {
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

/// Parses the arguments of `role` (without the program name) by its options.
pub fn parse(role: Role, list: OptionList, args: Vec<OsString>) -> Result<Args, Stop> {
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
    let opts: Vec<&'static Opt> = options::each(list).collect();
    loop {
        let arg = match parser.next() {
            Ok(Some(a)) => a,
            Ok(None) => break,
            Err(e) => return Err(Stop::Usage(e.to_string())),
        };
        let (opt, attached) = match arg {
            // kumolog's -h is --head, as the guide has it; --help still works.
            Arg::Long("help") => return Err(Stop::Help(help(role, list))),
            Arg::Short('h') if !opts.iter().any(|o| o.short == Some("h")) => {
                return Err(Stop::Help(help(role, list)))
            }
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

/// The command line, start to end: picks the role from argv[0] or the first word,
/// parses its options, answers `--help` and `--version`, and hands the role and
/// its arguments to `run` (the dispatch at the top, which knows the roles; this
/// library of options knows none). Returns the process exit status.
pub fn start(
    mut argv: Vec<OsString>,
    options_of: fn(Role) -> OptionList,
    run: impl FnOnce(Role, Args) -> i32,
) -> i32 {
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
    match parse(role, options_of(role), argv) {
        Ok(args) => run(role, args),
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
    use super::edit_distance;

    #[test]
    fn edit_distance_is_levenshtein() {
        assert_eq!(edit_distance("lsten", "listen"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
