//! The command-line tools: short-lived processes that talk to nodes or files.
//!
//! - [`ctl`]: kumoctl, the manager's control commands.
//! - [`stat`]: kumostat, server status and counters.
//! - [`top`]: kumotop, every server's rates and state on one screen.
//! - [`log`]: kumolog, the binary log (`-g`) as text.
//! - [`hash`]: kumohash, where keys are placed.
//! - [`mergedb`]: kumomergedb, merging stores offline.
//!
//! The helpers below are what they share: calling a node, reading the manager's
//! view, and printing hash spaces and JSON the same way.

pub mod ctl;
pub mod hash;
pub mod log;
pub mod mergedb;
pub mod stat;
pub mod top;

use crate::cli::Args;
use crate::cluster::hash_space::HashSpace;
use crate::net::rpc_client::BlockingClient;
use crate::proto::cluster::{self as msg, NodesInfo};
use rmpv::Value;
use std::net::SocketAddr;

/// Calls one method on one node, with the tool's `--timeout`.
pub fn call(
    args: &Args,
    addr: SocketAddr,
    method: &str,
    params: &[Value],
) -> Result<Value, String> {
    let timeout = args.seconds("timeout");
    let mut c =
        BlockingClient::connect(addr, timeout).map_err(|e| format!("cannot reach {addr}: {e}"))?;
    c.call(method, params).map_err(|e| format!("{addr}: {e}"))
}

/// The manager's view of the cluster.
pub fn nodes_info(args: &Args, manager: SocketAddr) -> Result<NodesInfo, String> {
    let v = call(args, manager, msg::GET_NODES_INFO, &[])?;
    NodesInfo::from_value(&v).map_err(|e| format!("{manager}: {e}"))
}

/// Parses a node address given as an argument, with the role's default port.
pub fn parse_addr(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    crate::cli::options::parse_address(text, default_port, false)
        .map_err(|e| format!("'{text}': expected {e}"))
}

/// `Wed Dec 03 22:15:55 +0900 2008 clock 62`, as kumofs printed hash-space times.
pub fn format_clocktime(clocktime: u64) -> String {
    let c = crate::cluster::clock::ClockTime(clocktime);
    format!(
        "{} clock {}",
        crate::daemon::format_local(c.secs() as libc::time_t, "%a %b %d %H:%M:%S %z %Y"),
        c.counter()
    )
}

/// A hash space as kumoctl status prints it, under `heading`.
pub fn format_space(hs: &HashSpace, heading: &str) -> String {
    let mut s = format!(
        "hash space timestamp:\n  {}\n{heading}:\n",
        format_clocktime(hs.clocktime.0)
    );
    for n in hs.nodes() {
        s += &format!(
            "  {}  ({})\n",
            n.addr,
            if n.active { "active" } else { "fault" }
        );
    }
    s
}

/// A hash space as JSON.
pub fn json_space(hs: &HashSpace) -> String {
    let nodes: Vec<String> = hs
        .nodes()
        .iter()
        .map(|n| {
            format!(
                "{{\"address\":{},\"active\":{}}}",
                json_str(&n.addr.to_string()),
                n.active
            )
        })
        .collect();
    format!(
        "{{\"clocktime\":{},\"time\":{},\"clock\":{},\"nodes\":[{}]}}",
        hs.clocktime.0,
        hs.clocktime.secs(),
        hs.clocktime.counter(),
        nodes.join(",")
    )
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A msgpack value as JSON (binary as a string, lossily).
pub fn json_value(v: &Value) -> String {
    match v {
        Value::Nil => "null".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::F32(f) => f.to_string(),
        Value::F64(f) => f.to_string(),
        Value::String(s) => json_str(s.as_str().unwrap_or("")),
        Value::Binary(b) => json_str(&String::from_utf8_lossy(b)),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(json_value).collect::<Vec<_>>().join(",")
        ),
        Value::Map(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!(
                    "{}:{}",
                    json_str(k.to_string().trim_matches('"')),
                    json_value(v)
                ))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Value::Ext(_, _) => "null".into(),
    }
}

/// Prints a usage error for a tool and returns the usage exit status.
pub fn usage(args: &Args, why: &str) -> i32 {
    let program = args.role.program();
    eprintln!("{program}: {why}");
    eprintln!(
        "Usage: {program} [options] {}",
        args.role.positional_usage()
    );
    eprintln!("Try '{program} --help' for more information.");
    crate::cli::EXIT_USAGE
}

/// Prints a runtime failure for a tool and returns the failure exit status.
pub fn failure(args: &Args, why: &str) -> i32 {
    eprintln!("{}: {why}", args.role.program());
    crate::cli::EXIT_FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        let v = Value::Map(vec![(
            Value::from("k"),
            Value::Array(vec![Value::from(1), Value::Nil]),
        )]);
        assert_eq!(json_value(&v), "{\"k\":[1,null]}");
    }
}
