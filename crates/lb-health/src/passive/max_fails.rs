//! nginx's passive failure accounting: `max_fails` within `fail_timeout`
//! (`ngx_http_upstream_round_robin.c`: `ngx_http_upstream_get_peer`,
//! `ngx_http_upstream_free_round_robin_peer`; semantics B.1).

use std::time::Duration;

/// nginx's `max_fails` and `fail_timeout` (defaults 1 and 10 s).
///
/// A backend that fails `max_fails` times, each failure within
/// `fail_timeout` of the previous one, is out until more than
/// `fail_timeout` has passed since its last failure; then traffic probes
/// it again. Each failure also lowers its effective weight by
/// `weight / max_fails` (integer division), which recovers by one per
/// attempt the pool serves. `max_fails = 0` turns accounting off, and a
/// pool of exactly one backend (no backup) ignores it, as nginx does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxFails {
    /// Failures that take a backend out (0: never).
    pub max_fails: u32,
    /// The window and the time out, kept in whole seconds (rounded up).
    pub fail_timeout: Duration,
}

impl Default for MaxFails {
    fn default() -> Self {
        MaxFails {
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
        }
    }
}

impl MaxFails {
    /// `max_fails` failures within `fail_timeout`.
    pub fn new(max_fails: u32, fail_timeout: Duration) -> Self {
        MaxFails {
            max_fails,
            fail_timeout,
        }
    }

    /// `fail_timeout` in whole seconds, rounded up.
    pub(crate) fn timeout_secs(&self) -> u64 {
        let d = self.fail_timeout;
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

/// One peer's nginx accounting, on nginx's whole-second clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NginxPeer {
    pub(crate) fails: u32,
    pub(crate) accessed: u64,
    pub(crate) checked: u64,
    /// The effective weight while below the configured one.
    pub(crate) ew: Option<u32>,
}

impl NginxPeer {
    /// nginx's usable test, the `max_fails` part.
    pub(crate) fn usable(&self, now: u64, cfg: &MaxFails) -> bool {
        !(cfg.max_fails != 0
            && self.fails >= cfg.max_fails
            && now.saturating_sub(self.checked) <= cfg.timeout_secs())
    }

    /// The peer was selected at `now`.
    pub(crate) fn select(&mut self, now: u64, cfg: &MaxFails) {
        if now.saturating_sub(self.checked) > cfg.timeout_secs() {
            self.checked = now;
        }
    }

    /// The attempt failed at `now`; returns whether the peer is now out
    /// ("temporarily disabled").
    pub(crate) fn fail(&mut self, now: u64, cfg: &MaxFails, weight: u32) -> bool {
        self.fails = self.fails.saturating_add(1);
        self.accessed = now;
        self.checked = now;
        if cfg.max_fails == 0 {
            return false;
        }
        let ew = self.ew.unwrap_or(weight).min(weight);
        let ew = ew.saturating_sub(weight / cfg.max_fails);
        self.ew = (ew < weight).then_some(ew);
        self.fails >= cfg.max_fails
    }

    /// The attempt succeeded: a success after the window resets the count.
    pub(crate) fn succeed(&mut self) {
        if self.accessed < self.checked {
            self.fails = 0;
        }
    }

    /// The peer was considered by a scan: its effective weight grows by one
    /// towards `weight`. Returns whether it changed.
    pub(crate) fn bump(&mut self, weight: u32) -> bool {
        match self.ew {
            Some(ew) => {
                let next = ew.saturating_add(1);
                self.ew = (next < weight).then_some(next);
                true
            }
            None => false,
        }
    }

    /// The first second at which the peer is usable again.
    pub(crate) fn back_at(&self, cfg: &MaxFails) -> u64 {
        self.checked + cfg.timeout_secs() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NGX-FAIL-1: weight 6, max_fails 3, fail_timeout 10, in whole seconds.
    fn attempt(p: &mut NginxPeer, cfg: &MaxFails, now: u64, ok: bool) -> bool {
        assert!(p.usable(now, cfg), "t={now}: expected usable");
        p.select(now, cfg);
        if ok {
            p.succeed();
            false
        } else {
            p.fail(now, cfg, 6)
        }
    }

    #[test]
    fn ngx_fail_1_timeline() {
        let cfg = MaxFails::new(3, Duration::from_secs(10));
        let mut p = NginxPeer::default();
        assert!(!attempt(&mut p, &cfg, 100, false));
        assert_eq!(
            (p.fails, p.accessed, p.checked, p.ew),
            (1, 100, 100, Some(4))
        );
        attempt(&mut p, &cfg, 105, true);
        assert_eq!(p.fails, 1, "a success inside the window keeps the count");
        assert_eq!(p.checked, 100);
        assert!(!attempt(&mut p, &cfg, 106, false));
        assert_eq!((p.fails, p.checked, p.ew), (2, 106, Some(2)));
        assert!(
            attempt(&mut p, &cfg, 107, false),
            "third failure: temporarily disabled"
        );
        assert_eq!((p.fails, p.checked, p.ew), (3, 107, Some(0)));
        for t in 108..=117 {
            assert!(!p.usable(t, &cfg), "t={t}: out");
        }
        assert_eq!(p.back_at(&cfg), 118);
        // (a) the probe at 118 succeeds.
        let mut a = p;
        attempt(&mut a, &cfg, 118, true);
        assert_eq!((a.checked, a.fails), (118, 0));
        // (b) it fails instead.
        let mut b = p;
        assert!(attempt(&mut b, &cfg, 118, false));
        assert_eq!((b.fails, b.accessed, b.checked), (4, 118, 118));
        assert!((119..=128).all(|t| !b.usable(t, &cfg)));
        assert!(b.usable(129, &cfg));
        assert_eq!(b.back_at(&cfg), 129);
    }

    #[test]
    fn weight_drop_is_integer_division() {
        let cfg = MaxFails::new(3, Duration::from_secs(10));
        let mut p = NginxPeer::default();
        p.fail(1, &cfg, 1);
        assert_eq!(p.ew, None, "1 - 1/3 = 1: unchanged");
        let mut q = NginxPeer::default();
        q.fail(1, &MaxFails::default(), 5);
        assert_eq!(q.ew, Some(0), "max_fails 1 drops to 0");
        let steps: Vec<Option<u32>> = (0..5)
            .map(|_| {
                q.bump(5);
                q.ew
            })
            .collect();
        assert_eq!(steps, [Some(1), Some(2), Some(3), Some(4), None]);
        assert!(!q.bump(5));
    }

    #[test]
    fn max_fails_zero_never_disables() {
        let cfg = MaxFails::new(0, Duration::from_secs(10));
        let mut p = NginxPeer::default();
        for t in 0..10 {
            assert!(!p.fail(t, &cfg, 4));
            assert!(p.usable(t, &cfg));
        }
        assert_eq!(p.ew, None);
    }

    #[test]
    fn fail_timeout_rounds_up_to_seconds() {
        assert_eq!(
            MaxFails::new(1, Duration::from_millis(1500)).timeout_secs(),
            2
        );
        assert_eq!(MaxFails::default().timeout_secs(), 10);
    }
}
