//! nginx's upstream balancing methods: `least_conn`, `ip_hash`, `hash`
//! (plain and `consistent`) and `random` (`random two [least_conn]`), as
//! nginx's `ngx_http_upstream_{least_conn,ip_hash,hash,random}_module.c` on
//! top of `ngx_http_upstream_round_robin.c` decide them. The contract is
//! `SCHEDULERS-NGINX.md`; the default method (smooth weighted round robin)
//! is [`SmoothWrr`](crate::SmoothWrr) in `wrr.rs`.
//!
//! The common model, shared by every method here:
//!
//! - the *primary list* is the backends without `backup`, the *backup list*
//!   those with it, each in pool order;
//! - a backend is usable for a pick when [`Ctx::usable`] says so (up,
//!   weight > 0, under `max_conns`, not tried); its load is
//!   [`Member::conns`] (active + inactive);
//! - `T` is the sum of the weights of **all** primaries and `n` their
//!   number, down, full and weight-0 ones included (nginx's
//!   `total_weight` and `number`);
//! - every backend has a signed smooth-WRR `current` ([`Currents`]); only a
//!   smooth step ([`swrr_step`]) moves it. A weight or membership change
//!   resets every `current` and rebuilds every table; a health change keeps
//!   them all (`down`/`up` change usability only).

use std::sync::Arc;

use parking_lot::Mutex;

use lb_core::{Change, Ctx, Member, Snapshot, Tables};

use crate::trace::{why, Trace};
use crate::wrr::{swrr_step, Currents};

mod hash;
mod ip_hash;
mod lc_cache;
mod lc_index;
mod least_conn;
mod random;

pub use hash::{ConsistentHash, KeyHash};
pub use ip_hash::IpHash;
pub use least_conn::NginxLeastConn;
pub use random::NginxRandom;

use hash::Ring;

/// How many rejected probes (hash walks, ring points, random draws) nginx
/// allows before it falls back to round robin: the 21st rejection does.
pub(crate) const MAX_REJECTS: u32 = 20;

/// The tables of one snapshot for the nginx methods, built in `prepare`.
pub(crate) struct Upstream {
    /// The smooth-WRR `current` of every backend, by position.
    pub(crate) currents: Currents,
    /// For each primary of positive weight, in pool order: the end of its
    /// share of `[0, T)` (the running sum of weights) and its position.
    ranges: Vec<(u64, u32)>,
    /// `T`: the sum of the primaries' weights.
    pub(crate) total: u64,
    /// `n`: the number of primaries.
    pub(crate) primaries: usize,
    /// The consistent-hash ring, for `hash consistent` only.
    pub(crate) ring: Option<Ring>,
}

impl Upstream {
    /// Tables for `next`: those of `prev` as they are after a health or
    /// effective-weight change (so `current` values, `T` and the ring, all
    /// built from configured weights, carry over), new ones (all `current`
    /// at zero) after any other change.
    pub(crate) fn prepare(
        next: &Snapshot,
        prev: Option<&Snapshot>,
        change: Change,
        ring: bool,
    ) -> Tables {
        Self::carry(next, prev.and_then(|p| p.raw_tables()), change, ring)
    }

    /// [`prepare`](Self::prepare) from the previous snapshot's tables
    /// (`prev`, if they are an `Upstream`) rather than the snapshot.
    pub(crate) fn carry(
        next: &Snapshot,
        prev: Option<&Tables>,
        change: Change,
        ring: bool,
    ) -> Tables {
        if change.keeps_balance_state() {
            if let Some(t) = prev {
                if t.downcast_ref::<Upstream>()
                    .is_some_and(|u| u.ring.is_some() == ring)
                {
                    return t.clone();
                }
            }
        }
        Arc::new(Upstream::build(next.members(), ring))
    }

    fn build(members: &[Member], ring: bool) -> Upstream {
        let mut total = 0u64;
        let mut primaries = 0;
        let mut ranges = Vec::new();
        for (pos, m) in members.iter().enumerate().filter(|(_, m)| !m.is_backup()) {
            primaries += 1;
            if m.configured_weight() > 0 {
                total += u64::from(m.configured_weight());
                ranges.push((total, pos as u32));
            }
        }
        Upstream {
            currents: Currents(Mutex::new(vec![0; members.len()])),
            ranges,
            total,
            primaries,
            ring: ring.then(|| Ring::build(members)),
        }
    }

    /// nginx's weighted walk: the position of the primary whose share of
    /// `[0, T)` holds `w` (the first `p` with `w < p.weight` after the
    /// weights before it are taken off). Weight-0 backends own no share.
    /// `None` only when `w >= T`.
    #[inline]
    pub(crate) fn walk(&self, w: u64) -> Option<usize> {
        let k = self.ranges.partition_point(|&(end, _)| end <= w);
        self.ranges.get(k).map(|&(_, pos)| pos as usize)
    }

    /// The round-robin fallback: one smooth-WRR step over the primary list.
    pub(crate) fn round_robin<T: Trace>(
        &self,
        members: &[Member],
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<usize> {
        let mut current = self.currents.0.lock();
        why!(t, "fallback: smooth wrr over the primaries");
        swrr_step(members, &mut current, ctx, |m| !m.is_backup(), t)
    }
}
