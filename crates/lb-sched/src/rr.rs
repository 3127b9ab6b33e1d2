//! `rr`: round robin, as LVS `ip_vs_rr.c`.

use std::sync::atomic::{AtomicU64, Ordering};

use lb_core::{BackendId, Ctx, Pick, Snapshot};

use crate::pad::Padded;
use crate::trace::{pick_via_select, why, Load, Trace};
use crate::Scheduler;

/// The cursor before any pick (no backend has id `u32::MAX`).
const NONE: u64 = u64::MAX;

/// The cursor word: the previous pick's id in the low half, its position in
/// the snapshot it was picked from in the high half (a hint that spares the
/// binary search while the pool is unchanged).
#[inline]
fn cursor(id: u32, pos: usize) -> u64 {
    ((pos as u64) << 32) | u64::from(id)
}

/// Where the search after the cursor `last` starts in `snap`: the position
/// that follows the previous pick, found from the hint when it still holds.
#[inline]
fn start_after(snap: &Snapshot, last: u64) -> usize {
    if last == NONE {
        return 0;
    }
    let (id, hint) = (last as u32, (last >> 32) as usize);
    match snap.members().get(hint) {
        Some(m) if m.id().get() == id => hint + 1,
        _ => snap.position_after(BackendId::from_raw(id)),
    }
}

/// Round robin: the first eligible backend after the previous pick, in pool
/// order, wrapping around. Weights only enable (> 0) or disable (0).
///
/// The cursor is the id of the previous pick, so when that backend is
/// removed the search starts at the backend that followed it; a pick that
/// finds nothing leaves the cursor where it was. Lock-free: one atomic word,
/// which also keeps the previous pick's position so that an unchanged pool
/// needs no search for it. The word sits alone on its cache lines, so
/// picks that write it do not evict what other threads read.
#[derive(Debug)]
pub struct RoundRobin {
    last: Padded<AtomicU64>,
}

impl Default for RoundRobin {
    fn default() -> Self {
        Self::new()
    }
}

impl RoundRobin {
    /// A round robin whose first search starts at the first backend.
    pub fn new() -> Self {
        RoundRobin {
            last: Padded(AtomicU64::new(NONE)),
        }
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let members = snap.members();
        let n = members.len();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let start = start_after(snap, last);
            why!(t, "rr: search starts at position {start} of {n}, wrapping");
            // start <= n; wrap without a division per step.
            let first = if start < n { start } else { 0 };
            let found = (first..n).chain(0..first).find(|&i| {
                let ok = ctx.usable(&members[i]);
                why!(
                    t,
                    "  {} {}",
                    Load(&members[i]),
                    if ok { "eligible" } else { "skipped" }
                );
                ok
            });
            let i = found?;
            let next = cursor(members[i].id().get(), i);
            match self
                .last
                .compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    why!(
                        t,
                        "rule: rr takes the first eligible backend -> {}",
                        members[i].name()
                    );
                    return Some(Pick::new(&members[i]));
                }
                Err(now) => last = now,
            }
        }
    }
}

impl Scheduler for RoundRobin {
    fn name(&self) -> &'static str {
        "rr"
    }

    pick_via_select!();
}
