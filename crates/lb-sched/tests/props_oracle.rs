//! The fast pick paths against plain linear scans, decision by decision,
//! over random sequences of picks, opens, closes, idles, activations and
//! weight, health, limit and membership changes.
//!
//! Two oracles:
//!
//! - an independent scan written here for rr, lc, wlc, sed and nq (the
//!   definitions of `SCHEDULERS.md`, pool order, first on ties);
//! - the scheduler's own linear scan, which its explained picks take: a
//!   twin pool receives the same operations and picks through
//!   [`Scheduler::explain`](lb_sched::Scheduler::explain), for every
//!   registered scheduler, so that indexes, cursors and caches must agree
//!   with the scan they replace.

use std::time::Duration;

use lb_core::{BackendId, Ctx, Member, Snapshot};
use lb_sched::Explain;
use proptest::prelude::*;

#[path = "oracle/world.rs"]
mod world;
use world::*;

// === the independent oracles ===

/// The first usable member minimising `cost` by the cross-multiplied rule.
fn scan_least<'s>(
    snap: &'s Snapshot,
    ctx: &Ctx<'_>,
    cost: impl Fn(&Member) -> (u64, u64),
) -> Option<&'s Member> {
    let mut best: Option<(&Member, u64, u64)> = None;
    for m in snap.members().iter().filter(|m| ctx.usable(m)) {
        let (oh, w) = cost(m);
        match best {
            Some((_, boh, bw))
                if u128::from(boh) * u128::from(w) <= u128::from(oh) * u128::from(bw) => {}
            _ => best = Some((m, oh, w)),
        }
    }
    best.map(|(m, ..)| m)
}

/// State the stateful oracles keep between picks.
#[derive(Default)]
struct Memory {
    /// rr's cursor: the id of its previous pick.
    rr_last: Option<BackendId>,
    /// nginx's `current` of each backend (absent: 0).
    current: std::collections::HashMap<BackendId, i64>,
}

impl Memory {
    fn wrote(&mut self, w: Wrote) {
        if w == Wrote::Reset {
            self.current.clear();
        }
    }

    /// One smooth step over the usable members that `pass` admits: each
    /// adds its weight to its `current`, the largest (first on ties) wins
    /// and gives back the sum of the weights.
    fn swrr<'s>(
        &mut self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        pass: impl Fn(&Member) -> bool,
    ) -> Option<&'s Member> {
        let cands: Vec<&Member> = snap
            .members()
            .iter()
            .filter(|m| pass(m) && ctx.usable(m))
            .collect();
        let total: i64 = cands.iter().map(|m| i64::from(m.weight())).sum();
        let mut best: Option<(&Member, i64)> = None;
        for m in cands {
            let c = self.current.entry(m.id()).or_insert(0);
            *c += i64::from(m.weight());
            if best.is_none_or(|(_, bc)| *c > bc) {
                best = Some((m, *c));
            }
        }
        let (m, _) = best?;
        *self.current.get_mut(&m.id()).unwrap() -= total;
        Some(m)
    }
}

/// The oracle's choice for `sched`, advancing its memory.
fn oracle<'s>(
    sched: &str,
    snap: &'s Snapshot,
    ctx: &Ctx<'_>,
    mem: &mut Memory,
) -> Option<&'s Member> {
    let lvs = |m: &Member| 256 * u64::from(m.active()) + u64::from(m.inactive());
    let sed = |m: &Member| (u64::from(m.active()) + 1, u64::from(m.weight()));
    match sched {
        "lc" => scan_least(snap, ctx, |m| (lvs(m), 1)),
        "wlc" => scan_least(snap, ctx, |m| (lvs(m), u64::from(m.weight()))),
        "sed" => scan_least(snap, ctx, sed),
        "nq" => snap
            .members()
            .iter()
            .find(|m| ctx.usable(m) && m.active() == 0)
            .or_else(|| scan_least(snap, ctx, sed)),
        "rr" => {
            let members = snap.members();
            let start = mem
                .rr_last
                .map_or(0, |id| members.iter().take_while(|m| m.id() <= id).count());
            let n = members.len();
            let m = (0..n)
                .map(|k| &members[(start + k) % n])
                .find(|m| ctx.usable(m));
            if let Some(m) = m {
                mem.rr_last = Some(m.id());
            }
            m
        }
        "wrr" => mem
            .swrr(snap, ctx, |m| !m.is_backup())
            .or_else(|| mem.swrr(snap, ctx, |m| m.is_backup())),
        _ => unreachable!("no independent oracle for {sched}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// rr, wrr, lc, wlc, sed and nq decide exactly as the scans written
    /// above.
    #[test]
    fn fast_picks_match_the_independent_scan(
        weights in prop::collection::vec(0u64..=5, 0..12),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        for sched in ["rr", "wrr", "lc", "wlc", "sed", "nq"] {
            let mut w = World::new(sched, &weights);
            let mut mem = Memory::default();
            for (step, op) in ops.iter().enumerate() {
                let Op::Pick { c, d, tried } = op else {
                    mem.wrote(w.apply(op));
                    continue;
                };
                let snap = w.pool.load();
                let (client, dest, tried) = ctx_parts(&snap, *c, *d, tried);
                let ctx = Ctx::at(client, Duration::ZERO).with_dest(dest).with_tried(&tried);
                let want = oracle(sched, &snap, &ctx, &mut mem).map(|m| m.name().to_owned());
                let pick = w.lb.scheduler().pick(&snap, &ctx);
                let got = pick.as_ref().map(|p| p.member().name().to_owned());
                prop_assert_eq!(&got, &want, "{} at step {}: {:?}", sched, step, op);
                if let Some(p) = pick {
                    w.open.push(p.connect());
                }
            }
        }
    }

    /// Every registered scheduler, and persistence around rr and wlc, picks
    /// exactly as its own explained (linear scan) path does in a twin pool
    /// that goes through the same operations.
    #[test]
    fn fast_picks_match_the_explained_scan(
        weights in prop::collection::vec(0u64..=5, 0..12),
        ops in prop::collection::vec(op(), 1..100),
    ) {
        let persist = ["persist rr", "persist wlc"];
        for sched in lb_sched::NAMES.iter().chain(&persist) {
            let (mut fast, mut slow) = (World::new(sched, &weights), World::new(sched, &weights));
            let mut now = Duration::ZERO;
            for (step, op) in ops.iter().enumerate() {
                let Op::Pick { c, d, tried } = op else {
                    fast.apply(op);
                    slow.apply(op);
                    continue;
                };
                now += Duration::from_millis(100);
                let (fs, ss) = (fast.pool.load(), slow.pool.load());
                let (client, dest, ft) = ctx_parts(&fs, *c, *d, tried);
                let (_, _, st) = ctx_parts(&ss, *c, *d, tried);
                let fctx = Ctx::at(client, now).with_dest(dest).with_key(b"k").with_tried(&ft);
                let sctx = Ctx::at(client, now).with_dest(dest).with_key(b"k").with_tried(&st);
                let fp = fast.lb.scheduler().pick(&fs, &fctx);
                let sp = slow.lb.scheduler().explain(&ss, &sctx, &mut Explain::new());
                let got = fp.as_ref().map(|p| p.member().name().to_owned());
                let want = sp.as_ref().map(|p| p.member().name().to_owned());
                prop_assert_eq!(&got, &want, "{} at step {}: {:?}", sched, step, op);
                if let (Some(f), Some(s)) = (fp, sp) {
                    fast.open.push(f.connect());
                    slow.open.push(s.connect());
                }
            }
        }
    }
}

/// Deep trees: 300 backends and thousands of random operations, every pick
/// checked against the independent scan.
#[test]
fn large_pools_match_the_independent_scan() {
    for sched in ["lc", "wlc", "sed", "nq", "rr", "wrr"] {
        let mut rng = Mix(7);
        let weights: Vec<u64> = (0..300).map(|_| rng.next(6)).collect();
        let mut w = World::new(sched, &weights);
        let mut mem = Memory::default();
        for step in 0..6000 {
            let op = match rng.next(20) {
                0..=7 => {
                    let snap = w.pool.load();
                    let (client, dest, _) = ctx_parts(&snap, rng.next(6) as u8, 0, &[]);
                    let ctx = Ctx::at(client, Duration::ZERO).with_dest(dest);
                    let want = oracle(sched, &snap, &ctx, &mut mem).map(Member::id);
                    let pick = w.lb.scheduler().pick(&snap, &ctx);
                    assert_eq!(
                        pick.as_ref().map(|p| p.member().id()),
                        want,
                        "{sched} step {step}"
                    );
                    if let Some(p) = pick {
                        w.open.push(p.connect());
                    }
                    continue;
                }
                r => change(&mut rng, r),
            };
            mem.wrote(w.apply(&op));
        }
    }
}

/// Threads open, idle and close connections at once while another changes
/// weights and health: once they stop, the index answers exactly what the
/// scan answers, so no update was lost or applied out of order.
#[test]
fn concurrent_changes_leave_the_index_exact() {
    for sched in ["lc", "wlc", "sed", "nq"] {
        let weights: Vec<u64> = (0..64).map(|i| i % 5).collect();
        let w = World::new(sched, &weights);
        let (pool, lb) = (&w.pool, &w.lb);
        let kept = churn(pool, lb);
        let snap = pool.load();
        let ctx = Ctx::at(addr(0), Duration::ZERO);
        let (fast, scan) = fast_and_scan(lb, &snap, &ctx);
        let want = oracle(sched, &snap, &ctx, &mut Memory::default()).map(Member::id);
        assert_eq!(
            fast, scan,
            "{sched}: index and scan disagree after concurrent changes"
        );
        assert_eq!(fast, want, "{sched}");
        assert!(!kept.is_empty(), "some connections stay open");
    }
}
