//! Outcomes of real traffic, reported by forwarders to passive health.

use std::fmt;
use std::time::Duration;

use crate::backend::BackendId;

/// How one request or connection to a backend ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The backend answered (any status the forwarder does not count as a failure).
    Success,
    /// The connection was refused or failed before it was established.
    ConnectFailed,
    /// Connecting, or waiting for the answer, took longer than allowed.
    Timeout,
    /// The connection broke mid-exchange (reset, early close, protocol error).
    Broken,
    /// The backend answered with a status the forwarder counts as a failure
    /// (nginx `proxy_next_upstream http_502` and the like).
    BadStatus(u16),
}

impl Outcome {
    /// Whether this outcome counts as a success.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Success)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success => f.write_str("success"),
            Outcome::ConnectFailed => f.write_str("connect failed"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::Broken => f.write_str("connection broken"),
            Outcome::BadStatus(s) => write!(f, "bad status {s}"),
        }
    }
}

/// Receives the outcome of every request or connection a forwarder made.
///
/// Passive health checkers (nginx `max_fails`, Envoy-style outlier ejection)
/// implement it; forwarders call it once per attempt. It is called on the
/// forwarding path, so implementations must be quick and must not block.
pub trait Observer: Send + Sync + fmt::Debug {
    /// One attempt on `backend` ended with `outcome` after `latency`.
    fn observe(&self, backend: BackendId, outcome: Outcome, latency: Duration);

    /// An attempt on `backend` has waited `waited` for its response head
    /// and is still waiting: an early sign of a hung backend, sent before
    /// the response timeout decides (the attempt's outcome still comes
    /// later through [`observe`](Self::observe)). Forwarders that support
    /// it call it at most once per attempt, when a configured threshold
    /// passes. The default ignores it.
    fn slow(&self, backend: BackendId, waited: Duration) {
        let _ = (backend, waited);
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct IgnoreOutcomes;

impl Observer for IgnoreOutcomes {
    fn observe(&self, _: BackendId, _: Outcome, _: Duration) {}
}

/// Hands every outcome to several observers in turn (passive health and a
/// latency-aware scheduler, say).
#[derive(Debug, Clone, Default)]
pub struct FanOut(Vec<std::sync::Arc<dyn Observer>>);

impl FanOut {
    /// No observer yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an observer.
    pub fn with(mut self, observer: std::sync::Arc<dyn Observer>) -> Self {
        self.0.push(observer);
        self
    }
}

impl Observer for FanOut {
    fn observe(&self, backend: BackendId, outcome: Outcome, latency: Duration) {
        for o in &self.0 {
            o.observe(backend, outcome, latency);
        }
    }

    fn slow(&self, backend: BackendId, waited: Duration) {
        for o in &self.0 {
            o.slow(backend, waited);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[derive(Debug, Default)]
    struct Count(AtomicU32);

    impl Observer for Count {
        fn observe(&self, _: BackendId, o: Outcome, _: Duration) {
            if !o.is_success() {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }

        fn slow(&self, _: BackendId, _: Duration) {
            self.0.fetch_add(100, Ordering::Relaxed);
        }
    }

    #[test]
    fn fan_out_reaches_every_observer() {
        let (a, b) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let fan = FanOut::new().with(a.clone()).with(b.clone());
        fan.observe(BackendId::from_raw(0), Outcome::Timeout, Duration::ZERO);
        fan.observe(BackendId::from_raw(0), Outcome::Success, Duration::ZERO);
        assert_eq!(
            (a.0.load(Ordering::Relaxed), b.0.load(Ordering::Relaxed)),
            (1, 1)
        );
        fan.slow(BackendId::from_raw(0), Duration::from_secs(1));
        IgnoreOutcomes.slow(BackendId::from_raw(0), Duration::from_secs(1));
        assert_eq!(
            (a.0.load(Ordering::Relaxed), b.0.load(Ordering::Relaxed)),
            (101, 101),
            "slow signals reach every observer too"
        );
    }
}
