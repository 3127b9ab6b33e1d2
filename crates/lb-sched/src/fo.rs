//! Weight-ordered schedulers of LVS: `fo` (`ip_vs_fo.c`) and `ovf`
//! (`ip_vs_ovf.c`). Connection counts do not rank: the highest weight wins,
//! replaced only by a strictly higher one, so ties go to the first in pool
//! order (reference A.7, A.8).
//!
//! The pool-order scan below is the definition. Each scheduler also
//! prepares a [`HeavyIndex`] per snapshot that gives the same answer in
//! O(1) per pick, used whenever it can answer exactly (see `heavy.rs`): a
//! pick that tried some backends, or is explained, scans.

use std::sync::Arc;

use lb_core::{Change, Ctx, Member, Pick, Snapshot, Tables};

use crate::heavy::{HeavyIndex, Kind};
use crate::trace::{is_on, pick_via_select, why, Load, Trace};
use crate::Scheduler;

/// The first usable member of the highest weight among those `fits` admits.
/// The search starts from weight 0 and replaces only on a strictly greater
/// weight, so a weight-0 backend is never returned.
fn heaviest<'s, T: Trace>(
    members: &'s [Member],
    ctx: &Ctx<'_>,
    fits: impl Fn(&Member) -> bool,
    t: &mut T,
) -> Option<&'s Member> {
    let mut best: Option<&'s Member> = None;
    let mut hw = 0u32;
    for m in members {
        if !ctx.usable(m) {
            why!(t, "  {}: skipped, not eligible", Load(m));
        } else if !fits(m) {
            why!(t, "  {}: skipped, active > weight", Load(m));
        } else if m.weight() > hw {
            why!(
                t,
                "  {}: weight {} > {hw}, best so far",
                Load(m),
                m.weight()
            );
            hw = m.weight();
            best = Some(m);
        } else {
            why!(t, "  {}: weight {} <= {hw}", Load(m), m.weight());
        }
    }
    best
}

fn decided<'s, T: Trace>(t: &mut T, rule: &str, m: Option<&'s Member>) -> Option<Pick<'s>> {
    crate::lc::decided(t, rule, m);
    m.map(Pick::new)
}

// === impl WeightedFailover ===

/// `fo`: weighted failover, as LVS `ip_vs_fo.c`.
///
/// The eligible backend with the highest weight, first on ties; connection
/// counts are ignored.
#[derive(Debug, Default)]
pub struct WeightedFailover;

impl WeightedFailover {
    /// A new weighted-failover scheduler.
    pub fn new() -> Self {
        WeightedFailover
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        if !is_on(t) {
            if let Some(m) = HeavyIndex::choice(snap, ctx, Kind::Fo) {
                return m.map(Pick::new);
            }
        }
        let m = heaviest(snap.members(), ctx, |_| true, t);
        decided(t, "fo: the highest weight, first on ties", m)
    }
}

impl Scheduler for WeightedFailover {
    fn name(&self) -> &'static str {
        "fo"
    }

    fn prepare(&self, next: &Snapshot, _: Option<&Snapshot>, _: Change) -> Option<Tables> {
        Some(Arc::new(HeavyIndex::prepare(Kind::Fo, next)))
    }

    pick_via_select!();
}

// === impl WeightedOverflow ===

/// `ovf`: weighted overflow, as LVS `ip_vs_ovf.c`.
///
/// Among the eligible backends with `active <= weight`, the one with the
/// highest weight, first on ties. A backend so takes up to `weight + 1`
/// active connections before traffic overflows to the next.
#[derive(Debug, Default)]
pub struct WeightedOverflow;

impl WeightedOverflow {
    /// A new weighted-overflow scheduler.
    pub fn new() -> Self {
        WeightedOverflow
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        if !is_on(t) {
            if let Some(m) = HeavyIndex::choice(snap, ctx, Kind::Ovf) {
                return m.map(Pick::new);
            }
        }
        let m = heaviest(snap.members(), ctx, |m| m.active() <= m.weight(), t);
        decided(
            t,
            "ovf: the highest weight with active <= weight, first on ties",
            m,
        )
    }
}

impl Scheduler for WeightedOverflow {
    fn name(&self) -> &'static str {
        "ovf"
    }

    fn prepare(&self, next: &Snapshot, _: Option<&Snapshot>, _: Change) -> Option<Tables> {
        Some(Arc::new(HeavyIndex::prepare(Kind::Ovf, next)))
    }

    pick_via_select!();
}
