//! Backends: what a user adds to a pool, and what a snapshot shows of them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::counters::Counters;
use crate::guard::ConnGuard;

/// The largest weight a backend may have (ipvsadm's and nginx's range).
pub const MAX_WEIGHT: u32 = 65_535;

/// The largest per-backend connection limit.
pub const MAX_CONNS: u32 = 65_535;

/// The stable identity of a backend inside one [`Pool`](crate::Pool).
///
/// Ids are handed out in increasing order and never reused, so pool order is
/// id order: a backend added later always has a larger id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(u32);

impl BackendId {
    /// The id as a number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Rebuild an id from [`get`](Self::get), e.g. after storing it in an
    /// atomic. A number the pool never handed out names no backend.
    pub fn from_raw(n: u32) -> Self {
        BackendId(n)
    }

    pub(crate) fn new(n: u32) -> Self {
        BackendId(n)
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Health of a backend as the pool sees it.
///
/// Only [`Health::Up`] backends receive new connections. Open connections on
/// a backend that goes down or drains carry on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Health {
    /// Serving.
    #[default]
    Up,
    /// Failed (a health checker said so, or an operator): nothing new, and
    /// persistence templates pointing at it are dropped.
    Down,
    /// Taken out by an operator while its connections finish: nothing new,
    /// like weight 0 (persistence templates behave as for a quiesced backend).
    Draining,
}

impl Health {
    /// The word `ipvsadm`-style listings print.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Draining => "draining",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend to add to a pool: a name (its identity), an address and its
/// settings. Values are checked when the backend is added.
///
/// ```
/// use lb_core::Backend;
/// let b = Backend::new("web1", "10.0.0.1:80".parse().unwrap()).with_weight(2);
/// assert_eq!(b.weight(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct Backend {
    pub(crate) name: Arc<str>,
    pub(crate) addr: SocketAddr,
    pub(crate) server: Option<Arc<str>>,
    pub(crate) weight: u64,
    pub(crate) health: Health,
    pub(crate) backup: bool,
    pub(crate) max_conns: u64,
}

impl Backend {
    /// A backend of weight 1, up, no connection limit, not a backup.
    pub fn new(name: impl Into<Arc<str>>, addr: SocketAddr) -> Self {
        Backend {
            name: name.into(),
            addr,
            server: None,
            weight: 1,
            health: Health::Up,
            backup: false,
            max_conns: 0,
        }
    }

    /// Set the weight (`0..=65535`; 0 quiesces: no new connections).
    pub fn with_weight(mut self, weight: u64) -> Self {
        self.weight = weight;
        self
    }

    /// Set the initial health.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Mark as a backup server (nginx `backup`): used only when no primary is usable.
    pub fn with_backup(mut self, backup: bool) -> Self {
        self.backup = backup;
        self
    }

    /// Limit open connections (nginx `max_conns`; 0 = no limit).
    pub fn with_max_conns(mut self, max_conns: u64) -> Self {
        self.max_conns = max_conns;
        self
    }

    /// The server text as configured (nginx's `server` argument), which
    /// consistent hashing hashes. Defaults to the address as `IP:PORT`.
    pub fn with_server_text(mut self, text: impl Into<Arc<str>>) -> Self {
        self.server = Some(text.into());
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The weight asked for.
    pub fn weight(&self) -> u64 {
        self.weight
    }
}

/// A backend as a [`Snapshot`](crate::Snapshot) shows it: settings frozen at
/// the snapshot, live counters shared with every other snapshot.
#[derive(Clone, Debug)]
pub struct Member {
    pub(crate) id: BackendId,
    pub(crate) name: Arc<str>,
    pub(crate) addr: SocketAddr,
    pub(crate) server: Arc<str>,
    pub(crate) weight: u32,
    pub(crate) configured_weight: u32,
    pub(crate) last_weight: u32,
    pub(crate) health: Health,
    pub(crate) backup: bool,
    pub(crate) max_conns: u32,
    pub(crate) counters: Arc<Counters>,
}

impl Member {
    /// The backend's id.
    #[inline]
    pub fn id(&self) -> BackendId {
        self.id
    }

    /// The backend's name (its identity in configuration and output).
    #[inline]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend's name as a shared string (cheap to keep).
    #[inline]
    pub fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }

    /// The backend's address.
    #[inline]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server text consistent hashing hashes (see [`Backend::with_server_text`]).
    #[inline]
    pub fn server_text(&self) -> &str {
        &self.server
    }

    /// The weight schedulers use: the configured weight, or the effective
    /// weight a health checker set during slow start.
    #[inline]
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The weight as configured by the user.
    #[inline]
    pub fn configured_weight(&self) -> u32 {
        self.configured_weight
    }

    /// The latest non-zero configured weight (LVS `last_weight`; Maglev
    /// builds its table from it so quiescing keeps a backend's slots).
    #[inline]
    pub fn last_weight(&self) -> u32 {
        self.last_weight
    }

    /// The backend's health.
    #[inline]
    pub fn health(&self) -> Health {
        self.health
    }

    /// Whether health is [`Health::Up`].
    #[inline]
    pub fn is_up(&self) -> bool {
        self.health == Health::Up
    }

    /// Whether this is a backup server.
    #[inline]
    pub fn is_backup(&self) -> bool {
        self.backup
    }

    /// The connection limit (0 = none).
    #[inline]
    pub fn max_conns(&self) -> u32 {
        self.max_conns
    }

    /// The live counters.
    #[inline]
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Active connections.
    #[inline]
    pub fn active(&self) -> u32 {
        self.counters.active()
    }

    /// Inactive connections.
    #[inline]
    pub fn inactive(&self) -> u32 {
        self.counters.inactive()
    }

    /// All open connections, active and inactive.
    #[inline]
    pub fn conns(&self) -> u64 {
        self.counters.conns()
    }

    /// Whether another connection fits under `max_conns`.
    #[inline]
    pub fn has_room(&self) -> bool {
        self.max_conns == 0 || self.conns() < u64::from(self.max_conns)
    }

    /// Eligible for a new connection: up, weight > 0 and under its limit.
    #[inline]
    pub fn is_eligible(&self) -> bool {
        self.health == Health::Up && self.weight > 0 && self.has_room()
    }

    /// LVS's load measure for lc, wlc, lblc, lblcr and twos:
    /// `256 * active + inactive`.
    #[inline]
    pub fn lvs_overhead(&self) -> u64 {
        let (a, i) = self.counters.load();
        (u64::from(a) << 8) + u64::from(i)
    }

    /// Open a connection on this backend now, whatever its limit: the
    /// returned guard counts it active until it is idled or dropped.
    #[inline]
    pub fn connect(&self) -> ConnGuard {
        ConnGuard::open(self.counters.clone(), None)
    }

    /// Open a connection only if it fits under `max_conns`, reserving the
    /// slot atomically (several threads can never overshoot the limit).
    #[inline]
    pub fn try_connect(&self) -> Option<ConnGuard> {
        ConnGuard::try_open(self.counters.clone(), self.max_conns, None)
    }
}
