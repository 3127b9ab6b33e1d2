//! Draining a backend: stop sending it new work, wait for what it has to
//! finish (`ipvsadm -e -w 0` followed by watching `ActiveConn` and
//! `InActConn` fall to zero), and close what is left at the deadline.
//!
//! The closing: every HTTP exchange, upgraded tunnel and TCP connection in
//! flight holds a [`Watch`] on its backend's counters, registered in a
//! small process-wide table (sharded by backend) the first time it waits.
//! At the deadline the drain marks the backend's entries cut and wakes
//! them; each then ends its work as its kind requires. A watch costs one
//! atomic load per wait while no drain cuts anything, and one short lock
//! to register and one to leave.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use lb_core::{BackendId, Counters, Pool, PoolError};
use tokio::time::Instant;

use crate::pick::{BoxError, OutcomeError};

/// How often the counters are looked at while waiting.
const POLL: Duration = Duration::from_millis(20);

/// Shards of the table of watches.
const SHARDS: usize = 16;
/// Backends cut lately, remembered per shard for watches that register
/// after the cut.
const REMEMBERED_CUTS: usize = 32;

/// Cuts made so far (a watch compares before looking closer).
static CUTS: AtomicU64 = AtomicU64::new(0);

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Mutex<Shard> = Mutex::new(Shard {
    slots: Vec::new(),
    free: Vec::new(),
    cuts: Vec::new(),
});
static TABLE: [Mutex<Shard>; SHARDS] = [EMPTY; SHARDS];

#[derive(Debug)]
struct Slot {
    /// The backend's counters, by address (0: a free slot).
    key: usize,
    waker: Option<Waker>,
    cut: bool,
}

#[derive(Debug)]
struct Shard {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// `(key, cut number)` of the last cuts in this shard.
    cuts: Vec<(usize, u64)>,
}

fn shard(key: usize) -> std::sync::MutexGuard<'static, Shard> {
    // Counters are allocations of the same size: skip their alignment bits.
    let i = (key >> 6) % SHARDS;
    TABLE[i].lock().unwrap_or_else(|e| e.into_inner())
}

/// Close the work in flight on the backend of `counters`: how much was
/// found. Work that registers later still sees the cut.
fn cut(counters: &Arc<Counters>) -> usize {
    let key = Arc::as_ptr(counters) as usize;
    let n = CUTS.fetch_add(1, Ordering::SeqCst) + 1;
    let mut wake = Vec::new();
    {
        let mut sh = shard(key);
        if sh.cuts.len() >= REMEMBERED_CUTS {
            sh.cuts.remove(0);
        }
        sh.cuts.push((key, n));
        for slot in sh.slots.iter_mut().filter(|s| s.key == key && !s.cut) {
            slot.cut = true;
            wake.extend(slot.waker.take());
        }
    }
    let found = wake.len();
    wake.into_iter().for_each(Waker::wake);
    found
}

/// Work in flight on one backend that a drain may cut: an HTTP exchange,
/// an upgraded tunnel, a TCP connection. See [the module](self).
#[derive(Debug)]
pub(crate) struct Watch {
    key: usize,
    /// The cut number when the work began: later cuts of its backend apply.
    since: u64,
    /// The cut number when last looked at.
    seen: u64,
    slot: Option<usize>,
    waker: Option<Waker>,
    cut: bool,
}

impl Watch {
    /// Watch for a cut of the backend whose counters these are.
    pub(crate) fn new(counters: &Arc<Counters>) -> Self {
        let now = CUTS.load(Ordering::SeqCst);
        Watch {
            key: Arc::as_ptr(counters) as usize,
            since: now,
            seen: now,
            slot: None,
            waker: None,
            cut: false,
        }
    }

    /// Whether a drain cut this work; if not, wake `cx` when one does.
    /// Call it when the work is about to wait.
    pub(crate) fn poll_cut(&mut self, cx: &mut Context<'_>) -> bool {
        if self.cut {
            return true;
        }
        let now = CUTS.load(Ordering::SeqCst);
        let same_waker = self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if self.slot.is_some() && now == self.seen && same_waker {
            return false;
        }
        self.seen = now;
        let mut sh = shard(self.key);
        let since = self.since;
        let key = self.key;
        let cut_before = sh.cuts.iter().any(|(k, n)| *k == key && *n > since);
        let slot = match self.slot {
            Some(i) => i,
            None => {
                let slot = Slot {
                    key,
                    waker: None,
                    cut: cut_before,
                };
                let i = match sh.free.pop() {
                    Some(i) => {
                        sh.slots[i] = slot;
                        i
                    }
                    None => {
                        sh.slots.push(slot);
                        sh.slots.len() - 1
                    }
                };
                self.slot = Some(i);
                i
            }
        };
        let s = &mut sh.slots[slot];
        if s.cut || cut_before {
            self.cut = true;
            return true;
        }
        if !same_waker {
            self.waker = Some(cx.waker().clone());
        }
        s.waker.clone_from(&self.waker);
        false
    }

    /// Resolves when a drain cuts this work.
    pub(crate) fn cut(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.poll_cut(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut sh = shard(self.key);
            sh.slots[i] = Slot {
                key: 0,
                waker: None,
                cut: false,
            };
            sh.free.push(i);
        }
    }
}

/// The error of an exchange a drain cut: the backend's failure (502), never
/// retried elsewhere by this error alone when the request was sent.
pub(crate) fn cut_error() -> BoxError {
    let msg = "the backend was drained: work left at the deadline closed";
    OutcomeError::new(lb_core::Outcome::Broken, msg).into()
}

pin_project_lite::pin_project! {
    /// A response future whose exchange a drain may cut: the error is then
    /// [`cut_error`]; once the response is there, its body goes on under
    /// the same watch (see [`IdleBody`](crate::http::IdleBody)).
    pub(crate) struct Cuttable<F> {
        #[pin]
        inner: F,
        watch: Option<Watch>,
    }
}

impl<F> Cuttable<F> {
    pub(crate) fn new(inner: F, counters: &Arc<Counters>) -> Self {
        Cuttable {
            inner,
            watch: Some(Watch::new(counters)),
        }
    }
}

impl<F, B> Future for Cuttable<F>
where
    F: Future<Output = Result<http::Response<crate::http::IdleBody<B>>, BoxError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Ready(Ok(mut resp)) => {
                if let Some(w) = this.watch.take() {
                    resp.body_mut().watch(w);
                }
                Poll::Ready(Ok(resp))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.watch.as_mut().is_some_and(|w| w.poll_cut(cx)) {
                    return Poll::Ready(Err(cut_error()));
                }
                Poll::Pending
            }
        }
    }
}

/// What a drain ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drained {
    /// The backend.
    pub backend: BackendId,
    /// Its configured weight before the drain (to restore it later).
    pub previous_weight: u32,
    /// Connections (active and inactive) still open when the drain ended:
    /// 0 when it completed, what the deadline cut short otherwise.
    pub left: u64,
    /// HTTP exchanges, tunnels and TCP connections closed at the deadline
    /// (work of other kinds, such as an inner service of your own, is not
    /// closed and stays counted in `left` until it ends).
    pub closed: usize,
    /// How long the drain took.
    pub waited: Duration,
}

impl Drained {
    /// Whether every connection finished before the deadline.
    pub fn is_complete(&self) -> bool {
        self.left == 0
    }
}

impl fmt::Display for Drained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_complete() {
            write!(f, "backend {} drained in {:?}", self.backend, self.waited)
        } else {
            write!(
                f,
                "backend {} not drained after {:?}: {} connection(s) still open, {} closed",
                self.backend, self.waited, self.left, self.closed
            )
        }
    }
}

/// Drain `backend`: set its weight to 0 at once, clearing any effective
/// weight a slow start had set (quiesce: no scheduler
/// gives it a new connection or request, and persistence templates keep
/// pointing at it as LVS's do for a quiesced server), then wait until its
/// open connections (active + inactive in its
/// [`Counters`](lb_core::Counters)) reach zero, or `deadline` has passed.
///
/// The future resolves as soon as nothing is left (at once if nothing was
/// in flight). At the deadline, what is left is **closed**, as HAProxy's
/// `shutdown sessions server` does:
///
/// - an HTTP request ([`Forward`](crate::http::Forward)) still waiting for
///   its response head fails as the backend's fault: 502 to the client,
///   unless the retry policy sends it to another backend (an idempotent
///   request without a body); one whose response began has its body cut,
///   and the client sees the response end early;
/// - an upgraded (WebSocket) tunnel and a [`TcpProxy`](crate::tcp::TcpProxy)
///   connection are closed on both sides.
///
/// The [`Drained`] says how many connections were open at the deadline
/// (`left`) and how many pieces of work it closed (`closed`); counters
/// then fall as the closed work unwinds. The backend stays at weight 0 and
/// in the pool either way: remove it, or set its weight back to
/// [`Drained::previous_weight`], as you need.
///
/// Counters are looked at every 20 ms.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use lb_core::{Backend, Pool};
/// let pool = Pool::new();
/// let id = pool.add(Backend::new("a", "127.0.0.1:9001".parse()?).with_weight(3))?;
/// let conn = pool.load().get(id).unwrap().connect();   // a request in flight
/// let drain = tokio::spawn(lb_proxy::drain(pool.clone(), id, Duration::from_secs(5)));
/// tokio::time::sleep(Duration::from_millis(50)).await;
/// assert_eq!(pool.load().get(id).unwrap().weight(), 0, "quiesced at once");
/// drop(conn);                                          // the request ends
/// let done = drain.await??;
/// assert!(done.is_complete());
/// assert_eq!(done.previous_weight, 3);
/// # Ok(())
/// # }
/// ```
pub async fn drain(
    pool: Pool,
    backend: BackendId,
    deadline: Duration,
) -> Result<Drained, PoolError> {
    let start = Instant::now();
    let (counters, previous_weight, overridden) = {
        let snap = pool.load();
        let m = snap
            .get(backend)
            .ok_or(PoolError::UnknownBackend(backend))?;
        let overridden = m.weight() != m.configured_weight();
        (m.counters().clone(), m.configured_weight(), overridden)
    };
    pool.batch(|b| {
        b.set_weight(backend, 0)?;
        // An effective weight (slow start) would otherwise keep it busy.
        if overridden {
            b.set_effective_weight(backend, None)?;
        }
        Ok(())
    })?;
    tracing::info!(%backend, ?deadline, "draining");
    let end = start + deadline;
    loop {
        let left = counters.conns();
        let now = Instant::now();
        if left == 0 || now >= end {
            let closed = if left > 0 { cut(&counters) } else { 0 };
            let done = Drained {
                backend,
                previous_weight,
                left,
                closed,
                waited: now - start,
            };
            tracing::info!("{done}");
            return Ok(done);
        }
        tokio::time::sleep(POLL.min(end - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::Backend;

    #[tokio::test(start_paused = true)]
    async fn deadline_reports_what_is_left() {
        let pool = Pool::new();
        let id = pool
            .add(Backend::new("a", "127.0.0.1:1".parse().unwrap()))
            .unwrap();
        let m = pool.load().get(id).unwrap().clone();
        let (_g1, mut g2) = (m.connect(), m.connect());
        g2.idle();
        let d = drain(pool.clone(), id, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(d.left, 2, "active and inactive both count");
        assert!(!d.is_complete());
        assert_eq!(d.waited, Duration::from_secs(2));
        assert_eq!(pool.load().get(id).unwrap().configured_weight(), 0);
        assert!(d.to_string().contains("2 connection(s) still open"), "{d}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_start_weight_does_not_keep_a_drained_backend_busy() {
        let pool = Pool::new();
        let a = Backend::new("a", "127.0.0.1:1".parse().unwrap()).with_weight(5);
        let id = pool.add(a).unwrap();
        pool.set_effective_weight(id, Some(1)).unwrap();
        let d = drain(pool.clone(), id, Duration::ZERO).await.unwrap();
        assert_eq!(d.previous_weight, 5);
        assert_eq!(pool.load().get(id).unwrap().weight(), 0);
        assert!(!pool.load().get(id).unwrap().is_eligible());
    }

    #[tokio::test]
    async fn unknown_backend_is_an_error() {
        let pool = Pool::new();
        let e = drain(pool, BackendId::from_raw(7), Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(e, PoolError::UnknownBackend(BackendId::from_raw(7)));
    }

    #[tokio::test]
    async fn a_cut_reaches_waiting_and_later_watches_of_its_backend_only() {
        use std::task::Waker;
        let (a, b) = (Counters::new(), Counters::new());
        let mut cx = Context::from_waker(Waker::noop());
        let mut waiting = Watch::new(&a);
        let mut late = Watch::new(&a);
        let mut other = Watch::new(&b);
        assert!(!waiting.poll_cut(&mut cx));
        assert!(!other.poll_cut(&mut cx));
        assert_eq!(cut(&a), 1, "one watch was waiting");
        assert!(waiting.poll_cut(&mut cx));
        assert!(
            late.poll_cut(&mut cx),
            "made before the cut, first waiting after"
        );
        assert!(!other.poll_cut(&mut cx), "another backend");
        let after = Watch::new(&a);
        let mut after = after;
        assert!(!after.poll_cut(&mut cx), "work begun after the cut goes on");
        drop((waiting, late, other, after));
        assert_eq!(cut(&a), 0, "dropped watches leave the table");
    }
}
