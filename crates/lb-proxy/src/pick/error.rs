//! Errors of the balancing service and how they are classified.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;

use http::StatusCode;
use lb_core::Outcome;

/// A boxed error, as tower passes them around.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a balanced request got no response.
///
/// Callers map it to an answer with [`status`](Error::status): 503 when no
/// backend was eligible or the last one tried could not be connected to
/// (refused, unreachable, connect timeout: nothing was sent, as HAProxy
/// answers when it cannot connect to any server), 504 when the last
/// backend tried took too long to answer, 400 when the client's own body
/// failed, 502 otherwise (an invalid or broken response).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No backend was eligible for the first pick: all are down, quiesced,
    /// full, or the pool is empty.
    NoBackend,
    /// The last backend tried failed, and no retry was possible.
    Backend {
        /// The backend's name.
        backend: Arc<str>,
        /// How the attempt ended.
        outcome: Outcome,
        /// The inner service's error.
        source: BoxError,
    },
    /// The inner service failed to become ready (a tower readiness error,
    /// not tied to a backend).
    Service(BoxError),
    /// The client's request body failed (cut short, or found malformed)
    /// while it was being sent: not the backend's doing, so neither
    /// reported to the observer nor retried.
    Client(BoxError),
}

impl Error {
    /// The HTTP status a proxy answers with: see [`Error`].
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            Error::Backend {
                outcome, source, ..
            } => match (outcome, classify_sent(&**source)) {
                (Outcome::ConnectFailed, _) | (Outcome::Timeout, (_, false)) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                (Outcome::Timeout, _) => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            },
            Error::Client(_) => StatusCode::BAD_REQUEST,
            Error::Service(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The outcome of the last attempt, if a backend was tried.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Error::Backend { outcome, .. } => Some(*outcome),
            _ => None,
        }
    }

    /// Whether no backend was eligible.
    pub fn is_no_backend(&self) -> bool {
        matches!(self, Error::NoBackend)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoBackend => fmt::Display::fmt(&lb_core::NoBackend, f),
            Error::Backend {
                backend,
                outcome,
                source,
            } => write!(f, "backend {backend}: {outcome}: {source}"),
            Error::Service(e) => write!(f, "service not ready: {e}"),
            Error::Client(e) => write!(f, "the client's request body failed: {e}"),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::NoBackend => None,
            Error::Backend { source, .. } | Error::Service(source) | Error::Client(source) => {
                Some(&**source)
            }
        }
    }
}

/// An error that knows the [`Outcome`] it stands for. Inner services of
/// [`Balance`](crate::Balance) return it (or wrap it anywhere in their
/// error's `source()` chain) to classify their failures exactly.
#[derive(Debug)]
pub struct OutcomeError {
    outcome: Outcome,
    sent: bool,
    source: BoxError,
}

impl OutcomeError {
    /// An error for `outcome`, caused by `source`, after the request may
    /// have reached the backend.
    pub fn new(outcome: Outcome, source: impl Into<BoxError>) -> Self {
        OutcomeError {
            outcome,
            sent: true,
            source: source.into(),
        }
    }

    /// An error for `outcome` before anything was sent to the backend (it
    /// could not be reached): such requests may be sent elsewhere whatever
    /// their method.
    pub fn unsent(outcome: Outcome, source: impl Into<BoxError>) -> Self {
        OutcomeError {
            outcome,
            sent: false,
            source: source.into(),
        }
    }

    /// Whether the request may have reached the backend.
    pub fn was_sent(&self) -> bool {
        self.sent
    }

    /// The outcome.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }
}

impl fmt::Display for OutcomeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.outcome, self.source)
    }
}

impl StdError for OutcomeError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// How an attempt's error counts for passive health and retries.
///
/// Walks the error's `source()` chain: an [`OutcomeError`] decides; an
/// [`io::Error`] of kind `TimedOut` or a tokio timeout is
/// [`Outcome::Timeout`]; a refused, reset-before-connect or unreachable
/// [`io::Error`] or a hyper-util connect error is [`Outcome::ConnectFailed`];
/// anything else is [`Outcome::Broken`].
pub fn classify(err: &(dyn StdError + 'static)) -> Outcome {
    classify_sent(err).0
}

/// [`classify`], and whether the request may have reached the backend
/// (false for connect errors, connect timeouts included).
pub(crate) fn classify_sent(err: &(dyn StdError + 'static)) -> (Outcome, bool) {
    let mut connect = false;
    let mut timeout = false;
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(o) = e.downcast_ref::<OutcomeError>() {
            return (o.outcome(), o.was_sent());
        }
        timeout |= e.is::<tokio::time::error::Elapsed>();
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::TimedOut => timeout = true,
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable => connect = true,
                _ => {}
            }
        }
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= h.is_connect();
        }
        cur = e.source();
    }
    match (timeout, connect) {
        (true, c) => (Outcome::Timeout, !c),
        (false, true) => (Outcome::ConnectFailed, false),
        (false, false) => (Outcome::Broken, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_walks_the_chain() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(classify(&refused), Outcome::ConnectFailed);
        let timed = OutcomeError::new(Outcome::Broken, io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(classify(&timed), Outcome::Broken, "an OutcomeError decides");
        let wrapped = Error::Service(Box::new(io::Error::from(io::ErrorKind::TimedOut)));
        assert_eq!(classify(&wrapped), Outcome::Timeout);
        let other = io::Error::other("boom");
        assert_eq!(classify(&other), Outcome::Broken);
    }

    #[test]
    fn statuses_follow_haproxy() {
        assert_eq!(Error::NoBackend.status(), 503);
        let e = |outcome, source: OutcomeError| Error::Backend {
            backend: "a".into(),
            outcome,
            source: source.into(),
        };
        let sent = |o| e(o, OutcomeError::new(o, "x"));
        let unsent = |o| e(o, OutcomeError::unsent(o, "x"));
        assert_eq!(sent(Outcome::Timeout).status(), 504, "no response head");
        assert_eq!(unsent(Outcome::Timeout).status(), 503, "connect timeout");
        assert_eq!(unsent(Outcome::ConnectFailed).status(), 503, "refused");
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let plain = Error::Backend {
            backend: "a".into(),
            outcome: Outcome::ConnectFailed,
            source: refused.into(),
        };
        assert_eq!(plain.status(), 503);
        assert_eq!(sent(Outcome::Broken).status(), 502);
        assert_eq!(
            unsent(Outcome::Broken).status(),
            502,
            "a request never sent"
        );
        assert_eq!(sent(Outcome::BadStatus(500)).status(), 502);
        assert_eq!(Error::Client("cut".into()).status(), 400);
        assert_eq!(Error::Service("x".into()).status(), 502);
    }
}
