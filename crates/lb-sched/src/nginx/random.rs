//! `random` and `random two [least_conn]`: nginx's random balancing, as
//! `ngx_http_upstream_random_module.c` (reference semantics.md B.8).

use lb_core::{Change, Ctx, Member, Pick, Snapshot, Tables};

use super::{Upstream, MAX_REJECTS};
use crate::rng::{SplitMix, DEFAULT_SEED};
use crate::trace::{pick_via_select, why, Load, Trace};
use crate::{Features, Scheduler};

/// nginx's `random`, and `random two least_conn` (`two` alone means the
/// same: `least_conn` is its only method).
///
/// A draw takes `x` uniformly in `[0, T)` and walks the weights, so each
/// primary is drawn with probability `weight / T`, down and full ones
/// included. Plain `random` takes the first usable draw. `random two` draws
/// until it has two *distinct* usable backends `p1`, `p2` (in draw order)
/// and takes `p1` only if `p2` is strictly more loaded
/// (`conns(p2) * w(p1) > conns(p1) * w(p2)`), so ties go to the second
/// draw. Every draw but the deciding one costs a try (an unusable draw, a
/// repeat of `p1`, and `p1` itself); after 21 tries, or with fewer than two
/// primaries, smooth weighted round robin decides. Backups are never used
/// (nginx refuses them with `random`).
///
/// The random source is seeded ([`with_seed`](Self::with_seed)), so a
/// single-threaded sequence of picks is reproducible.
#[derive(Debug)]
pub struct NginxRandom {
    two: bool,
    rng: SplitMix,
}

impl Default for NginxRandom {
    fn default() -> Self {
        Self::new()
    }
}

impl NginxRandom {
    /// nginx's plain `random`, with the default seed.
    pub fn new() -> Self {
        NginxRandom {
            two: false,
            rng: SplitMix::new(DEFAULT_SEED),
        }
    }

    /// nginx's `random two least_conn`, with the default seed.
    pub fn two() -> Self {
        NginxRandom {
            two: true,
            ..Self::new()
        }
    }

    /// The same method, drawing from a source seeded with `seed`.
    pub fn with_seed(self, seed: u64) -> Self {
        NginxRandom {
            rng: SplitMix::new(seed),
            ..self
        }
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let up = snap.tables::<Upstream>()?;
        let members = snap.members();
        let i = choose(members, up, ctx, self.two, &mut || self.rng.next_u64(), t)?;
        Some(Pick::new(&members[i]))
    }
}

/// The decision of `random` (`two == false`) or `random two`, given the
/// random numbers `draw` returns (one per draw, reduced mod `T`).
fn choose<T: Trace>(
    members: &[Member],
    up: &Upstream,
    ctx: &Ctx<'_>,
    two: bool,
    draw: &mut impl FnMut() -> u64,
    t: &mut T,
) -> Option<usize> {
    if up.primaries < 2 || up.total == 0 {
        why!(
            t,
            "random: {} primaries, total weight {}",
            up.primaries,
            up.total
        );
        return up.round_robin(members, ctx, t);
    }
    // Every draw that does not decide costs a try; the 21st try gives up.
    let mut first: Option<usize> = None;
    for _ in 0..=MAX_REJECTS {
        let x = draw() % up.total;
        let i = up.walk(x)?;
        let m = &members[i];
        let usable = first != Some(i) && ctx.usable(m);
        why!(
            t,
            "  draw {x}: {} conns={} {}",
            Load(m),
            m.conns(),
            if usable { "usable" } else { "rejected" }
        );
        if !usable {
            continue;
        }
        match first {
            Some(p1) => return Some(least_loaded(members, p1, i, t)),
            None if two => first = Some(i),
            None => {
                why!(t, "rule: random -> {}", m.name());
                return Some(i);
            }
        }
    }
    why!(t, "random: {} tries used", MAX_REJECTS + 1);
    up.round_robin(members, ctx, t)
}

/// `random two`'s choice between the first draw `p1` and the second `p2`:
/// `p1` only if `p2` is strictly more loaded for its weight.
fn least_loaded<T: Trace>(members: &[Member], p1: usize, p2: usize, t: &mut T) -> usize {
    let (a, b) = (&members[p1], &members[p2]);
    let (ca, wa) = (a.conns(), u64::from(a.configured_weight()));
    let (cb, wb) = (b.conns(), u64::from(b.configured_weight()));
    let pick = if cb * wa > ca * wb { p1 } else { p2 };
    why!(
        t,
        "rule: two choices, the second unless it is more loaded -> {}",
        members[pick].name()
    );
    pick
}

impl Scheduler for NginxRandom {
    fn name(&self) -> &'static str {
        "random"
    }

    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Option<Tables> {
        Some(Upstream::prepare(next, prev, change, false))
    }

    fn features(&self) -> Features {
        Features::MAX_CONNS
    }

    pick_via_select!();
}

#[cfg(test)]
mod tests {
    use lb_core::{Backend, ConnGuard, Health, Pool};

    use super::*;
    use crate::trace::NoTrace;
    use crate::Balancer;

    /// A pool of `(name, weight, conns)`, attached to a `random two`.
    fn pool(spec: &[(&str, u64, u32)]) -> (Pool, Vec<ConnGuard>) {
        let pool = Pool::new();
        let mut guards = Vec::new();
        for (i, &(name, w, conns)) in spec.iter().enumerate() {
            let id = pool
                .add(
                    Backend::new(name, format!("10.0.0.{}:80", i + 1).parse().unwrap())
                        .with_weight(w),
                )
                .unwrap();
            let m = pool.load().get(id).unwrap().clone();
            guards.extend((0..conns).map(|_| m.connect()));
        }
        Balancer::new(pool.clone(), Box::new(NginxRandom::two()));
        (pool, guards)
    }

    /// The decision of `random` / `random two` for scripted draws, and how
    /// many draws it used.
    fn decide(pool: &Pool, two: bool, draws: &[u64]) -> (Option<String>, usize) {
        let snap = pool.load();
        let up = snap.tables::<Upstream>().unwrap();
        let ctx = Ctx::new("192.0.2.1:1".parse().unwrap());
        let mut used = 0;
        let mut draw = || {
            used += 1;
            draws[(used - 1).min(draws.len() - 1)]
        };
        let i = choose(snap.members(), up, &ctx, two, &mut draw, &mut NoTrace);
        (i.map(|i| snap.members()[i].name().to_owned()), used)
    }

    // Draws mod T = 3: 0 is A (weight 1), 1 and 2 are B (weight 2).
    const A: u64 = 0;
    const B: u64 = 1;

    #[test]
    fn r2_1_the_second_draw_unless_strictly_more_loaded() {
        // A(w=1, conns=3), B(w=2, conns=4): B's ratio 2 < A's 3.
        let (p, _g) = pool(&[("a", 1, 3), ("b", 2, 4)]);
        assert_eq!(
            decide(&p, true, &[A, B]),
            (Some("b".into()), 2),
            "4*1 > 3*2 is false: the second"
        );
        assert_eq!(
            decide(&p, true, &[B, A]),
            (Some("b".into()), 2),
            "3*2 > 4*1: the first"
        );
    }

    #[test]
    fn r2_2_a_tie_goes_to_the_second_draw() {
        let (p, _g) = pool(&[("a", 1, 2), ("b", 1, 2)]);
        // T = 2 here: draw 0 is A, 1 is B.
        assert_eq!(decide(&p, true, &[0, 1]).0.as_deref(), Some("b"));
        assert_eq!(decide(&p, true, &[1, 0]).0.as_deref(), Some("a"));
    }

    #[test]
    fn r2_3_repeats_and_unusable_draws_cost_tries_up_to_21() {
        let (p, _g) = pool(&[("a", 1, 0), ("b", 2, 5)]);
        // A, then A twenty more times: the first accepted draw and 20
        // repeats make 21 tries, so round robin decides (B first, weight 2).
        assert_eq!(decide(&p, true, &[A]), (Some("b".into()), 21));
        // A, 19 repeats, then B: 20 tries, and the 21st draw decides.
        let mut draws = vec![A; 20];
        draws.push(B);
        assert_eq!(
            decide(&p, true, &draws),
            (Some("a".into()), 21),
            "5*1 > 0*2: the first"
        );
        // One more repeat and the budget is gone before B is drawn: round
        // robin again, whose second step (after b) is a.
        let mut draws = vec![A; 21];
        draws.push(B);
        assert_eq!(decide(&p, true, &draws), (Some("a".into()), 21));
        // An unusable backend's draws cost tries the same way.
        let b = p.find("b").unwrap();
        p.set_health(b, Health::Down).unwrap();
        let mut draws = vec![B; 20];
        draws.push(A);
        assert_eq!(
            decide(&p, false, &draws),
            (Some("a".into()), 21),
            "random: 20 rejected, then A"
        );
        assert_eq!(
            decide(&p, false, &[B]),
            (Some("a".into()), 21),
            "random: 21 rejected, round robin"
        );
    }

    #[test]
    fn plain_random_takes_the_first_usable_draw_by_weight() {
        let (p, _g) = pool(&[("a", 1, 9), ("b", 2, 0)]);
        assert_eq!(decide(&p, false, &[A]), (Some("a".into()), 1));
        assert_eq!(decide(&p, false, &[2]), (Some("b".into()), 1));
        assert_eq!(
            decide(&p, false, &[5]),
            (Some("b".into()), 1),
            "draws are taken mod T"
        );
    }

    #[test]
    fn fewer_than_two_primaries_or_no_weight_is_round_robin() {
        let (p, _g) = pool(&[("a", 1, 0)]);
        assert_eq!(decide(&p, true, &[0]), (Some("a".into()), 0));
        let (p, _g) = pool(&[("a", 0, 0), ("b", 0, 0)]);
        assert_eq!(decide(&p, true, &[0]), (None, 0));
    }
}
