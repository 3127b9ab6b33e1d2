//! Slow start: HAProxy's `slowstart` warm-up of a backend's weight
//! (`server_recalc_eweight` and `server_warmup` in `src/server.c`, C.8).

use std::time::Duration;

/// The weight ramp of a backend that comes back after having been seen as
/// failed (never at start-up).
///
/// HAProxy keeps weights in sixteenths: at `e` whole seconds after the
/// backend came back, the step is `w = (16 e + s) / s` (integer division)
/// for a slow start of `s` seconds, so the ramp starts at 1/16 of the weight
/// and grows linearly; from `e >= s` the backend runs at full weight. The
/// duration is kept in whole seconds, rounded up (`1500ms` is 2 s).
///
/// Pools weigh backends in their configured units, so the weight written to
/// the pool is HAProxy's `eweight` brought back to those units, rounded up:
/// `ceil(weight * w / 16)`. The ramp is therefore as fine as the weight
/// allows: a backend of weight 16 or more moves every second, a backend of
/// weight 1 cannot be given less than 1 and does not ramp.
///
/// ```
/// use lb_health::SlowStart;
/// use std::time::Duration;
/// let ss = SlowStart::new(Duration::from_secs(10)).unwrap();
/// assert_eq!(ss.eweight(10, 0), 10);   // HAProxy units: weight 10 is 160 at full
/// assert_eq!(ss.eweight(10, 2), 40);
/// assert_eq!(ss.eweight(10, 10), 160);
/// assert_eq!(ss.weight(32, 0), 2);     // pool units: 32 / 16
/// assert_eq!(ss.weight(32, 10), 32);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowStart {
    secs: u64,
}

/// HAProxy's weight scale (`BE_WEIGHT_SCALE`).
pub const WEIGHT_SCALE: u32 = 16;

impl SlowStart {
    /// A ramp lasting `d`, rounded up to whole seconds; `None` for zero
    /// (no slow start).
    pub fn new(d: Duration) -> Option<Self> {
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        (secs > 0).then_some(SlowStart { secs })
    }

    /// The ramp's length in whole seconds.
    pub fn seconds(&self) -> u64 {
        self.secs
    }

    /// The ramp's length.
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.secs)
    }

    /// Whether the ramp is over `elapsed` whole seconds after the return.
    pub fn is_done(&self, elapsed: u64) -> bool {
        elapsed >= self.secs
    }

    /// HAProxy's step in sixteenths, `1..=16`, at `elapsed` whole seconds.
    pub fn step(&self, elapsed: u64) -> u32 {
        if self.is_done(elapsed) {
            return WEIGHT_SCALE;
        }
        let w = (u64::from(WEIGHT_SCALE) * elapsed + self.secs) / self.secs;
        w.clamp(1, u64::from(WEIGHT_SCALE)) as u32
    }

    /// HAProxy's effective weight (in sixteenths of the configured weight)
    /// at `elapsed` whole seconds: `weight * step`.
    pub fn eweight(&self, weight: u32, elapsed: u64) -> u64 {
        u64::from(weight) * u64::from(self.step(elapsed))
    }

    /// The weight to give the pool at `elapsed` whole seconds:
    /// `ceil(weight * step / 16)`, never below 1 for a non-zero weight.
    pub fn weight(&self, weight: u32, elapsed: u64) -> u32 {
        let scale = u64::from(WEIGHT_SCALE);
        self.eweight(weight, elapsed).div_ceil(scale) as u32
    }

    /// How far the ramp is, in percent (`0..=100`).
    pub fn percent(&self, elapsed: u64) -> u8 {
        (elapsed.min(self.secs) * 100 / self.secs) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hap_ss_1_weight_10_over_10s() {
        let ss = SlowStart::new(Duration::from_secs(10)).unwrap();
        let want = [10, 20, 40, 50, 70, 90, 100, 120, 130, 150, 160, 160, 160];
        for (e, w) in want.iter().enumerate() {
            assert_eq!(ss.eweight(10, e as u64), *w, "e = {e}");
        }
        assert!(!ss.is_done(9) && ss.is_done(10));
    }

    #[test]
    fn hap_ss_2_weight_1_over_60s() {
        let ss = SlowStart::new(Duration::from_secs(60)).unwrap();
        for e in 0..=3 {
            assert_eq!(ss.eweight(1, e), 1, "e = {e}");
        }
        assert_eq!(ss.eweight(1, 4), 2);
        assert_eq!(ss.eweight(1, 30), 9);
        assert_eq!(ss.eweight(1, 59), 16);
        assert!(!ss.is_done(59));
        assert_eq!(ss.eweight(1, 60), 16);
        assert!(ss.is_done(60));
        // A weight-1 backend cannot go below 1 in pool units.
        assert!((0..70).all(|e| ss.weight(1, e) == 1));
    }

    #[test]
    fn hap_ss_3_rounds_up_to_whole_seconds() {
        assert_eq!(
            SlowStart::new(Duration::from_millis(1500))
                .unwrap()
                .seconds(),
            2
        );
        assert_eq!(
            SlowStart::new(Duration::from_millis(1)).unwrap().seconds(),
            1
        );
        assert_eq!(SlowStart::new(Duration::ZERO), None);
    }

    #[test]
    fn pool_weight_is_eweight_over_16_rounded_up() {
        let ss = SlowStart::new(Duration::from_secs(10)).unwrap();
        let got: Vec<u32> = (0..=10).map(|e| ss.weight(10, e)).collect();
        // 10/16, 20/16, 40/16, ... rounded up.
        assert_eq!(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10]);
        assert_eq!(ss.weight(0, 3), 0, "weight 0 stays quiesced");
        assert_eq!(ss.percent(3), 30);
        assert_eq!(ss.percent(30), 100);
    }
}
