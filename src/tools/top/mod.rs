//! kumotop SERVER[:PORT]... or kumotop -m MANAGER[:PORT]: every server's gets,
//! sets and deletes per second, items, store bytes and replace state, one row
//! each, refreshed every `-i` seconds like top(1). `q` or Ctrl-C quits and gives
//! the terminal back as it was. A server that does not answer shows as down and
//! the others go on; with `-m` the list is asked of the manager at every frame, so
//! servers that join show up. `--once` prints one frame as text, `--json` as JSON;
//! when standard output is not a terminal, frames are printed one after another.

mod frame;
mod term;

use super::{nodes_info, parse_addr, usage};
use crate::cli::options::{Kind, Opt, OptionList, KEYED, SERVER_PORT, TOOL, TOOL_MANAGER};
use crate::cli::{Args, EXIT_FAILURE, EXIT_OK};
use crate::net::rpc_client::BlockingClient;
use crate::proto::cluster as msg;
use frame::Poll;
use rmpv::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The options of kumotop: the tools' shared ones, and its own.
pub static OPTIONS: OptionList = &[KEYED, TOOL_MANAGER, TOOL, OWN_OPTIONS];

#[rustfmt::skip]
static OWN_OPTIONS: &[Opt] = &[
    Opt { short: Some("i"), long: "interval", kind: Kind::Seconds, default: Some("1"), required: false,
        help: "Seconds between two frames; the rates are over this interval." },
    Opt { short: None, long: "once", kind: Kind::Switch, default: None, required: false,
        help: "Print one frame as plain text and exit (its rates are over one interval); with --json, as JSON." },
];

/// The shortest interval: a server is asked three things per frame.
const INTERVAL_MIN: Duration = Duration::from_millis(100);

pub fn main(args: Args) -> i32 {
    let manager = args.opt_addr("manager");
    let named: Result<Vec<SocketAddr>, String> = args
        .positional
        .iter()
        .map(|s| parse_addr(s, SERVER_PORT))
        .collect();
    let named = match named {
        Ok(n) => n,
        Err(e) => return usage(&args, &e),
    };
    if manager.is_none() == named.is_empty() {
        return usage(&args, "expected servers, or -m MANAGER (not both)");
    }
    let interval = args.seconds("interval").max(INTERVAL_MIN);
    let servers = || -> Result<Vec<SocketAddr>, String> {
        match manager {
            None => Ok(named.clone()),
            Some(m) => {
                let info = nodes_info(&args, m)?;
                let mut all: Vec<SocketAddr> = info.whs.nodes().iter().map(|n| n.addr).collect();
                all.extend(info.newcomers.iter().copied());
                all.sort();
                all.dedup();
                Ok(all)
            }
        }
    };
    let timeout = args.seconds("timeout").min(interval);
    let json = args.switch("json");
    let once = args.switch("once") || json;
    let heading = || {
        let keys = if once { "" } else { ", q quits" };
        let every = interval.as_secs_f64();
        format!(
            "kumotop  {}  every {every}s{keys}",
            crate::daemon::local_time()
        )
    };
    let mut previous: Vec<Poll> = Vec::new();
    let mut polled_at = Instant::now();
    let screen = if !once && term::is_terminal() {
        match term::Screen::enter() {
            Ok(s) => Some(s),
            Err(e) => return super::failure(&args, &e),
        }
    } else {
        None
    };
    let mut first = true;
    loop {
        let list = match servers() {
            Ok(l) => l,
            Err(e) if first => return super::failure(&args, &e),
            // The manager went away: keep watching the servers known so far.
            Err(_) => previous.iter().filter_map(|p| p.server).collect(),
        };
        let polls: Vec<Poll> = list.iter().map(|s| poll(*s, timeout)).collect();
        let now = Instant::now();
        let rows = frame::rows(
            &previous,
            &polls,
            now.duration_since(polled_at).as_secs_f64(),
        );
        (previous, polled_at) = (polls, now);
        if once && first {
            // One interval for the rates, then the frame.
            first = false;
            std::thread::sleep(interval);
            continue;
        }
        first = false;
        if once {
            if json {
                println!("{}", frame::json(&rows, u64::from(crate::time::unix_now())));
            } else {
                print!("{}", frame::text(&rows, &heading(), usize::MAX));
            }
            let all_down = !rows.is_empty() && rows.iter().all(|r| r.poll.down.is_some());
            return if all_down { EXIT_FAILURE } else { EXIT_OK };
        }
        match &screen {
            Some(s) => {
                s.draw(&frame::text(&rows, &heading(), term::Screen::width()));
                if s.wait_for_quit(interval.saturating_sub(now.elapsed())) {
                    return EXIT_OK;
                }
            }
            None => {
                println!("{}", frame::text(&rows, &heading(), usize::MAX));
                let _ = std::io::stdout().flush();
                std::thread::sleep(interval.saturating_sub(now.elapsed()));
            }
        }
    }
}

/// One server's counters and replace state, or why it did not answer.
fn poll(server: SocketAddr, timeout: Duration) -> Poll {
    let down = |why: String| Poll {
        server: Some(server),
        down: Some(why),
        ..Poll::default()
    };
    let mut c = match BlockingClient::connect(server, timeout) {
        Ok(c) => c,
        Err(e) => return down(format!("cannot reach it: {e}")),
    };
    let mut status = |name: &str| c.call(msg::GET_STATUS, &[Value::from(name)]);
    let (stats, bytes, replace) = match (status("stats"), status("store_bytes"), status("replace"))
    {
        (Ok(s), Ok(b), Ok(r)) => (s, b, r),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return down(e.to_string()),
    };
    let field = |v: &Value, name: &str| -> Option<Value> {
        v.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v.clone())
    };
    let number = |v: &Value, name: &str| field(v, name).and_then(|x| x.as_u64()).unwrap_or(0);
    Poll {
        server: Some(server),
        down: None,
        gets: number(&stats, "cmd_get"),
        sets: number(&stats, "cmd_set"),
        deletes: number(&stats, "cmd_delete"),
        items: number(&stats, "items"),
        bytes: bytes.as_u64().unwrap_or(0),
        replace: field(&replace, "state")
            .and_then(|s| s.as_str().map(str::to_string))
            .unwrap_or_default(),
        records_sent: number(&replace, "records_sent"),
        records_received: number(&replace, "records_received"),
    }
}
