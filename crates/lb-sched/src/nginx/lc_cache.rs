//! The smooth-WRR `current`s of one tie level of nginx `least_conn` (the
//! tie pass of `ngx_http_upstream_get_least_conn_peer()` in
//! `ngx_http_upstream_least_conn_module.c`), kept lazily so that a pick among `d` tied backends costs O(g + log d) (`g`
//! distinct effective weights among them) instead of O(d).
//!
//! A *level* is the set of usable backends of one list with one ratio
//! `conns / weight`. Every smooth step over the level adds each member's
//! effective weight `ew` to its `current`, so after `k` steps a member that
//! stayed in the level has `current = stored + ew * k`: the cache keeps
//! `stored` per member and the step count `k`. Members of equal `ew` keep
//! their order between steps, so one max-heap per distinct `ew` (largest
//! `stored`, then first in pool order) gives each group's leader, and the
//! step's winner is the best leader (largest `current`, first in pool order
//! on ties), exactly the scan's `best`. The winner's `current -= total` is
//! `stored -= total`.
//!
//! The level's membership follows the counters: the index's load watch
//! tells the cache when a backend enters or leaves the cached ratio
//! ([`LcCache::join`], [`LcCache::leave`]); a leaving member's `current` is
//! written back to the nginx state. Anything else that reads or moves the
//! `current`s (the scan, another snapshot's index) first writes them all
//! back ([`LcCache::flush`]). The cache is shared by the snapshots that
//! share the `current`s; `owner` names the index whose watch keeps it.

/// No heap slot: the position is not in the level.
const NONE: u32 = u32::MAX;

/// At most this many distinct effective weights in a cached level; a level
/// with more is not cached (the caller walks it).
pub(crate) const GROUPS: usize = 8;

/// One distinct effective weight's members, as a max-heap of positions.
#[derive(Debug)]
struct Group {
    ew: u32,
    heap: Vec<u32>,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct LcCache {
    /// The index (its shared state's address) that built and keeps the
    /// cache; 0 for none (the cache is empty).
    pub(crate) owner: usize,
    /// Smooth steps taken over the level since it was built.
    k: i64,
    /// Sum of the members' `ew`.
    total: i64,
    /// Per position: `current - ew * k` while a member.
    stored: Vec<i64>,
    /// Per position: its group, while a member.
    group: Vec<u8>,
    /// Per position: its slot in its group's heap, or [`NONE`].
    slot: Vec<u32>,
    groups: Vec<Group>,
}

impl LcCache {
    /// An empty cache for a pool of `n` positions (all allocation is here).
    pub(crate) fn new(n: usize) -> LcCache {
        LcCache {
            owner: 0,
            k: 0,
            total: 0,
            stored: vec![0; n],
            group: vec![0; n],
            slot: vec![NONE; n],
            groups: (0..GROUPS)
                .map(|_| Group {
                    ew: 0,
                    heap: Vec::with_capacity(n),
                })
                .collect(),
        }
    }

    /// Write every member's `current` back to `current` and empty the cache.
    pub(crate) fn flush(&mut self, current: &mut [i64]) {
        for g in &mut self.groups {
            for &p in &g.heap {
                let p = p as usize;
                if let Some(c) = current.get_mut(p) {
                    *c = self.stored[p] + i64::from(g.ew) * self.k;
                }
                self.slot[p] = NONE;
            }
            g.heap.clear();
        }
        self.owner = 0;
        self.k = 0;
        self.total = 0;
    }

    /// Add position `p` (effective weight `ew`, its `current` now in
    /// `current[p]`). False when `p` is out of range or the level would have
    /// too many distinct weights: the caller then flushes.
    pub(crate) fn join(&mut self, p: usize, ew: u32, current: &[i64]) -> bool {
        if p >= self.slot.len() || p >= current.len() {
            return false;
        }
        if self.slot[p] != NONE {
            return true;
        }
        let g = match self
            .groups
            .iter()
            .position(|g| g.ew == ew && !g.heap.is_empty())
        {
            Some(g) => g,
            None => match self.groups.iter().position(|g| g.heap.is_empty()) {
                Some(g) => {
                    self.groups[g].ew = ew;
                    g
                }
                None => return false,
            },
        };
        self.stored[p] = current[p] - i64::from(ew) * self.k;
        self.group[p] = g as u8;
        let at = self.groups[g].heap.len();
        self.groups[g].heap.push(p as u32);
        self.slot[p] = at as u32;
        self.up(g, at);
        self.total += i64::from(ew);
        true
    }

    /// Remove position `p`, writing its `current` back.
    pub(crate) fn leave(&mut self, p: usize, current: &mut [i64]) {
        let Some(&at) = self.slot.get(p) else {
            return;
        };
        if at == NONE {
            return;
        }
        let g = usize::from(self.group[p]);
        let ew = self.groups[g].ew;
        if let Some(c) = current.get_mut(p) {
            *c = self.stored[p] + i64::from(ew) * self.k;
        }
        self.total -= i64::from(ew);
        self.slot[p] = NONE;
        let heap = &mut self.groups[g].heap;
        let last = heap.len() - 1;
        let at = at as usize;
        heap.swap(at, last);
        heap.pop();
        if at < last {
            self.slot[self.groups[g].heap[at] as usize] = at as u32;
            self.down(g, at);
            self.up(g, at);
        }
    }

    /// How many positions the level holds.
    pub(crate) fn len(&self) -> usize {
        self.groups.iter().map(|g| g.heap.len()).sum()
    }

    /// One smooth step over the level: the winner's position.
    pub(crate) fn step(&mut self) -> Option<usize> {
        let k = self.k + 1;
        let mut best: Option<(i64, u32, usize)> = None;
        for (gi, g) in self.groups.iter().enumerate() {
            let Some(&p) = g.heap.first() else {
                continue;
            };
            let c = self.stored[p as usize] + i64::from(g.ew) * k;
            if best.is_none_or(|(bc, bp, _)| c > bc || (c == bc && p < bp)) {
                best = Some((c, p, gi));
            }
        }
        let (_, p, g) = best?;
        self.k = k;
        self.stored[p as usize] -= self.total;
        self.down(g, 0);
        Some(p as usize)
    }

    /// Whether heap entry `a` goes before `b`.
    #[inline]
    fn before(&self, a: u32, b: u32) -> bool {
        let (sa, sb) = (self.stored[a as usize], self.stored[b as usize]);
        sa > sb || (sa == sb && a < b)
    }

    fn up(&mut self, g: usize, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            let (x, y) = (self.groups[g].heap[at], self.groups[g].heap[parent]);
            if !self.before(x, y) {
                break;
            }
            self.groups[g].heap.swap(at, parent);
            self.slot[x as usize] = parent as u32;
            self.slot[y as usize] = at as u32;
            at = parent;
        }
    }

    fn down(&mut self, g: usize, mut at: usize) {
        let len = self.groups[g].heap.len();
        loop {
            let (l, r) = (2 * at + 1, 2 * at + 2);
            let mut top = at;
            if l < len && self.before(self.groups[g].heap[l], self.groups[g].heap[top]) {
                top = l;
            }
            if r < len && self.before(self.groups[g].heap[r], self.groups[g].heap[top]) {
                top = r;
            }
            if top == at {
                break;
            }
            let (x, y) = (self.groups[g].heap[at], self.groups[g].heap[top]);
            self.groups[g].heap.swap(at, top);
            self.slot[x as usize] = top as u32;
            self.slot[y as usize] = at as u32;
            at = top;
        }
    }
}
