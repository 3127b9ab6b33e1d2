//! A seedable, lock-free random source for the randomised schedulers.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::pad::Padded;

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 over one atomic counter: every draw is one `fetch_add` and a
/// few multiplications, with no lock, and the same seed gives the same
/// sequence (single-threaded), so replays are deterministic. The counter
/// sits alone on its cache lines (it is written on every draw).
#[derive(Debug)]
pub(crate) struct SplitMix {
    state: Padded<AtomicU64>,
}

/// The seed used when none is given (`seed=N` overrides it).
pub(crate) const DEFAULT_SEED: u64 = 0x5EED_1B5C_0DE5_u64;

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix {
            state: Padded(AtomicU64::new(seed)),
        }
    }

    /// The next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next 32 random bits.
    #[inline]
    #[allow(dead_code)] // for LVS twos; nginx random draws 64 bits
    pub(crate) fn next_u32(&self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_bits_vary() {
        let a = SplitMix::new(7);
        let b = SplitMix::new(7);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert!(xs.windows(2).all(|w| w[0] != w[1]));
        let ones: u32 = (0..1000).map(|_| a.next_u32() & 1).sum();
        assert!((400..600).contains(&ones), "low bit is balanced: {ones}");
    }
}
