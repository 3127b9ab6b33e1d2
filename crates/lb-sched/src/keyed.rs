//! The tables that schedulers key by IP address (lblc and lblcr
//! destinations, persistence templates): split into shards, each behind a
//! lock of its own, and hashed with a fast keyed hash.
//!
//! Sharding lets picks for different addresses proceed in parallel; each
//! shard's lock is still owned by the scheduler instance (never global).
//! The hash is a folded multiply (as in `foldhash`) under keys drawn from
//! the standard library's random source for each table, so that the
//! bucket layout is not predictable from outside; it is much cheaper than
//! SipHash for the one address a pick hashes.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use lb_core::{BackendId, Member, Snapshot};
use parking_lot::{Mutex, MutexGuard};

/// The number of shards (a power of two).
const SHARDS: usize = 16;

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
}

/// The hasher of [`IpHash`]: one folded multiply per word written.
#[derive(Debug)]
pub(crate) struct IpHasher {
    state: u64,
    mul: u64,
}

impl IpHasher {
    #[inline(always)]
    fn mix(&mut self, word: u64) {
        self.state = fold_mul(self.state ^ word, self.mul);
    }
}

impl Hasher for IpHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word) ^ ((chunk.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
    #[inline]
    fn write_isize(&mut self, n: isize) {
        self.mix(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        fold_mul(self.state, self.mul ^ 0x243f_6a88_85a3_08d3)
    }
}

impl BuildHasher for IpHash {
    type Hasher = IpHasher;
    #[inline]
    fn build_hasher(&self) -> IpHasher {
        IpHasher {
            state: self.seed,
            mul: self.mul,
        }
    }
}

/// An address as a table key: equal as the `IpAddr`, hashed as one or two
/// words (an IPv4 address with a tag bit, an IPv6 address's two halves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IpKey(pub(crate) IpAddr);

impl Hash for IpKey {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self.0 {
            IpAddr::V4(v4) => h.write_u64(u64::from(u32::from(v4)) | 1 << 32),
            IpAddr::V6(v6) => {
                let x = u128::from(v6);
                h.write_u64(x as u64);
                h.write_u64((x >> 64) as u64);
            }
        }
    }
}

/// One shard's map.
pub(crate) type IpMap<V> = HashMap<IpKey, V, IpHash>;

/// One shard, on a cache line of its own.
#[repr(align(64))]
#[derive(Debug)]
struct Shard<V>(Mutex<IpMap<V>>);

/// A map from IP address to `V`, in shards.
#[derive(Debug)]
pub(crate) struct IpTable<V> {
    hash: IpHash,
    shards: Box<[Shard<V>]>,
}

impl<V> IpTable<V> {
    /// A table with room reserved for about `capacity` entries in all.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let hash = IpHash::random();
        let each = capacity.div_ceil(SHARDS);
        let shards = (0..SHARDS)
            .map(|_| Shard(Mutex::new(HashMap::with_capacity_and_hasher(each, hash))))
            .collect();
        IpTable { hash, shards }
    }

    /// The locked shard that holds `key`.
    #[inline]
    pub(crate) fn shard(&self, key: &IpAddr) -> MutexGuard<'_, IpMap<V>> {
        // The top bits pick the shard; hashbrown uses the low bits and the
        // top 7 for its own purposes, so shards still fill evenly.
        let h = self.hash.hash_one(IpKey(*key));
        self.shards[(h >> 40) as usize % SHARDS].0.lock()
    }

    /// The number of entries, over all shards.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().len()).sum()
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
    fn addresses_spread_over_shards_and_buckets() {
        let t: IpTable<u32> = IpTable::with_capacity(64);
        for i in 0..4096u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            t.shard(&ip).insert(IpKey(ip), i);
        }
        assert_eq!(t.len(), 4096);
        for s in t.shards.iter() {
            let n = s.0.lock().len();
            assert!((128..=384).contains(&n), "uneven shard: {n}");
        }
        // v4 and v4-mapped v6 stay distinct keys.
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        t.shard(&v6).insert(IpKey(v6), 7);
        assert_eq!(t.shard(&v4).get(&IpKey(v4)), Some(&1));
        assert_eq!(t.shard(&v6).get(&IpKey(v6)), Some(&7));
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
