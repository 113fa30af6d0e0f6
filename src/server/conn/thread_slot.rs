//! A one-shot value filled by another thread and awaited on a worker: the
//! answer of work done off the worker (a blocking file write, a call that
//! waits for every worker), so the worker's loop never blocks on it.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use atomic_waker::AtomicWaker;

struct Inner<T> {
    value: Mutex<Option<T>>,
    waker: AtomicWaker,
}

/// The worker's end: awaits the value.
pub(crate) struct ThreadSlot<T>(Arc<Inner<T>>);

/// The other thread's end: fills it once.
pub(crate) struct Filler<T>(Option<Arc<Inner<T>>>);

pub(crate) fn thread_slot<T>() -> (ThreadSlot<T>, Filler<T>) {
    let inner = Arc::new(Inner {
        value: Mutex::new(None),
        waker: AtomicWaker::new(),
    });
    (ThreadSlot(inner.clone()), Filler(Some(inner)))
}

impl<T> Filler<T> {
    pub fn fill(self, value: T) {
        if let Some(inner) = &self.0 {
            *inner.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        }
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
            match take() {
                Some(v) => Poll::Ready(Some(v)),
                // Only this end left: nobody can fill it any more.
                None if Arc::strong_count(&self.0) == 1 => Poll::Ready(None),
                None => Poll::Pending,
            }
        })
        .await
    }
}

impl<T> Drop for Filler<T> {
    fn drop(&mut self) {
        // Filled or not, the waiter must look again, and only once this
        // end's count is gone, so that an unfilled slot reads as abandoned.
        if let Some(inner) = self.0.take() {
            let waker = inner.waker.take();
            drop(inner);
            if let Some(w) = waker {
                w.wake();
            }
        }
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

    #[test]
    fn a_filler_dropped_unfilled_ends_the_wait() {
        let (slot, filler) = thread_slot::<u8>();
        let t = std::thread::spawn(move || drop(filler));
        assert_eq!(block_on(slot.wait()), None);
        t.join().unwrap();
    }
}
