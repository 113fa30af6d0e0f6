//! A connection's control block: how the rest of its worker reaches a
//! connection task without owning it — queue frames for it, ask it to
//! close, wake it for its deadline — whether the task runs or the
//! connection is parked (then the wake goes to the parker through
//! [`Wakeups`]).

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use super::wakeups::Wakeups;
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
pub(crate) enum Outgoing {
    /// A payload, framed by the connection.
    Payload(OpCode, Bytes),
    /// A whole frame, encoded once and shared by several connections.
    Encoded(Bytes),
}

impl Outgoing {
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Payload(_, payload) => payload.len(),
            Outgoing::Encoded(frame) => frame.len(),
        }
    }
}

pub(crate) struct ConnControl {
    deadline: Cell<Instant>,
    timer_fired: Cell<bool>,
    // Boxed: both are rare, and every connection (a parked one too) pays
    // for this struct.
    // A `Cell`, not a `RefCell`: the borrow flag would cost every
    // connection 8 bytes (and a size class of mimalloc's, measured).
    close_request: Cell<Option<Box<(CloseCode, String)>>>,
    // A `Cell` (taken and put back), not a `RefCell`: its borrow flag
    // would put the struct, in its `Rc`, in mimalloc's next size class.
    #[allow(clippy::box_collection)] // 8 bytes when empty instead of 32
    outbound: Cell<Option<Box<VecDeque<Outgoing>>>>,
    /// `outbound` holds frames (it cannot be looked at without taking it).
    queued: Cell<bool>,
    /// Bytes queued (saturating; the queue is closed long before 4 GiB).
    outbound_bytes: Cell<u32>,
    poked: Cell<bool>,
    waker: Cell<Option<Waker>>,
    /// Non-zero while the connection is parked: its token at the parker.
    parked: Cell<u64>,
    /// Registered with a congested tunnel, to be poked when it drains.
    waiting_for_tunnel: Cell<bool>,
    /// A close was requested (it stays set after the task took the request).
    closing: Cell<bool>,
    /// The requested close goes after the frames queued before it (the
    /// peer's own close of the connection), not ahead of them.
    close_after_queued: Cell<bool>,
    /// Where deadlines and wake-ups while parked are reported.
    wakeups: Rc<Wakeups>,
}

impl ConnControl {
    pub(super) fn new(now: Instant, wakeups: Rc<Wakeups>) -> Self {
        ConnControl {
            deadline: Cell::new(now),
            timer_fired: Cell::new(false),
            close_request: Cell::new(None),
            outbound: Cell::new(None),
            queued: Cell::new(false),
            outbound_bytes: Cell::new(0),
            poked: Cell::new(false),
            waker: Cell::new(None),
            parked: Cell::new(0),
            waiting_for_tunnel: Cell::new(false),
            closing: Cell::new(false),
            close_after_queued: Cell::new(false),
            wakeups,
        }
    }

    /// When the sweep should next wake this connection. Forgets a timer
    /// that fired for the previous deadline: the caller has just acted on
    /// its state, and a still-due deadline fires again within one tick.
    pub fn set_deadline(&self, at: Instant) {
        self.deadline.set(at);
        self.timer_fired.set(false);
        self.wakeups.note_deadline(at);
    }

    /// Asks the connection to close; the first request wins.
    pub fn request_close(&self, code: CloseCode, reason: impl Into<String>) {
        if self.closing.replace(true) {
            return;
        }
        self.close_request
            .set(Some(Box::new((code, reason.into()))));
        self.wake();
    }

    /// Asks the connection to close once what is queued now has been sent
    /// (an actor's messages, then its close); the first request wins.
    pub fn request_close_after_queued(&self, code: CloseCode, reason: impl Into<String>) {
        if !self.closing.get() {
            self.close_after_queued.set(true);
        }
        self.request_close(code, reason);
    }

    /// Queues a frame for the connection's client; returns the bytes now
    /// queued, or `None` if the connection is asked to close: nothing is
    /// queued then (the session would drop it, and a stuck flush would let
    /// the queue grow until `send_timeout`).
    pub fn push_outbound(&self, frame: Outgoing) -> Option<usize> {
        if self.closing.get() {
            return None;
        }
        let total = self.outbound_bytes.get() as usize + frame.len();
        self.outbound_bytes.set(total.min(u32::MAX as usize) as u32);
        let mut frames = self.outbound.take();
        frames.get_or_insert_with(Default::default).push_back(frame);
        self.outbound.set(frames);
        self.queued.set(true);
        self.wake();
        Some(total)
    }

    /// Takes everything queued, in order.
    pub fn drain_outbound(&self, mut each: impl FnMut(Outgoing)) {
        let frames = self.outbound.take();
        self.queued.set(false);
        self.outbound_bytes.set(0);
        frames.into_iter().flat_map(|f| *f).for_each(&mut each);
    }

    /// Wakes the task to re-check its situation (e.g. congestion cleared).
    pub fn poke(&self) {
        self.poked.set(true);
        self.wake();
    }

    pub(super) fn fire_timer(&self) {
        self.timer_fired.set(true);
        self.wake();
    }

    fn wake(&self) {
        let parked = self.parked.get();
        if parked != 0 {
            self.wakeups.unpark_soon(parked);
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
        self.has_close_request() || self.queued.get() || self.poked.get() || self.timer_fired.get()
    }

    /// The next signal (a close request first — unless it waits for queued
    /// frames — then queued frames, then the timer). Cancel-safe.
    pub async fn next_signal(&self) -> Signal {
        poll_fn(|cx| {
            let close_waits = self.close_after_queued.get() && self.queued.get();
            if !close_waits {
                if let Some(req) = self.close_request.take() {
                    let (code, reason) = *req;
                    return Poll::Ready(Signal::Close(code, reason));
                }
            }
            if self.queued.get() || self.poked.replace(false) {
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

    fn has_close_request(&self) -> bool {
        let req = self.close_request.take();
        let has = req.is_some();
        self.close_request.set(req);
        has
    }

    pub(super) fn deadline(&self) -> Instant {
        self.deadline.get()
    }

    pub(super) fn timer_fired(&self) -> bool {
        self.timer_fired.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal_now(control: &ConnControl) -> Option<Signal> {
        let mut cx = std::task::Context::from_waker(Waker::noop());
        let future = std::pin::pin!(control.next_signal());
        match std::future::Future::poll(future, &mut cx) {
            Poll::Ready(signal) => Some(signal),
            Poll::Pending => None,
        }
    }

    #[test]
    fn a_peers_close_waits_for_what_was_queued_before_it() {
        let control = ConnControl::new(Instant::now(), Rc::default());
        control.push_outbound(Outgoing::Payload(
            OpCode::Text,
            Bytes::from_static(b"last words"),
        ));
        control.request_close_after_queued(CloseCode(4000), "bye");
        assert_eq!(signal_now(&control), Some(Signal::Outbound));
        control.drain_outbound(|_| {});
        let close = Signal::Close(CloseCode(4000), "bye".into());
        assert_eq!(signal_now(&control), Some(close));
        // A plain close request goes first (a client too slow to read).
        let slow = ConnControl::new(Instant::now(), Rc::default());
        slow.push_outbound(Outgoing::Payload(
            OpCode::Text,
            Bytes::from_static(b"unread"),
        ));
        slow.request_close(CloseCode::POLICY, "too slow");
        assert!(matches!(signal_now(&slow), Some(Signal::Close(..))));
    }

    #[test]
    fn nothing_is_queued_once_a_close_is_requested() {
        let control = ConnControl::new(Instant::now(), Rc::default());
        let frame = || Outgoing::Payload(OpCode::Text, Bytes::from_static(b"hello"));
        assert_eq!(control.push_outbound(frame()), Some(5));
        assert_eq!(control.push_outbound(frame()), Some(10));
        control.request_close(CloseCode::POLICY, "too slow");
        assert_eq!(control.push_outbound(frame()), None);
        let mut drained = 0;
        control.drain_outbound(|_| drained += 1);
        assert_eq!(drained, 2, "only what came before the close request");
    }
}
