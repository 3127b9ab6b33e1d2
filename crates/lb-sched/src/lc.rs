//! The least-connection family of LVS: `lc` (`ip_vs_lc.c`), `wlc`
//! (`ip_vs_wlc.c`), `sed` (`ip_vs_sed.c`) and `nq` (`ip_vs_nq.c`).
//!
//! All four minimise a load over a weight without division: walking the
//! pool in order, a later eligible backend `d` replaces the best so far `b`
//! only when `oh(b) * w(d) > oh(d) * w(b)`, strictly, so every tie goes to
//! the first. The products are taken in 128 bits and cannot overflow. See
//! `SCHEDULERS.md` and reference A.3-A.6.
//!
//! The pool-order scan below is the definition. Each scheduler also builds a
//! [`LeastIndex`] per snapshot that gives the same answer in O(1) per pick
//! (O(log n) per connection change) and is used whenever it can answer
//! exactly; the scan decides otherwise (see `least.rs`).

use std::sync::Arc;

use lb_core::{Change, Ctx, Member, Pick, Snapshot, Tables};

use crate::least::{LeastIndex, Rule};
use crate::trace::{is_on, pick_via_select, why, Load, Trace};
use crate::Scheduler;

/// The choice of the index of `rule` prepared for `snap`, when it can give
/// it exactly and no explanation is asked for: `Some(None)` when nothing is
/// eligible, `None` when the caller must scan.
#[inline]
pub(crate) fn indexed<'s, T: Trace>(
    snap: &'s Snapshot,
    ctx: &Ctx<'_>,
    rule: Rule,
    t: &T,
) -> Option<Option<&'s Member>> {
    if is_on(t) {
        return None;
    }
    LeastIndex::choice(snap, ctx, rule)
}

/// The tables of a least-connection scheduler: the index of `rule`.
pub(crate) fn prepare_index(rule: Rule, next: &Snapshot) -> Option<Tables> {
    Some(Arc::new(LeastIndex::prepare(rule, next)))
}

/// LVS's overhead for lc, wlc, lblc, lblcr and twos: `256 * active + inactive`.
#[inline]
pub(crate) fn lvs_overhead(m: &Member) -> u64 {
    m.lvs_overhead()
}

/// The overhead of sed and nq: `active + 1` (inactive connections ignored).
#[inline]
pub(crate) fn sed_overhead(m: &Member) -> u64 {
    u64::from(m.active()) + 1
}

/// Whether a candidate of overhead `oh` and weight `w` replaces the best so
/// far (`best_oh`, `best_w`): `best_oh * w > oh * best_w`, strictly.
#[inline]
pub(crate) fn replaces(best_oh: u64, best_w: u64, oh: u64, w: u64) -> bool {
    u128::from(best_oh) * u128::from(w) > u128::from(oh) * u128::from(best_w)
}

/// A running cross-multiplied minimum: the first candidate offered seeds
/// it, and each later one replaces it only by the strict rule of
/// [`replaces`].
pub(crate) struct Least<'s> {
    best: Option<(&'s Member, u64, u64)>,
}

impl<'s> Least<'s> {
    pub(crate) fn new() -> Self {
        Least { best: None }
    }

    /// Offer `m` with overhead `oh` and weight `w`.
    #[inline]
    pub(crate) fn offer<T: Trace>(&mut self, m: &'s Member, oh: u64, w: u64, t: &mut T) {
        match self.best {
            None => {
                why!(
                    t,
                    "  {} overhead={oh}: first eligible, best so far",
                    Load(m)
                );
                self.best = Some((m, oh, w));
            }
            Some((b, boh, bw)) => {
                if replaces(boh, bw, oh, w) {
                    why!(
                        t,
                        "  {} overhead={oh}: replaces {}, {boh}*{w} > {oh}*{bw}",
                        Load(m),
                        b.name()
                    );
                    self.best = Some((m, oh, w));
                } else {
                    why!(
                        t,
                        "  {} overhead={oh}: keeps {}, {boh}*{w} <= {oh}*{bw}",
                        Load(m),
                        b.name()
                    );
                }
            }
        }
    }

    /// The minimum, if anything was offered.
    #[inline]
    pub(crate) fn get(&self) -> Option<&'s Member> {
        self.best.map(|(m, _, _)| m)
    }
}

/// The cross-multiplied argmin of `cost` (overhead, weight) over the usable
/// members of `members`, in their order, first on ties.
#[inline]
pub(crate) fn least<'s, T: Trace>(
    members: impl IntoIterator<Item = &'s Member>,
    ctx: &Ctx<'_>,
    cost: impl Fn(&Member) -> (u64, u64),
    t: &mut T,
) -> Option<&'s Member> {
    let mut best = Least::new();
    for m in members {
        if ctx.usable(m) {
            let (oh, w) = cost(m);
            best.offer(m, oh, w, t);
        } else {
            why!(t, "  {}: skipped, not eligible", Load(m));
        }
    }
    best.get()
}

/// wlc's cost: LVS overhead and weight.
#[inline]
pub(crate) fn wlc_cost(m: &Member) -> (u64, u64) {
    (lvs_overhead(m), u64::from(m.weight()))
}

/// wlc over the whole pool, as lblc and lblcr reselect.
pub(crate) fn wlc<'s, T: Trace>(
    snap: &'s Snapshot,
    ctx: &Ctx<'_>,
    t: &mut T,
) -> Option<&'s Member> {
    if let Some(m) = indexed(snap, ctx, Rule::Wlc, t) {
        return m;
    }
    let m = least(snap.members(), ctx, wlc_cost, t);
    decided(
        t,
        "wlc: least (256*active+inactive)/weight, by oh(b)*w(d) > oh(d)*w(b), first on ties",
        m,
    );
    m
}

/// Record the deciding rule and its outcome.
#[inline]
pub(crate) fn decided<T: Trace>(t: &mut T, rule: &str, m: Option<&Member>) {
    match m {
        Some(m) => why!(t, "rule: {rule} -> {}", m.name()),
        None => why!(t, "rule: {rule} -> none: no eligible backend"),
    }
}

// === impl LeastConn ===

/// `lc`: least connection, as LVS `ip_vs_lc.c`.
///
/// The eligible backend with the smallest overhead `256 * active +
/// inactive`; only a strictly smaller overhead replaces the best, so ties
/// go to the first in pool order. Weights only enable (> 0) or disable (0).
#[derive(Debug, Default)]
pub struct LeastConn;

impl LeastConn {
    /// A new least-connection scheduler.
    pub fn new() -> Self {
        LeastConn
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        if let Some(m) = indexed(snap, ctx, Rule::Lc, t) {
            return m.map(Pick::new);
        }
        let m = least(snap.members(), ctx, |m| (lvs_overhead(m), 1), t);
        decided(t, "lc: least 256*active+inactive, first on ties", m);
        m.map(Pick::new)
    }
}

impl Scheduler for LeastConn {
    fn name(&self) -> &'static str {
        "lc"
    }

    fn prepare(&self, next: &Snapshot, _: Option<&Snapshot>, _: Change) -> Option<Tables> {
        prepare_index(Rule::Lc, next)
    }

    pick_via_select!();
}

// === impl WeightedLeastConn ===

/// `wlc`: weighted least connection, as LVS `ip_vs_wlc.c` (ipvsadm's
/// default).
///
/// The first eligible backend, then each later eligible backend `d`
/// replaces the best `b` when `oh(b) * w(d) > oh(d) * w(b)`, with
/// `oh = 256 * active + inactive`.
#[derive(Debug, Default)]
pub struct WeightedLeastConn;

impl WeightedLeastConn {
    /// A new weighted least-connection scheduler.
    pub fn new() -> Self {
        WeightedLeastConn
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        wlc(snap, ctx, t).map(Pick::new)
    }
}

impl Scheduler for WeightedLeastConn {
    fn name(&self) -> &'static str {
        "wlc"
    }

    fn prepare(&self, next: &Snapshot, _: Option<&Snapshot>, _: Change) -> Option<Tables> {
        prepare_index(Rule::Wlc, next)
    }

    pick_via_select!();
}

// === impl ShortestExpectedDelay ===

/// `sed`: shortest expected delay, as LVS `ip_vs_sed.c`.
///
/// As wlc, with overhead `active + 1`: the least `(active + 1) / weight`,
/// first on ties. Inactive connections are ignored.
#[derive(Debug, Default)]
pub struct ShortestExpectedDelay;

impl ShortestExpectedDelay {
    /// A new shortest-expected-delay scheduler.
    pub fn new() -> Self {
        ShortestExpectedDelay
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        if let Some(m) = indexed(snap, ctx, Rule::Sed, t) {
            return m.map(Pick::new);
        }
        let m = least(
            snap.members(),
            ctx,
            |m| (sed_overhead(m), u64::from(m.weight())),
            t,
        );
        decided(
            t,
            "sed: least (active+1)/weight, by oh(b)*w(d) > oh(d)*w(b), first on ties",
            m,
        );
        m.map(Pick::new)
    }
}

impl Scheduler for ShortestExpectedDelay {
    fn name(&self) -> &'static str {
        "sed"
    }

    fn prepare(&self, next: &Snapshot, _: Option<&Snapshot>, _: Change) -> Option<Tables> {
        prepare_index(Rule::Sed, next)
    }

    pick_via_select!();
}

// === impl NeverQueue ===

/// `nq`: never queue, as LVS `ip_vs_nq.c`.
///
/// The first eligible backend with no active connection, at once, whatever
/// its weight; if every eligible backend is busy, as sed.
#[derive(Debug, Default)]
pub struct NeverQueue;

impl NeverQueue {
    /// A new never-queue scheduler.
    pub fn new() -> Self {
        NeverQueue
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        if let Some(m) = indexed(snap, ctx, Rule::Nq, t) {
            return m.map(Pick::new);
        }
        let mut best = Least::new();
        for m in snap.members() {
            if !ctx.usable(m) {
                why!(t, "  {}: skipped, not eligible", Load(m));
                continue;
            }
            let active = m.active();
            if active == 0 {
                why!(t, "  {}: idle", Load(m));
                why!(
                    t,
                    "rule: nq: the first eligible backend with active == 0 -> {}",
                    m.name()
                );
                return Some(Pick::new(m));
            }
            best.offer(m, u64::from(active) + 1, u64::from(m.weight()), t);
        }
        let m = best.get();
        decided(
            t,
            "nq: none idle, so as sed: least (active+1)/weight, first on ties",
            m,
        );
        m.map(Pick::new)
    }
}

impl Scheduler for NeverQueue {
    fn name(&self) -> &'static str {
        "nq"
    }

    fn prepare(&self, next: &Snapshot, _: Option<&Snapshot>, _: Change) -> Option<Tables> {
        prepare_index(Rule::Nq, next)
    }

    pick_via_select!();
}
