//! A connection's control block: how the rest of its worker reaches a
//! connection task without owning it — queue frames for it, ask it to
//! close, wake it for its deadline — whether the task runs or the
//! connection is parked (then the wake goes to the parker through
//! [`Wakeups`]).

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, RawWaker, RawWakerVTable, Waker};
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
    /// Nanoseconds since the `wakeups` epoch.
    deadline: Cell<u64>,
    /// Frames queued and a close request: both rare for most connections
    /// and absent for a parked one, so one box (8 bytes when empty). A
    /// `Cell`, taken and put back, not a `RefCell`: every connection (a
    /// parked one too) pays for this struct, and 48 bytes make its `Rc`
    /// mimalloc's 64-byte class (56 would make it 80).
    pending: Cell<Option<Box<Pending>>>,
    /// Bytes queued (saturating; the queue is closed long before 4 GiB).
    outbound_bytes: Cell<u32>,
    /// `Flags` bits (one byte instead of one per flag, for the same reason).
    flags: Cell<u8>,
    /// The task to wake; while the connection is parked, a waker that is
    /// never called and carries its token at the parker instead (see
    /// `PARKED`).
    waker: Cell<Option<Waker>>,
    /// Where deadlines and wake-ups while parked are reported.
    wakeups: Rc<Wakeups>,
}

/// What waits in a connection's `pending` box.
#[derive(Default)]
struct Pending {
    frames: VecDeque<Outgoing>,
    close: Option<(CloseCode, String)>,
}

/// The bits of `ConnControl::flags`.
struct Flags;

impl Flags {
    /// The published deadline passed and the task has not seen it yet.
    const TIMER_FIRED: u8 = 1;
    /// `pending` holds frames (it cannot be looked at without taking it).
    const QUEUED: u8 = 2;
    const POKED: u8 = 4;
    /// Registered with a congested tunnel, to be poked when it drains.
    const WAITING_FOR_TUNNEL: u8 = 8;
    /// A close was requested (it stays set after the task took the request).
    const CLOSING: u8 = 16;
    /// The requested close goes after the frames queued before it (the
    /// peer's own close of the connection), not ahead of them.
    const CLOSE_AFTER_QUEUED: u8 = 32;
}

impl ConnControl {
    pub(super) fn new(now: Instant, wakeups: Rc<Wakeups>) -> Self {
        ConnControl {
            deadline: Cell::new(wakeups.stamp(now)),
            pending: Cell::new(None),
            outbound_bytes: Cell::new(0),
            flags: Cell::new(0),
            waker: Cell::new(None),
            wakeups,
        }
    }

    fn flag(&self, bit: u8) -> bool {
        self.flags.get() & bit != 0
    }

    /// Sets or clears `bit`; returns whether it was set.
    fn replace_flag(&self, bit: u8, on: bool) -> bool {
        let was = self.flags.get();
        self.flags.set(if on { was | bit } else { was & !bit });
        was & bit != 0
    }

    /// Runs `f` on the pending box (taken out of its cell meanwhile),
    /// creating it if `create`; an emptied box is freed.
    fn with_pending<R>(&self, create: bool, f: impl FnOnce(&mut Pending) -> R) -> Option<R> {
        let mut pending = self.pending.take();
        if create {
            pending.get_or_insert_with(Default::default);
        }
        let result = pending.as_deref_mut().map(f);
        self.pending
            .set(pending.filter(|p| !p.frames.is_empty() || p.close.is_some()));
        result
    }

    /// When the sweep should next wake this connection. Forgets a timer
    /// that fired for the previous deadline: the caller has just acted on
    /// its state, and a still-due deadline fires again within one tick.
    pub fn set_deadline(&self, at: Instant) {
        self.deadline.set(self.wakeups.stamp(at));
        self.replace_flag(Flags::TIMER_FIRED, false);
        self.wakeups.note_deadline(at);
    }

    /// Asks the connection to close; the first request wins.
    pub fn request_close(&self, code: CloseCode, reason: impl Into<String>) {
        if self.replace_flag(Flags::CLOSING, true) {
            return;
        }
        let close = (code, reason.into());
        self.with_pending(true, |p| p.close = Some(close));
        self.wake();
    }

    /// Asks the connection to close once what is queued now has been sent
    /// (an actor's messages, then its close); the first request wins.
    pub fn request_close_after_queued(&self, code: CloseCode, reason: impl Into<String>) {
        if !self.flag(Flags::CLOSING) {
            self.replace_flag(Flags::CLOSE_AFTER_QUEUED, true);
        }
        self.request_close(code, reason);
    }

    /// Queues a frame for the connection's client; returns the bytes now
    /// queued, or `None` if the connection is asked to close: nothing is
    /// queued then (the session would drop it, and a stuck flush would let
    /// the queue grow until `send_timeout`).
    pub fn push_outbound(&self, frame: Outgoing) -> Option<usize> {
        if self.flag(Flags::CLOSING) {
            return None;
        }
        let total = self.outbound_bytes.get() as usize + frame.len();
        self.outbound_bytes.set(total.min(u32::MAX as usize) as u32);
        self.with_pending(true, |p| p.frames.push_back(frame));
        self.replace_flag(Flags::QUEUED, true);
        self.wake();
        Some(total)
    }

    /// Takes everything queued, in order.
    pub fn drain_outbound(&self, each: impl FnMut(Outgoing)) {
        let frames = self.with_pending(false, |p| std::mem::take(&mut p.frames));
        self.replace_flag(Flags::QUEUED, false);
        self.outbound_bytes.set(0);
        frames.into_iter().flatten().for_each(each);
    }

    /// Wakes the task to re-check its situation (e.g. congestion cleared).
    pub fn poke(&self) {
        self.replace_flag(Flags::POKED, true);
        self.wake();
    }

    pub(super) fn fire_timer(&self) {
        self.replace_flag(Flags::TIMER_FIRED, true);
        self.wake();
    }

    fn wake(&self) {
        let Some(w) = self.waker.take() else {
            return;
        };
        match parked_token(&w) {
            Some(token) => {
                self.wakeups.unpark_soon(token);
                self.waker.set(Some(w)); // parked until the parker resumes it
            }
            None => w.wake(),
        }
    }

    /// The connection's task ended and the parker holds it under `token`.
    pub fn park_at(&self, token: u64) {
        let data = std::ptr::without_provenance(token as usize);
        // SAFETY: `PARKED`'s functions do nothing, whatever `data` is.
        self.waker.set(Some(unsafe { Waker::new(data, &PARKED) }));
    }

    pub fn unparked(&self) {
        if self.is_parked() {
            self.waker.set(None);
        }
    }

    pub fn is_parked(&self) -> bool {
        let w = self.waker.take();
        let parked = w.as_ref().and_then(parked_token).is_some();
        self.waker.set(w);
        parked
    }

    /// Returns false if the connection already waits for its tunnel.
    pub fn start_waiting_for_tunnel(&self) -> bool {
        !self.replace_flag(Flags::WAITING_FOR_TUNNEL, true)
    }

    pub fn stop_waiting_for_tunnel(&self) {
        self.replace_flag(Flags::WAITING_FOR_TUNNEL, false);
    }

    /// Whether anything waits for the connection's task (so it must not park).
    pub fn has_pending(&self) -> bool {
        self.has_close_request() || self.flag(Flags::QUEUED | Flags::POKED | Flags::TIMER_FIRED)
    }

    /// The next signal (a close request first — unless it waits for queued
    /// frames — then queued frames, then the timer). Cancel-safe.
    pub async fn next_signal(&self) -> Signal {
        poll_fn(|cx| {
            let queued = self.flag(Flags::QUEUED);
            if !(self.flag(Flags::CLOSE_AFTER_QUEUED) && queued) {
                if let Some((code, reason)) = self.take_close_request() {
                    return Poll::Ready(Signal::Close(code, reason));
                }
            }
            if queued || self.replace_flag(Flags::POKED, false) {
                return Poll::Ready(Signal::Outbound);
            }
            if self.replace_flag(Flags::TIMER_FIRED, false) {
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
            if self.replace_flag(Flags::TIMER_FIRED, false) {
                return Poll::Ready(());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    fn take_close_request(&self) -> Option<(CloseCode, String)> {
        self.with_pending(false, |p| p.close.take()).flatten()
    }

    fn has_close_request(&self) -> bool {
        self.with_pending(false, |p| p.close.is_some()) == Some(true)
    }

    pub(super) fn deadline(&self) -> Instant {
        self.wakeups.instant(self.deadline.get())
    }

    pub(super) fn timer_fired(&self) -> bool {
        self.flag(Flags::TIMER_FIRED)
    }
}

/// The waker of a parked connection: never called (`wake` reports its
/// token to the worker's `Wakeups` instead), it only carries the token in
/// its data pointer, so that a connection needs no field for it.
static PARKED: RawWakerVTable = RawWakerVTable::new(parked_clone, ignore, ignore, ignore);

// A token is a slab key and a generation, 32 bits each.
const _: () = assert!(usize::BITS >= 64, "a parked token rides in a pointer");

fn parked_clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &PARKED)
}

fn ignore(_: *const ()) {}

fn parked_token(w: &Waker) -> Option<u64> {
    std::ptr::eq(w.vtable(), &PARKED).then(|| w.data().addr() as u64)
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

    /// Every connection, a parked one too, holds one in an `Rc`: 48 bytes
    /// are mimalloc's 64-byte class with the counts, 56 would be 80.
    #[test]
    fn a_control_block_stays_small() {
        let size = std::mem::size_of::<ConnControl>();
        assert!(size <= 48, "ConnControl grew to {size} bytes");
    }

    #[test]
    fn a_parked_connection_reports_its_wakes_to_the_parker() {
        let wakeups = Rc::new(Wakeups::default());
        let control = ConnControl::new(Instant::now(), wakeups.clone());
        let token = (7 << 32) | 3;
        control.park_at(token);
        assert!(control.is_parked());
        control.poke();
        control.fire_timer();
        assert_eq!(wakeups.take_unparked(), vec![token, token]);
        control.unparked();
        assert!(!control.is_parked());
        control.poke();
        assert!(wakeups.take_unparked().is_empty());
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
