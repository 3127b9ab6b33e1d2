//! A pool and its scheduler, wired together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{
    BackendId, Change, ConnGuard, Ctx, NoBackend, Observer, Outcome, Pool, Prepare, Snapshot,
    Tables,
};

use crate::trace::Explain;
use crate::Scheduler;

/// How many times a pick is retried when a concurrent pick took the last
/// slot under a backend's `max_conns` first.
const CONNECT_RACES: usize = 8;

/// A [`Pool`] with its [`Scheduler`]: the scheduler's tables are rebuilt on
/// every pool write, and each pick opens a counted connection.
///
/// `Balancer` is cheap to clone and safe to share: picks run on any number
/// of threads while another thread changes the pool.
#[derive(Clone, Debug)]
pub struct Balancer {
    pool: Pool,
    sched: Arc<dyn Scheduler>,
}

#[derive(Debug)]
struct Hook(Arc<dyn Scheduler>);

impl Prepare for Hook {
    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Option<Tables> {
        self.0.prepare(next, prev, change)
    }
}

/// A connection opened on the chosen backend. Dropping it closes it in the
/// counters.
#[derive(Debug)]
pub struct Conn {
    /// The chosen backend.
    pub backend: BackendId,
    /// Its name.
    pub name: Arc<str>,
    /// Its address.
    pub addr: SocketAddr,
    /// The live accounting of this connection.
    pub guard: ConnGuard,
}

impl Balancer {
    /// Attach `sched` to `pool` (replacing any scheduler attached before).
    pub fn new(pool: Pool, sched: Box<dyn Scheduler>) -> Self {
        let sched: Arc<dyn Scheduler> = Arc::from(sched);
        pool.attach(Arc::new(Hook(sched.clone())));
        Balancer { pool, sched }
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &dyn Scheduler {
        &*self.sched
    }

    /// Pick a backend for `ctx` and open a connection on it.
    ///
    /// Lock-free on the pool; respects `max_conns` atomically even when
    /// several threads pick at once.
    pub fn connect(&self, ctx: &Ctx<'_>) -> Result<Conn, NoBackend> {
        self.pool.with_snapshot(|snap| {
            for _ in 0..CONNECT_RACES {
                let pick = self.sched.pick(snap, ctx).ok_or(NoBackend)?;
                let m = pick.member();
                let (backend, addr, name) = (m.id(), m.addr(), m.name_arc());
                if let Some(guard) = pick.try_connect() {
                    return Ok(Conn {
                        backend,
                        name,
                        addr,
                        guard,
                    });
                }
            }
            Err(NoBackend)
        })
    }

    /// As [`connect`](Self::connect), recording why the backend was chosen.
    pub fn explain(&self, ctx: &Ctx<'_>, why: &mut Explain) -> Result<Conn, NoBackend> {
        let snap = self.pool.load();
        let pick = self.sched.explain(&snap, ctx, why).ok_or(NoBackend)?;
        let m = pick.member();
        let (backend, addr, name) = (m.id(), m.addr(), m.name_arc());
        let guard = pick.try_connect().ok_or(NoBackend)?;
        Ok(Conn {
            backend,
            name,
            addr,
            guard,
        })
    }

    /// Pick without opening a connection: the backend's id and address.
    pub fn pick(&self, ctx: &Ctx<'_>) -> Option<(BackendId, SocketAddr)> {
        self.pool.with_snapshot(|snap| {
            self.sched
                .pick(snap, ctx)
                .map(|p| (p.member().id(), p.member().addr()))
        })
    }

    /// Tell the scheduler how an attempt on `backend` ended, at the
    /// [`monotonic_now`](lb_core::monotonic_now) that [`Ctx::new`] reads
    /// (see [`Scheduler::observe`]; `peak_ewma` learns latencies from it).
    pub fn observe(&self, backend: BackendId, outcome: Outcome, latency: Duration) {
        self.pool.with_snapshot(|snap| {
            self.sched
                .observe(snap, backend, outcome, latency, lb_core::monotonic_now());
        });
    }
}

/// A balancer observes outcomes for its scheduler, so it can stand where a
/// forwarder expects an [`Observer`].
impl Observer for Balancer {
    fn observe(&self, backend: BackendId, outcome: Outcome, latency: Duration) {
        Balancer::observe(self, backend, outcome, latency);
    }
}
