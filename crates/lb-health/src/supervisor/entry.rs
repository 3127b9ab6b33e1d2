//! One backend's state machine: the votes of every signal, the operator's
//! setting and the slow-start ramp, folded into one [`State`].

use std::sync::Arc;
use std::time::Duration;

use lb_core::Health;
use tokio::time::Instant;

use crate::slow_start::SlowStart;
use crate::state::{Admin, Reason, State};

/// Who cast a vote: one id per checker, per passive detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Source(pub(crate) u64);

/// A signal's verdict that the backend is failed, until it is withdrawn or
/// (when `until` is set) until that instant.
#[derive(Clone, Debug)]
struct Vote {
    source: Source,
    reason: Reason,
    until: Option<Instant>,
    /// The reason given when the vote expires.
    expiry: Reason,
    /// A passive ejection that active checks may end: it goes when an
    /// active check brings the backend back (`rise` successes), whatever
    /// `until` says.
    yields: bool,
}

/// A state change worth an event: old, new, why.
pub(crate) type Change = (State, State, Reason);

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: Arc<str>,
    pub(crate) admin: Admin,
    votes: Vec<Vote>,
    ramp_from: Option<Instant>,
    /// The nginx effective weight while below the configured weight.
    pub(crate) passive_weight: Option<u32>,
    pub(crate) state: State,
    /// When this entry next needs a look (a vote expires, the ramp moves).
    pub(crate) wake: Option<Instant>,
    pub(crate) dirty: bool,
}

impl Entry {
    /// A backend first seen with `health` in the pool: up stays up (no slow
    /// start at start-up), draining is an operator's drain, and a backend
    /// added down is in maintenance until an operator readies it (as an
    /// HAProxy server that starts `disabled`).
    pub(crate) fn new(name: Arc<str>, health: Health) -> Self {
        let (admin, state) = match health {
            Health::Up => (Admin::Ready, State::Up),
            Health::Draining => (Admin::Drain, State::Draining),
            Health::Down => (Admin::Maintenance, State::Maintenance),
        };
        Entry {
            name,
            admin,
            votes: Vec::new(),
            ramp_from: None,
            passive_weight: None,
            state,
            wake: None,
            dirty: false,
        }
    }

    /// Record `source`'s verdict that the backend is failed (replacing its
    /// previous one); it lapses at `until` with the reason `expiry`.
    pub(crate) fn vote_down(
        &mut self,
        source: Source,
        reason: Reason,
        until: Option<(Instant, Reason)>,
    ) {
        self.push_vote(source, reason, until, false);
    }

    /// A passive ejection: as [`vote_down`](Self::vote_down), but an active
    /// check's return ([`checks_passed`](Self::checks_passed)) ends it too.
    pub(crate) fn vote_down_yielding(
        &mut self,
        source: Source,
        reason: Reason,
        until: Option<(Instant, Reason)>,
    ) {
        self.push_vote(source, reason, until, true);
    }

    fn push_vote(
        &mut self,
        source: Source,
        reason: Reason,
        until: Option<(Instant, Reason)>,
        yields: bool,
    ) {
        self.votes.retain(|v| v.source != source);
        let (until, expiry) = match until {
            Some((t, why)) => (Some(t), why),
            None => (None, Reason::Withdrawn),
        };
        self.votes.push(Vote {
            source,
            reason,
            until,
            expiry,
            yields,
        });
    }

    /// An active check of `source` brought the backend back: its vote goes,
    /// and so do the passive ejections that yield to active checks.
    pub(crate) fn checks_passed(&mut self, source: Source) {
        self.votes.retain(|v| v.source != source && !v.yields);
    }

    /// Drop `source`'s verdict; returns whether it had one.
    pub(crate) fn vote_up(&mut self, source: Source) -> bool {
        let before = self.votes.len();
        self.votes.retain(|v| v.source != source);
        before != self.votes.len()
    }

    /// Whether `source` holds the backend failed.
    #[cfg(test)]
    pub(crate) fn has_vote(&self, source: Source) -> bool {
        self.votes.iter().any(|v| v.source == source)
    }

    /// Whole seconds since the slow-start ramp began, while ramping.
    pub(crate) fn ramp_elapsed(&self, now: Instant) -> Option<u64> {
        self.ramp_from.map(|from| (now - from).as_secs())
    }

    /// Fold everything into the state at `now`. `why` is the reason to give
    /// when the backend returns to service for a reason the entry cannot
    /// tell (a check passed, an operator readied it). Returns the change
    /// when the kind of state changed.
    pub(crate) fn update(
        &mut self,
        now: Instant,
        ss: Option<SlowStart>,
        why: Reason,
    ) -> Option<Change> {
        let mut why = why;
        self.votes.retain(|v| match v.until {
            Some(t) if t <= now => {
                why = v.expiry.clone();
                false
            }
            _ => true,
        });
        let old = self.state.clone();
        let new = match self.admin {
            Admin::Maintenance => State::Maintenance,
            Admin::Drain => State::Draining,
            Admin::Ready => match self.votes.last() {
                Some(v) => State::Down {
                    reason: v.reason.clone(),
                },
                None => self.serving(&old, now, ss),
            },
        };
        if !new.is_serving() {
            self.ramp_from = None;
        }
        self.wake = self.next_wake(now, ss);
        self.state = new.clone();
        if old.same_kind(&new) {
            return None;
        }
        let reason = match &new {
            State::Down { reason } => reason.clone(),
            State::Up if matches!(old, State::SlowStart { .. }) => Reason::SlowStartDone,
            State::Draining | State::Maintenance => Reason::Operator,
            _ => why,
        };
        Some((old, new, reason))
    }

    /// The serving state: a backend that comes back from failure or
    /// maintenance starts a slow start when one is configured.
    fn serving(&mut self, old: &State, now: Instant, ss: Option<SlowStart>) -> State {
        let Some(ss) = ss else {
            self.ramp_from = None;
            return State::Up;
        };
        if matches!(old, State::Down { .. } | State::Maintenance) {
            self.ramp_from = Some(now);
        }
        match self.ramp_from {
            Some(from) => {
                let e = (now - from).as_secs();
                if ss.is_done(e) {
                    self.ramp_from = None;
                    State::Up
                } else {
                    State::SlowStart {
                        progress: ss.percent(e),
                    }
                }
            }
            None => State::Up,
        }
    }

    fn next_wake(&self, now: Instant, ss: Option<SlowStart>) -> Option<Instant> {
        let ramp = match (self.ramp_from, ss) {
            (Some(from), Some(_)) => {
                let e = (now - from).as_secs();
                Some(from + Duration::from_secs(e + 1))
            }
            _ => None,
        };
        self.votes.iter().filter_map(|v| v.until).chain(ramp).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Source = Source(1);
    const B: Source = Source(2);

    fn failed(detail: &str) -> Reason {
        Reason::CheckFailed {
            check: "tcp".into(),
            detail: detail.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn any_vote_holds_it_down_and_the_last_one_names_the_reason() {
        let now = Instant::now();
        let mut e = Entry::new("a".into(), Health::Up);
        e.vote_down(A, failed("refused"), None);
        let (old, new, why) = e.update(now, None, Reason::Withdrawn).unwrap();
        assert_eq!((old, why.clone()), (State::Up, failed("refused")));
        assert_eq!(new, State::Down { reason: why });
        e.vote_down(B, Reason::EjectionEnded, None);
        assert_eq!(
            e.update(now, None, Reason::Withdrawn),
            None,
            "still down: no event"
        );
        assert!(e.vote_up(B));
        assert_eq!(e.update(now, None, Reason::Withdrawn), None);
        assert!(e.has_vote(A) && !e.has_vote(B));
        e.vote_up(A);
        let passed = Reason::CheckPassed {
            check: "tcp".into(),
        };
        let (_, new, why) = e.update(now, None, passed.clone()).unwrap();
        assert_eq!((new, why), (State::Up, passed));
    }

    #[tokio::test(start_paused = true)]
    async fn passing_checks_end_yielding_votes_only() {
        const P: Source = Source(3);
        let now = Instant::now();
        let later = Some((now + Duration::from_secs(10), Reason::FailTimeoutElapsed));
        let mut e = Entry::new("a".into(), Health::Up);
        e.vote_down_yielding(P, Reason::EjectionEnded, later.clone());
        e.vote_down(A, failed("x"), None);
        e.vote_down(B, failed("y"), None);
        e.update(now, None, Reason::Withdrawn);
        e.checks_passed(A);
        assert!(
            !e.has_vote(A) && !e.has_vote(P),
            "A's vote and the ejection go"
        );
        assert!(e.has_vote(B), "another checker's verdict stays");
        assert_eq!(e.update(now, None, Reason::Withdrawn), None, "still down");
        e.checks_passed(B);
        let (_, new, _) = e.update(now, None, Reason::Withdrawn).unwrap();
        assert_eq!(new, State::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn votes_lapse_at_their_time_with_their_reason() {
        let t0 = Instant::now();
        let mut e = Entry::new("a".into(), Health::Up);
        let until = t0 + Duration::from_secs(5);
        e.vote_down(
            A,
            Reason::EjectionEnded,
            Some((until, Reason::EjectionEnded)),
        );
        e.update(t0, None, Reason::Withdrawn);
        assert_eq!(e.wake, Some(until));
        assert_eq!(
            e.update(until - Duration::from_millis(1), None, Reason::Withdrawn),
            None
        );
        let (_, new, why) = e.update(until, None, Reason::Withdrawn).unwrap();
        assert_eq!((new, why), (State::Up, Reason::EjectionEnded));
        assert_eq!(e.wake, None);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_only_after_a_failure_and_ends_up() {
        let ss = SlowStart::new(Duration::from_secs(4));
        let t0 = Instant::now();
        let mut e = Entry::new("a".into(), Health::Up);
        assert_eq!(
            e.update(t0, ss, Reason::Withdrawn),
            None,
            "no slow start at start-up"
        );
        assert_eq!(e.state, State::Up);
        e.vote_down(A, failed("x"), None);
        e.update(t0, ss, Reason::Withdrawn);
        e.vote_up(A);
        let (_, new, _) = e.update(t0, ss, Reason::Withdrawn).unwrap();
        assert_eq!(new, State::SlowStart { progress: 0 });
        assert_eq!(e.ramp_elapsed(t0), Some(0));
        assert_eq!(e.wake, Some(t0 + Duration::from_secs(1)));
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(e.update(t2, ss, Reason::Withdrawn), None);
        assert_eq!(e.state, State::SlowStart { progress: 50 });
        assert_eq!(e.ramp_elapsed(t2), Some(2));
        let t4 = t0 + Duration::from_secs(4);
        let (_, new, why) = e.update(t4, ss, Reason::Withdrawn).unwrap();
        assert_eq!((new, why), (State::Up, Reason::SlowStartDone));
        assert_eq!((e.ramp_elapsed(t4), e.wake), (None, None));
    }

    #[tokio::test(start_paused = true)]
    async fn operator_settings_win_over_votes() {
        let now = Instant::now();
        let mut e = Entry::new("a".into(), Health::Down);
        assert_eq!(e.state, State::Maintenance, "added down: maintenance");
        e.vote_down(A, failed("x"), None);
        assert_eq!(e.update(now, None, Reason::Operator), None);
        e.admin = Admin::Ready;
        let (_, new, _) = e.update(now, None, Reason::Operator).unwrap();
        assert!(new.is_failed());
        e.admin = Admin::Drain;
        let (_, new, why) = e.update(now, None, Reason::Withdrawn).unwrap();
        assert_eq!((new, why), (State::Draining, Reason::Operator));
    }
}
