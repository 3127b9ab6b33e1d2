//! The typed states of a backend, why they change, and the events that say so.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{BackendId, Health};

/// Where a backend stands, as the [`Supervisor`](crate::Supervisor) sees it
/// after weighing every signal (active checks, passive checks, outlier
/// ejection, operator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Serving at its full weight.
    Up,
    /// Serving, while its weight ramps up after a return (`progress` in
    /// percent of the slow-start time).
    SlowStart {
        /// How far the ramp is, `0..=99` percent.
        progress: u8,
    },
    /// Failed: no new traffic (unless the pool is in panic, see
    /// [`Supervisor::set_panic_threshold`](crate::Supervisor::set_panic_threshold)).
    Down {
        /// The signal that put it down.
        reason: Reason,
    },
    /// Taken out by an operator while its connections finish.
    Draining,
    /// Taken out by an operator: no traffic at all, whatever the checks say.
    Maintenance,
}

impl State {
    /// Whether the backend takes new traffic in this state.
    pub fn is_serving(&self) -> bool {
        matches!(self, State::Up | State::SlowStart { .. })
    }

    /// Whether the health logic (not an operator) holds it down.
    pub fn is_failed(&self) -> bool {
        matches!(self, State::Down { .. })
    }

    /// The pool health this state maps to outside panic mode.
    pub fn health(&self) -> Health {
        match self {
            State::Up | State::SlowStart { .. } => Health::Up,
            State::Down { .. } | State::Maintenance => Health::Down,
            State::Draining => Health::Draining,
        }
    }

    /// A short word for logs: `up`, `slow-start`, `down`, `draining`, `maintenance`.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Up => "up",
            State::SlowStart { .. } => "slow-start",
            State::Down { .. } => "down",
            State::Draining => "draining",
            State::Maintenance => "maintenance",
        }
    }

    pub(crate) fn same_kind(&self, other: &State) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::SlowStart { progress } => write!(f, "slow-start ({progress}%)"),
            State::Down { reason } => write!(f, "down ({reason})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Why a backend's state changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// An active check failed `fall` times in a row.
    CheckFailed {
        /// The check's name (`tcp`, `http`, `command`, or a custom name).
        check: Arc<str>,
        /// What the last failure said.
        detail: Arc<str>,
    },
    /// An active check passed `rise` times in a row.
    CheckPassed {
        /// The check's name.
        check: Arc<str>,
    },
    /// nginx passive check: `fails` failures within `fail_timeout`
    /// ("temporarily disabled").
    MaxFails {
        /// Failures counted.
        fails: u32,
        /// The window, and how long the backend stays out after its last failure.
        fail_timeout: Duration,
    },
    /// nginx passive check: `fail_timeout` has passed since the last
    /// failure, so traffic may probe the backend again.
    FailTimeoutElapsed,
    /// Outlier detection: consecutive failures ejected the backend.
    Ejected {
        /// The consecutive failures that triggered it.
        consecutive: u32,
        /// How many times it has been ejected (the multiplier of the base time).
        ejections: u32,
        /// How long it stays out.
        duration: Duration,
    },
    /// Outlier detection: the ejection time is over.
    EjectionEnded,
    /// Passive check: a request waited this long for its response head
    /// (see [`Observer::slow`](lb_core::Observer::slow)); the backend is
    /// held out until active checks pass `rise` times.
    SlowResponse {
        /// How long the request had waited.
        waited: Duration,
    },
    /// The slow-start ramp is complete.
    SlowStartDone,
    /// An operator drained, put in maintenance, or readied the backend.
    Operator,
    /// The signal that held the backend down went away (its checker stopped).
    Withdrawn,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::CheckFailed { check, detail } => write!(f, "{check} check failed: {detail}"),
            Reason::CheckPassed { check } => write!(f, "{check} check passed"),
            Reason::MaxFails {
                fails,
                fail_timeout,
            } => write!(
                f,
                "{fails} failures within fail_timeout {}s",
                fail_timeout.as_secs()
            ),
            Reason::FailTimeoutElapsed => f.write_str("fail_timeout elapsed"),
            Reason::Ejected {
                consecutive,
                ejections,
                duration,
            } => write!(
                f,
                "ejected after {consecutive} consecutive failures for {}s (ejection #{ejections})",
                duration.as_secs_f64()
            ),
            Reason::EjectionEnded => f.write_str("ejection time over"),
            Reason::SlowResponse { waited } => {
                write!(f, "no response head after {}ms", waited.as_millis())
            }
            Reason::SlowStartDone => f.write_str("slow start complete"),
            Reason::Operator => f.write_str("operator"),
            Reason::Withdrawn => f.write_str("signal withdrawn"),
        }
    }
}

/// A change of a backend's state, sent to every
/// [`events`](crate::Supervisor::events) receiver after the pool has been
/// written.
///
/// Events are sent when the kind of state changes (up, slow start, down,
/// draining, maintenance); the progress of a slow start and a change of the
/// reason a backend is down are not events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The backend.
    pub backend: BackendId,
    /// Its name.
    pub name: Arc<str>,
    /// The state before.
    pub old: State,
    /// The state now.
    pub new: State,
    /// Why it changed.
    pub reason: Reason,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} -> {} ({})",
            self.name,
            self.backend,
            self.old.as_str(),
            self.new.as_str(),
            self.reason
        )
    }
}

/// An operator's setting for a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Admin {
    /// Follow the health checks.
    #[default]
    Ready,
    /// Draining: no new traffic, open connections finish.
    Drain,
    /// Maintenance: out, whatever the checks say.
    Maintenance,
}
