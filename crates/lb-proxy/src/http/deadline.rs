//! Per-request deadlines on reused timers.
//!
//! A tokio [`Sleep`] costs a lock on the timer wheel twice in its life: when
//! it is first polled (registered) and when it is dropped (removed). A
//! proxy arms a response timeout for every request and almost never lets it
//! fire, so those two wheel operations were most of what the timeout cost.
//! Here a finished request's timer goes back to a small per-thread stock
//! instead of being dropped, and the next request resets it: a reset to a
//! later instant than the one registered only moves the timer's deadline
//! forward (one atomic store; the wheel reschedules the entry when its old
//! slot comes round), with no lock and no allocation.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use tokio::runtime::{Handle, Id};
use tokio::time::{Instant, Sleep};

/// Spare timers kept per thread, at most.
const KEEP: usize = 256;

/// The spare timers of one thread, all of one runtime's timer driver.
struct Spare {
    runtime: Option<Id>,
    sleeps: Vec<Pin<Box<Sleep>>>,
}

thread_local! {
    static SPARE: RefCell<Spare> = const {
        RefCell::new(Spare {
            runtime: None,
            sleeps: Vec::new(),
        })
    };
}

/// A deadline that can be armed once and polled; its timer is reused.
#[derive(Default)]
pub(crate) struct Deadline {
    timer: Option<(Pin<Box<Sleep>>, Id)>,
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("armed", &self.timer.is_some())
            .finish()
    }
}

impl Deadline {
    /// Arm at `at` (outside a runtime, nothing is armed and the deadline
    /// never passes, as no timer could run).
    pub(crate) fn arm(&mut self, at: Instant) {
        let Ok(handle) = Handle::try_current() else {
            return;
        };
        let runtime = handle.id();
        let spare = SPARE
            .try_with(|s| {
                let mut s = s.borrow_mut();
                if s.runtime != Some(runtime) {
                    // Timers belong to their runtime's driver: never mix.
                    s.sleeps.clear();
                    s.runtime = Some(runtime);
                }
                s.sleeps.pop()
            })
            .ok()
            .flatten();
        let sleep = match spare {
            Some(mut sleep) => {
                sleep.as_mut().reset(at);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(at)),
        };
        self.timer = Some((sleep, runtime));
    }

    /// Move the deadline to `at`, reusing its timer (arming it if it was
    /// not armed).
    pub(crate) fn reset(&mut self, at: Instant) {
        match self.timer.as_mut() {
            Some((sleep, _)) => sleep.as_mut().reset(at),
            None => self.arm(at),
        }
    }

    /// Whether the deadline has passed (registering `cx` to be woken then).
    pub(crate) fn poll_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.timer
            .as_mut()
            .is_some_and(|(sleep, _)| sleep.as_mut().poll(cx).is_ready())
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let Some((sleep, runtime)) = self.timer.take() else {
            return;
        };
        if sleep.is_elapsed() {
            return; // spent: a reset would register it again anyway
        }
        let _ = SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if s.runtime == Some(runtime) && s.sleeps.len() < KEEP {
                    s.sleeps.push(sleep);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_reused_timer_fires_at_its_new_deadline_only() {
        let mut d = Deadline::default();
        d.arm(Instant::now() + Duration::from_millis(100));
        std::future::poll_fn(|cx| {
            assert!(!d.poll_passed(cx));
            std::task::Poll::Ready(())
        })
        .await;
        drop(d); // back to the stock, unfired

        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut again = Deadline::default();
        again.arm(Instant::now() + Duration::from_millis(100));
        let start = Instant::now();
        std::future::poll_fn(|cx| {
            if again.poll_passed(cx) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    #[test]
    fn outside_a_runtime_nothing_is_armed() {
        let mut d = Deadline::default();
        d.arm(Instant::now());
        let waker = std::task::Waker::noop();
        assert!(!d.poll_passed(&mut Context::from_waker(waker)));
    }
}
