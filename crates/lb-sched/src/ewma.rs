//! `peak_ewma`: peak-sensitive exponentially weighted moving average of
//! latency, as Finagle's `PeakEwma` and tower's `load::PeakEwma`, picked by
//! weighted power of two choices (see [`p2c`](crate::p2c)).
//!
//! Each backend has a latency estimate. A sample above the estimate
//! replaces it at once (the *peak*: a backend that just got slow is avoided
//! immediately); a sample below it moves the estimate toward it with the
//! time constant `decay`: after an interval `dt` since the previous update,
//! `est = est * e^(-dt/decay) + sample * (1 - e^(-dt/decay))`. While no
//! sample arrives the estimate decays toward zero with the same constant,
//! so a backend that was avoided after a spike is tried again and measured
//! afresh (tower and Finagle decay on read for this reason).
//!
//! The cost of a backend is `estimate * (in_flight + 1)`, where in-flight
//! counts every open connection, active and inactive: the latency a new
//! request can expect behind the ones already there. A backend of weight
//! `w` counts as `w` such servers in parallel, so its cost is
//! `estimate * (in_flight / w + 1)` (exactly tower's at weight 1). Two
//! distinct usable backends are drawn in proportion to weight and the
//! cheaper wins, compared by cross-multiplication
//! (`est_a * (n_a + w_a) * w_b` against `est_b * (n_b + w_b) * w_a`), the
//! first drawn on ties: with equal latencies and nothing in flight the
//! shares follow the weights.
//!
//! No lock and no floating point on the pick path: each backend's estimate
//! and the time of its last update share one atomic word; `e^(-x)` comes from
//! a table computed once when the scheduler is built, read with linear
//! interpolation (relative error under 0.1 %). Samples arrive through
//! [`Scheduler::observe`] (forwarders call [`Balancer::observe`]); a backend
//! never measured that way uses its counters' smoothed latency
//! ([`Counters::latency_ewma_us`](lb_core::Counters::latency_ewma_us)) if a
//! forwarder recorded one there, and the default RTT otherwise.
//!
//! [`Balancer::observe`]: crate::Balancer::observe

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lb_core::{BackendId, Change, Ctx, Member, Outcome, Pick, Snapshot, Tables};

use crate::p2c::{heavier, Draw};
use crate::rng::SplitMix;
use crate::trace::{pick_via_select, why, Load, Trace};
use crate::Scheduler;

/// Steps of the `e^(-x)` table per unit of `x` (one decay time constant).
const STEPS_PER_TAU: u64 = 16;
/// Entries of the table: `x` in `0..=8` time constants; beyond, `e^(-x)` is 0.
const STEPS: usize = 128;
/// Fixed-point one (Q16).
const ONE: u64 = 1 << 16;

/// `e^(-k / STEPS_PER_TAU)` in Q16 for `k` in `0..=STEPS`, read with linear
/// interpolation.
#[derive(Debug)]
struct Curve {
    q16: [u32; STEPS + 1],
    /// Table steps per millisecond, in Q16 with 8 more bits of fraction.
    per_ms: u64,
}

impl Curve {
    fn new(decay: Duration) -> Self {
        let mut q16 = [0u32; STEPS + 1];
        for (k, v) in q16.iter_mut().enumerate() {
            *v = ((-(k as f64) / STEPS_PER_TAU as f64).exp() * ONE as f64).round() as u32;
        }
        let decay_ms = (decay.as_millis() as u64).max(1);
        Curve {
            q16,
            per_ms: ((STEPS_PER_TAU << 8) << 16) / decay_ms,
        }
    }

    /// `e^(-elapsed/decay)` in Q16.
    #[inline]
    fn factor(&self, elapsed_ms: u32) -> u64 {
        // Position in the table with 8 bits of fraction.
        let pos = (u64::from(elapsed_ms) * self.per_ms) >> 16;
        let (k, frac) = ((pos >> 8) as usize, pos & 0xFF);
        if k >= STEPS {
            return 0;
        }
        let (lo, hi) = (u64::from(self.q16[k]), u64::from(self.q16[k + 1]));
        (lo * (256 - frac) + hi * frac) >> 8
    }
}

/// One backend's estimate: `(stamp_ms << 32) | estimate_us`; 0 = never measured.
#[derive(Debug, Default)]
struct Slot(AtomicU64);

fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

fn millis(now: Duration) -> u32 {
    // Wrapping milliseconds: differences are exact for gaps under 24 days.
    now.as_millis() as u64 as u32
}

/// Milliseconds from `stamp` to `now`; a clock seen going backwards is 0.
fn since(stamp: u32, now: u32) -> u32 {
    let d = now.wrapping_sub(stamp);
    if (d as i32) < 0 {
        0
    } else {
        d
    }
}

/// The tables of one snapshot: the weighted draw, and each backend's slot
/// (shared with the previous snapshot's table, so estimates survive every
/// pool change).
#[derive(Debug)]
struct EwmaTables {
    draw: Draw,
    slots: Vec<Arc<Slot>>,
}

/// Peak-EWMA latency with weighted power of two choices.
///
/// Built by the registry as `peak_ewma [decay=SECONDS] [default_rtt=MS]
/// [seed=N]`: time constant 10 s and default RTT 30 ms unless given (the
/// values linkerd uses).
#[derive(Debug)]
pub struct PeakEwma {
    rng: SplitMix,
    curve: Curve,
    default_us: u32,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self::new(Duration::from_secs(10), Duration::from_millis(30))
    }
}

impl PeakEwma {
    /// A peak-EWMA scheduler with time constant `decay` and the estimate
    /// `default_rtt` for backends never measured.
    pub fn new(decay: Duration, default_rtt: Duration) -> Self {
        Self::with_seed(decay, default_rtt, crate::rng::DEFAULT_SEED)
    }

    /// As [`new`](Self::new), with the random draws starting from `seed`.
    pub fn with_seed(decay: Duration, default_rtt: Duration, seed: u64) -> Self {
        PeakEwma {
            rng: SplitMix::new(seed),
            curve: Curve::new(decay),
            default_us: micros(default_rtt),
        }
    }

    /// The estimate of `m` (slot `slot`) at `now`, in microseconds.
    #[inline]
    fn estimate(&self, slot: &Slot, m: &Member, now: Duration) -> u64 {
        let (stamp, est) = unpack(slot.0.load(Ordering::Relaxed));
        if est == 0 {
            let smoothed = m.counters().latency_ewma_us();
            return u64::from(if smoothed > 0 {
                smoothed
            } else {
                self.default_us
            });
        }
        (u64::from(est) * self.curve.factor(since(stamp, millis(now)))) >> 16
    }

    /// The estimate of `m`, and its cost times its weight:
    /// `estimate * (in_flight + weight)`.
    #[inline]
    fn cost(&self, slot: &Slot, m: &Member, now: Duration) -> (u64, u128) {
        let est = self.estimate(slot, m, now);
        (
            est,
            u128::from(est) * u128::from(m.conns() + u64::from(m.weight())),
        )
    }

    fn select<'s, T: Trace>(
        &self,
        snap: &'s Snapshot,
        ctx: &Ctx<'_>,
        t: &mut T,
    ) -> Option<Pick<'s>> {
        let tables = snap.tables::<EwmaTables>()?;
        let members = snap.members();
        let (a, b) = tables.draw.draw_two(members, ctx, &self.rng)?;
        let ma = &members[a];
        let Some(b) = b else {
            why!(t, "peak_ewma: only {} is usable -> {}", Load(ma), ma.name());
            return Some(Pick::new(ma));
        };
        let mb = &members[b];
        let (ea, ca) = self.cost(&tables.slots[a], ma, ctx.now());
        let (eb, cb) = self.cost(&tables.slots[b], mb, ctx.now());
        why!(
            t,
            "peak_ewma: drew {} est={ea}us est*(conns+weight)={ca}",
            Load(ma)
        );
        why!(
            t,
            "peak_ewma: drew {} est={eb}us est*(conns+weight)={cb}",
            Load(mb)
        );
        let win = if heavier(ca, ma.weight(), cb, mb.weight()) {
            mb
        } else {
            ma
        };
        why!(
            t,
            "rule: smaller est*(conns/weight+1) wins, first drawn on ties -> {}",
            win.name()
        );
        Some(Pick::new(win))
    }

    /// Fold one latency sample of `backend` into its estimate at `now`.
    fn update(&self, slot: &Slot, sample_us: u32, now: Duration) {
        let now_ms = millis(now);
        let _ = slot
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                let (stamp, est) = unpack(v);
                let f = self.curve.factor(since(stamp, now_ms));
                let decayed = (u64::from(est) * f) >> 16;
                let next = if est == 0 || u64::from(sample_us) > decayed {
                    u64::from(sample_us)
                } else {
                    decayed + ((u64::from(sample_us) * (ONE - f)) >> 16)
                };
                let next = next.clamp(1, u64::from(u32::MAX));
                Some(u64::from(now_ms) << 32 | next)
            });
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().clamp(1, u128::from(u32::MAX)) as u32
}

impl Scheduler for PeakEwma {
    fn name(&self) -> &'static str {
        "peak_ewma"
    }

    fn prepare(&self, next: &Snapshot, prev: Option<&Snapshot>, _change: Change) -> Option<Tables> {
        let old = prev.and_then(|p| p.tables::<EwmaTables>().map(|t| (p, t)));
        let slots = next
            .members()
            .iter()
            .map(|m| {
                old.and_then(|(p, t)| p.index_of(m.id()).and_then(|i| t.slots.get(i)))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        Some(Arc::new(EwmaTables {
            draw: Draw::build(next),
            slots,
        }))
    }

    /// Successes, bad statuses (an answer came) and timeouts (the wait is a
    /// lower bound of the latency) are samples; refused and broken
    /// connections say nothing about latency and are left to health checks.
    fn observe(
        &self,
        snap: &Snapshot,
        backend: BackendId,
        outcome: Outcome,
        latency: Duration,
        now: Duration,
    ) {
        let sample = match outcome {
            Outcome::Success | Outcome::BadStatus(_) | Outcome::Timeout => micros(latency),
            _ => return,
        };
        let slot = snap
            .tables::<EwmaTables>()
            .and_then(|t| snap.index_of(backend).and_then(|i| t.slots.get(i)));
        if let Some(slot) = slot {
            self.update(slot, sample, now);
        }
    }

    pick_via_select!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_follows_exp_within_a_tenth_of_a_percent() {
        let c = Curve::new(Duration::from_secs(10));
        for ms in (0..80_000u32).step_by(37) {
            let exact = (-(f64::from(ms)) / 10_000.0).exp();
            let got = c.factor(ms) as f64 / ONE as f64;
            // Relative error of the interpolation, plus the Q16 rounding.
            assert!(
                (got - exact).abs() < 0.001 * exact + 3.0 / ONE as f64,
                "{ms} ms: {got} vs {exact}"
            );
        }
        assert_eq!(c.factor(0), ONE);
        assert_eq!(
            c.factor(90_000),
            0,
            "past 8 time constants the estimate is gone"
        );
    }

    #[test]
    fn peak_replaces_and_low_samples_decay_with_the_time_constant() {
        let s = PeakEwma::new(Duration::from_secs(10), Duration::from_millis(30));
        let slot = Slot::default();
        let at = Duration::from_secs;
        s.update(&slot, 10_000, at(100));
        assert_eq!(
            unpack(slot.0.load(Ordering::Relaxed)).1,
            10_000,
            "first sample is taken as is"
        );
        s.update(&slot, 50_000, at(100));
        assert_eq!(
            unpack(slot.0.load(Ordering::Relaxed)).1,
            50_000,
            "a peak replaces at once"
        );
        // One time constant later a 10 ms sample: 50*e^-1 + 10*(1-e^-1) = 24.72 ms.
        s.update(&slot, 10_000, at(110));
        let est = unpack(slot.0.load(Ordering::Relaxed)).1;
        assert!((24_600..24_850).contains(&est), "{est}");
    }

    #[test]
    fn a_clock_going_backwards_does_not_decay() {
        assert_eq!(since(1_000, 900), 0);
        assert_eq!(since(u32::MAX - 5, 4), 10, "wrapping milliseconds");
    }
}
