//! Envoy-style outlier ejection on consecutive failures
//! (`source/common/upstream/outlier_detection_impl.cc`: consecutive 5xx,
//! `base_ejection_time`, `max_ejection_time`, `max_ejection_percent`).

use std::time::Duration;

use tokio::time::Instant;

/// Outlier ejection settings (Envoy's defaults).
///
/// After `consecutive` failures in a row a backend is ejected for
/// `base_time × ejections` (its number of ejections so far, this one
/// included), capped at `max_time` (but never below `base_time`), and comes
/// back by itself when that time is over. The ejection count drops by one
/// per `decay_interval` the backend spends back in service. A backend is
/// ejected only while fewer than `max_ejection_percent` of the pool's
/// backends are ejected; as Envoy does, this always allows one ejection.
///
/// ```
/// use lb_health::Outlier;
/// use std::time::Duration;
/// let o = Outlier::default().consecutive(3).base_time(Duration::from_secs(10));
/// assert_eq!(o.ejection_time(2), Duration::from_secs(20));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outlier {
    consecutive: u32,
    base_time: Duration,
    max_time: Duration,
    max_ejection_percent: u8,
    decay_interval: Duration,
}

impl Default for Outlier {
    /// 5 consecutive failures, 30 s base, 300 s cap, 10 %, 10 s decay.
    fn default() -> Self {
        Outlier {
            consecutive: 5,
            base_time: Duration::from_secs(30),
            max_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            decay_interval: Duration::from_secs(10),
        }
    }
}

impl Outlier {
    /// Consecutive failures that eject (`consecutive_5xx`; at least 1).
    pub fn consecutive(mut self, n: u32) -> Self {
        self.consecutive = n.max(1);
        self
    }

    /// The ejection time of the first ejection (`base_ejection_time`).
    pub fn base_time(mut self, d: Duration) -> Self {
        self.base_time = d;
        self
    }

    /// The longest ejection (`max_ejection_time`).
    pub fn max_time(mut self, d: Duration) -> Self {
        self.max_time = d;
        self
    }

    /// The share of the pool that may be ejected at once, in percent
    /// (`max_ejection_percent`; 0 never ejects, values above 100 are 100).
    pub fn max_ejection_percent(mut self, percent: u8) -> Self {
        self.max_ejection_percent = percent.min(100);
        self
    }

    /// How long a backend must serve for its ejection count to drop by one
    /// (Envoy's `interval`; at least 1 ms).
    pub fn decay_interval(mut self, d: Duration) -> Self {
        self.decay_interval = d.max(Duration::from_millis(1));
        self
    }

    /// The time the `n`-th ejection lasts.
    pub fn ejection_time(&self, n: u32) -> Duration {
        self.base_time
            .saturating_mul(n.max(1))
            .min(self.max_time.max(self.base_time))
    }

    /// Whether one more backend may be ejected while `ejected` of `total`
    /// are.
    pub(crate) fn may_eject(&self, ejected: usize, total: usize) -> bool {
        ejected * 100 < usize::from(self.max_ejection_percent) * total
    }
}

/// One backend's outlier state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OutlierPeer {
    pub(crate) consecutive: u32,
    pub(crate) ejections: u32,
    pub(crate) ejected_until: Option<Instant>,
    returned_at: Option<Instant>,
}

impl OutlierPeer {
    /// Count one outcome at `now`; returns the run of failures when it
    /// reaches the threshold. Outcomes while ejected are not counted.
    pub(crate) fn observe(&mut self, ok: bool, now: Instant, cfg: &Outlier) -> Option<u32> {
        if let Some(until) = self.ejected_until {
            if now < until {
                return None;
            }
            self.ejected_until = None;
            self.returned_at = Some(until);
            self.consecutive = 0;
        }
        if ok {
            self.consecutive = 0;
            return None;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        (self.consecutive >= cfg.consecutive).then_some(self.consecutive)
    }

    /// Eject at `now`: returns the ejection's number and length.
    pub(crate) fn eject(&mut self, now: Instant, cfg: &Outlier) -> (u32, Duration) {
        if let Some(back) = self.returned_at.take() {
            let served = now.saturating_duration_since(back).as_nanos();
            let decay = served / cfg.decay_interval.as_nanos().max(1);
            self.ejections = self
                .ejections
                .saturating_sub(u32::try_from(decay).unwrap_or(u32::MAX));
        }
        self.ejections = self.ejections.saturating_add(1);
        let d = cfg.ejection_time(self.ejections);
        self.ejected_until = Some(now + d);
        self.consecutive = 0;
        (self.ejections, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ejection_time_grows_with_ejections_and_is_capped() {
        let cfg = Outlier::default()
            .consecutive(2)
            .base_time(Duration::from_secs(10))
            .max_time(Duration::from_secs(25));
        let t0 = Instant::now();
        let mut p = OutlierPeer::default();
        assert_eq!(p.observe(false, t0, &cfg), None);
        assert_eq!(p.observe(false, t0, &cfg), Some(2));
        assert_eq!(p.eject(t0, &cfg), (1, Duration::from_secs(10)));
        assert_eq!(
            p.observe(false, t0 + Duration::from_secs(5), &cfg),
            None,
            "ejected: not counted"
        );
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            p.observe(false, t1, &cfg),
            None,
            "back, and counting from zero"
        );
        assert_eq!(p.observe(false, t1, &cfg), Some(2));
        assert_eq!(p.eject(t1, &cfg), (2, Duration::from_secs(20)));
        let t2 = t1 + Duration::from_secs(20);
        p.observe(false, t2, &cfg);
        p.observe(false, t2, &cfg);
        assert_eq!(
            p.eject(t2, &cfg),
            (3, Duration::from_secs(25)),
            "capped at max_time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn successes_reset_the_run_and_service_decays_the_count() {
        let cfg = Outlier::default()
            .consecutive(2)
            .decay_interval(Duration::from_secs(10));
        let t0 = Instant::now();
        let mut p = OutlierPeer::default();
        p.observe(false, t0, &cfg);
        p.observe(true, t0, &cfg);
        assert_eq!(p.observe(false, t0, &cfg), None, "a success broke the run");
        assert_eq!(p.observe(false, t0, &cfg), Some(2));
        p.eject(t0, &cfg);
        let back = t0 + cfg.ejection_time(1);
        p.observe(false, back, &cfg);
        // 25 s in service: two decay intervals, 1 - 2 saturates at 0, so
        // this is ejection number 1 again.
        let later = back + Duration::from_secs(25);
        assert_eq!(p.observe(false, later, &cfg), Some(2));
        assert_eq!(p.eject(later, &cfg).0, 1);
    }

    #[test]
    fn the_cap_always_allows_one() {
        let cfg = Outlier::default(); // 10 %
        assert!(cfg.may_eject(0, 3), "one ejection is always allowed");
        assert!(!cfg.may_eject(1, 3));
        assert!(cfg.may_eject(1, 20) && !cfg.may_eject(2, 20));
        assert!(!Outlier::default().max_ejection_percent(0).may_eject(0, 10));
        assert!(Outlier::default()
            .max_ejection_percent(100)
            .may_eject(9, 10));
    }
}
