//! Properties every scheduler in the registry must hold, on random pools:
//! it never picks an unusable backend, it gives none when nothing is usable,
//! and (all but the pure hashing ones, whose bucket owner decides) it finds
//! a backend whenever one is usable.

use std::time::Duration;

use lb_core::{Backend, ConnGuard, Ctx, Health, Pool};
use lb_sched::Balancer;
use proptest::prelude::*;

/// Schedulers that may give none while some backend is usable: the hashing
/// ones when the client's bucket or slot owner is unusable, and ovf, which
/// skips every backend with more active connections than its weight
/// (SCHEDULERS.md; vector LVS-LC-1).
const MAY_REFUSE: &[&str] = &["sh", "dh", "mh", "ovf"];

#[derive(Debug, Clone)]
struct Spec {
    weight: u64,
    up: bool,
    active: u8,
    inactive: u8,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0u64..4, prop::bool::weighted(0.8), 0u8..4, 0u8..3).prop_map(
        |(weight, up, active, inactive)| Spec {
            weight,
            up,
            active,
            inactive,
        },
    )
}

fn check(name: &str, specs: &[Spec], clients: &[(u32, u16)]) -> Result<(), TestCaseError> {
    let pool = Pool::new();
    for (i, s) in specs.iter().enumerate() {
        let addr = format!("10.0.0.{}:80", i + 1).parse().unwrap();
        let health = if s.up { Health::Up } else { Health::Down };
        pool.add(
            Backend::new(format!("b{i}"), addr)
                .with_weight(s.weight)
                .with_health(health),
        )
        .unwrap();
    }
    let mut guards: Vec<ConnGuard> = Vec::new();
    for (m, s) in pool.load().members().iter().zip(specs) {
        for k in 0..(s.active + s.inactive) {
            let mut g = m.connect();
            if k >= s.active {
                g.idle();
            }
            guards.push(g);
        }
    }
    let lb = Balancer::new(pool.clone(), lb_sched::build(name).unwrap());
    let snap = pool.load();
    let any_usable = snap.members().iter().any(|m| m.is_eligible());
    for (t, &(ip, port)) in clients.iter().enumerate() {
        let client = std::net::SocketAddr::from((ip.to_be_bytes(), port));
        let dest = std::net::SocketAddr::from(((ip ^ 0x5a5a).to_be_bytes(), 80));
        let key = ip.to_string();
        let ctx = Ctx::at(client, Duration::from_secs(t as u64))
            .with_dest(dest)
            .with_key(key.as_bytes());
        let pick = lb.scheduler().pick(&snap, &ctx);
        match &pick {
            Some(p) => prop_assert!(
                p.member().is_eligible(),
                "{} picked unusable {} (weight {}, {})",
                name,
                p.member().name(),
                p.member().weight(),
                p.member().health()
            ),
            None => prop_assert!(
                !any_usable || MAY_REFUSE.contains(&name),
                "{} found nothing although a backend is usable",
                name
            ),
        }
    }
    drop(guards);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn never_unusable_none_only_when_nothing_usable(
        specs in prop::collection::vec(spec(), 0..9),
        clients in prop::collection::vec((any::<u32>(), any::<u16>()), 1..12),
    ) {
        for name in lb_sched::NAMES {
            check(name, &specs, &clients)?;
        }
    }
}
