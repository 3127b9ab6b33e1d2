//! `ip_hash`: nginx's client-address hashing, as
//! `ngx_http_upstream_ip_hash_module.c` (SCHEDULERS-NGINX.md section 6).

use std::net::IpAddr;

use lb_core::{Change, Ctx, Pick, Snapshot, Tables};

use super::{Upstream, MAX_REJECTS};
use crate::trace::{pick_via_select, why, Load, Trace};
use crate::{Features, Scheduler};

/// nginx's `ip_hash`: the client's address picks a primary by weight, so a
/// client keeps its backend while the pool is unchanged.
///
/// An IPv4 client is hashed by its first three octets only (its /24: every
/// address of `192.168.1.0/24` goes to the same backend); an IPv6 client,
/// IPv4-mapped ones included, by all 16 bytes. Ports, the destination and
/// the hash key play no part. A probe runs `h = (h * 113 + byte) mod 6271`
/// over the bytes, starting from 89 and then from the previous probe's `h`,
/// and walks the weights with `h mod T` (down and full primaries keep their
/// share). An unusable backend costs a probe; after 21 rejected probes, or
/// with fewer than two primaries, smooth weighted round robin decides.
/// Backups are never used (nginx refuses them with `ip_hash`).
#[derive(Debug, Default)]
pub struct IpHash;

impl IpHash {
    /// A new ip_hash.
    pub fn new() -> Self {
        IpHash
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let up = snap.tables::<Upstream>()?;
        let members = snap.members();
        if up.primaries < 2 || up.total == 0 {
            why!(
                t,
                "ip_hash: {} primaries, total weight {}",
                up.primaries,
                up.total
            );
            return up
                .round_robin(members, ctx, t)
                .map(|i| Pick::new(&members[i]));
        }
        let mut buf = [0u8; 16];
        let bytes: &[u8] = match ctx.client_ip() {
            IpAddr::V4(a) => {
                buf[..3].copy_from_slice(&a.octets()[..3]);
                &buf[..3]
            }
            IpAddr::V6(a) => {
                buf = a.octets();
                &buf
            }
        };
        let mut h: u32 = 89;
        for _ in 0..=MAX_REJECTS {
            h = bytes
                .iter()
                .fold(h, |h, &x| (h * 113 + u32::from(x)) % 6271);
            let w = u64::from(h) % up.total;
            let i = up.walk(w)?;
            let ok = ctx.usable(&members[i]);
            why!(
                t,
                "  probe h={h} w={w}: {} {}",
                Load(&members[i]),
                if ok { "usable" } else { "rejected" }
            );
            if ok {
                why!(t, "rule: ip_hash -> {}", members[i].name());
                return Some(Pick::new(&members[i]));
            }
        }
        why!(t, "ip_hash: {} probes rejected", MAX_REJECTS + 1);
        up.round_robin(members, ctx, t)
            .map(|i| Pick::new(&members[i]))
    }
}

impl Scheduler for IpHash {
    fn name(&self) -> &'static str {
        "ip_hash"
    }

    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Option<Tables> {
        Some(Upstream::prepare(next, prev, change, false))
    }

    fn features(&self) -> Features {
        Features::MAX_CONNS
    }

    pick_via_select!();
}
