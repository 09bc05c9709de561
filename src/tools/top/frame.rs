//! What kumotop shows, worked out from two polls of the servers: rates from the
//! counters' differences, and the frame as text or JSON. No sockets, no clock: the
//! caller says how far apart the polls were.

use crate::tools::json_str;
use std::net::SocketAddr;

/// One poll of one server; `None` counters when it did not answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Poll {
    pub server: Option<SocketAddr>,
    /// Why the server did not answer, if it did not.
    pub down: Option<String>,
    pub gets: u64,
    pub sets: u64,
    pub deletes: u64,
    pub items: u64,
    pub bytes: u64,
    /// `replstat`: ready, waiting, copying, deleting or inactive.
    pub replace: String,
    pub records_sent: u64,
    pub records_received: u64,
}

/// One row of the screen.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub poll: Poll,
    /// Gets, sets and deletes per second since the previous poll, once there is
    /// one (and the counters did not go back, as after a restart).
    pub rates: Option<[f64; 3]>,
}

/// The rows of this poll, given the previous one and the seconds between them.
pub fn rows(previous: &[Poll], now: &[Poll], secs: f64) -> Vec<Row> {
    now.iter()
        .map(|p| {
            let before = previous
                .iter()
                .find(|b| b.server == p.server && b.down.is_none());
            let rates = match (before, &p.down) {
                (Some(b), None) if secs > 0.0 => {
                    let per = |new: u64, old: u64| new.checked_sub(old).map(|d| d as f64 / secs);
                    match (
                        per(p.gets, b.gets),
                        per(p.sets, b.sets),
                        per(p.deletes, b.deletes),
                    ) {
                        (Some(g), Some(s), Some(d)) => Some([g, s, d]),
                        _ => None,
                    }
                }
                _ => None,
            };
            Row {
                poll: p.clone(),
                rates,
            }
        })
        .collect()
}

/// 1234567 as `1.2M`: four columns at most.
pub fn short(n: f64) -> String {
    let units = [("", 1.0), ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)];
    let (unit, scale) = units
        .iter()
        .rev()
        .find(|(_, s)| n >= *s)
        .copied()
        .unwrap_or(("", 1.0));
    if unit.is_empty() {
        format!("{}", n.round() as u64)
    } else {
        format!("{:.1}{unit}", n / scale)
    }
}

/// The frame as text: a heading, a column header, a row per server, each line cut
/// to `width` columns.
pub fn text(rows: &[Row], heading: &str, width: usize) -> String {
    let up = rows.iter().filter(|r| r.poll.down.is_none()).count();
    let mut lines = vec![
        format!("{heading}  {} servers, {up} up", rows.len()),
        format!(
            "{:<22} {:<5} {:>7} {:>7} {:>7} {:>7} {:>7}  {}",
            "SERVER", "STATE", "GET/s", "SET/s", "DEL/s", "ITEMS", "BYTES", "REPLACE"
        ),
    ];
    for r in rows {
        let p = &r.poll;
        let server = p.server.map_or("?".into(), |a| a.to_string());
        if let Some(why) = &p.down {
            lines.push(format!(
                "{server:<22} {:<5} {:>7} {:>7} {:>7} {:>7} {:>7}  {why}",
                "down", "-", "-", "-", "-", "-"
            ));
            continue;
        }
        let rate = |i: usize| r.rates.map_or("-".into(), |x| short(x[i]));
        let mut replace = p.replace.clone();
        if p.records_sent + p.records_received > 0 || replace == "copying" {
            replace += &format!(
                " ({} sent, {} received)",
                short(p.records_sent as f64),
                short(p.records_received as f64)
            );
        }
        lines.push(format!(
            "{server:<22} {:<5} {:>7} {:>7} {:>7} {:>7} {:>7}  {replace}",
            "up",
            rate(0),
            rate(1),
            rate(2),
            short(p.items as f64),
            short(p.bytes as f64),
        ));
    }
    let mut out = String::new();
    for l in lines {
        out.extend(l.chars().take(width.max(1)));
        out.push('\n');
    }
    out
}

/// The frame as one JSON document.
pub fn json(rows: &[Row], unix_time: u64) -> String {
    let servers: Vec<String> = rows
        .iter()
        .map(|r| {
            let p = &r.poll;
            let server = json_str(&p.server.map_or("?".into(), |a| a.to_string()));
            if let Some(why) = &p.down {
                return format!("{{\"server\":{server},\"up\":false,\"error\":{}}}", json_str(why));
            }
            let rate = |i: usize| r.rates.map_or("null".into(), |x| format!("{:.1}", x[i]));
            format!(
                "{{\"server\":{server},\"up\":true,\"get_per_sec\":{},\"set_per_sec\":{},\"delete_per_sec\":{},\"items\":{},\"bytes\":{},\"replace\":{{\"state\":{},\"records_sent\":{},\"records_received\":{}}}}}",
                rate(0),
                rate(1),
                rate(2),
                p.items,
                p.bytes,
                json_str(&p.replace),
                p.records_sent,
                p.records_received
            )
        })
        .collect();
    format!(
        "{{\"time\":{unix_time},\"servers\":[{}]}}",
        servers.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(port: u16, gets: u64) -> Poll {
        Poll {
            server: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            gets,
            sets: gets / 2,
            items: 1500,
            bytes: 2_500_000,
            replace: "ready".into(),
            ..Poll::default()
        }
    }

    #[test]
    fn rates_come_from_two_polls_and_a_server_that_went_away_shows_down() {
        let before = [poll(1, 100), poll(2, 50)];
        let mut gone = poll(2, 0);
        gone.down = Some("cannot reach 127.0.0.1:2".into());
        let rows = rows(&before, &[poll(1, 300), gone, poll(3, 7)], 2.0);
        assert_eq!(rows[0].rates, Some([100.0, 50.0, 0.0]));
        assert_eq!(rows[1].rates, None, "down");
        assert_eq!(rows[2].rates, None, "no previous poll");
        let t = text(&rows, "kumotop", 200);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "kumotop  3 servers, 2 up");
        assert!(
            lines[2].starts_with("127.0.0.1:1")
                && lines[2].contains(" up ")
                && lines[2].contains("100"),
            "{}",
            lines[2]
        );
        assert!(
            lines[2].contains("1.5k") && lines[2].contains("2.5M") && lines[2].ends_with("ready"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("down") && lines[3].ends_with("cannot reach 127.0.0.1:2"),
            "{}",
            lines[3]
        );
        assert!(text(&rows, "kumotop", 10)
            .lines()
            .all(|l| l.chars().count() <= 10));
        let j = json(&rows, 7);
        assert!(j.starts_with("{\"time\":7,\"servers\":[{\"server\":\"127.0.0.1:1\",\"up\":true,\"get_per_sec\":100.0"), "{j}");
        assert!(
            j.contains(
                "{\"server\":\"127.0.0.1:2\",\"up\":false,\"error\":\"cannot reach 127.0.0.1:2\"}"
            ),
            "{j}"
        );
        assert!(j.contains("\"get_per_sec\":null"), "{j}");
    }

    #[test]
    fn a_restarted_server_has_no_rate_until_its_next_poll() {
        let rows = rows(&[poll(1, 1000)], &[poll(1, 10)], 1.0);
        assert_eq!(rows[0].rates, None);
    }

    #[test]
    fn numbers_fit_their_columns() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(999.0), "999");
        assert_eq!(short(1000.0), "1.0k");
        assert_eq!(short(1_234_567.0), "1.2M");
        assert_eq!(short(3.2e12), "3.2T");
    }
}
