//! `p2c`: weighted power of two choices (Mitzenmacher, "The Power of Two
//! Choices in Randomized Load Balancing", 2001; as tower's
//! `balance::p2c` and linkerd's `pool/p2c`, with weights).
//!
//! Two distinct backends are drawn at random, each in proportion to its
//! weight among the usable ones; the one with the smaller load per unit of
//! weight takes the connection. The load is every open connection, active
//! and inactive (the in-flight count). Loads divided by weights are compared
//! by cross-multiplication (`load_a * w_b` against `load_b * w_a`), so no
//! division and no rounding; on a tie the first drawn wins, which keeps the
//! shares proportional to weight when loads are equal.
//!
//! The draw is exact, not approximate: [`Draw`] holds the prefix sums of the
//! weights of the backends that are up (built in `prepare`, off the pick
//! path), and a draw from it is accepted only if the backend is usable for
//! this pick (under its `max_conns`, not already tried) and differs from the
//! first. Rejection sampling conditioned on acceptance gives exactly the
//! distribution over the usable backends; after a few rejections a linear
//! pass draws from that same distribution directly, so the result is exact
//! whichever path is taken and the pick never loops unboundedly.

use std::sync::Arc;

use lb_core::{Change, Ctx, Member, Pick, Snapshot, Tables};

use crate::rng::SplitMix;
use crate::trace::{pick_via_select, why, Load, Trace};
use crate::Scheduler;

/// How many rejected draws before falling back to a linear pass.
const REJECTIONS: usize = 4;

/// The prefix sums of the weights of the backends that are up and have a
/// weight, in pool order: the table a weighted draw searches.
#[derive(Debug, Default)]
pub(crate) struct Draw {
    /// `ends[k]` = sum of the weights of candidates `0..=k`.
    ends: Vec<u64>,
    /// `pos[k]` = the position in the snapshot of candidate `k`.
    pos: Vec<u32>,
}

impl Draw {
    /// The table for `snap`.
    pub(crate) fn build(snap: &Snapshot) -> Self {
        let mut total = 0u64;
        let mut draw = Draw::default();
        for (i, m) in snap.members().iter().enumerate() {
            if m.is_up() && m.weight() > 0 {
                total += u64::from(m.weight());
                draw.ends.push(total);
                draw.pos.push(i as u32);
            }
        }
        draw
    }

    fn total(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// One candidate's position, drawn in proportion to weight among all
    /// candidates of the table (usable or not).
    #[inline]
    fn draw(&self, rng: &SplitMix) -> Option<usize> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let r = uniform(rng, total);
        let k = self.ends.partition_point(|&end| end <= r);
        self.pos.get(k).map(|&p| p as usize)
    }

    /// Draw a usable backend other than `not`, in proportion to weight
    /// among the usable ones.
    fn draw_usable(
        &self,
        members: &[Member],
        ctx: &Ctx<'_>,
        not: Option<usize>,
        rng: &SplitMix,
    ) -> Option<usize> {
        for _ in 0..REJECTIONS {
            let i = self.draw(rng)?;
            if Some(i) != not && ctx.usable(&members[i]) {
                return Some(i);
            }
        }
        // Exact fallback: sum the usable weights, then draw by scanning.
        let ok = |&i: &usize| Some(i) != not && ctx.usable(&members[i]);
        let usable = || self.pos.iter().map(|&p| p as usize).filter(ok);
        let total: u64 = usable().map(|i| u64::from(members[i].weight())).sum();
        if total == 0 {
            return None;
        }
        let mut r = uniform(rng, total);
        let mut last = None;
        for i in usable() {
            let w = u64::from(members[i].weight());
            if r < w {
                return Some(i);
            }
            r -= w;
            last = Some(i);
        }
        // A backend filled up between the two passes: take the last seen.
        last
    }

    /// Two distinct usable backends (or one when only one is usable), each
    /// drawn in proportion to weight among the usable ones.
    pub(crate) fn draw_two(
        &self,
        members: &[Member],
        ctx: &Ctx<'_>,
        rng: &SplitMix,
    ) -> Option<(usize, Option<usize>)> {
        let a = self.draw_usable(members, ctx, None, rng)?;
        let b = self.draw_usable(members, ctx, Some(a), rng);
        Some((a, b))
    }
}

/// A uniform number in `0..n` (`n > 0`) by multiply-high: no division.
#[inline]
fn uniform(rng: &SplitMix, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

/// Whether `a` is strictly more loaded per unit of weight than `b`, with
/// integer cross-multiplication: `load_a / w_a > load_b / w_b`.
#[inline]
pub(crate) fn heavier(load_a: u128, w_a: u32, load_b: u128, w_b: u32) -> bool {
    load_a * u128::from(w_b) > load_b * u128::from(w_a)
}

/// Weighted power of two choices over open connections.
///
/// Built by the registry as `p2c [seed=N]`. The random source is a seeded
/// lock-free SplitMix64, so a single-threaded run with a given seed makes
/// the same picks every time.
#[derive(Debug)]
pub struct P2c {
    rng: SplitMix,
}

impl Default for P2c {
    fn default() -> Self {
        Self::new()
    }
}

impl P2c {
    /// A p2c scheduler with the default seed.
    pub fn new() -> Self {
        Self::with_seed(crate::rng::DEFAULT_SEED)
    }

    /// A p2c scheduler whose random draws start from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        P2c {
            rng: SplitMix::new(seed),
        }
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let draw = snap.tables::<Draw>()?;
        let members = snap.members();
        let (a, b) = draw.draw_two(members, ctx, &self.rng)?;
        let ma = &members[a];
        let Some(b) = b else {
            why!(t, "p2c: only {} is usable -> {}", Load(ma), ma.name());
            return Some(Pick::new(ma));
        };
        let mb = &members[b];
        why!(t, "p2c: drew {} and {}", Load(ma), Load(mb));
        let (la, lb) = (u128::from(ma.conns()), u128::from(mb.conns()));
        let win = if heavier(la, ma.weight(), lb, mb.weight()) {
            mb
        } else {
            ma
        };
        why!(
            t,
            "rule: smaller conns/weight wins ({la}*{} vs {lb}*{}), first drawn on ties -> {}",
            mb.weight(),
            ma.weight(),
            win.name()
        );
        Some(Pick::new(win))
    }
}

impl Scheduler for P2c {
    fn name(&self) -> &'static str {
        "p2c"
    }

    fn prepare(
        &self,
        next: &Snapshot,
        _prev: Option<&Snapshot>,
        _change: Change,
    ) -> Option<Tables> {
        Some(Arc::new(Draw::build(next)))
    }

    pick_via_select!();
}
