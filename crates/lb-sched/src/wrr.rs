//! `wrr`: nginx's smooth weighted round robin
//! (`ngx_http_upstream_round_robin.c`), with backup servers and `max_conns`.

use parking_lot::Mutex;

use lb_core::{Change, Ctx, Member, Pick, Snapshot, Tables};

use crate::smooth::Smooth;
use crate::trace::{pick_via_select, why, Load, Trace};
use crate::{Features, Scheduler};

/// The signed `current` weight of every backend of a snapshot, by position.
///
/// Shared by the nginx-family schedulers: reset to zero by any weight or
/// membership change, carried over unchanged by a health change. (The
/// default method, [`SmoothWrr`], keeps its own in `smooth.rs`.)
#[derive(Debug)]
pub(crate) struct Currents(pub(crate) Mutex<Vec<i64>>);

/// One step of smooth weighted round robin over the members for which
/// `candidate` holds, in pool order: every usable candidate adds its weight
/// to its `current`; the largest `current` (first on ties) wins and gives
/// back the sum of the weights. Returns the winner's position.
pub(crate) fn swrr_step<T: Trace>(
    members: &[Member],
    current: &mut [i64],
    ctx: &Ctx<'_>,
    mut candidate: impl FnMut(&Member) -> bool,
    t: &mut T,
) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut total: i64 = 0;
    for (i, m) in members.iter().enumerate() {
        if !candidate(m) || !ctx.usable(m) {
            continue;
        }
        let w = i64::from(m.weight());
        current[i] += w;
        total += w;
        why!(t, "  {} current={}", Load(m), current[i]);
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let b = best?;
    current[b] -= total;
    why!(
        t,
        "rule: smooth wrr: largest current wins (first on ties), minus total {total} -> {}",
        members[b].name()
    );
    Some(b)
}

/// nginx's default balancing: smooth weighted round robin over the primary
/// backends, and over the backups only when no primary is usable.
///
/// Weights 5, 1, 1 give `a a b a c a a`; over any window of sum-of-weights
/// picks with static weights each backend gets exactly its weight.
///
/// The linear step above is the definition; picks that try nothing, in a
/// pool without `max_conns` limits, take the same decisions in O(d + log n)
/// (`d` distinct weights) through per-weight tournament trees (`smooth.rs`).
#[derive(Debug, Default)]
pub struct SmoothWrr;

impl SmoothWrr {
    /// A new smooth weighted round robin.
    pub fn new() -> Self {
        SmoothWrr
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let smooth = snap.tables::<Smooth>()?;
        let i = smooth.step(snap, ctx, t)?;
        Some(Pick::new(&snap.members()[i]))
    }
}

impl Scheduler for SmoothWrr {
    fn name(&self) -> &'static str {
        "wrr"
    }

    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Option<Tables> {
        Some(Smooth::prepare(next, prev, change))
    }

    fn features(&self) -> Features {
        Features::BACKUP_AND_MAX_CONNS
    }

    pick_via_select!();
}
