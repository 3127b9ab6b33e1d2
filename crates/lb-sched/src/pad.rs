//! Keeping a word that every pick writes off the cache lines of data that
//! picks only read.

use std::ops::Deref;

/// A value alone on its cache lines: 128 bytes, since the adjacent-line
/// prefetcher of x86 parts pairs 64-byte lines. A scheduler's cursor or
/// random state, written on every pick, so never shares a line with the
/// read-mostly data allocated next to it (the pool, the tables, another
/// scheduler), and a thread reading those does not lose its copy each time
/// another thread picks.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> Deref for Padded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
