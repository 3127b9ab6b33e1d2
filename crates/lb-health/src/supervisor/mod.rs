//! The supervisor: one state machine per backend of a pool, fed by every
//! signal, written into the pool.

mod entry;
mod writer;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use lb_core::{BackendId, Pool, Snapshot};
use parking_lot::Mutex;
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::HealthError;
use crate::slow_start::SlowStart;
use crate::state::{Admin, Event, Reason, State};
pub(crate) use entry::Source;
use entry::{Change, Entry};

/// How many events a slow receiver may fall behind before it loses some.
const EVENT_BUFFER: usize = 1024;

/// Envoy's default panic threshold, in percent.
pub const DEFAULT_PANIC_THRESHOLD: u8 = 50;

/// The health of one pool: one state machine per backend, fed by every
/// signal (active checkers, passive detectors, operator), written into the
/// [`Pool`].
///
/// Each backend's [`State`] is the fold of its signals: an operator's
/// maintenance or drain wins; otherwise any signal that holds it failed
/// makes it [`State::Down`]; otherwise it serves, in
/// [`State::SlowStart`] for a while after a return when a slow start is
/// set. Changes are written into the pool (health, and the effective weight
/// for slow start and nginx's weight drop), then sent as [`Event`]s and
/// logged with `tracing`.
///
/// Writes are coalesced: signals update the state machines at once, and a
/// background task on the tokio runtime (started by the first signal or
/// checker inside a runtime) writes every pending change as one new
/// snapshot and then sends the events. Without a runtime, writes happen
/// inline and timed returns (ejection ends, `fail_timeout`, the slow-start
/// ramp) are applied on the next signal.
///
/// **Safety valve:** when fewer than the panic threshold (Envoy's default:
/// 50 %) of the backends that are not under an operator's drain or
/// maintenance are serving, the pool is in panic: the failed backends are
/// kept up in the pool, so traffic spreads over all of them instead of
/// crushing the survivors, while their states stay down. Entering and
/// leaving panic is logged.
///
/// `Supervisor` is a cheap handle; clones share the state. Several
/// checkers and a passive detector of the same pool must share one
/// supervisor (pass clones of it), so that their signals meet in one state
/// machine.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    epoch: Instant,
    book: Mutex<Book>,
    events: broadcast::Sender<Event>,
    wake: Arc<Notify>,
    driver: Mutex<Option<JoinHandle<()>>>,
    next_source: AtomicU64,
    followers: Mutex<Vec<Weak<dyn Follower>>>,
}

/// A party that acts on what other signals did: an active checker marks a
/// passively ejected backend down and probes it fast; a passive detector
/// forgets a backend's failures when active checks bring it back.
pub(crate) trait Follower: Send + Sync {
    /// Whether this follower checks `id` actively.
    fn checks(&self, _id: BackendId) -> bool {
        false
    }

    /// Passive health ejected `id` for `reason`: an active checker marks it
    /// down (HAProxy `on-error mark-down`) and probes it at its fast
    /// interval for `window`, or until `rise` successes bring it back.
    fn mark_down(&self, _id: BackendId, _reason: &Reason, _window: Duration) {}

    /// An active check brought `id` back.
    fn readmitted(&self, _id: BackendId) {}
}

struct Book {
    entries: HashMap<BackendId, Entry>,
    slow_start: Option<SlowStart>,
    panic_threshold: u8,
    panic: bool,
    timers: BinaryHeap<Reverse<(Instant, BackendId)>>,
    dirty: Vec<BackendId>,
    events: Vec<Event>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let book = self.inner.book.lock();
        f.debug_struct("Supervisor")
            .field("tracked", &book.entries.len())
            .field("panic", &book.panic)
            .field("slow_start", &book.slow_start)
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Write what is pending (the last verdicts of a stopped checker),
        // then wake the driver so it sees the supervisor is gone and ends.
        let mut book = self.book.lock();
        self.run(&mut book, Instant::now());
        drop(book);
        self.wake.notify_one();
    }
}

impl From<Pool> for Supervisor {
    fn from(pool: Pool) -> Self {
        Supervisor::new(pool)
    }
}

impl Supervisor {
    /// A supervisor for `pool`, with no slow start and Envoy's panic
    /// threshold (50 %). Inside a tokio runtime it starts its background
    /// writer at once.
    pub fn new(pool: Pool) -> Self {
        let sup = Supervisor {
            inner: Arc::new(Inner {
                pool,
                epoch: Instant::now(),
                book: Mutex::new(Book {
                    entries: HashMap::new(),
                    slow_start: None,
                    panic_threshold: DEFAULT_PANIC_THRESHOLD,
                    panic: false,
                    timers: BinaryHeap::new(),
                    dirty: Vec::new(),
                    events: Vec::new(),
                }),
                events: broadcast::channel(EVENT_BUFFER).0,
                wake: Arc::new(Notify::new()),
                driver: Mutex::new(None),
                next_source: AtomicU64::new(1),
                followers: Mutex::new(Vec::new()),
            }),
        };
        sup.ensure_driver();
        sup
    }

    /// The pool this supervisor writes.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Receive every state change from now on. A receiver that falls more
    /// than 1024 events behind loses the oldest (`RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Ramp the weight of backends that come back (after a failure or
    /// maintenance) over `d`, rounded up to whole seconds; `None` or zero
    /// turns slow start off. See [`SlowStart`].
    pub fn set_slow_start(&self, d: Option<Duration>) {
        let mut book = self.inner.book.lock();
        book.slow_start = d.and_then(SlowStart::new);
    }

    /// The slow-start ramp, if any.
    pub fn slow_start(&self) -> Option<Duration> {
        self.inner.book.lock().slow_start.map(|s| s.duration())
    }

    /// Set the panic threshold in percent (`0` disables the valve; values
    /// above 100 are taken as 100).
    pub fn set_panic_threshold(&self, percent: u8) {
        let mut book = self.inner.book.lock();
        book.panic_threshold = percent.min(100);
        let ids: Vec<BackendId> = book.entries.keys().copied().collect();
        for id in ids {
            mark_dirty(&mut book, id);
        }
        drop(book);
        self.kick();
    }

    /// Whether the pool is in panic (too few backends serving, see above).
    pub fn in_panic(&self) -> bool {
        self.inner.book.lock().panic
    }

    /// The state of a backend: what the state machine holds, or for a
    /// backend no signal has touched yet, what its pool health says.
    pub fn state(&self, id: BackendId) -> Option<State> {
        let snap = self.inner.pool.load();
        let m = snap.get(id)?;
        let book = self.inner.book.lock();
        Some(match book.entries.get(&id) {
            Some(e) => e.state.clone(),
            None => Entry::new(m.name_arc(), m.health()).state,
        })
    }

    /// The states of every backend, in pool order.
    pub fn states(&self) -> Vec<(BackendId, State)> {
        let snap = self.inner.pool.load();
        let book = self.inner.book.lock();
        snap.members()
            .iter()
            .map(|m| {
                let st = match book.entries.get(&m.id()) {
                    Some(e) => e.state.clone(),
                    None => Entry::new(m.name_arc(), m.health()).state,
                };
                (m.id(), st)
            })
            .collect()
    }

    /// Operator: drain the backend (no new traffic; open connections finish).
    pub fn drain(&self, id: BackendId) -> Result<(), HealthError> {
        self.set_admin(id, Admin::Drain)
    }

    /// Operator: put the backend in maintenance (out, whatever the checks say).
    pub fn maintenance(&self, id: BackendId) -> Result<(), HealthError> {
        self.set_admin(id, Admin::Maintenance)
    }

    /// Operator: return the backend to the health checks' verdict.
    pub fn ready(&self, id: BackendId) -> Result<(), HealthError> {
        self.set_admin(id, Admin::Ready)
    }

    fn set_admin(&self, id: BackendId, admin: Admin) -> Result<(), HealthError> {
        let found = self.with_entry(id, Reason::Operator, |e| e.admin = admin);
        found.then_some(()).ok_or(HealthError::UnknownBackend(id))
    }

    // === signals (crate-internal) ===

    pub(crate) fn new_source(&self) -> Source {
        Source(self.inner.next_source.fetch_add(1, Ordering::Relaxed))
    }

    /// Whole seconds since this supervisor's epoch (nginx's `ngx_time()` scale).
    pub(crate) fn seconds(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.inner.epoch).as_secs()
    }

    /// The instant at `secs` whole seconds after the epoch.
    pub(crate) fn at_second(&self, secs: u64) -> Instant {
        self.inner.epoch + Duration::from_secs(secs)
    }

    pub(crate) fn vote_down(
        &self,
        id: BackendId,
        src: Source,
        reason: Reason,
        until: Option<(Instant, Reason)>,
    ) {
        self.with_entry(id, Reason::Withdrawn, |e| e.vote_down(src, reason, until));
    }

    /// An active checker's `rise` successes: its vote goes, and so do the
    /// passive ejections of the backend (active checks drive re-admission,
    /// as in HAProxy); passive detectors forget the backend's failures.
    pub(crate) fn checks_passed(&self, id: BackendId, src: Source, why: Reason) {
        self.with_entry(id, why, |e| e.checks_passed(src));
        for f in self.followers() {
            f.readmitted(id);
        }
    }

    /// A passive detector ejects `id`: a vote that lapses at `until` (as
    /// nginx's `fail_timeout`) unless an active check brings the backend
    /// back first; every active checker of it marks it down and probes it
    /// at its fast interval for `window`.
    pub(crate) fn eject(
        &self,
        id: BackendId,
        src: Source,
        reason: Reason,
        until: Option<(Instant, Reason)>,
        window: Duration,
    ) {
        // The vote first: a check that passes meanwhile then ends it.
        self.with_entry(id, Reason::Withdrawn, |e| {
            e.vote_down_yielding(src, reason.clone(), until)
        });
        for f in self.followers() {
            f.mark_down(id, &reason, window);
        }
    }

    /// Whether an active checker checks `id`.
    pub(crate) fn actively_checked(&self, id: BackendId) -> bool {
        self.inner
            .followers
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .any(|f| f.checks(id))
    }

    /// Tell `f` about ejections and returns from now on (held weakly).
    pub(crate) fn follow(&self, f: Weak<dyn Follower>) {
        let mut fs = self.inner.followers.lock();
        fs.retain(|w| w.strong_count() > 0);
        fs.push(f);
    }

    fn followers(&self) -> Vec<Arc<dyn Follower>> {
        self.inner
            .followers
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Set nginx effective weights (`None`: back at the configured weight).
    pub(crate) fn set_passive_weights(&self, weights: &[(BackendId, Option<u32>)]) {
        if weights.is_empty() {
            return;
        }
        let snap = self.inner.pool.load();
        let mut book = self.inner.book.lock();
        for &(id, w) in weights {
            if let Some(e) = entry(&mut book, &snap, id) {
                e.passive_weight = w;
                mark_dirty(&mut book, id);
            }
        }
        self.settle(&mut book);
    }

    /// Drop every vote of `src` (its checker stopped).
    pub(crate) fn withdraw(&self, src: Source) {
        let mut book = self.inner.book.lock();
        let now = Instant::now();
        let ss = book.slow_start;
        let mut changed = Vec::new();
        for (id, e) in book.entries.iter_mut() {
            if e.vote_up(src) {
                let prev = e.wake;
                changed.push((*id, prev, e.update(now, ss, Reason::Withdrawn)));
            }
        }
        for (id, prev, change) in changed {
            after_update(&mut book, id, prev, change);
        }
        // Written at once: a stopped checker's verdicts are gone when
        // `stop` returns.
        self.inner.run(&mut book, now);
        self.inner.wake.notify_one();
    }

    /// Apply `f` to the backend's entry and fold its state; false when the
    /// backend is not in the pool.
    fn with_entry(&self, id: BackendId, why: Reason, f: impl FnOnce(&mut Entry)) -> bool {
        let snap = self.inner.pool.load();
        let mut book = self.inner.book.lock();
        let now = Instant::now();
        let ss = book.slow_start;
        let Some(e) = entry(&mut book, &snap, id) else {
            return false;
        };
        f(e);
        let prev = e.wake;
        let change = e.update(now, ss, why);
        after_update(&mut book, id, prev, change);
        self.settle(&mut book);
        true
    }

    /// Hand pending work to the driver, or do it now without one.
    fn settle(&self, book: &mut Book) {
        if self.ensure_driver() {
            self.inner.wake.notify_one();
        } else {
            self.inner.run(book, Instant::now());
        }
    }

    fn kick(&self) {
        let mut book = self.inner.book.lock();
        self.settle(&mut book);
    }

    // === driver ===

    /// Start the background writer if a tokio runtime is at hand and it is
    /// not running yet; returns whether it runs.
    pub(crate) fn ensure_driver(&self) -> bool {
        let mut driver = self.inner.driver.lock();
        if driver.as_ref().is_some_and(|h| !h.is_finished()) {
            return true;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let weak = Arc::downgrade(&self.inner);
        let wake = self.inner.wake.clone();
        *driver = Some(rt.spawn(writer::drive(weak, wake)));
        drop(driver);
        self.inner.wake.notify_one();
        true
    }
}

/// Mark the entry for writing, schedule its next wake (unless it was
/// already scheduled for that instant) and queue its event.
fn after_update(
    book: &mut Book,
    id: BackendId,
    prev_wake: Option<Instant>,
    change: Option<Change>,
) {
    mark_dirty(book, id);
    let Some(e) = book.entries.get(&id) else {
        return;
    };
    let (wake, name) = (e.wake, e.name.clone());
    if let Some(t) = wake.filter(|t| Some(*t) != prev_wake) {
        book.timers.push(Reverse((t, id)));
    }
    if let Some((old, new, reason)) = change {
        book.events.push(Event {
            backend: id,
            name,
            old,
            new,
            reason,
        });
    }
}

fn entry<'b>(book: &'b mut Book, snap: &Snapshot, id: BackendId) -> Option<&'b mut Entry> {
    let m = snap.get(id)?;
    Some(
        book.entries
            .entry(id)
            .or_insert_with(|| Entry::new(m.name_arc(), m.health())),
    )
}

fn mark_dirty(book: &mut Book, id: BackendId) {
    if let Some(e) = book.entries.get_mut(&id) {
        if !e.dirty {
            e.dirty = true;
            book.dirty.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::Backend;

    #[tokio::test(start_paused = true)]
    async fn repeated_verdicts_schedule_one_timer() {
        let pool = Pool::new();
        let a = pool
            .add(Backend::new("a", "10.0.0.1:80".parse().unwrap()))
            .unwrap();
        let sup = Supervisor::new(pool.clone());
        let src = sup.new_source();
        let until = Instant::now() + Duration::from_secs(10);
        for _ in 0..100 {
            let reason = Reason::MaxFails {
                fails: 1,
                fail_timeout: Duration::from_secs(10),
            };
            sup.vote_down(a, src, reason, Some((until, Reason::FailTimeoutElapsed)));
        }
        assert_eq!(sup.inner.book.lock().timers.len(), 1);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(sup.inner.book.lock().timers.is_empty());
        assert_eq!(sup.state(a), Some(State::Up));
    }
}
