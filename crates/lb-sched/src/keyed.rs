//! The tables that schedulers key by IP address (lblc and lblcr
//! destinations, persistence templates): split into shards, each behind a
//! lock of its own, and hashed with a fast keyed hash.
//!
//! IPv4 and IPv6 addresses live in tables of their own, keyed by the bare
//! integer (`u32`, `u128`): a bucket is the key and the value, with no enum
//! tag or padding, and a key comparison is one integer comparison. The hash
//! is computed once per lookup, picks the shard by its top bits and the
//! bucket by the rest.
//!
//! Sharding lets picks for different addresses proceed in parallel; each
//! shard's lock is still owned by the scheduler instance (never global).
//! The hash is a folded multiply (as in `foldhash`) under keys drawn from
//! the standard library's random source for each table, so that the
//! bucket layout is not predictable from outside; it is much cheaper than
//! SipHash for the one address a pick hashes.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::time::Duration;

use hashbrown::HashTable;
use lb_core::{BackendId, Member, Snapshot};
use parking_lot::{Mutex, MutexGuard};

/// The number of shards of each address family (a power of two).
const SHARDS: usize = 16;

/// A time as whole nanoseconds, the form the tables keep times in (8 bytes
/// instead of a `Duration`'s 16). Saturates at `u64::MAX` (584 years).
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `(a * b) mod 2^64 xor (a * b) div 2^64`.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The keys of one table's hash.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IpHash {
    seed: u64,
    mul: u64,
}

impl IpHash {
    fn random() -> Self {
        let draw = |salt: u64| {
            let mut h = RandomState::new().build_hasher();
            h.write_u64(salt);
            h.finish()
        };
        IpHash {
            seed: draw(1),
            // Odd and with high bits set: a good multiplier whatever the draw.
            mul: draw(2) | 0x8000_0000_0000_0001,
        }
    }

    #[inline(always)]
    fn finish(&self, state: u64) -> u64 {
        fold_mul(state, self.mul ^ 0x243f_6a88_85a3_08d3)
    }
}

/// An address family's key: the address as an integer.
trait Key: Copy + Eq {
    fn hash(self, h: &IpHash) -> u64;
}

impl Key for u32 {
    #[inline(always)]
    fn hash(self, h: &IpHash) -> u64 {
        h.finish(fold_mul(h.seed ^ u64::from(self), h.mul))
    }
}

impl Key for u128 {
    #[inline(always)]
    fn hash(self, h: &IpHash) -> u64 {
        let s = fold_mul(h.seed ^ self as u64, h.mul);
        h.finish(fold_mul(s ^ (self >> 64) as u64, h.mul))
    }
}

/// One shard: a table of `(key, value)` buckets, on a cache line of its own.
#[repr(align(64))]
#[derive(Debug)]
struct Shard<K, V>(Mutex<HashTable<(K, V)>>);

fn shards<K, V>(capacity: usize) -> Box<[Shard<K, V>]> {
    let each = capacity.div_ceil(SHARDS);
    (0..SHARDS)
        .map(|_| Shard(Mutex::new(HashTable::with_capacity(each))))
        .collect()
}

/// The shard of `hash`: its top bits (hashbrown takes the low bits for the
/// bucket and the top 7 for its tags, so shards still fill evenly).
#[inline(always)]
fn shard_of(hash: u64) -> usize {
    (hash >> 40) as usize % SHARDS
}

/// A map from IP address to `V`, in shards. IPv4 addresses and IPv6
/// addresses (v4-mapped ones included) are distinct keys.
#[derive(Debug)]
pub(crate) struct IpTable<V> {
    hash: IpHash,
    v4: Box<[Shard<u32, V>]>,
    v6: Box<[Shard<u128, V>]>,
}

impl<V> IpTable<V> {
    /// A table with room reserved for about `capacity` IPv4 entries in all,
    /// and a quarter as many IPv6 ones (either grows when it must).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        IpTable {
            hash: IpHash::random(),
            v4: shards(capacity),
            v6: shards(capacity / 4),
        }
    }

    /// The shard that holds `key`, locked, for operations on that key.
    #[inline]
    pub(crate) fn lock(&self, key: IpAddr) -> Locked<'_, V> {
        let (at, hash) = match key {
            IpAddr::V4(a) => {
                let (guard, hash) = lock_in(&self.v4, u32::from(a), &self.hash);
                (At::V4(guard, u32::from(a)), hash)
            }
            IpAddr::V6(a) => {
                let (guard, hash) = lock_in(&self.v6, u128::from(a), &self.hash);
                (At::V6(guard, u128::from(a)), hash)
            }
        };
        Locked {
            at,
            hash,
            hasher: self.hash,
        }
    }

    /// The number of entries, over all shards.
    pub(crate) fn len(&self) -> usize {
        let v4: usize = self.v4.iter().map(|s| s.0.lock().len()).sum();
        let v6: usize = self.v6.iter().map(|s| s.0.lock().len()).sum();
        v4 + v6
    }
}

/// The shard of `shards` that holds `key`, locked, and the key's hash.
#[inline]
fn lock_in<'a, K: Key, V>(
    shards: &'a [Shard<K, V>],
    key: K,
    h: &IpHash,
) -> (MutexGuard<'a, HashTable<(K, V)>>, u64) {
    let hash = key.hash(h);
    (shards[shard_of(hash)].0.lock(), hash)
}

/// A locked shard and the key it was locked for.
enum At<'a, V> {
    V4(MutexGuard<'a, HashTable<(u32, V)>>, u32),
    V6(MutexGuard<'a, HashTable<(u128, V)>>, u128),
}

/// One key's shard of an [`IpTable`], locked: the entry for the key, and
/// upkeep of the shard (which holds other keys too).
pub(crate) struct Locked<'a, V> {
    at: At<'a, V>,
    hash: u64,
    hasher: IpHash,
}

#[inline]
fn find_mut<K: Key, V>(t: &mut HashTable<(K, V)>, hash: u64, key: K) -> Option<&mut V> {
    t.find_mut(hash, |e| e.0 == key).map(|e| &mut e.1)
}

fn remove<K: Key, V>(t: &mut HashTable<(K, V)>, hash: u64, key: K) -> Option<V> {
    t.find_entry(hash, |e| e.0 == key)
        .ok()
        .map(|e| e.remove().0 .1)
}

fn insert<K: Key, V>(t: &mut HashTable<(K, V)>, hash: u64, key: K, value: V, h: &IpHash) {
    match t.find_mut(hash, |e| e.0 == key) {
        Some(e) => e.1 = value,
        None => {
            t.insert_unique(hash, (key, value), |e| e.0.hash(h));
        }
    }
}

impl<V> Locked<'_, V> {
    /// The key's entry, if any.
    #[inline]
    pub(crate) fn get_mut(&mut self) -> Option<&mut V> {
        match &mut self.at {
            At::V4(t, k) => find_mut(t, self.hash, *k),
            At::V6(t, k) => find_mut(t, self.hash, *k),
        }
    }

    /// Drop the key's entry; returns it.
    pub(crate) fn remove(&mut self) -> Option<V> {
        match &mut self.at {
            At::V4(t, k) => remove(t, self.hash, *k),
            At::V6(t, k) => remove(t, self.hash, *k),
        }
    }

    /// Set the key's entry, replacing any.
    pub(crate) fn insert(&mut self, value: V) {
        match &mut self.at {
            At::V4(t, k) => insert(t, self.hash, *k, value, &self.hasher),
            At::V6(t, k) => insert(t, self.hash, *k, value, &self.hasher),
        }
    }

    /// Whether this shard is full: one more entry would grow it.
    pub(crate) fn is_full(&self) -> bool {
        match &self.at {
            At::V4(t, _) => t.len() >= t.capacity(),
            At::V6(t, _) => t.len() >= t.capacity(),
        }
    }

    /// Keep the entries of this shard (any key) for which `keep` holds.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        match &mut self.at {
            At::V4(t, _) => t.retain(|e| keep(&mut e.1)),
            At::V6(t, _) => t.retain(|e| keep(&mut e.1)),
        }
    }
}

/// A backend named by id, with the position it had in the last snapshot it
/// was looked up in: a lookup in an unchanged pool needs no search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placed {
    pub(crate) id: BackendId,
    pos: u32,
}

impl Placed {
    /// `m`, at position `pos`.
    pub(crate) fn new(m: &Member, pos: usize) -> Self {
        Placed {
            id: m.id(),
            pos: pos as u32,
        }
    }

    /// `m`, a member of `snap`, at its position there.
    pub(crate) fn of(snap: &Snapshot, m: &Member) -> Self {
        // The offset of `m` in the member slice when it points into it (it
        // does when it comes from this snapshot), else a search.
        let base = snap.members().as_ptr() as usize;
        let at = (m as *const Member as usize).wrapping_sub(base) / std::mem::size_of::<Member>();
        match snap.members().get(at) {
            Some(x) if std::ptr::eq(x, m) => Self::new(m, at),
            _ => Self::new(m, snap.index_of(m.id()).unwrap_or(u32::MAX as usize)),
        }
    }

    /// No backend (no backend has id `u32::MAX`): an empty place.
    pub(crate) fn none() -> Self {
        Placed {
            id: BackendId::from_raw(u32::MAX),
            pos: u32::MAX,
        }
    }

    /// A backend whose position is not known yet.
    #[cfg(test)]
    pub(crate) fn unplaced(id: BackendId) -> Self {
        Placed { id, pos: u32::MAX }
    }

    /// The backend in `snap`, if it is still there; the position is
    /// refreshed when the pool has changed.
    #[inline]
    pub(crate) fn find<'s>(&mut self, snap: &'s Snapshot) -> Option<&'s Member> {
        let members = snap.members();
        match members.get(self.pos as usize) {
            Some(m) if m.id() == self.id => Some(m),
            _ => {
                let pos = snap.index_of(self.id)?;
                self.pos = pos as u32;
                Some(&members[pos])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_spread_over_shards_and_families_stay_apart() {
        let t: IpTable<u32> = IpTable::with_capacity(64);
        for i in 0..4096u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            t.lock(ip).insert(i);
        }
        assert_eq!(t.len(), 4096);
        for s in t.v4.iter() {
            let n = s.0.lock().len();
            assert!((128..=384).contains(&n), "uneven shard: {n}");
        }
        // v4 and v4-mapped v6 stay distinct keys.
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        t.lock(v6).insert(7);
        assert_eq!(t.lock(v4).get_mut(), Some(&mut 1));
        assert_eq!(t.lock(v6).get_mut(), Some(&mut 7));
        // Replace, remove, and upkeep of a whole shard.
        t.lock(v6).insert(8);
        assert_eq!(t.len(), 4097);
        assert_eq!(t.lock(v6).remove(), Some(8));
        assert_eq!(t.lock(v6).remove(), None);
        assert!(t.lock(v6).get_mut().is_none());
        let before = t.len();
        let mut shard = t.lock(v4);
        shard.retain(|v| *v != 1);
        assert!(shard.get_mut().is_none());
        drop(shard);
        assert_eq!(t.len(), before - 1);
    }

    #[test]
    fn a_full_shard_says_so_and_grows_on_insert() {
        let t: IpTable<u64> = IpTable::with_capacity(0);
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(i));
        assert!(t.lock(ip(1)).is_full());
        for i in 0..1000 {
            t.lock(ip(i)).insert(u64::from(i));
        }
        assert_eq!(t.len(), 1000);
        assert!((0..1000).all(|i| t.lock(ip(i)).get_mut() == Some(&mut u64::from(i))));
    }

    #[test]
    fn nanos_saturate() {
        assert_eq!(nanos(Duration::from_millis(1500)), 1_500_000_000);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }

    #[test]
    fn placed_follows_its_backend_across_pool_changes() {
        let pool = lb_core::Pool::new();
        let a = pool
            .add(lb_core::Backend::new("a", "10.0.0.1:80".parse().unwrap()))
            .unwrap();
        let b = pool
            .add(lb_core::Backend::new("b", "10.0.0.2:80".parse().unwrap()))
            .unwrap();
        let snap = pool.load();
        let mut p = Placed::new(&snap.members()[1], 1);
        assert_eq!(p.find(&snap).map(Member::id), Some(b));
        pool.remove(a).unwrap();
        let snap = pool.load();
        assert_eq!(p.find(&snap).map(Member::id), Some(b));
        assert_eq!(p.pos, 0);
        pool.remove(b).unwrap();
        assert!(p.find(&pool.load()).is_none());
    }
}
