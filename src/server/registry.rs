//! The WebSocket connections a worker owns, and the worker's one timer.
//!
//! Connections keep no timer of their own (a monoio `Sleep` per socket costs
//! hundreds of bytes while idle). Each publishes its next deadline here; a
//! per-worker sweep wakes those whose deadline passed. The registry is also
//! how the worker reaches every connection (shutdown today; publish and
//! hibernation later).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use bytes::Bytes;

use crate::ws::{CloseCode, OpCode};

/// What wakes a connection task besides its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Its published deadline passed.
    Timer,
    /// Someone on the worker asks it to close (shutdown, the runner, a full queue).
    Close(CloseCode, String),
    /// Frames were queued for it (or a congestion it waited on cleared).
    Outbound,
}

/// A frame queued for a connection by another task of the same worker.
pub(crate) type Outgoing = (OpCode, Bytes);

pub(crate) struct ConnControl {
    deadline: Cell<Instant>,
    timer_fired: Cell<bool>,
    // Boxed: both are rare, and every connection (a parked one too) pays
    // for this struct.
    close_request: RefCell<Option<Box<(CloseCode, String)>>>,
    #[allow(clippy::box_collection)] // 8 bytes when empty instead of 32
    outbound: RefCell<Option<Box<VecDeque<Outgoing>>>>,
    outbound_bytes: Cell<usize>,
    poked: Cell<bool>,
    waker: Cell<Option<Waker>>,
    /// Non-zero while the connection is parked: its token at the parker.
    parked: Cell<u64>,
    /// Registered with a congested tunnel, to be poked when it drains.
    waiting_for_tunnel: Cell<bool>,
}

impl ConnControl {
    fn new(now: Instant) -> Self {
        ConnControl {
            deadline: Cell::new(now),
            timer_fired: Cell::new(false),
            close_request: RefCell::new(None),
            outbound: RefCell::new(None),
            outbound_bytes: Cell::new(0),
            poked: Cell::new(false),
            waker: Cell::new(None),
            parked: Cell::new(0),
            waiting_for_tunnel: Cell::new(false),
        }
    }

    /// When the sweep should next wake this connection. Forgets a timer
    /// that fired for the previous deadline: the caller has just acted on
    /// its state, and a still-due deadline fires again within one tick.
    pub fn set_deadline(&self, at: Instant) {
        self.deadline.set(at);
        self.timer_fired.set(false);
        note_deadline(at);
    }

    /// Asks the connection to close; the first request wins.
    pub fn request_close(&self, code: CloseCode, reason: impl Into<String>) {
        let mut req = self.close_request.borrow_mut();
        if req.is_none() {
            *req = Some(Box::new((code, reason.into())));
            drop(req);
            self.wake();
        }
    }

    /// Queues a frame for the connection's client; returns the bytes now queued.
    pub fn push_outbound(&self, frame: Outgoing) -> usize {
        let total = self.outbound_bytes.get() + frame.1.len();
        self.outbound_bytes.set(total);
        self.outbound
            .borrow_mut()
            .get_or_insert_with(Default::default)
            .push_back(frame);
        self.wake();
        total
    }

    /// Takes everything queued, in order.
    pub fn drain_outbound(&self, mut each: impl FnMut(Outgoing)) {
        let frames = self.outbound.borrow_mut().take();
        self.outbound_bytes.set(0);
        frames.into_iter().flat_map(|f| *f).for_each(&mut each);
    }

    /// Wakes the task to re-check its situation (e.g. congestion cleared).
    pub fn poke(&self) {
        self.poked.set(true);
        self.wake();
    }

    fn fire_timer(&self) {
        self.timer_fired.set(true);
        self.wake();
    }

    fn wake(&self) {
        let parked = self.parked.get();
        if parked != 0 {
            super::parker::unpark_soon(parked);
        } else if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// The connection's task ended and the parker holds it under `token`.
    pub fn park_at(&self, token: u64) {
        self.waker.set(None);
        self.parked.set(token);
    }

    pub fn unparked(&self) {
        self.parked.set(0);
    }

    pub fn is_parked(&self) -> bool {
        self.parked.get() != 0
    }

    /// Returns false if the connection already waits for its tunnel.
    pub fn start_waiting_for_tunnel(&self) -> bool {
        !self.waiting_for_tunnel.replace(true)
    }

    pub fn stop_waiting_for_tunnel(&self) {
        self.waiting_for_tunnel.set(false);
    }

    /// Whether anything waits for the connection's task (so it must not park).
    pub fn has_pending(&self) -> bool {
        self.close_request.borrow().is_some()
            || self.outbound.borrow().is_some()
            || self.poked.get()
            || self.timer_fired.get()
    }

    /// The next signal (a close request first, then queued frames, then the
    /// timer). Cancel-safe.
    pub async fn next_signal(&self) -> Signal {
        poll_fn(|cx| {
            if let Some(req) = self.close_request.borrow_mut().take() {
                let (code, reason) = *req;
                return Poll::Ready(Signal::Close(code, reason));
            }
            if self.outbound.borrow().is_some() || self.poked.replace(false) {
                return Poll::Ready(Signal::Outbound);
            }
            if self.timer_fired.replace(false) {
                return Poll::Ready(Signal::Timer);
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Resolves when the deadline passes; close requests wait. Cancel-safe.
    pub async fn timer(&self) {
        poll_fn(|cx| {
            if self.timer_fired.replace(false) {
                return Poll::Ready(());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    conns: RefCell<Slab<Rc<ConnControl>>>,
}

/// Removes the connection from the registry when its task ends, however it ends.
pub(crate) struct Registration {
    registry: Rc<Registry>,
    key: usize,
    pub control: Rc<ConnControl>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.conns.borrow_mut().remove(self.key);
    }
}

impl Registry {
    pub fn register(self: &Rc<Self>, now: Instant) -> Registration {
        let control = Rc::new(ConnControl::new(now));
        let key = self.conns.borrow_mut().insert(control.clone());
        Registration {
            registry: self.clone(),
            key,
            control,
        }
    }

    pub fn len(&self) -> usize {
        self.conns.borrow().len()
    }

    pub fn close_all(&self, code: CloseCode, reason: &str) {
        for (_, c) in self.conns.borrow().iter() {
            c.request_close(code, reason);
        }
    }

    /// Wakes every connection whose deadline is at or before `now`.
    pub fn sweep(&self, now: Instant) {
        let mut next = None::<Instant>;
        for (_, c) in self.conns.borrow().iter() {
            let d = c.deadline.get();
            if d <= now {
                if !c.timer_fired.get() {
                    c.fire_timer();
                }
            } else if next.is_none_or(|n| d < n) {
                next = Some(d);
            }
        }
        NEXT_DUE.with(|n| n.set(next));
    }
}

thread_local! {
    /// The earliest connection deadline this worker knows of (`None`: none).
    static NEXT_DUE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// The sweep task, when it sleeps past `NEXT_DUE`.
    static SWEEPER: Cell<Option<Waker>> = const { Cell::new(None) };
}

/// A connection set a deadline: if it is earlier than any the sweep knows
/// of, the sweep must come earlier. One comparison in the common case.
pub(crate) fn note_deadline(at: Instant) {
    NEXT_DUE.with(|n| {
        if n.get().is_none_or(|due| at < due) {
            n.set(Some(at));
            if let Some(w) = SWEEPER.with(|s| s.take()) {
                w.wake();
            }
        }
    });
}

/// Sleeps until the earliest known deadline (but not before `not_before`,
/// so sweeps stay at most one per tick), or until `limit` at the latest.
pub(crate) async fn sleep_until_due(not_before: Instant, limit: Option<Instant>) {
    loop {
        let due = NEXT_DUE.with(|n| n.get());
        let at = match (due, limit) {
            (Some(d), Some(l)) => d.min(l),
            (Some(d), None) => d,
            (None, Some(l)) => l,
            (None, None) => not_before + Duration::from_secs(3600),
        }
        .max(not_before);
        let earlier = poll_fn(|cx| {
            let now_due = NEXT_DUE.with(|n| n.get());
            if now_due.is_some_and(|d| d.max(not_before) < at) {
                return Poll::Ready(());
            }
            SWEEPER.with(|s| s.set(Some(cx.waker().clone())));
            Poll::Pending
        });
        monoio::select! {
            _ = monoio::time::sleep_until(at.into()) => return,
            _ = earlier => continue,
        }
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
    fn sweep_fires_only_due_connections() {
        let registry = Rc::new(Registry::default());
        let t0 = Instant::now();
        let a = registry.register(t0);
        let b = registry.register(t0);
        a.control.set_deadline(t0 + Duration::from_secs(1));
        b.control.set_deadline(t0 + Duration::from_secs(5));
        registry.sweep(t0 + Duration::from_secs(2));
        assert!(a.control.timer_fired.get());
        assert!(!b.control.timer_fired.get());
        drop(a);
        assert_eq!(registry.len(), 1);
    }

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
}
