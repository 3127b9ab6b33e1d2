//! nginx's smooth weighted round robin in O(d + log n) per pick, `d` being
//! the number of distinct weights, with exactly the decisions of the
//! linear step ([`swrr_step`]).
//!
//! The linear step adds every usable backend's weight `w` to its `current`,
//! takes the largest `current` (first in pool order on ties) and takes the
//! sum of the weights off the winner. Write the set of backends that take
//! part as `A` and count the picks since `A` was fixed as `t`: then every
//! member's `current` is `c + w * t`, and only the winner's `c` moves. Two
//! facts make that cheap:
//!
//! - backends of equal weight rise at the same speed, so their order never
//!   changes as `t` grows: within a weight class, the largest `current` is
//!   the largest `c`, first on ties, kept by a small tournament tree that
//!   changes only when a member wins;
//! - across classes, the winner is the best of the classes' leaders, `d`
//!   comparisons of `c + w * t` (first in pool order on ties).
//!
//! A class is usually simpler still. When its members' `c` are all `h`
//! except for a leading run at `h - total` (all equal, after a reset), its
//! leader is the first member at `h`, and a win only moves that member into
//! the run: the class is served in pool order by a cursor, O(1) per pick,
//! and stays in that form. Only a class left in another form (by a health
//! change that kept the `current`s) needs its tree.
//!
//! `A` is fixed per snapshot when no backend has `max_conns` and the pick
//! has tried nothing: the usable primaries if there are any, else the
//! usable backups (nginx's backup pass). Any other pick (a tried set, a
//! `max_conns` limit, an explanation, a snapshot other than the one the
//! classes were built for) turns the state back into plain `current`s
//! (`c += w * t`, `t = 0`) and takes the linear step; the classes are
//! rebuilt before the next fast pick. So both paths act on the same
//! `current`s and every decision is the linear step's.

use std::sync::Arc;

use parking_lot::Mutex;

use lb_core::{Change, Ctx, Snapshot, Tables};

use crate::trace::{is_on, why, Trace};
use crate::wrr::swrr_step;

/// No member: an empty subtree.
const NONE: u32 = u32::MAX;

/// Past this many fast picks `c += w * t` is folded back so that `c`, `w *
/// t` and their sum stay far inside an `i64` (weights are below 2^16).
const REBASE_AT: i64 = 1 << 32;

/// The smooth-WRR state of a chain of snapshots that differ only in health:
/// the tables of [`SmoothWrr`](crate::SmoothWrr).
#[derive(Debug)]
pub(crate) struct Smooth(Mutex<State>);

#[derive(Debug)]
struct State {
    /// Per position: `current = c + w * t` for members of the fast set,
    /// `current = c` for the others (and for all when `t == 0`).
    c: Vec<i64>,
    t: i64,
    /// The fast structure, if the snapshot allows one.
    fast: Option<Fast>,
}

/// The weight classes of the fast set `A` of one snapshot.
#[derive(Debug)]
struct Fast {
    version: u64,
    /// Per position: the weight if in `A`, else 0.
    weight: Vec<i64>,
    /// The sum of the weights of `A`.
    total: i64,
    /// Per position in `A`: its class and its leaf index there.
    slot: Vec<(u32, u32)>,
    classes: Vec<Class>,
    /// Some `c` changed outside the trees (a linear step): rebuild them.
    stale: bool,
}

/// The members of `A` of one weight, in pool order, and how its leader
/// (the largest `c`, first on ties) is found.
#[derive(Debug)]
struct Class {
    w: i64,
    members: Vec<u32>,
    mode: Mode,
    /// In [`Mode::Tree`]: `nodes[1]` is the root; leaf `k` is
    /// `nodes[size + k]`; each node holds the leader of the leaves below.
    nodes: Vec<Node>,
    size: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Members before `at` have `c == high - total`, the others `high`:
    /// the leader is `members[at]`.
    Cursor { at: usize, high: i64 },
    /// Anything else: the tournament tree.
    Tree,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Node {
    c: i64,
    pos: u32,
}

impl Node {
    const EMPTY: Node = Node { c: 0, pos: NONE };

    /// The larger of two adjacent subtrees' leaders, the left one on ties.
    #[inline]
    fn max(l: Node, r: Node) -> Node {
        if r.pos != NONE && (l.pos == NONE || r.c > l.c) {
            r
        } else {
            l
        }
    }
}

impl Class {
    fn new(w: i64, members: Vec<u32>) -> Class {
        Class {
            w,
            members,
            mode: Mode::Tree,
            nodes: Vec::new(),
            size: 0,
        }
    }

    /// Find the leader again from `c` (`total`: the sum of the weights).
    fn build(&mut self, c: &[i64], total: i64) {
        let value = |k: usize| c[self.members[k] as usize];
        let Some(high) = (0..self.members.len()).map(value).max() else {
            return;
        };
        let at = (0..self.members.len())
            .take_while(|&k| value(k) == high - total)
            .count();
        if (at..self.members.len()).all(|k| value(k) == high) {
            self.mode = Mode::Cursor { at, high };
            return;
        }
        self.mode = Mode::Tree;
        self.size = self.members.len().next_power_of_two();
        self.nodes.clear();
        self.nodes.resize(2 * self.size, Node::EMPTY);
        for (k, &pos) in self.members.iter().enumerate() {
            self.nodes[self.size + k] = Node {
                c: c[pos as usize],
                pos,
            };
        }
        for k in (1..self.size).rev() {
            self.nodes[k] = Node::max(self.nodes[2 * k], self.nodes[2 * k + 1]);
        }
    }

    /// The leader.
    #[inline]
    fn leader(&self) -> Node {
        match self.mode {
            Mode::Cursor { at, high } => Node {
                c: high,
                pos: self.members[at],
            },
            Mode::Tree => self.nodes[1],
        }
    }

    /// The member at `leaf`, the leader, won: its `c` is now `c`.
    #[inline]
    fn won(&mut self, leaf: usize, c: i64, total: i64) {
        if let Mode::Cursor { at, high } = &mut self.mode {
            *at += 1;
            if *at == self.members.len() {
                *at = 0;
                *high -= total;
            }
            return;
        }
        let mut k = self.size + leaf;
        self.nodes[k].c = c;
        while k > 1 {
            k /= 2;
            self.nodes[k] = Node::max(self.nodes[2 * k], self.nodes[2 * k + 1]);
        }
    }
}

impl Fast {
    /// The fast set of `snap`, or none when a `max_conns` limit makes
    /// usability depend on live counts.
    fn build(snap: &Snapshot, c: &[i64]) -> Option<Fast> {
        let members = snap.members();
        if members.iter().any(|m| m.max_conns() > 0) {
            return None;
        }
        let usable = |m: &lb_core::Member| m.is_up() && m.weight() > 0;
        let primary = members.iter().any(|m| !m.is_backup() && usable(m));
        let weight: Vec<i64> = members
            .iter()
            .map(|m| {
                let in_a = usable(m) && m.is_backup() != primary;
                if in_a {
                    i64::from(m.weight())
                } else {
                    0
                }
            })
            .collect();
        let mut by_weight: Vec<(i64, u32)> = weight
            .iter()
            .enumerate()
            .filter(|(_, &w)| w > 0)
            .map(|(i, &w)| (w, i as u32))
            .collect();
        by_weight.sort_unstable();
        let mut classes: Vec<Class> = Vec::new();
        let mut slot = vec![(NONE, NONE); members.len()];
        for group in by_weight.chunk_by(|a, b| a.0 == b.0) {
            let k = classes.len() as u32;
            for (leaf, &(_, pos)) in group.iter().enumerate() {
                slot[pos as usize] = (k, leaf as u32);
            }
            classes.push(Class::new(group[0].0, group.iter().map(|g| g.1).collect()));
        }
        let mut fast = Fast {
            version: snap.version(),
            total: weight.iter().sum(),
            weight,
            slot,
            classes,
            stale: false,
        };
        fast.rebuild(c);
        Some(fast)
    }

    fn rebuild(&mut self, c: &[i64]) {
        for class in &mut self.classes {
            class.build(c, self.total);
        }
        self.stale = false;
    }
}

impl State {
    /// Fold `w * t` into `c`: afterwards `c` holds every `current`.
    fn rebase(&mut self) {
        if self.t == 0 {
            return;
        }
        if let Some(fast) = &mut self.fast {
            for (c, &w) in self.c.iter_mut().zip(&fast.weight) {
                *c += w * self.t;
            }
            fast.stale = true;
        }
        self.t = 0;
    }

    /// One fast step; the position of the winner.
    #[inline]
    fn fast_step(&mut self) -> Option<usize> {
        let fast = self.fast.as_mut()?;
        if fast.total == 0 {
            return None;
        }
        if fast.stale {
            fast.rebuild(&self.c);
        }
        self.t += 1;
        let t = self.t;
        let mut best: Option<(i64, u32)> = None;
        for class in &fast.classes {
            let lead = class.leader();
            if lead.pos == NONE {
                continue;
            }
            let current = lead.c + class.w * t;
            if best.is_none_or(|(bc, bp)| current > bc || (current == bc && lead.pos < bp)) {
                best = Some((current, lead.pos));
            }
        }
        let (_, b) = best?;
        let b = b as usize;
        self.c[b] -= fast.total;
        let (k, leaf) = fast.slot[b];
        fast.classes[k as usize].won(leaf as usize, self.c[b], fast.total);
        if self.t >= REBASE_AT {
            self.rebase();
        }
        Some(b)
    }
}

impl Smooth {
    /// Tables for `next`: the state carried over (with the fast set of
    /// `next`, built from its weights) on a health or effective-weight
    /// change, zeros otherwise.
    pub(crate) fn prepare(next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Tables {
        if change.keeps_balance_state() {
            if let Some(t) = prev.and_then(|p| p.raw_tables()) {
                if let Some(smooth) = t.downcast_ref::<Smooth>() {
                    let mut st = smooth.0.lock();
                    if st.c.len() == next.len() {
                        st.rebase();
                        let fast = Fast::build(next, &st.c);
                        st.fast = fast;
                        drop(st);
                        return t.clone();
                    }
                }
            }
        }
        let c = vec![0; next.len()];
        let fast = Fast::build(next, &c);
        Arc::new(Smooth(Mutex::new(State { c, t: 0, fast })))
    }

    /// One pick of smooth weighted round robin over `snap` for `ctx`: the
    /// winner's position.
    pub(crate) fn step<T: Trace>(
        &self,
        snap: &Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<usize> {
        let mut st = self.0.lock();
        let fast_ok = !is_on(t)
            && ctx.tried().is_empty()
            && st
                .fast
                .as_ref()
                .is_some_and(|f| f.version == snap.version());
        if fast_ok {
            return st.fast_step();
        }
        st.rebase();
        let members = snap.members();
        if st.c.len() != members.len() {
            return None;
        }
        if let Some(fast) = &mut st.fast {
            fast.stale = true;
        }
        why!(t, "wrr: primaries");
        let current = &mut st.c;
        swrr_step(members, current, ctx, |m| !m.is_backup(), t).or_else(|| {
            why!(t, "wrr: no primary usable; backups");
            swrr_step(members, current, ctx, |m| m.is_backup(), t)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::NoTrace;
    use lb_core::{Backend, Pool};

    #[test]
    fn folding_the_clock_back_changes_no_decision() {
        let pool = Pool::new();
        for (i, w) in [5u64, 1, 1, 3, 3, 2, 0, 4].into_iter().enumerate() {
            let addr = std::net::SocketAddr::from(([10, 0, 0, i as u8 + 1], 80));
            pool.add(Backend::new(format!("b{i}"), addr).with_weight(w))
                .unwrap();
        }
        let snap = pool.load();
        let (a, b) = (
            Smooth::prepare(&snap, None, Change::Attach),
            Smooth::prepare(&snap, None, Change::Attach),
        );
        let (a, b) = (
            a.downcast_ref::<Smooth>().unwrap(),
            b.downcast_ref::<Smooth>().unwrap(),
        );
        {
            // Same currents, a clock five picks short of the fold.
            let mut st = a.0.lock();
            let shift = REBASE_AT - 5;
            let fast = st.fast.as_mut().unwrap();
            fast.stale = true;
            let weights = fast.weight.clone();
            for (c, w) in st.c.iter_mut().zip(weights) {
                *c -= w * shift;
            }
            st.t = shift;
        }
        let ctx = Ctx::new("192.0.2.1:1".parse().unwrap());
        for k in 0..100 {
            let x = a.step(&snap, &ctx, &mut NoTrace);
            let y = b.step(&snap, &ctx, &mut NoTrace);
            assert_eq!(x, y, "pick {k}");
        }
        assert!(a.0.lock().t < 100, "the clock was folded back");
    }
}
