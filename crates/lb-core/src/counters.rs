//! Per-backend live counters, shared by every snapshot and every guard.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::watch::Board;

const ONE_ACTIVE: u64 = 1 << 32;
const ONE_INACTIVE: u64 = 1;
const LOW: u64 = 0xFFFF_FFFF;

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
/// [`LoadWatch`](crate::LoadWatch), if one is installed, about every change
/// of `active` and `inactive`.
#[derive(Debug, Default)]
pub struct Counters {
    conns: AtomicU64,
    /// The pool's watch board (none for counters made outside a pool).
    board: Option<Arc<Board>>,
    /// The board generation and position under which the watch follows
    /// these counters; read and written only under the board's lock.
    watch_generation: AtomicU64,
    watch_pos: AtomicU64,
    total: AtomicU64,
    failures: AtomicU64,
    successes: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    latency_ewma_us: AtomicU32,
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
    /// `pos`. Under the board's lock.
    pub(crate) fn set_watch_position(&self, generation: u64, pos: usize) {
        self.watch_generation.store(generation, Ordering::Relaxed);
        self.watch_pos.store(pos as u64, Ordering::Relaxed);
    }

    /// The position under which the watch of `generation` follows these
    /// counters, if it does. Under the board's lock.
    pub(crate) fn watch_position(&self, generation: u64) -> Option<usize> {
        (self.watch_generation.load(Ordering::Relaxed) == generation)
            .then(|| self.watch_pos.load(Ordering::Relaxed) as usize)
    }

    /// Tell the pool's watch, if any, that the connection counts changed.
    #[inline]
    fn changed(&self) {
        if let Some(b) = &self.board {
            b.notify(self);
        }
    }

    /// Connections that are established and working (LVS `ActiveConn`).
    #[inline]
    pub fn active(&self) -> u32 {
        (self.conns.load(Ordering::Relaxed) >> 32) as u32
    }

    /// Connections that are open but idle or closing (LVS `InActConn`).
    #[inline]
    pub fn inactive(&self) -> u32 {
        (self.conns.load(Ordering::Relaxed) & LOW) as u32
    }

    /// `(active, inactive)`, read together in one atomic load.
    #[inline]
    pub fn load(&self) -> (u32, u32) {
        let v = self.conns.load(Ordering::Relaxed);
        ((v >> 32) as u32, (v & LOW) as u32)
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
        // SeqCst (the same instruction as AcqRel on x86): a load watch
        // being installed either sees this change or is told about it.
        self.conns.fetch_add(ONE_ACTIVE, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.changed();
    }

    /// Open a connection only if fewer than `limit` are open (0 = no limit).
    #[inline]
    pub(crate) fn try_open_active(&self, limit: u32) -> bool {
        if limit == 0 {
            self.open_active();
            return true;
        }
        let ok = self
            .conns
            .fetch_update(Ordering::SeqCst, Ordering::Acquire, |v| {
                let open = (v >> 32) + (v & LOW);
                (open < u64::from(limit)).then_some(v + ONE_ACTIVE)
            })
            .is_ok();
        if ok {
            self.total.fetch_add(1, Ordering::Relaxed);
            self.changed();
        }
        ok
    }

    #[inline]
    pub(crate) fn active_to_inactive(&self) {
        // One atomic step: -1 active, +1 inactive (no borrow: active >= 1).
        self.conns
            .fetch_sub(ONE_ACTIVE - ONE_INACTIVE, Ordering::SeqCst);
        self.changed();
    }

    #[inline]
    pub(crate) fn inactive_to_active(&self) {
        self.conns
            .fetch_add(ONE_ACTIVE - ONE_INACTIVE, Ordering::SeqCst);
        self.changed();
    }

    #[inline]
    pub(crate) fn close_active(&self) {
        self.conns.fetch_sub(ONE_ACTIVE, Ordering::SeqCst);
        self.changed();
    }

    #[inline]
    pub(crate) fn close_inactive(&self) {
        self.conns.fetch_sub(ONE_INACTIVE, Ordering::SeqCst);
        self.changed();
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
    fn latency_ewma_moves_an_eighth() {
        let c = Counters::new();
        c.record(true, Some(800));
        assert_eq!(c.latency_ewma_us(), 800);
        c.record(false, Some(0));
        assert_eq!(c.latency_ewma_us(), 700);
        assert_eq!((c.successes(), c.failures()), (1, 1));
    }
}
