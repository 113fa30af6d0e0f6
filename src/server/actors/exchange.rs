//! One HTTP request in flight to an actor, as its client's task and the
//! worker's `Actors` share it (PROTOCOL §7b): what the actor answered so
//! far (head, body pieces, end) waiting to be written, how much request
//! body the runner allows, and how the request ended if it cannot end well.
//!
//! The client's task owns the socket and reads all this; the actors layer
//! fills it from tunnel frames and pokes the task. Both run on one worker,
//! so plain cells do: nothing here is shared between cores.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use bytes::Bytes;

/// The head of the actor's final response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, Bytes)>,
    /// `HttpBody` frames follow, then `HttpEnd`.
    pub body: bool,
}

/// How a request ends when it cannot end with the actor's whole response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// No response head came: the gateway answers `status` with `kind:
    /// reason` (`retry`: with `Retry-After`, nothing was handled).
    Refused {
        status: u16,
        kind: &'static str,
        reason: String,
        retry: bool,
    },
    /// The response started and cannot be finished (the actor moved or was
    /// given up): the client gets what arrived, then an incomplete message.
    Cut,
}

#[derive(Default)]
struct Inner {
    head: Option<ResponseHead>,
    pieces: VecDeque<Bytes>,
    /// `HttpEnd` arrived: `pieces` is the rest of the body.
    ended: bool,
    outcome: Option<Outcome>,
}

pub(crate) struct Exchange {
    /// Its current `req_id` (a replay to the actor's next runner takes a new one).
    req_id: Cell<u64>,
    /// Request body bytes the runner allows in all, and those forwarded.
    credit: Cell<u64>,
    sent: Cell<u64>,
    inner: RefCell<Inner>,
    /// Set by every change; cleared when the client's task looks.
    changed: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Exchange {
    pub fn new() -> Self {
        Exchange {
            req_id: Cell::new(0),
            credit: Cell::new(0),
            sent: Cell::new(0),
            inner: RefCell::new(Inner::default()),
            changed: Cell::new(false),
            waker: Cell::new(None),
        }
    }

    pub fn req_id(&self) -> u64 {
        self.req_id.get()
    }

    pub(super) fn set_req_id(&self, id: u64) {
        self.req_id.set(id);
    }

    // ---- the client's task ----------------------------------------------

    /// Resolves once something changed since the last call. Cancel-safe.
    pub async fn changed(&self) {
        poll_fn(|cx| {
            if self.changed.replace(false) {
                return Poll::Ready(());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Request body bytes that may be forwarded now.
    pub fn credit_left(&self) -> u64 {
        self.credit.get().saturating_sub(self.sent.get())
    }

    pub fn take_head(&self) -> Option<ResponseHead> {
        self.inner.borrow_mut().head.take()
    }

    /// Moves the body pieces that arrived into `into`; returns whether the
    /// body is complete with them.
    pub fn take_pieces(&self, into: &mut Vec<Bytes>) -> bool {
        let mut inner = self.inner.borrow_mut();
        into.extend(inner.pieces.drain(..));
        inner.ended
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.inner.borrow().outcome.clone()
    }

    // ---- the actors layer -----------------------------------------------

    fn poke(&self) {
        self.changed.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    pub(super) fn note_sent(&self, n: u64) {
        self.sent.set(self.sent.get().saturating_add(n));
    }

    pub(super) fn add_credit(&self, n: u64) {
        self.credit.set(self.credit.get().saturating_add(n));
        self.poke();
    }

    /// A fresh start on another runner: `credit` in all, `sent` already in it.
    pub(super) fn reset_credit(&self, credit: u64, sent: u64) {
        self.credit.set(credit);
        self.sent.set(sent);
        self.poke();
    }

    pub(crate) fn set_head(&self, head: ResponseHead) {
        self.inner.borrow_mut().head = Some(head);
        self.poke();
    }

    pub(crate) fn push_piece(&self, data: Bytes) {
        self.inner.borrow_mut().pieces.push_back(data);
        self.poke();
    }

    pub(crate) fn end(&self) {
        self.inner.borrow_mut().ended = true;
        self.poke();
    }

    /// The first outcome stands.
    pub(super) fn finish_with(&self, outcome: Outcome) {
        let mut inner = self.inner.borrow_mut();
        if inner.outcome.is_none() {
            inner.outcome = Some(outcome);
        }
        drop(inner);
        self.poke();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_and_pieces_as_the_client_task_sees_them() {
        let x = Exchange::new();
        x.reset_credit(10, 4);
        assert_eq!(x.credit_left(), 6);
        x.note_sent(6);
        assert_eq!(x.credit_left(), 0);
        x.add_credit(u64::MAX);
        assert_eq!(x.credit_left(), u64::MAX - 10);
        x.push_piece(Bytes::from_static(b"a"));
        let mut got = Vec::new();
        assert!(!x.take_pieces(&mut got));
        x.end();
        assert!(x.take_pieces(&mut got));
        assert_eq!(got, [Bytes::from_static(b"a")]);
        x.finish_with(Outcome::Cut);
        x.finish_with(Outcome::Refused {
            status: 502,
            kind: "cancelled",
            reason: String::new(),
            retry: false,
        });
        assert_eq!(x.outcome(), Some(Outcome::Cut), "the first outcome stands");
    }
}
