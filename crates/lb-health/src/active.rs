//! Active checking of every backend of a pool: the [`HealthChecker`]
//! builder and the handle of a running checker.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use lb_core::{BackendId, Snapshot};
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::check::{Check, CheckError, Target};
use crate::error::HealthError;
use crate::prober::{Prober, Subscriber, Subscription, DEFAULT_CONCURRENCY};
use crate::rise_fall::{Intervals, RiseFall, Transition};
use crate::state::{Event, Reason};
use crate::supervisor::{Follower, Source, Supervisor};

/// Active checks of every backend of a pool, HAProxy style: interval,
/// timeout, jitter, `rise`/`fall` counting (see [`RiseFall`]), a faster
/// interval in transition and a slower one while down.
///
/// **Passive ejections.** When passive health (a [`PassiveHealth`](crate::PassiveHealth) on the
/// same [`Supervisor`]) ejects a backend this checker checks, the checker
/// takes over as HAProxy's `on-error mark-down` does: its health counter
/// drops to 0 (down), the backend is probed at the fast interval from then
/// on while the ejection's window lasts (nginx's `fail_timeout`), and
/// `rise` successes bring it back, ending the passive ejection too. So
/// with active checks, checks decide when an ejected backend returns; the
/// passive `fail_timeout` only does when no active checker runs.
///
/// The checker follows the pool: backends added later are checked from
/// the next look at the pool (every `min(interval, 1s)`), removed ones are
/// no longer checked. At the first look the checks of the pool's backends
/// are spread evenly over one interval, as HAProxy spreads its checks.
///
/// ```no_run
/// # async fn demo(pool: lb_core::Pool) -> Result<(), lb_health::HealthError> {
/// use std::time::Duration;
/// use lb_health::{Check, HealthChecker};
///
/// let checker = HealthChecker::new(pool.clone(), Check::tcp())
///     .interval(Duration::from_secs(2))
///     .timeout(Duration::from_secs(1))
///     .rise(2)
///     .fall(3)
///     .spawn()?;
/// let mut events = checker.events();
/// while let Ok(ev) = events.recv().await {
///     println!("{ev}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HealthChecker {
    sup: Supervisor,
    check: Check,
    iv: Intervals,
    timeout: Duration,
    jitter: Duration,
    rise: u32,
    fall: u32,
    concurrency: usize,
    prober: Option<Prober>,
    slow_start: Option<Option<Duration>>,
    panic_threshold: Option<u8>,
}

impl HealthChecker {
    /// Check every backend of a pool (or of a [`Supervisor`]'s pool, to
    /// combine several checkers and passive checks) with `check`.
    ///
    /// Defaults: interval 2 s, timeout 1 s, no jitter, rise 2, fall 3
    /// (HAProxy's), at most 512 checks in flight; the fast interval a
    /// quarter of the interval, the down interval the interval (see
    /// [`fast_interval`](Self::fast_interval)).
    pub fn new(target: impl Into<Supervisor>, check: impl Into<Check>) -> Self {
        HealthChecker {
            sup: target.into(),
            check: check.into(),
            iv: Intervals {
                inter: Duration::from_secs(2),
                fast: None,
                down: None,
            },
            timeout: Duration::from_secs(1),
            jitter: Duration::ZERO,
            rise: 2,
            fall: 3,
            concurrency: DEFAULT_CONCURRENCY,
            prober: None,
            slow_start: None,
            panic_threshold: None,
        }
    }

    /// Time between checks of a backend at full health (HAProxy `inter`;
    /// at least 1 ms).
    pub fn interval(mut self, d: Duration) -> Self {
        self.iv.inter = d.max(Duration::from_millis(1));
        self
    }

    /// Time between checks while a backend is in transition (HAProxy
    /// `fastinter`): up but not at full health, down with some progress
    /// towards up, or passively ejected (see above). Unlike HAProxy, whose
    /// `fastinter` is `inter` unless set, the default is a quarter of the
    /// interval (at least 1 ms): a backend in transition is decided four
    /// times sooner, at the price of a few more checks of that backend only.
    pub fn fast_interval(mut self, d: Duration) -> Self {
        self.iv.fast = Some(d.max(Duration::from_millis(1)));
        self
    }

    /// Time between checks while a backend is down (HAProxy `downinter`).
    pub fn down_interval(mut self, d: Duration) -> Self {
        self.iv.down = Some(d.max(Duration::from_millis(1)));
        self
    }

    /// How long one check may take before it counts as failed.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Add a random delay of up to `d` to every interval, so checks of many
    /// backends do not stay in step.
    pub fn jitter(mut self, d: Duration) -> Self {
        self.jitter = d;
        self
    }

    /// Consecutive successes that bring a down backend up (at least 1).
    pub fn rise(mut self, n: u32) -> Self {
        self.rise = n.max(1);
        self
    }

    /// Consecutive failures that take an up backend down (at least 1).
    pub fn fall(mut self, n: u32) -> Self {
        self.fall = n.max(1);
        self
    }

    /// The most checks in flight at once for this checker's own prober
    /// (ignored when a shared [`prober`](Self::prober) is given).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Run the checks on a shared prober, so a backend that several pools
    /// share is probed once per check kind.
    pub fn prober(mut self, prober: &Prober) -> Self {
        self.prober = Some(prober.clone());
        self
    }

    /// Set the supervisor's slow start (see [`Supervisor::set_slow_start`]).
    pub fn slow_start(mut self, d: Duration) -> Self {
        self.slow_start = Some(Some(d));
        self
    }

    /// Set the supervisor's panic threshold (see
    /// [`Supervisor::set_panic_threshold`]).
    pub fn panic_threshold(mut self, percent: u8) -> Self {
        self.panic_threshold = Some(percent);
        self
    }

    /// Start checking, on the current tokio runtime.
    pub fn spawn(self) -> Result<CheckerHandle, HealthError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| HealthError::NoRuntime)?;
        let mut this = self;
        if this.iv.fast.is_none() {
            this.iv.fast = Some((this.iv.inter / 4).max(Duration::from_millis(1)));
        }
        let sup = this.sup.clone();
        sup.ensure_driver();
        if let Some(ss) = this.slow_start {
            sup.set_slow_start(ss);
        }
        if let Some(p) = this.panic_threshold {
            sup.set_panic_threshold(p);
        }
        let shared = Arc::new(Shared {
            source: sup.new_source(),
            prober: this
                .prober
                .clone()
                .unwrap_or_else(|| Prober::new(this.concurrency)),
            subs: Mutex::new(HashMap::new()),
            stopped: AtomicBool::new(false),
            check_name: Arc::from(this.check.name()),
            cfg: this,
        });
        let follower: Weak<dyn Follower> = Arc::downgrade(&shared) as Weak<Shared>;
        sup.follow(follower);
        let task = rt.spawn(follow_pool(shared.clone()));
        Ok(CheckerHandle { shared, task })
    }
}

/// A running [`HealthChecker`]. Dropping the handle leaves the checks
/// running; [`stop`](Self::stop) ends them.
#[derive(Debug)]
pub struct CheckerHandle {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    cfg: HealthChecker,
    source: Source,
    prober: Prober,
    subs: Mutex<HashMap<BackendId, (Subscription, Arc<Nudge>)>>,
    stopped: AtomicBool,
    check_name: Arc<str>,
}

/// A passive ejection handed to one backend's subscriber: the end of its
/// fast-check window and the ejection's reason.
type Nudge = Mutex<Option<(Instant, Reason)>>;

impl Follower for Shared {
    fn checks(&self, id: BackendId) -> bool {
        !self.stopped.load(Ordering::SeqCst) && self.subs.lock().contains_key(&id)
    }

    fn mark_down(&self, id: BackendId, reason: &Reason, window: Duration) {
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let subs = self.subs.lock();
        if let Some((sub, nudge)) = subs.get(&id) {
            let until = Instant::now() + window;
            *nudge.lock() = Some((until, reason.clone()));
            sub.wake();
        }
    }
}

impl CheckerHandle {
    /// Receive every state change of the pool's backends.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.cfg.sup.events()
    }

    /// The supervisor this checker reports to.
    pub fn supervisor(&self) -> &Supervisor {
        &self.shared.cfg.sup
    }

    /// How many backends this checker is checking.
    pub fn checking(&self) -> usize {
        self.shared.subs.lock().len()
    }

    /// Stop checking. The checker's verdicts are withdrawn: a backend it
    /// alone held down returns to service.
    pub fn stop(self) {
        self.task.abort();
        self.shared.stopped.store(true, Ordering::SeqCst);
        let subs = std::mem::take(&mut *self.shared.subs.lock());
        drop(subs);
        self.shared.cfg.sup.withdraw(self.shared.source);
    }
}

/// Follow the pool's membership and keep one subscription per backend.
async fn follow_pool(shared: Arc<Shared>) {
    let period = shared.cfg.iv.inter.min(Duration::from_secs(1));
    let mut seen: Option<u64> = None;
    loop {
        let snap = shared.cfg.sup.pool().snapshot();
        if seen != Some(snap.version()) {
            reconcile(&shared, &snap, seen.is_none());
            seen = Some(snap.version());
        }
        tokio::time::sleep(period).await;
    }
}

fn reconcile(shared: &Shared, snap: &Snapshot, first: bool) {
    let mut subs = shared.subs.lock();
    if shared.stopped.load(Ordering::SeqCst) {
        return;
    }
    subs.retain(|id, _| snap.get(*id).is_some());
    let now = Instant::now();
    let n = snap.len().max(1);
    let cfg = &shared.cfg;
    for (i, m) in snap.members().iter().enumerate() {
        if subs.contains_key(&m.id()) {
            continue;
        }
        let offset = if first {
            cfg.iv.inter.mul_f64(i as f64 / n as f64)
        } else {
            Duration::ZERO
        };
        let nudge = Arc::new(Nudge::default());
        let sub = ActiveSub {
            nudge: nudge.clone(),
            fast_until: None,
            sup: cfg.sup.clone(),
            id: m.id(),
            source: shared.source,
            check: shared.check_name.clone(),
            rf: RiseFall::new(cfg.rise, cfg.fall),
            iv: cfg.iv,
            timeout: cfg.timeout,
            jitter: cfg.jitter,
            rng: RandomState::new().hash_one((m.addr(), m.id(), shared.source.0)),
        };
        let target = Target::new(m.addr(), m.name_arc());
        let s = shared
            .prober
            .subscribe(target, cfg.check.inner(), now + offset, Box::new(sub));
        subs.insert(m.id(), (s, nudge));
    }
}

/// One backend as one checker sees it: rise/fall counting and pacing.
struct ActiveSub {
    sup: Supervisor,
    id: BackendId,
    source: Source,
    check: Arc<str>,
    rf: RiseFall,
    iv: Intervals,
    timeout: Duration,
    jitter: Duration,
    rng: u64,
    /// Where passive ejections arrive.
    nudge: Arc<Nudge>,
    /// While a passive ejection's window lasts: checks at the fast interval.
    fast_until: Option<Instant>,
}

impl ActiveSub {
    fn fast(&self) -> Duration {
        self.iv.fast.unwrap_or(self.iv.inter)
    }

    /// SplitMix64.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Subscriber for ActiveSub {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn nudged(&mut self) -> Option<Duration> {
        let (until, reason) = self.nudge.lock().take()?;
        self.fast_until = Some(until);
        if self.rf.mark_down() == Some(Transition::WentDown) {
            self.sup.vote_down(self.id, self.source, reason, None);
        }
        tracing::debug!(id = self.id.get(), check = %self.check, "lb-health: marked down by passive health; fast checks");
        Some(self.fast())
    }

    fn feed(&mut self, result: &Result<(), CheckError>) -> Duration {
        // An ejection that came while this check ran counts first.
        let _ = self.nudged();
        if let Err(e) = result {
            tracing::debug!(id = self.id.get(), check = %self.check, error = %e, health = self.rf.health(), "lb-health: check failed");
        }
        match (self.rf.observe(result.is_ok()), result) {
            (Some(Transition::WentDown), Err(e)) => {
                let reason = Reason::CheckFailed {
                    check: self.check.clone(),
                    detail: e.message_arc(),
                };
                self.sup.vote_down(self.id, self.source, reason, None);
            }
            (Some(Transition::WentUp), _) => {
                let why = Reason::CheckPassed {
                    check: self.check.clone(),
                };
                self.sup.checks_passed(self.id, self.source, why);
            }
            _ => {}
        }
        let now = Instant::now();
        if self.rf.health() == self.rf.max() || self.fast_until.is_some_and(|t| t <= now) {
            self.fast_until = None;
        }
        let mut delay = match self.fast_until {
            Some(_) => self.fast(),
            None => self.rf.interval(&self.iv),
        };
        let jitter = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
        if jitter > 0 {
            delay += Duration::from_nanos(self.next_random() % jitter);
        }
        delay
    }
}
