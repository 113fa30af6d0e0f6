//! The client side of a worker: a client's upgrade request (checked, its
//! actor started or woken, its runner asked to accept), the client's
//! WebSocket session, and the parker that holds hibernated sockets.

mod authorize;
mod connect;
mod handshake;
mod http;
mod parker;
mod session;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;

pub(crate) use handshake::{home_worker, serve_client, Client};
pub(crate) use parker::Parker;

use crate::server::actors::Actors;
use crate::server::conn::env::{ConnEnv, SessionLimits};
use crate::server::conn::registry::Registration;
use crate::server::conn::session::SessionCtx;
use crate::server::conn::stats::WorkerStats;
use crate::server::conn::stream::Stream;

/// What client connections of one worker need from it.
pub(crate) struct EdgeSide {
    pub env: Rc<ConnEnv>,
    pub actors: Rc<Actors>,
    /// This worker's counters (handshake results, closes).
    pub stats: Arc<WorkerStats>,
    /// Client sessions' limits now (a reload sets new ones).
    pub limits: Cell<SessionLimits>,
    /// Holds hibernated connections without tasks (None if io_uring is unavailable).
    pub parker: Option<Rc<Parker>>,
    /// Sessions handed over during an upgrade, for the runtime to send on.
    pub handed: RefCell<Vec<Handed>>,
    /// Moves a kept-alive HTTP connection whose next request is for
    /// another worker's actor there (the runtime's hand-off).
    pub rehome: Rehome,
}

/// Where a connection's next request is served.
pub(crate) enum Rehomed {
    /// Here: it is given back.
    Here(Stream, BytesMut, Client),
    /// Handed to its worker (or lost on the way).
    Gone,
    /// It could not be handed over: the client gets 503.
    Refused(Stream, BytesMut),
}

/// The runtime's hand-off, as the edge may call it.
pub(crate) type Rehome = Box<dyn Fn(Stream, BytesMut, Client) -> Rehomed>;

/// A client connection whose session ended between messages to go to the
/// next process (an upgrade).
pub(crate) struct Handed {
    pub conn_id: u64,
    /// The index of the client's last message.
    pub next_index: u64,
    pub stream: Stream,
    /// Read, not decoded: the start of the client's next frame.
    pub unread: BytesMut,
    /// Dropped once the connection is sent: it leaves this worker.
    pub registration: Registration,
}

impl EdgeSide {
    /// Gives a connection taken over from the process before an upgrade its
    /// session (`next_index`: the client's last message; `unread`: the start
    /// of its next frame).
    pub fn resume_handed(
        self: &Rc<Self>,
        conn_id: u64,
        next_index: u64,
        stream: Stream,
        unread: BytesMut,
        registration: Registration,
    ) {
        let role = session::ClientRole {
            conn_id,
            next_index,
        };
        let session = crate::server::conn::session::Session::new(self.clone(), role);
        monoio::spawn(session.run(stream, unread, registration));
    }
}

impl SessionCtx for EdgeSide {
    fn env(&self) -> &ConnEnv {
        &self.env
    }
}
