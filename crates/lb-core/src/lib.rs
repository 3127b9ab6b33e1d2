//! # lb-core: the pool model of the lb load-balancing toolkit
//!
//! The nouns every other lb crate speaks: a [`Backend`] (name, address,
//! weight, health, backup flag, connection limit), the [`Pool`] that holds
//! them and publishes an immutable [`Snapshot`] on every change, the live
//! [`Counters`] of each backend (active and inactive connections, outcomes,
//! latency) that survive every snapshot swap, the [`Ctx`] a scheduler reads
//! (client, destination, hash key, clock, tried set), the RAII [`ConnGuard`]
//! that keeps the counters right, the [`LoadWatch`] through which the
//! counters keep a scheduler's index of loads current, and the error types.
//!
//! Readers never lock: a pick loads the current snapshot with one atomic
//! read. Writes are rare and may be slow; each one builds the next snapshot
//! and lets the attached [`Prepare`] (a scheduler, through `lb-sched`) build
//! its tables before the snapshot is published. No async runtime is needed.
//!
//! ```
//! use lb_core::{Backend, Ctx, Health, Pool};
//!
//! let pool = Pool::new();
//! let web1 = pool.add(Backend::new("web1", "10.0.0.1:80".parse()?).with_weight(2))?;
//! pool.add(Backend::new("web2", "10.0.0.2:80".parse()?))?;
//!
//! // A reader: one lock-free load, then the live counters of each backend.
//! let snap = pool.load();
//! let ctx = Ctx::new("192.0.2.1:50000".parse()?);
//! let first = snap.members().iter().find(|m| ctx.usable(m)).expect("web1 is up");
//! let mut conn = first.connect();          // active = 1
//! assert_eq!(first.active(), 1);
//! conn.idle();                              // active -> inactive
//! assert_eq!((first.active(), first.inactive()), (0, 1));
//! drop(conn);                               // closed: counters back to 0
//! assert_eq!(first.conns(), 0);
//!
//! // A rare write publishes a new snapshot; the old one stays valid.
//! pool.set_health(web1, Health::Down)?;
//! assert!(!pool.load().get(web1).unwrap().is_eligible());
//! assert!(snap.get(web1).unwrap().is_eligible());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backend;
mod counters;
mod ctx;
mod error;
mod guard;
mod outcome;
mod pool;
mod snapshot;
mod watch;

pub use backend::{Backend, BackendId, Health, Member, MAX_CONNS, MAX_WEIGHT};
pub use counters::Counters;
pub use ctx::{monotonic_now, Ctx};
pub use error::{NoBackend, PoolError};
pub use guard::{ConnGuard, ConnState, Hold, Pick};
pub use outcome::{FanOut, IgnoreOutcomes, Observer, Outcome};
pub use pool::{Batch, Pool, SnapshotRef};
pub use snapshot::{Change, Prepare, Snapshot, Tables};
pub use watch::LoadWatch;
