//! fo, ovf, twos and nginx least_conn against independent linear scans,
//! decision by decision, over random sequences of picks, opens, closes,
//! idles, activations and weight, health, limit, backup and membership
//! changes. The scans are written here from the contract (SCHEDULERS.md,
//! reference A.7-A.9; SCHEDULERS-NGINX.md section 5), not taken from the
//! library, so the indexes that replace the library's own scans
//! (`heavy.rs`, `twos.rs`, `nginx/lc_index.rs`) are checked against the
//! definitions themselves.

use std::collections::HashMap;
use std::time::Duration;

use lb_core::{BackendId, Ctx, Member, Snapshot};
use lb_sched::{Explain, TwoChoices};
use proptest::prelude::*;

#[path = "oracle/world.rs"]
mod world;
use world::*;

/// The seed of the twos schedulers and of the oracle's copy of their source.
const SEED: u64 = 0x7705;

/// SplitMix64, as the library documents its source (the same seed gives
/// the same draws).
struct SplitMix(u64);

impl SplitMix {
    fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 32) as u32
    }
}

/// What the stateful oracles remember between picks.
struct Memory {
    /// nginx's `current` of each backend (absent: 0).
    current: HashMap<BackendId, i64>,
    rng: SplitMix,
}

impl Memory {
    fn new() -> Memory {
        Memory {
            current: HashMap::new(),
            rng: SplitMix(SEED),
        }
    }

    fn wrote(&mut self, w: Wrote) {
        if w == Wrote::Reset {
            self.current.clear();
        }
    }
}

/// The first usable member of the highest weight among those `fits` admits.
fn heaviest<'s>(
    snap: &'s Snapshot,
    ctx: &Ctx<'_>,
    fits: impl Fn(&Member) -> bool,
) -> Option<&'s Member> {
    let mut best: Option<&Member> = None;
    for m in snap.members() {
        if ctx.usable(m) && fits(m) && best.is_none_or(|b| m.weight() > b.weight()) {
            best = Some(m);
        }
    }
    best
}

/// LVS twos: `W` the usable weight, two draws in `[0, W]`, each the first
/// usable backend whose running weight reaches it; the second only if
/// `w2 * oh1 > w1 * oh2`.
fn twos<'s>(snap: &'s Snapshot, ctx: &Ctx<'_>, rng: &mut SplitMix) -> Option<&'s Member> {
    let usable: Vec<&Member> = snap.members().iter().filter(|m| ctx.usable(m)).collect();
    let total: u64 = usable.iter().map(|m| u64::from(m.weight())).sum();
    if total == 0 {
        return None;
    }
    let mut draw = || {
        let r = u64::from(rng.next_u32()) % (total + 1);
        let mut sum = 0;
        for m in &usable {
            sum += u64::from(m.weight());
            if sum >= r {
                return *m;
            }
        }
        unreachable!("r <= W")
    };
    let (c1, c2) = (draw(), draw());
    let oh = |m: &Member| 256 * u64::from(m.active()) + u64::from(m.inactive());
    let (w1, w2) = (u64::from(c1.weight()), u64::from(c2.weight()));
    Some(if w2 * oh(c1) > w1 * oh(c2) { c2 } else { c1 })
}

/// nginx `LC(L)` over the list `backup` selects, as SCHEDULERS-NGINX.md
/// writes it.
fn lc_list<'s>(
    snap: &'s Snapshot,
    ctx: &Ctx<'_>,
    backup: bool,
    current: &mut HashMap<BackendId, i64>,
) -> Option<&'s Member> {
    let list: Vec<&Member> = snap
        .members()
        .iter()
        .filter(|m| m.is_backup() == backup && ctx.usable(m))
        .collect();
    let ratio = |m: &Member| (m.conns(), u64::from(m.weight()));
    let mut best: Option<usize> = None;
    let mut many = false;
    for (k, m) in list.iter().enumerate() {
        let (c, w) = ratio(m);
        match best.map(|b| ratio(list[b])) {
            None => best = Some(k),
            Some((bc, bw)) if c * bw < bc * w => {
                best = Some(k);
                many = false;
            }
            Some((bc, bw)) if c * bw == bc * w => many = true,
            Some(_) => {}
        }
    }
    let mut b = best?;
    if many {
        let (bc, bw) = ratio(list[b]);
        let mut total = 0;
        for (k, m) in list.iter().enumerate().skip(b) {
            let (c, w) = ratio(m);
            if c * bw != bc * w {
                continue;
            }
            *current.entry(m.id()).or_insert(0) += i64::from(m.weight());
            total += i64::from(m.weight());
            if current[&m.id()] > current[&list[b].id()] {
                b = k;
            }
        }
        *current.get_mut(&list[b].id()).unwrap() -= total;
    }
    Some(list[b])
}

/// The oracle's choice for `sched`, advancing its memory.
fn oracle<'s>(
    sched: &str,
    snap: &'s Snapshot,
    ctx: &Ctx<'_>,
    mem: &mut Memory,
) -> Option<&'s Member> {
    match sched {
        "fo" => heaviest(snap, ctx, |_| true),
        "ovf" => heaviest(snap, ctx, |m| m.active() <= m.weight()),
        "twos" => twos(snap, ctx, &mut mem.rng),
        "least_conn" => lc_list(snap, ctx, false, &mut mem.current)
            .or_else(|| lc_list(snap, ctx, true, &mut mem.current)),
        _ => unreachable!("no oracle for {sched}"),
    }
}

const SCHEDS: [&str; 4] = ["fo", "ovf", "twos", "least_conn"];

fn world(sched: &str, weights: &[u64]) -> World {
    if sched == "twos" {
        World::with(Box::new(TwoChoices::with_seed(SEED)), weights)
    } else {
        World::new(sched, weights)
    }
}

/// Pick through `w` and through the oracle, compare, and open the picked
/// connection.
fn step(
    sched: &str,
    w: &mut World,
    mem: &mut Memory,
    ctx: &Ctx<'_>,
    snap: &Snapshot,
) -> Result<(), String> {
    let want = oracle(sched, snap, ctx, mem).map(Member::id);
    let pick = w.lb.scheduler().pick(snap, ctx);
    let got = pick.as_ref().map(|p| p.member().id());
    if got != want {
        return Err(format!("{sched}: picked {got:?}, the scan {want:?}"));
    }
    if let Some(p) = pick {
        w.open.push(p.connect());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fast_picks_match_the_independent_scan(
        weights in prop::collection::vec(0u64..=5, 0..12),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        for sched in SCHEDS {
            let mut w = world(sched, &weights);
            let mut mem = Memory::new();
            for (k, op) in ops.iter().enumerate() {
                let Op::Pick { c, d, tried } = op else {
                    mem.wrote(w.apply(op));
                    continue;
                };
                let snap = w.pool.load();
                let (client, dest, tried) = ctx_parts(&snap, *c, *d, tried);
                let ctx = Ctx::at(client, Duration::ZERO).with_dest(dest).with_tried(&tried);
                let r = step(sched, &mut w, &mut mem, &ctx, &snap);
                prop_assert!(r.is_ok(), "step {}: {:?}: {}", k, op, r.unwrap_err());
            }
        }
    }
}

/// Deep trees: 300 backends (some limited, some backups) and thousands of
/// random operations, every pick checked against the scan.
#[test]
fn large_pools_match_the_independent_scan() {
    for sched in SCHEDS {
        let mut rng = Mix(11);
        let weights: Vec<u64> = (0..300).map(|_| rng.next(6)).collect();
        let mut w = world(sched, &weights);
        let mut mem = Memory::new();
        for k in 0..300 {
            if rng.next(10) == 0 {
                mem.wrote(w.apply(&Op::MaxConns(k, 1 + rng.next(3))));
            }
            if sched == "least_conn" && rng.next(8) == 0 {
                mem.wrote(w.apply(&Op::Backup(k, true)));
            }
        }
        for k in 0..8000 {
            let op = match rng.next(20) {
                0..=7 => {
                    let snap = w.pool.load();
                    let (client, dest, _) = ctx_parts(&snap, rng.next(6) as u8, 0, &[]);
                    let ctx = Ctx::at(client, Duration::ZERO).with_dest(dest);
                    if let Err(e) = step(sched, &mut w, &mut mem, &ctx, &snap) {
                        panic!("step {k}: {e}");
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
/// weights and health: once they stop, the index answers what the scan
/// answers (no counter update was lost or applied out of order).
#[test]
fn concurrent_changes_leave_the_indexes_exact() {
    for sched in ["fo", "ovf", "least_conn"] {
        let weights: Vec<u64> = (0..64).map(|i| i % 5).collect();
        let mut w = world(sched, &weights);
        for k in (0..64).step_by(7) {
            w.apply(&Op::MaxConns(k, 2));
        }
        let (pool, lb) = (&w.pool, &w.lb);
        let kept = churn(pool, lb);
        let snap = pool.load();
        let ctx = Ctx::at(addr(0), Duration::ZERO);
        let (fast, scan) = fast_and_scan(lb, &snap, &ctx);
        let want = oracle(sched, &snap, &ctx, &mut Memory::new()).map(Member::id);
        if sched == "least_conn" {
            // Picks move `current`s, so two picks in a row may differ; but
            // each is of the least ratio, in the same list.
            let key = |id: Option<BackendId>| {
                id.and_then(|id| snap.get(id)).map(|m| {
                    let (c, w) = (m.conns(), u64::from(m.weight()));
                    (m.is_backup(), c * 65_536 * 65_536 / w.max(1))
                })
            };
            let (f, s, o) = (key(fast), key(scan), key(want));
            assert_eq!(f, o, "least_conn: index off the least ratio");
            assert_eq!(s, o, "least_conn: scan off the least ratio");
        } else {
            assert_eq!(fast, scan, "{sched}: index and scan disagree");
            assert_eq!(fast, want, "{sched}");
        }
        assert!(!kept.is_empty(), "some connections stay open");
    }
}

/// least_conn with standing ties: many picks open nothing, so a tied level
/// stays the least across picks (the lazy `current`s of `lc_cache.rs` are
/// used, not rebuilt), interleaved with picks that open, scans (tried
/// backends, explained picks), counter, health and weight changes; every
/// decision checked against the scan.
#[test]
fn least_conn_standing_ties_match_the_scan() {
    for seed in [3u64, 17, 40] {
        let mut rng = Mix(seed);
        // Few distinct weights (cached levels), and in one run more than
        // the cache takes (walked levels).
        let span = if seed == 40 { 12 } else { 4 };
        let weights: Vec<u64> = (0..300).map(|_| 1 + rng.next(span)).collect();
        let mut w = world("least_conn", &weights);
        let mut mem = Memory::new();
        for k in 0..300 {
            if rng.next(12) == 0 {
                mem.wrote(w.apply(&Op::Backup(k, true)));
            }
            if rng.next(15) == 0 {
                mem.wrote(w.apply(&Op::MaxConns(k, 1 + rng.next(3))));
            }
        }
        for k in 0..12_000 {
            let op = match rng.next(40) {
                0..=29 => {
                    let snap = w.pool.load();
                    let tried: Vec<usize> = match rng.next(25) {
                        0 => vec![rng.next(300) as usize],
                        _ => Vec::new(),
                    };
                    let (client, dest, tried) = ctx_parts(&snap, 0, 0, &tried);
                    let ctx = Ctx::at(client, Duration::ZERO)
                        .with_dest(dest)
                        .with_tried(&tried);
                    let want = oracle("least_conn", &snap, &ctx, &mut mem).map(Member::id);
                    let pick = if rng.next(30) == 0 {
                        w.lb.scheduler().explain(&snap, &ctx, &mut Explain::new())
                    } else {
                        w.lb.scheduler().pick(&snap, &ctx)
                    };
                    let got = pick.as_ref().map(|p| p.member().id());
                    assert_eq!(got, want, "seed {seed} step {k}");
                    if let Some(p) = pick.filter(|_| rng.next(4) == 0) {
                        w.open.push(p.connect());
                    }
                    continue;
                }
                30..=32 => Op::Open(rng.next(300) as usize),
                33..=35 => Op::Close(rng.next(1000) as usize),
                36 => Op::Idle(rng.next(1000) as usize),
                37 | 38 => Op::Health(rng.next(300) as usize, rng.next(3) as u8),
                _ => match rng.next(10) {
                    0 => Op::Weight(rng.next(300) as usize, 1 + rng.next(span)),
                    _ => Op::Activate(rng.next(1000) as usize),
                },
            };
            mem.wrote(w.apply(&op));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// As `fast_picks_match_the_independent_scan`, for least_conn, but a
    /// pick for an odd client opens nothing (its tie level stays).
    #[test]
    fn least_conn_picks_without_opening_match_the_scan(
        weights in prop::collection::vec(0u64..=5, 0..12),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let mut w = world("least_conn", &weights);
        let mut mem = Memory::new();
        for (k, op) in ops.iter().enumerate() {
            let Op::Pick { c, d, tried } = op else {
                mem.wrote(w.apply(op));
                continue;
            };
            let snap = w.pool.load();
            let (client, dest, tried) = ctx_parts(&snap, *c, *d, tried);
            let ctx = Ctx::at(client, Duration::ZERO).with_dest(dest).with_tried(&tried);
            let want = oracle("least_conn", &snap, &ctx, &mut mem).map(Member::id);
            let pick = w.lb.scheduler().pick(&snap, &ctx);
            let got = pick.as_ref().map(|p| p.member().id());
            prop_assert_eq!(got, want, "step {}: {:?}", k, op);
            if let Some(p) = pick.filter(|_| c % 2 == 0) {
                w.open.push(p.connect());
            }
        }
    }
}
