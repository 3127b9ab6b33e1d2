//! `sh`: source hashing, as LVS `ip_vs_sh.c`.

use std::net::SocketAddr;
use std::ops::RangeInclusive;

use lb_core::{Change, Ctx, Member, Pick, Snapshot, Tables};

use super::{fold_ip, hash_32, Kind, Table, EMPTY};
use crate::error::SchedError;
use crate::trace::{pick_via_select, why, Trace};
use crate::Scheduler;

/// Source hashing: a client's address picks a bucket of a table in which
/// each backend holds `weight` consecutive buckets.
///
/// As LVS `ip_vs_sh.c` (`ipvsadm -s sh -b sh-port,sh-fallback`):
///
/// - The table has `2^bits` buckets (default 256). It is filled by walking
///   the pool in order, giving each backend `weight` consecutive buckets (a
///   weight-0 backend still gets one), round after round until it is full;
///   so if the weights add up to more than the table, backends late in the
///   pool may get none. It is rebuilt on every weight or membership change
///   (the table is not consistent: any change reshuffles it) and kept over
///   health changes.
/// - A client's bucket is `hash_32(ip + port, bits)`, the top `bits` bits of
///   `(ip + port) * 0x61C88647 mod 2^32`, where `ip` is the IPv4 address as
///   a number, or the XOR of the four words of an IPv6 address, and `port`
///   is the client's source port with the `port` flag, else 0.
/// - If that bucket's backend is not usable: none; with the `fallback`
///   flag, the buckets `(2h + k) mod size` for `k = 0 .. size - 1` are
///   probed (`h` the original bucket) and the first usable backend is
///   taken. The kernel stops at an empty bucket; this table has none while
///   the pool has a backend.
/// - An empty pool gives none.
///
/// ```
/// use lb_core::{Backend, Ctx, Pool};
/// use lb_sched::{Balancer, SourceHash};
///
/// let pool = Pool::new();
/// for (name, ip) in [("a", "10.1.0.1:80"), ("b", "10.1.0.2:80"), ("c", "10.1.0.3:80")] {
///     pool.add(Backend::new(name, ip.parse()?))?;
/// }
/// let lb = Balancer::new(pool, Box::new(SourceHash::new()));
/// // 10.0.0.1 hashes to bucket 39; the table is a b c a b c ..., 39 mod 3 = 0.
/// let conn = lb.connect(&Ctx::new("10.0.0.1:1000".parse()?))?;
/// assert_eq!(&*conn.name, "a");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct SourceHash {
    bits: u32,
    port: bool,
    fallback: bool,
}

impl Default for SourceHash {
    fn default() -> Self {
        Self::new()
    }
}

impl SourceHash {
    /// The table sizes allowed, as powers of two (`CONFIG_IP_VS_SH_TAB_BITS`).
    pub const BITS: RangeInclusive<u32> = 4..=20;

    /// The default table size, as a power of two: 256 buckets.
    pub const DEFAULT_BITS: u32 = 8;

    /// Source hashing over 256 buckets, on the client IP alone, without
    /// fallback (`ipvsadm -s sh`).
    pub fn new() -> Self {
        SourceHash {
            bits: Self::DEFAULT_BITS,
            port: false,
            fallback: false,
        }
    }

    /// A table of `2^bits` buckets; `bits` must be in [`BITS`](Self::BITS).
    pub fn with_bits(mut self, bits: u32) -> Result<Self, SchedError> {
        if !Self::BITS.contains(&bits) {
            return Err(SchedError::BadValue {
                sched: "sh",
                key: "bits",
                value: bits.to_string(),
                expected: "an integer from 4 to 20 (a table of 2^bits buckets)",
            });
        }
        self.bits = bits;
        Ok(self)
    }

    /// Hash the client's source port too (`sh-port`).
    pub fn with_port(mut self, port: bool) -> Self {
        self.port = port;
        self
    }

    /// Probe other buckets when the client's is not usable (`sh-fallback`).
    pub fn with_fallback(mut self, fallback: bool) -> Self {
        self.fallback = fallback;
        self
    }

    /// The number of buckets.
    pub fn size(&self) -> usize {
        1 << self.bits
    }

    /// The bucket of a client: `hash_32(ip + port, bits)`.
    pub fn bucket(&self, client: SocketAddr) -> usize {
        let port = if self.port {
            u32::from(client.port())
        } else {
            0
        };
        hash_32(port.wrapping_add(fold_ip(client.ip())), self.bits) as usize
    }

    /// The owner of each bucket of the table prepared for `snap`, bucket by
    /// bucket (`None` for an empty bucket), or `None` if `snap` has no table
    /// of this scheduler (it comes from a pool it is not attached to).
    pub fn owners<'s>(
        &self,
        snap: &'s Snapshot,
    ) -> Option<impl Iterator<Item = Option<&'s Member>> + 's> {
        Table::of(snap, self.kind()).map(|t| t.owners(snap))
    }

    fn kind(&self) -> Kind {
        Kind::Source { bits: self.bits }
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let table = Table::of(snap, self.kind())?;
        let client = ctx.client();
        let h = self.bucket(client);
        let port = if self.port { client.port() } else { 0 };
        why!(
            t,
            "sh: client {} port {port} -> bucket {h} of {}",
            client.ip(),
            self.size()
        );
        let mask = self.size() - 1;
        let probes = self
            .fallback
            .then(|| (0..=mask).map(move |k| (2 * h + k) & mask));
        table.lookup(snap, ctx, "bucket", h, probes, t)
    }
}

/// The sh table: walk the pool cyclically, each backend holding buckets
/// until it has `max(weight, 1)` of them.
fn build(members: &[Member], size: usize) -> Vec<u32> {
    if members.is_empty() {
        return vec![EMPTY; size];
    }
    let mut slots = Vec::with_capacity(size);
    let (mut p, mut held) = (0usize, 0u32);
    for _ in 0..size {
        slots.push(p as u32);
        held += 1;
        if held >= members[p].weight() {
            p = (p + 1) % members.len();
            held = 0;
        }
    }
    slots
}

impl Scheduler for SourceHash {
    fn name(&self) -> &'static str {
        "sh"
    }

    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Option<Tables> {
        let size = self.size();
        Some(Table::prepare(self.kind(), next, prev, change, |m| {
            build(m, size)
        }))
    }

    pick_via_select!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_32_takes_the_top_bits() {
        assert_eq!(hash_32(0x0A00_0001, 8), 39);
        assert_eq!(hash_32(0xC0A8_010A, 8), 248);
        assert_eq!(hash_32(0xAC10_0504, 8), 138);
        assert_eq!(hash_32(1, 8), 97);
        assert_eq!(hash_32(0x0A00_0001, 10), 159);
        assert_eq!(hash_32(1, 32), 0x61C8_8647);
    }

    #[test]
    fn fold_xors_ipv6_words_and_unmaps_ipv4() {
        let v6: std::net::IpAddr = "2001:db8::1:2".parse().unwrap();
        assert_eq!(fold_ip(v6), 0x2001_0db8 ^ 0x0001_0002);
        let mapped: std::net::IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(fold_ip(mapped), 0x0A00_0001);
    }
}
