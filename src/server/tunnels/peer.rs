//! Node-to-node tunnels (issue 16, docs/ARCHITECTURE.md "Cluster"). Every
//! node dials every other node once per worker and says hello as a runner
//! would: on the node it reached, that tunnel is a runner in a namespace no
//! actor can have, and the actors the dialing node owns are placed on it.
//! On the dialing node, `PeerOut` is what goes back: frames for the node
//! whose clients the owned actors serve.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::tunnel::Tunnel;
use crate::server::conn::control::ConnControl;
use crate::tunnel::{encode_frame, encode_message, Frame, MessageKind};
use crate::ws::CloseCode;

/// The namespace of node tunnels: empty, which no namespace of actors can
/// be, so local placement never picks them.
pub(crate) const PEER_NAMESPACE: &str = "";
/// The pool a node says hello in.
pub(crate) const PEER_POOL: &str = "cluster";
/// A node's runner key: this prefix and its node id.
pub(crate) const PEER_KEY_PREFIX: &str = "node:";

impl Tunnel {
    /// The node at the other end, if this tunnel is another node's.
    pub fn peer_node(&self) -> Option<&str> {
        (self.namespace == PEER_NAMESPACE)
            .then(|| self.runner_key.strip_prefix(PEER_KEY_PREFIX))
            .flatten()
    }
}

/// Frames a node queues for the node whose clients its actors serve, sent
/// as one batch by the dialed link's session (like `Tunnel`'s pending).
pub(crate) struct PeerOut {
    pending: RefCell<BytesMut>,
    /// The link session's control: poked when frames are pending.
    pub control: Rc<ConnControl>,
    /// Past this many bytes waiting, the link closes: a node that does not
    /// read loses its link (its clients move as from a node that left), not
    /// this node its memory.
    max_pending: usize,
}

impl PeerOut {
    pub fn new(control: Rc<ConnControl>, max_pending: usize) -> Self {
        PeerOut {
            pending: RefCell::new(BytesMut::new()),
            control,
            max_pending,
        }
    }

    pub fn send(&self, frame: &Frame) {
        encode_frame(&mut self.pending.borrow_mut(), frame);
        self.queued_one();
    }

    pub fn send_message(&self, conn_id: u64, kind: MessageKind, payload: &[u8]) {
        encode_message(&mut self.pending.borrow_mut(), conn_id, 0, kind, payload);
        self.queued_one();
    }

    fn queued_one(&self) {
        if self.pending.borrow().len() > self.max_pending {
            let reason = "the node does not read what its clients are sent";
            self.control.request_close(CloseCode::POLICY, reason);
        }
        self.control.poke();
    }

    pub fn take_pending(&self) -> Option<Bytes> {
        let mut p = self.pending.borrow_mut();
        (!p.is_empty()).then(|| p.split().freeze())
    }
}
