//! Locality-based schedulers of LVS, keyed on the destination IP: `lblc`
//! (`ip_vs_lblc.c`) and `lblcr` (`ip_vs_lblcr.c`), reference A.10, A.11.
//!
//! Each scheduler instance owns its table, a map from destination IP to the
//! backend (lblc) or set of backends (lblcr) that served it, in shards
//! behind locks of its own (`keyed.rs`). Entries name backends by
//! [`BackendId`] (with a position hint). There is no timer: an entry is
//! valid while `now - last_use < expire` and an expired one is treated as
//! absent when it is looked up (`SCHEDULERS.md`).
//!
//! Reselection by wlc and the "some backend under half load" test of the
//! overload rule are answered by the snapshot's least-load index when it can
//! answer exactly (`least.rs`), else by scanning the pool.
//!
//! Two departures from the kernel, both declared in the contract:
//! "overloaded" looks for an *eligible* backend under half load, and
//! entries expire exactly at lookup instead of by a garbage-collecting timer.

use std::net::IpAddr;
use std::time::Duration;

use lb_core::{BackendId, Change, Ctx, Member, Pick, Snapshot, Tables};

use crate::keyed::{nanos, IpTable, Locked, Placed};
use crate::lc::{decided, least, lvs_overhead, prepare_index, wlc, wlc_cost};
use crate::least::{LeastIndex, Rule};
use crate::trace::{pick_via_select, why, Load, Trace};
use crate::Scheduler;

/// The default `expire`: LVS's `lblc_expiration` and `lblcr_expiration`, 24 h.
pub const DEFAULT_EXPIRE: Duration = Duration::from_secs(24 * 60 * 60);

/// Entries reserved up front (LVS's `max_size`), so that inserts rarely
/// allocate; when the table is full, expired entries are swept before it
/// grows.
const TABLE_CAPACITY: usize = 16 * 1024;

/// Whether an entry last used at `last_use` is still valid at `now` (times
/// in nanoseconds).
#[inline]
fn valid(now: u64, last_use: u64, expire: u64) -> bool {
    now.saturating_sub(last_use) < expire
}

/// The destination key of a pick, or none (lblc and lblcr need one).
#[inline]
fn dest_key<T: Trace>(name: &str, ctx: &Ctx<'_>, t: &mut T) -> Option<IpAddr> {
    let key = ctx.dest().map(|d| d.ip());
    if key.is_none() {
        why!(
            t,
            "rule: {name} keys on the destination IP -> none: no destination"
        );
    }
    key
}

/// Make room for a new key without growing: when the table is full, drop
/// the entries that are expired anyway (unobservable: they count as absent).
fn make_room<V>(table: &mut Locked<'_, V>, last_use: impl Fn(&V) -> u64, now: u64, expire: u64) {
    if table.is_full() {
        table.retain(|v| valid(now, last_use(v), expire));
    }
}

/// LVS's local overload rule, with an eligible `m`: `d` has more active
/// connections than its weight while some eligible backend has
/// `2 * active < weight`.
fn overloaded<T: Trace>(d: &Member, snap: &Snapshot, ctx: &Ctx<'_>, t: &mut T) -> bool {
    if d.active() <= d.weight() {
        return false;
    }
    if !crate::trace::is_on(t) {
        if let Some(any) = LeastIndex::any_under_half(snap, ctx) {
            return any;
        }
    }
    let under_half = snap
        .members()
        .iter()
        .find(|m| ctx.usable(m) && 2 * u64::from(m.active()) < u64::from(m.weight()));
    match under_half {
        Some(m) => {
            why!(
                t,
                "  {} is overloaded: active > weight and {} has 2*active < weight",
                d.name(),
                m.name()
            );
            true
        }
        None => {
            why!(
                t,
                "  {} has active > weight, but no eligible backend is under half load",
                d.name()
            );
            false
        }
    }
}

// === impl LocalityLeastConn ===

/// One lblc entry: the backend that served a destination, and when.
#[derive(Debug, Clone, Copy)]
struct Cached {
    backend: Placed,
    /// In nanoseconds.
    last_use: u64,
}

/// `lblc`: locality-based least connection, as LVS `ip_vs_lblc.c`.
///
/// A table maps each destination IP to a backend. If the entry is valid
/// (`now - last_use < expire`) and its backend is eligible and not
/// *overloaded*, that backend is used; otherwise wlc picks over the whole
/// pool and the entry is replaced. Every lookup of a valid entry refreshes
/// its last use. *Overloaded*: `active > weight` while some eligible backend
/// has `2 * active < weight`. A pick without a destination gives none.
#[derive(Debug)]
pub struct LocalityLeastConn {
    expire: Duration,
    table: IpTable<Cached>,
}

impl Default for LocalityLeastConn {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalityLeastConn {
    /// An lblc scheduler whose entries expire after [`DEFAULT_EXPIRE`].
    pub fn new() -> Self {
        Self::with_expire(DEFAULT_EXPIRE)
    }

    /// An lblc scheduler whose entries expire after `expire` unused.
    pub fn with_expire(expire: Duration) -> Self {
        LocalityLeastConn {
            expire,
            table: IpTable::with_capacity(TABLE_CAPACITY),
        }
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let key = dest_key("lblc", ctx, t)?;
        let (now, expire) = (nanos(ctx.now()), nanos(self.expire));
        let mut table = self.table.lock(key);
        if let Some(en) = table.get_mut() {
            if valid(now, en.last_use, expire) {
                en.last_use = now;
                match en.backend.find(snap) {
                    Some(d) if ctx.usable(d) => {
                        why!(t, "lblc: {key} -> {}", Load(d));
                        if !overloaded(d, snap, ctx, t) {
                            why!(t, "rule: lblc: the cached backend is eligible and not overloaded -> {}", d.name());
                            return Some(Pick::new(d));
                        }
                    }
                    Some(d) => why!(t, "lblc: {key} -> {}: not eligible", Load(d)),
                    None => why!(t, "lblc: {key} -> {}: no longer in the pool", en.backend.id),
                }
            } else {
                why!(t, "lblc: the entry for {key} has expired");
            }
        } else {
            why!(t, "lblc: no entry for {key}");
        }
        why!(t, "lblc: reselect by wlc over the pool");
        let d = wlc(snap, ctx, t)?;
        let entry = Cached {
            backend: Placed::of(snap, d),
            last_use: now,
        };
        if let Some(en) = table.get_mut() {
            *en = entry;
        } else {
            make_room(&mut table, |e| e.last_use, now, expire);
            table.insert(entry);
        }
        Some(Pick::new(d))
    }
}

impl Scheduler for LocalityLeastConn {
    fn name(&self) -> &'static str {
        "lblc"
    }

    fn prepare(&self, next: &Snapshot, _: Option<&Snapshot>, _: Change) -> Option<Tables> {
        prepare_index(Rule::Wlc, next)
    }

    pick_via_select!();
}

// === impl Replicas ===

/// The members of a set after its first, and when the set last changed:
/// on the heap, since most sets have one member.
#[derive(Debug, Clone, Default)]
struct Spill {
    /// In nanoseconds; kept only while the set has more than one member,
    /// the only time it is read (a set grows only by a change, which sets
    /// it).
    last_change: u64,
    rest: Vec<Placed>,
}

/// A small set of backends in order of insertion; the newest is last.
///
/// The first member lives inline, so creating an entry never allocates,
/// and the rest behind one pointer, so that a table bucket is 32 bytes: a
/// hit at 100,000 destinations is a walk over memory far larger than the
/// caches, and its cost is mostly the one bucket it reads.
#[derive(Debug, Clone)]
struct IdSet {
    /// [`Placed::none`] when the set is empty.
    first: Placed,
    spill: Option<Box<Spill>>,
}

impl IdSet {
    fn of(b: Placed) -> Self {
        IdSet {
            first: b,
            spill: None,
        }
    }

    fn rest(&self) -> &[Placed] {
        self.spill.as_deref().map_or(&[], |s| s.rest.as_slice())
    }

    fn len(&self) -> usize {
        if self.first == Placed::none() {
            0
        } else {
            1 + self.rest().len()
        }
    }

    fn at(&self, i: usize) -> Placed {
        match i {
            0 => self.first,
            _ => self.rest()[i - 1],
        }
    }

    fn set(&mut self, i: usize, b: Placed) {
        match (i, self.spill.as_deref_mut()) {
            (0, _) => self.first = b,
            (_, Some(s)) => s.rest[i - 1] = b,
            (_, None) => {}
        }
    }

    /// The members, newest first.
    fn newest_first(&self) -> impl Iterator<Item = (usize, Placed)> + '_ {
        (0..self.len()).rev().map(|i| (i, self.at(i)))
    }

    fn contains(&self, id: BackendId) -> bool {
        (0..self.len()).any(|i| self.at(i).id == id)
    }

    /// Add `b` as the newest member.
    fn push(&mut self, b: Placed) {
        if self.len() == 0 {
            self.first = b;
        } else {
            self.spill.get_or_insert_with(Box::default).rest.push(b);
        }
    }

    /// Keep the members for which `keep` holds, in order (`keep` may
    /// update a member's position).
    fn retain(&mut self, mut keep: impl FnMut(&mut Placed) -> bool) {
        let mut kept = 0;
        for i in 0..self.len() {
            let mut b = self.at(i);
            if keep(&mut b) {
                self.set(kept, b);
                kept += 1;
            }
        }
        if kept == 0 {
            self.first = Placed::none();
        }
        if let Some(s) = self.spill.as_deref_mut() {
            s.rest.truncate(kept.saturating_sub(1));
        }
    }

    /// Make this the set `{b}`, reusing the storage.
    fn reset(&mut self, b: Placed) {
        self.first = b;
        if let Some(s) = self.spill.as_deref_mut() {
            s.rest.clear();
        }
    }

    /// When the set last changed, if it has more than one member.
    fn last_change(&self) -> Option<u64> {
        self.spill
            .as_deref()
            .filter(|s| !s.rest.is_empty())
            .map(|s| s.last_change)
    }

    /// Record a change of the set at `now` (kept while it has more than
    /// one member).
    fn changed(&mut self, now: u64) {
        if let Some(s) = self.spill.as_deref_mut() {
            s.last_change = now;
        }
    }
}

/// One lblcr entry: the set serving a destination (and when it last
/// changed), and when it was last used.
#[derive(Debug)]
struct Replicas {
    set: IdSet,
    /// In nanoseconds.
    last_use: u64,
}

/// The most loaded member of `set` with weight > 0 by the strict rule
/// `moh * w(d) < doh * w(most)`, newest first; health is not considered.
/// Returns its position in the set.
fn set_max<T: Trace>(set: &IdSet, snap: &Snapshot, t: &mut T) -> Option<usize> {
    let mut most: Option<(usize, &Member, u64, u64)> = None;
    for (i, mut b) in set.newest_first() {
        let Some(m) = b.find(snap) else { continue };
        let (doh, dw) = (lvs_overhead(m), u64::from(m.weight()));
        if dw == 0 {
            continue;
        }
        match most {
            Some((_, _, moh, mw))
                if u128::from(moh) * u128::from(dw) >= u128::from(doh) * u128::from(mw) => {}
            _ => most = Some((i, m, doh, dw)),
        }
    }
    if let Some((_, m, moh, _)) = most {
        why!(
            t,
            "  shrink: the most loaded member is {} (overhead {moh})",
            Load(m)
        );
    }
    most.map(|(i, ..)| i)
}

// === impl LocalityReplicated ===

/// `lblcr`: locality-based least connection with replication, as LVS
/// `ip_vs_lblcr.c`.
///
/// Each destination IP maps to a set of backends (newest member first),
/// with the time the set last changed and its last use. With a valid entry:
/// `min` is the set's least-loaded eligible member (wlc rule, newest first);
/// if the set has more than one member and has not changed for longer than
/// `expire`, its most-loaded member with weight > 0 is removed (health is
/// not considered) and the set is marked changed; `min`, if any and not
/// overloaded, is used; otherwise wlc picks over the whole pool and its
/// choice joins the set (marking it changed) if not already a member.
/// Without a valid entry: wlc over the pool, and a new set of that backend.
///
/// A backend removed from the pool leaves every set at the set's next
/// lookup; that is not a change of the set (the kernel keeps a deleted
/// real server referenced; ours are gone for good).
#[derive(Debug)]
pub struct LocalityReplicated {
    expire: Duration,
    table: IpTable<Replicas>,
}

impl Default for LocalityReplicated {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalityReplicated {
    /// An lblcr scheduler with [`DEFAULT_EXPIRE`] for entries and sets.
    pub fn new() -> Self {
        Self::with_expire(DEFAULT_EXPIRE)
    }

    /// An lblcr scheduler whose entries expire after `expire` unused, and
    /// whose sets shrink after `expire` unchanged.
    pub fn with_expire(expire: Duration) -> Self {
        LocalityReplicated {
            expire,
            table: IpTable::with_capacity(TABLE_CAPACITY),
        }
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let key = dest_key("lblcr", ctx, t)?;
        let (now, expire) = (nanos(ctx.now()), nanos(self.expire));
        let mut table = self.table.lock(key);
        match table.get_mut() {
            Some(en) if valid(now, en.last_use, expire) => self.hit(key, en, snap, ctx, t),
            found => {
                match found {
                    Some(_) => why!(t, "lblcr: the entry for {key} has expired"),
                    None => why!(t, "lblcr: no entry for {key}"),
                }
                let d = wlc(snap, ctx, t)?;
                let placed = Placed::of(snap, d);
                if let Some(en) = table.get_mut() {
                    en.set.reset(placed);
                    en.last_use = now;
                } else {
                    make_room(&mut table, |e| e.last_use, now, expire);
                    let set = IdSet::of(placed);
                    let en = Replicas { set, last_use: now };
                    table.insert(en);
                }
                why!(t, "lblcr: new set {{{}}} for {key}", d.name());
                Some(Pick::new(d))
            }
        }
    }

    /// A pick with the valid entry `en` of `key`.
    fn hit<'s, T: Trace>(
        &self,
        key: IpAddr,
        en: &mut Replicas,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let now = nanos(ctx.now());
        en.last_use = now;
        en.set.retain(|b| b.find(snap).is_some());
        why!(t, "lblcr: {key} -> a set of {}, newest first", en.set.len());
        let min = least(
            en.set.newest_first().filter_map(|(_, mut b)| b.find(snap)),
            ctx,
            wlc_cost,
            t,
        );
        decided(t, "lblcr: set min by wlc, newest first", min);
        let unchanged = en.set.last_change().map(|at| now.saturating_sub(at));
        if unchanged.is_some_and(|u| u > nanos(self.expire)) {
            why!(
                t,
                "lblcr: the set has not changed for longer than {:?}: shrink",
                self.expire
            );
            if let Some(i) = set_max(&en.set, snap, t) {
                let gone = en.set.at(i).id;
                en.set.retain(|b| b.id != gone);
                en.set.changed(now);
            }
        }
        if let Some(m) = min {
            if !overloaded(m, snap, ctx, t) {
                why!(
                    t,
                    "rule: lblcr: the set's least loaded member is not overloaded -> {}",
                    m.name()
                );
                return Some(Pick::new(m));
            }
        }
        why!(t, "lblcr: reselect by wlc over the pool");
        let d = wlc(snap, ctx, t)?;
        if !en.set.contains(d.id()) {
            why!(t, "lblcr: {} joins the set", d.name());
            en.set.push(Placed::of(snap, d));
            en.set.changed(now);
        }
        Some(Pick::new(d))
    }
}

impl Scheduler for LocalityReplicated {
    fn name(&self) -> &'static str {
        "lblcr"
    }

    fn prepare(&self, next: &Snapshot, _: Option<&Snapshot>, _: Change) -> Option<Tables> {
        prepare_index(Rule::Wlc, next)
    }

    pick_via_select!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &IdSet) -> Vec<u32> {
        s.newest_first().map(|(_, b)| b.id.get()).collect()
    }

    fn at(n: u32) -> Placed {
        Placed::unplaced(BackendId::from_raw(n))
    }

    #[test]
    fn buckets_are_as_small_as_documented() {
        // (IPv4 key, entry): what a hit at 100,000 destinations reads.
        assert_eq!(std::mem::size_of::<(u32, Cached)>(), 24);
        assert_eq!(std::mem::size_of::<(u32, Replicas)>(), 32);
    }

    #[test]
    fn id_set_keeps_order_across_the_inline_boundary() {
        let mut s = IdSet::of(at(0));
        for n in 1..7 {
            s.push(at(n));
        }
        assert_eq!(ids(&s), [6, 5, 4, 3, 2, 1, 0]);
        assert!(s.contains(BackendId::from_raw(5)));
        s.retain(|b| b.id.get() % 3 != 0);
        assert_eq!(ids(&s), [5, 4, 2, 1]);
        assert!(!s.contains(BackendId::from_raw(6)));
        s.push(at(9));
        assert_eq!(ids(&s), [9, 5, 4, 2, 1]);
        s.reset(at(3));
        assert_eq!(ids(&s), [3]);
    }

    #[test]
    fn id_set_empties_and_refills_and_keeps_its_change_time_while_plural() {
        let mut s = IdSet::of(at(1));
        assert_eq!(s.last_change(), None);
        s.push(at(2));
        s.changed(50);
        assert_eq!(s.last_change(), Some(50));
        s.push(at(3));
        // A member leaving the pool is not a change: the time stays.
        s.retain(|b| b.id.get() != 1);
        assert_eq!((ids(&s), s.last_change()), (vec![3, 2], Some(50)));
        s.retain(|_| false);
        assert_eq!((s.len(), s.last_change()), (0, None));
        assert!(!s.contains(BackendId::from_raw(u32::MAX)));
        s.push(at(4));
        assert_eq!(ids(&s), [4]);
        s.push(at(5));
        s.changed(70);
        assert_eq!((ids(&s), s.last_change()), (vec![5, 4], Some(70)));
    }
}
