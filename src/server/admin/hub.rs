//! The inspector's side of the admin worker: it reads every worker's feed
//! (`actors::Feed`) and keeps, as ready-to-send server-sent events, the
//! latest picture of the gateway (`picture`, composed from the workers'
//! snapshots at most once a second) and a bounded ring of recent events.
//! The open streams share them, each with its own cursor: a stream that
//! falls behind the ring skips what it missed (and is told how much), so a
//! slow reader costs no memory. The feeds are watched only while a stream
//! is open.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::picture::{compose, Extras};
use crate::server::actors::{unix_ms, Feed, WorkerSnapshot, FEED_EVENTS};

/// Recent events kept for the streams (each a few hundred bytes).
const RING_EVENTS: usize = 1024;
/// How often the picture is composed again.
const PICTURE_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Hub {
    feeds: Arc<[Arc<Feed>]>,
    max_streams: usize,
    streams: Cell<usize>,
    /// Recent events as SSE frames, with their sequence numbers.
    ring: RefCell<VecDeque<(u64, Bytes)>>,
    next_event: Cell<u64>,
    /// Each worker's latest snapshot.
    latest: RefCell<Vec<Option<WorkerSnapshot>>>,
    picture: RefCell<Option<Picture>>,
}

/// The latest composed picture.
struct Picture {
    seq: u64,
    at: Instant,
    /// Messages in and out so far, for the next rate.
    messages: u64,
    frame: Bytes,
}

/// Where a stream is: the next event it has not sent, the last picture it sent.
pub(super) struct Cursor {
    next_event: u64,
    picture: u64,
}

/// A stream's place among the `max_streams`; leaving is dropping it.
pub(super) struct Watching<'a>(&'a Hub);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        let hub = self.0;
        hub.streams.set(hub.streams.get() - 1);
        if hub.streams.get() == 0 {
            hub.feeds.iter().for_each(|f| f.watch(false));
            hub.ring.borrow_mut().clear();
            hub.latest.borrow_mut().iter_mut().for_each(|s| *s = None);
            hub.picture.borrow_mut().take();
        }
    }
}

impl Hub {
    pub fn new(feeds: Arc<[Arc<Feed>]>, max_streams: usize) -> Hub {
        let latest = RefCell::new(vec![None; feeds.len()]);
        Hub {
            feeds,
            max_streams,
            streams: Cell::new(0),
            ring: RefCell::default(),
            next_event: Cell::new(0),
            latest,
            picture: RefCell::default(),
        }
    }

    pub fn max_streams(&self) -> usize {
        self.max_streams
    }

    /// A place for one more stream (the first one starts the feeds), and
    /// its cursor: events from now on, the latest picture first.
    pub(super) fn join(&self) -> Option<(Watching<'_>, Cursor)> {
        if self.streams.get() >= self.max_streams {
            return None;
        }
        self.streams.set(self.streams.get() + 1);
        if self.streams.get() == 1 {
            self.feeds.iter().for_each(|f| f.watch(true));
        }
        let cursor = Cursor {
            next_event: self.next_event.get(),
            picture: 0,
        };
        Some((Watching(self), cursor))
    }

    /// Takes what the workers published; composes a new picture if the
    /// last is a second old. `parked`: hibernated sockets without a task.
    pub(super) fn pump(&self, now: Instant, parked: u64) {
        for (i, feed) in self.feeds.iter().enumerate() {
            if let Some(snapshot) = feed.take_snapshot() {
                self.latest.borrow_mut()[i] = Some(snapshot);
            }
            for _ in 0..FEED_EVENTS {
                let Some(event) = feed.pop() else { break };
                self.push_event(sse("event", &event));
            }
        }
        let due = self
            .picture
            .borrow()
            .as_ref()
            .is_none_or(|p| now >= p.at + PICTURE_EVERY);
        if due && self.latest.borrow().iter().any(Option::is_some) {
            self.compose(now, parked);
        }
    }

    fn push_event(&self, frame: Bytes) {
        let mut ring = self.ring.borrow_mut();
        if ring.len() == RING_EVENTS {
            ring.pop_front();
        }
        let seq = self.next_event.get();
        ring.push_back((seq, frame));
        self.next_event.set(seq + 1);
    }

    /// Appends to `out` what the stream at `cursor` has not sent: the
    /// picture if newer, then the events (after a `lagged` note if some
    /// left the ring before it could send them).
    pub(super) fn unsent(&self, cursor: &mut Cursor, out: &mut BytesMut) {
        if let Some(p) = self
            .picture
            .borrow()
            .as_ref()
            .filter(|p| p.seq > cursor.picture)
        {
            out.put_slice(&p.frame);
            cursor.picture = p.seq;
        }
        let ring = self.ring.borrow();
        let oldest = ring.front().map_or(self.next_event.get(), |(seq, _)| *seq);
        if cursor.next_event < oldest {
            #[derive(Serialize)]
            struct Lagged {
                missed: u64,
            }
            let missed = oldest - cursor.next_event;
            out.put_slice(&sse("lagged", &Lagged { missed }));
            cursor.next_event = oldest;
        }
        let skip = (cursor.next_event - oldest) as usize;
        for (_, frame) in ring.iter().skip(skip) {
            out.put_slice(frame);
        }
        cursor.next_event = self.next_event.get();
    }

    fn compose(&self, now: Instant, parked: u64) {
        let latest = self.latest.borrow();
        let snapshots: Vec<&WorkerSnapshot> = latest.iter().flatten().collect();
        let previous = self.picture.borrow_mut().take();
        let extras = Extras {
            at_ms: unix_ms(SystemTime::now()),
            parked,
            events_dropped: self.feeds.iter().map(|f| f.dropped()).sum(),
            previous: previous
                .as_ref()
                .map(|p| (now.saturating_duration_since(p.at), p.messages)),
        };
        let view = compose(&snapshots, extras);
        *self.picture.borrow_mut() = Some(Picture {
            seq: previous.map_or(1, |p| p.seq + 1),
            at: now,
            messages: view.messages.total(),
            frame: sse("snapshot", &view),
        });
    }
}

/// One server-sent event: its name and its data, JSON on one line.
fn sse(name: &str, data: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned());
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::actors::{ConnCounts, Event};

    fn hub(workers: usize, max: usize) -> Hub {
        let feeds: Vec<Arc<Feed>> = (0..workers).map(|_| Arc::default()).collect();
        Hub::new(feeds.into(), max)
    }

    fn event(conn: u64) -> Event {
        Event::opened(conn)
    }

    #[test]
    fn streams_are_bounded_and_the_feeds_watched_only_while_one_is_open() {
        let h = hub(2, 2);
        assert!(!h.feeds[1].is_watched());
        let a = h.join().expect("first");
        let b = h.join().expect("second");
        assert!(h.join().is_none(), "a third is refused");
        assert!(h.feeds[1].is_watched());
        drop(a);
        assert!(h.feeds[1].is_watched(), "one still open");
        drop(b);
        assert!(!h.feeds[0].is_watched() && !h.feeds[1].is_watched());
    }

    #[test]
    fn a_stream_gets_new_events_and_a_lagging_one_skips_what_left_the_ring() {
        let h = hub(1, 4);
        let (_w, mut slow) = h.join().unwrap();
        let (_v, mut quick) = h.join().unwrap();
        let feed = h.feeds[0].clone();
        for i in 0..RING_EVENTS as u64 + 5 {
            feed.push(event(i));
            if i % 512 == 0 {
                h.pump(Instant::now(), 0);
                h.unsent(&mut quick, &mut BytesMut::new());
            }
        }
        h.pump(Instant::now(), 0);
        let mut out = BytesMut::new();
        h.unsent(&mut slow, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("event: lagged\ndata: {\"missed\":5}\n\n"),
            "{}",
            &text[..80]
        );
        assert_eq!(text.matches("event: event\n").count(), RING_EVENTS);
        out.clear();
        h.unsent(&mut slow, &mut out);
        assert!(out.is_empty(), "nothing new");
    }

    #[test]
    fn a_picture_sums_the_workers_and_reports_a_rate() {
        let h = hub(2, 1);
        let (_w, mut cursor) = h.join().unwrap();
        let snapshot = |worker, messages_in| WorkerSnapshot {
            worker,
            runners: Vec::new(),
            actors: crate::server::actors::Bounded {
                items: Vec::new(),
                total: 3,
            },
            connections: ConnCounts {
                open: 2,
                hibernated: 1,
            },
            messages_in,
            messages_out: 0,
        };
        let t0 = Instant::now();
        h.feeds[0].publish(snapshot(0, 10));
        h.feeds[1].publish(snapshot(1, 10));
        h.pump(t0, 7);
        h.feeds[0].publish(snapshot(0, 30));
        h.pump(t0 + Duration::from_millis(500), 7);
        h.pump(t0 + Duration::from_secs(2), 7);
        let mut out = BytesMut::new();
        h.unsent(&mut cursor, &mut out);
        let text = String::from_utf8_lossy(&out);
        let data = text
            .strip_prefix("event: snapshot\ndata: ")
            .unwrap()
            .trim_end();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["workers"], 2);
        assert_eq!(v["actors_total"], 6);
        assert_eq!(v["connections"]["open"], 4);
        assert_eq!(v["connections"]["hibernated"], 2);
        assert_eq!(v["connections"]["parked"], 7);
        assert_eq!(v["messages"]["in"], 40);
        assert_eq!(v["messages"]["per_second"], 10.0, "20 more in 2 s");
    }
}
