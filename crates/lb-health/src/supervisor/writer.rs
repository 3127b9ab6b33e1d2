//! The writer: applies due timers, writes pending changes into the pool
//! as one snapshot, sends the events, and keeps the panic valve.

use std::cmp::Reverse;
use std::sync::{Arc, Weak};

use lb_core::{BackendId, Health, Snapshot};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::entry::Entry;
use super::{after_update, mark_dirty, Book, Inner};
use crate::slow_start::SlowStart;
use crate::state::{Event, Reason, State};

impl Inner {
    /// Apply the timers due at `now`, write the pending changes into the
    /// pool and send their events. Returns the next timer.
    pub(super) fn run(&self, book: &mut Book, now: Instant) -> Option<Instant> {
        let ss = book.slow_start;
        while let Some(&Reverse((t, id))) = book.timers.peek() {
            if t > now {
                break;
            }
            book.timers.pop();
            let Some(e) = book.entries.get_mut(&id) else {
                continue;
            };
            if e.wake != Some(t) {
                continue; // superseded
            }
            let change = e.update(now, ss, Reason::SlowStartDone);
            // The popped timer is consumed: any next wake is a new one.
            after_update(book, id, None, change);
        }
        self.flush(book, now);
        book.timers.peek().map(|Reverse((t, _))| *t)
    }

    fn flush(&self, book: &mut Book, now: Instant) {
        if book.dirty.is_empty() && book.events.is_empty() {
            return;
        }
        let snap = self.pool.load();
        book.entries.retain(|id, _| snap.get(*id).is_some());
        self.check_panic(book, &snap);
        let dirty = std::mem::take(&mut book.dirty);
        let mut writes = Vec::new();
        for id in dirty {
            let (Some(m), Some(e)) = (snap.get(id), book.entries.get_mut(&id)) else {
                continue;
            };
            e.dirty = false;
            let health = match &e.state {
                State::Down { .. } if book.panic => Health::Up,
                st => st.health(),
            };
            let weight = effective_weight(e, m.configured_weight(), now, book.slow_start);
            let same_weight = match weight {
                Some(w) => m.weight() == w,
                None => m.weight() == m.configured_weight(),
            };
            if m.health() != health || !same_weight {
                writes.push((id, health, (!same_weight).then_some(weight)));
            }
        }
        if !writes.is_empty() {
            let res = self.pool.batch(|b| {
                for &(id, health, weight) in &writes {
                    if b.members().binary_search_by_key(&id, |m| m.id()).is_err() {
                        continue; // removed meanwhile
                    }
                    b.set_health(id, health)?;
                    if let Some(w) = weight {
                        b.set_effective_weight(id, w.map(u64::from))?;
                    }
                }
                Ok(())
            });
            if let Err(err) = res {
                tracing::error!(%err, "lb-health: writing the pool failed");
            }
        }
        for ev in book.events.drain(..) {
            log_event(&ev);
            let _ = self.events.send(ev);
        }
    }

    /// The safety valve: too few serving backends puts the pool in panic,
    /// and every failed backend is then kept up in the pool.
    fn check_panic(&self, book: &mut Book, snap: &Snapshot) {
        let (mut counted, mut serving) = (0usize, 0usize);
        for m in snap.members() {
            let st = match book.entries.get(&m.id()) {
                Some(e) => e.state.clone(),
                None => Entry::new(m.name_arc(), m.health()).state,
            };
            match st {
                State::Draining | State::Maintenance => {}
                st => {
                    counted += 1;
                    serving += usize::from(st.is_serving());
                }
            }
        }
        let threshold = usize::from(book.panic_threshold);
        let panic = threshold > 0 && counted > 0 && serving * 100 < threshold * counted;
        if panic == book.panic {
            return;
        }
        book.panic = panic;
        if panic {
            tracing::warn!(
                serving,
                counted,
                threshold,
                "lb-health: panic: too few backends serving; balancing over all of them"
            );
        } else {
            tracing::info!(serving, counted, threshold, "lb-health: panic over");
        }
        let failed: Vec<BackendId> = book
            .entries
            .iter()
            .filter(|(_, e)| e.state.is_failed())
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            mark_dirty(book, id);
        }
    }
}

/// The weight the pool should use instead of the configured one, if any:
/// the lower of the slow-start ramp and nginx's effective weight.
fn effective_weight(
    e: &Entry,
    configured: u32,
    now: Instant,
    ss: Option<SlowStart>,
) -> Option<u32> {
    let ramp = ss
        .zip(e.ramp_elapsed(now))
        .map(|(ss, elapsed)| ss.weight(configured, elapsed));
    let w = [ramp, e.passive_weight].into_iter().flatten().min()?;
    (w < configured).then_some(w)
}

fn log_event(ev: &Event) {
    match &ev.new {
        State::Down { .. } => tracing::warn!(
            backend = %ev.name, id = ev.backend.get(), old = ev.old.as_str(), new = ev.new.as_str(),
            reason = %ev.reason, "lb-health: backend down"
        ),
        _ => tracing::info!(
            backend = %ev.name, id = ev.backend.get(), old = ev.old.as_str(), new = ev.new.as_str(),
            reason = %ev.reason, "lb-health: backend state changed"
        ),
    }
}

/// The background writer: applies timers, writes the pool, sends events.
pub(super) async fn drive(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else { return };
            let mut book = inner.book.lock();
            inner.run(&mut book, Instant::now())
        };
        match next {
            Some(t) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(t) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}
