//! When a failed attempt goes on to the next backend: nginx's
//! `proxy_next_upstream`, `proxy_next_upstream_tries` and
//! `proxy_next_upstream_timeout` (`ngx_http_upstream.c`,
//! `ngx_http_upstream_next`).

use std::fmt;
use std::time::Duration;

use http::{Method, StatusCode};
use lb_core::Outcome;

/// The most attempts one request can make (the size of its fixed,
/// allocation-free `tried` set).
pub const MAX_TRIES: usize = 16;

/// The statuses a retry can be asked for, as nginx's `http_NNN` options.
pub const RETRYABLE_STATUSES: [u16; 7] = [403, 404, 429, 500, 502, 503, 504];

/// When a request is tried again on another backend.
///
/// A request is retried after a connection error, a broken exchange or a
/// timeout (nginx's `error timeout`, the default), or after a response with
/// one of the [`on_status`](Retry::on_status) statuses, if all of these hold:
///
/// - its body is empty, so it can be sent again as it was;
/// - its method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, RFC
///   9110 section 9.2.2), or the attempt failed while connecting (refused,
///   unreachable, connect timeout), so the backend never saw it (nginx sends
///   a POST again only in that case too);
/// - fewer than [`tries`](Retry::tries) attempts were made, and the first
///   began less than [`timeout`](Retry::timeout) ago;
/// - another backend is eligible and not yet tried by this request.
///
/// When the last attempt fails, its error is the answer (503 when it could
/// not connect, 504 after a response timeout, else 502); a response with a retryable status is passed to the client.
/// Failures are reported to the observer as they happen; 403 and 404
/// responses are retried if asked but never count as failures (as nginx).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    tries: u8,
    timeout: Option<Duration>,
    statuses: u8,
    on_error: bool,
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let statuses: Vec<u16> = self.statuses().collect();
        f.debug_struct("Retry")
            .field("tries", &self.tries)
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .field("on_status", &statuses)
            .finish()
    }
}

impl Default for Retry {
    /// Up to 3 attempts after errors and timeouts, no time limit, no status.
    fn default() -> Self {
        Retry {
            tries: 3,
            timeout: None,
            statuses: 0,
            on_error: true,
        }
    }
}

impl Retry {
    /// Never retry (nginx `proxy_next_upstream off`).
    pub fn never() -> Self {
        Retry {
            tries: 1,
            ..Retry::default()
        }
    }

    /// At most `tries` attempts per request, the first included (clamped to
    /// `1..=MAX_TRIES`).
    pub fn tries(mut self, tries: usize) -> Self {
        self.tries = tries.clamp(1, MAX_TRIES) as u8;
        self
    }

    /// Start no retry once this long has passed since the first attempt
    /// (nginx `proxy_next_upstream_timeout`).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Whether errors and timeouts are retried (default true).
    pub fn on_error(mut self, yes: bool) -> Self {
        self.on_error = yes;
        self
    }

    /// Also retry after responses with these statuses (each one of
    /// [`RETRYABLE_STATUSES`]; others are refused with an error naming it).
    pub fn on_status(mut self, statuses: &[u16]) -> Result<Self, String> {
        self.statuses = 0;
        for s in statuses {
            let bit = RETRYABLE_STATUSES
                .iter()
                .position(|r| r == s)
                .ok_or_else(|| {
                    format!("status {s} cannot be retried (allowed: {RETRYABLE_STATUSES:?})")
                })?;
            self.statuses |= 1 << bit;
        }
        Ok(self)
    }

    /// The attempt limit.
    pub fn max_tries(&self) -> usize {
        usize::from(self.tries)
    }

    /// The time limit, if any.
    pub fn time_limit(&self) -> Option<Duration> {
        self.timeout
    }

    /// The statuses that are retried.
    pub fn statuses(&self) -> impl Iterator<Item = u16> + '_ {
        RETRYABLE_STATUSES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.statuses & (1 << i) != 0)
            .map(|(_, s)| *s)
    }

    /// Whether a response with `status` is retried.
    pub fn retries_status(&self, status: StatusCode) -> bool {
        self.statuses != 0
            && RETRYABLE_STATUSES
                .iter()
                .position(|r| *r == status.as_u16())
                .is_some_and(|bit| self.statuses & (1 << bit) != 0)
    }

    /// Whether a failed attempt with `outcome` may be retried for a request
    /// with this method (the body and limits are checked elsewhere).
    /// `sent` tells whether the request may have reached the backend (a
    /// failure to connect, or a connect timeout, means it did not).
    pub(crate) fn retries_outcome(&self, outcome: Outcome, sent: bool, method: &Method) -> bool {
        if !self.on_error || outcome.is_success() {
            return false;
        }
        !sent || is_idempotent(method)
    }
}

/// Whether a response status counts as a failure when it is retried
/// (nginx never counts 403 and 404 against a backend).
pub(crate) fn status_is_failure(status: StatusCode) -> bool {
    status != StatusCode::FORBIDDEN && status != StatusCode::NOT_FOUND
}

/// RFC 9110 section 9.2.2: the methods whose repetition has no further effect.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_unknown_ones_are_refused() {
        let r = Retry::default().on_status(&[502, 504]).unwrap();
        assert_eq!(r.statuses().collect::<Vec<_>>(), vec![502, 504]);
        assert!(r.retries_status(StatusCode::BAD_GATEWAY));
        assert!(!r.retries_status(StatusCode::SERVICE_UNAVAILABLE));
        let e = Retry::default().on_status(&[501]).unwrap_err();
        assert!(e.contains("501"), "{e}");
    }

    #[test]
    fn post_is_retried_only_when_never_sent() {
        let r = Retry::default();
        assert!(r.retries_outcome(Outcome::ConnectFailed, false, &Method::POST));
        assert!(
            r.retries_outcome(Outcome::Timeout, false, &Method::POST),
            "connect timeout"
        );
        assert!(!r.retries_outcome(Outcome::Timeout, true, &Method::POST));
        assert!(r.retries_outcome(Outcome::Timeout, true, &Method::GET));
        let off = Retry::default().on_error(false);
        assert!(!off.retries_outcome(Outcome::ConnectFailed, false, &Method::GET));
        assert_eq!(Retry::never().max_tries(), 1);
        assert_eq!(Retry::default().tries(99).max_tries(), MAX_TRIES);
    }
}
