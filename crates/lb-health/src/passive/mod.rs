//! Passive checks fed by real traffic: nginx `max_fails` and Envoy-style
//! outlier ejection, behind [`lb_core::Observer`].

mod max_fails;
mod outlier;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use lb_core::{BackendId, Observer, Outcome, Snapshot};
use parking_lot::{Mutex, MutexGuard, RwLock};
use tokio::sync::broadcast;
use tokio::time::Instant;

pub use max_fails::MaxFails;
pub use outlier::Outlier;

use crate::state::{Event, Reason};
use crate::supervisor::{Follower, Source, Supervisor};
use max_fails::NginxPeer;
use outlier::OutlierPeer;

/// Builds a [`PassiveHealth`].
#[derive(Debug)]
pub struct PassiveBuilder {
    sup: Supervisor,
    max_fails: Option<MaxFails>,
    outlier: Option<Outlier>,
}

impl PassiveBuilder {
    /// Count failures as nginx does (see [`MaxFails`]).
    pub fn max_fails(mut self, max_fails: u32, fail_timeout: Duration) -> Self {
        self.max_fails = Some(MaxFails::new(max_fails, fail_timeout));
        self
    }

    /// Eject on consecutive failures as Envoy does (see [`Outlier`]).
    pub fn outlier(mut self, outlier: Outlier) -> Self {
        self.outlier = Some(outlier);
        self
    }

    /// The detector, ready to be handed to forwarders as an
    /// `Arc<dyn lb_core::Observer>`.
    pub fn build(self) -> Arc<PassiveHealth> {
        self.sup.ensure_driver();
        let passive = Arc::new(PassiveHealth {
            nginx_src: self.sup.new_source(),
            outlier_src: self.sup.new_source(),
            slow_src: self.sup.new_source(),
            sup: self.sup,
            max_fails: self.max_fails,
            outlier: self.outlier,
            peers: RwLock::new(HashMap::new()),
            recovering: Mutex::new(Vec::new()),
            recovering_len: AtomicUsize::new(0),
            unclean: AtomicUsize::new(0),
            ejected: Mutex::new(HashMap::new()),
        });
        let follower: Weak<dyn Follower> = Arc::downgrade(&passive) as Weak<PassiveHealth>;
        passive.sup.follow(follower);
        passive
    }
}

/// Passive health checks fed by the outcomes of real traffic.
///
/// Forwarders report every attempt through [`Observer::observe`]; the
/// detector keeps nginx's `max_fails` accounting and Envoy-style outlier
/// ejection per backend and tells the [`Supervisor`], which takes failed
/// backends out of the pool and brings them back when their time is over.
///
/// **nginx effective weight.** Each failure lowers the backend's effective
/// weight by `weight / max_fails`; nginx raises it by one each time the
/// backend is considered by a smooth-WRR scan, that is on every request
/// while the backend is usable. This detector sees attempts, not scans, so
/// it raises the effective weight of every usable recovering backend by
/// one on each attempt it observes on any backend of the pool (before
/// counting that attempt's outcome): one observed attempt stands for one
/// scan. The weight reaches the pool through
/// [`Pool::set_effective_weight`](lb_core::Pool::set_effective_weight), at
/// most once per background write.
///
/// **With active checks** (a [`HealthChecker`](crate::HealthChecker) on
/// the same [`Supervisor`]) the checks drive re-admission, as in HAProxy:
/// a backend that `max_fails` takes out is marked down by the checker,
/// probed at its fast interval and back after `rise` successes, without
/// waiting for `fail_timeout` (which still ends the ejection if no check
/// runs); its failures and effective weight are then forgotten. And a
/// request that waits too long for its response head
/// ([`Observer::slow`]) ejects the backend at once, before the response
/// timeout, for the checks to confirm or undo (reason
/// [`Reason::SlowResponse`]). Without active checks slow signals are
/// ignored: nginx counts a timeout when it happens.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lb_core::{Backend, Observer, Outcome, Pool};
/// use lb_health::{Outlier, PassiveHealth};
///
/// let pool = Pool::new();
/// let a = pool.add(Backend::new("a", "10.0.0.1:80".parse()?))?;
/// pool.add(Backend::new("b", "10.0.0.2:80".parse()?))?;
/// let passive = PassiveHealth::builder(pool.clone())
///     .max_fails(1, Duration::from_secs(10))
///     .outlier(Outlier::default())
///     .build();
/// let observer: Arc<dyn Observer> = passive.clone();
/// observer.observe(a, Outcome::ConnectFailed, Duration::from_millis(3));
/// // Outside a tokio runtime the pool is written at once.
/// assert!(!pool.load().get(a).unwrap().is_up());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PassiveHealth {
    sup: Supervisor,
    max_fails: Option<MaxFails>,
    outlier: Option<Outlier>,
    nginx_src: Source,
    outlier_src: Source,
    slow_src: Source,
    peers: RwLock<HashMap<BackendId, Arc<Mutex<Peer>>>>,
    /// Backends whose nginx effective weight is below their weight.
    recovering: Mutex<Vec<BackendId>>,
    recovering_len: AtomicUsize,
    /// How many peers are not [clean](Peer::is_clean): while none is, and
    /// none recovers, a success changes nothing and is not even looked up.
    unclean: AtomicUsize,
    /// Ejected backends and the end of their ejection (for the cap).
    ejected: Mutex<HashMap<BackendId, Instant>>,
}

#[derive(Debug, Default)]
struct Peer {
    nginx: NginxPeer,
    outlier: OutlierPeer,
    /// Dropped from the map (its backend left the pool): no longer counted.
    gone: bool,
}

impl Peer {
    /// Nothing to forget: no failure counted, no weight lowered, no run of
    /// failures, no ejection. A success on a clean peer changes nothing
    /// (nginx's `checked` matters only once `fails` is above 0, and a
    /// failure sets it).
    fn is_clean(&self) -> bool {
        self.nginx.fails == 0
            && self.nginx.ew.is_none()
            && self.outlier.consecutive == 0
            && self.outlier.ejected_until.is_none()
    }
}

/// A locked peer that keeps [`PassiveHealth::unclean`] right when it is
/// released: every change to a peer goes through one.
struct PeerGuard<'a> {
    peer: MutexGuard<'a, Peer>,
    was_clean: bool,
    unclean: &'a AtomicUsize,
}

impl std::ops::Deref for PeerGuard<'_> {
    type Target = Peer;
    fn deref(&self) -> &Peer {
        &self.peer
    }
}

impl std::ops::DerefMut for PeerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Peer {
        &mut self.peer
    }
}

impl Drop for PeerGuard<'_> {
    fn drop(&mut self) {
        if self.peer.gone {
            return;
        }
        match (self.was_clean, self.peer.is_clean()) {
            (true, false) => {
                self.unclean.fetch_add(1, Ordering::AcqRel);
            }
            (false, true) => {
                self.unclean.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
    }
}

impl fmt::Debug for PassiveHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassiveHealth")
            .field("max_fails", &self.max_fails)
            .field("outlier", &self.outlier)
            .field("peers", &self.peers.read().len())
            .finish()
    }
}

impl PassiveHealth {
    /// Start building a detector for a pool (or a [`Supervisor`]'s pool).
    pub fn builder(target: impl Into<Supervisor>) -> PassiveBuilder {
        PassiveBuilder {
            sup: target.into(),
            max_fails: None,
            outlier: None,
        }
    }

    /// Receive every state change of the pool's backends.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.sup.events()
    }

    /// The supervisor this detector reports to.
    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    fn peer(&self, id: BackendId, snap: &Snapshot) -> Arc<Mutex<Peer>> {
        if let Some(p) = self.peers.read().get(&id) {
            return p.clone();
        }
        let mut peers = self.peers.write();
        if peers.len() > snap.len() + 16 {
            peers.retain(|id, peer| {
                if snap.get(*id).is_some() {
                    return true;
                }
                let mut p = peer.lock();
                if !p.gone && !p.is_clean() {
                    self.unclean.fetch_sub(1, Ordering::AcqRel);
                }
                p.gone = true;
                false
            });
        }
        peers.entry(id).or_default().clone()
    }

    /// Lock `peer` for a change.
    fn lock<'a>(&'a self, peer: &'a Mutex<Peer>) -> PeerGuard<'a> {
        let peer = peer.lock();
        PeerGuard {
            was_clean: peer.is_clean(),
            peer,
            unclean: &self.unclean,
        }
    }

    /// nginx: the scan that chose this attempt raised every usable
    /// recovering backend's effective weight by one.
    fn scan(
        &self,
        snap: &Snapshot,
        now: u64,
        cfg: &MaxFails,
        weights: &mut Vec<(BackendId, Option<u32>)>,
    ) {
        let mut rec = self.recovering.lock();
        rec.retain(|&id| {
            let Some(m) = snap.get(id) else { return false };
            let Some(peer) = self.peers.read().get(&id).cloned() else {
                return false;
            };
            let mut p = self.lock(&peer);
            if p.nginx.usable(now, cfg) && p.nginx.bump(m.configured_weight()) {
                weights.push((id, p.nginx.ew));
            }
            p.nginx.ew.is_some()
        });
        self.recovering_len.store(rec.len(), Ordering::Relaxed);
    }

    fn observe_nginx(
        &self,
        snap: &Snapshot,
        id: BackendId,
        ok: bool,
        now: Instant,
        cfg: &MaxFails,
    ) {
        let Some(m) = snap.get(id) else { return };
        let secs = self.sup.seconds(now);
        let mut weights = Vec::new();
        if self.recovering_len.load(Ordering::Relaxed) > 0 {
            self.scan(snap, secs, cfg, &mut weights);
        }
        let peer = self.peer(id, snap);
        let mut p = self.lock(&peer);
        let single = snap.len() == 1 && !m.is_backup();
        let mut disabled = None;
        if single {
            p.nginx.fails = 0;
        } else {
            p.nginx.select(secs, cfg);
            if ok {
                p.nginx.succeed();
            } else {
                let before = p.nginx.ew;
                if p.nginx.fail(secs, cfg, m.configured_weight()) {
                    disabled = Some((p.nginx.fails, p.nginx.back_at(cfg)));
                }
                if p.nginx.ew != before {
                    weights.push((id, p.nginx.ew));
                }
            }
        }
        let recovering = p.nginx.ew.is_some();
        drop(p);
        if recovering {
            let mut rec = self.recovering.lock();
            if !rec.contains(&id) {
                rec.push(id);
                self.recovering_len.store(rec.len(), Ordering::Relaxed);
            }
        }
        self.sup.set_passive_weights(&weights);
        if let Some((fails, back)) = disabled {
            let reason = Reason::MaxFails {
                fails,
                fail_timeout: Duration::from_secs(cfg.timeout_secs()),
            };
            let at = self.sup.at_second(back);
            let window = at.saturating_duration_since(now);
            let until = Some((at, Reason::FailTimeoutElapsed));
            self.sup.eject(id, self.nginx_src, reason, until, window);
        }
    }

    fn observe_outlier(
        &self,
        snap: &Snapshot,
        id: BackendId,
        ok: bool,
        now: Instant,
        cfg: &Outlier,
    ) {
        let peer = self.peer(id, snap);
        let mut p = self.lock(&peer);
        let Some(consecutive) = p.outlier.observe(ok, now, cfg) else {
            return;
        };
        let mut ejected = self.ejected.lock();
        ejected.retain(|_, until| *until > now);
        if !cfg.may_eject(ejected.len(), snap.len()) {
            tracing::debug!(
                id = id.get(),
                ejected = ejected.len(),
                total = snap.len(),
                "lb-health: outlier not ejected: max_ejection_percent reached"
            );
            return;
        }
        let (ejections, duration) = p.outlier.eject(now, cfg);
        ejected.insert(id, now + duration);
        drop(ejected);
        drop(p);
        let reason = Reason::Ejected {
            consecutive,
            ejections,
            duration,
        };
        let until = (now + duration, Reason::EjectionEnded);
        self.sup
            .vote_down(id, self.outlier_src, reason, Some(until));
    }
}

impl Follower for PassiveHealth {
    /// Active checks brought `id` back: forget its nginx failures and
    /// effective-weight drop (a slow start, if set, ramps it instead).
    fn readmitted(&self, id: BackendId) {
        let Some(peer) = self.peers.read().get(&id).cloned() else {
            return;
        };
        let mut p = self.lock(&peer);
        let had_weight = p.nginx.ew.take().is_some();
        p.nginx.fails = 0;
        drop(p);
        if had_weight {
            self.sup.set_passive_weights(&[(id, None)]);
        }
    }
}

impl Observer for PassiveHealth {
    /// A request to `backend` waited `waited` for its head: with active
    /// checks on it, eject it now (see above); otherwise nothing. A pool of
    /// one backend (no backup) is left alone, as `max_fails` leaves it.
    fn slow(&self, backend: BackendId, waited: Duration) {
        let snap = self.sup.pool().load();
        let Some(m) = snap.get(backend) else { return };
        if !m.is_up() || (snap.len() == 1 && !m.is_backup()) {
            return; // already out, or the only one
        }
        if !self.sup.actively_checked(backend) {
            return;
        }
        let window = self.max_fails.unwrap_or_default().fail_timeout;
        let until = Some((Instant::now() + window, Reason::FailTimeoutElapsed));
        let reason = Reason::SlowResponse { waited };
        self.sup
            .eject(backend, self.slow_src, reason, until, window);
    }

    fn observe(&self, backend: BackendId, outcome: Outcome, _latency: Duration) {
        let ok = outcome.is_success();
        if ok
            && self.unclean.load(Ordering::Acquire) == 0
            && self.recovering_len.load(Ordering::Acquire) == 0
        {
            // Every peer is clean and none recovers: nothing to count.
            return;
        }
        let snap = self.sup.pool().load();
        if snap.get(backend).is_none() {
            return; // removed meanwhile, or never in this pool
        }
        let now = Instant::now();
        if let Some(cfg) = &self.max_fails {
            self.observe_nginx(&snap, backend, ok, now, cfg);
        }
        if let Some(cfg) = &self.outlier {
            self.observe_outlier(&snap, backend, ok, now, cfg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::{Backend, Pool};

    fn unclean(p: &PassiveHealth) -> usize {
        p.unclean.load(Ordering::Acquire)
    }

    /// A success is skipped only while every peer is clean; one that
    /// matters (it ends a run of failures) is still counted, and the count
    /// of unclean peers follows every change.
    #[test]
    fn successes_are_skipped_only_while_every_peer_is_clean() {
        let pool = Pool::new();
        let a = pool
            .add(Backend::new("a", "10.0.0.1:80".parse().unwrap()))
            .unwrap();
        let b = pool
            .add(Backend::new("b", "10.0.0.2:80".parse().unwrap()))
            .unwrap();
        let outlier = Outlier::default().consecutive(2).max_ejection_percent(100);
        let passive = PassiveHealth::builder(pool.clone())
            .outlier(outlier)
            .build();
        let ms = Duration::from_millis(1);
        passive.observe(a, Outcome::Success, ms);
        assert_eq!(
            passive.peers.read().len(),
            0,
            "a clean success is not looked up"
        );
        passive.observe(a, Outcome::ConnectFailed, ms);
        assert_eq!(unclean(&passive), 1);
        passive.observe(a, Outcome::Success, ms);
        assert_eq!(unclean(&passive), 0, "the success ended a's run");
        passive.observe(a, Outcome::ConnectFailed, ms);
        passive.observe(b, Outcome::Success, ms);
        assert_eq!(
            unclean(&passive),
            1,
            "b's success was counted (a is unclean)"
        );
        assert!(
            pool.load().get(a).unwrap().is_up(),
            "one failure since the success"
        );
        passive.observe(a, Outcome::ConnectFailed, ms);
        assert!(
            !pool.load().get(a).unwrap().is_up(),
            "two in a row: ejected"
        );
        assert_eq!(unclean(&passive), 1, "a is ejected: unclean");
        // a leaves the pool; backends that come and go make the map forget
        // it (and them) once it holds 16 more peers than the pool.
        pool.remove(a).unwrap();
        for i in 0..20u8 {
            let id = pool
                .add(Backend::new(format!("n{i}"), ([10, 0, 1, i], 80).into()))
                .unwrap();
            passive.observe(id, Outcome::ConnectFailed, ms);
            passive.observe(id, Outcome::Success, ms);
            pool.remove(id).unwrap();
        }
        assert!(
            passive.peers.read().len() < 20,
            "removed peers were forgotten"
        );
        assert_eq!(unclean(&passive), 0, "a forgotten peer no longer counts");
    }
}
