//! Immutable views of a pool.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::backend::{BackendId, Member};
use crate::watch::{Board, LoadWatch};

/// Scheduler tables prepared for one snapshot (see [`Prepare`]).
pub type Tables = Arc<dyn Any + Send + Sync>;

/// What a pool write changed, as told to [`Prepare::prepare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The first snapshot seen by a newly attached preparer.
    Attach,
    /// A backend was added (at the end of pool order).
    Added(BackendId),
    /// A backend was removed.
    Removed(BackendId),
    /// A backend's configured weight changed.
    Weight(BackendId),
    /// A backend's effective weight changed (slow start, nginx's weight
    /// drop after failures); its configured weight did not.
    EffectiveWeight(BackendId),
    /// One or more backends' health changed (the first is named): not a
    /// membership change.
    Health(BackendId),
    /// A backend's backup flag or connection limit changed.
    Settings(BackendId),
    /// Several changes published at once by [`Pool::batch`](crate::Pool::batch).
    Batch,
}

impl Change {
    /// Whether this is only a health change (up/down/draining). Schedulers
    /// keep their state over these (nginx's `current` values, hash tables);
    /// every other change is a reset.
    pub fn is_health_only(&self) -> bool {
        matches!(self, Change::Health(_))
    }

    /// Whether nginx-style balancing state (smooth-WRR `current` values, hash
    /// tables built from configured weights) carries over this change:
    /// health changes and effective-weight changes, which nginx makes at run
    /// time without resetting anything.
    pub fn keeps_balance_state(&self) -> bool {
        matches!(self, Change::Health(_) | Change::EffectiveWeight(_))
    }
}

/// Builds a scheduler's tables for each new snapshot, before it is published.
///
/// A [`Pool`](crate::Pool) calls its preparer on every write, off the pick
/// path; picks meanwhile keep using the previous snapshot and its tables.
pub trait Prepare: Send + Sync {
    /// Tables for `next`. `prev` is the snapshot being replaced (absent for
    /// the first one), so state can be carried over when `change` allows it.
    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Option<Tables>;
}

/// An immutable view of a pool's backends, in pool order.
///
/// Readers get one from [`Pool::load`](crate::Pool::load) without taking a
/// lock; the backends' live counters are shared, so their loads are current
/// even in an old snapshot.
pub struct Snapshot {
    pub(crate) version: u64,
    pub(crate) members: Vec<Member>,
    pub(crate) tables: Option<Tables>,
    /// The pool's load-watch board (none for a snapshot made outside a pool).
    pub(crate) board: Option<Arc<Board>>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("members", &self.members)
            .field("tables", &self.tables.is_some())
            .finish()
    }
}

impl Snapshot {
    /// An empty snapshot (version 0).
    pub fn empty() -> Self {
        Snapshot {
            version: 0,
            members: Vec::new(),
            tables: None,
            board: None,
        }
    }

    /// Increases by one with each write to the pool.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The backends in pool order (order of addition).
    #[inline]
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The number of backends.
    #[inline]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there is no backend.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The position of `id` in pool order. O(log n): ids increase in pool order.
    #[inline]
    pub fn index_of(&self, id: BackendId) -> Option<usize> {
        self.members.binary_search_by_key(&id, |m| m.id).ok()
    }

    /// The backend with this id.
    #[inline]
    pub fn get(&self, id: BackendId) -> Option<&Member> {
        self.index_of(id).map(|i| &self.members[i])
    }

    /// The position of the first backend that comes after `id` in pool
    /// order, whether or not `id` is still in the pool (the successor of a
    /// removed backend). May equal `len()`.
    #[inline]
    pub fn position_after(&self, id: BackendId) -> usize {
        self.members.partition_point(|m| m.id <= id)
    }

    /// The backend with this name (linear search: for tools, not picks).
    pub fn by_name(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| &*m.name == name)
    }

    /// Whether any backend is a backup.
    pub fn has_backups(&self) -> bool {
        self.members.iter().any(|m| m.backup)
    }

    /// The tables prepared for this snapshot, if they are of type `T`.
    #[inline]
    pub fn tables<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.tables.as_deref().and_then(|t| t.downcast_ref::<T>())
    }

    /// The prepared tables as they are (to carry them over to a next snapshot).
    pub fn raw_tables(&self) -> Option<&Tables> {
        self.tables.as_ref()
    }

    /// Make `watch` the pool's [`LoadWatch`], following the connection
    /// counts of this snapshot's backends by their positions here. It
    /// replaces the pool's previous watch. Meant for
    /// [`Prepare::prepare`] (a pool write whose preparer installs no watch
    /// removes the pool's watch). Returns false, and drops `watch`, if this
    /// snapshot does not come from a pool.
    ///
    /// Changes of these counters wait while `watch` starts, so
    /// [`LoadWatch::start`] should be quick (linear in the pool at most).
    pub fn watch_loads(&self, watch: Box<dyn LoadWatch>) -> bool {
        match &self.board {
            Some(board) => {
                board.install(&self.members, watch);
                true
            }
            None => false,
        }
    }
}
