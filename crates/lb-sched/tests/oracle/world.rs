//! The world the oracle property tests act on: random operations on a pool
//! and its connections, shared by `props_oracle*.rs`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use lb_core::{Backend, BackendId, ConnGuard, Ctx, Health, Pool, Snapshot};
use lb_sched::{build, Balancer, BoxScheduler, Persist};
use proptest::prelude::*;

/// One operation on the pool or its connections.
#[derive(Debug, Clone)]
pub enum Op {
    /// Pick for client `c`, destination `d`, having tried the backends at
    /// these positions (mod the pool size), and open the connection.
    Pick {
        c: u8,
        d: u8,
        tried: Vec<usize>,
    },
    /// Open a connection on the backend at this position without a pick.
    Open(usize),
    /// Close, idle or activate the open connection at this index (mod count).
    Close(usize),
    Idle(usize),
    Activate(usize),
    Weight(usize, u64),
    Health(usize, u8),
    /// Set a `max_conns` limit (0 removes it).
    MaxConns(usize, u64),
    Backup(usize, bool),
    Add(u64),
    Remove(usize),
}

pub fn op() -> impl Strategy<Value = Op> {
    let tried = prop_oneof![
        8 => Just(Vec::new()),
        1 => prop::collection::vec(0usize..32, 1..3),
    ];
    prop_oneof![
        10 => (0u8..6, 0u8..4, tried).prop_map(|(c, d, tried)| Op::Pick { c, d, tried }),
        3 => (0usize..32).prop_map(Op::Open),
        4 => (0usize..64).prop_map(Op::Close),
        2 => (0usize..64).prop_map(Op::Idle),
        1 => (0usize..64).prop_map(Op::Activate),
        1 => (0usize..32, 0u64..=5).prop_map(|(i, w)| Op::Weight(i, w)),
        1 => (0usize..32, 0u8..3).prop_map(|(i, h)| Op::Health(i, h)),
        1 => (0usize..32, prop_oneof![2 => Just(0u64), 1 => 1u64..4])
            .prop_map(|(i, m)| Op::MaxConns(i, m)),
        1 => (0usize..32, any::<bool>()).prop_map(|(i, b)| Op::Backup(i, b)),
        1 => (0u64..=4).prop_map(Op::Add),
        1 => (0usize..32).prop_map(Op::Remove),
    ]
}

pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 80))
}

/// What an operation wrote to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    Nothing,
    /// A health change: nginx's `current`s survive it.
    Health,
    /// Any other change: they are reset to zero.
    Reset,
}

/// A pool, its balancer, its open connections and the next backend number.
pub struct World {
    pub pool: Pool,
    pub lb: Balancer,
    pub open: Vec<ConnGuard>,
    pub next: usize,
}

impl World {
    pub fn new(sched: &str, weights: &[u64]) -> World {
        let sched = match sched.strip_prefix("persist ") {
            Some(inner) => Box::new(Persist::new(build(inner).unwrap(), Duration::from_secs(2))),
            None => build(sched).unwrap(),
        };
        World::with(sched, weights)
    }

    /// A world whose pool has backends of `weights` and is balanced by `sched`.
    pub fn with(sched: BoxScheduler, weights: &[u64]) -> World {
        let pool = Pool::new();
        for (i, &w) in weights.iter().enumerate() {
            pool.add(Backend::new(format!("b{i}"), addr(i)).with_weight(w))
                .unwrap();
        }
        let lb = Balancer::new(pool.clone(), sched);
        World {
            pool,
            lb,
            open: Vec::new(),
            next: weights.len(),
        }
    }

    pub fn id_at(&self, i: usize) -> Option<BackendId> {
        let snap = self.pool.load();
        (!snap.is_empty()).then(|| snap.members()[i % snap.len()].id())
    }

    /// Apply a non-pick operation. Returns what it wrote to the pool.
    pub fn apply(&mut self, op: &Op) -> Wrote {
        let snap = self.pool.load();
        let n = snap.len();
        match op {
            Op::Pick { .. } => unreachable!("picks are compared by the caller"),
            Op::Open(i) if n > 0 => self.open.push(snap.members()[i % n].connect()),
            Op::Close(k) if !self.open.is_empty() => {
                let k = k % self.open.len();
                drop(self.open.swap_remove(k));
            }
            Op::Idle(k) if !self.open.is_empty() => {
                let k = k % self.open.len();
                self.open[k].idle();
            }
            Op::Activate(k) if !self.open.is_empty() => {
                let k = k % self.open.len();
                self.open[k].activate();
            }
            Op::Weight(i, w) => {
                if let Some(id) = self.id_at(*i) {
                    self.pool.set_weight(id, *w).unwrap();
                    return Wrote::Reset;
                }
            }
            Op::Health(i, h) => {
                if let Some(id) = self.id_at(*i) {
                    let h = [Health::Up, Health::Down, Health::Draining][usize::from(*h)];
                    let before = self.pool.load().get(id).unwrap().health();
                    self.pool.set_health(id, h).unwrap();
                    if before != h {
                        return Wrote::Health;
                    }
                }
            }
            Op::MaxConns(i, m) => {
                if let Some(id) = self.id_at(*i) {
                    self.pool.set_max_conns(id, *m).unwrap();
                    return Wrote::Reset;
                }
            }
            Op::Backup(i, b) => {
                if let Some(id) = self.id_at(*i) {
                    self.pool.set_backup(id, *b).unwrap();
                    return Wrote::Reset;
                }
            }
            Op::Add(w) => {
                let i = self.next;
                self.next += 1;
                self.pool
                    .add(Backend::new(format!("b{i}"), addr(i)).with_weight(*w))
                    .unwrap();
                return Wrote::Reset;
            }
            Op::Remove(i) => {
                if let Some(id) = self.id_at(*i) {
                    self.pool.remove(id).unwrap();
                    return Wrote::Reset;
                }
            }
            _ => {}
        }
        Wrote::Nothing
    }
}

pub fn ctx_parts(
    snap: &Snapshot,
    c: u8,
    d: u8,
    tried: &[usize],
) -> (SocketAddr, SocketAddr, Vec<BackendId>) {
    let client = SocketAddr::from(([192, 0, 2, c + 1], 1000 + u16::from(c)));
    let dest = SocketAddr::from(([198, 51, 100, d + 1], 80));
    let tried = if snap.is_empty() {
        Vec::new()
    } else {
        tried
            .iter()
            .map(|i| snap.members()[i % snap.len()].id())
            .collect()
    };
    (client, dest, tried)
}

/// A small deterministic generator for the long runs below.
pub struct Mix(pub u64);

impl Mix {
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// The change drawn as `r` (8 to 19 of 20; below 8 the long runs pick):
/// open, close, idle, activate, weight or health, at a random place.
pub fn change(rng: &mut Mix, r: u64) -> Op {
    match r {
        8..=10 => Op::Open(rng.next(400) as usize),
        11..=14 => Op::Close(rng.next(1000) as usize),
        15 | 16 => Op::Idle(rng.next(1000) as usize),
        17 => Op::Activate(rng.next(1000) as usize),
        18 => Op::Weight(rng.next(400) as usize, rng.next(6)),
        _ => Op::Health(rng.next(400) as usize, rng.next(3) as u8),
    }
}

/// Three threads picking, opening, idling and closing connections at random
/// while a fourth changes weights and health, on a pool of 64 backends;
/// returns the connections still open (keep them while checking).
pub fn churn(pool: &Pool, lb: &Balancer) -> Vec<ConnGuard> {
    let kept = parking_lot::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let kept = &kept;
            s.spawn(move || {
                let mut rng = Mix(t + 1);
                let mut open: Vec<ConnGuard> = Vec::new();
                for _ in 0..20_000 {
                    let snap = pool.load();
                    match rng.next(6) {
                        0 | 1 => {
                            let ctx = Ctx::at(addr(0), Duration::ZERO);
                            if let Some(p) = lb.scheduler().pick(&snap, &ctx) {
                                open.push(p.connect());
                            }
                        }
                        2 => open.push(snap.members()[rng.next(64) as usize].connect()),
                        3 if !open.is_empty() => {
                            let k = rng.next(open.len() as u64) as usize;
                            open[k].idle();
                        }
                        _ if !open.is_empty() => {
                            let k = rng.next(open.len() as u64) as usize;
                            drop(open.swap_remove(k));
                        }
                        _ => {}
                    }
                }
                kept.lock().extend(open);
            });
        }
        s.spawn(|| {
            let mut rng = Mix(99);
            for _ in 0..200 {
                let id = pool.load().members()[rng.next(64) as usize].id();
                if rng.next(2) == 0 {
                    pool.set_weight(id, rng.next(5)).unwrap();
                } else {
                    let h = [Health::Up, Health::Down][rng.next(2) as usize];
                    pool.set_health(id, h).unwrap();
                }
            }
        });
    });
    kept.into_inner()
}

/// What the scheduler attached to `lb` picks for `ctx` by its fast path,
/// and by its explained scan.
pub fn fast_and_scan(
    lb: &Balancer,
    snap: &Snapshot,
    ctx: &Ctx<'_>,
) -> (Option<BackendId>, Option<BackendId>) {
    let fast = lb.scheduler().pick(snap, ctx).map(|p| p.member().id());
    let scan = lb
        .scheduler()
        .explain(snap, ctx, &mut lb_sched::Explain::new())
        .map(|p| p.member().id());
    (fast, scan)
}
