//! Rise and fall counting of active checks, as HAProxy's `check->health`
//! (`src/check.c`: `check_notify_success`, `check_notify_failure`;
//! `srv_getinter` in `include/haproxy/check.h`).

use std::time::Duration;

/// A change of the up/down verdict of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The check now says the backend is up (`rise` successes in a row).
    WentUp,
    /// The check now says the backend is down (`fall` failures in a row
    /// from full health).
    WentDown,
}

/// HAProxy's health counter for one backend and one check.
///
/// `health` counts from 0 to `rise + fall - 1`; the backend is up when
/// `health >= rise`.
///
/// - A success adds one (up to the maximum) and, once at or above `rise`,
///   jumps straight to the maximum: one success while up restores full
///   health.
/// - A failure removes one and, once below `rise`, drops to 0: the backend
///   is down, and a failure while down resets its progress.
///
/// So up to down takes `fall` consecutive failures from full health, and
/// down to up takes `rise` consecutive successes. A new counter starts at
/// `health = rise`: up, but down at the first failure (HAProxy's initial
/// state).
///
/// ```
/// use lb_health::{RiseFall, Transition};
/// let mut rf = RiseFall::new(2, 3);
/// assert_eq!(rf.observe(true), None);                    // 2 -> 4: full health
/// assert_eq!(rf.observe(false), None);                   // 3
/// assert_eq!(rf.observe(false), None);                   // 2
/// assert_eq!(rf.observe(false), Some(Transition::WentDown)); // 1 < rise -> 0
/// assert_eq!(rf.observe(true), None);                    // 1
/// assert_eq!(rf.observe(true), Some(Transition::WentUp)); // 2 >= rise -> 4
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    health: u32,
}

/// The check intervals of HAProxy's `inter`, `fastinter` and `downinter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    /// Between checks of a backend at full health (`inter`).
    pub inter: Duration,
    /// While a backend is in transition: up but not at full health, or down
    /// with some progress towards up (`fastinter`; `inter` when `None`).
    pub fast: Option<Duration>,
    /// While a backend is down with no progress (`downinter`; `inter` when
    /// `None`).
    pub down: Option<Duration>,
}

impl RiseFall {
    /// A counter in HAProxy's initial state (`health = rise`). `rise` and
    /// `fall` below 1 are taken as 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        let (rise, fall) = (rise.max(1), fall.max(1));
        RiseFall {
            rise,
            fall,
            health: rise,
        }
    }

    /// A counter that starts down with no progress (`health = 0`, as a
    /// server that starts disabled): `rise` successes bring it up.
    pub fn starting_down(rise: u32, fall: u32) -> Self {
        RiseFall {
            health: 0,
            ..Self::new(rise, fall)
        }
    }

    /// A counter at a given health (clamped to the maximum), for tests and
    /// for restoring state.
    pub fn with_health(rise: u32, fall: u32, health: u32) -> Self {
        let mut rf = Self::new(rise, fall);
        rf.health = health.min(rf.max());
        rf
    }

    /// The current health, `0..=rise + fall - 1`.
    pub fn health(&self) -> u32 {
        self.health
    }

    /// Full health: `rise + fall - 1`.
    pub fn max(&self) -> u32 {
        self.rise + self.fall - 1
    }

    /// Whether the check says up (`health >= rise`).
    pub fn is_up(&self) -> bool {
        self.health >= self.rise
    }

    /// Count one check result; returns the transition it caused, if any.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        let was_up = self.is_up();
        if ok {
            if self.health < self.max() {
                self.health += 1;
                if self.health >= self.rise {
                    self.health = self.max();
                }
            }
        } else if self.health > 0 {
            self.health -= 1;
            if self.health < self.rise {
                self.health = 0;
            }
        }
        match (was_up, self.is_up()) {
            (false, true) => Some(Transition::WentUp),
            (true, false) => Some(Transition::WentDown),
            _ => None,
        }
    }

    /// Mark the backend down at once with no progress (`health = 0`), as
    /// HAProxy's `on-error mark-down` does when traffic fails; returns
    /// [`Transition::WentDown`] when it was up. `rise` successes bring it
    /// back.
    pub fn mark_down(&mut self) -> Option<Transition> {
        let was_up = self.is_up();
        self.health = 0;
        was_up.then_some(Transition::WentDown)
    }

    /// The delay before the next check (HAProxy `srv_getinter`): `inter` at
    /// full health, `downinter` when down with no progress, `fastinter`
    /// otherwise; each falls back to `inter` when not set.
    pub fn interval(&self, iv: &Intervals) -> Duration {
        if self.health == self.max() {
            iv.inter
        } else if self.health == 0 {
            iv.down.unwrap_or(iv.inter)
        } else {
            iv.fast.unwrap_or(iv.inter)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `steps` ("OK"/"KO") and compare the health after each with `want`.
    fn run(mut rf: RiseFall, steps: &[(&str, u32)]) {
        for (i, (step, want)) in steps.iter().enumerate() {
            rf.observe(*step == "OK");
            assert_eq!(rf.health(), *want, "step {} ({step})", i + 1);
        }
    }

    #[test]
    fn hap_hc_1_first_failure_from_initial_state_goes_down() {
        let mut rf = RiseFall::new(2, 3);
        assert_eq!((rf.health(), rf.is_up()), (2, true));
        assert_eq!(rf.observe(false), Some(Transition::WentDown));
        assert_eq!(rf.health(), 0);
    }

    #[test]
    fn hap_hc_2_from_health_2() {
        let rf = RiseFall::with_health(2, 3, 2);
        run(
            rf,
            &[
                ("OK", 4),
                ("KO", 3),
                ("KO", 2),
                ("OK", 4),
                ("KO", 3),
                ("KO", 2),
                ("KO", 0),
                ("OK", 1),
                ("OK", 4),
                ("KO", 3),
                ("OK", 4),
                ("OK", 4),
            ],
        );
    }

    #[test]
    fn hap_hc_3_from_full_health() {
        let rf = RiseFall::with_health(2, 3, 4);
        run(
            rf,
            &[
                ("KO", 3),
                ("KO", 2),
                ("OK", 4),
                ("KO", 3),
                ("KO", 2),
                ("KO", 0),
                ("OK", 1),
                ("KO", 0),
                ("OK", 1),
                ("OK", 4),
            ],
        );
    }

    #[test]
    fn exactly_fall_failures_and_rise_successes() {
        for rise in 1..6 {
            for fall in 1..6 {
                let mut rf = RiseFall::with_health(rise, fall, rise + fall - 1);
                for k in 1..fall {
                    assert_eq!(rf.observe(false), None, "rise {rise} fall {fall}: KO {k}");
                }
                assert_eq!(rf.observe(false), Some(Transition::WentDown));
                for k in 1..rise {
                    assert_eq!(rf.observe(true), None, "rise {rise} fall {fall}: OK {k}");
                }
                assert_eq!(rf.observe(true), Some(Transition::WentUp));
                assert_eq!(rf.health(), rf.max());
            }
        }
    }

    #[test]
    fn mark_down_drops_to_zero_and_rise_brings_it_back() {
        let mut rf = RiseFall::with_health(2, 3, 4);
        assert_eq!(rf.mark_down(), Some(Transition::WentDown));
        assert_eq!((rf.health(), rf.is_up()), (0, false));
        assert_eq!(rf.mark_down(), None, "already down");
        assert_eq!(rf.observe(true), None);
        assert_eq!(rf.mark_down(), None, "progress lost, no transition");
        assert_eq!(rf.observe(true), None);
        assert_eq!(rf.observe(true), Some(Transition::WentUp));
        assert_eq!(rf.health(), rf.max());
    }

    #[test]
    fn intervals_follow_srv_getinter() {
        let iv = Intervals {
            inter: Duration::from_secs(2),
            fast: Some(Duration::from_millis(500)),
            down: Some(Duration::from_secs(10)),
        };
        let mut rf = RiseFall::new(2, 3);
        assert_eq!(
            rf.interval(&iv),
            iv.fast.unwrap(),
            "initial health 2 of 4 is a transition"
        );
        rf.observe(true);
        assert_eq!(rf.interval(&iv), iv.inter);
        rf.observe(false);
        assert_eq!(rf.interval(&iv), iv.fast.unwrap());
        rf.observe(false);
        rf.observe(false);
        assert_eq!(rf.interval(&iv), iv.down.unwrap());
        rf.observe(true);
        assert_eq!(rf.interval(&iv), iv.fast.unwrap());
        let plain = Intervals {
            inter: Duration::from_secs(3),
            fast: None,
            down: None,
        };
        assert_eq!(RiseFall::starting_down(2, 3).interval(&plain), plain.inter);
    }
}
