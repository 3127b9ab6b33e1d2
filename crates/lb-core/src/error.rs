//! Error types of the pool model.

use std::fmt;

use crate::BackendId;

/// A write to a [`Pool`](crate::Pool) that was refused.
///
/// Every variant says what was wrong in words a person understands; the pool
/// is left exactly as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// A backend with this name is already in the pool (names identify backends).
    DuplicateName(String),
    /// No backend with this id is in the pool (it was never added, or was removed).
    UnknownBackend(BackendId),
    /// A weight outside `0..=65535`.
    BadWeight {
        /// The backend's name.
        name: String,
        /// The weight that was asked for.
        weight: u64,
    },
    /// A connection limit outside `0..=65535`.
    BadMaxConns {
        /// The backend's name.
        name: String,
        /// The limit that was asked for.
        max_conns: u64,
    },
    /// An empty backend name.
    EmptyName,
    /// The pool holds `u32::MAX` backends ever added; ids are exhausted.
    TooManyBackends,
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::DuplicateName(n) => {
                write!(f, "a backend named {n:?} is already in the pool")
            }
            PoolError::UnknownBackend(id) => write!(f, "no backend {id} in the pool"),
            PoolError::BadWeight { name, weight } => write!(
                f,
                "weight {weight} for backend {name:?} is out of range (0..=65535; 0 quiesces)"
            ),
            PoolError::BadMaxConns { name, max_conns } => write!(
                f,
                "max_conns {max_conns} for backend {name:?} is out of range (0..=65535; 0 = no limit)"
            ),
            PoolError::EmptyName => f.write_str("a backend needs a non-empty name"),
            PoolError::TooManyBackends => f.write_str("the pool has run out of backend ids"),
        }
    }
}

impl std::error::Error for PoolError {}

/// No backend is eligible for this pick: all are down, quiesced (weight 0),
/// at their connection limit, or already tried.
///
/// Callers map it to their protocol's answer: HTTP 503, a TCP reset, a
/// dropped and counted packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoBackend;

impl fmt::Display for NoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no backend available: every backend is down, quiesced, full or already tried")
    }
}

impl std::error::Error for NoBackend {}
