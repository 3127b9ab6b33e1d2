//! Per-backend live counters, shared by every snapshot and every guard.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::watch::Board;

const ONE_ACTIVE: u64 = 1 << 32;
const ONE_INACTIVE: u64 = 1;
const LOW: u64 = 0xFFFF_FFFF;
/// The top bit of the packed word: a load watch follows these counters, so
/// a change must be reported. Kept in the word itself so that the change's
/// own read-modify-write tells, with no further read.
const WATCHED: u64 = 1 << 63;
/// `active` without the [`WATCHED`] bit (up to 2^31 - 1 connections).
const ACTIVE: u64 = 0x7FFF_FFFF;

/// `(active, inactive)` of a packed word.
#[inline]
fn unpack(v: u64) -> (u32, u32) {
    (((v >> 32) & ACTIVE) as u32, (v & LOW) as u32)
}

/// Live counters of one backend.
///
/// `active` and `inactive` connections are packed into one 64-bit word so
/// that their sum (the "conns" nginx's `max_conns` limits) is read and
/// reserved atomically. The counters belong to the backend, not to a
/// snapshot: they survive weight changes, health changes and snapshot swaps,
/// and a connection opened before its backend was removed still closes into
/// them.
///
/// The counters of a pool's backend tell the pool's
/// [`LoadWatch`](crate::LoadWatch), if one follows them, about every change
/// of `active` and `inactive`.
#[derive(Debug, Default)]
pub struct Counters {
    conns: AtomicU64,
    total: AtomicU64,
    /// The pool's watch board (none for counters made outside a pool).
    board: Option<Arc<Board>>,
    failures: AtomicU64,
    successes: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    latency_ewma_us: AtomicU32,
    /// The board generation and position under which the watch follows
    /// these counters; read and written only under the board's lock.
    watch_generation: AtomicU64,
    watch_pos: AtomicU64,
}

impl Counters {
    /// Fresh counters, all zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counters of a pool's backend, reporting to the pool's watch board.
    pub(crate) fn in_pool(board: Arc<Board>) -> Arc<Self> {
        Arc::new(Counters {
            board: Some(board),
            ..Self::default()
        })
    }

    /// Record that the watch of `generation` follows these counters at
    /// `pos`, and mark them watched. Under the board's lock.
    pub(crate) fn set_watch_position(&self, generation: u64, pos: usize) {
        self.watch_generation.store(generation, Ordering::Relaxed);
        self.watch_pos.store(pos as u64, Ordering::Relaxed);
        // A change made before this read-modify-write is in the value the
        // watch starts from; one made after it sees the bit and reports.
        self.conns.fetch_or(WATCHED, Ordering::AcqRel);
    }

    /// Whether a watch follows these counters.
    #[cfg(test)]
    pub(crate) fn is_watched(&self) -> bool {
        self.conns.load(Ordering::Relaxed) & WATCHED != 0
    }

    /// No watch follows these counters any more.
    #[inline]
    pub(crate) fn unwatch(&self) {
        self.conns.fetch_and(!WATCHED, Ordering::AcqRel);
    }

    /// The position under which the watch of `generation` follows these
    /// counters, if it does. Under the board's lock.
    pub(crate) fn watch_position(&self, generation: u64) -> Option<usize> {
        (self.watch_generation.load(Ordering::Relaxed) == generation)
            .then(|| self.watch_pos.load(Ordering::Relaxed) as usize)
    }

    /// The counts changed from the packed word `old`: tell the watch if the
    /// word says one follows them.
    #[inline(always)]
    fn changed(&self, old: u64) {
        if old & WATCHED != 0 {
            self.report();
        }
    }

    #[inline(never)]
    fn report(&self) {
        if let Some(b) = &self.board {
            b.notify(self);
        }
    }

    /// Connections that are established and working (LVS `ActiveConn`).
    #[inline]
    pub fn active(&self) -> u32 {
        self.load().0
    }

    /// Connections that are open but idle or closing (LVS `InActConn`).
    #[inline]
    pub fn inactive(&self) -> u32 {
        self.load().1
    }

    /// `(active, inactive)`, read together in one atomic load.
    #[inline]
    pub fn load(&self) -> (u32, u32) {
        unpack(self.conns.load(Ordering::Relaxed))
    }

    /// Every open connection, active or not (nginx's `conns`).
    #[inline]
    pub fn conns(&self) -> u64 {
        let (a, i) = self.load();
        u64::from(a) + u64::from(i)
    }

    /// Connections ever opened on this backend.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Outcomes reported as failures (connect errors, timeouts, bad answers).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Outcomes reported as successes.
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    /// Bytes received from clients and sent to this backend.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Bytes received from this backend and sent to clients.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Smoothed response latency in microseconds (0 until a latency is recorded).
    pub fn latency_ewma_us(&self) -> u32 {
        self.latency_ewma_us.load(Ordering::Relaxed)
    }

    /// Record one outcome of a request or connection.
    ///
    /// The latency enters an exponentially weighted moving average with a
    /// weight of 1/8 per sample (integer arithmetic, no lock).
    pub fn record(&self, ok: bool, latency_us: Option<u32>) {
        if ok {
            self.successes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(sample) = latency_us {
            let _ =
                self.latency_ewma_us
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                        Some(if old == 0 {
                            sample.max(1)
                        } else {
                            let next = (i64::from(old) * 7 + i64::from(sample)) / 8;
                            next.clamp(1, i64::from(u32::MAX)) as u32
                        })
                    });
        }
    }

    /// Count bytes moved through a connection on this backend.
    pub fn add_bytes(&self, to_backend: u64, from_backend: u64) {
        if to_backend > 0 {
            self.bytes_in.fetch_add(to_backend, Ordering::Relaxed);
        }
        if from_backend > 0 {
            self.bytes_out.fetch_add(from_backend, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn open_active(&self) {
        let old = self.conns.fetch_add(ONE_ACTIVE, Ordering::AcqRel);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.changed(old);
    }

    /// Open a connection only if fewer than `limit` are open (0 = no limit).
    #[inline]
    pub(crate) fn try_open_active(&self, limit: u32) -> bool {
        if limit == 0 {
            self.open_active();
            return true;
        }
        let r = self
            .conns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                let (a, i) = unpack(v);
                let open = u64::from(a) + u64::from(i);
                (open < u64::from(limit)).then_some(v + ONE_ACTIVE)
            });
        match r {
            Ok(old) => {
                self.total.fetch_add(1, Ordering::Relaxed);
                self.changed(old);
                true
            }
            Err(_) => false,
        }
    }

    #[inline]
    pub(crate) fn active_to_inactive(&self) {
        // One atomic step: -1 active, +1 inactive (no borrow: active >= 1).
        let old = self
            .conns
            .fetch_sub(ONE_ACTIVE - ONE_INACTIVE, Ordering::AcqRel);
        self.changed(old);
    }

    #[inline]
    pub(crate) fn inactive_to_active(&self) {
        let old = self
            .conns
            .fetch_add(ONE_ACTIVE - ONE_INACTIVE, Ordering::AcqRel);
        self.changed(old);
    }

    /// Close an active (`active`) or inactive connection.
    #[inline]
    pub(crate) fn close(&self, active: bool) {
        let one = if active { ONE_ACTIVE } else { ONE_INACTIVE };
        let old = self.conns.fetch_sub(one, Ordering::AcqRel);
        self.changed(old);
    }

    #[cfg(test)]
    pub(crate) fn close_active(&self) {
        self.close(true);
    }

    #[cfg(test)]
    pub(crate) fn close_inactive(&self) {
        self.close(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_counters_move_together() {
        let c = Counters::new();
        c.open_active();
        c.open_active();
        assert_eq!(c.load(), (2, 0));
        c.active_to_inactive();
        assert_eq!(c.load(), (1, 1));
        c.inactive_to_active();
        c.active_to_inactive();
        c.close_inactive();
        c.close_active();
        assert_eq!(c.load(), (0, 0));
        assert_eq!(c.total(), 2);
    }

    #[test]
    fn limit_is_never_exceeded() {
        let c = Counters::new();
        assert!(c.try_open_active(2));
        c.active_to_inactive();
        assert!(c.try_open_active(2));
        assert!(
            !c.try_open_active(2),
            "inactive connections count against the limit"
        );
        c.close_inactive();
        assert!(c.try_open_active(2));
    }

    #[test]
    fn the_watched_bit_is_not_a_count() {
        let c = Counters::new();
        c.set_watch_position(1, 0);
        assert_eq!(c.watch_position(1), Some(0));
        assert_eq!(c.watch_position(2), None);
        assert_eq!(c.load(), (0, 0));
        assert!(c.try_open_active(2));
        c.active_to_inactive();
        assert!(c.try_open_active(2));
        assert!(
            !c.try_open_active(2),
            "the bit does not count against the limit"
        );
        assert_eq!((c.active(), c.inactive(), c.conns()), (1, 1, 2));
        c.unwatch();
        c.close_active();
        c.close_inactive();
        assert_eq!(c.load(), (0, 0));
        assert_eq!(
            c.conns.load(Ordering::Relaxed),
            0,
            "nothing left in the word"
        );
    }

    #[test]
    fn latency_ewma_moves_an_eighth() {
        let c = Counters::new();
        c.record(true, Some(800));
        assert_eq!(c.latency_ewma_us(), 800);
        c.record(false, Some(0));
        assert_eq!(c.latency_ewma_us(), 700);
        assert_eq!((c.successes(), c.failures()), (1, 1));
    }
}
