//! A table from IP address to a two-word record whose lookups take no lock
//! and write nothing shared: lblc's destination table.
//!
//! The table is split into shards as [`IpTable`](crate::keyed::IpTable) is.
//! Each shard is an open-addressing array of slots (linear probing) behind
//! an [`ArcSwap`], and a mutex that only writers take. A slot is a small
//! sequence lock made of atomics: a reader reads its words and checks that
//! the slot's sequence did not move meanwhile; a writer makes the sequence
//! odd, writes, and makes it even again. A reader that meets a slot being
//! written gives up and the caller takes the writers' path, which sees
//! every slot settled; so readers never wait and never spin.
//!
//! Entries are never removed one by one: when a shard would be over three
//! quarters full, it is rebuilt into a new array without the entries the
//! caller no longer needs (twice the size when half of it would still be in
//! use), published with one pointer swap; readers still in the old array
//! finish there (a reader's word update that lands in the old array after
//! the copy is lost).

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, MutexGuard};

use crate::keyed::{IpHash, IpKey};

/// The number of shards (a power of two).
const SHARDS: usize = 16;
/// The smallest array of a shard.
const MIN_SLOTS: usize = 64;

/// The state bits of a slot's `meta` word.
const STATE: u64 = 0b11;
const EMPTY: u64 = 0;
const V4: u64 = 1;
const V6: u64 = 2;
/// One step of a slot's sequence (above the state bits); an odd sequence
/// (this bit set) means a writer is at work in the slot.
const SEQ: u64 = 0b100;

/// A key as the slot stores it: its family and two words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    family: u64,
    k0: u64,
    k1: u64,
}

impl Key {
    fn ip(self) -> IpAddr {
        match self.family {
            V4 => IpAddr::from(std::net::Ipv4Addr::from(self.k0 as u32)),
            _ => IpAddr::from(std::net::Ipv6Addr::from(
                u128::from(self.k0) | (u128::from(self.k1) << 64),
            )),
        }
    }

    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Key {
                family: V4,
                k0: u64::from(u32::from(v4)),
                k1: 0,
            },
            IpAddr::V6(v6) => {
                let x = u128::from(v6);
                Key {
                    family: V6,
                    k0: x as u64,
                    k1: (x >> 64) as u64,
                }
            }
        }
    }
}

/// What an entry holds besides its key: two words the caller gives meaning
/// to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) a: u64,
    pub(crate) b: u64,
}

/// One slot: a sequence word (with the state bits), the key, the record.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    meta: AtomicU64,
    k0: AtomicU64,
    k1: AtomicU64,
    a: AtomicU64,
    b: AtomicU64,
}

/// What a reader saw in a slot.
enum Seen {
    Empty,
    Busy,
    Entry(Key, Record),
}

impl Slot {
    /// The slot's contents, read without a lock.
    #[inline]
    fn read(&self) -> Seen {
        let m1 = self.meta.load(Ordering::Acquire);
        if m1 & SEQ != 0 {
            return Seen::Busy;
        }
        let family = m1 & STATE;
        if family == EMPTY {
            return Seen::Empty;
        }
        let k0 = self.k0.load(Ordering::Relaxed);
        let k1 = self.k1.load(Ordering::Relaxed);
        let a = self.a.load(Ordering::Relaxed);
        let b = self.b.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if self.meta.load(Ordering::Relaxed) != m1 {
            return Seen::Busy;
        }
        Seen::Entry(Key { family, k0, k1 }, Record { a, b })
    }

    /// Write the slot (under its shard's writer lock).
    fn write(&self, state: u64, key: Key, rec: Record) {
        let m = self.meta.load(Ordering::Relaxed);
        let seq = m & !STATE;
        self.meta
            .store((seq + SEQ) | (m & STATE), Ordering::Relaxed);
        fence(Ordering::Release);
        self.k0.store(key.k0, Ordering::Relaxed);
        self.k1.store(key.k1, Ordering::Relaxed);
        self.a.store(rec.a, Ordering::Relaxed);
        self.b.store(rec.b, Ordering::Relaxed);
        self.meta.store((seq + 2 * SEQ) | state, Ordering::Release);
    }

    /// Set word `b` from a reader (a time refreshed: whichever of two
    /// racing refreshes lands last wins).
    #[inline]
    pub(crate) fn set_b(&self, b: u64) {
        self.b.store(b, Ordering::Relaxed);
    }

    /// Set word `a` to `new` if it still holds `old`.
    #[inline]
    pub(crate) fn swap_a(&self, old: u64, new: u64) {
        let _ = self
            .a
            .compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// One array of slots.
#[derive(Debug)]
struct Slots {
    slots: Box<[Slot]>,
    mask: usize,
}

impl Slots {
    fn new(len: usize) -> Self {
        let len = len.next_power_of_two().max(MIN_SLOTS);
        Slots {
            slots: (0..len).map(|_| Slot::default()).collect(),
            mask: len - 1,
        }
    }
}

/// One shard: readers go through `slots`; writers hold `writer`.
#[derive(Debug)]
struct Shard {
    slots: ArcSwap<Slots>,
    /// The number of entries; held by writers.
    writer: Mutex<usize>,
}

/// A map from IP address to a [`Record`]: lookups without a lock, writes
/// under a per-shard lock.
pub(crate) struct FlatTable {
    hash: IpHash,
    shards: Box<[Shard]>,
}

/// A lookup's answer: the record, and its slot for word updates.
#[derive(Debug)]
pub(crate) enum Lookup<'t> {
    /// The key has an entry.
    Found(&'t Slot, Record),
    /// The key has no entry.
    Absent,
    /// A writer was at work on the way: ask again under the writer lock.
    Busy,
}

impl FlatTable {
    /// A table with room for about `capacity` entries before it grows.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let each = (capacity.div_ceil(SHARDS) * 4).div_ceil(3);
        let shards = (0..SHARDS)
            .map(|_| Shard {
                slots: ArcSwap::from_pointee(Slots::new(each)),
                writer: Mutex::new(0),
            })
            .collect();
        FlatTable {
            hash: IpHash::random(),
            shards,
        }
    }

    #[inline]
    fn locate(&self, ip: IpAddr) -> (&Shard, u64) {
        let h = self.hash.hash_one(IpKey(ip));
        (&self.shards[(h >> 40) as usize % SHARDS], h)
    }

    /// The entry of `ip`, read without a lock; `f` sees it while the array
    /// it is in cannot be freed.
    #[inline]
    pub(crate) fn read<R>(&self, ip: IpAddr, f: impl FnOnce(Lookup<'_>) -> R) -> R {
        let (shard, h) = self.locate(ip);
        let slots = shard.slots.load();
        f(probe(&slots, Key::of(ip), h))
    }

    /// The writers' view of the shard that holds `ip`.
    pub(crate) fn write(&self, ip: IpAddr) -> Writer<'_> {
        let (shard, h) = self.locate(ip);
        Writer {
            live: shard.writer.lock(),
            shard,
            hash: self.hash,
            key: Key::of(ip),
            h,
        }
    }

    /// The number of entries (dead ones excluded), over all shards.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| *s.writer.lock()).sum()
    }
}

impl std::fmt::Debug for FlatTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlatTable")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

/// Where `key` is in `slots` (from its hash `h`).
#[inline]
fn probe(slots: &Slots, key: Key, h: u64) -> Lookup<'_> {
    let mut i = h as usize & slots.mask;
    for _ in 0..=slots.mask {
        let slot = &slots.slots[i];
        match slot.read() {
            Seen::Empty => return Lookup::Absent,
            Seen::Busy => return Lookup::Busy,
            Seen::Entry(k, rec) if k == key => return Lookup::Found(slot, rec),
            Seen::Entry(..) => {}
        }
        i = (i + 1) & slots.mask;
    }
    Lookup::Absent
}

/// The first empty slot from hash `h` (the array has one: it is at most
/// three quarters full).
fn free_slot(slots: &Slots, h: u64) -> usize {
    let mut i = h as usize & slots.mask;
    while !matches!(slots.slots[i].read(), Seen::Empty) {
        i = (i + 1) & slots.mask;
    }
    i
}

/// A shard under its writer lock, at one key.
#[derive(Debug)]
pub(crate) struct Writer<'t> {
    live: MutexGuard<'t, usize>,
    shard: &'t Shard,
    hash: IpHash,
    key: Key,
    h: u64,
}

impl Writer<'_> {
    /// The key's record (every slot is settled while the lock is held).
    pub(crate) fn get(&self) -> Option<Record> {
        match probe(&self.shard.slots.load(), self.key, self.h) {
            Lookup::Found(_, rec) => Some(rec),
            Lookup::Absent | Lookup::Busy => None,
        }
    }

    /// Set the key's record, inserting it if absent. When the shard would
    /// be over three quarters full, entries for which `keep` is false are
    /// dropped (the caller says which no longer matter) and the shard is
    /// rebuilt, twice as large if half of it would still be in use.
    pub(crate) fn set(&mut self, rec: Record, keep: impl Fn(Record) -> bool) {
        let slots = self.shard.slots.load_full();
        if let Lookup::Found(slot, _) = probe(&slots, self.key, self.h) {
            slot.write(self.key.family, self.key, rec);
            return;
        }
        let slots = if (*self.live + 1) * 4 > slots.slots.len() * 3 {
            self.rebuild(&slots, &keep)
        } else {
            slots
        };
        let i = free_slot(&slots, self.h);
        slots.slots[i].write(self.key.family, self.key, rec);
        *self.live += 1;
    }

    /// Move the entries `keep` accepts into a new array, twice as large as
    /// `old` when they and one more would fill half of it, and publish it.
    fn rebuild(&mut self, old: &Slots, keep: &impl Fn(Record) -> bool) -> Arc<Slots> {
        let entries: Vec<(Key, Record)> = old
            .slots
            .iter()
            .filter_map(|s| match s.read() {
                Seen::Entry(k, rec) if keep(rec) => Some((k, rec)),
                _ => None,
            })
            .collect();
        let cap = old.slots.len();
        let cap = if (entries.len() + 1) * 2 > cap {
            cap * 2
        } else {
            cap
        };
        let next = Arc::new(Slots::new(cap));
        for (k, rec) in &entries {
            let i = free_slot(&next, self.hash.hash_one(IpKey(k.ip())));
            next.slots[i].write(k.family, *k, *rec);
        }
        *self.live = entries.len();
        self.shard.slots.store(next.clone());
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::atomic::AtomicBool;

    fn v4(i: u32) -> IpAddr {
        IpAddr::from(Ipv4Addr::from(0x0A00_0000 + i))
    }

    fn get(t: &FlatTable, ip: IpAddr) -> Option<Record> {
        t.read(ip, |l| match l {
            Lookup::Found(_, rec) => Some(rec),
            Lookup::Absent => None,
            Lookup::Busy => panic!("no writer is at work"),
        })
    }

    fn rec(x: u64) -> Record {
        Record { a: x, b: !x }
    }

    #[test]
    fn entries_survive_growth_and_overwrites() {
        let t = FlatTable::with_capacity(16);
        for i in 0..20_000 {
            t.write(v4(i)).set(rec(u64::from(i)), |_| true);
        }
        assert_eq!(t.len(), 20_000);
        for i in (0..20_000).step_by(7) {
            t.write(v4(i)).set(rec(u64::from(i) + 1_000_000), |_| true);
        }
        assert_eq!(t.len(), 20_000, "overwrites add nothing");
        for i in 0..20_000 {
            let want = if i % 7 == 0 {
                u64::from(i) + 1_000_000
            } else {
                u64::from(i)
            };
            assert_eq!(get(&t, v4(i)), Some(rec(want)), "entry {i}");
            assert_eq!(t.write(v4(i)).get(), Some(rec(want)));
        }
        assert_eq!(get(&t, v4(20_000)), None);
        // v4 and v4-mapped v6 stay distinct keys; v6 keys use both words.
        let mapped = IpAddr::from(Ipv4Addr::from(0x0A00_0001).to_ipv6_mapped());
        assert_eq!(get(&t, mapped), None);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b = IpAddr::from(Ipv6Addr::from(u128::from(Ipv6Addr::from([
            0x2001, 0xdb9, 0, 0, 0, 0, 0, 1,
        ]))));
        t.write(a).set(rec(1), |_| true);
        assert_eq!(get(&t, a), Some(rec(1)));
        assert_eq!(get(&t, b), None, "differs in the high word only");
    }

    #[test]
    fn a_full_shard_drops_what_the_caller_no_longer_keeps() {
        let t = FlatTable::with_capacity(16);
        // Records with b < 1000 are "expired" from the writer's view.
        for i in 0..500 {
            t.write(v4(i)).set(
                Record {
                    a: 0,
                    b: u64::from(i),
                },
                |_| true,
            );
        }
        for i in 500..5000 {
            t.write(v4(i)).set(
                Record {
                    a: 0,
                    b: 1000 + u64::from(i),
                },
                |r| r.b >= 1000,
            );
        }
        assert!(t.len() < 5000, "expired entries were swept at a rebuild");
        for i in 500..5000 {
            assert!(get(&t, v4(i)).is_some(), "kept entry {i}");
        }
    }

    /// Readers racing a writer that rewrites, inserts and rebuilds never see
    /// a torn record, and never miss an entry that was there before.
    #[test]
    fn readers_never_see_torn_records_or_lose_entries() {
        let t = FlatTable::with_capacity(64);
        const KEPT: u32 = 2_000;
        for i in 0..KEPT {
            t.write(v4(i)).set(rec(u64::from(i)), |_| true);
        }
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut x = 0u64;
                for round in 0..40u32 {
                    for i in 0..KEPT {
                        x += 1;
                        t.write(v4(i)).set(rec(x), |_| true);
                    }
                    // New keys force rebuilds into larger arrays.
                    for i in 0..500 {
                        t.write(v4(100_000 + round * 500 + i)).set(rec(0), |_| true);
                    }
                }
                stop.store(true, Ordering::Relaxed);
            });
            for _ in 0..2 {
                s.spawn(|| {
                    let (mut seen, mut busy) = (0u64, 0u64);
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) || seen < 10_000 {
                        i = (i + 7) % KEPT;
                        t.read(v4(i), |l| match l {
                            Lookup::Found(_, r) => {
                                assert_eq!(r.a, !r.b, "a torn record for {i}");
                                seen += 1;
                            }
                            Lookup::Busy => busy += 1,
                            Lookup::Absent => panic!("entry {i} was lost"),
                        });
                    }
                    assert!(seen > busy, "mostly settled reads: {seen} vs {busy} busy");
                });
            }
        });
        assert_eq!(t.len(), KEPT as usize + 40 * 500);
    }
}
