//! nginx `least_conn` without scanning the pool: a tournament tree per list
//! (primaries, backups) for the least `conns / weight`, and a smooth-WRR
//! pass over only the tied backends. O(1) per pick without a tie; with `d`
//! tied backends, O(g + log d) while their level is the cached one
//! (`lc_cache.rs`: lazy `current`s, `g` distinct weights), else
//! O(d log(n / d)) to cache it; O(log n) per connection change, plus
//! O(log d) when it moves a backend into or out of the cached level.
//!
//! The scan of `least_conn.rs` takes the first usable backend of least
//! ratio (cross-multiplied, strictly), and, if another usable backend has
//! that ratio, a smooth step over exactly the backends of that ratio. The
//! ratio order is a total preorder (configured weights are > 0 wherever
//! the index is built), so each node of a tree holds the first least leaf
//! below it and how many leaves below it share its ratio: the root gives
//! the scan's `best` and `many`. The tied backends are the leaves under the
//! nodes whose least ratio equals the root's, found left to right.
//!
//! Each leaf is `(conns, configured weight)` of a usable backend (up,
//! weight > 0, under its `max_conns`), or empty. The trees are the pool's
//! [`LoadWatch`] (as `least.rs`): every counter change updates its leaf
//! under the trees' lock, and publishes the roots (position and tie count)
//! in atomics. A pick without a tie reads one atomic; a pick with one takes
//! the trees' lock (no change lands while the tied set is read), then the
//! cache's and the `current`s' locks (in that order everywhere: the watch
//! takes the last two only when a change crosses the cached level; the
//! scan takes the last two and writes the cache back first).
//!
//! Used when it answers exactly: the pick tried nothing, is not explained,
//! the trees still follow the counters (no newer snapshot replaced them),
//! and no usable backend has a configured weight of 0 (possible only
//! through an effective weight; the ratio is then not an order). Otherwise
//! the caller scans.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use lb_core::{Counters, LoadWatch, Member, Snapshot, Tables};

use super::lc_cache::LcCache;
use super::Upstream;

/// Ids of indexes, for [`LcCache::owner`] (0 is none).
static IDS: AtomicUsize = AtomicUsize::new(1);

/// No leaf: an empty subtree.
const NONE: u32 = u32::MAX;

/// The primary list and the backup list.
const LISTS: usize = 2;

/// The winner of a subtree: its first least leaf (`k`, an index in the
/// list), that leaf's `conns`, configured weight `w` and effective weight
/// `ew` (what the smooth step adds), and how many leaves below share its
/// ratio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Node {
    k: u32,
    ties: u32,
    c: u64,
    w: u32,
    ew: u32,
}

impl Node {
    const EMPTY: Node = Node {
        k: NONE,
        ties: 0,
        c: 0,
        w: 0,
        ew: 0,
    };

    /// `conns / w` of `self` against `other`'s (conns below 2^33, weights
    /// below 2^16: the products fit).
    #[inline]
    fn cmp_ratio(&self, other: &Node) -> std::cmp::Ordering {
        (self.c * u64::from(other.w)).cmp(&(other.c * u64::from(self.w)))
    }

    /// The winner of adjacent subtrees, `l` before `r`: `r` only when
    /// strictly less loaded; on equal ratios `l`, counting both sides' ties.
    #[inline]
    fn winner(l: Node, r: Node) -> Node {
        if r.k == NONE {
            return l;
        }
        if l.k == NONE {
            return r;
        }
        match r.cmp_ratio(&l) {
            std::cmp::Ordering::Less => r,
            std::cmp::Ordering::Equal => Node {
                ties: l.ties + r.ties,
                ..l
            },
            std::cmp::Ordering::Greater => l,
        }
    }

    /// The root as published: position in the list and tie count.
    #[inline]
    fn packed(&self) -> u64 {
        (u64::from(self.k) << 32) | u64::from(self.ties)
    }
}

/// One list's tree: `nodes[1]` is the root, leaf `k` is `nodes[size + k]`.
#[derive(Debug)]
struct Tree {
    size: usize,
    nodes: Vec<Node>,
}

impl Tree {
    fn new(len: usize) -> Tree {
        let size = len.next_power_of_two();
        Tree {
            size,
            nodes: vec![Node::EMPTY; 2 * size],
        }
    }

    /// Set leaf `k`; whether the root may have changed.
    #[inline]
    fn set(&mut self, k: usize, leaf: Node) -> bool {
        let mut i = self.size + k;
        if self.nodes[i] == leaf {
            return false;
        }
        self.nodes[i] = leaf;
        while i > 1 {
            i /= 2;
            let won = Node::winner(self.nodes[2 * i], self.nodes[2 * i + 1]);
            if self.nodes[i] == won {
                return false;
            }
            self.nodes[i] = won;
        }
        true
    }

    /// Call `f` with every leaf whose ratio equals the root's, left to
    /// right (no allocation: the walk keeps at most two nodes per level).
    #[inline]
    fn for_each_tied(&self, mut f: impl FnMut(u32, u32)) {
        let root = self.nodes[1];
        if root.k == NONE {
            return;
        }
        let mut stack = [0u32; 2 * 33];
        let mut top = 0;
        stack[top] = 1;
        top += 1;
        while top > 0 {
            top -= 1;
            let i = stack[top] as usize;
            let n = &self.nodes[i];
            if n.k == NONE || n.cmp_ratio(&root) != std::cmp::Ordering::Equal {
                continue;
            }
            if i >= self.size {
                f(n.k, n.ew);
            } else if n.ties == 1 {
                // One tied leaf below: it is this subtree's winner.
                f(n.k, n.ew);
            } else {
                stack[top] = (2 * i + 1) as u32;
                stack[top + 1] = (2 * i) as u32;
                top += 2;
            }
        }
    }
}

/// The ratio level the shared [`LcCache`] holds, while this index keeps it:
/// the list and one member's `(conns, configured weight)`.
#[derive(Clone, Copy, Debug)]
struct Level {
    list: usize,
    c: u64,
    w: u32,
}

impl Level {
    /// Whether `n` (a leaf or a root) has this level's ratio.
    #[inline]
    fn holds(&self, n: &Node) -> bool {
        n.k != NONE && n.c * u64::from(self.w) == self.c * u64::from(n.w)
    }
}

/// The trees, and the level cached by this index (both under one lock).
#[derive(Debug)]
struct Trees {
    t: [Tree; LISTS],
    level: Option<Level>,
}

/// What picks and the watch share.
#[derive(Debug)]
struct Shared {
    /// This index's id, as [`LcCache::owner`].
    id: usize,
    /// The nginx state (`current`s) this index's picks move.
    up: Tables,
    /// The lazy `current`s of one tie level.
    cache: Arc<Mutex<LcCache>>,
    /// Per list: the root's [`Node::packed`] form.
    roots: [AtomicU64; LISTS],
    /// Per list: the pool position of each of its members, in pool order.
    positions: [Vec<u32>; LISTS],
    live: AtomicBool,
    trees: Mutex<Trees>,
}

/// A snapshot's `least_conn` index (see the module docs).
#[derive(Debug)]
pub(crate) struct LcIndex(Arc<Shared>);

/// What the index says about a list.
pub(crate) enum Least<'a> {
    /// No usable backend in the list.
    Empty,
    /// One usable backend of least ratio: at this position.
    One(usize),
    /// Several: the trees, locked; [`LcIndex::tied`] walks them.
    Tied(TiedSet<'a>),
}

/// The locked trees and the list whose least ratio is tied.
pub(crate) struct TiedSet<'a> {
    trees: parking_lot::MutexGuard<'a, Trees>,
    list: usize,
    shared: &'a Shared,
}

impl TiedSet<'_> {
    /// Call `f` with the pool position and the (effective) weight of every
    /// tied backend, in pool order.
    #[inline]
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, u32)) {
        let positions = &self.shared.positions[self.list];
        self.trees.t[self.list].for_each_tied(|k, ew| f(positions[k as usize] as usize, ew));
    }

    /// One smooth step over the tied backends (the nginx `current`s in
    /// `current`, locked with `cache`): the winner's pool position. O(g +
    /// log d) while the tied level is the cached one; otherwise the level
    /// is cached first (O(d log(n / d))), or walked when it cannot be.
    pub(crate) fn step(&mut self, cache: &mut LcCache, current: &mut [i64]) -> Option<usize> {
        let root = self.trees.t[self.list].nodes[1];
        let id = self.shared.id;
        let hit = cache.owner == id
            && self
                .trees
                .level
                .is_some_and(|l| l.list == self.list && l.holds(&root))
            && cache.len() == root.ties as usize;
        if !hit {
            cache.flush(current);
            self.trees.level = None;
            let mut ok = true;
            self.for_each(|p, ew| ok = ok && cache.join(p, ew, current));
            if !ok {
                cache.flush(current);
                return self.walk(current);
            }
            cache.owner = id;
            self.trees.level = Some(Level {
                list: self.list,
                c: root.c,
                w: root.w,
            });
        }
        cache.step()
    }

    /// The smooth step of the scan, over the tied backends only.
    fn walk(&self, current: &mut [i64]) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut total = 0i64;
        self.for_each(|i, w| {
            let w = i64::from(w);
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        });
        let b = best?;
        current[b] -= total;
        Some(b)
    }
}

impl LcIndex {
    /// The index for `next`, installed as the pool's load watch, if it can
    /// answer for `next` at all.
    pub(crate) fn prepare(
        next: &Snapshot,
        up: Tables,
        cache: Arc<Mutex<LcCache>>,
    ) -> Option<LcIndex> {
        let members = next.members();
        let usable = |m: &Member| m.is_up() && m.weight() > 0;
        if members.is_empty()
            || members
                .iter()
                .any(|m| usable(m) && m.configured_weight() == 0)
        {
            return None;
        }
        let mut positions: [Vec<u32>; LISTS] = Default::default();
        let mut slot = Vec::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            let list = usize::from(m.is_backup());
            slot.push((list as u8, positions[list].len() as u32));
            positions[list].push(i as u32);
        }
        let trees = [Tree::new(positions[0].len()), Tree::new(positions[1].len())];
        let shared = Arc::new(Shared {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            up,
            cache,
            roots: [
                AtomicU64::new(Node::EMPTY.packed()),
                AtomicU64::new(Node::EMPTY.packed()),
            ],
            positions,
            live: AtomicBool::new(true),
            trees: Mutex::new(Trees {
                t: trees,
                level: None,
            }),
        });
        let watch = Watch {
            shared: shared.clone(),
            slot,
            statics: members
                .iter()
                .map(|m| Static {
                    usable: usable(m),
                    w: m.configured_weight(),
                    ew: m.weight(),
                    limit: m.max_conns(),
                })
                .collect(),
        };
        next.watch_loads(Box::new(watch)).then_some(LcIndex(shared))
    }

    /// Whether the index still follows the counters.
    #[inline]
    pub(crate) fn live(&self) -> bool {
        self.0.live.load(Ordering::Acquire)
    }

    /// The least-ratio answer for the primary (`backup == false`) or the
    /// backup list.
    #[inline]
    pub(crate) fn least(&self, backup: bool) -> Least<'_> {
        let list = usize::from(backup);
        let root = self.0.roots[list].load(Ordering::Acquire);
        let (k, ties) = ((root >> 32) as u32, root as u32);
        if k == NONE {
            return Least::Empty;
        }
        if ties == 1 {
            return Least::One(self.0.positions[list][k as usize] as usize);
        }
        // A tie: read it again under the lock, where it cannot move.
        let trees = self.0.trees.lock();
        let root = trees.t[list].nodes[1];
        match root.k {
            NONE => Least::Empty,
            k if root.ties == 1 => Least::One(self.0.positions[list][k as usize] as usize),
            _ => Least::Tied(TiedSet {
                trees,
                list,
                shared: &self.0,
            }),
        }
    }
}

/// What the watch knows of each position, fixed for the snapshot.
#[derive(Debug)]
struct Static {
    /// Up and weight > 0.
    usable: bool,
    /// The configured weight (the ratio's denominator).
    w: u32,
    /// The effective weight (the smooth step's).
    ew: u32,
    limit: u32,
}

/// The trees as the pool's load watch.
struct Watch {
    shared: Arc<Shared>,
    /// Per pool position: its list and its index there.
    slot: Vec<(u8, u32)>,
    statics: Vec<Static>,
}

impl Watch {
    #[inline]
    fn leaf(&self, pos: usize, (active, inactive): (u32, u32)) -> Node {
        let s = &self.statics[pos];
        let c = u64::from(active) + u64::from(inactive);
        if !s.usable || (s.limit > 0 && c >= u64::from(s.limit)) {
            return Node::EMPTY;
        }
        Node {
            k: self.slot[pos].1,
            ties: 1,
            c,
            w: s.w,
            ew: s.ew,
        }
    }
}

impl Watch {
    /// Position `pos` entered (`is`) or left the cached level: tell the
    /// cache. False when this index no longer keeps a level.
    fn moved(&self, pos: usize, is: bool) -> bool {
        let Some(up) = self.shared.up.downcast_ref::<Upstream>() else {
            return false;
        };
        let mut cache = self.shared.cache.lock();
        if cache.owner != self.shared.id {
            return false;
        }
        let mut current = up.currents.0.lock();
        if !is {
            cache.leave(pos, &mut current);
            return true;
        }
        if cache.join(pos, self.statics[pos].ew, &current) {
            return true;
        }
        cache.flush(&mut current);
        false
    }
}

impl LoadWatch for Watch {
    fn start(&mut self, members: &[Member]) {
        let mut trees = self.shared.trees.lock();
        // Leaves are set without the cache following them: forget its level.
        trees.level = None;
        for (pos, m) in members.iter().enumerate().take(self.slot.len()) {
            let (list, k) = self.slot[pos];
            let leaf = self.leaf(pos, m.counters().load());
            let t = &mut trees.t[usize::from(list)];
            t.nodes[t.size + k as usize] = leaf;
        }
        for (list, t) in trees.t.iter_mut().enumerate() {
            for i in (1..t.size).rev() {
                t.nodes[i] = Node::winner(t.nodes[2 * i], t.nodes[2 * i + 1]);
            }
            self.shared.roots[list].store(t.nodes[1].packed(), Ordering::Release);
        }
    }

    fn changed(&mut self, pos: usize, counters: &Counters) {
        let Some(&(list, k)) = self.slot.get(pos) else {
            return;
        };
        let leaf = self.leaf(pos, counters.load());
        let list = usize::from(list);
        let mut trees = self.shared.trees.lock();
        if let Some(l) = trees.level.filter(|l| l.list == list) {
            let t = &trees.t[list];
            let (was, is) = (l.holds(&t.nodes[t.size + k as usize]), l.holds(&leaf));
            if was != is && !self.moved(pos, is) {
                trees.level = None;
            }
        }
        if trees.t[list].set(k as usize, leaf) {
            self.shared.roots[list].store(trees.t[list].nodes[1].packed(), Ordering::Release);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.shared.live.store(false, Ordering::Release);
    }
}
