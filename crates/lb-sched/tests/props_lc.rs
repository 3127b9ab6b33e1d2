//! Properties of lc, wlc, sed, nq, fo and ovf against brute-force models
//! over random pools, and of twos, lblc and lblcr over random sequences.

use std::net::SocketAddr;
use std::time::Duration;

use lb_core::{Backend, BackendId, ConnGuard, Ctx, Health, Pool};
use lb_sched::{build, Balancer};
use proptest::prelude::*;

/// One backend of a random pool.
#[derive(Debug, Clone)]
struct Spec {
    weight: u64,
    active: u32,
    inactive: u32,
    up: bool,
    max_conns: u64,
    tried: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u64..=5,
        0u32..6,
        0u32..6,
        prop::bool::weighted(0.8),
        prop_oneof![3 => Just(0u64), 1 => 1u64..10],
        prop::bool::weighted(0.1),
    )
        .prop_map(|(weight, active, inactive, up, max_conns, tried)| Spec {
            weight,
            active,
            inactive,
            up,
            max_conns,
            tried,
        })
}

impl Spec {
    fn eligible(&self) -> bool {
        let conns = u64::from(self.active) + u64::from(self.inactive);
        self.up && self.weight > 0 && (self.max_conns == 0 || conns < self.max_conns) && !self.tried
    }

    fn lvs_overhead(&self) -> u64 {
        256 * u64::from(self.active) + u64::from(self.inactive)
    }
}

/// The pool of `specs`, its open connections, and the ids marked tried.
fn build_pool(specs: &[Spec]) -> (Pool, Vec<ConnGuard>, Vec<BackendId>) {
    let pool = Pool::new();
    let (mut guards, mut tried) = (Vec::new(), Vec::new());
    for (i, s) in specs.iter().enumerate() {
        let addr: SocketAddr = format!("10.0.{}.{}:80", i / 200, i % 200 + 1)
            .parse()
            .unwrap();
        let health = if s.up { Health::Up } else { Health::Down };
        let b = Backend::new(format!("b{i}"), addr)
            .with_weight(s.weight)
            .with_health(health)
            .with_max_conns(s.max_conns);
        let id = pool.add(b).unwrap();
        let snap = pool.load();
        let m = snap.get(id).unwrap();
        guards.extend((0..s.active).map(|_| m.connect()));
        for _ in 0..s.inactive {
            let mut g = m.connect();
            g.idle();
            guards.push(g);
        }
        if s.tried {
            tried.push(id);
        }
    }
    (pool, guards, tried)
}

/// The first eligible index whose `oh / w` is minimal, checked pairwise by
/// the cross-multiplied rule: no eligible `j` is strictly better, and no
/// earlier eligible `j` is as good.
fn brute_argmin(specs: &[Spec], cost: impl Fn(&Spec) -> (u64, u64)) -> Option<usize> {
    let elig: Vec<usize> = (0..specs.len()).filter(|&i| specs[i].eligible()).collect();
    let better = |j: usize, i: usize| {
        let ((oj, wj), (oi, wi)) = (cost(&specs[j]), cost(&specs[i]));
        u128::from(oj) * u128::from(wi) < u128::from(oi) * u128::from(wj)
    };
    let as_good = |j: usize, i: usize| !better(i, j);
    elig.iter().copied().find(|&i| {
        elig.iter()
            .all(|&j| !better(j, i) && (j >= i || !as_good(j, i)))
    })
}

/// The first eligible index of the highest weight among those `fits` admits.
fn brute_heaviest(specs: &[Spec], fits: impl Fn(&Spec) -> bool) -> Option<usize> {
    let ok = |s: &Spec| s.eligible() && fits(s);
    let max = specs.iter().filter(|s| ok(s)).map(|s| s.weight).max()?;
    specs.iter().position(|s| ok(s) && s.weight == max)
}

fn model(name: &str, specs: &[Spec]) -> Option<usize> {
    let weighted = |f: fn(&Spec) -> u64| move |s: &Spec| (f(s), s.weight);
    let sed = |s: &Spec| u64::from(s.active) + 1;
    match name {
        "lc" => brute_argmin(specs, |s| (s.lvs_overhead(), 1)),
        "wlc" => brute_argmin(specs, weighted(Spec::lvs_overhead)),
        "sed" => brute_argmin(specs, weighted(sed)),
        "nq" => specs
            .iter()
            .position(|s| s.eligible() && s.active == 0)
            .or_else(|| brute_argmin(specs, weighted(sed))),
        "fo" => brute_heaviest(specs, |_| true),
        "ovf" => brute_heaviest(specs, |s| u64::from(s.active) <= s.weight),
        _ => unreachable!("no model for {name}"),
    }
}

fn client() -> SocketAddr {
    "198.51.100.1:40000".parse().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// lc, wlc, sed, nq, fo and ovf pick exactly what their brute-force
    /// models pick: never an ineligible backend, none exactly when the
    /// model finds none.
    #[test]
    fn least_connection_family_matches_brute_force(specs in prop::collection::vec(spec(), 0..9)) {
        let (pool, _guards, tried) = build_pool(&specs);
        let ctx = Ctx::at(client(), Duration::ZERO).with_tried(&tried);
        for name in ["lc", "wlc", "sed", "nq", "fo", "ovf"] {
            let lb = Balancer::new(pool.clone(), build(name).unwrap());
            let snap = lb.pool().load();
            let got = lb.scheduler().pick(&snap, &ctx).map(|p| snap.index_of(p.member().id()).unwrap());
            prop_assert_eq!(got, model(name, &specs), "{}", name);
            if let Some(i) = got {
                prop_assert!(specs[i].eligible(), "{} picked an ineligible backend", name);
            }
        }
    }
}

/// One step of a random run of the stateful schedulers.
#[derive(Debug, Clone)]
enum Step {
    /// Pick for destination `n` (or without one) and open the connection.
    Conn(Option<u8>),
    /// Close the oldest open connection.
    Close,
    Idle,
    Weight(usize, u64),
    Health(usize, bool),
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop::option::weighted(0.95, 0u8..4).prop_map(Step::Conn),
        2 => Just(Step::Close),
        1 => Just(Step::Idle),
        1 => (0usize..5, 0u64..=4).prop_map(|(i, w)| Step::Weight(i, w)),
        1 => (0usize..5, any::<bool>()).prop_map(|(i, up)| Step::Health(i, up)),
        1 => (0u64..40).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// twos, lblc and lblcr, whatever their state: never an ineligible
    /// backend, and none exactly when nothing is eligible (or, for lblc and
    /// lblcr, when there is no destination).
    #[test]
    fn stateful_schedulers_pick_only_eligible_backends(
        weights in prop::collection::vec(0u64..=4, 1..6),
        steps in prop::collection::vec(step(), 1..80),
        seed in any::<u64>(),
    ) {
        for sched in [format!("twos seed={seed}"), "lblc expire=60".into(), "lblcr expire=30".into()] {
            let pool = Pool::new();
            let ids: Vec<BackendId> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| {
                    let addr = format!("10.0.0.{}:80", i + 1).parse().unwrap();
                    pool.add(Backend::new(format!("b{i}"), addr).with_weight(w)).unwrap()
                })
                .collect();
            let lb = Balancer::new(pool.clone(), build(&sched).unwrap());
            let needs_dest = !sched.starts_with("twos");
            let (mut now, mut open) = (Duration::ZERO, std::collections::VecDeque::new());
            for s in &steps {
                match s {
                    Step::Conn(dest) => {
                        let mut ctx = Ctx::at(client(), now);
                        if let Some(n) = dest {
                            ctx = ctx.with_dest(format!("192.0.2.{n}:80").parse().unwrap());
                        }
                        let snap = pool.load();
                        let any = snap.members().iter().any(|m| m.is_eligible());
                        let got = lb.scheduler().pick(&snap, &ctx);
                        let expect = any && (dest.is_some() || !needs_dest);
                        prop_assert_eq!(got.is_some(), expect, "{}: {:?}", sched, s);
                        if let Some(p) = got {
                            prop_assert!(p.member().is_eligible(), "{} picked {}", sched, p.member().name());
                            open.push_back(p.connect());
                        }
                    }
                    Step::Close => drop(open.pop_front()),
                    Step::Idle => open.iter_mut().for_each(|g| g.idle()),
                    Step::Weight(i, w) => pool.set_weight(ids[i % ids.len()], *w).unwrap(),
                    Step::Health(i, up) => {
                        let h = if *up { Health::Up } else { Health::Down };
                        pool.set_health(ids[i % ids.len()], h).unwrap();
                    }
                    Step::Advance(secs) => now += Duration::from_secs(*secs),
                }
            }
        }
    }
}
