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
        monoio::select! {
            v = value => Some(v),
            _ = monoio::time::sleep_until(deadline.into()) => None,
        }
    }
}
