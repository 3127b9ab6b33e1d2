//! The `reference/replay/nginx-*.trace` fixtures, and the registry.

use std::collections::HashMap;

use lb_core::{Backend, Ctx, Health, Pool};
use lb_sched::{Balancer, Conn, Features};

use crate::{addr, set_health};

// === the replay fixtures (reference/replay/nginx-*.trace) ===

/// A replay: named connections on a balancer.
struct Replay {
    lb: Balancer,
    conns: HashMap<u32, Conn>,
    out: Vec<String>,
}

impl Replay {
    fn new(spec: &str, backends: Vec<Backend>) -> Self {
        let pool = Pool::new();
        for b in backends {
            pool.add(b).unwrap();
        }
        Replay {
            lb: Balancer::new(pool, lb_sched::build(spec).unwrap()),
            conns: HashMap::new(),
            out: Vec::new(),
        }
    }

    fn conn(&mut self, id: u32, client: &str, key: Option<&str>) {
        let mut c = Ctx::new(addr(client));
        if let Some(k) = key {
            c = c.with_key(k.as_bytes());
        }
        let name = match self.lb.connect(&c) {
            Ok(conn) => {
                let name = conn.name.to_string();
                self.conns.insert(id, conn);
                name
            }
            Err(_) => "-".to_owned(),
        };
        self.out.push(format!("{id} {name}"));
    }

    fn health(&mut self, name: &str, h: Health) {
        set_health(&self.lb, name, h);
    }

    fn check(&self, expected: &str) {
        assert_eq!(self.out.join("\n"), expected.trim());
    }
}

fn be(name: &str, a: &str) -> Backend {
    Backend::new(name, addr(a))
}

#[test]
fn trace_nginx_wrr_backup() {
    let mut r = Replay::new(
        "wrr",
        vec![
            be("a", "10.0.0.1:80").with_weight(5),
            be("b", "10.0.0.2:80"),
            be("c", "10.0.0.3:80"),
            be("x", "10.0.0.9:80").with_weight(2).with_backup(true),
            be("y", "10.0.0.10:80").with_backup(true),
        ],
    );
    for id in 1..=7 {
        r.conn(id, &format!("1.1.1.1:{}", 999 + id), None);
    }
    for name in ["a", "b", "c"] {
        r.health(name, Health::Down);
    }
    for id in 8..=10 {
        r.conn(id, &format!("1.1.1.1:{}", 999 + id), None);
    }
    r.health("b", Health::Up);
    r.conn(11, "1.1.1.1:1010", None);
    r.check("1 a\n2 a\n3 b\n4 a\n5 c\n6 a\n7 a\n8 x\n9 y\n10 x\n11 b");
}

#[test]
fn trace_nginx_wrr_max_conns() {
    let mut r = Replay::new(
        "wrr",
        vec![
            be("a", "10.0.0.1:80").with_max_conns(1),
            be("b", "10.0.0.2:80"),
        ],
    );
    r.conn(1, "1.1.1.1:1000", None);
    r.conn(2, "1.1.1.1:1001", None);
    r.conn(3, "1.1.1.1:1002", None);
    r.conns.remove(&1); // close 1
    r.conn(4, "1.1.1.1:1003", None);
    r.conn(5, "1.1.1.1:1004", None);
    r.conns.get_mut(&5).unwrap().guard.idle(); // idle 5
    r.conn(6, "1.1.1.1:1005", None);
    r.conn(7, "1.1.1.1:1006", None);
    r.check("1 a\n2 b\n3 b\n4 b\n5 a\n6 b\n7 b");
}

#[test]
fn trace_nginx_least_conn_ties() {
    let mut r = Replay::new(
        "least_conn",
        vec![
            be("a", "10.0.0.1:80").with_weight(2),
            be("b", "10.0.0.2:80"),
            be("c", "10.0.0.3:80"),
        ],
    );
    for id in 1..=5 {
        r.conn(id, &format!("1.1.1.1:{}", 999 + id), None);
    }
    r.check("1 a\n2 b\n3 c\n4 a\n5 c");
}

fn abc() -> Vec<Backend> {
    vec![
        be("a", "10.0.0.1:80"),
        be("b", "10.0.0.2:80"),
        be("c", "10.0.0.3:80"),
    ]
}

#[test]
fn trace_nginx_ip_hash() {
    let mut r = Replay::new("ip_hash", abc());
    r.conn(1, "192.168.1.77:5000", None);
    r.conn(2, "192.168.1.200:6000", None);
    r.conn(3, "203.0.113.5:5000", None);
    r.conn(4, "[2001:db8::1]:5000", None);
    r.health("b", Health::Down);
    r.conn(5, "192.168.1.77:5001", None);
    r.conn(6, "172.16.5.9:5000", None);
    r.check("1 b\n2 b\n3 a\n4 c\n5 c\n6 c");
}

#[test]
fn trace_nginx_hash_key() {
    let mut r = Replay::new("hash", abc());
    r.conn(1, "1.1.1.1:1000", Some("abc"));
    r.health("c", Health::Down);
    r.conn(2, "1.1.1.1:1001", Some("abc"));
    r.conn(3, "1.1.1.1:1002", None);
    r.conn(4, "1.1.1.1:1003", Some(""));
    r.check("1 c\n2 a\n3 a\n4 b");
}

#[test]
fn trace_nginx_hash_consistent() {
    let mut r = Replay::new("hash consistent", abc().into_iter().take(2).collect());
    for (id, key) in [(1, "user42"), (2, "abc"), (3, "cart/7"), (4, "wrap23476")] {
        r.conn(id, &format!("1.1.1.1:{}", 999 + id), Some(key));
    }
    r.health("b", Health::Down);
    r.conn(5, "1.1.1.1:1004", Some("abc"));
    r.check("1 a\n2 b\n3 b\n4 a\n5 a");
}

// === the registry ===

#[test]
fn registry_builds_the_nginx_methods_with_their_features() {
    let both = Features {
        backup: true,
        max_conns: true,
    };
    let limits = Features {
        backup: false,
        max_conns: true,
    };
    for (spec, name, features) in [
        ("wrr", "wrr", both),
        ("least_conn", "least_conn", both),
        ("ip_hash", "ip_hash", limits),
        ("hash", "hash", limits),
        ("hash consistent", "hash", limits),
        ("random", "random", limits),
        ("random two", "random", limits),
        ("random two least_conn seed=7", "random", limits),
        ("random seed=0", "random", limits),
    ] {
        let s = lb_sched::build(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!((s.name(), s.features()), (name, features), "{spec}");
    }
}

#[test]
fn registry_rejects_misplaced_and_repeated_flags() {
    for (spec, needle) in [
        ("ip_hash consistent", "\"consistent\""),
        ("hash ketama", "\"ketama\""),
        ("hash consistent consistent", "twice"),
        ("least_conn x", "\"x\""),
        ("random least_conn", "least_conn"),
        ("random two two", "twice"),
        ("random two least_conn least_conn", "twice"),
        ("random three", "\"three\""),
        ("random seed=x", "seed"),
        ("random seed=-1", "seed"),
        ("random seed=1 seed=2", "twice"),
        ("hash consistent=1", "consistent=1"),
    ] {
        match lb_sched::build(spec) {
            Ok(s) => panic!("{spec} built {}", s.name()),
            Err(e) => assert!(e.to_string().contains(needle), "{spec}: {e}"),
        }
    }
}
