//! Errors of building a scheduler.

use std::fmt;

/// A scheduler could not be built from a name, flags and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchedError {
    /// No scheduler has this name.
    UnknownScheduler {
        /// The name given.
        name: String,
    },
    /// The scheduler takes no such flag or parameter.
    UnknownOption {
        /// The scheduler.
        sched: &'static str,
        /// The flag or `key=value` given.
        option: String,
        /// What it does take.
        accepted: &'static str,
    },
    /// The same flag or parameter twice.
    Repeated {
        /// The scheduler.
        sched: &'static str,
        /// The option.
        option: String,
    },
    /// A parameter with a bad value.
    BadValue {
        /// The scheduler.
        sched: &'static str,
        /// The parameter.
        key: &'static str,
        /// The value given.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The scheduler cannot honour a pool feature in use (nginx `backup`,
    /// `max_conns`).
    Unsupported {
        /// The scheduler.
        sched: &'static str,
        /// The feature.
        feature: &'static str,
        /// The schedulers that allow it.
        allowed_with: &'static str,
    },
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedError::UnknownScheduler { name } => write!(
                f,
                "unknown scheduler {name:?} (known: {})",
                crate::registry::NAMES.join(", ")
            ),
            SchedError::UnknownOption {
                sched,
                option,
                accepted,
            } => write!(
                f,
                "scheduler {sched} takes no option {option:?} (it takes: {accepted})"
            ),
            SchedError::Repeated { sched, option } => {
                write!(f, "option {option:?} of scheduler {sched} given twice")
            }
            SchedError::BadValue {
                sched,
                key,
                value,
                expected,
            } => write!(
                f,
                "{sched}: {key}={value:?} is invalid: expected {expected}"
            ),
            SchedError::Unsupported {
                sched,
                feature,
                allowed_with,
            } => write!(
                f,
                "scheduler {sched} does not support {feature} (allowed only with {allowed_with})"
            ),
        }
    }
}

impl std::error::Error for SchedError {}
