//! # lb-health: active and passive health checking that drives an lb pool
//!
//! Health checking in the manner of keepalived, HAProxy, nginx and Envoy,
//! writing its verdicts into an [`lb_core::Pool`] so that every scheduler
//! sees them on its next pick:
//!
//! - **Active checks** on tokio ([`HealthChecker`]): a TCP connect
//!   ([`Check::tcp`]), an HTTP GET with an expected status range and body
//!   text ([`Check::http`], like keepalived `HTTP_GET` or HAProxy `option
//!   httpchk`), a shell command whose exit status decides
//!   ([`Check::command`], like keepalived `MISC_CHECK`), or any
//!   [`Checker`]. Interval, timeout, jitter, HAProxy's `rise`/`fall`
//!   counting ([`RiseFall`]) with `fastinter`/`downinter`; a bound on
//!   checks in flight; one probe per address and check kind even when
//!   several pools share a backend ([`Prober`]).
//! - **Passive checks** fed by real traffic ([`PassiveHealth`], an
//!   [`lb_core::Observer`]): nginx's `max_fails` within `fail_timeout` with
//!   its effective-weight drop and gradual recovery ([`MaxFails`]), and
//!   Envoy-style outlier ejection ([`Outlier`]).
//! - **Slow start** ([`SlowStart`]): a backend that comes back ramps its
//!   effective weight linearly, as HAProxy's `slowstart`.
//! - **One state machine per backend** ([`Supervisor`]), fed by every
//!   signal and by the operator, with typed [`State`]s, a stream of
//!   [`Event`]s, `tracing` logs, and a safety valve: when too few backends
//!   are serving the pool goes into panic and balances over all of them.
//!
//! ```
//! use std::time::Duration;
//! use lb_core::{Backend, Ctx, Pool};
//! use lb_health::{Check, HealthChecker, State};
//! use lb_sched::Balancer;
//! use tokio::net::TcpListener;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One backend that listens, one whose port is closed.
//! let live = TcpListener::bind("127.0.0.1:0").await?;
//! let dead = TcpListener::bind("127.0.0.1:0").await?;
//! let dead_addr = dead.local_addr()?;
//! drop(dead);
//!
//! let pool = Pool::new();
//! pool.add(Backend::new("live", live.local_addr()?))?;
//! let bad = pool.add(Backend::new("dead", dead_addr))?;
//! let lb = Balancer::new(pool.clone(), lb_sched::build("rr")?);
//!
//! let checker = HealthChecker::new(pool.clone(), Check::tcp())
//!     .interval(Duration::from_millis(100))
//!     .rise(2)
//!     .fall(3)
//!     .spawn()?;
//! let mut events = checker.events();
//! // HAProxy starts a server at health = rise: "up, but down at the first
//! // failure". From full health it would take `fall` failures.
//! let ev = events.recv().await?;
//! assert_eq!(ev.backend, bad);
//! assert!(matches!(ev.new, State::Down { .. }));
//!
//! // The scheduler now only picks the live backend.
//! let ctx = Ctx::new("192.0.2.1:40000".parse()?);
//! for _ in 0..4 {
//!     assert_eq!(&*lb.connect(&ctx)?.name, "live");
//! }
//! checker.stop();
//! # Ok(())
//! # }
//! ```
//!
//! Several signals on one pool meet in one [`Supervisor`]: create it once
//! and pass clones to every checker and to the passive detector.
//!
//! ```
//! # use std::{sync::Arc, time::Duration};
//! # use lb_core::{Observer, Pool};
//! # use lb_health::{Check, HealthChecker, Outlier, PassiveHealth, Supervisor};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let pool = Pool::new();
//! let sup = Supervisor::new(pool.clone());
//! sup.set_slow_start(Some(Duration::from_secs(30)));
//! let active = HealthChecker::new(sup.clone(), Check::http("/healthz")).spawn()?;
//! let passive = PassiveHealth::builder(sup.clone()).outlier(Outlier::default()).build();
//! let observer: Arc<dyn Observer> = passive; // hand this to the forwarders
//! # active.stop();
//! # Ok(())
//! # }
//! ```

mod active;
mod check;
mod error;
mod passive;
mod prober;
mod rise_fall;
mod slow_start;
mod state;
mod supervisor;

pub use active::{CheckerHandle, HealthChecker};
pub use check::{
    Check, CheckError, CheckFuture, Checker, CommandCheck, FailureKind, HttpCheck, Target, TcpCheck,
};
pub use error::HealthError;
pub use passive::{MaxFails, Outlier, PassiveBuilder, PassiveHealth};
pub use prober::{Prober, DEFAULT_CONCURRENCY};
pub use rise_fall::{Intervals, RiseFall, Transition};
pub use slow_start::{SlowStart, WEIGHT_SCALE};
pub use state::{Admin, Event, Reason, State};
pub use supervisor::{Supervisor, DEFAULT_PANIC_THRESHOLD};
