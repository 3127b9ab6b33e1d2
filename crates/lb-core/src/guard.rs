//! RAII accounting of connections, and the result of a pick.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::backend::Member;
use crate::counters::Counters;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Established and working: counted in `active`.
    Active,
    /// Open but idle or closing: counted in `inactive`.
    Inactive,
}

/// A count of open connections that an affinity record (such as a
/// persistence template) placed, so it can stay valid while any of them is
/// open. Cloning shares the count.
#[derive(Clone, Debug, Default)]
pub struct Hold(Arc<AtomicU32>);

impl Hold {
    /// A new record with no open connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many connections placed through this record are still open.
    pub fn open_conns(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }
}

/// One open connection on a backend.
///
/// Created active; [`idle`](ConnGuard::idle) moves it to inactive and
/// [`activate`](ConnGuard::activate) back; dropping it (or
/// [`close`](ConnGuard::close)) takes it off the counters, on every path,
/// panics and cancellations included.
#[derive(Debug)]
pub struct ConnGuard {
    counters: Arc<Counters>,
    state: ConnState,
    hold: Option<Hold>,
}

impl ConnGuard {
    #[inline]
    pub(crate) fn open(counters: Arc<Counters>, hold: Option<Hold>) -> Self {
        counters.open_active();
        Self::attached(counters, hold)
    }

    #[inline]
    pub(crate) fn try_open(
        counters: Arc<Counters>,
        limit: u32,
        hold: Option<Hold>,
    ) -> Option<Self> {
        counters
            .try_open_active(limit)
            .then(|| Self::attached(counters, hold))
    }

    #[inline]
    fn attached(counters: Arc<Counters>, hold: Option<Hold>) -> Self {
        if let Some(h) = &hold {
            h.0.fetch_add(1, Ordering::AcqRel);
        }
        ConnGuard {
            counters,
            state: ConnState::Active,
            hold,
        }
    }

    /// The connection's state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// The counters of the backend this connection is on.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Active -> inactive (no-op if already inactive).
    #[inline]
    pub fn idle(&mut self) {
        if self.state == ConnState::Active {
            self.counters.active_to_inactive();
            self.state = ConnState::Inactive;
        }
    }

    /// Inactive -> active (no-op if already active).
    #[inline]
    pub fn activate(&mut self) {
        if self.state == ConnState::Inactive {
            self.counters.inactive_to_active();
            self.state = ConnState::Active;
        }
    }

    /// Close the connection now (the same as dropping the guard).
    pub fn close(self) {}
}

impl Drop for ConnGuard {
    #[inline]
    fn drop(&mut self) {
        self.counters.close(self.state == ConnState::Active);
        if let Some(h) = &self.hold {
            h.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What a scheduler chose: a backend of the snapshot, and optionally the
/// affinity record the connection will be attached to.
#[derive(Debug, Clone)]
pub struct Pick<'s> {
    member: &'s Member,
    hold: Option<Hold>,
}

impl<'s> Pick<'s> {
    /// A plain pick.
    #[inline]
    pub fn new(member: &'s Member) -> Self {
        Pick { member, hold: None }
    }

    /// A pick whose connections count toward `hold` while open.
    #[inline]
    pub fn with_hold(member: &'s Member, hold: Hold) -> Self {
        Pick {
            member,
            hold: Some(hold),
        }
    }

    /// The chosen backend.
    #[inline]
    pub fn member(&self) -> &'s Member {
        self.member
    }

    /// Open the connection, whatever the backend's limit.
    #[inline]
    pub fn connect(self) -> ConnGuard {
        ConnGuard::open(self.member.counters.clone(), self.hold)
    }

    /// Open the connection if it fits under the backend's `max_conns`.
    #[inline]
    pub fn try_connect(self) -> Option<ConnGuard> {
        ConnGuard::try_open(
            self.member.counters.clone(),
            self.member.max_conns,
            self.hold,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_in_either_state_balances_counters() {
        let c = Counters::new();
        let hold = Hold::new();
        let mut g = ConnGuard::open(c.clone(), Some(hold.clone()));
        let g2 = ConnGuard::open(c.clone(), None);
        assert_eq!((c.active(), c.inactive(), hold.open_conns()), (2, 0, 1));
        g.idle();
        g.idle();
        assert_eq!((c.active(), c.inactive()), (1, 1));
        drop(g);
        assert_eq!((c.active(), c.inactive(), hold.open_conns()), (1, 0, 0));
        g2.close();
        assert_eq!(c.load(), (0, 0));
    }

    #[test]
    fn guard_dropped_during_unwind_still_closes() {
        let c = Counters::new();
        let c2 = c.clone();
        let r = std::panic::catch_unwind(move || {
            let _g = ConnGuard::open(c2, None);
            panic!("handler failed");
        });
        assert!(r.is_err());
        assert_eq!(c.load(), (0, 0));
    }
}
