//! Draining a backend: stop sending it new work, then wait for what it has
//! to finish (`ipvsadm -e -w 0` followed by watching `ActiveConn` and
//! `InActConn` fall to zero).

use std::fmt;
use std::time::Duration;

use lb_core::{BackendId, Pool, PoolError};
use tokio::time::Instant;

/// How often the counters are looked at while waiting.
const POLL: Duration = Duration::from_millis(20);

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
                "backend {} not drained after {:?}: {} connection(s) still open",
                self.backend, self.waited, self.left
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
/// What happens at the deadline, precisely: the future resolves with a
/// [`Drained`] whose `left` says how many connections are still open. They
/// are **not** cut: with the HTTP proxy, requests in flight go on to their
/// end (a stalled backend is bounded by the forwarder's idle timeout, an
/// upgraded WebSocket tunnel lasts until a side closes it); with the TCP
/// proxy, connections go on until a side closes. The backend stays at
/// weight 0 and in the pool either way: remove it, or set its weight back
/// to [`Drained::previous_weight`], as you need.
///
/// Counters are looked at every 20 ms; the drain never holds a lock.
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
            let done = Drained {
                backend,
                previous_weight,
                left,
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
}
