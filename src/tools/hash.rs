//! kumohash SERVER... -- COMMAND [KEY...], or kumohash -m MANAGER COMMAND [KEY...]:
//! computes key hashes and owners with the same code the servers route by, so
//! `assign` names the servers that hold a key.

use super::{failure, json_str, nodes_info, parse_addr, usage};
use crate::cli::options::SERVER_PORT;
use crate::cli::options::{OptionList, KEYED, TOOL, TOOL_MANAGER};
use crate::cli::{Args, EXIT_OK};
use crate::cluster::clock::ClockTime;
use crate::cluster::hash_space::{key_hash, HashSpace, Node};

/// The options of kumohash, all shared with other tools.
pub static OPTIONS: OptionList = &[KEYED, TOOL_MANAGER, TOOL];

/// The commands, with their help: the table `--help` and the man page show.
pub use crate::cli::commands::HASH as COMMANDS;

pub fn main(args: Args) -> i32 {
    let (space, rest): (HashSpace, &[String]) = match args.opt_addr("manager") {
        Some(m) => match nodes_info(&args, m) {
            Ok(info) => (info.whs, &args.positional[..]),
            Err(e) => return failure(&args, &e),
        },
        None => {
            let Some(split) = args.before_dashdash else {
                return usage(
                    &args,
                    "expected SERVER... -- COMMAND, or -m MANAGER COMMAND",
                );
            };
            let mut nodes = Vec::new();
            for s in &args.positional[..split] {
                match parse_addr(s, SERVER_PORT) {
                    Ok(addr) => nodes.push(Node { addr, active: true }),
                    Err(e) => return usage(&args, &e),
                }
            }
            (
                HashSpace::new(nodes, ClockTime(0)),
                &args.positional[split..],
            )
        }
    };
    let Some((command, keys)) = rest.split_first() else {
        return usage(&args, "expected a command: hash, assign or dump");
    };
    let json = args.switch("json");
    let mut text = String::new();
    let mut items = Vec::new();
    match command.as_str() {
        "hash" => {
            for k in keys {
                let h = key_hash(k.as_bytes());
                text += &format!("{h:016x}  {k}\n");
                items.push(format!("{{\"key\":{},\"hash\":\"{h:016x}\"}}", json_str(k)));
            }
        }
        "assign" => {
            for k in keys {
                let h = key_hash(k.as_bytes());
                text += &format!("{h:016x}  {k}\n");
                let mut owners = Vec::new();
                for (i, n) in space.owners(h).iter().enumerate() {
                    let fault = if n.active { "" } else { "  (fault)" };
                    text += &format!("  {i}: {}{fault}\n", n.addr);
                    owners.push(format!(
                        "{{\"address\":{},\"active\":{}}}",
                        json_str(&n.addr.to_string()),
                        n.active
                    ));
                }
                items.push(format!(
                    "{{\"key\":{},\"hash\":\"{h:016x}\",\"owners\":[{}]}}",
                    json_str(k),
                    owners.join(",")
                ));
            }
        }
        "dump" => {
            for (p, addr) in space.points() {
                text += &format!("{p:016x}  {addr}\n");
                items.push(format!(
                    "{{\"point\":\"{p:016x}\",\"address\":{}}}",
                    json_str(&addr.to_string())
                ));
            }
        }
        other => return usage(&args, &format!("unknown command '{other}'")),
    }
    if json {
        println!("[{}]", items.join(","));
    } else {
        print!("{text}");
    }
    EXIT_OK
}
