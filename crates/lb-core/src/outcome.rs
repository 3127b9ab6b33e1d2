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
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct IgnoreOutcomes;

impl Observer for IgnoreOutcomes {
    fn observe(&self, _: BackendId, _: Outcome, _: Duration) {}
}
