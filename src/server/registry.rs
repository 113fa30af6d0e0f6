//! The WebSocket connections a worker owns, so the worker can reach them all
//! (to close them on shutdown today; to publish to them and hibernate them later).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use slab::Slab;

use crate::ws::CloseCode;

/// What another task on the same worker can ask of a connection.
#[derive(Default)]
pub(crate) struct ConnControl {
    close_request: Cell<Option<(CloseCode, &'static str)>>,
    waker: Cell<Option<Waker>>,
}

impl ConnControl {
    pub fn request_close(&self, code: CloseCode, reason: &'static str) {
        self.close_request.set(Some((code, reason)));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Resolves with the pending request, if any arrives. Cancel-safe.
    pub async fn next_request(&self) -> (CloseCode, &'static str) {
        poll_fn(|cx| match self.close_request.take() {
            Some(req) => Poll::Ready(req),
            None => {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    conns: RefCell<Slab<Rc<ConnControl>>>,
}

/// Removes the connection from the registry when its task ends, however it ends.
pub(crate) struct Registration<'a> {
    registry: &'a Registry,
    key: usize,
    pub control: Rc<ConnControl>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.conns.borrow_mut().remove(self.key);
    }
}

impl Registry {
    pub fn register(&self) -> Registration<'_> {
        let control = Rc::new(ConnControl::default());
        let key = self.conns.borrow_mut().insert(control.clone());
        Registration {
            registry: self,
            key,
            control,
        }
    }

    pub fn len(&self) -> usize {
        self.conns.borrow().len()
    }

    pub fn close_all(&self, code: CloseCode, reason: &'static str) {
        for (_, c) in self.conns.borrow().iter() {
            c.request_close(code, reason);
        }
    }
}
