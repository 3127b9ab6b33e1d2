//! The state of a pool for people and programs: an `ipvsadm -Ln`-like
//! table, JSON, and Prometheus text metrics.

use std::fmt::Write as _;
use std::net::SocketAddr;

use lb_core::{Member, Snapshot};

use crate::http::EdgeStats;

/// What a status report is about: the service and its pool.
#[derive(Clone, Copy, Debug)]
pub struct Service<'a> {
    /// The protocol (`"HTTP"`, `"TCP"`).
    pub proto: &'a str,
    /// The address clients connect to.
    pub listen: SocketAddr,
    /// The scheduler spec.
    pub scheduler: &'a str,
    /// The pool's current snapshot.
    pub snapshot: &'a Snapshot,
    /// The counters of the HTTP server's edge, if there is one.
    pub edge: Option<&'a EdgeStats>,
}

/// The edge's counters by name, in the order reports give them: `(name,
/// Prometheus metric, kind, help, value)`. Rejections by status come apart.
fn edge_counters(
    e: &EdgeStats,
) -> [(&'static str, &'static str, &'static str, &'static str, u64); 8] {
    [
        (
            "open",
            "lb_edge_connections_open",
            "gauge",
            "Client connections open now.",
            e.open(),
        ),
        (
            "accepted",
            "lb_edge_connections_accepted_total",
            "counter",
            "Client connections accepted.",
            e.accepted(),
        ),
        (
            "limit_waits",
            "lb_edge_connection_limit_waits_total",
            "counter",
            "Times accepting paused at the connection limit.",
            e.limit_waits(),
        ),
        (
            "header_timeouts",
            "lb_edge_header_timeouts_total",
            "counter",
            "Clients that sent no request head in time (408).",
            e.header_timeouts(),
        ),
        (
            "body_timeouts",
            "lb_edge_body_timeouts_total",
            "counter",
            "Request bodies stalled past the body timeout (408, or cut).",
            e.body_timeouts(),
        ),
        (
            "idle_closed",
            "lb_edge_idle_closed_total",
            "counter",
            "Keep-alive connections closed for sending no next request in time.",
            e.idle_closed(),
        ),
        (
            "bad_bodies",
            "lb_edge_bad_bodies_total",
            "counter",
            "Chunked bodies found malformed after their head went on (cut).",
            e.bad_bodies(),
        ),
        (
            "unanswered",
            "lb_edge_closed_unanswered_total",
            "counter",
            "Requests refused by closing unanswered (HTTP/0.9).",
            e.unanswered(),
        ),
    ]
}

/// The edge lines of the text table.
fn edge_table(out: &mut String, e: &EdgeStats) {
    out.push_str("Edge");
    for (name, _, _, _, v) in edge_counters(e) {
        let _ = write!(out, " {name}={v}");
    }
    out.push_str("\nEdge rejected");
    for (status, n) in e.rejections() {
        let _ = write!(out, " {}={n}", status.as_u16());
    }
    out.push('\n');
}

fn health(m: &Member) -> String {
    let mut h = m.health().as_str().to_owned();
    if m.is_backup() {
        h.push_str(",backup");
    }
    h
}

/// The table `ipvsadm -Ln` prints, one row per backend in pool order, with
/// health, total connections and failures added:
///
/// ```text
/// Prot LocalAddress:Port Scheduler
///   -> Backend          RemoteAddress:Port     Weight ActiveConn InActConn Health      Total   Failures
/// HTTP 127.0.0.1:8080 wrr
///   -> web1             127.0.0.1:9001         2      0          0         up          12      0
/// ```
///
/// With an [edge](Service::edge), two lines follow: its counters, and the
/// requests it refused by status:
///
/// ```text
/// Edge open=3 accepted=120 limit_waits=0 header_timeouts=2 body_timeouts=0 idle_closed=5 bad_bodies=0 unanswered=0
/// Edge rejected 400=4 408=2 413=0 414=0 417=0 431=1 501=0 505=0
/// ```
pub fn table(s: &Service<'_>) -> String {
    let mut out = String::with_capacity(256 + 128 * s.snapshot.len());
    out.push_str("Prot LocalAddress:Port Scheduler\n");
    let _ = writeln!(
        out,
        "  -> {:<16} {:<22} {:<6} {:<10} {:<9} {:<11} {:<7} Failures",
        "Backend", "RemoteAddress:Port", "Weight", "ActiveConn", "InActConn", "Health", "Total",
    );
    let _ = writeln!(out, "{:<4} {} {}", s.proto, s.listen, s.scheduler);
    for m in s.snapshot.members() {
        let c = m.counters();
        let (active, inactive) = c.load();
        let _ = writeln!(
            out,
            "  -> {:<16} {:<22} {:<6} {:<10} {:<9} {:<11} {:<7} {}",
            m.name(),
            m.addr().to_string(),
            m.weight(),
            active,
            inactive,
            health(m),
            c.total(),
            c.failures()
        );
    }
    if let Some(e) = s.edge {
        edge_table(&mut out, e);
    }
    out
}

/// Append `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The same as [`table`], as one JSON object:
/// `{"proto":..,"listen":..,"scheduler":..,"backends":[{"name":..,"addr":..,
/// "weight":..,"configured_weight":..,"active":..,"inactive":..,"health":..,
/// "backup":..,"max_conns":..,"total":..,"successes":..,"failures":..,
/// "bytes_in":..,"bytes_out":..,"latency_ewma_us":..}]}`, and with an
/// [edge](Service::edge), `"edge":{"open":..,"accepted":..,"limit_waits":..,
/// "header_timeouts":..,"body_timeouts":..,"idle_closed":..,"bad_bodies":..,
/// "unanswered":..,"rejected":{"400":..,"408":..,...}}` after the backends.
pub fn json(s: &Service<'_>) -> String {
    let mut out = String::with_capacity(128 + 320 * s.snapshot.len());
    out.push_str("{\"proto\":");
    json_str(&mut out, s.proto);
    out.push_str(",\"listen\":");
    json_str(&mut out, &s.listen.to_string());
    out.push_str(",\"scheduler\":");
    json_str(&mut out, s.scheduler);
    out.push_str(",\"backends\":[");
    for (i, m) in s.snapshot.members().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let c = m.counters();
        let (active, inactive) = c.load();
        out.push_str("{\"name\":");
        json_str(&mut out, m.name());
        out.push_str(",\"addr\":");
        json_str(&mut out, &m.addr().to_string());
        let _ = write!(
            out,
            ",\"weight\":{},\"configured_weight\":{},\"active\":{active},\"inactive\":{inactive},\
             \"health\":\"{}\",\"backup\":{},\"max_conns\":{},\"total\":{},\"successes\":{},\
             \"failures\":{},\"bytes_in\":{},\"bytes_out\":{},\"latency_ewma_us\":{}}}",
            m.weight(),
            m.configured_weight(),
            m.health(),
            m.is_backup(),
            m.max_conns(),
            c.total(),
            c.successes(),
            c.failures(),
            c.bytes_in(),
            c.bytes_out(),
            c.latency_ewma_us()
        );
    }
    out.push(']');
    if let Some(e) = s.edge {
        out.push_str(",\"edge\":{");
        for (name, _, _, _, v) in edge_counters(e) {
            let _ = write!(out, "\"{name}\":{v},");
        }
        out.push_str("\"rejected\":{");
        for (i, (status, n)) in e.rejections().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(out, "{sep}\"{}\":{n}", status.as_u16());
        }
        out.push_str("}}");
    }
    out.push_str("}\n");
    out
}

/// Append `s` as a Prometheus label value.
fn label(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Prometheus text exposition (version 0.0.4) of every backend's counters,
/// labelled `backend` and `addr`; with an [edge](Service::edge), its
/// counters too (`lb_edge_*`, rejections as
/// `lb_edge_rejected_total{status="400"}`).
pub fn prometheus(s: &Service<'_>) -> String {
    type Get = fn(&Member) -> f64;
    let metrics: [(&str, &str, &str, Get); 10] = [
        (
            "lb_backend_weight",
            "gauge",
            "Weight the scheduler uses.",
            |m| f64::from(m.weight()),
        ),
        (
            "lb_backend_up",
            "gauge",
            "1 if the backend is up, else 0.",
            |m| f64::from(u8::from(m.is_up())),
        ),
        (
            "lb_backend_active_connections",
            "gauge",
            "Connections or requests in progress (ActiveConn).",
            |m| f64::from(m.active()),
        ),
        (
            "lb_backend_inactive_connections",
            "gauge",
            "Open idle connections (InActConn).",
            |m| f64::from(m.inactive()),
        ),
        (
            "lb_backend_connections_total",
            "counter",
            "Connections or requests ever sent.",
            |m| m.counters().total() as f64,
        ),
        (
            "lb_backend_successes_total",
            "counter",
            "Attempts that succeeded.",
            |m| m.counters().successes() as f64,
        ),
        (
            "lb_backend_failures_total",
            "counter",
            "Attempts that failed.",
            |m| m.counters().failures() as f64,
        ),
        (
            "lb_backend_sent_bytes_total",
            "counter",
            "Bytes sent to the backend.",
            |m| m.counters().bytes_in() as f64,
        ),
        (
            "lb_backend_received_bytes_total",
            "counter",
            "Bytes received from the backend.",
            |m| m.counters().bytes_out() as f64,
        ),
        (
            "lb_backend_latency_ewma_seconds",
            "gauge",
            "Smoothed response latency.",
            |m| f64::from(m.counters().latency_ewma_us()) / 1e6,
        ),
    ];
    let mut out = String::with_capacity(1024 + 900 * s.snapshot.len());
    for (name, kind, help, get) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for m in s.snapshot.members() {
            out.push_str(name);
            out.push_str("{backend=\"");
            label(&mut out, m.name());
            let _ = writeln!(out, "\",addr=\"{}\"}} {}", m.addr(), get(m));
        }
    }
    if let Some(e) = s.edge {
        for (_, name, kind, help, v) in edge_counters(e) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        let name = "lb_edge_rejected_total";
        let help = "Requests the edge answered with an error itself, by status.";
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (status, n) in e.rejections() {
            let _ = writeln!(out, "{name}{{status=\"{}\"}} {n}", status.as_u16());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::{Backend, Health, Pool};

    fn pool() -> Pool {
        let pool = Pool::new();
        pool.add(Backend::new("web\"1", "127.0.0.1:9001".parse().unwrap()).with_weight(2))
            .unwrap();
        let b = pool
            .add(Backend::new("web2", "[::1]:9002".parse().unwrap()).with_backup(true))
            .unwrap();
        pool.set_health(b, Health::Down).unwrap();
        let m = pool.load().members()[0].clone();
        let mut g = m.connect();
        g.idle();
        std::mem::forget(g);
        let _ = m.connect();
        m.counters().record(false, None);
        pool
    }

    #[test]
    fn table_has_a_row_per_backend() {
        let pool = pool();
        let snap = pool.load();
        let s = Service {
            proto: "HTTP",
            listen: "127.0.0.1:8080".parse().unwrap(),
            scheduler: "wrr",
            snapshot: &snap,
            edge: None,
        };
        let t = table(&s);
        let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[2], vec!["HTTP", "127.0.0.1:8080", "wrr"]);
        assert_eq!(
            rows[3],
            vec![
                "->",
                "web\"1",
                "127.0.0.1:9001",
                "2",
                "0",
                "1",
                "up",
                "2",
                "1"
            ]
        );
        assert_eq!(
            rows[4],
            vec![
                "->",
                "web2",
                "[::1]:9002",
                "1",
                "0",
                "0",
                "down,backup",
                "0",
                "0"
            ]
        );
    }

    #[test]
    fn json_and_metrics_escape_names() {
        let pool = pool();
        let snap = pool.load();
        let s = Service {
            proto: "HTTP",
            listen: "127.0.0.1:8080".parse().unwrap(),
            scheduler: "wrr",
            snapshot: &snap,
            edge: None,
        };
        let j = json(&s);
        assert!(
            j.contains("{\"name\":\"web\\\"1\",\"addr\":\"127.0.0.1:9001\",\"weight\":2,"),
            "{j}"
        );
        assert!(
            j.contains("\"inactive\":1,\"health\":\"up\",\"backup\":false"),
            "{j}"
        );
        assert!(j.contains("\"health\":\"down\",\"backup\":true"), "{j}");
        let p = prometheus(&s);
        assert!(
            p.contains("lb_backend_up{backend=\"web2\",addr=\"[::1]:9002\"} 0\n"),
            "{p}"
        );
        assert!(
            p.contains(
                "lb_backend_failures_total{backend=\"web\\\"1\",addr=\"127.0.0.1:9001\"} 1\n"
            ),
            "{p}"
        );
        assert!(
            p.contains("# TYPE lb_backend_connections_total counter\n"),
            "{p}"
        );
    }

    #[test]
    fn the_edge_shows_in_every_format() {
        use crate::http::edge::Reject;
        use http::StatusCode;
        let pool = pool();
        let snap = pool.load();
        let edge = std::sync::Arc::new(EdgeStats::default());
        let _open = edge.open_guard();
        for _ in 0..2 {
            edge.count_reject(&Reject::answer(StatusCode::BAD_REQUEST, "x"));
        }
        edge.count_reject(&Reject::answer(StatusCode::EXPECTATION_FAILED, "x"));
        edge.count_header_timeout();
        let s = Service {
            proto: "HTTP",
            listen: "127.0.0.1:8080".parse().unwrap(),
            scheduler: "wrr",
            snapshot: &snap,
            edge: Some(&edge),
        };
        let t = table(&s);
        assert!(
            t.contains("\nEdge open=1 accepted=1 limit_waits=0 header_timeouts=1 "),
            "{t}"
        );
        assert!(
            t.contains("\nEdge rejected 400=2 408=0 413=0 414=0 417=1 431=0 501=0 505=0\n"),
            "{t}"
        );
        let j = json(&s);
        assert!(j.ends_with("],\"edge\":{\"open\":1,\"accepted\":1,\"limit_waits\":0,\"header_timeouts\":1,\
            \"body_timeouts\":0,\"idle_closed\":0,\"bad_bodies\":0,\"unanswered\":0,\
            \"rejected\":{\"400\":2,\"408\":0,\"413\":0,\"414\":0,\"417\":1,\"431\":0,\"501\":0,\"505\":0}}}\n"), "{j}");
        let p = prometheus(&s);
        assert!(
            p.contains("\nlb_edge_rejected_total{status=\"400\"} 2\n"),
            "{p}"
        );
        assert!(
            p.contains("\nlb_edge_rejected_total{status=\"417\"} 1\n"),
            "{p}"
        );
        assert!(
            p.contains("# TYPE lb_edge_connections_open gauge\nlb_edge_connections_open 1\n"),
            "{p}"
        );
        assert!(p.contains("\nlb_edge_header_timeouts_total 1\n"), "{p}");
        let without = prometheus(&Service { edge: None, ..s });
        assert!(!without.contains("lb_edge"), "{without}");
    }
}
