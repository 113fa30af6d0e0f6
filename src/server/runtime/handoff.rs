//! Moving a just-parsed connection to the worker that must serve it.
//!
//! A client belongs on its actor's home worker and a runner tunnel on the
//! worker it is for, but SO_REUSEPORT lets any worker accept it. After the
//! request head is read, the accepting worker hands the socket (as a raw fd:
//! monoio sockets cannot cross threads), the head and any bytes read past it
//! to the right worker through a bounded lock-free queue. This happens once
//! per connection, never per message.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use bytes::BytesMut;
use crossbeam_queue::ArrayQueue;

use crate::http::RequestHead;
use crate::server::admin::Relay;
use crate::server::conn::admission::Ticket;
use crate::server::conn::stream::Detached;

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    Client,
    Runner,
    Admin,
}

pub(crate) struct Handoff {
    /// The socket, out of the accepting worker's runtime, with its TLS session.
    pub stream: Detached,
    /// The client's address, as accepted.
    pub peer: SocketAddr,
    pub head: RequestHead,
    pub leftover: BytesMut,
    pub listener: Listener,
    pub relay: Relay,
    /// A client connection's place, travelling with it.
    pub ticket: Option<Ticket>,
}

struct Inbox<T> {
    queue: ArrayQueue<T>,
    waker: AtomicWaker,
}

/// One bounded inbox per worker (for connections handed between workers,
/// and for those taken over from the process before an upgrade).
pub(crate) struct HandoffQueues<T = Handoff> {
    inboxes: Vec<Inbox<T>>,
}

impl<T> HandoffQueues<T> {
    pub fn new(workers: usize, capacity: usize) -> Self {
        HandoffQueues {
            inboxes: (0..workers)
                .map(|_| Inbox {
                    queue: ArrayQueue::new(capacity),
                    waker: AtomicWaker::new(),
                })
                .collect(),
        }
    }

    /// Gives `handoff` to worker `to`; hands it back if that worker's inbox is full.
    // Moved once per connection, handed back only when the inbox is full:
    // boxing it would cost an allocation on every hand-off instead.
    #[allow(clippy::result_large_err)]
    pub fn send(&self, to: usize, handoff: T) -> Result<(), T> {
        let inbox = &self.inboxes[to];
        inbox.queue.push(handoff)?;
        inbox.waker.wake();
        Ok(())
    }

    /// The next connection handed to worker `me`. Only that worker's one
    /// receiving task may call this.
    pub async fn receive(&self, me: usize) -> T {
        let inbox = &self.inboxes[me];
        poll_fn(|cx| {
            if let Some(h) = inbox.queue.pop() {
                return Poll::Ready(h);
            }
            inbox.waker.register(cx.waker());
            match inbox.queue.pop() {
                Some(h) => Poll::Ready(h),
                None => Poll::Pending,
            }
        })
        .await
    }
}
