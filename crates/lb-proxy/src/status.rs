//! The state of a pool for people and programs: an `ipvsadm -Ln`-like
//! table, JSON, and Prometheus text metrics.

use std::fmt::Write as _;
use std::net::SocketAddr;

use lb_core::{Member, Snapshot};

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
/// "bytes_in":..,"bytes_out":..,"latency_ewma_us":..}]}`.
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
    out.push_str("]}\n");
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
/// labelled `backend` and `addr`.
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
}
