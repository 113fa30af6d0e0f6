//! The client side of a worker: a client's upgrade request (checked, its
//! actor started or woken, its runner asked to accept), the client's
//! WebSocket session, and the parker that holds hibernated sockets.

mod authorize;
mod connect;
mod handshake;
mod parker;
mod session;

use std::cell::Cell;
use std::rc::Rc;

pub(crate) use handshake::{home_worker, serve_client, Client};
pub(crate) use parker::Parker;

use crate::server::actors::Actors;
use crate::server::conn::env::{ConnEnv, SessionLimits};
use crate::server::conn::session::SessionCtx;

/// What client connections of one worker need from it.
pub(crate) struct EdgeSide {
    pub env: Rc<ConnEnv>,
    pub actors: Rc<Actors>,
    /// Client sessions' limits now (a reload sets new ones).
    pub limits: Cell<SessionLimits>,
    /// Holds hibernated connections without tasks (None if io_uring is unavailable).
    pub parker: Option<Rc<Parker>>,
}

impl SessionCtx for EdgeSide {
    fn env(&self) -> &ConnEnv {
        &self.env
    }
}
