//! Errors of the health-checking API.

use std::fmt;

use lb_core::BackendId;

/// A health-checking request that could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthError {
    /// Checkers run on tokio: `spawn` was called outside a tokio runtime.
    NoRuntime,
    /// No backend with this id is in the pool.
    UnknownBackend(BackendId),
}

impl fmt::Display for HealthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthError::NoRuntime => f.write_str(
                "health checkers run on tokio: call spawn() from inside a tokio runtime",
            ),
            HealthError::UnknownBackend(id) => write!(f, "no backend {id} in the pool"),
        }
    }
}

impl std::error::Error for HealthError {}
