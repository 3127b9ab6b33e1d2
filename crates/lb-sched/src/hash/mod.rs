//! LVS's table-driven hashing schedulers: [`SourceHash`] (`sh`),
//! [`DestHash`] (`dh`) and [`Maglev`] (`mh`).
//!
//! All three map a hash of an address to a slot of a lookup table that is
//! built once per pool snapshot, in [`Scheduler::prepare`](crate::Scheduler::prepare),
//! and holds the pool position of each slot's owner. A pick hashes, reads a
//! slot and tests its owner with [`Ctx::usable`]: no allocation, no lock.
//!
//! The tables depend only on membership and weights, so a health change
//! (down / up) keeps them: a down backend keeps its buckets or slots and its
//! clients get none, or the fallback probe where the scheduler has one.

use std::net::IpAddr;
use std::sync::Arc;

use lb_core::{Change, Ctx, Member, Pick, Snapshot, Tables};

use crate::trace::{why, Load, Trace};

mod dh;
mod maglev;
mod sh;

pub use dh::DestHash;
pub use maglev::Maglev;
pub use sh::SourceHash;

/// A slot that no backend owns.
const EMPTY: u32 = u32::MAX;

/// How many probes of a fallback search an explanation lists one by one.
const PROBES_SHOWN: usize = 32;

/// The kernel's `GOLDEN_RATIO_32` (`include/linux/hash.h`).
const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// The kernel's `hash_32(x, bits)`: the top `bits` bits of
/// `x * 0x61C88647 mod 2^32`. `bits` is in `1..=32`.
#[inline]
pub(crate) fn hash_32(x: u32, bits: u32) -> u32 {
    debug_assert!((1..=32).contains(&bits), "hash_32 bits {bits}");
    x.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// An address as the LVS hashes see it (`ntohl(addr_fold)`): an IPv4
/// address as its 32-bit number, an IPv6 address as the XOR of its four
/// 32-bit words.
///
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a dual-stack socket
/// shows an IPv4 client) is taken as the IPv4 address it carries, so a
/// client hashes the same whichever socket family accepted it.
#[inline]
pub(crate) fn fold_ip(ip: IpAddr) -> u32 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let word = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            word(0) ^ word(4) ^ word(8) ^ word(12)
        }
    }
}

/// Which scheduler and size a table was built for, so that a table of
/// another kind is never read or carried over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `sh` with `2^bits` buckets.
    Source { bits: u32 },
    /// `dh`, 256 buckets.
    Dest,
    /// `mh` with a prime number of slots.
    Maglev { size: u32 },
}

/// A lookup table for one snapshot: the pool position of each slot's owner,
/// or [`EMPTY`].
#[derive(Debug)]
pub(crate) struct Table {
    kind: Kind,
    slots: Box<[u32]>,
}

/// What a probe of one slot found.
enum Probe<'s> {
    Empty,
    Unusable,
    Usable(&'s Member),
}

impl Table {
    /// The tables for `next`: the previous table when only health changed
    /// (same members, same positions), a new one from `build` otherwise.
    pub(crate) fn prepare(
        kind: Kind,
        next: &Snapshot,
        prev: Option<&Snapshot>,
        change: Change,
        build: impl FnOnce(&[Member]) -> Vec<u32>,
    ) -> Tables {
        if change.is_health_only() {
            if let Some(t) = prev.and_then(|p| p.raw_tables()) {
                if t.downcast_ref::<Table>()
                    .is_some_and(|old| old.kind == kind)
                {
                    return t.clone();
                }
            }
        }
        Arc::new(Table {
            kind,
            slots: build(next.members()).into_boxed_slice(),
        })
    }

    /// The table of kind `kind` prepared for `snap`, if any.
    #[inline]
    pub(crate) fn of(snap: &Snapshot, kind: Kind) -> Option<&Table> {
        snap.tables::<Table>().filter(|t| t.kind == kind)
    }

    /// The owner of every slot, in slot order (`None`: empty).
    pub(crate) fn owners<'s>(
        &'s self,
        snap: &'s Snapshot,
    ) -> impl Iterator<Item = Option<&'s Member>> + 's {
        (0..self.slots.len()).map(move |i| self.owner(snap, i))
    }

    /// The owner of slot `i`.
    #[inline]
    fn owner<'s>(&self, snap: &'s Snapshot, i: usize) -> Option<&'s Member> {
        match self.slots.get(i) {
            Some(&p) if p != EMPTY => snap.members().get(p as usize),
            _ => None,
        }
    }

    #[inline]
    fn probe<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        unit: &str,
        i: usize,
        t: &mut T,
    ) -> Probe<'s> {
        match self.owner(snap, i) {
            None => {
                why!(t, "  {unit} {i}: empty");
                Probe::Empty
            }
            Some(m) if ctx.usable(m) => {
                why!(t, "  {unit} {i}: {} usable", Load(m));
                Probe::Usable(m)
            }
            Some(m) => {
                why!(t, "  {unit} {i}: {} not usable", Load(m));
                Probe::Unusable
            }
        }
    }

    /// The LVS lookup: the owner of slot `first` if it is usable; if it is
    /// not and `fallback` is given, the first usable owner among the slots
    /// it yields, stopping at an empty slot; otherwise none.
    pub(crate) fn lookup<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        unit: &str,
        first: usize,
        fallback: Option<impl Iterator<Item = usize>>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        match self.probe(snap, ctx, unit, first, t) {
            Probe::Usable(m) => {
                why!(t, "rule: the {unit}'s backend is usable -> {}", m.name());
                return Some(Pick::new(m));
            }
            Probe::Empty => {
                why!(t, "rule: the {unit} is empty -> none");
                return None;
            }
            Probe::Unusable => {}
        }
        let Some(probes) = fallback else {
            why!(
                t,
                "rule: the {unit}'s backend is not usable and there is no fallback -> none"
            );
            return None;
        };
        why!(t, "fallback: probing other {unit}s");
        let mut probed = 0usize;
        for i in probes {
            probed += 1;
            let found = if probed <= PROBES_SHOWN {
                self.probe(snap, ctx, unit, i, t)
            } else {
                self.probe(snap, ctx, unit, i, &mut crate::trace::NoTrace)
            };
            match found {
                Probe::Usable(m) => {
                    why!(t, "rule: fallback takes the first usable backend, probe {probed} ({unit} {i}) -> {}", m.name());
                    return Some(Pick::new(m));
                }
                Probe::Empty => {
                    why!(t, "rule: fallback stops at an empty {unit} ({unit} {i}, probe {probed}) -> none");
                    return None;
                }
                Probe::Unusable => {}
            }
        }
        why!(
            t,
            "rule: no usable backend in {probed} fallback probes -> none"
        );
        None
    }
}
