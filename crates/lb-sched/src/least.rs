//! The least-loaded backend of a snapshot in O(1) per pick: a tournament
//! tree over pool positions, kept current by the backends' counters.
//!
//! lc, wlc, sed and nq (and lblc, lblcr when they reselect by wlc) choose
//! the first eligible backend in pool order whose load over weight is
//! least, comparing `oh(b) * w(d) > oh(d) * w(b)` strictly (`lc.rs`). That
//! rule is a total preorder on (overhead, weight) pairs, so the first
//! minimum of a sequence is the first minimum of its halves' first minima,
//! the left half winning ties. The tree holds, at each node, the winner of
//! the positions below it; its root is the scheduler's choice.
//!
//! The tree is built in `prepare` for each snapshot (eligibility by health
//! and weight is fixed per snapshot) and installed as the pool's
//! [`LoadWatch`]: every open, close, idle and activate of a backend's
//! connection updates that backend's leaf and the path above it, O(log n),
//! under the pool's watch lock. A pick reads the root, one atomic load.
//!
//! Exactness: the root is the linear scan's answer for the counters as the
//! last completed update left them. Changes that completed before a pick
//! began are all reflected (the root is published with release ordering
//! after the update, under the lock); a change concurrent with the pick may
//! or may not be, as in a linear scan, which reads each backend's counters
//! at a different moment anyway.
//!
//! The index answers only what it can answer exactly; the scan decides
//! otherwise:
//!
//! - when the pick has [tried](Ctx::tried) backends (per request),
//! - when any backend has a `max_conns` limit (eligibility then depends on
//!   the live counts: no index is built),
//! - when the pick is explained (the explanation lists every candidate),
//! - when the snapshot's index no longer follows the counters: another
//!   index replaced it (a newer snapshot) or the pool's preparer changed.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use lb_core::{Counters, Ctx, LoadWatch, Member, Snapshot};

/// The cost a tree minimises: which of the LVS least-connection rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    /// `lc`: least `256 * active + inactive`.
    Lc,
    /// `wlc`: least `(256 * active + inactive) / weight`.
    Wlc,
    /// `sed`: least `(active + 1) / weight`.
    Sed,
    /// `nq`: the first backend with no active connection, else as sed.
    Nq,
}

/// No position: an empty subtree, or no eligible backend at all.
const NONE: u32 = u32::MAX;

/// One node: the winner of a subtree and its cost, `oh / w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Node {
    pos: u32,
    w: u32,
    oh: u64,
}

impl Node {
    const EMPTY: Node = Node {
        pos: NONE,
        w: 0,
        oh: 0,
    };
}

impl Rule {
    /// The leaf of the backend at `pos` with weight `w` (0: ineligible) and
    /// counts `(active, inactive)`.
    #[inline]
    fn leaf(self, pos: usize, w: u32, (active, inactive): (u32, u32)) -> Node {
        if w == 0 {
            return Node::EMPTY;
        }
        let lvs = (u64::from(active) << 8) + u64::from(inactive);
        let sed = u64::from(active) + 1;
        let (oh, w) = match self {
            Rule::Lc => (lvs, 1),
            Rule::Wlc => (lvs, w),
            Rule::Sed | Rule::Nq => (sed, w),
        };
        Node {
            pos: pos as u32,
            w,
            oh,
        }
    }

    /// The winner of two adjacent subtrees, `l` before `r` in pool order:
    /// `r` only if strictly better. Overheads are below 2^41 and weights
    /// below 2^16, so the products fit in 64 bits.
    #[inline]
    fn winner(self, l: Node, r: Node) -> Node {
        if r.pos == NONE {
            return l;
        }
        if l.pos == NONE {
            return r;
        }
        let r_better = match self {
            // nq: an idle backend (active + 1 == 1) wins at once, the first one.
            Rule::Nq if l.oh == 1 => false,
            Rule::Nq if r.oh == 1 => true,
            _ => l.oh * u64::from(r.w) > r.oh * u64::from(l.w),
        };
        if r_better {
            r
        } else {
            l
        }
    }
}

/// What a pick reads: the root's position, how many eligible backends are
/// under half load (`2 * active < weight`, for lblc's overload rule), and
/// whether the tree still follows the counters.
#[derive(Debug)]
struct Root {
    pos: AtomicU32,
    under_half: AtomicU32,
    live: AtomicBool,
}

/// A snapshot's least-load index, as its tables (see the module docs).
#[derive(Debug)]
pub(crate) struct LeastIndex {
    rule: Rule,
    /// None: not indexed (a `max_conns` limit, or an empty pool).
    root: Option<Arc<Root>>,
}

impl LeastIndex {
    /// Build the index of `rule` for `next` and make it the pool's load
    /// watch.
    pub(crate) fn prepare(rule: Rule, next: &Snapshot) -> LeastIndex {
        let members = next.members();
        if members.is_empty() || members.iter().any(|m| m.max_conns() > 0) {
            return LeastIndex { rule, root: None };
        }
        let root = Arc::new(Root {
            pos: AtomicU32::new(NONE),
            under_half: AtomicU32::new(0),
            live: AtomicBool::new(true),
        });
        let tree = Tree::new(rule, members, root.clone());
        let root = next.watch_loads(Box::new(tree)).then_some(root);
        LeastIndex { rule, root }
    }

    /// The scheduler's choice by the index of `rule` prepared for `snap`,
    /// if it can be given exactly for `ctx`: `Some(None)` when no backend is
    /// eligible, `None` when the caller must scan.
    #[inline]
    pub(crate) fn choice<'s>(
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        rule: Rule,
    ) -> Option<Option<&'s Member>> {
        let root = Self::usable(snap, ctx, rule)?;
        match root.pos.load(Ordering::Acquire) {
            NONE => Some(None),
            pos => Some(snap.members().get(pos as usize)),
        }
    }

    /// Whether some backend usable for `ctx` has `2 * active < weight`, by
    /// the index prepared for `snap` (any rule), when it can tell exactly.
    #[inline]
    pub(crate) fn any_under_half(snap: &Snapshot, ctx: &Ctx<'_>) -> Option<bool> {
        let rule = snap.tables::<LeastIndex>()?.rule;
        let root = Self::usable(snap, ctx, rule)?;
        Some(root.under_half.load(Ordering::Acquire) > 0)
    }

    /// The root of the index of `rule` for `snap`, if it answers exactly
    /// for `ctx`.
    #[inline]
    fn usable<'a>(snap: &'a Snapshot, ctx: &Ctx<'_>, rule: Rule) -> Option<&'a Root> {
        let index = snap.tables::<LeastIndex>()?;
        let root = index.root.as_deref()?;
        let exact =
            index.rule == rule && ctx.tried().is_empty() && root.live.load(Ordering::Acquire);
        exact.then_some(root)
    }
}

/// The tree: `nodes[1]` is the root, `nodes[k]`'s children are `2k` and
/// `2k + 1`, and the leaf of position `p` is `nodes[size + p]`.
struct Tree {
    rule: Rule,
    size: usize,
    nodes: Vec<Node>,
    /// Each position's weight if it is eligible (up, weight > 0), else 0.
    weights: Vec<u32>,
    /// Whether each position is eligible with `2 * active < weight`, and
    /// how many are.
    half: Vec<bool>,
    under_half: u32,
    root: Arc<Root>,
}

impl Tree {
    fn new(rule: Rule, members: &[Member], root: Arc<Root>) -> Tree {
        let size = members.len().next_power_of_two();
        let weights = members
            .iter()
            .map(|m| if m.is_up() { m.weight() } else { 0 })
            .collect();
        Tree {
            rule,
            size,
            nodes: vec![Node::EMPTY; 2 * size],
            half: vec![false; members.len()],
            weights,
            under_half: 0,
            root,
        }
    }

    /// Record whether the backend at `pos` is under half load.
    #[inline]
    fn set_half(&mut self, pos: usize, active: u32) {
        let half = 2 * u64::from(active) < u64::from(self.weights[pos]);
        if self.half[pos] != half {
            self.half[pos] = half;
            if half {
                self.under_half += 1;
            } else {
                self.under_half -= 1;
            }
            self.root
                .under_half
                .store(self.under_half, Ordering::Release);
        }
    }

    #[inline]
    fn publish(&self) {
        self.root.pos.store(self.nodes[1].pos, Ordering::Release);
    }
}

impl LoadWatch for Tree {
    fn start(&mut self, members: &[Member]) {
        for (i, m) in members.iter().enumerate().take(self.weights.len()) {
            let counts = m.counters().load();
            self.nodes[self.size + i] = self.rule.leaf(i, self.weights[i], counts);
            self.set_half(i, counts.0);
        }
        for k in (1..self.size).rev() {
            self.nodes[k] = self.rule.winner(self.nodes[2 * k], self.nodes[2 * k + 1]);
        }
        // (With a single backend, size is 1 and its leaf is the root.)
        self.publish();
    }

    fn changed(&mut self, pos: usize, counters: &Counters) {
        let Some(&w) = self.weights.get(pos) else {
            return;
        };
        let counts = counters.load();
        self.set_half(pos, counts.0);
        let mut k = self.size + pos;
        let leaf = self.rule.leaf(pos, w, counts);
        if self.nodes[k] == leaf {
            return;
        }
        self.nodes[k] = leaf;
        while k > 1 {
            k /= 2;
            let won = self.rule.winner(self.nodes[2 * k], self.nodes[2 * k + 1]);
            if self.nodes[k] == won {
                // Same winner, same cost: nothing above changes.
                break;
            }
            self.nodes[k] = won;
        }
        self.publish();
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.root.live.store(false, Ordering::Release);
    }
}
