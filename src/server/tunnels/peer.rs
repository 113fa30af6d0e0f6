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
}

impl PeerOut {
    pub fn new(control: Rc<ConnControl>) -> Self {
        PeerOut {
            pending: RefCell::new(BytesMut::new()),
            control,
        }
    }

    pub fn send(&self, frame: &Frame) {
        encode_frame(&mut self.pending.borrow_mut(), frame);
        self.control.poke();
    }

    pub fn send_message(&self, conn_id: u64, kind: MessageKind, payload: &[u8]) {
        let mut pending = self.pending.borrow_mut();
        encode_message(&mut pending, conn_id, 0, kind, payload);
        drop(pending);
        self.control.poke();
    }

    /// Bytes waiting (the link closes past its bound: a node that does not
    /// read must not make this one hold everything its actors say).
    pub fn queued(&self) -> usize {
        self.pending.borrow().len()
    }

    pub fn take_pending(&self) -> Option<Bytes> {
        let mut p = self.pending.borrow_mut();
        (!p.is_empty()).then(|| p.split().freeze())
    }
}
