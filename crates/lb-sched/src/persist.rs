//! Persistence (LVS `ipvsadm -p TIMEOUT -M NETMASK`), a wrapper around any
//! scheduler, as `ip_vs_sched_persist()` in the kernel's `ip_vs_core.c` and
//! the template rules of `ip_vs_conn.c` (`ip_vs_check_template`).
//!
//! A *template* per client key (`client IPv4 & netmask`, or the full IPv6
//! address) remembers the backend chosen for that client. While it is valid
//! the inner scheduler is bypassed; see [`Persist`] for the exact rule and
//! `SCHEDULERS.md` ("Persistence") for the contract. Everything but the
//! template lookup (name, tables, outcomes, features) is the inner scheduler's.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use lb_core::{BackendId, Change, Ctx, Health, Hold, Member, Outcome, Pick, Snapshot, Tables};

use crate::keyed::{nanos, IpTable, Placed};
use crate::trace::{why, Explain, NoTrace, Trace};
use crate::{BoxScheduler, Features, Scheduler};

/// Templates reserved up front, so that the pick path does not allocate
/// until this many clients are remembered at once.
const RESERVED_TEMPLATES: usize = 4096;

/// What a template remembers for one client key.
#[derive(Debug)]
struct Template {
    backend: Placed,
    /// The time of the latest connection that used or created it, in
    /// nanoseconds.
    last_use: u64,
    /// Counts the open connections this template placed.
    hold: Hold,
}

/// Why a template cannot be used at a lookup.
enum Unusable {
    Removed,
    Down,
    Quiesced(&'static str),
    Expired,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Removed => f.write_str("its backend was removed"),
            Unusable::Down => f.write_str("its backend is down"),
            Unusable::Quiesced(how) => {
                write!(f, "its backend is {how} and expire_quiescent is set")
            }
            Unusable::Expired => f.write_str("it expired and no connection it placed is open"),
        }
    }
}

/// LVS persistence around any scheduler.
///
/// On a new connection the client's key is looked up. A template is used if
/// and only if its backend is still in the snapshot, up, has weight > 0 (a
/// quiesced or draining backend keeps its templates unless
/// [`with_expire_quiescent`](Self::with_expire_quiescent) is set), and
/// `now < last_use + timeout` or a connection it placed is still open (idle
/// counts as open). A template found unusable is dropped and the inner
/// scheduler chooses; when it chooses nothing, no template is created. Each
/// connection that uses or creates a template sets its `last_use` to now.
/// Templates expire exactly at lookup: no timer, no grace period.
///
/// The template's backend is used even when the inner scheduler would skip
/// it (over its load, weight 0): that is the point of persistence. Only a
/// backend this request already [tried](Ctx::tried) is passed over, for that
/// pick only.
///
/// Cost: the template table is split into shards, each behind a lock owned
/// by this instance (room for 4096 IPv4 and 1024 IPv6 templates is reserved up front). Using a template allocates
/// nothing; creating one allocates its shared connection count, as the
/// kernel allocates a template connection.
///
/// ```
/// use std::time::Duration;
/// use lb_core::{Backend, Ctx, Pool};
/// use lb_sched::{Balancer, Persist};
///
/// let pool = Pool::new();
/// pool.add(Backend::new("a", "10.0.0.1:80".parse()?))?;
/// pool.add(Backend::new("b", "10.0.0.2:80".parse()?))?;
/// let sched = Persist::new(lb_sched::build("rr")?, Duration::from_secs(360))
///     .with_netmask("255.255.255.0".parse()?);
/// let lb = Balancer::new(pool, Box::new(sched));
///
/// let first = lb.connect(&Ctx::at("10.1.2.3:1000".parse()?, Duration::ZERO))?;
/// let same_net = lb.connect(&Ctx::at("10.1.2.200:1000".parse()?, Duration::ZERO))?;
/// let other = lb.connect(&Ctx::at("10.9.9.9:1000".parse()?, Duration::ZERO))?;
/// assert_eq!((&*first.name, &*same_net.name, &*other.name), ("a", "a", "b"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Persist {
    inner: BoxScheduler,
    timeout: Duration,
    netmask: u32,
    expire_quiescent: bool,
    templates: IpTable<Template>,
}

impl fmt::Debug for Persist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Persist")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .field("netmask", &Ipv4Addr::from(self.netmask))
            .field("expire_quiescent", &self.expire_quiescent)
            .field("templates", &self.templates.len())
            .finish()
    }
}

impl Persist {
    /// Persistence for `timeout` around `inner`, keyed on the whole client
    /// address (netmask 255.255.255.255), templates of quiesced backends kept.
    pub fn new(inner: BoxScheduler, timeout: Duration) -> Self {
        Persist {
            inner,
            timeout,
            netmask: u32::MAX,
            expire_quiescent: false,
            templates: IpTable::with_capacity(RESERVED_TEMPLATES),
        }
    }

    /// Key IPv4 clients on `client & netmask` (`ipvsadm -M`), so that a
    /// whole network shares one template. IPv6 clients stay keyed on their
    /// full address.
    pub fn with_netmask(mut self, netmask: Ipv4Addr) -> Self {
        self.netmask = u32::from(netmask);
        self
    }

    /// Drop the templates of a backend whose weight is 0 (or that drains),
    /// as the LVS sysctl `expire_quiescent_template=1` does. Off by default:
    /// a quiesced backend keeps its persistent clients.
    pub fn with_expire_quiescent(mut self, on: bool) -> Self {
        self.expire_quiescent = on;
        self
    }

    /// The template timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The IPv4 netmask clients are keyed on.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.netmask)
    }

    /// Whether templates of quiesced backends are dropped.
    pub fn expire_quiescent(&self) -> bool {
        self.expire_quiescent
    }

    /// The number of templates held (valid or not yet found expired).
    pub fn templates(&self) -> usize {
        self.templates.len()
    }

    fn key(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & self.netmask)),
            v6 => v6,
        }
    }

    fn expired(&self, t: &Template, now: u64) -> bool {
        now >= t.last_use.saturating_add(nanos(self.timeout)) && t.hold.open_conns() == 0
    }

    /// The template's backend if the template may be used at `now`.
    fn check<'s>(
        &self,
        snap: &'s Snapshot,
        t: &mut Template,
        now: u64,
    ) -> Result<&'s Member, Unusable> {
        let m = t.backend.find(snap).ok_or(Unusable::Removed)?;
        match m.health() {
            Health::Down => return Err(Unusable::Down),
            Health::Draining if self.expire_quiescent => {
                return Err(Unusable::Quiesced("draining"))
            }
            _ if m.weight() == 0 && self.expire_quiescent => {
                return Err(Unusable::Quiesced("at weight 0"))
            }
            _ => {}
        }
        if self.expired(t, now) {
            return Err(Unusable::Expired);
        }
        Ok(m)
    }

    /// The pick, with `inner` standing for the inner scheduler's pick or
    /// explanation.
    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
        inner: impl FnOnce(&mut T) -> Option<Pick<'s>>,
    ) -> Option<Pick<'s>> {
        let key = self.key(ctx.client_ip());
        let now = nanos(ctx.now());
        let mut templates = self.templates.lock(key);
        let mut retry_only = false;
        if let Some(tpl) = templates.get_mut() {
            match self.check(snap, tpl, now) {
                Ok(m) if ctx.was_tried(m.id()) => {
                    why!(
                        t,
                        "persist: template {key} -> {} skipped: already tried by this request",
                        m.name()
                    );
                    retry_only = true;
                }
                Ok(m) => {
                    why!(
                        t,
                        "persist: template {key} -> {} used (last use {}s, {} open conn(s)); last use now {}s",
                        m.name(),
                        tpl.last_use / 1_000_000_000,
                        tpl.hold.open_conns(),
                        now / 1_000_000_000
                    );
                    tpl.last_use = now;
                    return Some(Pick::with_hold(m, tpl.hold.clone()));
                }
                Err(reason) => {
                    why!(t, "persist: template {key} dropped: {reason}");
                    templates.remove();
                }
            }
        } else {
            why!(t, "persist: no template for {key}");
        }
        why!(t, "persist: asking {}", self.inner.name());
        let pick = inner(t);
        if retry_only {
            return pick;
        }
        let Some(pick) = pick else {
            why!(
                t,
                "persist: {} found no backend; no template created",
                self.inner.name()
            );
            return None;
        };
        let m = pick.member();
        if templates.is_full() {
            // Forget templates that can never be used again before the map
            // would grow; unobservable, since a lookup would drop them.
            templates.retain(|tpl| !self.expired(tpl, now));
        }
        let hold = Hold::new();
        templates.insert(Template {
            backend: Placed::of(snap, m),
            last_use: now,
            hold: hold.clone(),
        });
        why!(
            t,
            "persist: template {key} -> {} created (timeout {}s)",
            m.name(),
            self.timeout.as_secs()
        );
        Some(Pick::with_hold(m, hold))
    }
}

impl Scheduler for Persist {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, change: Change) -> Option<Tables> {
        self.inner.prepare(next, prev, change)
    }

    fn pick<'s>(&self, snap: &'s Snapshot, ctx: &Ctx<'_>) -> Option<Pick<'s>> {
        self.select(snap, ctx, &mut NoTrace, |_| self.inner.pick(snap, ctx))
    }

    fn explain<'s>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        why: &mut Explain,
    ) -> Option<Pick<'s>> {
        self.select(snap, ctx, why, |why| self.inner.explain(snap, ctx, why))
    }

    fn observe(
        &self,
        snap: &Snapshot,
        backend: BackendId,
        outcome: Outcome,
        latency: Duration,
        now: Duration,
    ) {
        self.inner.observe(snap, backend, outcome, latency, now);
    }

    fn features(&self) -> Features {
        self.inner.features()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_bucket_is_32_bytes() {
        // (IPv4 key, template): what a persistence hit reads.
        assert_eq!(std::mem::size_of::<(u32, Template)>(), 32);
    }
}
