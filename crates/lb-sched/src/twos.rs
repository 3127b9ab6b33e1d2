//! `twos`: weighted power of two choices, as LVS `ip_vs_twos.c`
//! (reference A.9), drawing from a seedable random source.
//!
//! The pool-order walks below are the definition: they cost O(n) per pick.
//! Each snapshot also gets a [`Ranges`] table, the running sums of the
//! eligible weights in pool order, built in `prepare`; a pick that tried
//! nothing and is not explained maps each draw there, with the same result:
//! a bucket table (one entry per `2^shift` of `[0, W]`, about one per
//! backend) gives the first candidate, and a short forward walk the answer,
//! O(1) expected (O(max weight) at worst). A `max_conns` limit makes eligibility
//! depend on the live counts: a snapshot with one gets no table and its
//! picks walk the pool (LVS itself has no such limit).

use std::sync::Arc;

use lb_core::{Change, Ctx, Member, Pick, Snapshot, Tables};

use crate::lc::lvs_overhead;
use crate::rng::{SplitMix, DEFAULT_SEED};
use crate::trace::{is_on, pick_via_select, why, Load, Trace};
use crate::Scheduler;

/// The eligible backends of a snapshot (up, weight > 0; no limit in the
/// snapshot) as the running sum of their weights, in pool order.
#[derive(Debug)]
struct Ranges {
    /// `(sum up to and including it, position)`, in pool order.
    ends: Vec<(u64, u32)>,
    /// `buckets[b]`: the first index in `ends` whose sum reaches
    /// `b << shift`.
    buckets: Vec<u32>,
    shift: u32,
}

impl Ranges {
    /// The table for `snap`, if eligibility is fixed for it.
    fn build(snap: &Snapshot) -> Option<Ranges> {
        let members = snap.members();
        if members.iter().any(|m| m.max_conns() > 0) {
            return None;
        }
        let mut sum = 0u64;
        let ends: Vec<(u64, u32)> = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_up() && m.weight() > 0)
            .map(|(i, m)| {
                sum += u64::from(m.weight());
                (sum, i as u32)
            })
            .collect();
        // About one bucket per backend: 2^shift >= W / len.
        let per = sum / (ends.len() as u64).max(1);
        let shift = 64 - per.leading_zeros();
        let mut buckets = Vec::with_capacity((sum >> shift) as usize + 1);
        let mut k = 0usize;
        for b in 0..=(sum >> shift) {
            while k < ends.len() && ends[k].0 < b << shift {
                k += 1;
            }
            buckets.push(k as u32);
        }
        Some(Ranges {
            ends,
            buckets,
            shift,
        })
    }

    /// `W`, the sum of the eligible weights.
    #[inline]
    fn total(&self) -> u64 {
        self.ends.last().map_or(0, |&(end, _)| end)
    }

    /// The first eligible member whose running sum reaches `r` (the first
    /// one for `r == 0`), as [`map_draw`] finds it; `r <= W`.
    #[inline]
    fn map<'s>(&self, members: &'s [Member], r: u64) -> Option<&'s Member> {
        let mut k = *self.buckets.get((r >> self.shift) as usize)? as usize;
        while self.ends.get(k)?.0 < r {
            k += 1;
        }
        members.get(self.ends[k].1 as usize)
    }
}

/// Power of two choices, as LVS `ip_vs_twos.c`.
///
/// `W` is the sum of the eligible weights. Two draws `r1`, `r2` are taken
/// uniformly in `[0, W]` inclusive (a random `u32` modulo `W + 1`); each
/// maps to the first eligible backend, in pool order, at which the running
/// sum of weights reaches it, so the first eligible backend has one extra
/// chance in `W + 1`. The second choice wins only when
/// `w2 * oh1 > w1 * oh2` (overhead `256 * active + inactive`): ties go to
/// the first. Both choices may be the same backend.
///
/// The draws come from a lock-free SplitMix64 source; the same seed gives
/// the same picks for the same sequence of pool states (one thread).
#[derive(Debug)]
pub struct TwoChoices {
    rng: SplitMix,
}

impl Default for TwoChoices {
    fn default() -> Self {
        Self::new()
    }
}

impl TwoChoices {
    /// A power-of-two-choices scheduler with the default seed.
    pub fn new() -> Self {
        Self::with_seed(DEFAULT_SEED)
    }

    /// A power-of-two-choices scheduler whose draws start from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        TwoChoices {
            rng: SplitMix::new(seed),
        }
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let members = snap.members();
        let ranges = snap
            .tables::<Ranges>()
            .filter(|_| !is_on(t) && ctx.tried().is_empty());
        if let Some(ranges) = ranges {
            let total = ranges.total();
            if total == 0 {
                return None;
            }
            let r1 = u64::from(self.rng.next_u32()) % (total + 1);
            let r2 = u64::from(self.rng.next_u32()) % (total + 1);
            let c1 = ranges.map(members, r1)?;
            let c2 = ranges.map(members, r2)?;
            return Some(Pick::new(duel(c1, c2, r1, r2, t)));
        }
        let total: u64 = members
            .iter()
            .filter(|m| ctx.usable(m))
            .map(|m| u64::from(m.weight()))
            .sum();
        if total == 0 {
            why!(t, "rule: twos -> none: no eligible backend");
            return None;
        }
        let r1 = u64::from(self.rng.next_u32()) % (total + 1);
        let r2 = u64::from(self.rng.next_u32()) % (total + 1);
        why!(
            t,
            "twos: total eligible weight W={total}, draws r1={r1} r2={r2} in [0, W]"
        );
        choose(members, ctx, r1, r2, t).map(Pick::new)
    }
}

/// The first usable member at which the running sum of weights reaches `r`
/// (LVS: `r -= weight` until `r <= 0`), or the last usable one if `r` is
/// beyond them all (only when eligibility changed since the draw).
fn map_draw<'s>(members: &'s [Member], ctx: &Ctx<'_>, r: u64) -> Option<&'s Member> {
    let mut sum = 0u64;
    let mut last = None;
    for m in members.iter().filter(|m| ctx.usable(m)) {
        sum += u64::from(m.weight());
        if sum >= r {
            return Some(m);
        }
        last = Some(m);
    }
    last
}

/// The twos decision for the draws `r1` and `r2`.
pub(crate) fn choose<'s, T: Trace>(
    members: &'s [Member],
    ctx: &Ctx<'_>,
    r1: u64,
    r2: u64,
    t: &mut T,
) -> Option<&'s Member> {
    let c1 = map_draw(members, ctx, r1)?;
    let c2 = map_draw(members, ctx, r2)?;
    Some(duel(c1, c2, r1, r2, t))
}

/// The less loaded of the two choices: `c2` only when `w2 * oh1 > w1 * oh2`.
#[inline]
fn duel<'s, T: Trace>(c1: &'s Member, c2: &'s Member, r1: u64, r2: u64, t: &mut T) -> &'s Member {
    let (oh1, w1) = (lvs_overhead(c1), u64::from(c1.weight()));
    let (oh2, w2) = (lvs_overhead(c2), u64::from(c2.weight()));
    why!(t, "  choice1 (r1={r1}): {} overhead={oh1}", Load(c1));
    why!(t, "  choice2 (r2={r2}): {} overhead={oh2}", Load(c2));
    if u128::from(w2) * u128::from(oh1) > u128::from(w1) * u128::from(oh2) {
        why!(
            t,
            "rule: twos: choice2 wins as w2*oh1 = {w2}*{oh1} > w1*oh2 = {w1}*{oh2} -> {}",
            c2.name()
        );
        c2
    } else {
        why!(
            t,
            "rule: twos: choice1 stays as w2*oh1 = {w2}*{oh1} <= w1*oh2 = {w1}*{oh2} -> {}",
            c1.name()
        );
        c1
    }
}

impl Scheduler for TwoChoices {
    fn name(&self) -> &'static str {
        "twos"
    }

    fn prepare(&self, next: &Snapshot, _: Option<&Snapshot>, _: Change) -> Option<Tables> {
        Ranges::build(next).map(|r| Arc::new(r) as Tables)
    }

    pick_via_select!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::{Backend, ConnGuard, Health, Pool};

    fn pool_abc() -> Pool {
        let pool = Pool::new();
        for (name, w) in [("a", 2), ("b", 3), ("c", 5)] {
            let addr = format!("10.0.0.{}:80", w).parse().unwrap();
            pool.add(Backend::new(name, addr).with_weight(w)).unwrap();
        }
        pool
    }

    fn ctx() -> Ctx<'static> {
        Ctx::at("192.0.2.1:1".parse().unwrap(), Default::default())
    }

    /// vectors.md 8: list A(2), B(3), C(5), W = 10: r 0..=2 -> A, 3..=5 -> B,
    /// 6..=10 -> C (equal loads, so the first draw decides).
    #[test]
    fn draws_map_by_running_weight_with_the_first_inclusive() {
        let pool = pool_abc();
        let snap = pool.load();
        let names: String = (0..=10)
            .map(|r| {
                map_draw(snap.members(), &ctx(), r)
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect();
        assert_eq!(names, "aaabbbccccc");
        for r1 in 0..=10 {
            for r2 in 0..=10 {
                let d = choose(snap.members(), &ctx(), r1, r2, &mut crate::NoTrace).unwrap();
                let c1 = map_draw(snap.members(), &ctx(), r1).unwrap();
                assert_eq!(d.id(), c1.id(), "equal loads: a tie goes to choice1");
            }
        }
    }

    /// vectors.md 8: choice1 = A (oh 512), choice2 = C (oh 1280):
    /// 5*512 = 2560 > 2*1280 = 2560 is false -> A; one more inactive on A -> C.
    #[test]
    fn the_second_choice_wins_only_strictly() {
        let pool = pool_abc();
        let snap = pool.load();
        let m = snap.members();
        let mut guards: Vec<ConnGuard> = (0..2).map(|_| m[0].connect()).collect();
        guards.extend((0..5).map(|_| m[2].connect()));
        let d = choose(m, &ctx(), 0, 10, &mut crate::NoTrace).unwrap();
        assert_eq!(d.name(), "a");
        let mut extra = m[0].connect();
        extra.idle();
        let d = choose(m, &ctx(), 0, 10, &mut crate::NoTrace).unwrap();
        assert_eq!(d.name(), "c", "2*1280 < 5*513");
        drop((guards, extra));
    }

    /// Ineligible backends neither count in W nor take draws.
    #[test]
    fn ineligible_backends_take_no_draw() {
        let pool = pool_abc();
        let b = pool.find("b").unwrap();
        pool.set_health(b, Health::Down).unwrap();
        let snap = pool.load();
        let names: String = (0..=7)
            .map(|r| {
                map_draw(snap.members(), &ctx(), r)
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect();
        assert_eq!(names, "aaaccccc");
    }

    /// The bucketed table maps every draw `0..=W` to the backend the walk
    /// finds, on pools of mixed weights with ineligible backends.
    #[test]
    fn the_table_maps_every_draw_as_the_walk() {
        for seed in 0..40u64 {
            let rng = SplitMix::new(seed);
            let pool = Pool::new();
            for i in 0..(seed % 23) {
                let addr = format!("10.0.1.{}:80", i + 1).parse().unwrap();
                let w = u64::from(rng.next_u32() % 9);
                let h = if rng.next_u32() % 5 == 0 {
                    Health::Down
                } else {
                    Health::Up
                };
                pool.add(
                    Backend::new(format!("b{i}"), addr)
                        .with_weight(w)
                        .with_health(h),
                )
                .unwrap();
            }
            let snap = pool.load();
            let ranges = Ranges::build(&snap).unwrap();
            for r in 0..=ranges.total() {
                assert_eq!(
                    ranges.map(snap.members(), r).map(Member::id),
                    map_draw(snap.members(), &ctx(), r).map(Member::id),
                    "seed {seed}, r {r}"
                );
            }
        }
    }
}
