//! What a worker's two background tasks must learn from its connections and
//! actors, without either side calling the other: the earliest deadline
//! (for the timer sweep) and which parked connections were woken (for the
//! parker). One per worker, shared by `Rc`; every `ConnControl` holds one.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

pub(crate) struct Wakeups {
    /// What connections' deadlines are counted from (8 bytes each instead
    /// of an `Instant`'s 16).
    epoch: Instant,
    /// The earliest deadline the sweep knows of (`None`: none).
    next_due: Cell<Option<Instant>>,
    /// The sweep task, while it sleeps past `next_due`.
    sweeper: Cell<Option<Waker>>,
    /// Tokens of parked connections that were woken, to be unparked.
    unparked: RefCell<Vec<u64>>,
    /// The parker task, while it waits.
    parker: Cell<Option<Waker>>,
}

impl Default for Wakeups {
    fn default() -> Self {
        Wakeups {
            epoch: Instant::now(),
            next_due: Cell::new(None),
            sweeper: Cell::new(None),
            unparked: RefCell::new(Vec::new()),
            parker: Cell::new(None),
        }
    }
}

impl Wakeups {
    /// `at` as nanoseconds since the epoch (an earlier instant reads as
    /// the epoch). Exact: both ways are nanosecond arithmetic.
    pub fn stamp(&self, at: Instant) -> u64 {
        // Saturating: a deadline centuries away must not wrap into the past.
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    pub fn instant(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_nanos(stamp)
    }

    /// Something set a deadline: if it is earlier than any the sweep knows
    /// of, the sweep must come earlier. One comparison in the common case.
    pub fn note_deadline(&self, at: Instant) {
        if self.next_due.get().is_none_or(|due| at < due) {
            self.next_due.set(Some(at));
            if let Some(w) = self.sweeper.take() {
                w.wake();
            }
        }
    }

    /// The sweep found this to be the earliest deadline still ahead.
    pub fn set_next_due(&self, next: Option<Instant>) {
        self.next_due.set(next);
    }

    /// Sleeps until the earliest known deadline (but not before
    /// `not_before`, so sweeps stay at most one per tick), or until `limit`
    /// at the latest.
    pub async fn sleep_until_due(&self, not_before: Instant, limit: Option<Instant>) {
        loop {
            let at = match (self.next_due.get(), limit) {
                (Some(d), Some(l)) => d.min(l),
                (Some(d), None) => d,
                (None, Some(l)) => l,
                (None, None) => not_before + Duration::from_secs(3600),
            }
            .max(not_before);
            let earlier = poll_fn(|cx| {
                if self.next_due.get().is_some_and(|d| d.max(not_before) < at) {
                    return Poll::Ready(());
                }
                self.sweeper.set(Some(cx.waker().clone()));
                Poll::Pending
            });
            monoio::select! {
                _ = monoio::time::sleep_until(at.into()) => return,
                _ = earlier => continue,
            }
        }
    }

    /// A parked connection's control was woken: the parker resumes it.
    pub fn unpark_soon(&self, token: u64) {
        self.unparked.borrow_mut().push(token);
        if let Some(w) = self.parker.take() {
            w.wake();
        }
    }

    /// Resolves when some parked connection was woken (for the parker task).
    pub async fn unparked(&self) {
        poll_fn(|cx| {
            if self.unparked.borrow().is_empty() {
                self.parker.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    /// Every token woken since the last call.
    pub fn take_unparked(&self) -> Vec<u64> {
        std::mem::take(&mut *self.unparked.borrow_mut())
    }
}

/// How often the sweep runs: a tenth of the shortest configured timeout,
/// between 1 ms and 500 ms. Deadlines are met within one tick.
pub(crate) fn sweep_tick(timeouts: &[Duration]) -> Duration {
    let shortest = timeouts
        .iter()
        .copied()
        .min()
        .unwrap_or(Duration::from_secs(1));
    (shortest / 10).clamp(Duration::from_millis(1), Duration::from_millis(500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_follows_the_shortest_timeout() {
        let s = Duration::from_secs(1);
        assert_eq!(sweep_tick(&[30 * s, 20 * s]), Duration::from_millis(500));
        assert_eq!(
            sweep_tick(&[Duration::from_millis(50)]),
            Duration::from_millis(5)
        );
        assert_eq!(
            sweep_tick(&[Duration::from_micros(10)]),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn only_an_earlier_deadline_moves_the_sweep() {
        let w = Wakeups::default();
        let t0 = Instant::now();
        w.note_deadline(t0 + Duration::from_secs(5));
        w.note_deadline(t0 + Duration::from_secs(9));
        assert_eq!(w.next_due.get(), Some(t0 + Duration::from_secs(5)));
        w.note_deadline(t0 + Duration::from_secs(1));
        assert_eq!(w.next_due.get(), Some(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn woken_parked_connections_are_taken_once() {
        let w = Wakeups::default();
        w.unpark_soon(7);
        w.unpark_soon(9);
        assert_eq!(w.take_unparked(), vec![7, 9]);
        assert!(w.take_unparked().is_empty());
    }
}
