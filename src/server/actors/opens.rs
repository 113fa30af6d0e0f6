//! New client connections: asked of the runner, accepted (linked to their
//! actor) or rejected, re-asked of the actor's next runner if it moves
//! before answering.

use std::rc::Rc;

use super::actor::{Actor, ActorState};
use super::feed::EventKind;
use super::links::{ClientLink, ConnMeta, OpenAnswer, OpenRequest, Peer, PendingOpen};
use super::{Actors, Unavailable};
use crate::server::conn::admission::Ticket;
use crate::server::conn::control::ConnControl;
use crate::server::conn::slot::Slot;
use crate::server::tunnels::Tunnel;
use crate::tunnel::Frame;
use crate::ws::CloseCode;
use std::sync::atomic::Ordering;

impl Actors {
    /// Asks the runner to accept a client connection for `actor` (sent when
    /// the actor runs, again if it moves before the runner answers).
    pub fn open(
        &self,
        actor: &Rc<Actor>,
        control: Rc<ConnControl>,
        request: OpenRequest,
        ticket: Option<Ticket>,
    ) -> (u64, Rc<Slot<OpenAnswer>>) {
        let conn_id = self.fresh_conn_id();
        (
            conn_id,
            self.open_as(actor, conn_id, control, request, ticket),
        )
    }

    /// As `open`, under an id the caller chose (`peers.rs`).
    pub(super) fn open_as(
        &self,
        actor: &Rc<Actor>,
        conn_id: u64,
        control: Rc<ConnControl>,
        request: OpenRequest,
        ticket: Option<Ticket>,
    ) -> Rc<Slot<OpenAnswer>> {
        let answer = Slot::new();
        if actor.state() == ActorState::Running {
            if let Some(tunnel) = actor.tunnel() {
                tunnel.send(&conn_open(conn_id, actor, &request));
            }
        }
        let open = PendingOpen {
            answer: answer.clone(),
            control,
            actor: actor.clone(),
            request,
            ticket,
        };
        self.opens.borrow_mut().insert(conn_id, open);
        answer
    }

    /// The runner did not answer an open in time.
    pub fn abandon_open(&self, conn_id: u64) {
        if let Some(open) = self.opens.borrow_mut().remove(&conn_id) {
            if let Some(t) = open.actor.tunnel() {
                t.send(&Frame::Close {
                    conn_id,
                    code: CloseCode::GOING_AWAY.0,
                    reason: "open timed out".into(),
                });
            }
        }
    }

    /// The open of `conn_id`, if `tunnel`'s runner runs its actor: a runner
    /// answers only for its own actors' connections.
    fn take_open(&self, tunnel: &Rc<Tunnel>, conn_id: u64) -> Option<PendingOpen> {
        let mut opens = self.opens.borrow_mut();
        let owned = opens.get(&conn_id).is_some_and(|o| o.actor.is_on(tunnel));
        owned.then(|| opens.remove(&conn_id)).flatten()
    }

    /// The runner accepted: the connection is linked to its actor.
    pub(super) fn on_accept(
        &self,
        tunnel: &Rc<Tunnel>,
        conn_id: u64,
        protocol: Option<String>,
        hib: Option<bool>,
    ) {
        let Some(open) = self.take_open(tunnel, conn_id) else {
            return;
        };
        if open.actor.conns().len() >= self.config().actors.max_connections_per_actor {
            // Others got in while this one waited for the runner.
            self.refuse_full(tunnel, conn_id, open);
            return;
        }
        if let Some(ticket) = open.ticket {
            ticket.hand_over(); // the link keeps the address and releases it
        }
        let config = self.config();
        let a = &config.actors;
        let hibernatable = hib.unwrap_or_else(|| a.hibernatable.contains(&open.actor.name));
        let chosen = protocol.filter(|p| open.request.protocols.contains(p));
        open.actor.add_conn(conn_id);
        self.note(EventKind::Open, &open.actor, Some(conn_id));
        let peer = Peer::from(open.request.peer);
        let meta = ConnMeta::keep(open.request, chosen.as_deref());
        let link = ClientLink::new(open.control, open.actor, hibernatable, peer, meta);
        let mut links = self.links.borrow_mut();
        links.insert(conn_id, Box::new(link));
        self.count_links(&links);
        drop(links);
        let answer = OpenAnswer::Accepted { protocol: chosen };
        self.relay_answer(conn_id, &answer);
        open.answer.fill(answer);
    }

    /// Whether `actor` may take one more connection; counts a refusal.
    pub fn has_room(&self, actor: &Actor) -> Result<(), Unavailable> {
        if actor.conns().len() < self.config().actors.max_connections_per_actor {
            return Ok(());
        }
        self.stats
            .refused_actor_full
            .fetch_add(1, Ordering::Relaxed);
        Err(Unavailable::ActorFull)
    }

    /// An accepted open that finds its actor full: the runner forgets it,
    /// the client is refused.
    fn refuse_full(&self, tunnel: &Rc<Tunnel>, conn_id: u64, open: PendingOpen) {
        self.stats
            .refused_actor_full
            .fetch_add(1, Ordering::Relaxed);
        tunnel.send(&Frame::Close {
            conn_id,
            code: CloseCode::TRY_AGAIN_LATER.0,
            reason: "actor full".into(),
        });
        let answer = OpenAnswer::Refused(Unavailable::ActorFull);
        self.relay_answer(conn_id, &answer);
        open.answer.fill(answer);
    }

    /// The runner refused, with a status of its choice.
    pub(super) fn on_reject(&self, tunnel: &Rc<Tunnel>, conn_id: u64, status: u16, reason: String) {
        if let Some(open) = self.take_open(tunnel, conn_id) {
            let answer = OpenAnswer::Rejected { status, reason };
            self.relay_answer(conn_id, &answer);
            open.answer.fill(answer);
        }
    }

    pub(super) fn has_pending_opens(&self, actor: &Rc<Actor>) -> bool {
        let opens = self.opens.borrow();
        opens.values().any(|p| Rc::ptr_eq(&p.actor, actor))
    }

    /// Opens sent to a runner that is gone go to the actor's new one.
    pub(super) fn resend_pending_opens(&self, actor: &Rc<Actor>) {
        let Some(tunnel) = actor.tunnel() else {
            return;
        };
        for (conn_id, open) in self.opens.borrow().iter() {
            if Rc::ptr_eq(&open.actor, actor) {
                tunnel.send(&conn_open(*conn_id, actor, &open.request));
            }
        }
    }

    /// The actor was given up: its waiting connections learn why.
    pub(super) fn reject_pending_opens(&self, actor: &Rc<Actor>, reason: &str) {
        let mut opens = self.opens.borrow_mut();
        let stale: Vec<u64> = opens
            .iter()
            .filter(|(_, p)| Rc::ptr_eq(&p.actor, actor))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(p) = opens.remove(&id) {
                let answer = OpenAnswer::GaveUp {
                    reason: reason.to_owned(),
                };
                self.relay_answer(id, &answer);
                p.answer.fill(answer);
            }
        }
    }
}

fn conn_open(conn_id: u64, actor: &Actor, request: &OpenRequest) -> Frame {
    Frame::ConnOpen {
        conn_id,
        actor_id: actor.id(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers: request.headers.clone(),
        protocols: request.protocols.clone(),
        peer: request.peer.to_string(),
    }
}
