//! `rr`: round robin, as LVS `ip_vs_rr.c`.

use std::sync::atomic::{AtomicU64, Ordering};

use lb_core::{BackendId, Ctx, Pick, Snapshot};

use crate::trace::{pick_via_select, why, Load, Trace};
use crate::Scheduler;

const NONE: u64 = u64::MAX;

/// Round robin: the first eligible backend after the previous pick, in pool
/// order, wrapping around. Weights only enable (> 0) or disable (0).
///
/// The cursor is the id of the previous pick, so when that backend is
/// removed the search starts at the backend that followed it; a pick that
/// finds nothing leaves the cursor where it was. Lock-free: one atomic word.
#[derive(Debug)]
pub struct RoundRobin {
    last: AtomicU64,
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
            last: AtomicU64::new(NONE),
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
            let start = if last == NONE {
                0
            } else {
                snap.position_after(BackendId::from_raw(last as u32))
            };
            why!(t, "rr: search starts at position {start} of {n}, wrapping");
            let found = (0..n).map(|k| (start + k) % n.max(1)).find(|&i| {
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
            let id = u64::from(members[i].id().get());
            match self
                .last
                .compare_exchange(last, id, Ordering::Relaxed, Ordering::Relaxed)
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
