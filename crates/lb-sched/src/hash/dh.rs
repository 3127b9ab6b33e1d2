//! `dh`: destination hashing, as LVS `ip_vs_dh.c`.

use std::net::IpAddr;

use lb_core::{Change, Ctx, Member, Pick, Snapshot, Tables};

use super::{fold_ip, hash_32, Kind, Table, EMPTY};
use crate::trace::{pick_via_select, why, Trace};
use crate::Scheduler;

/// The table size as a power of two (`CONFIG_IP_VS_DH_TAB_BITS`).
const BITS: u32 = 8;

/// The number of buckets.
const SIZE: usize = 1 << BITS;

/// Destination hashing: the destination address of a connection picks one
/// of 256 buckets, which the backends own one each in turn.
///
/// As LVS `ip_vs_dh.c` (`ipvsadm -s dh`):
///
/// - Bucket `i` belongs to the backend at position `i mod n` of the pool;
///   weights do not shape the table. It is rebuilt on every membership
///   change and kept over health changes.
/// - The key is [`Ctx::dest`]'s IP (the port is ignored):
///   `hash_32(ip, 8)`, with an IPv6 address folded by XOR of its four words.
///   No destination: none.
/// - If the bucket's backend is not usable: none. There is no fallback and
///   no flag.
/// - An empty pool gives none.
#[derive(Clone, Debug, Default)]
pub struct DestHash;

impl DestHash {
    /// Destination hashing (`ipvsadm -s dh`).
    pub fn new() -> Self {
        DestHash
    }

    /// The bucket of a destination address: `hash_32(ip, 8)`.
    pub fn bucket(&self, dest: IpAddr) -> usize {
        hash_32(fold_ip(dest), BITS) as usize
    }

    /// The owner of each of the 256 buckets of the table prepared for
    /// `snap` (`None` for an empty bucket), or `None` if `snap` has no
    /// table of this scheduler.
    pub fn owners<'s>(
        &self,
        snap: &'s Snapshot,
    ) -> Option<impl Iterator<Item = Option<&'s Member>> + 's> {
        Table::of(snap, Kind::Dest).map(|t| t.owners(snap))
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let table = Table::of(snap, Kind::Dest)?;
        let Some(dest) = ctx.dest() else {
            why!(
                t,
                "rule: dh keys on the destination address and there is none -> none"
            );
            return None;
        };
        let h = self.bucket(dest.ip());
        why!(t, "dh: destination {} -> bucket {h} of {SIZE}", dest.ip());
        table.lookup(snap, ctx, "bucket", h, None::<std::iter::Empty<usize>>, t)
    }
}

/// The dh table: bucket `i` to the backend at position `i mod n`.
fn build(members: &[Member]) -> Vec<u32> {
    if members.is_empty() {
        return vec![EMPTY; SIZE];
    }
    (0..SIZE).map(|i| (i % members.len()) as u32).collect()
}

impl Scheduler for DestHash {
    fn name(&self) -> &'static str {
        "dh"
    }

    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Option<Tables> {
        Some(Table::prepare(Kind::Dest, next, prev, change, build))
    }

    pick_via_select!();
}
