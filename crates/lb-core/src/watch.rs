//! Load watches: an index of the backends' loads that the counters keep
//! current themselves, so that a scheduler does not have to scan the pool.

use std::fmt;

use parking_lot::Mutex;

use crate::backend::Member;
use crate::counters::Counters;

/// An index over one snapshot's backends that follows their connection
/// counts (for instance a tree that knows the least-loaded backend).
///
/// Installed with [`Snapshot::watch_loads`](crate::Snapshot::watch_loads),
/// normally by a scheduler while it prepares the snapshot. From then on,
/// each time a connection on one of that snapshot's backends opens, closes,
/// goes idle or becomes active again, [`changed`](LoadWatch::changed) is
/// called with the backend's position in that snapshot, after the counters
/// have moved, on the thread that moved them.
///
/// Every call, and the installation, run under one lock of the pool's, so
/// a watch sees them one at a time: it needs no lock of its own. The calls
/// are on the connection path, so they must be quick and must not block.
///
/// A pool has at most one watch. Installing another replaces it, and a pool
/// write whose preparer installs none removes it; a removed watch is
/// dropped (outside the lock) and never called again, which is how it
/// learns that it no longer follows the counters.
pub trait LoadWatch: Send {
    /// Start from the current counters of `members`, the snapshot's
    /// backends in pool order. Called once, before any
    /// [`changed`](LoadWatch::changed).
    fn start(&mut self, members: &[Member]);

    /// The backend at `position` has new connection counts: read them from
    /// `counters`. The live values are what counts: other changes may have
    /// landed since the one this call reports, each with a call of its own
    /// still to come, so a watch must not count events.
    fn changed(&mut self, position: usize, counters: &Counters);
}

/// The watch of one pool, shared by the pool, its snapshots and the
/// counters of its backends.
///
/// Counters followed by the watch carry a bit in their packed word, so a
/// change learns from its own read-modify-write whether to report; counters
/// nobody follows pay nothing more.
#[derive(Default)]
pub(crate) struct Board {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Increases with every installation and removal; counters whose
    /// recorded generation differs are not followed by the current watch.
    generation: u64,
    watch: Option<Box<dyn LoadWatch>>,
}

// Counters (and so guards) stay unwind-safe as they were before they held a
// board: a panic inside a watch leaves at worst that watch's index stale,
// never the counters themselves.
impl std::panic::RefUnwindSafe for Board {}
impl std::panic::UnwindSafe for Board {}

impl fmt::Debug for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Board").finish_non_exhaustive()
    }
}

impl Board {
    /// Tell the watch, if it follows `c`, that `c` changed.
    pub(crate) fn notify(&self, c: &Counters) {
        let mut st = self.state.lock();
        let st = &mut *st;
        let Some(watch) = st.watch.as_mut() else {
            return;
        };
        if let Some(pos) = c.watch_position(st.generation) {
            watch.changed(pos, c);
        }
    }

    /// The generation now (to tell whether a preparer installed a watch).
    pub(crate) fn generation(&self) -> u64 {
        self.state.lock().generation
    }

    /// Make `watch` follow `members` (which belong to this board's pool).
    pub(crate) fn install(&self, members: &[Member], mut watch: Box<dyn LoadWatch>) {
        let mut st = self.state.lock();
        st.generation += 1;
        for (i, m) in members.iter().enumerate() {
            m.counters.set_watch_position(st.generation, i);
        }
        // Every change from here on reports (and waits for this lock);
        // every earlier one is in what start() reads.
        watch.start(members);
        let old = st.watch.replace(watch);
        drop(st);
        drop(old);
    }

    /// Remove the watch, if any; `members` stop reporting.
    pub(crate) fn clear(&self, members: &[Member]) {
        let mut st = self.state.lock();
        if st.watch.is_none() {
            return;
        }
        st.generation += 1;
        for m in members {
            m.counters.unwatch();
        }
        let old = st.watch.take();
        drop(st);
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::{Backend, Change, Pool, Prepare, Snapshot, Tables};

    /// Records, per position, the active count it was last told about.
    struct Mirror {
        seen: Arc<Mutex<Vec<u32>>>,
        dropped: Arc<AtomicUsize>,
    }

    impl LoadWatch for Mirror {
        fn start(&mut self, members: &[Member]) {
            *self.seen.lock() = members.iter().map(Member::active).collect();
        }
        fn changed(&mut self, position: usize, counters: &Counters) {
            self.seen.lock()[position] = counters.active();
        }
    }

    impl Drop for Mirror {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Installs a fresh mirror on every snapshot when `on`.
    struct Installer {
        on: AtomicBool,
        seen: Arc<Mutex<Vec<u32>>>,
        dropped: Arc<AtomicUsize>,
    }

    impl Prepare for Installer {
        fn prepare(&self, next: &Snapshot, _: Option<&Snapshot>, _: Change) -> Option<Tables> {
            if self.on.load(Ordering::SeqCst) {
                let watch = Mirror {
                    seen: self.seen.clone(),
                    dropped: self.dropped.clone(),
                };
                assert!(next.watch_loads(Box::new(watch)));
            }
            None
        }
    }

    fn backend(i: u8) -> Backend {
        Backend::new(format!("b{i}"), ([10, 0, 0, i], 80).into())
    }

    #[test]
    fn a_watch_follows_every_counter_change_by_position() {
        let pool = Pool::new();
        let a = pool.add(backend(1)).unwrap();
        pool.add(backend(2)).unwrap();
        let early = pool.load().get(a).unwrap().connect();
        let installer = Arc::new(Installer {
            on: AtomicBool::new(true),
            seen: Arc::default(),
            dropped: Arc::default(),
        });
        pool.attach(installer.clone());
        assert_eq!(*installer.seen.lock(), [1, 0], "start reads the counters");

        let snap = pool.load();
        let mut g = snap.members()[1].connect();
        let g2 = snap.members()[1].connect();
        assert_eq!(*installer.seen.lock(), [1, 2]);
        g.idle();
        assert_eq!(*installer.seen.lock(), [1, 1]);
        drop(early);
        assert_eq!(*installer.seen.lock(), [0, 1]);

        // Removing the first backend shifts the second to position 0 in the
        // new watch; the removed backend's counters report to nobody.
        let removed = pool.load().members()[0].connect();
        pool.remove(a).unwrap();
        assert_eq!(installer.dropped.load(Ordering::SeqCst), 1);
        assert_eq!(*installer.seen.lock(), [1]);
        drop(g2);
        assert_eq!(*installer.seen.lock(), [0]);
        let gone = removed.counters().clone();
        assert!(!gone.is_watched(), "a removed backend reports no more");
        assert!(pool.load().members()[0].counters().is_watched());
        drop(removed);
        assert_eq!(*installer.seen.lock(), [0]);
        drop(g);
    }

    #[test]
    fn a_write_that_installs_no_watch_removes_the_old_one() {
        let pool = Pool::new();
        pool.add(backend(1)).unwrap();
        let installer = Arc::new(Installer {
            on: AtomicBool::new(true),
            seen: Arc::default(),
            dropped: Arc::default(),
        });
        pool.attach(installer.clone());
        installer.on.store(false, Ordering::SeqCst);
        pool.add(backend(2)).unwrap();
        assert_eq!(installer.dropped.load(Ordering::SeqCst), 1);
        assert!(!pool.load().members()[0].counters().is_watched());
        let g = pool.load().members()[0].connect();
        assert_eq!(*installer.seen.lock(), [0], "no longer told");
        drop(g);
    }

    #[test]
    fn counters_and_snapshots_outside_a_pool_have_no_watch() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let watch = Mirror {
            seen: Arc::default(),
            dropped: dropped.clone(),
        };
        assert!(!Snapshot::empty().watch_loads(Box::new(watch)));
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        let c = Counters::new();
        c.open_active();
        c.close_active();
        assert_eq!(c.load(), (0, 0));
    }
}
