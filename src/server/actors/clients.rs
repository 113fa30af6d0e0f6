//! Traffic of client connections: their messages to the actor (kept until
//! acknowledged, held while it is not running), their closes, and messages
//! delivered to them.

use crate::http::route::ActorPath;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tracing::warn;

use super::actor::{Actor, ActorState};
use super::feed::EventKind;
use super::links::{ClientLink, LinkView};
use super::outstanding::ENTRY_COST;
use super::Actors;
use crate::server::conn::control::Outgoing;
use crate::server::conn::outbox::COPY_LIMIT;
use crate::tunnel::{Frame, MessageKind};
use crate::ws::frame::{encode_frame, MAX_HEADER_LEN};
use crate::ws::{CloseCode, OpCode};

/// What became of a client's message.
enum Forwarded {
    Sent,
    /// Held until the actor runs.
    Held,
    /// Past the hold limit: the client is closed with 1013.
    OverTheHold,
}

impl Actors {
    /// Where a client connection's actor is.
    pub fn link_view(&self, conn_id: u64) -> LinkView {
        let links = self.links.borrow();
        let Some(link) = links.get(&conn_id) else {
            return LinkView::Gone;
        };
        match link.actor.state() {
            ActorState::Running => match link.actor.tunnel() {
                Some(tunnel) => LinkView::Running {
                    tunnel,
                    backlogged: link.outstanding_cost()
                        >= self.config().actors.migration_buffer_bytes,
                },
                None => LinkView::Gone,
            },
            ActorState::Asleep if !link.has_unsent() => LinkView::Hibernated,
            _ => LinkView::Waking,
        }
    }

    /// A message from a client: to its actor now (kept until acknowledged),
    /// or held while the actor starts, wakes or moves (waking it if it sleeps).
    pub fn forward(&self, conn_id: u64, index: u64, kind: MessageKind, payload: &[u8]) {
        let actor = {
            let links = self.links.borrow();
            let Some(link) = links.get(&conn_id) else {
                return;
            };
            self.stats.messages_in.fetch_add(1, Ordering::Relaxed);
            let bytes = payload.len() as u64;
            self.stats.bytes_in.fetch_add(bytes, Ordering::Relaxed);
            let actor = &link.actor;
            actor.touch(self.clock.get());
            let went = link.with_outstanding(|outstanding| {
                let o = outstanding.get_or_insert_with(Default::default);
                if actor.state() == ActorState::Running {
                    if let Some(t) = actor.tunnel() {
                        o.push(index, kind, payload);
                        o.mark_sent();
                        t.send_message(conn_id, index, kind, payload);
                    }
                    return Forwarded::Sent;
                }
                if o.cost() + payload.len() + ENTRY_COST > actor.hold_limit() {
                    return Forwarded::OverTheHold;
                }
                o.push(index, kind, payload);
                Forwarded::Held
            });
            match went {
                Forwarded::Sent => return,
                Forwarded::OverTheHold => {
                    let reason = "too much sent while the actor was starting or moving";
                    link.control
                        .request_close(CloseCode::TRY_AGAIN_LATER, reason);
                    return;
                }
                Forwarded::Held => actor.clone(),
            }
        };
        if actor.state() == ActorState::Asleep {
            self.wake(&actor);
        }
    }

    /// The client closed with `code`, or went away (`CloseCode::ABNORMAL`).
    pub fn client_closed(&self, conn_id: u64, code: CloseCode, reason: &str) {
        let Some(actor) = self.links.borrow().get(&conn_id).map(|l| l.actor.clone()) else {
            return;
        };
        let explicit = code != CloseCode::ABNORMAL;
        match actor.state() {
            ActorState::Running => {
                self.forget_conn(conn_id);
                if let Some(t) = actor.tunnel() {
                    t.send(&Frame::Close {
                        conn_id,
                        code: code.0,
                        reason: reason.to_owned(),
                    });
                }
            }
            // A sleeping actor is woken to see an explicit close, if so configured.
            ActorState::Asleep if !(explicit && self.config().actors.wake_on_close) => {
                self.forget_conn(conn_id);
                self.drop_if_unused(&actor);
            }
            // The actor is (conceptually) alive: it sees the close after the
            // messages that came before it.
            _ => {
                if let Some(link) = self.links.borrow().get(&conn_id) {
                    link.hold_close(code.0, reason);
                }
                if actor.state() == ActorState::Asleep {
                    self.wake(&actor);
                }
            }
        }
    }

    pub(super) fn forget_conn(&self, conn_id: u64) -> Option<Box<ClientLink>> {
        let mut links = self.links.borrow_mut();
        let link = links.remove(&conn_id)?;
        self.count_links(&links);
        drop(links);
        link.actor.remove_conn(conn_id);
        self.admission.release(link.peer.ip());
        self.note(EventKind::Close, &link.actor, Some(conn_id));
        Some(link)
    }

    /// Publishes this worker's count of client links (its share of the
    /// clients, for `/metrics`) after one was added or removed.
    pub(super) fn count_links(&self, links: &HashMap<u64, Box<ClientLink>>) {
        let n = links.len() as u64;
        self.stats.client_links.store(n, Ordering::Relaxed);
    }

    /// Queues a message for a client; a client with too large a backlog is closed.
    pub(super) fn deliver(&self, link: &ClientLink, kind: MessageKind, payload: Bytes) -> bool {
        let len = payload.len();
        self.deliver_outgoing(link, Outgoing::Payload(opcode_of(kind), payload), len)
    }

    /// Queues one of several copies of `message` (no copy of its bytes).
    /// As `deliver`, for the link of `conn_id`: to its node at once if it
    /// is another node's client (`peers.rs`).
    pub(super) fn deliver_to(
        &self,
        conn_id: u64,
        link: &ClientLink,
        kind: MessageKind,
        payload: Bytes,
    ) -> bool {
        self.relay_out(conn_id, kind, &payload) || self.deliver(link, kind, payload)
    }

    /// As `deliver_shared`, for the link of `conn_id` (see `deliver_to`).
    pub(super) fn deliver_shared_to(
        &self,
        conn_id: u64,
        link: &ClientLink,
        message: &SharedMessage,
    ) -> bool {
        self.relay_out(conn_id, message.kind, &message.payload)
            || self.deliver_shared(link, message)
    }

    pub(super) fn deliver_shared(&self, link: &ClientLink, message: &SharedMessage) -> bool {
        let len = message.payload.len();
        let outgoing = match message.frame() {
            Some(frame) => Outgoing::Encoded(frame),
            None => Outgoing::Payload(opcode_of(message.kind), message.payload.clone()),
        };
        self.deliver_outgoing(link, outgoing, len)
    }

    fn deliver_outgoing(&self, link: &ClientLink, outgoing: Outgoing, payload_len: usize) -> bool {
        // One message alone never trips the limit (it is bounded by
        // max_message_bytes); a backlog behind it does.
        let len = outgoing.len();
        let Some(queued) = link.control.push_outbound(outgoing) else {
            return false; // closing: it would never be sent
        };
        self.stats.messages_out.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_out
            .fetch_add(payload_len as u64, Ordering::Relaxed);
        if queued > self.config().client.max_send_queue_bytes && queued > len {
            // Once per connection: nothing is queued after the close request.
            warn!("client is not reading: send queue exceeded, closing with 1008");
            self.stats
                .send_queue_overflows
                .fetch_add(1, Ordering::Relaxed);
            link.control
                .request_close(CloseCode::POLICY, "send queue exceeded: client too slow");
            return false;
        }
        true
    }

    /// Delivers a message to every open connection of an actor, running or
    /// asleep, without starting it (`only`: to these connections alone).
    /// Returns how many connections got it.
    pub fn publish(
        &self,
        path: &ActorPath,
        kind: MessageKind,
        payload: Bytes,
        only: &[u64],
    ) -> usize {
        let Some(actor) = self.directory.get(&path.ns, &path.name, &path.key) else {
            return 0;
        };
        if only.is_empty() {
            if let Some(n) = self.publish_through_owner(&actor, kind, &payload) {
                return n;
            }
        }
        self.publish_to(&actor, kind, payload, only)
    }

    /// In a cluster, an actor that runs on the node owning it is published
    /// to there, once, for every node's clients (the owner holds them all);
    /// this node's clients get it back from the owner. Returns how many of
    /// them there are, or `None` if the actor is not on another node.
    fn publish_through_owner(
        &self,
        actor: &Actor,
        kind: MessageKind,
        payload: &Bytes,
    ) -> Option<usize> {
        let tunnel = actor.tunnel().filter(|t| t.peer_node().is_some())?;
        if actor.state() != ActorState::Running {
            return None;
        }
        tunnel.send(&Frame::Broadcast {
            actor_id: actor.id(),
            kind,
            to: crate::tunnel::Recipients::All,
            payload: payload.clone(),
        });
        Some(actor.conns().len())
    }

    /// Delivers a message to the actor's open connections (`only`: to these
    /// alone); returns how many got it.
    pub(crate) fn publish_to(
        &self,
        actor: &Actor,
        kind: MessageKind,
        payload: Bytes,
        only: &[u64],
    ) -> usize {
        let links = self.links.borrow();
        let message = SharedMessage::new(kind, payload);
        let mut delivered = 0;
        for id in actor.conns().iter() {
            if !only.is_empty() && !only.contains(id) {
                continue;
            }
            if let Some(link) = links.get(id).filter(|l| !l.is_closing()) {
                delivered += usize::from(self.deliver_shared_to(*id, link, &message));
            }
        }
        delivered
    }
}

fn opcode_of(kind: MessageKind) -> OpCode {
    match kind {
        MessageKind::Text => OpCode::Text,
        MessageKind::Binary => OpCode::Binary,
    }
}

/// One message for several connections of an actor. A small one's
/// WebSocket frame is encoded once, when the first recipient takes it (a
/// server's frames are unmasked, so every client gets the same bytes); a
/// large one's payload is shared as it is, each connection writing its own
/// header before it (as its outbox does for any large payload), so it is
/// never copied.
pub(super) struct SharedMessage {
    kind: MessageKind,
    payload: Bytes,
    frame: std::cell::OnceCell<Bytes>,
}

impl SharedMessage {
    pub fn new(kind: MessageKind, payload: Bytes) -> Self {
        SharedMessage {
            kind,
            payload,
            frame: std::cell::OnceCell::new(),
        }
    }

    /// The encoded frame, for a payload small enough to copy once.
    fn frame(&self) -> Option<Bytes> {
        if self.payload.len() > COPY_LIMIT {
            return None;
        }
        let frame = self.frame.get_or_init(|| {
            let mut frame = BytesMut::with_capacity(MAX_HEADER_LEN + self.payload.len());
            encode_frame(&mut frame, opcode_of(self.kind), &self.payload);
            frame.freeze()
        });
        Some(frame.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_message_is_encoded_once_and_only_when_someone_takes_it() {
        let message = SharedMessage::new(MessageKind::Text, Bytes::from_static(b"hi"));
        assert!(
            message.frame.get().is_none(),
            "nothing encoded before a recipient"
        );
        let (a, b) = (message.frame().unwrap(), message.frame().unwrap());
        assert_eq!(&a[..], b"\x81\x02hi");
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same bytes for every recipient");
    }

    #[test]
    fn a_large_message_is_never_copied_into_a_frame() {
        let payload = Bytes::from(vec![7u8; COPY_LIMIT + 1]);
        let message = SharedMessage::new(MessageKind::Binary, payload);
        assert!(
            message.frame().is_none(),
            "each connection frames the shared payload"
        );
    }
}
