//! Connections of another node's clients (issue 16): the node that owns an
//! actor serves the clients other nodes forward to it as connections of
//! its own, opened or restored under ids derived from the forwarding node
//! (`relayed_conn_id`). Everything the runner says to such a connection —
//! the answer to its open, its messages, acknowledgements, attachments,
//! its close — goes to that node at once, in the runner's order, through
//! its `Relay`: one runner batch becomes one batch on the link, so the
//! forwarding node never sees an acknowledgement without the output that
//! came with it (a node killed in between would otherwise lose that
//! output for good: the forwarding node would not replay the message).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;

use super::actor::{Actor, ActorState};
use super::links::{ClientLink, ConnMeta, OpenAnswer, OpenRequest, Peer};
use super::restore::restore_conn;
use super::Actors;
use crate::server::conn::control::ConnControl;
use crate::server::tunnels::PeerOut;
use crate::tunnel::{features, Frame, MessageKind};
use crate::ws::CloseCode;

/// Where a forwarded connection's frames go: the link to the node whose
/// client it is, under that node's id for it.
pub(crate) struct Relay {
    pub out: Rc<PeerOut>,
    pub remote_conn: u64,
    /// The client's address: its admission place here, given back if the
    /// open is refused.
    pub peer: SocketAddr,
    /// The connection's control here (its relay task ends when it closes).
    pub control: Rc<ConnControl>,
    /// That node's id for the actor the connection belongs to.
    pub remote_actor: u64,
    /// What that node received of the actor's saved output: its last
    /// `OutputMark` plus one, as it said at a restore and as marks went to
    /// it since (0: as this node's actor says). Nodes see different
    /// shares when the node owning the actor dies mid-relay.
    pub output_seen: Cell<u64>,
}

/// What a forwarding node says of a connection it restores here.
pub(crate) struct RestoredConn {
    pub query: String,
    pub headers: Vec<(String, Bytes)>,
    pub protocol: Option<String>,
    pub attachment: Bytes,
    pub last_index: u64,
    pub peer: SocketAddr,
    /// `RestoreConn.output_seen` as that node sent it.
    pub output_seen: u64,
}

/// The id a connection of node `origin`'s clients has on every node: the
/// origin's own id for it too (`Actors::fresh_conn_id` in a cluster). So a
/// runner knows a client by one id whichever node owns its actor, and its
/// saved record of what it handled on that connection (PROTOCOL §5a) still
/// matches after the actor moves, even back to the client's own node. Bit
/// 55 sets these apart from the ids a worker draws (far below it); then 15
/// bits of the origin node id's hash and the low 40 bits of its counter.
pub(crate) fn relayed_conn_id(worker_id: usize, origin: &str, remote: u64) -> u64 {
    let worker = (worker_id as u64) << 56;
    worker | 1 << 55 | node_hash(origin) << 40 | (remote & ((1 << 40) - 1))
}

/// 15 bits of FNV-1a over the node id: stable across processes and builds.
/// Two nodes whose ids hash alike could not tell their clients apart: the
/// runtime refuses to link them (`runtime/cluster.rs`).
pub(crate) fn node_hash(node: &str) -> u64 {
    let h = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    h & 0x7fff
}

/// Among `others`, a node whose id hashes like `node` (not `node` itself).
pub(crate) fn hash_twin<'a>(
    node: &str,
    others: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let h = node_hash(node);
    others.into_iter().find(|o| *o != node && node_hash(o) == h)
}

impl Actors {
    /// An id for a new client connection: in a cluster, of the form every
    /// node derives for it (`relayed_conn_id`).
    pub(super) fn fresh_conn_id(&self) -> u64 {
        let id = self.ids.fresh();
        match self.cluster_node() {
            Some(node) => relayed_conn_id(self.worker_id, node, id),
            None => id,
        }
    }

    /// Opens another node's client connection under `conn_id` (its place
    /// was counted there; here it is adopted, and given back if refused).
    pub(crate) fn open_relayed(
        &self,
        actor: &Rc<Actor>,
        conn_id: u64,
        request: OpenRequest,
        relay: Relay,
    ) {
        self.admission.adopt(relay.peer.ip());
        let control = relay.control.clone();
        self.relays.borrow_mut().insert(conn_id, relay);
        self.open_as(actor, conn_id, control, request, None);
    }

    /// Restores another node's client connection into `actor` (it moved
    /// here from a node that is gone): linked at once, and told to the
    /// runner now if the actor runs (else when it is ready).
    pub(crate) fn restore_relayed(
        &self,
        actor: &Rc<Actor>,
        conn_id: u64,
        conn: RestoredConn,
        relay: Relay,
    ) {
        self.admission.adopt(conn.peer.ip());
        let control = relay.control.clone();
        relay.output_seen.set(conn.output_seen);
        self.relays.borrow_mut().insert(conn_id, relay);
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
                let seen = self.conn_output_seen(conn_id, actor);
                tunnel.send(&restore_conn(conn_id, actor, &link, seen));
                // Until the runner answers, what it says to all its
                // connections was said before it knew this one.
                link.set_restoring(tunnel.features & features::CONN_MARKS != 0);
            }
        }
        let mut links = self.links.borrow_mut();
        links.insert(conn_id, Box::new(link));
        self.count_links(&links);
    }

    /// The forwarding node closed the connection, moved its actor away, or
    /// is gone: it leaves the actor here. A running actor's runner sees it
    /// close; otherwise it is simply not restored (it is not held for a
    /// runner to see later, as a client's own close would be: that node
    /// restores it wherever the actor goes next).
    pub(crate) fn drop_relayed(&self, conn_id: u64, code: CloseCode, reason: &str) {
        if let Some(relay) = self.relays.borrow_mut().remove(&conn_id) {
            self.leave_relayed(conn_id, relay.peer, code, reason);
        }
    }

    /// A forwarded connection (its relay taken) leaves its actor here.
    pub(crate) fn leave_relayed(
        &self,
        conn_id: u64,
        peer: SocketAddr,
        code: CloseCode,
        reason: &str,
    ) {
        let actor = self.links.borrow().get(&conn_id).map(|l| l.actor.clone());
        match actor {
            Some(actor) if actor.state() == ActorState::Running => {
                self.client_closed(conn_id, code, reason)
            }
            Some(actor) => {
                self.forget_conn(conn_id);
                self.drop_if_unused(&actor);
            }
            None if self.opens.borrow().contains_key(&conn_id) => {
                self.abandon_open(conn_id);
                self.admission.release(peer.ip());
            }
            None => {}
        }
    }

    /// Every other node's client leaves (this process hands over to a new
    /// one, which does not take them: their nodes move them).
    pub(crate) fn drop_all_relayed(&self, reason: &str) {
        let ids: Vec<u64> = self.relays.borrow().keys().copied().collect();
        for id in ids {
            let control = self.relays.borrow().get(&id).map(|r| r.control.clone());
            self.drop_relayed(id, CloseCode::SERVICE_RESTART, reason);
            if let Some(control) = control {
                control.request_close(CloseCode::SERVICE_RESTART, reason.to_owned());
            }
        }
    }

    /// The runner answered a relayed open (or the gateway did for it): the
    /// forwarding node learns it now, before anything the runner sent the
    /// connection after its answer.
    pub(super) fn relay_answer(&self, conn_id: u64, answer: &OpenAnswer) {
        if self.relays.borrow().is_empty() {
            return;
        }
        if let OpenAnswer::Accepted { protocol } = answer {
            let hibernatable = self.links.borrow().get(&conn_id).map(|l| l.hibernatable);
            if let Some(r) = self.relays.borrow().get(&conn_id) {
                r.out.send(&Frame::ConnAccept {
                    conn_id: r.remote_conn,
                    protocol: protocol.clone(),
                    hibernatable,
                });
            }
            return;
        }
        let Some(r) = self.relays.borrow_mut().remove(&conn_id) else {
            return;
        };
        let (status, reason) = match answer {
            OpenAnswer::Rejected { status, reason } => (*status, reason.clone()),
            OpenAnswer::Refused(u) => (503, u.to_string()),
            OpenAnswer::GaveUp { reason } => (503, reason.clone()),
            OpenAnswer::Accepted { .. } => return,
        };
        self.admission.release(r.peer.ip());
        r.out.send(&Frame::ConnReject {
            conn_id: r.remote_conn,
            status,
            reason,
        });
        r.control.request_close(CloseCode::NORMAL, "refused");
    }

    /// A message for `conn_id`: if it is another node's client, sent to
    /// that node now (true).
    pub(super) fn relay_out(&self, conn_id: u64, kind: MessageKind, payload: &[u8]) -> bool {
        let relays = self.relays.borrow();
        let Some(r) = relays.get(&conn_id) else {
            return false;
        };
        r.out.send_message(r.remote_conn, kind, payload);
        true
    }

    /// The actor closed `conn_id`: if it is another node's client, that
    /// node is told now (true).
    pub(super) fn relay_close(&self, conn_id: u64, code: CloseCode, reason: &str) -> bool {
        let Some(r) = self.relays.borrow_mut().remove(&conn_id) else {
            return false;
        };
        r.out.send(&Frame::Close {
            conn_id: r.remote_conn,
            code: code.0,
            reason: reason.to_owned(),
        });
        r.control.request_close(code, reason.to_owned());
        true
    }

    /// The relay of `conn_id`, taken (its connection closes here).
    pub(crate) fn take_relay(&self, conn_id: u64) -> Option<Relay> {
        self.relays.borrow_mut().remove(&conn_id)
    }

    /// Whether the connection is still linked to an actor here.
    pub(crate) fn is_linked(&self, conn_id: u64) -> bool {
        self.links.borrow().contains_key(&conn_id)
    }

    /// Wakes a sleeping actor for a connection another node opens (a new
    /// client of this node's own would wake it in `get_or_start`).
    pub(crate) fn wake_if_asleep(&self, actor: &Rc<Actor>) {
        if actor.state() == ActorState::Asleep {
            self.wake(actor);
        }
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

    /// The actor's runner marked its save `seq` as delivered here: every
    /// node holding its clients gets the mark after that save's output
    /// (relayed before it, in the same batch on the link), and so knows
    /// what it received should the actor move (`RestoreConn.output_seen`).
    pub(super) fn relay_mark(&self, actor: &Actor, seq: u64) {
        let relays = self.relays.borrow();
        if relays.is_empty() {
            return;
        }
        let links = self.links.borrow();
        let conns = actor.conns();
        // Whichever is fewer: the actor's connections, or this worker's
        // relayed ones (an actor of many local clients, few remote).
        let relayed: Vec<(u64, &Relay)> = if relays.len() < conns.len() {
            let of_actor = |id: &u64| {
                links
                    .get(id)
                    .is_some_and(|l| std::ptr::eq(&*l.actor, actor))
            };
            relays
                .iter()
                .filter(|(id, _)| of_actor(id))
                .map(|(id, r)| (*id, r))
                .collect()
        } else {
            conns
                .iter()
                .filter_map(|id| Some((*id, relays.get(id)?)))
                .collect()
        };
        let mut told: Vec<(*const PeerOut, u64)> = Vec::new();
        for (conn_id, r) in relayed {
            // Its node restores it here and is sent what it missed first:
            // a mark now would say it has what it has not yet.
            if links.get(&conn_id).is_some_and(|l| l.is_restoring()) {
                continue;
            }
            r.output_seen
                .set(r.output_seen.get().max(seq.saturating_add(1)));
            let to = (Rc::as_ptr(&r.out), r.remote_actor);
            if !told.contains(&to) {
                told.push(to);
                r.out.send(&Frame::OutputMark {
                    actor_id: r.remote_actor,
                    seq,
                });
            }
        }
    }

    /// `RestoreConn.output_seen` for `conn_id`: what its node said for
    /// another node's client (raised by the marks relayed to it since),
    /// and for this node's own what this node received (1: none; 0: not
    /// known, after an upgrade handed the actor over).
    pub(super) fn conn_output_seen(&self, conn_id: u64, actor: &Actor) -> u64 {
        let relayed = self
            .relays
            .borrow()
            .get(&conn_id)
            .map(|r| r.output_seen.get());
        match relayed {
            Some(seen) if seen > 0 => seen,
            _ => actor.output_seen_here(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_ids_are_the_same_on_every_node_and_apart_from_drawn_ones() {
        let a = relayed_conn_id(3, "edge-a", (3 << 56) | 17);
        assert_eq!(a, relayed_conn_id(3, "edge-a", (3 << 56) | 17));
        assert_ne!(a, relayed_conn_id(3, "edge-b", (3 << 56) | 17));
        assert_eq!(a >> 56, 3, "in the worker's id space");
        assert!(a & (1 << 55) != 0, "above every id the worker draws");
        // The origin's own id for its client is already of that form, and
        // deriving it again gives it back: one id on every node.
        assert_eq!(relayed_conn_id(3, "edge-a", a), a);
    }
}
