//! The prober: one probe task per `(address, check)`, shared by every pool
//! that checks that address, under a bound on concurrent checks.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::check::{CheckError, Checker, FailureKind, Target};

/// The default bound on checks in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 512;

/// Runs active checks: one probe per `(address, check key)` however many
/// pools (checkers) ask for it, and at most a bounded number of checks at
/// once.
///
/// Each probe is a tokio task that sleeps until the earliest of its
/// subscribers is due, takes a permit, runs the check under the largest of
/// their timeouts, and hands the result to each subscriber that was due
/// (each judging the elapsed time against its own timeout and counting
/// its own rise and fall). A slow or hanging backend holds one permit for
/// at most its timeout and never delays another backend's probe beyond
/// the wait for a permit.
///
/// Every [`HealthChecker`](crate::HealthChecker) gets a prober of its own
/// unless it is given one with [`prober`](crate::HealthChecker::prober):
/// share one between checkers of different pools to probe a shared backend
/// once. Checks are shared when their [`Checker::key`] is equal.
#[derive(Clone)]
pub struct Prober {
    inner: Arc<Inner>,
}

struct Inner {
    probes: Mutex<HashMap<ProbeKey, Arc<Probe>>>,
    permits: Arc<Semaphore>,
    limit: usize,
    next_id: AtomicU64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ProbeKey {
    Shared(SocketAddr, String),
    Unique(u64),
}

struct Probe {
    target: Target,
    check: Arc<dyn Checker>,
    subs: Mutex<Vec<Slot>>,
    changed: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Slot {
    id: u64,
    due: Instant,
    sub: Box<dyn Subscriber>,
}

/// One interested party of a probe: counts results and sets its own pace.
pub(crate) trait Subscriber: Send {
    /// This subscriber's timeout.
    fn timeout(&self) -> Duration;
    /// Take one result; return the delay until this subscriber's next check.
    fn feed(&mut self, result: &Result<(), CheckError>) -> Duration;
    /// Something outside asked for an earlier check (a passive ejection):
    /// the delay from now until it, once per request.
    fn nudged(&mut self) -> Option<Duration> {
        None
    }
}

/// Keeps a subscriber on its probe; dropping it unsubscribes (and ends the
/// probe when it was the last).
pub(crate) struct Subscription {
    prober: Prober,
    key: ProbeKey,
    id: u64,
}

impl fmt::Debug for Prober {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prober")
            .field("probes", &self.inner.probes.lock().len())
            .field("concurrency", &self.inner.limit)
            .finish()
    }
}

impl Default for Prober {
    fn default() -> Self {
        Self::new(DEFAULT_CONCURRENCY)
    }
}

impl Prober {
    /// A prober running at most `concurrency` checks at once (at least 1).
    pub fn new(concurrency: usize) -> Self {
        let limit = concurrency.clamp(1, Semaphore::MAX_PERMITS);
        Prober {
            inner: Arc::new(Inner {
                probes: Mutex::new(HashMap::new()),
                permits: Arc::new(Semaphore::new(limit)),
                limit,
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// How many probes are running (distinct `(address, check)` pairs).
    pub fn probes(&self) -> usize {
        self.inner.probes.lock().len()
    }

    /// Subscribe to the probe of `check` on `target`, first due at `due`.
    /// Must be called inside a tokio runtime.
    pub(crate) fn subscribe(
        &self,
        target: Target,
        check: Arc<dyn Checker>,
        due: Instant,
        sub: Box<dyn Subscriber>,
    ) -> Subscription {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let key = match check.key() {
            Some(k) => ProbeKey::Shared(target.addr(), k),
            None => ProbeKey::Unique(id),
        };
        let mut probes = self.inner.probes.lock();
        let probe = probes
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Probe {
                    target,
                    check,
                    subs: Mutex::new(Vec::new()),
                    changed: Notify::new(),
                    task: Mutex::new(None),
                })
            })
            .clone();
        probe.subs.lock().push(Slot { id, due, sub });
        let mut task = probe.task.lock();
        if task.is_none() {
            *task = Some(tokio::spawn(run(probe.clone(), self.inner.permits.clone())));
        } else {
            probe.changed.notify_one();
        }
        drop(task);
        drop(probes);
        Subscription {
            prober: self.clone(),
            key,
            id,
        }
    }

    fn unsubscribe(&self, key: &ProbeKey, id: u64) {
        let mut probes = self.inner.probes.lock();
        let Some(probe) = probes.get(key) else { return };
        let mut subs = probe.subs.lock();
        subs.retain(|s| s.id != id);
        if subs.is_empty() {
            drop(subs);
            if let Some(task) = probe.task.lock().take() {
                task.abort();
            }
            probes.remove(key);
        }
    }
}

impl Subscription {
    /// Wake the probe so it asks its subscribers for
    /// [`nudged`](Subscriber::nudged) checks at once.
    pub(crate) fn wake(&self) {
        if let Some(probe) = self.prober.inner.probes.lock().get(&self.key) {
            probe.changed.notify_one();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.prober.unsubscribe(&self.key, self.id);
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("key", &self.key)
            .finish()
    }
}

/// One probe's loop.
async fn run(probe: Arc<Probe>, permits: Arc<Semaphore>) {
    loop {
        let due = {
            let now = Instant::now();
            let mut subs = probe.subs.lock();
            for s in subs.iter_mut() {
                if let Some(d) = s.sub.nudged() {
                    s.due = s.due.min(now + d);
                }
            }
            subs.iter().map(|s| s.due).min()
        };
        let Some(due) = due else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = probe.changed.notified() => continue,
        }
        let Ok(permit) = permits.acquire().await else {
            return;
        };
        let timeout = probe
            .subs
            .lock()
            .iter()
            .filter(|s| s.due <= due)
            .map(|s| s.sub.timeout())
            .max()
            .unwrap_or(Duration::ZERO);
        let target = probe.target.clone().with_due(due);
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, probe.check.check(&target)).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(timeout)),
        };
        let elapsed = started.elapsed();
        drop(permit);
        let now = Instant::now();
        for slot in probe.subs.lock().iter_mut().filter(|s| s.due <= due) {
            let mine = match &result {
                Ok(()) if elapsed > slot.sub.timeout() => Err(timed_out(slot.sub.timeout())),
                r => r.clone(),
            };
            let delay = slot.sub.feed(&mine);
            slot.due = (slot.due + delay).max(now);
        }
    }
}

fn timed_out(timeout: Duration) -> CheckError {
    CheckError::new(
        FailureKind::Timeout,
        format!("no answer within {}ms", timeout.as_millis()),
    )
}
