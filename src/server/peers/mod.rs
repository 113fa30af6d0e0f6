//! The node side of node-to-node tunnels (issue 16, docs/ARCHITECTURE.md
//! "Cluster"). Every node dials every other node once per worker
//! (`dial.rs`) and speaks the runner side of the tunnel protocol there
//! (`link.rs`): the other node places on it the actors this node owns, and
//! its clients of them become connections of this node's actors, relayed
//! back frame by frame (`relay.rs`). The other node sees a runner; this
//! node sees clients; neither needs anything else.

mod dial;
mod link;
mod relay;

use std::cell::Cell;
use std::rc::Rc;

pub(crate) use dial::{dial_node, Dialing, NodeAddress};

use crate::server::actors::Actors;
use crate::server::conn::env::{ConnEnv, SessionLimits};
use crate::server::conn::session::SessionCtx;

/// What a worker's links to other nodes need from it.
pub(crate) struct PeerSide {
    pub env: Rc<ConnEnv>,
    pub actors: Rc<Actors>,
    /// Tunnel limits (keepalive, close and send timeouts, largest message).
    pub limits: Cell<SessionLimits>,
    pub worker_id: usize,
    pub worker_count: usize,
    /// This node's id and the cluster's token.
    pub node: String,
    pub token: String,
    /// Set when the worker stops: forwarded connections then end with the
    /// link (their nodes move them) instead of being closed one by one.
    pub stopping: Rc<crate::server::conn::stopping::Stopping>,
}

impl SessionCtx for PeerSide {
    fn env(&self) -> &ConnEnv {
        &self.env
    }
}
