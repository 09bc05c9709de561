//! Options: what one is (its short name as the kumofs user guide writes it, its long
//! name, its value kind, its default and its help text), how values parse, and the
//! groups of options several roles share. Each role defines its own options and its
//! list ([`OptionList`]) in its module; the parser, `--help` and the man pages are
//! generated from those lists (ripgrep's `Flag` registry, one per role).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

pub const MANAGER_PORT: u16 = 19700;
pub const SERVER_PORT: u16 = 19800;
pub const STREAM_PORT: u16 = 19900;
pub const GATEWAY_TEXT_PORT: u16 = 11211;
/// `--metrics` given a host alone.
pub const METRICS_PORT: u16 = 9750;

/// What an option's value looks like, and how it is parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// `host`, `host:port`, `ip:port` or `[v6]:port`; `port` fills in a missing port.
    Address { port: u16 },
    /// Like `Address`, and a bare `port` or `:port` means every interface.
    Listen { port: u16 },
    /// A TCP port number.
    Port,
    /// Seconds, integer or decimal (`2`, `2.5`).
    Seconds,
    /// A whole number.
    Count,
    /// Bytes, with an optional k, m or g suffix (binary multiples).
    Size,
    /// A store path with `#name=value` suffixes.
    StorePath,
    /// A file or directory path.
    Path,
    /// Free text.
    Text,
    /// A flag without a value.
    Switch,
}

impl Kind {
    /// The placeholder shown in `--help` and the man pages.
    pub fn placeholder(self) -> &'static str {
        match self {
            Kind::Address { .. } | Kind::Listen { .. } => "ADDRESS",
            Kind::Port => "PORT",
            Kind::Seconds => "SECONDS",
            Kind::Count => "N",
            Kind::Size => "SIZE",
            Kind::StorePath => "PATH[#NAME=VALUE...]",
            Kind::Path => "PATH",
            Kind::Text => "TEXT",
            Kind::Switch => "",
        }
    }

    /// The expected form, for error messages.
    pub fn expected(self) -> String {
        match self {
            Kind::Address { port } => {
                format!("an address: host, host:port, ip:port or [v6]:port (default port {port})")
            }
            Kind::Listen { port } => format!(
                "a listen address: port, host, host:port, ip:port or [v6]:port (default port {port})"
            ),
            Kind::Port => "a port number from 1 to 65535".into(),
            Kind::Seconds => "seconds, as an integer or a decimal such as 2.5".into(),
            Kind::Count => "a whole number such as 8".into(),
            Kind::Size => "a size in bytes with an optional k, m or g suffix, such as 600m".into(),
            Kind::StorePath => "a path, optionally followed by #name=value options".into(),
            Kind::Path => "a path".into(),
            Kind::Text => "text".into(),
            Kind::Switch => "no value".into(),
        }
    }
}

/// One option.
#[derive(Debug)]
pub struct Opt {
    /// The short name without its dash, as the user guide writes it (`l`, `TR`, `gS`).
    pub short: Option<&'static str>,
    /// The long name without its dashes.
    pub long: &'static str,
    pub kind: Kind,
    /// The default as the user would type it; parsed by the same code as user input.
    pub default: Option<&'static str>,
    pub required: bool,
    pub help: &'static str,
}

/// The address `kumo local` and its children use unless told otherwise.
pub const LOCAL_HOST: &str = "127.0.0.1";

/// The table. Entries that share a name apply to disjoint roles.
/// A role's options: groups shared with other roles, and its own, in the order
/// `--help` and the man page list them. Each role module defines its list.
pub type OptionList = &'static [&'static [Opt]];

/// Every option of a list, in order.
pub fn each(list: OptionList) -> impl Iterator<Item = &'static Opt> {
    list.iter().flat_map(|group| group.iter())
}

/// Logging, for every role that logs.
pub static LOGGING: &[Opt] = &[
    Opt { short: Some("v"), long: "verbose", kind: Kind::Switch, default: None, required: false,
        help: "Log debug messages too; without it only warnings and errors are shown." },
    Opt { short: Some("o"), long: "log", kind: Kind::Path, default: None, required: false,
        help: "Append the log to this file instead of standard output. '-' means plain standard output without colours." },
];

/// Running in the background.
pub static BACKGROUND: &[Opt] = &[Opt {
    short: Some("d"),
    long: "daemon",
    kind: Kind::Path,
    default: None,
    required: false,
    help: "Run in the background and write the process id to this file.",
}];

/// The cluster links of every daemon.
pub static NETWORK: &[Opt] = &[
    Opt {
        short: Some("Ci"),
        long: "clock-interval",
        kind: Kind::Seconds,
        default: Some("2"),
        required: false,
        help: "Period of the cluster clock: keepalives to peers are sent this often.",
    },
    Opt {
        short: Some("Ys"),
        long: "connect-timeout",
        kind: Kind::Seconds,
        default: Some("3"),
        required: false,
        help: "How long one connect(2) to a peer may take.",
    },
    Opt {
        short: Some("Yn"),
        long: "connect-retry-limit",
        kind: Kind::Count,
        default: Some("4"),
        required: false,
        help: "Failed reconnects after which a peer is declared lost and its pending calls fail.",
    },
    Opt {
        short: Some("TR"),
        long: "worker-threads",
        kind: Kind::Count,
        default: None,
        required: false,
        help: "Number of worker threads that read requests and run handlers; by default one per CPU core the process may use.",
    },
    Opt {
        short: Some("TW"),
        long: "sender-threads",
        kind: Kind::Count,
        default: Some("2"),
        required: false,
        help: "Number of sender threads that flush replies a worker could not write at once.",
    },
];

/// The binary log of the manager, the servers and the gateway.
pub static BINARY_LOG: &[Opt] = &[
    Opt { short: Some("g"), long: "binary-log", kind: Kind::Path, default: None, required: false,
        help: "Append a binary log of the events that matter (start and stop, servers joining and lost, attach and detach, replaces and their counts, errors) to this file, as msgpack records; kumolog(1) prints it. SIGHUP reopens it." },
];

/// What a daemon shows its monitoring.
pub static MONITORING: &[Opt] = &[
    Opt { short: None, long: "metrics", kind: Kind::Listen { port: METRICS_PORT }, default: None, required: false,
        help: "Serve GET /metrics on this address, in the Prometheus text format (version 0.0.4): requests, latency, connections, the store, replaces, peer links and the hash-space clocks, as kumo-ROLE(1) lists them. A bare port listens on every interface; a host alone takes port 9750. A connection that sends no request within 5 seconds is closed. Unauthenticated, like memcached's port: bind it where only your monitoring reaches." },
];

/// The managers a server or a gateway keeps in touch with.
pub static MANAGERS: &[Opt] = &[
    Opt {
        short: Some("m"),
        long: "manager1",
        kind: Kind::Address { port: MANAGER_PORT },
        default: None,
        required: true,
        help: "Address of the manager.",
    },
    Opt {
        short: Some("p"),
        long: "manager2",
        kind: Kind::Address { port: MANAGER_PORT },
        default: None,
        required: false,
        help: "Address of the second manager, if there are two.",
    },
];

/// The shared secret of everything that speaks to the cluster ports.
pub static KEYED: &[Opt] = &[
    Opt { short: None, long: "cluster-key", kind: Kind::Path, default: None, required: false,
        help: "Read a shared secret from this file (trailing whitespace ignored) and require it of every peer: each connection must present it before anything else is served, and this process presents it on every connection it opens. Give every manager, server, gateway and tool of the cluster the same file. Without it, any peer is served. The key keeps strangers off, not eavesdroppers: it travels in clear." },
];

/// A tool that may ask a manager for the servers instead of naming them.
pub static TOOL_MANAGER: &[Opt] = &[Opt {
    short: Some("m"),
    long: "manager",
    kind: Kind::Address { port: MANAGER_PORT },
    default: None,
    required: false,
    help: "Ask this manager for the attached servers instead of naming servers.",
}];

/// The output and patience of every tool.
pub static TOOL: &[Opt] = &[
    Opt {
        short: Some("j"),
        long: "json",
        kind: Kind::Switch,
        default: None,
        required: false,
        help: "Print the result as one JSON document, for scripts.",
    },
    Opt {
        short: None,
        long: "timeout",
        kind: Kind::Seconds,
        default: Some("5"),
        required: false,
        help: "How long to wait for a connection and for each answer.",
    },
];

/// A parsed option value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Addr(SocketAddr),
    Port(u16),
    Seconds(Duration),
    Count(u64),
    Size(u64),
    Store {
        path: PathBuf,
        params: Vec<(String, String)>,
    },
    Path(PathBuf),
    Text(String),
    Switch(bool),
}

/// Parses `text` as a value of `kind`. The error is the expected form.
pub fn parse_value(kind: Kind, text: &str) -> Result<Value, String> {
    let fail = || kind.expected();
    match kind {
        Kind::Address { port } => parse_address(text, port, false).map(Value::Addr),
        Kind::Listen { port } => parse_address(text, port, true).map(Value::Addr),
        Kind::Port => text
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .map(Value::Port)
            .ok_or_else(fail),
        Kind::Seconds => {
            let secs: f64 = text.parse().map_err(|_| fail())?;
            if !secs.is_finite() || !(0.0..=1e9).contains(&secs) || text.starts_with(['+', '-']) {
                return Err(fail());
            }
            Ok(Value::Seconds(Duration::from_secs_f64(secs)))
        }
        Kind::Count => {
            if text.starts_with('+') {
                return Err(fail());
            }
            text.parse::<u64>().map(Value::Count).map_err(|_| fail())
        }
        Kind::Size => parse_size(text).map(Value::Size).ok_or_else(fail),
        Kind::StorePath => {
            let mut parts = text.split('#');
            let path = parts.next().unwrap_or_default();
            if path.is_empty() {
                return Err(fail());
            }
            let mut params = Vec::new();
            for part in parts {
                match part.split_once('=') {
                    Some((name, value)) if !name.is_empty() => {
                        params.push((name.to_string(), value.to_string()))
                    }
                    _ => return Err(format!("{} ('{part}' is not name=value)", fail())),
                }
            }
            Ok(Value::Store {
                path: PathBuf::from(path),
                params,
            })
        }
        Kind::Path if text.is_empty() => Err(fail()),
        Kind::Path => Ok(Value::Path(PathBuf::from(text))),
        Kind::Text => Ok(Value::Text(text.to_string())),
        Kind::Switch => Err(fail()),
    }
}

pub use crate::sizes::parse_size;

/// Parses an address. Host names are resolved now, once, preferring IPv4, because
/// the address is also the node's identity on the hash ring.
pub fn parse_address(text: &str, default_port: u16, listen: bool) -> Result<SocketAddr, String> {
    let expected = || {
        if listen {
            Kind::Listen { port: default_port }
        } else {
            Kind::Address { port: default_port }
        }
        .expected()
    };
    if text.is_empty() {
        return Err(expected());
    }
    if listen {
        let bare = text.strip_prefix(':').unwrap_or(text);
        if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit()) {
            let port: u16 = bare.parse().map_err(|_| expected())?;
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
        }
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    // `[v6]` without a port
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner
            .parse::<IpAddr>()
            .map(|ip| SocketAddr::new(ip, default_port))
            .map_err(|_| expected());
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| expected())?),
        None => (text, default_port),
    };
    if host.is_empty() || host.contains([':', '[', ']', ' ']) || port == 0 {
        return Err(expected());
    }
    // /etc/hosts first, read by kumo itself: a static build has no other way to it.
    let known = super::hosts::lookup(host);
    let addrs: Vec<SocketAddr> = if known.is_empty() {
        (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("{} (cannot resolve '{host}': {e})", expected()))?
            .collect()
    } else {
        known
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect()
    };
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{} ('{host}' has no address)", expected()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_the_default_port() {
        let v4 = |s: &str| parse_address(s, 19800, false);
        assert_eq!(v4("127.0.0.1"), Ok("127.0.0.1:19800".parse().unwrap()));
        assert_eq!(v4("127.0.0.1:7"), Ok("127.0.0.1:7".parse().unwrap()));
        assert_eq!(v4("[::1]:7"), Ok("[::1]:7".parse().unwrap()));
        assert_eq!(v4("[::1]"), Ok("[::1]:19800".parse().unwrap()));
        assert_eq!(v4("::1"), Ok("[::1]:19800".parse().unwrap()));
        assert_eq!(v4("localhost:9").map(|a| a.port()), Ok(9));
        assert!(v4("localhost:99999").is_err());
        assert!(v4("19801").is_err() || v4("19801").unwrap().port() == 19800);
        assert_eq!(
            parse_address("19801", 1, true),
            Ok("0.0.0.0:19801".parse().unwrap())
        );
        assert_eq!(
            parse_address(":19801", 1, true),
            Ok("0.0.0.0:19801".parse().unwrap())
        );
        assert!(v4("").is_err());
        assert!(v4("a b:1").is_err());
    }

    #[test]
    fn values_of_each_kind() {
        assert_eq!(
            parse_value(Kind::Seconds, "2.5"),
            Ok(Value::Seconds(Duration::from_millis(2500)))
        );
        assert_eq!(
            parse_value(Kind::Seconds, "3"),
            Ok(Value::Seconds(Duration::from_secs(3)))
        );
        assert!(parse_value(Kind::Seconds, "-1").is_err());
        assert!(parse_value(Kind::Seconds, "nan").is_err());
        assert!(parse_value(Kind::Seconds, "1s").is_err());
        assert_eq!(parse_value(Kind::Count, "8"), Ok(Value::Count(8)));
        assert!(parse_value(Kind::Count, "-8").is_err());
        assert!(parse_value(Kind::Count, "eight").is_err());
        assert_eq!(parse_value(Kind::Size, "600m"), Ok(Value::Size(600 << 20)));
        assert_eq!(parse_value(Kind::Size, "4k"), Ok(Value::Size(4096)));
        assert_eq!(parse_value(Kind::Size, "12"), Ok(Value::Size(12)));
        assert!(parse_value(Kind::Size, "m").is_err());
        assert!(parse_value(Kind::Size, "99999999999g").is_err());
        assert_eq!(parse_value(Kind::Port, "19900"), Ok(Value::Port(19900)));
        assert!(parse_value(Kind::Port, "0").is_err());
        assert!(parse_value(Kind::Port, "65536").is_err());
        assert_eq!(
            parse_value(Kind::StorePath, "/var/kumo.db#xmsiz=600m#rcnum=4k"),
            Ok(Value::Store {
                path: "/var/kumo.db".into(),
                params: vec![
                    ("xmsiz".into(), "600m".into()),
                    ("rcnum".into(), "4k".into())
                ]
            })
        );
        assert!(parse_value(Kind::StorePath, "db#sync").is_err());
        assert!(parse_value(Kind::StorePath, "#sync=none").is_err());
    }
}
