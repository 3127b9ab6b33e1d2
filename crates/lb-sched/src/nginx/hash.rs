//! `hash` and `hash consistent`: nginx's key hashing, as
//! `ngx_http_upstream_hash_module.c` (SCHEDULERS-NGINX.md sections 7, 8).
//! CRC-32 is zlib's (crc32fast).

use std::collections::HashMap;

use crc32fast::Hasher;
use lb_core::{Change, Ctx, Member, Pick, Snapshot, Tables};

use super::{Upstream, MAX_REJECTS};
use crate::trace::{pick_via_select, why, Load, Trace};
use crate::wrr::swrr_step;
use crate::{Features, Scheduler};

/// Ring points per unit of weight.
const POINTS_PER_WEIGHT: usize = 160;

/// nginx's `hash $key` (not consistent): the key picks a primary by weight,
/// Cache::Memcached style.
///
/// Probe `i` hashes `crc32(prefix ++ key)`, where the prefix is empty for
/// the first probe and the decimal `i` after, adds `(crc >> 16) & 0x7fff` to
/// a running sum and walks the weights with `sum mod T` (down and full
/// primaries keep their share). An unusable backend costs a probe; after 21
/// rejected probes, with an empty or absent key ([`Ctx::key`]), or with
/// fewer than two primaries, smooth weighted round robin decides. Backups
/// are never used.
#[derive(Debug, Default)]
pub struct KeyHash;

impl KeyHash {
    /// A new (non-consistent) key hash.
    pub fn new() -> Self {
        KeyHash
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let up = snap.tables::<Upstream>()?;
        let members = snap.members();
        let key = ctx.key().unwrap_or_default();
        if up.primaries < 2 || key.is_empty() || up.total == 0 {
            why!(
                t,
                "hash: {} primaries, key of {} bytes, total weight {}",
                up.primaries,
                key.len(),
                up.total
            );
            return up
                .round_robin(members, ctx, t)
                .map(|i| Pick::new(&members[i]));
        }
        let mut acc = 0u64;
        for probe in 0..=MAX_REJECTS {
            let mut h = Hasher::new();
            if probe > 0 {
                let mut digits = [0u8; 10];
                h.update(decimal(probe, &mut digits));
            }
            h.update(key);
            acc += u64::from((h.finalize() >> 16) & 0x7fff);
            let w = acc % up.total;
            let i = up.walk(w)?;
            let ok = ctx.usable(&members[i]);
            why!(
                t,
                "  probe {probe} sum={acc} w={w}: {} {}",
                Load(&members[i]),
                if ok { "usable" } else { "rejected" }
            );
            if ok {
                why!(t, "rule: hash -> {}", members[i].name());
                return Some(Pick::new(&members[i]));
            }
        }
        why!(t, "hash: {} probes rejected", MAX_REJECTS + 1);
        up.round_robin(members, ctx, t)
            .map(|i| Pick::new(&members[i]))
    }
}

/// The decimal ASCII digits of `n`, written at the end of `buf`.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

impl Scheduler for KeyHash {
    fn name(&self) -> &'static str {
        "hash"
    }

    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Option<Tables> {
        Some(Upstream::prepare(next, prev, change, false))
    }

    fn features(&self) -> Features {
        Features::MAX_CONNS
    }

    pick_via_select!();
}

/// nginx's `hash $key consistent`: a ketama ring (Cache::Memcached::Fast
/// compatible), so adding or removing a backend moves only about `1/n` of
/// the keys.
///
/// Each primary of weight `w` puts `160 * w` points on the ring from its
/// [server text](Member::server_text) (see [`points`](Self::points)); down
/// and full backends keep their points, and the ring is rebuilt only on a
/// weight or membership change. A key goes to the first point at or after
/// `crc32(key)`, wrapping; among the usable primaries with that point's
/// server text (usually one; several backends may share a text), a
/// smooth-WRR step decides. If none is usable the next point is tried;
/// after 21 rejected points, with an empty or absent key, or with a single
/// primary, smooth weighted round robin decides. Backups are never used.
#[derive(Debug, Default)]
pub struct ConsistentHash;

impl ConsistentHash {
    /// A new consistent hash.
    pub fn new() -> Self {
        ConsistentHash
    }

    /// The ring points of a server of weight `weight`, in the order nginx
    /// generates them: `server` is split as nginx splits its `server` text
    /// (`10.0.0.1:80` into host `10.0.0.1` and port `80`; a `unix:` path or a
    /// text without a trailing `:digits` has an empty port), and point `j` is
    /// `crc32(host ++ 0x00 ++ port ++ LE32(point j-1))`, with 0 before the
    /// first.
    ///
    /// ```
    /// let p = lb_sched::ConsistentHash::points("10.0.0.1:80", 1);
    /// assert_eq!(p.len(), 160);
    /// assert_eq!(p[..3], [0xA2AD5D56, 0x0BDEB0AB, 0x75F00C5B]);
    /// ```
    pub fn points(server: &str, weight: u32) -> Vec<u32> {
        ketama(server)
            .take(POINTS_PER_WEIGHT * weight as usize)
            .collect()
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let up = snap.tables::<Upstream>()?;
        let ring = up.ring.as_ref()?;
        let members = snap.members();
        let key = ctx.key().unwrap_or_default();
        if up.primaries < 2 || key.is_empty() || ring.points.is_empty() {
            why!(
                t,
                "hash consistent: {} primaries, key of {} bytes, {} points",
                up.primaries,
                key.len(),
                ring.points.len()
            );
            return up
                .round_robin(members, ctx, t)
                .map(|i| Pick::new(&members[i]));
        }
        let k = crc32fast::hash(key);
        let start = ring.first_at_or_after(k);
        why!(
            t,
            "hash consistent: crc32(key)={k:#010x}, first point at or after it: {start} of {}",
            ring.points.len()
        );
        for r in 0..=MAX_REJECTS as usize {
            let point = ring.points[(start + r) % ring.points.len()];
            if let Some(i) = ring.pick(point.group, members, up, ctx, t) {
                why!(
                    t,
                    "rule: point {:#010x} -> {}",
                    point.hash,
                    members[i].name()
                );
                return Some(Pick::new(&members[i]));
            }
            why!(
                t,
                "  point {:#010x} of {}: nothing usable",
                point.hash,
                ring.server(point.group, members)
            );
        }
        why!(t, "hash consistent: {} points rejected", MAX_REJECTS + 1);
        up.round_robin(members, ctx, t)
            .map(|i| Pick::new(&members[i]))
    }
}

impl Scheduler for ConsistentHash {
    fn name(&self) -> &'static str {
        "hash"
    }

    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Option<Tables> {
        Some(Upstream::prepare(next, prev, change, true))
    }

    fn features(&self) -> Features {
        Features::MAX_CONNS
    }

    pick_via_select!();
}

// === the ring ===

/// One point of the ring: its hash and the group of its server text.
#[derive(Clone, Copy, Debug)]
struct Point {
    hash: u32,
    group: u32,
}

/// The ketama ring of one snapshot: points sorted by hash, equal hashes kept
/// once (the first generated, in pool order), and for each distinct server
/// text the span of positions its primaries lie in.
pub(crate) struct Ring {
    points: Vec<Point>,
    /// `[lo, hi)`: from the first to just past the last primary with the
    /// group's text.
    groups: Vec<(u32, u32)>,
    /// `index[b]`: the first point whose hash's top bits (`hash >> shift`)
    /// are at least `b`, so that a lookup searches one bucket of a few
    /// dozen points instead of the whole ring (millions of points, most of
    /// them far from the CPU's caches, at 10,000 backends).
    index: Vec<u32>,
    shift: u32,
}

impl Ring {
    /// The ring of the primaries of `members`.
    pub(crate) fn build(members: &[Member]) -> Ring {
        let mut groups: Vec<(u32, u32)> = Vec::new();
        let mut by_text: HashMap<&str, u32> = HashMap::new();
        let mut points = Vec::new();
        for (pos, m) in members.iter().enumerate().filter(|(_, m)| !m.is_backup()) {
            let pos = pos as u32;
            let group = *by_text.entry(m.server_text()).or_insert_with(|| {
                groups.push((pos, pos + 1));
                groups.len() as u32 - 1
            });
            groups[group as usize].1 = pos + 1;
            let n = POINTS_PER_WEIGHT * m.configured_weight() as usize;
            points.extend(
                ketama(m.server_text())
                    .take(n)
                    .map(|hash| Point { hash, group }),
            );
        }
        // A stable sort, so of equal hashes the first generated is kept.
        points.sort_by_key(|p| p.hash);
        points.dedup_by_key(|p| p.hash);
        points.shrink_to_fit();
        // About 32 points per bucket, at most 2^16 buckets.
        let bits = (usize::BITS - points.len().leading_zeros())
            .saturating_sub(5)
            .min(16);
        let shift = 32 - bits;
        let mut index = Vec::with_capacity((1 << bits) + 1);
        for (i, p) in points.iter().enumerate() {
            let bucket = (u64::from(p.hash) >> shift) as usize;
            index.resize(index.len().max(bucket + 1), i as u32);
        }
        index.resize((1 << bits) + 1, points.len() as u32);
        Ring {
            points,
            groups,
            index,
            shift,
        }
    }

    /// The position of the first point whose hash is at least `k` (the
    /// number of points if none is): the same as a binary search of the
    /// whole ring, within `k`'s bucket.
    #[inline]
    fn first_at_or_after(&self, k: u32) -> usize {
        let b = (u64::from(k) >> self.shift) as usize;
        let (lo, hi) = (self.index[b] as usize, self.index[b + 1] as usize);
        lo + self.points[lo..hi].partition_point(|p| p.hash < k)
    }

    /// A smooth-WRR step among the usable primaries of `group`'s text.
    fn pick<T: Trace>(
        &self,
        group: u32,
        members: &[Member],
        up: &Upstream,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<usize> {
        let (lo, hi) = self.groups[group as usize];
        let (lo, hi) = (lo as usize, hi as usize);
        if hi - lo == 1 {
            // A step over a single candidate adds its weight to its
            // `current` and takes it off again: nothing moves.
            return ctx.usable(&members[lo]).then_some(lo);
        }
        let text = members[lo].server_text();
        let mut current = up.currents.0.lock();
        let same = |m: &Member| !m.is_backup() && m.server_text() == text;
        swrr_step(&members[lo..hi], &mut current[lo..hi], ctx, same, t).map(|k| lo + k)
    }

    /// The server text of `group`.
    fn server<'m>(&self, group: u32, members: &'m [Member]) -> &'m str {
        members[self.groups[group as usize].0 as usize].server_text()
    }
}

/// The endless chain of ring points of a server text (see
/// [`ConsistentHash::points`]).
fn ketama(server: &str) -> impl Iterator<Item = u32> {
    let (host, port) = split_server(server);
    let mut base = Hasher::new();
    base.update(host);
    base.update(&[0]);
    base.update(port);
    let mut prev = 0u32;
    std::iter::repeat_with(move || {
        let mut h = base.clone();
        h.update(&prev.to_le_bytes());
        prev = h.finalize();
        prev
    })
}

/// nginx's split of a `server` text into host and port: after a
/// case-insensitive `unix:` prefix, the rest is the host; otherwise a
/// trailing `:digits` is the port (`[2001:db8::1]:443` gives host
/// `[2001:db8::1]`, brackets kept); otherwise the port is empty.
fn split_server(server: &str) -> (&[u8], &[u8]) {
    let b = server.as_bytes();
    if b.len() >= 5 && b[..5].eq_ignore_ascii_case(b"unix:") {
        return (&b[5..], b"");
    }
    let digits = b.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    match b.len().checked_sub(digits + 1) {
        Some(colon) if b[colon] == b':' => (&b[..colon], &b[colon + 1..]),
        _ => (b, b""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_texts_split_as_nginx_splits_them() {
        let s = |t| {
            let (h, p) = split_server(t);
            (
                std::str::from_utf8(h).unwrap(),
                std::str::from_utf8(p).unwrap(),
            )
        };
        assert_eq!(s("10.0.0.1:80"), ("10.0.0.1", "80"));
        assert_eq!(s("[2001:db8::1]:443"), ("[2001:db8::1]", "443"));
        assert_eq!(s("[2001:db8::1]"), ("[2001:db8::1]", ""));
        assert_eq!(s("10.0.0.1"), ("10.0.0.1", ""));
        assert_eq!(s("10.0.0.1:"), ("10.0.0.1", ""));
        assert_eq!(s("8080"), ("8080", ""));
        assert_eq!(s("UNIX:/run/app.sock"), ("/run/app.sock", ""));
        assert_eq!(s(""), ("", ""));
    }

    #[test]
    fn the_bucket_index_finds_what_a_full_search_finds() {
        for n in [1usize, 2, 3, 40, 700] {
            let members: Vec<Member> = {
                let pool = lb_core::Pool::new();
                for i in 0..n {
                    let addr =
                        std::net::SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 80));
                    pool.add(
                        lb_core::Backend::new(format!("b{i}"), addr).with_weight(1 + i as u64 % 3),
                    )
                    .unwrap();
                }
                pool.load().members().to_vec()
            };
            let ring = Ring::build(&members);
            let mut k = 0x1234_5678u32;
            let probes = ring
                .points
                .iter()
                .flat_map(|p| [p.hash, p.hash.wrapping_add(1), p.hash.wrapping_sub(1)]);
            let extremes = [0, 1, u32::MAX, u32::MAX - 1];
            for key in probes.chain(extremes).chain((0..2000).map(|_| {
                k = k.wrapping_mul(0x9E37_79B9).wrapping_add(0x7F4A_7C15);
                k
            })) {
                let want = ring.points.partition_point(|p| p.hash < key);
                assert_eq!(
                    ring.first_at_or_after(key),
                    want,
                    "{n} backends, key {key:#x}"
                );
            }
        }
    }

    #[test]
    fn decimal_prefixes() {
        let mut buf = [0u8; 10];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(7, &mut buf), b"7");
        assert_eq!(decimal(20, &mut buf), b"20");
        assert_eq!(decimal(u32::MAX, &mut buf), b"4294967295");
    }
}
