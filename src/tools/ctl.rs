//! kumoctl MANAGER[:PORT] COMMAND: shows the manager's view of the cluster and runs
//! its control commands.

use super::{call, failure, format_space, json_space, json_str, nodes_info, parse_addr, usage};
use crate::cli::options::MANAGER_PORT;
use crate::cli::options::{OptionList, KEYED, TOOL};
use crate::cli::{Args, EXIT_OK};
use crate::proto::cluster as msg;
use crate::time::unix_now;
use rmpv::Value;

/// The options of kumoctl, all shared with other tools.
pub static OPTIONS: OptionList = &[KEYED, TOOL];

/// The commands, with their help: the table `--help` and the man page show.
pub use crate::cli::commands::CTL as COMMANDS;

pub fn main(args: Args) -> i32 {
    let (manager, command) = match args.positional.as_slice() {
        [m, c] => (m, c),
        [m, c, _suffix] if c == "backup" => (m, c),
        _ => return usage(&args, "expected a manager address and a command"),
    };
    let manager = match parse_addr(manager, MANAGER_PORT) {
        Ok(a) => a,
        Err(e) => return usage(&args, &e),
    };
    let json = args.switch("json");
    let result = match command.as_str() {
        "status" | "stat" => status(&args, manager, json),
        "attach" | "attach-noreplace" | "detach" | "detach-noreplace" => {
            let method = if command.starts_with("attach") {
                msg::ATTACH
            } else {
                msg::DETACH
            };
            let replace = !command.ends_with("-noreplace");
            call(&args, manager, method, &[Value::from(replace)]).map(|v| {
                let changed = v.as_bool().unwrap_or(false);
                if json {
                    format!(
                        "{{\"command\":{},\"changed\":{changed}}}\n",
                        json_str(command)
                    )
                } else if changed {
                    format!("{command}: done\n")
                } else {
                    format!("{command}: nothing to do\n")
                }
            })
        }
        "replace" | "full-replace" => {
            let full = command == "full-replace";
            call(&args, manager, msg::START_REPLACE, &[Value::from(full)]).map(|v| {
                let started = v.as_bool().unwrap_or(false);
                if json {
                    format!(
                        "{{\"command\":{},\"started\":{started}}}\n",
                        json_str(command)
                    )
                } else if started {
                    format!("{command}: started\n")
                } else {
                    format!("{command}: no server to move data between\n")
                }
            })
        }
        "backup" => {
            let suffix = args.positional.get(2).cloned().unwrap_or_else(|| {
                crate::daemon::format_local(unix_now() as libc::time_t, "%Y%m%d")
            });
            call(
                &args,
                manager,
                msg::CREATE_BACKUP,
                &[Value::from(suffix.as_str())],
            )
            .map(|v| {
                let mut text = format!("suffix={suffix}\n");
                let mut items = Vec::new();
                for e in v.as_array().map(|a| a.as_slice()).unwrap_or(&[]) {
                    let pair = e.as_array().map(|a| a.as_slice()).unwrap_or(&[]);
                    let addr = pair.first().and_then(Value::as_str).unwrap_or("?");
                    let what = match pair.get(1) {
                        Some(Value::String(p)) => p.as_str().unwrap_or("").to_string(),
                        Some(other) => format!("failed: {}", super::json_value(other)),
                        None => "failed".into(),
                    };
                    text += &format!("  {addr}  {what}\n");
                    items.push(format!(
                        "{{\"server\":{},\"result\":{}}}",
                        json_str(addr),
                        json_str(&what)
                    ));
                }
                if json {
                    format!(
                        "{{\"suffix\":{},\"servers\":[{}]}}\n",
                        json_str(&suffix),
                        items.join(",")
                    )
                } else {
                    text
                }
            })
        }
        "enable-auto-replace" | "disable-auto-replace" => {
            let on = command.starts_with("enable");
            call(&args, manager, msg::SET_AUTO_REPLACE, &[Value::from(on)]).map(|v| {
                let was = v.as_bool().unwrap_or(false);
                if json {
                    format!("{{\"auto_replace\":{on},\"was\":{was}}}\n")
                } else {
                    format!(
                        "auto replace {} (was {})\n",
                        if on { "on" } else { "off" },
                        if was { "on" } else { "off" }
                    )
                }
            })
        }
        other => return usage(&args, &format!("unknown command '{other}'")),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            EXIT_OK
        }
        Err(e) => failure(&args, &e),
    }
}

fn status(args: &Args, manager: std::net::SocketAddr, json: bool) -> Result<String, String> {
    let info = nodes_info(args, manager)?;
    if json {
        let newcomers: Vec<String> = info
            .newcomers
            .iter()
            .map(|a| json_str(&a.to_string()))
            .collect();
        let replace = match &info.replace {
            Some(r) => format!(
                "{{\"phase\":{},\"full\":{},\"servers\":{},\"done\":{},\"records\":{},\"bytes\":{}}}",
                json_str(&r.phase),
                r.full,
                r.servers,
                r.done,
                r.records,
                r.bytes
            ),
            None => "null".into(),
        };
        let full: Vec<String> = info
            .store_full
            .iter()
            .map(|a| json_str(&a.to_string()))
            .collect();
        return Ok(format!(
            "{{\"whs\":{},\"rhs\":{},\"not_attached\":[{}],\"auto_replace\":{},\"replace\":{replace},\"store_full\":[{}]}}\n",
            json_space(&info.whs),
            json_space(&info.rhs),
            newcomers.join(","),
            info.auto_replace,
            full.join(",")
        ));
    }
    let mut s = format_space(&info.whs, "attached node");
    s += "not attached node:\n";
    for a in &info.newcomers {
        s += &format!("  {a}\n");
    }
    if let Some(r) = &info.replace {
        s += &format!(
            "replace:\n  {}{} ({} of {} servers done), {} records, {} bytes copied\n",
            r.phase,
            if r.full { " (full)" } else { "" },
            r.done,
            r.servers,
            r.records,
            r.bytes
        );
    } else if !info.whs.same_layout(&info.rhs) {
        s += "replace:\n  needed: reads still use the old table (run 'replace')\n";
    }
    if !info.store_full.is_empty() {
        s += "store full (writes to their keys fail until space is freed):\n";
        for a in &info.store_full {
            s += &format!("  {a}\n");
        }
    }
    Ok(s)
}
