//! Weighted power of two choices (`p2c`) and peak-EWMA (`peak_ewma`):
//! eligibility, weighted shares, load and latency awareness.

use std::time::Duration;

use lb_core::{Backend, BackendId, ConnGuard, Ctx, Health, Outcome, Pool};
use lb_sched::{Balancer, Explain};
use proptest::prelude::*;

fn addr(i: usize) -> std::net::SocketAddr {
    format!("10.0.0.{}:80", i + 1).parse().unwrap()
}

fn pool_of(weights: &[u64]) -> Pool {
    let pool = Pool::new();
    for (i, w) in weights.iter().enumerate() {
        pool.add(Backend::new(format!("b{i}"), addr(i)).with_weight(*w))
            .unwrap();
    }
    pool
}

fn client() -> Ctx<'static> {
    Ctx::at("192.0.2.1:40000".parse().unwrap(), Duration::from_secs(1))
}

/// Picks per backend position over `n` picks, opening no connection.
fn shares(lb: &Balancer, n: usize) -> Vec<usize> {
    let mut counts = vec![0; lb.pool().load().len()];
    for _ in 0..n {
        let (id, _) = lb.pick(&client()).expect("a backend is usable");
        counts[lb.pool().load().index_of(id).unwrap()] += 1;
    }
    counts
}

fn assert_shares_follow_weights(counts: &[usize], weights: &[u64]) {
    let n: usize = counts.iter().sum();
    let total: u64 = weights.iter().sum();
    for (c, w) in counts.iter().zip(weights) {
        let expect = n as f64 * *w as f64 / total as f64;
        let tol = 0.05 * n as f64 / weights.len() as f64 + 3.0 * expect.sqrt();
        assert!(
            (*c as f64 - expect).abs() <= tol,
            "share {c} of {n} for weight {w}/{total} (expected {expect:.0} +- {tol:.0}): {counts:?}"
        );
    }
}

#[test]
fn equal_loads_give_shares_proportional_to_weight() {
    let weights = [1, 2, 3, 4];
    for spec in ["p2c seed=7", "peak_ewma seed=7"] {
        let lb = Balancer::new(pool_of(&weights), lb_sched::build(spec).unwrap());
        assert_shares_follow_weights(&shares(&lb, 20_000), &weights);
    }
}

#[test]
fn held_connections_settle_in_proportion_to_weight() {
    let weights = [1, 2, 3];
    for spec in ["p2c seed=11", "peak_ewma seed=11"] {
        let pool = pool_of(&weights);
        let lb = Balancer::new(pool.clone(), lb_sched::build(spec).unwrap());
        let held: Vec<_> = (0..600).map(|_| lb.connect(&client()).unwrap()).collect();
        let conns: Vec<u64> = pool.load().members().iter().map(|m| m.conns()).collect();
        // Every pick compares conns/weight, so no backend drifts far from
        // its share of 100 per unit of weight.
        for (c, w) in conns.iter().zip(weights) {
            let per_weight = *c as f64 / w as f64;
            assert!((90.0..=110.0).contains(&per_weight), "{spec}: {conns:?}");
        }
        drop(held);
        assert!(pool.load().members().iter().all(|m| m.conns() == 0));
    }
}

#[test]
fn p2c_prefers_the_less_loaded_per_unit_of_weight() {
    // Two backends: both are always drawn, so the comparison decides.
    let pool = pool_of(&[1, 3]);
    let lb = Balancer::new(pool.clone(), lb_sched::build("p2c seed=1").unwrap());
    let snap = pool.load();
    let (a, b) = (&snap.members()[0], &snap.members()[1]);
    let _ga: Vec<ConnGuard> = (0..2).map(|_| a.connect()).collect();
    let mut gb: Vec<ConnGuard> = (0..5).map(|_| b.connect()).collect();
    gb[0].idle(); // inactive connections count as load too
                  // a: 2/1 = 2; b: 5/3 < 2 -> b, every time.
    for _ in 0..50 {
        assert_eq!(lb.pick(&client()).unwrap().0, b.id());
    }
    gb.push(b.connect()); // b: 6/3 = 2 ties with a: the first drawn wins
    let counts = shares(&lb, 4_000);
    assert!(
        counts[0] > 500 && counts[1] > 2_500,
        "a tie follows the weights: {counts:?}"
    );
    gb.push(b.connect()); // b: 7/3 > 2 -> a
    for _ in 0..50 {
        assert_eq!(lb.pick(&client()).unwrap().0, a.id());
    }
    let mut why = Explain::new();
    let conn = lb.explain(&client(), &mut why).unwrap();
    assert_eq!(conn.backend, a.id());
    assert!(why.to_string().contains("smaller conns/weight"), "{why}");
}

#[test]
fn the_tried_set_is_respected_and_one_usable_backend_is_taken_alone() {
    let pool = pool_of(&[5, 1, 1]);
    let lb = Balancer::new(pool.clone(), lb_sched::build("p2c").unwrap());
    let ids: Vec<BackendId> = pool.load().members().iter().map(|m| m.id()).collect();
    let tried = [ids[0], ids[2]];
    for _ in 0..100 {
        let ctx = client().with_tried(&tried);
        assert_eq!(lb.pick(&ctx).unwrap().0, ids[1]);
    }
    let ctx = client().with_tried(&ids);
    assert!(lb.pick(&ctx).is_none(), "everything tried: no backend");
}

#[test]
fn max_conns_full_backends_are_skipped() {
    let pool = Pool::new();
    pool.add(
        Backend::new("full", addr(0))
            .with_weight(100)
            .with_max_conns(1),
    )
    .unwrap();
    pool.add(Backend::new("free", addr(1))).unwrap();
    let lb = Balancer::new(pool.clone(), lb_sched::build("peak_ewma").unwrap());
    let first = pool.load().members()[0].try_connect().unwrap();
    for _ in 0..100 {
        assert_eq!(lb.pick(&client()).unwrap().1, addr(1));
    }
    drop(first);
}

fn observe_ms(lb: &Balancer, sched_snap: &Pool, id: BackendId, ms: u64, at: Duration) {
    lb.scheduler().observe(
        &sched_snap.load(),
        id,
        Outcome::Success,
        Duration::from_millis(ms),
        at,
    );
}

#[test]
fn a_slow_backend_gets_fewer_picks_under_peak_ewma() {
    let pool = pool_of(&[1, 1, 1]);
    let lb = Balancer::new(pool.clone(), lb_sched::build("peak_ewma seed=3").unwrap());
    let ids: Vec<BackendId> = pool.load().members().iter().map(|m| m.id()).collect();
    let t = Duration::from_secs(1);
    observe_ms(&lb, &pool, ids[0], 5, t);
    observe_ms(&lb, &pool, ids[1], 5, t);
    observe_ms(&lb, &pool, ids[2], 200, t);
    let counts = shares(&lb, 3_000);
    // The slow one loses every comparison it takes part in.
    assert_eq!(counts[2], 0, "{counts:?}");
    assert!(counts[0] > 1_200 && counts[1] > 1_200, "{counts:?}");

    // In-flight requests raise the fast ones' cost: 5 ms * (50 + 1) > 200 ms.
    let snap = pool.load();
    let _busy: Vec<ConnGuard> = (0..50)
        .flat_map(|_| [snap.members()[0].connect(), snap.members()[1].connect()])
        .collect();
    let counts = shares(&lb, 3_000);
    assert!(
        counts[2] > 1_500,
        "the slow but idle backend now wins: {counts:?}"
    );
}

#[test]
fn peak_ewma_reacts_to_a_peak_at_once_and_recovers_with_the_time_constant() {
    let pool = pool_of(&[1, 1]);
    let lb = Balancer::new(pool.clone(), lb_sched::build("peak_ewma decay=10").unwrap());
    let (a, b) = {
        let s = pool.load();
        (s.members()[0].id(), s.members()[1].id())
    };
    let at = Duration::from_secs;
    let pick_at = |t: Duration| lb.pick(&client().with_now(t)).unwrap().0;
    observe_ms(&lb, &pool, a, 20, at(100));
    observe_ms(&lb, &pool, b, 10, at(100));
    assert_eq!(pick_at(at(100)), b);
    // a keeps answering in 20 ms, which holds its estimate at 20 ms.
    let steady_a = |t: u64| observe_ms(&lb, &pool, a, 20, at(t));
    steady_a(101);
    observe_ms(&lb, &pool, b, 50, at(101)); // one slow answer: b is 50 ms now
    assert_eq!(pick_at(at(101)), a);
    // Fast answers from b pull it down over time constants, not at once.
    steady_a(102);
    observe_ms(&lb, &pool, b, 1, at(102));
    assert_eq!(
        pick_at(at(102)),
        a,
        "b: 50*e^-0.1 + 1*(1-e^-0.1) = 45.3 ms > 20 ms"
    );
    steady_a(120);
    observe_ms(&lb, &pool, b, 1, at(120));
    assert_eq!(
        pick_at(at(120)),
        b,
        "b: 45.3*e^-1.8 + 1*(1-e^-1.8) = 8.3 ms < 20 ms"
    );
}

#[test]
fn an_unmeasured_backend_uses_the_counters_latency_or_the_default_rtt() {
    let pool = pool_of(&[1, 1]);
    let lb = Balancer::new(
        pool.clone(),
        lb_sched::build("peak_ewma default_rtt=30").unwrap(),
    );
    let snap = pool.load();
    let (a, b) = (&snap.members()[0], &snap.members()[1]);
    // a has a smoothed latency of 100 ms in its counters; b none: 30 ms default.
    a.counters().record(true, Some(100_000));
    assert_eq!(lb.pick(&client()).unwrap().0, b.id());
    b.counters().record(true, Some(200_000));
    assert_eq!(lb.pick(&client()).unwrap().0, a.id());
    // A connect failure is not a latency sample; a success is.
    lb.scheduler().observe(
        &snap,
        a.id(),
        Outcome::ConnectFailed,
        Duration::from_secs(5),
        Duration::ZERO,
    );
    assert_eq!(lb.pick(&client()).unwrap().0, a.id());
    lb.scheduler().observe(
        &snap,
        a.id(),
        Outcome::Timeout,
        Duration::from_secs(5),
        Duration::ZERO,
    );
    assert_eq!(
        lb.pick(&client().with_now(Duration::ZERO)).unwrap().0,
        b.id()
    );
}

#[test]
fn estimates_survive_pool_changes() {
    let pool = pool_of(&[1, 1]);
    let lb = Balancer::new(pool.clone(), lb_sched::build("peak_ewma").unwrap());
    let ids: Vec<BackendId> = pool.load().members().iter().map(|m| m.id()).collect();
    observe_ms(&lb, &pool, ids[0], 500, Duration::from_secs(1));
    observe_ms(&lb, &pool, ids[1], 1, Duration::from_secs(1));
    pool.add(Backend::new("late", addr(9)).with_health(Health::Down))
        .unwrap();
    pool.set_weight(ids[1], 2).unwrap();
    for _ in 0..50 {
        assert_eq!(lb.pick(&client()).unwrap().0, ids[1]);
    }
}

#[test]
fn options_are_checked() {
    assert!(lb_sched::build("p2c seed=x").is_err());
    assert!(lb_sched::build("p2c decay=1").is_err());
    assert!(lb_sched::build("peak_ewma decay=0").is_err());
    assert!(lb_sched::build("peak_ewma decay=0.5 default_rtt=5 seed=9").is_ok());
    assert_eq!(lb_sched::build("peak_ewma").unwrap().name(), "peak_ewma");
}

#[derive(Debug, Clone)]
struct Spec {
    weight: u64,
    health: Health,
    max_conns: u64,
    open: u64,
    idle: u64,
    tried: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![Just(0u64), 1u64..5, Just(65_535)],
        prop_oneof![3 => Just(Health::Up), 1 => Just(Health::Down), 1 => Just(Health::Draining)],
        prop_oneof![Just(0u64), 1u64..4],
        0u64..4,
        0u64..3,
        prop::bool::weighted(0.2),
    )
        .prop_map(|(weight, health, max_conns, open, idle, tried)| Spec {
            weight,
            health,
            max_conns,
            open,
            idle,
            tried,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn never_an_unusable_backend_and_none_iff_nothing_usable(
        specs in prop::collection::vec(spec(), 0..8),
        sched in prop_oneof![Just("p2c"), Just("peak_ewma")],
        seed in any::<u64>(),
        latencies in prop::collection::vec(0u64..1_000, 8),
    ) {
        let pool = Pool::new();
        for (i, s) in specs.iter().enumerate() {
            pool.add(
                Backend::new(format!("b{i}"), addr(i))
                    .with_weight(s.weight)
                    .with_health(s.health)
                    .with_max_conns(s.max_conns),
            ).unwrap();
        }
        let lb = Balancer::new(pool.clone(), lb_sched::build(&format!("{sched} seed={seed}")).unwrap());
        let snap = pool.load();
        let mut guards = Vec::new();
        let mut tried = Vec::new();
        for (m, s) in snap.members().iter().zip(&specs) {
            for k in 0..s.open + s.idle {
                let mut g = m.connect();
                if k >= s.open { g.idle(); }
                guards.push(g);
            }
            if s.tried { tried.push(m.id()); }
            lb.scheduler().observe(&snap, m.id(), Outcome::Success,
                Duration::from_millis(latencies[guards.len() % 8]), Duration::from_secs(1));
        }
        let ctx = client().with_tried(&tried);
        let any_usable = snap.members().iter().any(|m| ctx.usable(m));
        for _ in 0..20 {
            match lb.scheduler().pick(&snap, &ctx) {
                Some(p) => prop_assert!(ctx.usable(p.member()), "picked unusable {:?}", p.member()),
                None => prop_assert!(!any_usable, "none although something is usable"),
            }
        }
        prop_assert_eq!(lb.scheduler().pick(&snap, &ctx).is_some(), any_usable);
    }

    #[test]
    fn a_lone_usable_backend_is_always_the_pick(n in 1usize..6, k in 0usize..6, seed in any::<u64>()) {
        let k = k % n;
        let weights: Vec<u64> = (0..n).map(|i| if i == k { 3 } else { 0 }).collect();
        let pool = pool_of(&weights);
        let lb = Balancer::new(pool.clone(), lb_sched::build(&format!("p2c seed={seed}")).unwrap());
        let want = pool.load().members()[k].id();
        for _ in 0..10 {
            prop_assert_eq!(lb.pick(&client()).map(|p| p.0), Some(want));
        }
    }
}
