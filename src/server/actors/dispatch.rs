//! Frames from a runner, one handler per frame type. A frame about a
//! connection or actor that is not on the runner's tunnel is ignored (it
//! closed or moved meanwhile); a frame a runner may not send closes its
//! tunnel.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tracing::{debug, warn};

use super::actor::ActorState;
use super::clients::SharedMessage;
use super::links::ClientLink;
use super::Actors;
use crate::server::tunnels::Tunnel;
use crate::tunnel::{Frame, MessageKind, Recipients, TunnelError};
use crate::ws::CloseCode;

/// Longest reason from a runner that is logged or shown to a client.
const MAX_REASON_BYTES: usize = 256;

/// A runner's reason, cut (at a character boundary) to what is logged and
/// shown to clients.
pub(super) fn bounded(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

impl Actors {
    /// Handles one frame from a runner. An error closes that tunnel only.
    pub fn on_tunnel_frame(&self, tunnel: &Rc<Tunnel>, frame: Frame) -> Result<(), TunnelError> {
        match frame {
            Frame::Message {
                conn_id,
                kind,
                payload,
                ..
            } => self.on_message(tunnel, conn_id, kind, payload),
            Frame::Broadcast {
                actor_id,
                kind,
                to,
                payload,
            } => self.on_broadcast(tunnel, actor_id, kind, &to, payload),
            Frame::Ack { conn_id, index } => self.on_ack(tunnel, conn_id, index),
            Frame::Close {
                conn_id,
                code,
                reason,
            } => self.on_close(tunnel, conn_id, code, reason),
            Frame::SetAttachment {
                conn_id,
                attachment,
            } => self.on_set_attachment(tunnel, conn_id, attachment),
            Frame::ConnAccept {
                conn_id,
                protocol,
                hibernatable,
            } => self.on_accept(tunnel, conn_id, protocol, hibernatable),
            Frame::ConnReject {
                conn_id,
                status,
                reason,
            } => self.on_reject(tunnel, conn_id, status, bounded(reason)),
            Frame::ActorReady { actor_id } => self.on_actor_ready(tunnel, actor_id),
            Frame::ActorStopped { actor_id, reason } => {
                self.on_actor_stopped(tunnel, actor_id, &bounded(reason))
            }
            Frame::SleepRequest { actor_id } => self.on_sleep_request(tunnel, actor_id),
            Frame::OutputMark { actor_id, seq } => {
                if let Some(actor) = self.directory.live_on(tunnel, actor_id) {
                    actor.note_output_mark(seq, tunnel.peer_node().is_some());
                    self.relay_mark(&actor, seq);
                }
            }
            Frame::Keepalive { nonce } => tunnel.send(&Frame::KeepaliveAck { nonce }),
            Frame::KeepaliveAck { .. } => {}
            Frame::Drain => self.drain_tunnel(tunnel),
            Frame::HttpResponse(_)
            | Frame::HttpBody { .. }
            | Frame::HttpEnd { .. }
            | Frame::HttpCancel { .. }
            | Frame::HttpCredit { .. } => return self.on_http_frame(tunnel, frame),
            Frame::Hello { .. }
            | Frame::Welcome { .. }
            | Frame::StartActor { .. }
            | Frame::StopActor { .. }
            | Frame::ConnOpen { .. }
            | Frame::RestoreConn { .. }
            | Frame::Drained
            | Frame::HttpRequest(_) => {
                return Err(TunnelError("frame type not allowed from a runner"));
            }
        }
        Ok(())
    }

    /// Runs `f` on the link of `conn_id` if its actor is on `tunnel`.
    fn with_link_on(&self, tunnel: &Rc<Tunnel>, conn_id: u64, f: impl FnOnce(&ClientLink)) {
        let links = self.links.borrow();
        if let Some(link) = links.get(&conn_id).filter(|l| l.actor.is_on(tunnel)) {
            f(link);
        }
    }

    fn on_message(&self, tunnel: &Rc<Tunnel>, conn_id: u64, kind: MessageKind, payload: Bytes) {
        self.with_link_on(tunnel, conn_id, |link| {
            link.actor.touch(self.clock.get());
            self.deliver_to(conn_id, link, kind, payload);
        });
    }

    /// One message for several connections of an actor: each gets the same
    /// payload (shared, not copied), in the order of the tunnel's frames.
    fn on_broadcast(
        &self,
        tunnel: &Rc<Tunnel>,
        actor_id: u64,
        kind: MessageKind,
        to: &Recipients,
        payload: Bytes,
    ) {
        let Some(actor) = self.directory.live_on(tunnel, actor_id) else {
            return; // stopped or moved meanwhile
        };
        actor.touch(self.clock.get());
        self.stats.broadcasts.fetch_add(1, Ordering::Relaxed);
        let links = self.links.borrow();
        let conns = actor.conns();
        let message = SharedMessage::new(kind, payload);
        // A connection restored late hears "all" only once the runner
        // knows it (its restore answered); named, it hears it at once.
        let send = |id: &u64, named: bool| {
            if let Some(link) = links.get(id).filter(|l| named || !l.is_restoring()) {
                self.deliver_shared_to(*id, link, &message);
            }
        };
        match to {
            Recipients::All => conns.iter().for_each(|id| send(id, false)),
            Recipients::AllBut(but) => {
                let but: std::collections::HashSet<&u64> = but.iter().collect();
                conns
                    .iter()
                    .filter(|id| !but.contains(id))
                    .for_each(|id| send(id, false));
            }
            Recipients::Only(only) => {
                // An id listed twice is still one recipient.
                let mut named = std::collections::HashSet::with_capacity(only.len());
                only.iter()
                    .filter(|id| conns.contains(id) && named.insert(**id))
                    .for_each(|id| send(id, true))
            }
        }
    }

    fn on_ack(&self, tunnel: &Rc<Tunnel>, conn_id: u64, index: u64) {
        let limit = self.config().actors.migration_buffer_bytes;
        self.with_link_on(tunnel, conn_id, |link| {
            // A restore's answer (PROTOCOL §5a): the runner knows it now.
            link.set_restoring(false);
            if link.ack(index, limit) {
                link.control.poke(); // it stopped reading: it may go on
            }
            self.relay_ack(conn_id, index);
        });
    }

    /// The actor closed a connection.
    fn on_close(&self, tunnel: &Rc<Tunnel>, conn_id: u64, code: u16, reason: String) {
        let behind = self
            .links
            .borrow()
            .get(&conn_id)
            .is_some_and(|l| l.actor.is_on(tunnel));
        if let Some(link) = behind.then(|| self.forget_conn(conn_id)).flatten() {
            let code = Some(CloseCode(code))
                .filter(|c| c.is_sendable())
                .unwrap_or(CloseCode::INTERNAL);
            // After the messages it sent before closing.
            if !self.relay_close(conn_id, code, &reason) {
                link.control.request_close_after_queued(code, reason);
            }
        }
    }

    fn on_set_attachment(&self, tunnel: &Rc<Tunnel>, conn_id: u64, attachment: Bytes) {
        let max = self.config().actors.max_attachment_bytes;
        self.with_link_on(tunnel, conn_id, |link| {
            if attachment.len() > max {
                let bytes = attachment.len();
                warn!(
                    conn = conn_id,
                    bytes, "attachment over actors.max_attachment_bytes: ignored"
                );
            } else {
                self.relay_attachment(conn_id, &attachment);
                link.set_attachment(attachment);
            }
        });
    }

    fn on_actor_ready(&self, tunnel: &Rc<Tunnel>, actor_id: u64) {
        if let Some(actor) = self.directory.live_on(tunnel, actor_id) {
            self.on_ready(&actor);
        }
    }

    fn on_actor_stopped(&self, tunnel: &Rc<Tunnel>, actor_id: u64, reason: &str) {
        let Some(actor) = self.directory.live_on(tunnel, actor_id) else {
            return;
        };
        if let ActorState::Stopping(_) = actor.state() {
            // What it handled was acknowledged before this; anything still
            // unacknowledged (its save failed, say) goes to the next start.
            self.resend_all(&actor);
            return self.on_stopped(&actor);
        }
        debug!(actor = %actor.name, key = ?actor.key, %reason, "actor stopped on its own");
        if self.peer_refused(tunnel, &actor, reason) {
            return;
        }
        self.resend_all(&actor);
        self.fail(&actor, &format!("it stopped: {reason}"));
    }

    fn on_sleep_request(&self, tunnel: &Rc<Tunnel>, actor_id: u64) {
        if let Some(actor) = self.directory.live_on(tunnel, actor_id) {
            self.sleep(&actor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_reasons_are_cut_at_a_character_boundary() {
        assert_eq!(bounded("short".into()), "short");
        let long = "é".repeat(200);
        let cut = bounded(long);
        assert!(cut.len() <= MAX_REASON_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
