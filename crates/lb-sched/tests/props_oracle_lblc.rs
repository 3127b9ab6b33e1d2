//! lblc and lblcr against independent models written from `SCHEDULERS.md`,
//! decision by decision: a plain map from destination to (backend, last
//! use), or to (set of backends, last change, last use), and a linear wlc
//! scan, over long random runs with tens of thousands
//! of destinations (so the table grows and sweeps expired entries), a clock
//! that moves (so entries expire), and connection, weight, health and
//! membership changes. Both the plain pick and the explained pick are
//! checked.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb_core::{BackendId, Ctx, Member, Snapshot};
use lb_sched::{Explain, LocalityLeastConn, LocalityReplicated, Scheduler};

#[path = "oracle/world.rs"]
mod world;
use world::*;

/// lblc as the contract states it.
struct Model {
    expire: Duration,
    table: HashMap<IpAddr, (BackendId, Duration)>,
}

impl Model {
    /// The first usable member of the pool with the least (256 * active +
    /// inactive) / weight, by the cross-multiplied rule.
    fn wlc<'s>(snap: &'s Snapshot, ctx: &Ctx<'_>) -> Option<&'s Member> {
        Self::least(snap.members().iter(), ctx)
    }

    /// The first usable member of `members` by the wlc rule.
    fn least<'s>(members: impl Iterator<Item = &'s Member>, ctx: &Ctx<'_>) -> Option<&'s Member> {
        let mut best: Option<(&Member, u64, u64)> = None;
        for m in members.filter(|m| ctx.usable(m)) {
            let (oh, w) = (m.lvs_overhead(), u64::from(m.weight()));
            match best {
                Some((_, boh, bw))
                    if u128::from(boh) * u128::from(w) <= u128::from(oh) * u128::from(bw) => {}
                _ => best = Some((m, oh, w)),
            }
        }
        best.map(|(m, ..)| m)
    }

    /// `d` has more active connections than its weight while some usable
    /// backend has 2 * active < weight.
    fn overloaded(d: &Member, snap: &Snapshot, ctx: &Ctx<'_>) -> bool {
        d.active() > d.weight()
            && snap
                .members()
                .iter()
                .any(|m| ctx.usable(m) && 2 * u64::from(m.active()) < u64::from(m.weight()))
    }

    fn pick<'s>(&mut self, snap: &'s Snapshot, ctx: &Ctx<'_>) -> Option<&'s Member> {
        let key = ctx.dest()?.ip();
        let now = ctx.now();
        if let Some((id, last_use)) = self.table.get_mut(&key) {
            if now.saturating_sub(*last_use) < self.expire {
                *last_use = now;
                let cached = snap.members().iter().find(|m| m.id() == *id);
                if let Some(d) = cached {
                    if ctx.usable(d) && !Self::overloaded(d, snap, ctx) {
                        return Some(d);
                    }
                }
            }
        }
        let d = Self::wlc(snap, ctx)?;
        self.table.insert(key, (d.id(), now));
        Some(d)
    }
}

/// lblcr as the contract states it.
struct ReplicatedModel {
    expire: Duration,
    /// Per destination: the set, oldest member first; when it last changed;
    /// its last use.
    table: HashMap<IpAddr, (Vec<BackendId>, Duration, Duration)>,
}

impl ReplicatedModel {
    fn pick<'s>(&mut self, snap: &'s Snapshot, ctx: &Ctx<'_>) -> Option<&'s Member> {
        let key = ctx.dest()?.ip();
        let now = ctx.now();
        let member = |id: BackendId| snap.members().iter().find(|m| m.id() == id);
        match self.table.get_mut(&key) {
            Some((set, last_change, last_use)) if now.saturating_sub(*last_use) < self.expire => {
                *last_use = now;
                set.retain(|id| member(*id).is_some());
                // The least loaded usable member by wlc, newest first; ties
                // to the newer.
                let min = Model::least(set.iter().rev().filter_map(|id| member(*id)), ctx);
                if set.len() > 1 && now.saturating_sub(*last_change) > self.expire {
                    // The most loaded member of weight > 0, newest first,
                    // by the strict rule; health is not considered.
                    let mut most: Option<(BackendId, u64, u64)> = None;
                    for m in set.iter().rev().filter_map(|id| member(*id)) {
                        let (oh, w) = (m.lvs_overhead(), u64::from(m.weight()));
                        if w == 0 {
                            continue;
                        }
                        match most {
                            Some((_, moh, mw))
                                if u128::from(moh) * u128::from(w)
                                    >= u128::from(oh) * u128::from(mw) => {}
                            _ => most = Some((m.id(), oh, w)),
                        }
                    }
                    if let Some((gone, ..)) = most {
                        set.retain(|id| *id != gone);
                        *last_change = now;
                    }
                }
                if let Some(m) = min {
                    if !Model::overloaded(m, snap, ctx) {
                        return Some(m);
                    }
                }
                let d = Model::wlc(snap, ctx)?;
                if !set.contains(&d.id()) {
                    set.push(d.id());
                    *last_change = now;
                }
                Some(d)
            }
            _ => {
                let d = Model::wlc(snap, ctx)?;
                self.table.insert(key, (vec![d.id()], now, now));
                Some(d)
            }
        }
    }
}

/// Either model.
enum Oracle {
    Lblc(Model),
    Lblcr(ReplicatedModel),
}

impl Oracle {
    fn pick<'s>(&mut self, snap: &'s Snapshot, ctx: &Ctx<'_>) -> Option<&'s Member> {
        match self {
            Oracle::Lblc(m) => m.pick(snap, ctx),
            Oracle::Lblcr(m) => m.pick(snap, ctx),
        }
    }

    fn len(&self) -> usize {
        match self {
            Oracle::Lblc(m) => m.table.len(),
            Oracle::Lblcr(m) => m.table.len(),
        }
    }
}

/// A destination: from a small hot set (valid hits), or with odds
/// `cold_share` in 4 from a range of `cold` addresses (new entries, growth,
/// expiry).
fn dest(rng: &mut Mix, cold: u64, cold_share: u64) -> SocketAddr {
    let i = if rng.next(4) < cold_share {
        rng.next(cold)
    } else {
        rng.next(48)
    };
    let v6 = i % 11 == 0;
    if v6 {
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16], 80))
    } else {
        SocketAddr::from(([172, 16 + (i >> 16) as u8, (i >> 8) as u8, i as u8], 80))
    }
}

/// One long run's shape.
struct Run {
    seed: u64,
    backends: usize,
    /// Cold destinations, and their odds in 4 of a pick.
    cold: u64,
    cold_share: u64,
    steps: usize,
    /// Entries expire after this many seconds.
    expire: u64,
    /// Check the explained pick instead of the plain one.
    explain: bool,
    /// lblcr instead of lblc.
    replicated: bool,
}

/// One long run: returns how many entries the model's table ends with.
fn run(r: Run) -> usize {
    let Run {
        seed,
        backends,
        cold,
        cold_share,
        steps,
        expire,
        explain,
        replicated,
    } = r;
    let mut rng = Mix(seed);
    let weights: Vec<u64> = (0..backends).map(|_| 1 + rng.next(5)).collect();
    let expire = Duration::from_secs(expire);
    let (sched, mut model): (Box<dyn Scheduler>, _) = if replicated {
        (
            Box::new(LocalityReplicated::with_expire(expire)),
            Oracle::Lblcr(ReplicatedModel {
                expire,
                table: HashMap::new(),
            }),
        )
    } else {
        (
            Box::new(LocalityLeastConn::with_expire(expire)),
            Oracle::Lblc(Model {
                expire,
                table: HashMap::new(),
            }),
        )
    };
    let mut w = World::with(sched, &weights);
    let mut now = Duration::from_secs(1);
    let (mut hits, mut picks) = (0usize, 0usize);
    for step in 0..steps {
        // Time stands still mostly, sometimes jumps (past `expire` too).
        match rng.next(100) {
            0..=89 => {}
            90..=98 => now += Duration::from_millis(rng.next(4000)),
            _ => now += Duration::from_secs(rng.next(2 * expire.as_secs())),
        }
        let op = match rng.next(20) {
            0..=9 => {
                let snap = w.pool.load();
                let client = SocketAddr::from(([192, 0, 2, 1], 1000));
                let ctx = Ctx::at(client, now).with_dest(dest(&mut rng, cold, cold_share));
                let want = model.pick(&snap, &ctx).map(Member::id);
                let got = if explain {
                    let mut why = Explain::new();
                    w.lb.scheduler().explain(&snap, &ctx, &mut why)
                } else {
                    w.lb.scheduler().pick(&snap, &ctx)
                };
                assert_eq!(
                    got.as_ref().map(|p| p.member().id()),
                    want,
                    "seed {seed} step {step} at {now:?}, dest {:?}",
                    ctx.dest()
                );
                picks += 1;
                if let Some(p) = got {
                    hits += usize::from(rng.next(2) == 0);
                    if rng.next(3) != 0 {
                        w.open.push(p.connect());
                    }
                }
                continue;
            }
            10 if rng.next(8) == 0 => Op::Remove(rng.next(backends as u64) as usize),
            11 if rng.next(8) == 0 => Op::Add(1 + rng.next(4)),
            r => change(&mut rng, r),
        };
        w.apply(&op);
    }
    assert!(picks > steps / 3 && hits > 0, "the run picked: {picks}");
    model.len()
}

/// Mostly cold destinations out of 200,000: the table passes its reserved
/// room (16,384 entries) and grows several times; expired entries are
/// swept whenever a shard is full.
fn many_destinations(seed: u64, replicated: bool) {
    let entries = run(Run {
        seed,
        backends: 40,
        cold: 200_000,
        cold_share: 3,
        steps: 160_000,
        expire: 600,
        explain: false,
        replicated,
    });
    assert!(entries > 40_000, "the table had to grow: {entries} entries");
}

#[test]
fn lblc_matches_the_model_with_many_destinations_and_expiry() {
    many_destinations(1, false);
}

#[test]
fn lblc_matches_the_model_on_small_pools_with_short_expiry() {
    for seed in 2..8 {
        run(Run {
            seed,
            backends: 1 + seed as usize,
            cold: 3_000,
            cold_share: 1,
            steps: 20_000,
            expire: 3,
            explain: false,
            replicated: false,
        });
    }
}

#[test]
fn lblc_explained_picks_match_the_model() {
    run(Run {
        seed: 9,
        backends: 30,
        cold: 100_000,
        cold_share: 3,
        steps: 80_000,
        expire: 10,
        explain: true,
        replicated: false,
    });
}

#[test]
fn lblcr_matches_the_model_with_many_destinations_and_expiry() {
    many_destinations(21, true);
}

#[test]
fn lblcr_matches_the_model_on_small_pools_with_short_expiry() {
    // Short expiry and a hot set of destinations: sets grow under load,
    // shrink after `expire` unchanged, and lose members that leave the pool.
    for seed in 22..30 {
        run(Run {
            seed,
            backends: 1 + (seed as usize % 7),
            cold: 3_000,
            cold_share: 1,
            steps: 20_000,
            expire: 3,
            explain: seed % 2 == 0,
            replicated: true,
        });
    }
}

/// A valid entry whose backend wlc would no longer choose keeps its
/// backend while 100,000 other destinations pass through the table (it
/// grows, and expired entries are swept to make room).
#[test]
fn a_valid_entry_survives_growth_and_sweeps() {
    let mut w = World::with(
        Box::new(LocalityLeastConn::with_expire(Duration::from_secs(10))),
        &[10, 10],
    );
    let client = SocketAddr::from(([192, 0, 2, 1], 1000));
    let hot = SocketAddr::from(([172, 16, 0, 0], 80));
    let pick = |w: &World, dest: SocketAddr, now: Duration| {
        let snap = w.pool.load();
        let ctx = Ctx::at(client, now).with_dest(dest);
        w.lb.scheduler()
            .pick(&snap, &ctx)
            .map(|p| p.member().name().to_owned())
    };
    assert_eq!(pick(&w, hot, Duration::ZERO).as_deref(), Some("b0"));
    // b0 now has 5 active of weight 10: wlc prefers b1, but b0 is not
    // overloaded, so the entry keeps it.
    for _ in 0..5 {
        w.apply(&Op::Open(0));
    }
    for i in 1..=100_000u32 {
        let now = Duration::from_millis(u64::from(i));
        let dest = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 80));
        assert_eq!(
            pick(&w, dest, now).as_deref(),
            Some("b1"),
            "a new destination goes by wlc"
        );
        if i % 1000 == 0 {
            assert_eq!(
                pick(&w, hot, now).as_deref(),
                Some("b0"),
                "the hot entry at step {i}"
            );
        }
    }
}

/// The scheduler by name is the one checked here.
#[test]
fn lblc_by_name_is_locality_least_conn() {
    assert_eq!(LocalityLeastConn::new().name(), "lblc");
    assert_eq!(lb_sched::build("lblc").unwrap().name(), "lblc");
}
