//! What a worker tells the inspector: events (a connection opened, an
//! actor slept, …) and, once a second, a snapshot of its runners and
//! actors — but only while an inspector watches.
//!
//! One `Feed` per worker, shared (`Arc`) with the admin worker that reads
//! it. The worker checks one relaxed flag before recording anything, so
//! with no inspector connected an event costs a load and a branch, and
//! nothing is allocated. While watched, events go into a bounded lock-free
//! queue: when it is full the oldest is dropped (and counted), so a slow
//! or absent reader never blocks the worker or grows its memory.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;
use serde::Serialize;

use super::views::WorkerSnapshot;

/// Events a worker keeps for the inspector between two reads.
pub(crate) const FEED_EVENTS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventKind {
    /// A client connection was accepted by its actor.
    Open,
    /// A client connection left its actor (either side closed it).
    Close,
    /// A new actor is being started.
    Start,
    /// An actor fell asleep; its hibernatable connections stay.
    Sleep,
    /// A sleeping actor is being started again.
    Wake,
    /// An actor is moving to another runner (operator or drain).
    Migrate,
    /// An actor's runner failed it: it restarts elsewhere.
    Failover,
    /// A runner's tunnel on this worker began draining.
    Drain,
}

/// One thing that happened on a worker.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    pub kind: EventKind,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub worker: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn: Option<u64>,
}

pub(crate) struct Feed {
    watched: AtomicBool,
    events: ArrayQueue<Event>,
    /// Events pushed out of a full queue, unread.
    dropped: AtomicU64,
    /// The latest snapshot (a newer one replaces it).
    snapshot: ArrayQueue<WorkerSnapshot>,
    /// The worker's feed task, asleep until someone watches.
    waker: AtomicWaker,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            watched: AtomicBool::new(false),
            events: ArrayQueue::new(FEED_EVENTS),
            dropped: AtomicU64::new(0),
            snapshot: ArrayQueue::new(1),
            waker: AtomicWaker::new(),
        }
    }
}

impl Feed {
    /// Checked before building an event: the whole cost while nobody watches.
    pub fn is_watched(&self) -> bool {
        self.watched.load(Ordering::Relaxed)
    }

    /// Starts or stops the feed (the admin worker, as inspectors come and go).
    pub fn watch(&self, on: bool) {
        self.watched.store(on, Ordering::Relaxed);
        if on {
            self.waker.wake();
        } else {
            while self.events.pop().is_some() {}
            self.snapshot.pop();
        }
    }

    /// Resolves once someone watches (only the worker's feed task waits).
    pub async fn until_watched(&self) {
        poll_fn(|cx| {
            if self.is_watched() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.is_watched() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Keeps `event`, dropping the oldest if the queue is full. Never blocks.
    pub fn push(&self, event: Event) {
        if self.events.force_push(event).is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn pop(&self) -> Option<Event> {
        self.events.pop()
    }

    /// Events lost to a full queue so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn publish(&self, snapshot: WorkerSnapshot) {
        self.snapshot.force_push(snapshot);
    }

    pub fn take_snapshot(&self) -> Option<WorkerSnapshot> {
        self.snapshot.pop()
    }
}

#[cfg(test)]
impl Event {
    /// An `Open` event of connection `conn`, for tests.
    pub(crate) fn opened(conn: u64) -> Event {
        Event {
            kind: EventKind::Open,
            at_ms: 0,
            worker: 0,
            namespace: None,
            actor: None,
            key: Vec::new(),
            runner: None,
            conn: Some(conn),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(conn: u64) -> Event {
        Event::opened(conn)
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let feed = Feed::default();
        for i in 0..FEED_EVENTS as u64 + 3 {
            feed.push(event(i));
        }
        assert_eq!(feed.dropped(), 3);
        assert_eq!(feed.pop().and_then(|e| e.conn), Some(3));
    }

    #[test]
    fn unwatching_empties_it() {
        let feed = Feed::default();
        feed.watch(true);
        assert!(feed.is_watched());
        feed.push(event(1));
        feed.watch(false);
        assert!(!feed.is_watched() && feed.pop().is_none());
    }

    #[test]
    fn events_serialize_without_empty_fields() {
        let json = serde_json::to_string(&event(7)).unwrap();
        assert_eq!(json, r#"{"kind":"open","at_ms":0,"worker":0,"conn":7}"#);
    }
}
