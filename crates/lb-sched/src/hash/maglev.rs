//! `mh`: Maglev hashing, as LVS `ip_vs_mh.c`.

use std::net::SocketAddr;

use lb_core::{Change, Ctx, Member, Pick, Snapshot, Tables};

use super::{fold_ip, Kind, Table, EMPTY};
use crate::error::SchedError;
use crate::trace::{pick_via_select, why, Trace};
use crate::Scheduler;

/// The SipHash keys of the first hash (slots, offsets): `k0 = k1`.
const KEY1: u64 = 2_654_435_761;
/// The SipHash keys of the second hash (skips): `k0 = k1`.
const KEY2: u64 = 2_654_446_892;

/// The kernel's `hsiphash` on 64-bit machines: SipHash-1-3 of the 4 bytes
/// of `v` in little-endian order, truncated to 32 bits.
#[inline]
fn hsiphash(key: u64, v: u32) -> u32 {
    sip13_u32(key, key, v)
}

/// SipHash-1-3 under `(k0, k1)` of the 4 bytes of `v` in little-endian
/// order, truncated to 32 bits: one compression round over the single
/// block `len << 56 | v`, then three finalization rounds. The same value as
/// a general SipHash-1-3 fed those 4 bytes (tested against `siphasher`),
/// without its buffering, since a Maglev pick hashes once per client.
#[inline]
fn sip13_u32(k0: u64, k1: u64, v: u32) -> u32 {
    let mut s = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    #[inline(always)]
    fn round(s: &mut [u64; 4]) {
        s[0] = s[0].wrapping_add(s[1]);
        s[1] = s[1].rotate_left(13) ^ s[0];
        s[0] = s[0].rotate_left(32);
        s[2] = s[2].wrapping_add(s[3]);
        s[3] = s[3].rotate_left(16) ^ s[2];
        s[0] = s[0].wrapping_add(s[3]);
        s[3] = s[3].rotate_left(21) ^ s[0];
        s[2] = s[2].wrapping_add(s[1]);
        s[1] = s[1].rotate_left(17) ^ s[2];
        s[2] = s[2].rotate_left(32);
    }
    let b = (4u64 << 56) | u64::from(v);
    s[3] ^= b;
    round(&mut s);
    s[0] ^= b;
    s[2] ^= 0xff;
    round(&mut s);
    round(&mut s);
    round(&mut s);
    (s[0] ^ s[1] ^ s[2] ^ s[3]) as u32
}

/// `ip_vs_mh_hashkey`: the hash of `offset + port + ip` (wrapping).
#[inline]
fn hashkey(key: u64, ip: u32, port: u16, offset: u32) -> u32 {
    hsiphash(key, offset.wrapping_add(u32::from(port)).wrapping_add(ip))
}

/// The kernel's `fls`: the 1-based position of the highest set bit, 0 for 0.
fn fls(x: u32) -> u32 {
    32 - x.leading_zeros()
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Maglev hashing: a consistent lookup table of a prime number of slots in
/// which each backend fills its preferred slots in turn; changing the pool
/// moves only the slots it must.
///
/// As LVS `ip_vs_mh.c` (`ipvsadm -s mh -b mh-port,mh-fallback`) on a 64-bit
/// kernel:
///
/// - The table has `M` slots, a prime from [`SIZES`](Self::SIZES) (default 4093).
/// - Hashes are SipHash-1-3 of the 4-byte little-endian value
///   `offset + port + ip` (wrapping), truncated to 32 bits, under the fixed
///   keys `k0 = k1 = 2654435761` (hash1) and `k0 = k1 = 2654446892`
///   (hash2); `ip` is the IPv4 address as a number, or the XOR of the four
///   words of an IPv6 address.
/// - Each backend's permutation comes from its own address: `offset =
///   hash1(ip, port) mod M`, `skip = hash2(ip, port) mod (M - 1) + 1`.
///   Its turns come from its *last non-zero weight*
///   ([`Member::last_weight`]): `(last_weight / g) >> rshift`, at least 1,
///   with `g` the gcd of the positive last weights and `rshift =
///   max(0, fls(max / g) - bits)`, `bits` being 6 for 4093 slots (the
///   kernel's `CONFIG_IP_VS_MH_TAB_INDEX / 2` for the chosen size).
/// - The table is populated in pool order, each backend taking `turns` free
///   slots in a row along its permutation, then yielding to the next, until
///   every slot is taken. A backend added with weight 0 (last weight 0) gets
///   no slot; when every last weight is 0 the table is empty.
/// - A client's slot is `hash1(ip, port) mod M`, `port` being its source
///   port with the `port` flag, else 0. If its backend is not usable: none;
///   with the `fallback` flag, the slots `hash1(ip, port, offset) mod M`
///   for `offset = (k + slot) mod M`, `k = 0 .. M - 1`, are probed and the
///   first usable backend is taken (an empty slot ends the search).
/// - The table is rebuilt on every weight or membership change and kept
///   over health changes. Since it is built from last weights, quiescing a
///   backend (weight 0) leaves it unchanged: that backend's clients get
///   none, or the fallback.
/// - More backends than slots: the kernel refuses to add the backend; here
///   the table is left empty and every pick gives none until the pool
///   shrinks back.
#[derive(Clone, Debug)]
pub struct Maglev {
    size: u32,
    /// `size` as a [`Modulus`], for the remainder of every client hash.
    modulus: Modulus,
    port: bool,
    fallback: bool,
}

/// `x mod m` for 32-bit `x` by a multiplication (Lemire, Kaser and Kurz,
/// "Faster remainder by direct computation", 2019): exact for every `x`
/// and every `m > 0`, without a division on the pick path.
#[derive(Clone, Copy, Debug)]
struct Modulus {
    m: u32,
    /// `ceil(2^64 / m)`.
    c: u64,
}

impl Modulus {
    fn new(m: u32) -> Self {
        Modulus {
            m,
            c: (u64::MAX / u64::from(m)).wrapping_add(1),
        }
    }

    #[inline]
    fn rem(self, x: u32) -> u32 {
        let low = self.c.wrapping_mul(u64::from(x));
        ((u128::from(low) * u128::from(self.m)) >> 64) as u32
    }
}

impl Default for Maglev {
    fn default() -> Self {
        Self::new()
    }
}

impl Maglev {
    /// The table sizes LVS offers, in the order of `CONFIG_IP_VS_MH_TAB_INDEX`
    /// 8..=17.
    pub const SIZES: [u32; 10] = [
        251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
    ];

    /// The default table size (`CONFIG_IP_VS_MH_TAB_INDEX = 12`).
    pub const DEFAULT_SIZE: u32 = 4093;

    /// Maglev over 4093 slots, on the client IP alone, without fallback
    /// (`ipvsadm -s mh`).
    pub fn new() -> Self {
        Maglev {
            size: Self::DEFAULT_SIZE,
            modulus: Modulus::new(Self::DEFAULT_SIZE),
            port: false,
            fallback: false,
        }
    }

    /// A table of `size` slots, one of [`Maglev::SIZES`].
    pub fn with_size(mut self, size: u32) -> Result<Self, SchedError> {
        if !Self::SIZES.contains(&size) {
            return Err(SchedError::BadValue {
                sched: "mh",
                key: "table",
                value: size.to_string(),
                expected: "one of the primes 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071",
            });
        }
        self.size = size;
        self.modulus = Modulus::new(size);
        Ok(self)
    }

    /// Hash the client's source port too (`mh-port`).
    pub fn with_port(mut self, port: bool) -> Self {
        self.port = port;
        self
    }

    /// Probe other slots when the client's is not usable (`mh-fallback`).
    pub fn with_fallback(mut self, fallback: bool) -> Self {
        self.fallback = fallback;
        self
    }

    /// The number of slots.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The kernel's `IP_VS_MH_TAB_BITS` for this size: half the config
    /// index, whose values 8..=17 select the sizes in order.
    fn weight_bits(&self) -> u32 {
        let index = Self::SIZES
            .iter()
            .position(|&s| s == self.size)
            .unwrap_or(4);
        (8 + index as u32) / 2
    }

    /// The permutation of a backend at `addr`: `(offset, skip)`.
    pub fn permutation(&self, addr: SocketAddr) -> (u32, u32) {
        let ip = fold_ip(addr.ip());
        let offset = hashkey(KEY1, ip, addr.port(), 0) % self.size;
        let skip = hashkey(KEY2, ip, addr.port(), 0) % (self.size - 1) + 1;
        (offset, skip)
    }

    /// The slot of a client: `hash1(ip, port) mod M`.
    pub fn slot(&self, client: SocketAddr) -> u32 {
        let port = if self.port { client.port() } else { 0 };
        self.modulus
            .rem(hashkey(KEY1, fold_ip(client.ip()), port, 0))
    }

    /// The owner of each slot of the table prepared for `snap`, slot by
    /// slot (`None` for an empty slot), or `None` if `snap` has no table of
    /// this scheduler (it comes from a pool it is not attached to).
    pub fn owners<'s>(
        &self,
        snap: &'s Snapshot,
    ) -> Option<impl Iterator<Item = Option<&'s Member>> + 's> {
        Table::of(snap, self.kind()).map(|t| t.owners(snap))
    }

    fn kind(&self) -> Kind {
        Kind::Maglev { size: self.size }
    }

    /// `ip_vs_mh_permutate` and `ip_vs_mh_populate`.
    fn build(&self, members: &[Member]) -> Vec<u32> {
        let m = self.size as usize;
        let mut slots = vec![EMPTY; m];
        let g = members
            .iter()
            .map(Member::last_weight)
            .filter(|&w| w > 0)
            .fold(0, gcd);
        if members.len() > m || g == 0 {
            return slots;
        }
        let max = members.iter().map(Member::last_weight).max().unwrap_or(0);
        let rshift = fls(max / g).saturating_sub(self.weight_bits());
        // (next preferred slot, skip, turns) per backend, in pool order.
        let mut setup: Vec<(usize, usize, u32)> = members
            .iter()
            .map(|b| {
                let (offset, skip) = self.permutation(b.addr());
                let lw = b.last_weight();
                let turns = ((lw / g) >> rshift).max(u32::from(lw != 0));
                (offset as usize, skip as usize, turns)
            })
            .collect();
        let (mut filled, mut i, mut placed) = (0, 0, 0);
        while filled < m {
            let (perm, skip, turns) = &mut setup[i];
            if *turns == 0 {
                i = (i + 1) % members.len();
                continue;
            }
            while slots[*perm] != EMPTY {
                *perm += *skip;
                if *perm >= m {
                    *perm -= m;
                }
            }
            slots[*perm] = i as u32;
            filled += 1;
            placed += 1;
            if placed >= *turns {
                placed = 0;
                i = (i + 1) % members.len();
            }
        }
        slots
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let table = Table::of(snap, self.kind())?;
        let client = ctx.client();
        let ip = fold_ip(client.ip());
        let port = if self.port { client.port() } else { 0 };
        let m = self.size;
        let modulus = self.modulus;
        let slot = modulus.rem(hashkey(KEY1, ip, port, 0));
        why!(
            t,
            "mh: client {} port {port} -> slot {slot} of {m}",
            client.ip()
        );
        let probes = self.fallback.then(|| {
            (0..m).map(move |k| modulus.rem(hashkey(KEY1, ip, port, (k + slot) % m)) as usize)
        });
        table.lookup(snap, ctx, "slot", slot as usize, probes, t)
    }
}

impl Scheduler for Maglev {
    fn name(&self) -> &'static str {
        "mh"
    }

    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Option<Tables> {
        Some(Table::prepare(self.kind(), next, prev, change, |m| {
            self.build(m)
        }))
    }

    pick_via_select!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use siphasher::sip::SipHasher13;
    use std::hash::Hasher;

    #[test]
    fn hsiphash_matches_the_kernel_kunit_vector() {
        // lib/test_siphash.c: 4-byte input 00 01 02 03 under the key
        // 00 01 .. 0f, on 64-bit builds.
        let (k0, k1) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        let mut h = SipHasher13::new_with_keys(k0, k1);
        h.write(&[0, 1, 2, 3]);
        assert_eq!(h.finish() as u32, 0x88d3_8328);
        assert_eq!(
            sip13_u32(k0, k1, u32::from_le_bytes([0, 1, 2, 3])),
            0x88d3_8328
        );
    }

    #[test]
    fn the_one_block_siphash_is_siphash_1_3() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            // splitmix64 steps for keys and values
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let (k, v) = (x ^ (x >> 29), (x >> 17) as u32);
            for (k0, k1) in [(KEY1, KEY1), (KEY2, KEY2), (k, k.rotate_left(7))] {
                let mut h = SipHasher13::new_with_keys(k0, k1);
                h.write(&v.to_le_bytes());
                assert_eq!(
                    sip13_u32(k0, k1, v),
                    h.finish() as u32,
                    "{k0:x} {k1:x} {v:x}"
                );
            }
        }
    }

    #[test]
    fn client_hashes_match_the_vectors() {
        assert_eq!(hashkey(KEY1, 0xC0A8_010A, 0, 0), 0xD5E9_59B6);
        assert_eq!(hashkey(KEY1, 0x0808_0808, 0, 0), 0x3251_70EC);
    }

    #[test]
    fn weight_bits_follow_the_config_index() {
        let bits = |s| Maglev::new().with_size(s).unwrap().weight_bits();
        assert_eq!(bits(251), 4);
        assert_eq!(bits(4093), 6);
        assert_eq!(bits(131071), 8);
    }

    #[test]
    fn the_multiplied_remainder_is_the_remainder() {
        let mut x: u32 = 0x9E37_79B9;
        for m in Maglev::SIZES.into_iter().chain([1, 2, 3, 7, u32::MAX]) {
            let r = Modulus::new(m);
            for v in [0, 1, m - 1, m, m.wrapping_add(1), u32::MAX, u32::MAX - 1] {
                assert_eq!(r.rem(v), v % m, "{v} mod {m}");
            }
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                assert_eq!(r.rem(x), x % m, "{x} mod {m}");
            }
        }
    }

    #[test]
    fn fls_and_gcd() {
        assert_eq!((fls(0), fls(1), fls(64), fls(65535)), (0, 1, 7, 16));
        assert_eq!((gcd(0, 6), gcd(4, 6), gcd(7, 13)), (6, 2, 1));
    }
}
