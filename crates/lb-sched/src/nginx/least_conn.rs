//! `least_conn`: nginx's least connections, as
//! `ngx_http_upstream_least_conn_module.c` (SCHEDULERS-NGINX.md section 5).
//!
//! The pool-order scan below ([`least_conn`]) is the definition, O(n) per
//! pick. Each snapshot also gets an [`LcIndex`] (`lc_index.rs`) that gives
//! the same decisions in O(1) without a tie and, with `d` tied backends,
//! O(g + log d) while the tied level is the one `lc_cache.rs` keeps (`g`
//! distinct weights among them), O(d log(n/d)) when a new level becomes the
//! least; picks that tried some backends, or are explained, scan.

use std::sync::Arc;

use parking_lot::Mutex;

use lb_core::{Change, Ctx, Member, Pick, Snapshot, Tables};

use super::lc_cache::LcCache;
use super::lc_index::{LcIndex, Least};
use super::Upstream;
use crate::trace::{is_on, pick_via_select, why, Load, Trace};
use crate::wrr::swrr_step;
use crate::{Features, Scheduler};

/// nginx's `least_conn`: the usable backend with the least `conns/weight`
/// (compared by cross-multiplication), ties among all backends of that
/// ratio broken by a smooth-WRR step over them alone. The backups are used,
/// the same way, only when no primary is usable.
///
/// This is not LVS `lc`/`wlc`: the load is every open connection (idle ones
/// included, no 256x factor), and a strictly least-loaded backend wins
/// without moving any `current`. Three backends of weight 1 with nothing
/// released are picked `a b c c b a`.
#[derive(Debug, Default)]
pub struct NginxLeastConn;

impl NginxLeastConn {
    /// A new nginx least_conn.
    pub fn new() -> Self {
        NginxLeastConn
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let tables = snap.tables::<LcTables>()?;
        let up = tables.up.downcast_ref::<Upstream>()?;
        let members = snap.members();
        if let Some(index) = tables.index.as_ref() {
            if !is_on(t) && ctx.tried().is_empty() && index.live() {
                let i = indexed(index, &tables.cache, members, up, false)
                    .or_else(|| indexed(index, &tables.cache, members, up, true))?;
                return Some(Pick::new(members.get(i)?));
            }
        }
        why!(t, "least_conn: primaries");
        let cache = &tables.cache;
        let i = least_conn(members, up, cache, ctx, false, t).or_else(|| {
            why!(t, "least_conn: no primary usable; backups");
            least_conn(members, up, cache, ctx, true, t)
        })?;
        Some(Pick::new(&members[i]))
    }
}

/// A snapshot's tables: the nginx state (`current`s, carried over health
/// changes) with its lazy tie-level cache (carried with it), and the
/// snapshot's own index.
#[derive(Debug)]
struct LcTables {
    up: Tables,
    cache: Arc<Mutex<LcCache>>,
    index: Option<LcIndex>,
}

/// `LC(L)` by the index: the same decision as [`least_conn`] for the
/// primary (`backup == false`) or the backup list.
#[inline]
fn indexed(
    index: &LcIndex,
    cache: &Mutex<LcCache>,
    members: &[Member],
    up: &Upstream,
    backup: bool,
) -> Option<usize> {
    match index.least(backup) {
        Least::Empty => None,
        Least::One(i) => Some(i),
        Least::Tied(mut set) => {
            // The smooth step of the scan, over the tied backends only.
            let mut cache = cache.lock();
            let mut current = up.currents.0.lock();
            if current.len() != members.len() {
                return None;
            }
            set.step(&mut cache, &mut current)
        }
    }
}

/// `LC(L)` over the primary (`backup == false`) or the backup list.
fn least_conn<T: Trace>(
    members: &[Member],
    up: &Upstream,
    cache: &Mutex<LcCache>,
    ctx: &Ctx<'_>,
    backup: bool,
    t: &mut T,
) -> Option<usize> {
    // The first usable backend of least ratio, its conns and weight, and
    // whether another usable backend has the same ratio.
    let mut best: Option<(usize, u64, u64)> = None;
    let mut many = false;
    for (i, m) in members.iter().enumerate() {
        if m.is_backup() != backup || !ctx.usable(m) {
            continue;
        }
        let (c, w) = (m.conns(), u64::from(m.configured_weight()));
        why!(t, "  {} conns={c}", Load(m));
        match best {
            Some((_, bc, bw)) if c * bw == bc * w => many = true,
            Some((_, bc, bw)) if c * bw > bc * w => {}
            _ => {
                best = Some((i, c, w));
                many = false;
            }
        }
    }
    let (b, bc, bw) = best?;
    if !many {
        why!(
            t,
            "rule: least conns/weight, no tie -> {}",
            members[b].name()
        );
        return Some(b);
    }
    why!(
        t,
        "tie at conns/weight = {bc}/{bw}: smooth wrr among the tied, from {}",
        members[b].name()
    );
    // The cached level's `current`s back in place first (and the cache
    // locked: no index moves them while the scan does).
    let mut cache = cache.lock();
    let mut current = up.currents.0.lock();
    cache.flush(&mut current);
    let tied = |m: &Member| {
        m.is_backup() == backup && m.conns() * bw == bc * u64::from(m.configured_weight())
    };
    // The tied backends all come at or after the first of them, `b`.
    let step = swrr_step(&members[b..], &mut current[b..], ctx, tied, t);
    // `b` itself is tied unless another thread changed its load meanwhile.
    Some(step.map_or(b, |k| b + k))
}

impl Scheduler for NginxLeastConn {
    fn name(&self) -> &'static str {
        "least_conn"
    }

    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Option<Tables> {
        let prev = prev.and_then(|p| p.tables::<LcTables>());
        let up = Upstream::carry(next, prev.map(|t| &t.up), change, false);
        let cache = match prev {
            Some(p) if Arc::ptr_eq(&p.up, &up) => p.cache.clone(),
            _ => Arc::new(Mutex::new(LcCache::new(next.members().len()))),
        };
        let index = LcIndex::prepare(next, up.clone(), cache.clone());
        Some(Arc::new(LcTables { up, cache, index }))
    }

    fn features(&self) -> Features {
        Features::BACKUP_AND_MAX_CONNS
    }

    pick_via_select!();
}
