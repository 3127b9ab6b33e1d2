//! Smooth weighted round robin and round robin properties (SCHEDULERS.md).

use std::collections::HashMap;

use lb_core::{Backend, Ctx, Pool};
use lb_sched::Balancer;
use proptest::prelude::*;

fn pool_with(weights: &[u64]) -> Pool {
    let pool = Pool::new();
    for (i, w) in weights.iter().enumerate() {
        let addr = format!("10.0.0.{}:80", i + 1).parse().unwrap();
        pool.add(Backend::new(format!("b{i}"), addr).with_weight(*w))
            .unwrap();
    }
    pool
}

fn ctx() -> Ctx<'static> {
    Ctx::new("192.0.2.1:1000".parse().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Over every window of sum-of-weights picks each backend gets exactly
    /// its weight, and no backend ever falls more than one pick behind its
    /// share along the way.
    #[test]
    fn wrr_exact_shares_and_smoothness(weights in prop::collection::vec(0u64..6, 1..7), windows in 1usize..4) {
        let total: u64 = weights.iter().sum();
        prop_assume!(total > 0);
        let lb = Balancer::new(pool_with(&weights), lb_sched::build("wrr").unwrap());
        let snap = lb.pool().load();
        let mut got = vec![0u64; weights.len()];
        for k in 1..=(total as usize * windows) {
            let p = lb.scheduler().pick(&snap, &ctx()).expect("a weighted backend is eligible");
            let i = snap.index_of(p.member().id()).unwrap();
            got[i] += 1;
            for (j, w) in weights.iter().enumerate() {
                // share after k picks is k*w/total; never more than one behind.
                let share_x_total = k as u64 * w;
                // At most one pick behind (nginx itself is exactly one behind
                // at times, e.g. weights 3,5,1,5,5,1 after 12 picks).
                prop_assert!(got[j] * total + total >= share_x_total,
                    "backend {} fell more than one pick behind after {} picks: got {}, share {}/{}",
                    j, k, got[j], share_x_total, total);
            }
            if k as u64 % total == 0 {
                for (j, w) in weights.iter().enumerate() {
                    prop_assert_eq!(got[j], w * (k as u64 / total), "exact share of backend {} per window", j);
                }
            }
        }
    }

    /// rr serves every eligible backend once per round, in pool order.
    #[test]
    fn rr_takes_turns(weights in prop::collection::vec(0u64..3, 1..8)) {
        let lb = Balancer::new(pool_with(&weights), lb_sched::build("rr").unwrap());
        let snap = lb.pool().load();
        let eligible: Vec<usize> = weights.iter().enumerate().filter(|(_, w)| **w > 0).map(|(i, _)| i).collect();
        let mut seen = Vec::new();
        for _ in 0..eligible.len() * 3 {
            match lb.scheduler().pick(&snap, &ctx()) {
                Some(p) => seen.push(snap.index_of(p.member().id()).unwrap()),
                None => prop_assert!(eligible.is_empty()),
            }
        }
        let expect: Vec<usize> = eligible.iter().cycle().take(seen.len()).copied().collect();
        prop_assert_eq!(seen, expect);
    }
}

#[test]
fn wrr_may_be_exactly_one_pick_behind_as_nginx_is() {
    // weights 3,5,1,5,5,1 (total 20): after 12 picks backend 4's share is
    // 3 picks and nginx's sequence has given it 2.
    let weights = [3u64, 5, 1, 5, 5, 1];
    let lb = Balancer::new(pool_with(&weights), lb_sched::build("wrr").unwrap());
    let snap = lb.pool().load();
    let mut got = [0u64; 6];
    for _ in 0..12 {
        let p = lb.scheduler().pick(&snap, &ctx()).unwrap();
        got[snap.index_of(p.member().id()).unwrap()] += 1;
    }
    assert_eq!(got[4], 2, "{got:?}");
}

#[test]
fn wrr_vectors_from_nginx() {
    for (weights, expect) in [
        (&[5u64, 1, 1][..], "aabacaa"),
        (&[4, 2, 1], "abacaba"),
        (&[1, 1, 1], "abcabc"),
        (&[2, 1], "abaaba"),
        (&[3, 2, 1], "abacbaabacba"),
    ] {
        let lb = Balancer::new(pool_with(weights), lb_sched::build("wrr").unwrap());
        let names: HashMap<String, char> = (0..weights.len())
            .map(|i| (format!("b{i}"), (b'a' + i as u8) as char))
            .collect();
        let got: String = (0..expect.len())
            .map(|_| names[&*lb.connect(&ctx()).unwrap().name])
            .collect();
        assert_eq!(got, expect, "weights {weights:?}");
    }
}

#[test]
fn wrr_weight_zero_and_down_are_skipped_and_currents_frozen() {
    let pool = pool_with(&[1, 1, 1]);
    let lb = Balancer::new(pool.clone(), lb_sched::build("wrr").unwrap());
    let name = |lb: &Balancer| lb.connect(&ctx()).unwrap().name.to_string();
    assert_eq!(name(&lb), "b0");
    let b1 = pool.find("b1").unwrap();
    pool.set_health(b1, lb_core::Health::Down).unwrap();
    // currents after the first pick: -2, 1, 1; b1 frozen at 1 while down.
    assert_eq!(name(&lb), "b2"); // b0 -1, b2 2 -> b2 (0)
    assert_eq!(name(&lb), "b2"); // b0 0, b2 1 -> b2 (-1)
    pool.set_health(b1, lb_core::Health::Up).unwrap();
    // b1 1+1 = 2 beats b0 1 and b2 0: its frozen current carried over.
    assert_eq!(name(&lb), "b1");
    pool.set_weight(b1, 0).unwrap();
    for _ in 0..4 {
        assert_ne!(name(&lb), "b1", "weight 0 quiesces");
    }
}

#[test]
fn wrr_currents_survive_effective_weight_changes_as_in_nginx() {
    // nginx lowers a failed peer's effective weight and raises it again at
    // run time without resetting anyone's current weight.
    let pool = pool_with(&[1, 1, 1]);
    let lb = Balancer::new(pool.clone(), lb_sched::build("wrr").unwrap());
    let name = |lb: &Balancer| lb.connect(&ctx()).unwrap().name.to_string();
    assert_eq!(name(&lb), "b0"); // currents -2, 1, 1
    let b2 = pool.find("b2").unwrap();
    pool.set_effective_weight(b2, Some(3)).unwrap();
    // b0 -1, b1 2, b2 4 -> b2 (total 5): only right if currents carried over
    // (from zeros b2 would win too, so check the next pick as well).
    assert_eq!(name(&lb), "b2"); // -1, 2, -1
    assert_eq!(name(&lb), "b1"); // 0, 3, 2 -> b1; reset to zeros it would be b2 then b0
}
