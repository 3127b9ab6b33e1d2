//! A seedable, lock-free random source for the randomised schedulers.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::pad::Padded;

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Draws a thread takes from a source at once.
const BLOCK: u64 = 32;

/// Sources a thread keeps draws of at once (direct-mapped by source id).
const SLOTS: usize = 4;

/// Ids of sources, so that a thread's reserved draws are never mistaken for
/// those of a source made later at the same address.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Counter values a thread has reserved from one source: `left` more
/// draws, the last one drawn at `at`.
#[derive(Clone, Copy)]
struct Reserved {
    id: u64,
    at: u64,
    left: u64,
}

thread_local! {
    static RESERVED: [Cell<Reserved>; SLOTS] = const {
        [const { Cell::new(Reserved { id: 0, at: 0, left: 0 }) }; SLOTS]
    };
}

/// SplitMix64 over one atomic counter, with the same seed giving the same
/// sequence (single-threaded), so replays are deterministic.
///
/// A draw takes no lock and writes nothing shared: each thread reserves
/// [`BLOCK`] counter steps at once with one `fetch_add` and draws them in
/// order. A thread alone draws exactly the sequence one step at a time
/// would give; threads drawing at once share out its values. The counter
/// sits alone on its cache lines.
#[derive(Debug)]
pub(crate) struct SplitMix {
    state: Padded<AtomicU64>,
    id: u64,
}

/// The seed used when none is given (`seed=N` overrides it).
pub(crate) const DEFAULT_SEED: u64 = 0x5EED_1B5C_0DE5_u64;

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix {
            state: Padded(AtomicU64::new(seed)),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The next counter value this thread draws.
    #[inline]
    fn step(&self) -> u64 {
        let reserved = RESERVED.try_with(|slots| {
            let slot = &slots[self.id as usize % SLOTS];
            let mut r = slot.get();
            if r.id != self.id || r.left == 0 {
                let at = self
                    .state
                    .fetch_add(GAMMA.wrapping_mul(BLOCK), Ordering::Relaxed);
                r = Reserved {
                    id: self.id,
                    at,
                    left: BLOCK,
                };
            }
            r.at = r.at.wrapping_add(GAMMA);
            r.left -= 1;
            slot.set(r);
            r.at
        });
        // While the thread's locals are being torn down: one step at a time.
        reserved.unwrap_or_else(|_| {
            self.state
                .fetch_add(GAMMA, Ordering::Relaxed)
                .wrapping_add(GAMMA)
        })
    }

    /// The next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self.step();
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

    /// SplitMix64 one step at a time, as the source was before threads
    /// reserved blocks of it.
    fn reference(seed: u64, n: usize) -> Vec<u64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_add(GAMMA);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            })
            .collect()
    }

    #[test]
    fn one_thread_draws_the_plain_sequence_across_blocks_and_sources() {
        let (a, b) = (SplitMix::new(3), SplitMix::new(3));
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        // Interleaved, over several blocks: each keeps its own sequence.
        for i in 0..500 {
            xs.push(a.next_u64());
            if i % 3 == 0 {
                ys.push(b.next_u64());
            }
        }
        assert_eq!(xs, reference(3, 500));
        assert_eq!(ys, reference(3, ys.len()));
    }

    #[test]
    fn threads_share_out_the_sequence_without_repeats() {
        let src = SplitMix::new(11);
        let per = 10_000;
        let drawn: Vec<Vec<u64>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| s.spawn(|| (0..per).map(|_| src.next_u64()).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: std::collections::HashSet<u64> = drawn.iter().flatten().copied().collect();
        assert_eq!(all.len(), 3 * per, "no value drawn twice");
        // Every value comes from the sequence: from its first
        // 3 * per + 3 * BLOCK steps (each thread leaves part of a block).
        let seq: std::collections::HashSet<u64> = reference(11, 3 * per + 3 * BLOCK as usize)
            .into_iter()
            .collect();
        assert!(all.is_subset(&seq));
    }
}
