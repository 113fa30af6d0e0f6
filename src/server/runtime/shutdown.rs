//! The one cross-thread signal of the foundation: "stop now".

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use atomic_waker::AtomicWaker;

pub(crate) struct ShutdownSignal {
    triggered: AtomicBool,
    /// One per worker: each worker's control task parks here.
    wakers: Vec<AtomicWaker>,
}

impl ShutdownSignal {
    pub fn new(workers: usize) -> Self {
        Self {
            triggered: AtomicBool::new(false),
            wakers: (0..workers).map(|_| AtomicWaker::new()).collect(),
        }
    }

    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::Release);
        for w in &self.wakers {
            w.wake();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::Acquire)
    }

    /// Resolves once `trigger` has been called. Only worker `worker` may wait on its slot.
    pub async fn wait(&self, worker: usize) {
        poll_fn(|cx| {
            self.wakers[worker].register(cx.waker());
            if self.is_triggered() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}
