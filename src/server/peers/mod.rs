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
}

impl SessionCtx for PeerSide {
    fn env(&self) -> &ConnEnv {
        &self.env
    }
}

/// The id a connection of node `origin`'s clients has here. Derived, not
/// drawn: should the actor move to a third node, that node derives the same
/// id for it, so a runner's saved record of what it handled on the
/// connection still matches (PROTOCOL §5a). The worker's own ids stay
/// below bit 55; these set it, with 15 bits of the origin node's id hash
/// and the low 40 bits of its id for the connection.
pub(crate) fn relayed_conn_id(worker_id: usize, origin: &str, remote: u64) -> u64 {
    let worker = (worker_id as u64) << 56;
    worker | 1 << 55 | (node_hash(origin) & 0x7fff) << 40 | (remote & ((1 << 40) - 1))
}

/// FNV-1a: stable across processes and builds (the id must be the same on
/// every node).
fn node_hash(node: &str) -> u64 {
    node.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use crate::server::peers::relayed_conn_id;

    #[test]
    fn relayed_ids_are_the_same_on_every_node_and_apart_from_local_ones() {
        let a = relayed_conn_id(3, "edge-a", (3 << 56) | 17);
        assert_eq!(a, relayed_conn_id(3, "edge-a", (3 << 56) | 17));
        assert_ne!(a, relayed_conn_id(3, "edge-b", (3 << 56) | 17));
        assert_eq!(a >> 56, 3, "in the worker's id space");
        assert!(a & (1 << 55) != 0, "above every id the worker draws");
    }
}
