//! What a pick may look at.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::backend::{BackendId, Member};

/// The process's monotonic clock as a [`Duration`] since an arbitrary fixed
/// origin (the first call). This is the clock [`Ctx::new`] reads; tests and
/// replays pass their own time with [`Ctx::with_now`].
pub fn monotonic_now() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    Instant::now().saturating_duration_since(origin)
}

/// The context of one pick: who is asking, for what, and when.
///
/// A scheduler sees the world only through a [`Snapshot`](crate::Snapshot)
/// and a `Ctx`. Building one allocates nothing: the hash key and the set of
/// backends this request already tried are borrowed.
///
/// ```
/// use lb_core::Ctx;
/// use std::time::Duration;
/// let ctx = Ctx::new("192.0.2.7:40000".parse().unwrap())
///     .with_key(b"/index.html")
///     .with_now(Duration::from_secs(5));
/// assert_eq!(ctx.key(), Some(&b"/index.html"[..]));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    client: SocketAddr,
    dest: Option<SocketAddr>,
    key: Option<&'a [u8]>,
    now: Duration,
    tried: &'a [BackendId],
}

impl<'a> Ctx<'a> {
    /// A context for `client`, at the current [`monotonic_now`].
    pub fn new(client: SocketAddr) -> Self {
        Self::at(client, monotonic_now())
    }

    /// A context for `client` at a given time (virtual clocks, replays).
    pub fn at(client: SocketAddr, now: Duration) -> Self {
        Ctx {
            client,
            dest: None,
            key: None,
            now,
            tried: &[],
        }
    }

    /// Set the destination address (what dh, lblc and lblcr key on).
    pub fn with_dest(mut self, dest: SocketAddr) -> Self {
        self.dest = Some(dest);
        self
    }

    /// Set the hash key (what nginx's `hash` keys on: a URI, a header...).
    pub fn with_key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Set the time.
    pub fn with_now(mut self, now: Duration) -> Self {
        self.now = now;
        self
    }

    /// Backends this request already tried: no scheduler returns them
    /// (nginx's per-request `tried` set, for retries).
    pub fn with_tried(mut self, tried: &'a [BackendId]) -> Self {
        self.tried = tried;
        self
    }

    /// The client's address.
    #[inline]
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// The client's IP.
    #[inline]
    pub fn client_ip(&self) -> IpAddr {
        self.client.ip()
    }

    /// The destination, if known.
    #[inline]
    pub fn dest(&self) -> Option<SocketAddr> {
        self.dest
    }

    /// The hash key, if any.
    #[inline]
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The time of the pick.
    #[inline]
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The backends already tried.
    #[inline]
    pub fn tried(&self) -> &'a [BackendId] {
        self.tried
    }

    /// Whether `id` was already tried by this request.
    #[inline]
    pub fn was_tried(&self, id: BackendId) -> bool {
        !self.tried.is_empty() && self.tried.contains(&id)
    }

    /// Whether `m` may take this new connection: eligible (up, weight > 0,
    /// under its limit) and not already tried. Every scheduler uses this one
    /// test.
    #[inline]
    pub fn usable(&self, m: &Member) -> bool {
        m.is_eligible() && !self.was_tried(m.id())
    }
}
