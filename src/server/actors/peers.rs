//! Connections of another node's clients (issue 16): the node that owns an
//! actor serves the clients other nodes forward to it as connections of
//! its own, opened or restored under ids derived from the forwarding node
//! (`server/peers`). Their runner's acknowledgements and attachments go
//! back to that node (`Relay`); their messages and closes go through
//! their control like any client's.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;

use super::actor::{Actor, ActorState};
use super::links::{ClientLink, ConnMeta, OpenAnswer, OpenRequest, Peer};
use super::restore::restore_conn;
use super::Actors;
use crate::server::conn::control::ConnControl;
use crate::server::conn::slot::Slot;
use crate::server::tunnels::PeerOut;
use crate::tunnel::Frame;

/// Where a forwarded connection's acknowledgements go: the link to the
/// node whose client it is, under that node's id for it.
pub(crate) struct Relay {
    pub out: Rc<PeerOut>,
    pub remote_conn: u64,
}

/// What a forwarding node says of a connection it restores here.
pub(crate) struct RestoredConn {
    pub query: String,
    pub headers: Vec<(String, Bytes)>,
    pub protocol: Option<String>,
    pub attachment: Bytes,
    pub last_index: u64,
    pub peer: SocketAddr,
}

impl Actors {
    /// Opens another node's client connection under `conn_id` (its place
    /// was counted there: here it is adopted, and given back if refused).
    pub(crate) fn open_relayed(
        &self,
        actor: &Rc<Actor>,
        conn_id: u64,
        control: Rc<ConnControl>,
        request: OpenRequest,
    ) -> Rc<Slot<OpenAnswer>> {
        self.admission.adopt(request.peer.ip());
        self.open_as(actor, conn_id, control, request, None)
    }

    /// A relayed open the runner did not accept: its place goes back.
    pub(crate) fn relayed_open_refused(&self, peer: SocketAddr) {
        self.admission.release(peer.ip());
    }

    /// Restores another node's client connection into `actor` (it moved
    /// here from a node that is gone): linked at once, and told to the
    /// runner now if the actor runs (else when it is ready).
    pub(crate) fn restore_relayed(
        &self,
        actor: &Rc<Actor>,
        conn_id: u64,
        control: Rc<ConnControl>,
        conn: RestoredConn,
    ) {
        self.admission.adopt(conn.peer.ip());
        let request = OpenRequest {
            path: String::new(),
            query: conn.query,
            headers: conn.headers,
            protocols: Vec::new(),
            peer: conn.peer,
        };
        let mut meta = ConnMeta::keep(request, conn.protocol.as_deref());
        if !conn.attachment.is_empty() {
            meta.get_or_insert_with(Default::default).attachment = conn.attachment;
        }
        let link = ClientLink::new(control, actor.clone(), true, Peer::from(conn.peer), meta);
        link.last_acked.set(conn.last_index);
        actor.add_conn(conn_id);
        if actor.state() == ActorState::Running {
            if let Some(tunnel) = actor.tunnel() {
                tunnel.send(&restore_conn(conn_id, actor, &link));
            }
        }
        let mut links = self.links.borrow_mut();
        links.insert(conn_id, Box::new(link));
        self.count_links(&links);
    }

    pub(crate) fn add_relay(&self, conn_id: u64, relay: Relay) {
        self.relays.borrow_mut().insert(conn_id, relay);
    }

    pub(crate) fn remove_relay(&self, conn_id: u64) {
        self.relays.borrow_mut().remove(&conn_id);
    }

    /// Whether the connection is still linked to an actor here.
    pub(crate) fn is_linked(&self, conn_id: u64) -> bool {
        self.links.borrow().contains_key(&conn_id)
    }

    /// Whether the link of `conn_id` may hibernate (relayed to its node).
    pub(crate) fn link_hibernatable(&self, conn_id: u64) -> Option<bool> {
        self.links.borrow().get(&conn_id).map(|l| l.hibernatable)
    }

    pub(super) fn relay_ack(&self, conn_id: u64, index: u64) {
        let relays = self.relays.borrow();
        if let Some(r) = relays.get(&conn_id) {
            let remote = r.remote_conn;
            r.out.send(&Frame::Ack {
                conn_id: remote,
                index,
            });
        }
    }

    pub(super) fn relay_attachment(&self, conn_id: u64, attachment: &Bytes) {
        let relays = self.relays.borrow();
        if let Some(r) = relays.get(&conn_id) {
            r.out.send(&Frame::SetAttachment {
                conn_id: r.remote_conn,
                attachment: attachment.clone(),
            });
        }
    }
}
