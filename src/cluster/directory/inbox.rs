//! One worker's inbox: a bounded lock-free queue the directory threads push
//! into and the worker pops from, with an `AtomicWaker` so a monoio task
//! can await it. The directory never waits on a worker: a full inbox drops
//! the event, counts it, and owes the worker a `Resync` (its caches may now
//! be wrong), delivered ahead of the next event that fits or as soon as the
//! worker has emptied the queue.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Poll, Waker};

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

use super::DirectoryEvent;

/// Events one inbox holds before it drops.
pub const INBOX_CAPACITY: usize = 1024;

pub struct Inbox {
    queue: ArrayQueue<DirectoryEvent>,
    waker: AtomicWaker,
    dropped: AtomicU64,
    owes_resync: AtomicBool,
    closed: AtomicBool,
}

impl Inbox {
    pub(super) fn new(capacity: usize) -> Inbox {
        Inbox {
            queue: ArrayQueue::new(capacity.max(1)),
            waker: AtomicWaker::new(),
            dropped: AtomicU64::new(0),
            owes_resync: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// From the directory threads; never waits.
    pub(super) fn push(&self, event: DirectoryEvent) {
        if self.owes_resync.swap(false, Ordering::AcqRel)
            && self.queue.push(DirectoryEvent::Resync).is_err()
        {
            self.owes_resync.store(true, Ordering::Release);
        }
        if self.queue.push(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.owes_resync.store(true, Ordering::Release);
        }
        self.waker.wake();
    }

    /// The directory stopped: `next` ends once the queue is empty.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// The next event, if one is waiting.
    pub fn try_pop(&self) -> Option<DirectoryEvent> {
        if let Some(e) = self.queue.pop() {
            return Some(e);
        }
        self.owes_resync
            .swap(false, Ordering::AcqRel)
            .then_some(DirectoryEvent::Resync)
    }

    /// Wakes `waker` at the next push (register, then `try_pop` again).
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// The next event; None once the directory has stopped and the inbox
    /// is empty. Only one task may await an inbox.
    pub async fn next(&self) -> Option<DirectoryEvent> {
        poll_fn(|cx| {
            if let Some(e) = self.try_pop() {
                return Poll::Ready(Some(e));
            }
            self.register(cx.waker());
            if let Some(e) = self.try_pop() {
                return Poll::Ready(Some(e));
            }
            if self.closed.load(Ordering::Acquire) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Events dropped because the inbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gone(n: &str) -> DirectoryEvent {
        DirectoryEvent::NodeGone { node: n.into() }
    }

    #[test]
    fn a_full_inbox_drops_counts_and_owes_a_resync() {
        let inbox = Inbox::new(3);
        for n in ["a", "b", "c", "d"] {
            inbox.push(gone(n));
        }
        assert_eq!(inbox.dropped(), 1);
        assert_eq!(inbox.try_pop(), Some(gone("a")));
        assert_eq!(inbox.try_pop(), Some(gone("b")));
        // Room again: the resync goes ahead of the next event.
        inbox.push(gone("e"));
        assert_eq!(inbox.try_pop(), Some(gone("c")));
        assert_eq!(inbox.try_pop(), Some(DirectoryEvent::Resync));
        assert_eq!(inbox.try_pop(), Some(gone("e")));
        assert_eq!(inbox.try_pop(), None);
        // Or once the worker drained everything, with nothing new.
        for n in ["f", "g", "h", "i"] {
            inbox.push(gone(n));
        }
        for n in ["f", "g", "h"] {
            assert_eq!(inbox.try_pop(), Some(gone(n)));
        }
        assert_eq!(inbox.try_pop(), Some(DirectoryEvent::Resync));
        assert_eq!(inbox.try_pop(), None);
        assert_eq!(inbox.dropped(), 2);
    }

    #[test]
    fn next_wakes_on_push_and_ends_when_closed() {
        let inbox = std::sync::Arc::new(Inbox::new(4));
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let pusher = inbox.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            pusher.push(gone("x"));
            pusher.close();
        });
        rt.block_on(async {
            assert_eq!(inbox.next().await, Some(gone("x")));
            assert_eq!(inbox.next().await, None);
        });
        t.join().unwrap();
    }
}
