//! The heaviest usable backend of a snapshot in O(1) per pick, for `fo` and
//! `ovf` (`fo.rs`): the first backend in pool order of the highest weight
//! among those that fit.
//!
//! "Highest weight, first on ties" is the maximum of the key
//! `(weight, -position)`, so a tournament tree over pool positions whose
//! nodes hold the larger key of their children has the answer at its root.
//! What can change a leaf between two pool writes:
//!
//! - `fo`: nothing but a `max_conns` limit filling up or freeing. Without
//!   any limit in the snapshot the answer is fixed when the snapshot is
//!   prepared (no tree, no watch, no cost on the connection path);
//! - `ovf`: `active` crossing the backend's weight (and limits as for fo).
//!
//! The tree is then the pool's [`LoadWatch`], as in `least.rs`: a counter
//! change recomputes its backend's leaf, O(1), and only when the leaf
//! changed (a backend filling up, or crossing `active == weight`) walks up,
//! O(log n). A pick reads the root, one atomic load.
//!
//! The index is used when it answers exactly: the pick tried nothing, is
//! not explained, and the index still follows the counters (another index
//! replaced it: a newer snapshot). Otherwise the caller scans.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use lb_core::{Counters, Ctx, LoadWatch, Member, Snapshot};

/// Which rule of `fo.rs` an index serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `fo`: every usable backend fits.
    Fo,
    /// `ovf`: a usable backend fits while `active <= weight`.
    Ovf,
}

/// No position: an empty subtree, or no backend fits.
const NONE: u32 = u32::MAX;

/// The key of the backend at `pos` with weight `w` if it fits: weight in
/// the high half, `!pos` in the low half, so the largest key is the highest
/// weight, first in pool order. 0: does not fit.
#[inline]
fn key(pos: usize, w: u32) -> u64 {
    if w == 0 {
        0
    } else {
        (u64::from(w) << 32) | u64::from(!(pos as u32))
    }
}

/// The position a key names.
#[inline]
fn pos_of(key: u64) -> u32 {
    if key == 0 {
        NONE
    } else {
        !(key as u32)
    }
}

/// What a pick reads: the root's position and whether the tree still
/// follows the counters.
#[derive(Debug)]
struct Root {
    pos: AtomicU32,
    live: AtomicBool,
}

#[derive(Debug)]
enum Answer {
    /// No index: the caller scans.
    Scan,
    /// Fixed for the snapshot (fo without limits): the position, or none.
    Fixed(Option<u32>),
    /// Kept by the tree installed as the pool's load watch.
    Tree(Arc<Root>),
}

/// A snapshot's index for `fo` or `ovf`, as its tables.
#[derive(Debug)]
pub(crate) struct HeavyIndex {
    kind: Kind,
    answer: Answer,
}

impl HeavyIndex {
    /// Build the index of `kind` for `next` (installing its tree as the
    /// pool's load watch when the answer depends on the counters).
    pub(crate) fn prepare(kind: Kind, next: &Snapshot) -> HeavyIndex {
        let members = next.members();
        let limits = members.iter().any(|m| m.max_conns() > 0);
        if members.is_empty() || (kind == Kind::Fo && !limits) {
            let best = members
                .iter()
                .enumerate()
                .filter(|(_, m)| m.is_up())
                .map(|(i, m)| key(i, m.weight()))
                .max()
                .unwrap_or(0);
            let answer = Answer::Fixed(Some(pos_of(best)).filter(|&p| p != NONE));
            return HeavyIndex { kind, answer };
        }
        let root = Arc::new(Root {
            pos: AtomicU32::new(NONE),
            live: AtomicBool::new(true),
        });
        let size = members.len().next_power_of_two();
        let tree = Tree {
            kind,
            size,
            nodes: vec![0; 2 * size],
            weights: members
                .iter()
                .map(|m| if m.is_up() { m.weight() } else { 0 })
                .collect(),
            limits: members.iter().map(Member::max_conns).collect(),
            root: root.clone(),
        };
        let answer = if next.watch_loads(Box::new(tree)) {
            Answer::Tree(root)
        } else {
            Answer::Scan
        };
        HeavyIndex { kind, answer }
    }

    /// The choice of the index of `kind` prepared for `snap`, if it answers
    /// exactly for `ctx`: `Some(None)` when nothing fits, `None` when the
    /// caller must scan.
    #[inline]
    pub(crate) fn choice<'s>(
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        kind: Kind,
    ) -> Option<Option<&'s Member>> {
        let index = snap.tables::<HeavyIndex>()?;
        if index.kind != kind || !ctx.tried().is_empty() {
            return None;
        }
        let pos = match &index.answer {
            Answer::Scan => return None,
            Answer::Fixed(pos) => *pos,
            Answer::Tree(root) => {
                if !root.live.load(Ordering::Acquire) {
                    return None;
                }
                Some(root.pos.load(Ordering::Acquire)).filter(|&p| p != NONE)
            }
        };
        Some(pos.and_then(|p| snap.members().get(p as usize)))
    }
}

/// The tree: `nodes[1]` is the root, `nodes[k]`'s children are `2k` and
/// `2k + 1`, and the leaf of position `p` is `nodes[size + p]`; each node
/// holds the largest [`key`] below it.
struct Tree {
    kind: Kind,
    size: usize,
    nodes: Vec<u64>,
    /// Each position's weight if it is up, else 0.
    weights: Vec<u32>,
    /// Each position's `max_conns` (0: none).
    limits: Vec<u32>,
    root: Arc<Root>,
}

impl Tree {
    /// The leaf of `pos` for the counts `(active, inactive)`.
    #[inline]
    fn leaf(&self, pos: usize, (active, inactive): (u32, u32)) -> u64 {
        let w = self.weights[pos];
        let limit = self.limits[pos];
        let room = limit == 0 || u64::from(active) + u64::from(inactive) < u64::from(limit);
        let fits = match self.kind {
            Kind::Fo => room,
            Kind::Ovf => room && active <= w,
        };
        if fits {
            key(pos, w)
        } else {
            0
        }
    }

    #[inline]
    fn publish(&self) {
        self.root
            .pos
            .store(pos_of(self.nodes[1]), Ordering::Release);
    }
}

impl LoadWatch for Tree {
    fn start(&mut self, members: &[Member]) {
        for (i, m) in members.iter().enumerate().take(self.weights.len()) {
            self.nodes[self.size + i] = self.leaf(i, m.counters().load());
        }
        for k in (1..self.size).rev() {
            self.nodes[k] = self.nodes[2 * k].max(self.nodes[2 * k + 1]);
        }
        self.publish();
    }

    fn changed(&mut self, pos: usize, counters: &Counters) {
        if pos >= self.weights.len() {
            return;
        }
        let leaf = self.leaf(pos, counters.load());
        let mut k = self.size + pos;
        if self.nodes[k] == leaf {
            return;
        }
        self.nodes[k] = leaf;
        while k > 1 {
            k /= 2;
            let won = self.nodes[2 * k].max(self.nodes[2 * k + 1]);
            if self.nodes[k] == won {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_weight_then_first_position() {
        assert!(key(5, 3) > key(0, 2), "heavier wins");
        assert!(key(0, 3) > key(5, 3), "first on ties");
        assert_eq!(key(7, 0), 0, "weight 0 never fits");
        assert_eq!(pos_of(key(9, 1)), 9);
        assert_eq!(pos_of(0), NONE);
    }
}
