//! A worker-local one-shot value: one task waits, another fills it.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

pub(crate) struct Slot<T> {
    value: RefCell<Option<T>>,
    waker: Cell<Option<Waker>>,
}

impl<T> Slot<T> {
    pub fn new() -> Rc<Self> {
        Rc::new(Slot {
            value: RefCell::new(None),
            waker: Cell::new(None),
        })
    }

    /// Fills the slot unless it is already full; wakes the waiter.
    pub fn fill(&self, value: T) {
        let mut v = self.value.borrow_mut();
        if v.is_none() {
            *v = Some(value);
            drop(v);
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    /// The value, or `None` if `deadline` passes first.
    pub async fn wait_until(&self, deadline: Instant) -> Option<T> {
        let value = poll_fn(|cx| match self.value.borrow_mut().take() {
            Some(v) => Poll::Ready(v),
            None => {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        });
        let answer = monoio::select! {
            v = value => Some(v),
            _ = monoio::time::sleep_until(deadline.into()) => None,
        };
        // `select!` picks at random among branches ready together: a value
        // that came with the deadline still counts.
        answer.or_else(|| self.value.borrow_mut().take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value that is there when the deadline passes is the answer: the
    /// runner accepted (its link exists, holding the client's place), so a
    /// timeout would leave that link orphaned.
    #[test]
    fn a_filled_slot_wins_over_a_passed_deadline() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            for _ in 0..200 {
                let slot = Slot::new();
                slot.fill(7);
                let past = Instant::now() - std::time::Duration::from_millis(1);
                assert_eq!(slot.wait_until(past).await, Some(7));
            }
        });
    }
}
