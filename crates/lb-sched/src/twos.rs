//! `twos`: weighted power of two choices, as LVS `ip_vs_twos.c`
//! (reference A.9), drawing from a seedable random source.

use lb_core::{Ctx, Member, Pick, Snapshot};

use crate::lc::lvs_overhead;
use crate::rng::{SplitMix, DEFAULT_SEED};
use crate::trace::{pick_via_select, why, Load, Trace};
use crate::Scheduler;

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
        Some(c2)
    } else {
        why!(
            t,
            "rule: twos: choice1 stays as w2*oh1 = {w2}*{oh1} <= w1*oh2 = {w1}*{oh2} -> {}",
            c1.name()
        );
        Some(c1)
    }
}

impl Scheduler for TwoChoices {
    fn name(&self) -> &'static str {
        "twos"
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
}
