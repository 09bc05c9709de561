//! The Prometheus text exposition format (version 0.0.4), written by hand: the
//! families, samples and histograms a role's `/metrics` page holds. The page is
//! built from counters the roles keep anyway; nothing here reads a clock.

use crate::cluster::clock::ClockTime;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The Content-Type of a page in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family's samples mean to Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A page being written. Each family is declared once ([`Page::family`]), then
/// its samples follow.
#[derive(Default)]
pub struct Page {
    text: String,
}

impl Page {
    pub fn new() -> Page {
        Page::default()
    }

    /// Declares a family: its HELP and TYPE lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Page {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.word());
        self
    }

    /// One sample of the family just declared.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Page {
        self.text.push_str(name);
        push_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", number(value));
        self
    }

    /// A family whose samples differ in one label: `(label value, sample value)`.
    pub fn by_label(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        label: &str,
        values: &[(&str, f64)],
    ) -> &mut Page {
        self.family(name, kind, help);
        for (v, x) in values {
            self.sample(name, &[(label, v)], *x);
        }
        self
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Page {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// The samples of a histogram (its family declared as [`Kind::Histogram`]):
    /// cumulative buckets, `+Inf`, the sum in seconds and the count.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) -> &mut Page {
        let counts = h.counts();
        let mut cumulative = 0u64;
        for (i, bound) in BUCKET_BOUNDS.iter().enumerate() {
            cumulative += counts[i];
            let le = number(bound.as_secs_f64());
            let _ = write!(self.text, "{name}_bucket");
            push_labels(&mut self.text, labels, Some(&le));
            let _ = writeln!(self.text, " {cumulative}");
        }
        let count = cumulative + counts[BUCKET_BOUNDS.len()];
        let _ = write!(self.text, "{name}_bucket");
        push_labels(&mut self.text, labels, Some("+Inf"));
        let _ = writeln!(self.text, " {count}");
        let _ = write!(self.text, "{name}_sum");
        push_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", number(h.sum_micros() as f64 / 1e6));
        let _ = write!(self.text, "{name}_count");
        push_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {count}");
        self
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

/// `{a="x",b="y"}` (with `le` last for a bucket), nothing when there are none.
fn push_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// A sample value as the format writes it: integers without a fraction.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The upper bounds of a latency histogram's buckets: from 100 µs, where a request
/// on a quiet loopback lands, to 2.5 s, past the gateway's default deadline.
pub const BUCKET_BOUNDS: [Duration; 14] = [
    Duration::from_micros(100),
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
];

/// A latency histogram that any thread may add to without a lock.
#[derive(Default)]
pub struct Histogram {
    /// Per bucket (not cumulative), then the ones past the last bound.
    buckets: [AtomicU64; BUCKET_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let i = BUCKET_BOUNDS.partition_point(|b| *b < d);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = d.as_micros().min(u64::MAX as u128) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observations per bucket, the last past every bound.
    pub fn counts(&self) -> [u64; BUCKET_BOUNDS.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    pub fn sum_micros(&self) -> u64 {
        self.sum_micros.load(Ordering::Relaxed)
    }
}

/// What every node shows of the cluster: its links to the servers (up or not, by
/// address) and the ClockTimes of the hash spaces it holds, each as its two parts
/// (a float holds neither whole ClockTime exactly).
pub fn cluster_view(p: &mut Page, links: &[(SocketAddr, bool)], whs: ClockTime, rhs: ClockTime) {
    p.family(
        "kumo_peer_link_up",
        Kind::Gauge,
        "1 while the link to a server answers its heartbeats, 0 while it is suspect.",
    );
    for (addr, up) in links {
        let peer = addr.to_string();
        p.sample(
            "kumo_peer_link_up",
            &[("peer", &peer)],
            if *up { 1.0 } else { 0.0 },
        );
    }
    p.by_label(
        "kumo_hash_space_time_seconds",
        Kind::Gauge,
        "The unix time of a hash space's ClockTime: whs routes writes, rhs reads.",
        "table",
        &[("whs", whs.secs() as f64), ("rhs", rhs.secs() as f64)],
    );
    p.by_label(
        "kumo_hash_space_clock",
        Kind::Gauge,
        "The logical counter of a hash space's ClockTime, which orders changes within one second.",
        "table",
        &[("whs", whs.counter() as f64), ("rhs", rhs.counter() as f64)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_written_as_the_format_says() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(9));
        let mut p = Page::new();
        p.family(
            "kumo_requests_total",
            Kind::Counter,
            "Requests.\nAll of them \\ each",
        )
        .sample(
            "kumo_requests_total",
            &[("command", "get"), ("result", "hit")],
            3.0,
        )
        .sample("kumo_requests_total", &[("peer", "a\"b\\c\nd")], 0.5);
        p.single("kumo_up", Kind::Gauge, "Up.", 1.0);
        p.family("kumo_latency_seconds", Kind::Histogram, "Latency.")
            .histogram("kumo_latency_seconds", &[("role", "gateway")], &h);
        let text = p.into_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "# HELP kumo_requests_total Requests.\\nAll of them \\\\ each"
        );
        assert_eq!(lines[1], "# TYPE kumo_requests_total counter");
        assert_eq!(
            lines[2],
            "kumo_requests_total{command=\"get\",result=\"hit\"} 3"
        );
        assert_eq!(
            lines[3],
            "kumo_requests_total{peer=\"a\\\"b\\\\c\\nd\"} 0.5"
        );
        assert_eq!(lines[6], "kumo_up 1");
        assert!(text.contains("kumo_latency_seconds_bucket{role=\"gateway\",le=\"0.0001\"} 1\n"));
        assert!(text.contains("kumo_latency_seconds_bucket{role=\"gateway\",le=\"0.001\"} 2\n"));
        assert!(text.contains("kumo_latency_seconds_bucket{role=\"gateway\",le=\"2.5\"} 2\n"));
        assert!(text.contains("kumo_latency_seconds_bucket{role=\"gateway\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("kumo_latency_seconds_sum{role=\"gateway\"} 9.00075\n"));
        assert!(text.contains("kumo_latency_seconds_count{role=\"gateway\"} 3\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn a_bound_itself_falls_in_its_bucket() {
        let h = Histogram::default();
        for b in BUCKET_BOUNDS {
            h.observe(b);
        }
        assert_eq!(h.counts(), [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
    }
}
