//! Properties of the nginx methods on random pools: ip_hash keeps a /24 on
//! one backend, the consistent ring moves only the new server's share of
//! keys, no method picks an unusable backend, backups serve only when no
//! primary can, and `max_conns` holds with several threads picking at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use lb_core::{Backend, ConnGuard, Ctx, Health, Pool};
use lb_sched::{Balancer, Conn};
use proptest::prelude::*;

/// Every nginx method, by registry spec.
const NGINX: &[&str] = &[
    "wrr",
    "least_conn",
    "ip_hash",
    "hash",
    "hash consistent",
    "random",
    "random two",
];

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 80))
}

fn supports_backup(spec: &str) -> bool {
    lb_sched::build(spec).unwrap().features().backup
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ip_hash_keeps_a_slash_24_on_one_backend(
        weights in prop::collection::vec(0u64..5, 1..9),
        prefix in any::<[u8; 3]>(),
        hosts in prop::collection::vec((any::<u8>(), any::<u16>()), 2..24),
    ) {
        prop_assume!(weights.iter().any(|&w| w > 0));
        let pool = Pool::new();
        for (i, &w) in weights.iter().enumerate() {
            pool.add(Backend::new(format!("b{i}"), addr(i)).with_weight(w)).unwrap();
        }
        let lb = Balancer::new(pool, lb_sched::build("ip_hash").unwrap());
        let mut open: Vec<Conn> = Vec::new();
        let mut seen = None;
        for &(host, port) in &hosts {
            let client = SocketAddr::from(([prefix[0], prefix[1], prefix[2], host], port));
            let conn = lb.connect(&Ctx::new(client)).unwrap();
            let first = *seen.get_or_insert(conn.backend);
            prop_assert_eq!(conn.backend, first, "{} left the /24's backend", client);
            open.push(conn);
        }
    }

    #[test]
    fn adding_a_server_to_a_consistent_ring_moves_only_its_share(
        n in 2usize..12,
        weights in prop::collection::vec(1u64..3, 12),
        seed in any::<u32>(),
    ) {
        let pool = Pool::new();
        for (i, &w) in weights.iter().take(n).enumerate() {
            pool.add(Backend::new(format!("b{i}"), addr(i)).with_weight(w)).unwrap();
        }
        let lb = Balancer::new(pool.clone(), lb_sched::build("hash consistent").unwrap());
        let keys: Vec<String> = (0..2000u32).map(|k| format!("{seed}/{k}")).collect();
        let owner = |key: &String| lb.pick(&Ctx::new(addr(999)).with_key(key.as_bytes())).unwrap().0;
        let before: Vec<_> = keys.iter().map(owner).collect();
        let new = pool.add(Backend::new("new", addr(n))).unwrap();
        let after: Vec<_> = keys.iter().map(owner).collect();
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                prop_assert_eq!(*a, new, "a key moved between two old servers");
                moved += 1;
            }
        }
        let share = moved as f64 / keys.len() as f64;
        let total: u64 = weights.iter().take(n).sum::<u64>() + 1;
        let expected = 1.0 / total as f64;
        println!("n={n} total weight {total}: moved {:.1}% of keys, ring share {:.1}%", share * 100.0, expected * 100.0);
        prop_assert!(share > expected / 4.0 && share < expected * 2.5, "moved {share}, expected about {expected}");
    }
}

#[derive(Debug, Clone)]
struct Spec {
    weight: u64,
    up: bool,
    backup: bool,
    max_conns: u64,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u64..4,
        prop::bool::weighted(0.7),
        prop::bool::weighted(0.3),
        0u64..3,
    )
        .prop_map(|(weight, up, backup, max_conns)| Spec {
            weight,
            up,
            backup,
            max_conns,
        })
}

/// One step of a random run: open a conn for a client/key, close the
/// `k`-th open conn, or flip a backend's health.
#[derive(Debug, Clone)]
enum Step {
    Open(u32),
    Close(usize),
    Flip(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => any::<u32>().prop_map(Step::Open),
        2 => any::<usize>().prop_map(Step::Close),
        1 => any::<usize>().prop_map(Step::Flip),
    ]
}

fn run(spec: &str, specs: &[Spec], steps: &[Step]) -> Result<(), TestCaseError> {
    let backups = supports_backup(spec);
    let pool = Pool::new();
    for (i, s) in specs.iter().enumerate() {
        let health = if s.up { Health::Up } else { Health::Down };
        let b = Backend::new(format!("b{i}"), addr(i))
            .with_weight(s.weight)
            .with_health(health);
        pool.add(
            b.with_backup(s.backup && backups)
                .with_max_conns(s.max_conns),
        )
        .unwrap();
    }
    let lb = Balancer::new(pool.clone(), lb_sched::build(spec).unwrap());
    let mut open: Vec<ConnGuard> = Vec::new();
    for st in steps {
        match *st {
            Step::Open(x) => {
                let client = SocketAddr::from((x.to_be_bytes(), 4000));
                let key = (x % 7).to_string();
                let ctx = Ctx::new(client).with_key(key.as_bytes());
                let snap = pool.load();
                let usable = |backup: bool| {
                    snap.members()
                        .iter()
                        .any(|m| m.is_backup() == backup && ctx.usable(m))
                };
                let (primary, backup) = (usable(false), usable(true));
                match lb.scheduler().pick(&snap, &ctx) {
                    Some(p) => {
                        let m = p.member();
                        prop_assert!(ctx.usable(m), "{} picked unusable {}", spec, m.name());
                        prop_assert!(
                            !m.is_backup() || !primary,
                            "{} used backup {} with a primary usable",
                            spec,
                            m.name()
                        );
                        open.push(p.try_connect().unwrap());
                    }
                    None => {
                        let any = primary || (backup && backups);
                        prop_assert!(!any, "{} found nothing although a backend is usable", spec);
                    }
                }
            }
            Step::Close(k) if !open.is_empty() => {
                open.swap_remove(k % open.len());
            }
            Step::Flip(k) if !specs.is_empty() => {
                let m = pool.load().members()[k % specs.len()].clone();
                let h = if m.is_up() { Health::Down } else { Health::Up };
                pool.set_health(m.id(), h).unwrap();
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn never_unusable_and_backups_only_when_no_primary_is(
        specs in prop::collection::vec(spec(), 0..8),
        steps in prop::collection::vec(step(), 1..40),
    ) {
        for spec in NGINX {
            run(spec, &specs, &steps)?;
        }
    }
}

/// Several threads connect and release at once; no backend ever holds more
/// than its `max_conns`, and every counter is back to zero at the end.
fn hammer(spec: &str, limits: &[u64]) {
    let pool = Pool::new();
    for (i, &max) in limits.iter().enumerate() {
        pool.add(
            Backend::new(format!("b{i}"), addr(i))
                .with_weight(1 + i as u64 % 3)
                .with_max_conns(max),
        )
        .unwrap();
    }
    let lb = Balancer::new(pool.clone(), lb_sched::build(spec).unwrap());
    let placed = AtomicU64::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..3u8)
            .map(|t| {
                let (lb, placed) = (&lb, &placed);
                s.spawn(move || {
                    let mut open: Vec<Conn> = Vec::new();
                    for n in 0..3000u32 {
                        let client = SocketAddr::from(([192, 0, t, (n % 251) as u8], 1024));
                        let key = (n % 13).to_le_bytes();
                        if let Ok(mut c) = lb.connect(&Ctx::new(client).with_key(&key)) {
                            let max = limits[c.name[1..].parse::<usize>().unwrap()];
                            let conns = c.guard.counters().conns();
                            assert!(
                                max == 0 || conns <= max,
                                "{spec}: {} holds {conns} > {max}",
                                c.name
                            );
                            placed.fetch_add(1, Ordering::Relaxed);
                            if n % 2 == 0 {
                                c.guard.idle(); // idle conns still count
                            }
                            open.push(c);
                        }
                        if open.len() > 3 || n % 5 == 0 {
                            let k = n as usize % open.len().max(1);
                            if k < open.len() {
                                open.swap_remove(k);
                            }
                        }
                    }
                })
            })
            .collect();
        // Meanwhile, watch every backend's count.
        let snap = pool.load();
        while !workers.iter().all(|w| w.is_finished()) {
            for (m, &max) in snap.members().iter().zip(limits) {
                assert!(
                    max == 0 || m.conns() <= max,
                    "{spec}: {} seen at {} > {max}",
                    m.name(),
                    m.conns()
                );
            }
            std::thread::yield_now();
        }
    });
    assert!(placed.load(Ordering::Relaxed) > 0, "{spec} placed nothing");
    for m in pool.load().members() {
        assert_eq!(m.conns(), 0, "{spec}: {} still counts conns", m.name());
    }
}

#[test]
fn max_conns_holds_with_threads_picking_and_releasing_at_once() {
    for spec in NGINX {
        hammer(spec, &[1, 2, 1, 0, 3]);
        hammer(spec, &[1, 1]);
    }
}
