//! Host names kumo resolves itself, before the system resolver: `localhost`, and
//! the names in `/etc/hosts`. A statically linked kumo (`make static`) has no NSS
//! modules, so its system resolver knows nothing; with this, a static binary still
//! takes the names an operator writes in `/etc/hosts`. DNS names go to the system
//! resolver as before.

use std::net::{IpAddr, Ipv4Addr};

/// The file of static host names.
pub const HOSTS_FILE: &str = "/etc/hosts";

/// The addresses `host` has in `/etc/hosts` (or `localhost`'s loopback when the
/// file does not name it), in file order.
pub fn lookup(host: &str) -> Vec<IpAddr> {
    let text = std::fs::read_to_string(HOSTS_FILE).unwrap_or_default();
    let mut found = lookup_in(host, &text);
    if found.is_empty() && host.eq_ignore_ascii_case("localhost") {
        // RFC 6761: localhost is the loopback, whatever else is configured.
        found.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    found
}

/// The addresses `host` has in a hosts file's `text`: each line is an address and
/// its names, `#` starts a comment, names match without regard to case.
pub fn lookup_in(host: &str, text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if words.any(|name| name.eq_ignore_ascii_case(host)) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_file_is_read_as_the_resolver_reads_it() {
        let text = "# comment\n127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n\
                    10.0.0.5  svr1 svr1.example.org # the first\n\
                    bogus svr2\n10.0.0.6 SVR2\n10.0.0.7 svr10\n";
        let ips = |h: &str| lookup_in(h, text);
        assert_eq!(ips("svr1"), vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(ips("svr1.example.org"), ips("svr1"));
        assert_eq!(
            ips("svr2"),
            vec!["10.0.0.6".parse::<IpAddr>().unwrap()],
            "a bad line is skipped, case ignored"
        );
        assert_eq!(ips("localhost").len(), 2);
        assert!(ips("svr").is_empty() && ips("first").is_empty() && ips("the").is_empty());
    }
}
