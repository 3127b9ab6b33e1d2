//! The pool: rare writes that publish immutable snapshots.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::backend::{Backend, BackendId, Health, Member, MAX_CONNS, MAX_WEIGHT};
use crate::counters::Counters;
use crate::error::PoolError;
use crate::snapshot::{Change, Prepare, Snapshot};
use crate::watch::Board;

/// A cheap handle to a loaded snapshot, held only for the duration of a pick.
pub type SnapshotRef = arc_swap::Guard<Arc<Snapshot>>;

/// A set of backends, changed rarely and read on every pick.
///
/// Every write (add, remove, weight, health, settings) builds a new immutable
/// [`Snapshot`], lets the attached [`Prepare`] build the scheduler's tables
/// for it, and publishes it atomically. Readers never take a lock: they load
/// the current snapshot with [`Pool::load`]. Writers are serialised by a lock
/// of their own, which no reader touches. `Pool` is a handle: clones share
/// the same backends.
///
/// ```
/// use lb_core::{Backend, Health, Pool};
/// let pool = Pool::new();
/// let a = pool.add(Backend::new("a", "10.0.0.1:80".parse().unwrap())).unwrap();
/// pool.add(Backend::new("b", "10.0.0.2:80".parse().unwrap()).with_weight(3)).unwrap();
/// pool.set_health(a, Health::Down).unwrap();
/// let snap = pool.load();
/// assert_eq!(snap.len(), 2);
/// assert!(!snap.members()[0].is_eligible());
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    /// Unique among the pools of the process (for the per-thread cache).
    id: u64,
    /// The version of `current`, stored after it (for the per-thread cache).
    published: AtomicU64,
    current: ArcSwap<Snapshot>,
    writer: Mutex<Writer>,
    /// The load watch the backends' counters report to.
    board: Arc<Board>,
}

struct Writer {
    next_id: u32,
    version: u64,
    overrides: Vec<(BackendId, u32)>,
    preparer: Option<Arc<dyn Prepare>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("snapshot", &self.load())
            .finish()
    }
}

/// The source of pool ids.
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(0);

/// How many pools' snapshots a thread keeps for [`Pool::with_snapshot`].
const SEEN_POOLS: usize = 4;

thread_local! {
    /// The snapshot this thread last read of each of the last few pools it
    /// used, most recent first: `(pool id, snapshot version, snapshot)`.
    static SEEN: RefCell<Vec<(u64, u64, Arc<Snapshot>)>> = const { RefCell::new(Vec::new()) };
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Pool {
            inner: Arc::new(Inner {
                id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
                published: AtomicU64::new(0),
                current: ArcSwap::from_pointee(Snapshot::empty()),
                writer: Mutex::new(Writer {
                    next_id: 0,
                    version: 0,
                    overrides: Vec::new(),
                    preparer: None,
                }),
                board: Arc::new(Board::default()),
            }),
        }
    }

    /// The current snapshot, without a lock and without touching a shared
    /// reference count in the common case. Hold it only briefly.
    #[inline]
    pub fn load(&self) -> SnapshotRef {
        self.inner.current.load()
    }

    /// The current snapshot as an owned `Arc`, to keep.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// Run `f` on the current snapshot: the same snapshot as
    /// [`load`](Self::load), for less on the pick path.
    ///
    /// Each thread keeps the snapshot it last read of each of the last few
    /// pools it used; while the pool has not changed, reaching it costs one
    /// atomic read of the pool's version and no atomic write at all (a
    /// `load` pays for two read-modify-writes to protect the snapshot). When
    /// the pool has changed, the new snapshot replaces the kept one.
    ///
    /// The cost: a thread holds on to the last snapshot it read of up to
    /// four pools (and so to their tables) until it reads a newer one, uses
    /// other pools, or exits.
    ///
    /// ```
    /// use lb_core::{Backend, Pool};
    /// let pool = Pool::new();
    /// pool.add(Backend::new("a", "10.0.0.1:80".parse().unwrap())).unwrap();
    /// assert_eq!(pool.with_snapshot(|s| s.len()), 1);
    /// pool.add(Backend::new("b", "10.0.0.2:80".parse().unwrap())).unwrap();
    /// assert_eq!(pool.with_snapshot(|s| s.len()), 2);
    /// ```
    #[inline]
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        let (id, version) = (self.inner.id, self.inner.published.load(Ordering::Acquire));
        SEEN.with(|seen| {
            // A shared borrow: `f` may itself read snapshots (of this pool
            // or others) and would then be served without caching.
            if let Ok(seen) = seen.try_borrow() {
                // The last pool used first: one comparison of two words, no
                // read through the snapshot pointer.
                if let Some((_, _, snap)) = seen.iter().find(|(p, v, _)| (*p, *v) == (id, version))
                {
                    return f(snap);
                }
            }
            let snap = self.inner.current.load_full();
            if let Ok(mut seen) = seen.try_borrow_mut() {
                seen.retain(|(p, _, _)| *p != id);
                seen.truncate(SEEN_POOLS - 1);
                seen.insert(0, (id, snap.version, snap.clone()));
            }
            f(&snap)
        })
    }

    /// Attach the preparer that builds scheduler tables for every snapshot
    /// (replacing any previous one), and prepare the current snapshot now.
    pub fn attach(&self, preparer: Arc<dyn Prepare>) {
        let mut w = self.inner.writer.lock();
        w.preparer = Some(preparer);
        let members = self.inner.current.load().members.clone();
        self.publish(&mut w, members, Change::Attach, true);
    }

    /// Add a backend at the end of pool order.
    pub fn add(&self, backend: Backend) -> Result<BackendId, PoolError> {
        self.batch(|b| b.add(backend))
    }

    /// Remove a backend. Its open connections carry on and close into its
    /// counters, which the returned `Arc` (and their guards) keep alive.
    pub fn remove(&self, id: BackendId) -> Result<Arc<Counters>, PoolError> {
        self.batch(|b| b.remove(id))
    }

    /// Set a backend's configured weight (0 quiesces).
    pub fn set_weight(&self, id: BackendId, weight: u64) -> Result<(), PoolError> {
        self.batch(|b| b.set_weight(id, weight))
    }

    /// Set (or with `None`, clear) the effective weight schedulers use in
    /// place of the configured one, as slow start does.
    pub fn set_effective_weight(
        &self,
        id: BackendId,
        weight: Option<u64>,
    ) -> Result<(), PoolError> {
        self.batch(|b| b.set_effective_weight(id, weight))
    }

    /// Set a backend's health.
    pub fn set_health(&self, id: BackendId, health: Health) -> Result<(), PoolError> {
        self.batch(|b| b.set_health(id, health))
    }

    /// Set a backend's backup flag.
    pub fn set_backup(&self, id: BackendId, backup: bool) -> Result<(), PoolError> {
        self.batch(|b| b.set_backup(id, backup))
    }

    /// Set a backend's connection limit (0 = none).
    pub fn set_max_conns(&self, id: BackendId, max_conns: u64) -> Result<(), PoolError> {
        self.batch(|b| b.set_max_conns(id, max_conns))
    }

    /// The id of the backend with this name.
    pub fn find(&self, name: &str) -> Option<BackendId> {
        self.load().by_name(name).map(|m| m.id)
    }

    /// Apply several writes and publish them as one snapshot, or none of
    /// them if `f` returns an error: the pool is then left as it was.
    ///
    /// ```
    /// use lb_core::{Backend, Pool};
    /// let pool = Pool::new();
    /// let r = pool.batch(|b| {
    ///     b.add(Backend::new("a", "10.0.0.1:80".parse().unwrap()))?;
    ///     b.add(Backend::new("a", "10.0.0.2:80".parse().unwrap()))
    /// });
    /// assert!(r.is_err());
    /// assert!(pool.load().is_empty(), "a failed batch changes nothing");
    /// ```
    pub fn batch<T>(
        &self,
        f: impl FnOnce(&mut Batch) -> Result<T, PoolError>,
    ) -> Result<T, PoolError> {
        let mut w = self.inner.writer.lock();
        let current = self.inner.current.load();
        let mut batch = Batch {
            members: current.members.clone(),
            names: None,
            next_id: w.next_id,
            overrides: w.overrides.clone(),
            changes: Vec::new(),
            board: self.inner.board.clone(),
        };
        let out = f(&mut batch)?;
        if batch.changes.is_empty() {
            return Ok(out);
        }
        let change = match batch.changes.as_slice() {
            [one] => *one,
            // Several health changes are still only health changes.
            [first @ Change::Health(_), rest @ ..] if rest.iter().all(Change::is_health_only) => {
                *first
            }
            [first @ Change::EffectiveWeight(_), rest @ ..]
                if rest.iter().all(|c| matches!(c, Change::EffectiveWeight(_))) =>
            {
                *first
            }
            _ => Change::Batch,
        };
        w.next_id = batch.next_id;
        w.overrides = batch.overrides;
        self.publish(&mut w, batch.members, change, false);
        Ok(out)
    }

    fn publish(&self, w: &mut Writer, members: Vec<Member>, change: Change, attach: bool) {
        let prev = self.inner.current.load_full();
        w.version += 1;
        let mut next = Snapshot {
            version: w.version,
            members,
            tables: None,
            board: Some(self.inner.board.clone()),
        };
        let board = &self.inner.board;
        let generation = board.generation();
        if let Some(p) = &w.preparer {
            let prev_ref = if attach { None } else { Some(&*prev) };
            next.tables = p.prepare(&next, prev_ref, change);
        }
        if board.generation() == generation {
            // The preparer installed no load watch for `next`: the
            // previous one, if any, no longer follows the right backends.
            board.clear(&next.members);
        }
        // Backends that left the pool stop reporting to the watch (their
        // open connections still close into their counters).
        let mut kept = next.members.iter().map(|m| m.id).peekable();
        for m in &prev.members {
            while kept.next_if(|&id| id < m.id).is_some() {}
            if kept.peek() != Some(&m.id) {
                m.counters.unwatch();
            }
        }
        let version = next.version;
        self.inner.current.store(Arc::new(next));
        self.inner.published.store(version, Ordering::Release);
    }
}

/// Writes collected by [`Pool::batch`], published together.
#[derive(Debug)]
pub struct Batch {
    members: Vec<Member>,
    /// The names in `members`, once a batch has added to a pool large
    /// enough that a scan per add would make a big batch quadratic.
    names: Option<HashSet<Arc<str>>>,
    next_id: u32,
    overrides: Vec<(BackendId, u32)>,
    changes: Vec<Change>,
    board: Arc<Board>,
}

fn check_weight(name: &str, weight: u64) -> Result<u32, PoolError> {
    if weight > u64::from(MAX_WEIGHT) {
        return Err(PoolError::BadWeight {
            name: name.to_owned(),
            weight,
        });
    }
    Ok(weight as u32)
}

impl Batch {
    fn slot(&mut self, id: BackendId) -> Result<&mut Member, PoolError> {
        match self.members.binary_search_by_key(&id, |m| m.id) {
            Ok(i) => Ok(&mut self.members[i]),
            Err(_) => Err(PoolError::UnknownBackend(id)),
        }
    }

    /// The backends as they stand in this batch.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Whether a backend of the batch has this name: a scan of a small
    /// pool, a set once the pool is larger (built at the first such add).
    fn has_name(&mut self, name: &str) -> bool {
        const SCAN: usize = 32;
        if self.names.is_none() && self.members.len() <= SCAN {
            return self.members.iter().any(|m| &*m.name == name);
        }
        self.names
            .get_or_insert_with(|| self.members.iter().map(|m| m.name.clone()).collect())
            .contains(name)
    }

    /// Add a backend at the end of pool order.
    pub fn add(&mut self, b: Backend) -> Result<BackendId, PoolError> {
        if b.name.is_empty() {
            return Err(PoolError::EmptyName);
        }
        if self.has_name(&b.name) {
            return Err(PoolError::DuplicateName(b.name.to_string()));
        }
        let weight = check_weight(&b.name, b.weight)?;
        if b.max_conns > u64::from(MAX_CONNS) {
            return Err(PoolError::BadMaxConns {
                name: b.name.to_string(),
                max_conns: b.max_conns,
            });
        }
        let id = BackendId::new(self.next_id);
        self.next_id = self
            .next_id
            .checked_add(1)
            .ok_or(PoolError::TooManyBackends)?;
        let server = b.server.unwrap_or_else(|| Arc::from(b.addr.to_string()));
        if let Some(names) = &mut self.names {
            names.insert(b.name.clone());
        }
        self.members.push(Member {
            id,
            name: b.name,
            addr: b.addr,
            server,
            weight,
            configured_weight: weight,
            last_weight: weight,
            health: b.health,
            backup: b.backup,
            max_conns: b.max_conns as u32,
            counters: Counters::in_pool(self.board.clone()),
        });
        self.changes.push(Change::Added(id));
        Ok(id)
    }

    /// Remove a backend; returns its counters.
    pub fn remove(&mut self, id: BackendId) -> Result<Arc<Counters>, PoolError> {
        let i = self
            .members
            .binary_search_by_key(&id, |m| m.id)
            .map_err(|_| PoolError::UnknownBackend(id))?;
        let m = self.members.remove(i);
        if let Some(names) = &mut self.names {
            names.remove(&m.name);
        }
        self.overrides.retain(|(o, _)| *o != id);
        self.changes.push(Change::Removed(id));
        Ok(m.counters)
    }

    /// Set the configured weight.
    pub fn set_weight(&mut self, id: BackendId, weight: u64) -> Result<(), PoolError> {
        let over = self
            .overrides
            .iter()
            .find(|(o, _)| *o == id)
            .map(|(_, w)| *w);
        let m = self.slot(id)?;
        let w = check_weight(&m.name, weight)?;
        m.configured_weight = w;
        if w > 0 {
            m.last_weight = w;
        }
        m.weight = over.unwrap_or(w);
        self.changes.push(Change::Weight(id));
        Ok(())
    }

    /// Set or clear the effective weight.
    pub fn set_effective_weight(
        &mut self,
        id: BackendId,
        weight: Option<u64>,
    ) -> Result<(), PoolError> {
        let m = self.slot(id)?;
        let w = weight.map(|w| check_weight(&m.name, w)).transpose()?;
        m.weight = w.unwrap_or(m.configured_weight);
        self.overrides.retain(|(o, _)| *o != id);
        if let Some(w) = w {
            self.overrides.push((id, w));
        }
        self.changes.push(Change::EffectiveWeight(id));
        Ok(())
    }

    /// Set the health.
    pub fn set_health(&mut self, id: BackendId, health: Health) -> Result<(), PoolError> {
        let m = self.slot(id)?;
        if m.health != health {
            m.health = health;
            self.changes.push(Change::Health(id));
        }
        Ok(())
    }

    /// Set the backup flag.
    pub fn set_backup(&mut self, id: BackendId, backup: bool) -> Result<(), PoolError> {
        let m = self.slot(id)?;
        m.backup = backup;
        self.changes.push(Change::Settings(id));
        Ok(())
    }

    /// Set the connection limit.
    pub fn set_max_conns(&mut self, id: BackendId, max_conns: u64) -> Result<(), PoolError> {
        let m = self.slot(id)?;
        if max_conns > u64::from(MAX_CONNS) {
            return Err(PoolError::BadMaxConns {
                name: m.name.to_string(),
                max_conns,
            });
        }
        m.max_conns = max_conns as u32;
        self.changes.push(Change::Settings(id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Tables;

    /// Records the change of every prepared snapshot.
    #[derive(Default)]
    struct Record(Mutex<Vec<Change>>);

    impl Prepare for Record {
        fn prepare(&self, _: &Snapshot, _: Option<&Snapshot>, change: Change) -> Option<Tables> {
            self.0.lock().push(change);
            None
        }
    }

    fn named(name: &str) -> Backend {
        Backend::new(name, "10.0.0.1:80".parse().unwrap())
    }

    #[test]
    fn batches_of_one_kind_keep_their_kind() {
        let pool = Pool::new();
        let rec = Arc::new(Record::default());
        pool.attach(rec.clone());
        let (a, b) = pool
            .batch(|t| Ok((t.add(named("a"))?, t.add(named("b"))?)))
            .unwrap();
        pool.batch(|t| {
            t.set_health(a, Health::Down)?;
            t.set_health(b, Health::Down)
        })
        .unwrap();
        pool.batch(|t| {
            t.set_effective_weight(a, Some(3))?;
            t.set_effective_weight(b, Some(2))
        })
        .unwrap();
        pool.batch(|t| {
            t.set_health(a, Health::Up)?;
            t.set_weight(b, 5)
        })
        .unwrap();
        let seen = rec.0.lock().clone();
        assert_eq!(
            seen,
            [
                Change::Attach,
                Change::Batch,
                Change::Health(a),
                Change::EffectiveWeight(a),
                Change::Batch
            ]
        );
        assert!(seen[2].is_health_only() && seen[2].keeps_balance_state());
        assert!(!seen[3].is_health_only() && seen[3].keeps_balance_state());
        assert!(!seen[4].keeps_balance_state());
    }

    #[test]
    fn effective_weight_overrides_and_clears() {
        let pool = Pool::new();
        let a = pool.add(named("a").with_weight(8)).unwrap();
        pool.set_effective_weight(a, Some(2)).unwrap();
        assert_eq!(
            (
                pool.load().members()[0].weight(),
                pool.load().members()[0].configured_weight()
            ),
            (2, 8)
        );
        pool.set_weight(a, 6).unwrap();
        assert_eq!(
            pool.load().members()[0].weight(),
            2,
            "the override outlives a configured change"
        );
        pool.set_effective_weight(a, None).unwrap();
        assert_eq!(pool.load().members()[0].weight(), 6);
        assert!(pool.set_effective_weight(a, Some(70_000)).is_err());
        assert!(pool.set_weight(a, 65_536).is_err());
        assert_eq!(pool.load().members()[0].last_weight(), 6);
    }

    #[test]
    fn writes_to_unknown_backends_and_duplicate_names_are_refused() {
        let pool = Pool::new();
        let a = pool.add(named("a")).unwrap();
        assert_eq!(
            pool.add(named("a")).unwrap_err(),
            PoolError::DuplicateName("a".into())
        );
        assert_eq!(pool.add(named("")).unwrap_err(), PoolError::EmptyName);
        pool.remove(a).unwrap();
        assert_eq!(
            pool.set_weight(a, 1).unwrap_err(),
            PoolError::UnknownBackend(a)
        );
        assert!(pool.remove(a).is_err());
        let v = pool.load().version();
        assert!(pool.add(named("b").with_max_conns(1 << 20)).is_err());
        assert_eq!(
            pool.load().version(),
            v,
            "a refused write publishes nothing"
        );
    }

    fn backend(i: usize) -> Backend {
        Backend::new(format!("b{i}"), ([10, 0, 0, i as u8], 80).into())
    }

    #[test]
    fn names_stay_unique_in_large_batches_across_adds_and_removes() {
        let pool = Pool::new();
        // Past the scan threshold: duplicates are found by the name set,
        // within the batch and against the pool it started from.
        pool.batch(|b| (0..500).try_for_each(|i| b.add(backend(i)).map(drop)))
            .unwrap();
        let dup = pool.batch(|b| {
            b.add(backend(500))?;
            b.add(backend(500))
        });
        assert!(matches!(dup, Err(PoolError::DuplicateName(n)) if n == "b500"));
        assert!(matches!(
            pool.add(backend(7)),
            Err(PoolError::DuplicateName(_))
        ));
        assert_eq!(pool.load().len(), 500, "a failed batch changes nothing");
        // A removed name can come back in the same batch; a kept one cannot.
        let id = pool.load().members()[7].id();
        pool.batch(|b| {
            b.remove(id)?;
            b.add(backend(7))?;
            assert!(matches!(
                b.add(backend(8)),
                Err(PoolError::DuplicateName(_))
            ));
            Ok(())
        })
        .unwrap();
        let snap = pool.load();
        assert_eq!(snap.len(), 500);
        assert_eq!(
            snap.members().iter().filter(|m| m.name() == "b7").count(),
            1
        );
    }

    #[test]
    fn with_snapshot_sees_every_write_across_many_pools_and_nesting() {
        let pools: Vec<Pool> = (0..SEEN_POOLS + 3).map(|_| Pool::new()).collect();
        for round in 0..3 {
            for (k, pool) in pools.iter().enumerate() {
                pool.add(backend(round * 10 + k)).unwrap();
                assert_eq!(pool.with_snapshot(|s| s.version()), pool.load().version());
                // Nested: the inner read is served while the outer one holds
                // the thread's cache, for this pool and for another.
                let other = &pools[(k + 1) % pools.len()];
                let (a, b) =
                    pool.with_snapshot(|s| (s.len(), other.with_snapshot(|o| o.version())));
                assert_eq!(a, round + 1);
                assert_eq!(b, other.load().version());
            }
        }
        let seen = SEEN.with(|s| s.borrow().len());
        assert!(seen <= SEEN_POOLS, "the cache is bounded: {seen}");
    }

    #[test]
    fn with_snapshot_on_other_threads_follows_writes() {
        let pool = Pool::new();
        pool.add(backend(1)).unwrap();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let mut last = 0;
                    while last < 50 {
                        let v = pool.with_snapshot(|s| {
                            assert_eq!(s.len(), 1);
                            s.version()
                        });
                        assert!(v >= last, "versions never go back");
                        last = v;
                    }
                });
            }
            for w in 0..60 {
                let id = pool.load().members()[0].id();
                pool.set_weight(id, w % 5).unwrap();
            }
        });
    }
}
