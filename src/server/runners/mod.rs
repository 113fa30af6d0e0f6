//! The runner side of a worker: a runner's connect request (token, tunnel
//! index, upgrade), its hello, and its tunnel session, whose frames go to
//! the worker's actors.

mod handshake;
mod identity;
mod quota;
mod revoke;
mod session;

use std::cell::Cell;
use std::rc::Rc;

pub(crate) use handshake::{home_worker, serve_runner};
pub(crate) use quota::TunnelQuota;
pub(crate) use revoke::revoke_tunnels;

use crate::server::actors::Actors;
use crate::server::conn::env::{ConnEnv, SessionLimits};
use crate::server::conn::session::SessionCtx;

/// What runner connections of one worker need from it.
pub(crate) struct RunnerSide {
    pub env: Rc<ConnEnv>,
    pub actors: Rc<Actors>,
    /// Tunnel sessions' limits now (a reload sets new ones).
    pub limits: Cell<SessionLimits>,
    /// Tunnels per runner identity, shared by all workers.
    pub quota: std::sync::Arc<TunnelQuota>,
    pub stats: std::sync::Arc<crate::server::conn::stats::WorkerStats>,
    pub worker_id: usize,
    pub worker_count: usize,
}

impl SessionCtx for RunnerSide {
    fn env(&self) -> &ConnEnv {
        &self.env
    }
}
