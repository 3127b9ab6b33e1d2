//! # lb-sched: LVS- and nginx-exact schedulers
//!
//! The [`Scheduler`] trait and the algorithms of the Linux kernel's IPVS
//! (`ipvsadm -s rr|wrr|lc|wlc|sed|nq|lblc|lblcr|sh|dh|mh|fo|ovf|twos`, and
//! `-p` persistence) and of nginx's upstream module (smooth weighted round
//! robin, `least_conn`, `ip_hash`, `hash`, `hash consistent`, `random`),
//! each making exactly the decision its original makes for the same pool
//! order and counters. The contract is `SCHEDULERS.md`; the `sched_replay`
//! example replays scenarios through these types.
//!
//! A scheduler sees the world only through a [`Snapshot`] of the pool and a
//! [`Ctx`]. Its pick path allocates nothing, takes no lock shared by the
//! whole process, and makes no system call; tables (hash buckets, Maglev
//! permutations, smooth-WRR weights) are built when the pool changes.
//!
//! ```
//! use lb_core::{Backend, Ctx, Pool};
//! use lb_sched::Balancer;
//!
//! let pool = Pool::new();
//! pool.add(Backend::new("a", "10.0.0.1:80".parse()?).with_weight(5))?;
//! pool.add(Backend::new("b", "10.0.0.2:80".parse()?))?;
//! pool.add(Backend::new("c", "10.0.0.3:80".parse()?))?;
//!
//! let lb = Balancer::new(pool, lb_sched::build("wrr")?);
//! let ctx = Ctx::new("192.0.2.1:40000".parse()?);
//! let order: String = (0..7)
//!     .map(|_| lb.connect(&ctx).map(|c| c.name.to_string()))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(order, "aabacaa"); // nginx's smooth order for weights 5, 1, 1
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::Duration;

use lb_core::{BackendId, Change, Ctx, Outcome, Pick, Snapshot, Tables};

mod balancer;
mod error;
mod ewma;
mod fo;
mod hash;
mod heavy;
mod keyed;
mod lblc;
mod lc;
mod least;
mod nginx;
mod p2c;
mod pad;
mod persist;
mod registry;
mod rng;
mod rr;
mod smooth;
mod trace;
mod twos;
mod wrr;

pub use balancer::{Balancer, Conn};
pub use error::SchedError;
pub use ewma::PeakEwma;
pub use fo::{WeightedFailover, WeightedOverflow};
pub use hash::{DestHash, Maglev, SourceHash};
pub use lblc::{LocalityLeastConn, LocalityReplicated, DEFAULT_EXPIRE};
pub use lc::{LeastConn, NeverQueue, ShortestExpectedDelay, WeightedLeastConn};
pub use nginx::{ConsistentHash, IpHash, KeyHash, NginxLeastConn, NginxRandom};
pub use p2c::P2c;
pub use persist::Persist;
pub use registry::{build, build_with, catalogue, Args, NAMES};
pub use rr::RoundRobin;
pub use trace::{Explain, NoTrace, Trace};
pub use twos::TwoChoices;
pub use wrr::SmoothWrr;

/// What a scheduler honours beyond up/down and weight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// nginx `backup` servers: used only when no primary is usable.
    pub backup: bool,
    /// Per-backend `max_conns`.
    pub max_conns: bool,
}

impl Features {
    /// Neither backup servers nor connection limits (the LVS schedulers).
    pub const NONE: Features = Features {
        backup: false,
        max_conns: false,
    };

    /// Connection limits only (nginx's hash methods and `random`).
    pub const MAX_CONNS: Features = Features {
        backup: false,
        max_conns: true,
    };

    /// Backup servers and connection limits (nginx round robin, `least_conn`).
    pub const BACKUP_AND_MAX_CONNS: Features = Features {
        backup: true,
        max_conns: true,
    };
}

/// A load-balancing algorithm.
///
/// Object-safe and `Send + Sync`: the registry returns a [`BoxScheduler`],
/// and one scheduler serves picks from every thread at once.
pub trait Scheduler: Send + Sync + fmt::Debug {
    /// The scheduler's registry name (`"wlc"`).
    fn name(&self) -> &'static str;

    /// Build this scheduler's tables for a new snapshot. Called by the pool
    /// on every write, off the pick path (see [`lb_core::Prepare`]).
    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Option<Tables> {
        let _ = (next, prev, change);
        None
    }

    /// Choose a backend for a new connection, or none when nothing is
    /// eligible. The snapshot must come from a pool this scheduler is
    /// attached to (see [`Balancer`]).
    fn pick<'s>(&self, snap: &'s Snapshot, ctx: &Ctx<'_>) -> Option<Pick<'s>>;

    /// The same decision as [`pick`](Self::pick), explained: the candidates'
    /// loads and weights and the rule that decided are written to `why`.
    fn explain<'s>(&self, snap: &'s Snapshot, ctx: &Ctx<'_>, why: &mut Explain)
        -> Option<Pick<'s>>;

    /// Learn how an attempt on `backend` ended: `latency` after it began, at
    /// `now` on the clock of [`Ctx::now`]. Latency-aware schedulers
    /// (`peak_ewma`) update their estimates here; the others ignore it.
    /// Forwarders call it through [`Balancer::observe`]; it runs on the
    /// forwarding path, so it must be quick and must not block.
    fn observe(
        &self,
        snap: &Snapshot,
        backend: BackendId,
        outcome: Outcome,
        latency: Duration,
        now: Duration,
    ) {
        let _ = (snap, backend, outcome, latency, now);
    }

    /// The pool features this scheduler honours.
    fn features(&self) -> Features {
        Features::NONE
    }
}

/// A boxed scheduler, as the registry builds them.
pub type BoxScheduler = Box<dyn Scheduler>;
