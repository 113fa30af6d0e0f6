//! A worker-local "we are stopping" flag that any number of tasks can await.
//!
//! Each waiting future holds one slot for its waker and gives it back when
//! it is dropped: the accept loops race a fresh `wait()` against every
//! accept, so waits are abandoned all the time and must leave nothing.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use slab::Slab;

#[derive(Default)]
pub(crate) struct Stopping {
    set: Cell<bool>,
    waiters: RefCell<Slab<Waker>>,
}

impl Stopping {
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    pub fn set(&self) {
        self.set.set(true);
        // Taken out first: a woken waiter may be dropped (and unregister) at once.
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Resolves once `set` has been called.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            stopping: self,
            slot: None,
        }
    }
}

pub(crate) struct Wait<'a> {
    stopping: &'a Stopping,
    /// Where this future's waker is, once it has waited.
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.stopping.set.get() {
            self.slot = None; // `set` emptied the slab
            return Poll::Ready(());
        }
        let mut waiters = self.stopping.waiters.borrow_mut();
        match self.slot.and_then(|k| waiters.get_mut(k)) {
            Some(w) => w.clone_from(cx.waker()),
            None => {
                let key = waiters.insert(cx.waker().clone());
                drop(waiters);
                self.slot = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        // After `set` the slab was emptied, and nothing waits any more, so
        // a slot cannot have been reused by another waiter.
        if let Some(key) = self.slot {
            self.stopping.waiters.borrow_mut().try_remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Wake};

    struct Flag;
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {}
    }

    /// The accept loop races `wait()` against every accept: a fresh future
    /// each turn, polled once and dropped. Before, each turn left a waker
    /// behind (monoio's wakers never `will_wake` each other), so the list
    /// grew, and was scanned, for the worker's whole life.
    #[test]
    fn abandoned_waits_leave_nothing_behind() {
        let stopping = Stopping::default();
        for _ in 0..1000 {
            let waker = Arc::new(Flag).into();
            let mut cx = Context::from_waker(&waker);
            let mut wait = std::pin::pin!(stopping.wait());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(stopping.waiting(), 0);
        let waker = Arc::new(Flag).into();
        let mut cx = Context::from_waker(&waker);
        let mut wait = std::pin::pin!(stopping.wait());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert!(wait.as_mut().poll(&mut cx).is_pending(), "polled again");
        assert_eq!(stopping.waiting(), 1);
        stopping.set();
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }
}
