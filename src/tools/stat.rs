//! kumostat SERVER[:PORT] COMMAND, or kumostat -m MANAGER COMMAND: one status value
//! of one server, or of every active attached server, each line prefixed by its
//! address.

use super::{call, failure, format_space, json_str, json_value, nodes_info, parse_addr, usage};
use crate::cli::options::SERVER_PORT;
use crate::cli::options::{OptionList, KEYED, TOOL, TOOL_MANAGER};
use crate::cli::{Args, EXIT_FAILURE, EXIT_OK};
use crate::cluster::hash_space::HashSpace;
use crate::proto::cluster as msg;
use rmpv::Value;
use std::net::SocketAddr;

/// The options of kumostat, all shared with other tools.
pub static OPTIONS: OptionList = &[KEYED, TOOL_MANAGER, TOOL];

/// The commands, with their help: the table `--help` and the man page show.
pub use crate::cli::commands::STAT as COMMANDS;

pub fn main(args: Args) -> i32 {
    let (servers, command): (Vec<SocketAddr>, &str) =
        match (args.opt_addr("manager"), args.positional.as_slice()) {
            (Some(m), [command]) => match nodes_info(&args, m) {
                Ok(info) => (
                    info.whs
                        .nodes()
                        .iter()
                        .filter(|n| n.active)
                        .map(|n| n.addr)
                        .collect(),
                    command,
                ),
                Err(e) => return failure(&args, &e),
            },
            (None, [server, command]) => match parse_addr(server, SERVER_PORT) {
                Ok(a) => (vec![a], command),
                Err(e) => return usage(&args, &e),
            },
            _ => {
                return usage(
                    &args,
                    "expected a server and a command, or -m MANAGER and a command",
                )
            }
        };
    if !COMMANDS.iter().any(|(c, _)| *c == command) {
        return usage(&args, &format!("unknown command '{command}'"));
    }
    let prefix = args.opt_addr("manager").is_some();
    let json = args.switch("json");
    let mut status = EXIT_OK;
    let mut json_items = Vec::new();
    for s in servers {
        match one(&args, s, command) {
            Ok((text, value)) => {
                if json {
                    json_items.push(format!("{}:{}", json_str(&s.to_string()), value));
                } else if prefix {
                    print!("{s}:  {text}");
                } else {
                    print!("{text}");
                }
            }
            Err(e) => {
                status = EXIT_FAILURE;
                eprintln!("{}: {e}", args.role.program());
                if json {
                    json_items.push(format!(
                        "{}:{{\"error\":{}}}",
                        json_str(&s.to_string()),
                        json_str(&e)
                    ));
                }
            }
        }
    }
    if json {
        println!("{{{}}}", json_items.join(","));
    }
    status
}

/// Runs `command` on `server`: the text to print and the JSON value.
fn one(args: &Args, server: SocketAddr, command: &str) -> Result<(String, String), String> {
    let status = |name: &str| call(args, server, msg::GET_STATUS, &[Value::from(name)]);
    match command {
        "set_delay" | "unset_delay" => {
            let on = command == "unset_delay";
            let n = call(
                args,
                server,
                msg::SET_CONFIG,
                &[Value::from("nodelay"), Value::from(on)],
            )?;
            Ok((format!("{n} sockets\n"), json_value(&n)))
        }
        "whs" | "rhs" => {
            let v = status(command)?;
            let hs = HashSpace::from_value(&v)
                .ok_or_else(|| format!("{server}: malformed hash space"))?;
            Ok((format_space(&hs, "node"), super::json_space(&hs)))
        }
        "stats" => {
            let v = status("stats")?;
            let map = v
                .as_map()
                .ok_or_else(|| format!("{server}: malformed stats"))?;
            let mut text = String::new();
            for (k, v) in map {
                let name = match k.as_str() {
                    Some("items") => "curr_items",
                    Some(n) => n,
                    None => continue,
                };
                let shown = match v {
                    Value::String(s) => s.as_str().unwrap_or("").to_string(),
                    other => other.to_string(),
                };
                text += &format!("STAT {name} {shown}\n");
            }
            text += "END\n";
            Ok((text, json_value(&v)))
        }
        name => {
            let v = status(name)?;
            let shown = match &v {
                Value::String(s) => s.as_str().unwrap_or("").to_string(),
                other => other.to_string(),
            };
            Ok((format!("{shown}\n"), json_value(&v)))
        }
    }
}
