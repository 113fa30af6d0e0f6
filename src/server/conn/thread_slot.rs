//! A one-shot value filled by another thread and awaited on a worker: the
//! answer of work done off the worker (a blocking file write, a call that
//! waits for every worker), so the worker's loop never blocks on it.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use atomic_waker::AtomicWaker;

struct Inner<T> {
    value: Mutex<Option<T>>,
    /// Set when the filler's end is dropped, filled or not.
    gone: AtomicBool,
    waker: AtomicWaker,
}

/// The worker's end: awaits the value.
pub(crate) struct ThreadSlot<T>(Arc<Inner<T>>);

/// The other thread's end: fills it once.
pub(crate) struct Filler<T>(Arc<Inner<T>>);

pub(crate) fn thread_slot<T>() -> (ThreadSlot<T>, Filler<T>) {
    let inner = Arc::new(Inner {
        value: Mutex::new(None),
        gone: AtomicBool::new(false),
        waker: AtomicWaker::new(),
    });
    (ThreadSlot(inner.clone()), Filler(inner))
}

impl<T> Filler<T> {
    pub fn fill(self, value: T) {
        *self.0.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        // Dropping wakes the waiter.
    }
}

impl<T> ThreadSlot<T> {
    /// The value; `None` if the filler was dropped without filling (its
    /// thread panicked).
    pub async fn wait(self) -> Option<T> {
        let take = || {
            self.0
                .value
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
        };
        poll_fn(|cx| {
            if let Some(v) = take() {
                return Poll::Ready(Some(v));
            }
            self.0.waker.register(cx.waker());
            // Looked at after registering: a filler that ends from now on
            // wakes this waker, one that ended before left `gone` set.
            let gone = self.0.gone.load(Ordering::Acquire);
            match take() {
                Some(v) => Poll::Ready(Some(v)),
                None if gone => Poll::Ready(None),
                None => Poll::Pending,
            }
        })
        .await
    }
}

impl<T> Drop for Filler<T> {
    fn drop(&mut self) {
        // Filled or not, the waiter must look again; `gone` first, so the
        // waiter it wakes (or one that registers later) sees it.
        self.0.gone.store(true, Ordering::Release);
        self.0.waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_value_from_another_thread_arrives() {
        let (slot, filler) = thread_slot();
        let t = std::thread::spawn(move || filler.fill(7));
        assert_eq!(block_on(slot.wait()), Some(7));
        t.join().unwrap();
    }

    /// Many rounds of the race between a waiter registering and a filler
    /// ending unfilled on another thread: every wait ends.
    #[test]
    fn no_round_of_the_race_loses_the_wakeup() {
        for _ in 0..2000 {
            let (slot, filler) = thread_slot::<u8>();
            let t = std::thread::spawn(move || drop(filler));
            assert_eq!(block_on(slot.wait()), None);
            t.join().unwrap();
        }
    }

    #[test]
    fn a_filler_dropped_unfilled_ends_the_wait() {
        let (slot, filler) = thread_slot::<u8>();
        let t = std::thread::spawn(move || drop(filler));
        assert_eq!(block_on(slot.wait()), None);
        t.join().unwrap();
    }
}
