//! A started actor gets its connections back: after a start, a wake or a
//! move, the runner is told of every connection (`RestoreConn`), then gets
//! what was not acknowledged and what was held, in order, then the closes
//! that waited and the opens its previous runner never answered.

use std::rc::Rc;

use super::actor::{Actor, ActorState};
use super::links::ClientLink;
use super::Actors;
use crate::http::route::actor_path;
use crate::server::tunnels::Tunnel;
use crate::tunnel::Frame;

impl Actors {
    pub(super) fn on_ready(&self, actor: &Rc<Actor>) {
        if actor.state() != ActorState::Starting {
            return;
        }
        let Some(tunnel) = actor.tunnel() else { return };
        let restored = actor.conn_ids();
        tracing::debug!(worker = self.worker_id, actor = %actor.name, key = ?actor.key, connections = restored.len(), "actor ready: restoring its connections");
        let closed = {
            let links = self.links.borrow();
            let linked = || restored.iter().filter_map(|id| Some((*id, links.get(id)?)));
            // Every connection first, so that what the actor does with the
            // first held message (a broadcast, say) reaches all of them.
            // (On another node's tunnel they went with the start.)
            if tunnel.peer_node().is_none() {
                for (conn_id, link) in linked() {
                    let seen = self.conn_output_seen(conn_id, actor);
                    tunnel.send(&restore_conn(conn_id, actor, link, seen));
                    // Restored before anything else: no answer awaited.
                    link.set_restoring(false);
                }
            }
            // Then what was not acknowledged (a replay) and what was held.
            linked()
                .filter(|(conn_id, link)| replay(&tunnel, *conn_id, link))
                .map(|(conn_id, _)| conn_id)
                .collect::<Vec<u64>>()
        };
        for conn_id in closed {
            self.forget_conn(conn_id);
        }
        self.resend_pending_opens(actor);
        self.resend_requests(actor);
        actor.mark_running(self.now());
    }
}

impl Actors {
    /// An actor placed on the node that owns it gets its connections back
    /// with its start, not once it is ready: that node holds its actor
    /// back after a failover until every node with clients of it started
    /// it there (`cluster.rs`, `peer_joined`), so that the clients of every
    /// node are members before anything is replayed.
    pub(super) fn restore_on_peer(&self, actor: &Actor, tunnel: &Tunnel) {
        let links = self.links.borrow();
        for conn_id in actor.conn_ids() {
            if let Some(link) = links.get(&conn_id) {
                let seen = self.conn_output_seen(conn_id, actor);
                tunnel.send(&restore_conn(conn_id, actor, link, seen));
            }
        }
    }
}

pub(super) fn restore_conn(
    conn_id: u64,
    actor: &Actor,
    link: &ClientLink,
    output_seen: u64,
) -> Frame {
    link.with_meta(|meta| {
        let meta = meta.as_deref();
        Frame::RestoreConn {
            conn_id,
            actor_id: actor.id(),
            path: actor_path(&actor.ns, &actor.name, &actor.key),
            query: meta.map(|m| m.query.to_string()).unwrap_or_default(),
            headers: meta.map(|m| m.headers.to_vec()).unwrap_or_default(),
            protocol: meta.and_then(|m| m.protocol.as_deref()).map(str::to_owned),
            attachment: meta.map(|m| m.attachment.clone()).unwrap_or_default(),
            last_index: link.last_acked.get(),
            peer: link.peer.to_string(),
            output_seen,
        }
    })
}

/// Sends the connection's unsent messages, then its held close; returns
/// true if the close went (the connection is done).
fn replay(tunnel: &Tunnel, conn_id: u64, link: &ClientLink) -> bool {
    link.with_outstanding(|outstanding| {
        let Some(o) = outstanding.as_deref_mut() else {
            return false;
        };
        let mut replayed = 0u32;
        for (index, kind, payload) in o.unsent() {
            tunnel.send_message(conn_id, index, kind, payload);
            replayed += 1;
        }
        if replayed > 0 {
            tracing::debug!(
                conn = conn_id,
                replayed,
                "replayed to the actor's new runner"
            );
        }
        o.mark_sent();
        let Some(close) = o.close.take() else {
            return false;
        };
        let (code, reason) = *close;
        tunnel.send(&Frame::Close {
            conn_id,
            code,
            reason,
        });
        true
    })
}
