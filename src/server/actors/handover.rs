//! Actors across an upgrade of the gateway process.
//!
//! The old process stops every actor on its runner the graceful way (as a
//! drain does: the runner acknowledges everything it handled before it
//! confirms), starts none from then on, and hands each connection over as a
//! `ConnRecord`: its actor, what restores it, and what the actor has not
//! acknowledged. The new process rebuilds actors and links from the
//! records, asleep, and wakes the ones that were awake once every record is
//! in: when a runner is back, they are restored and replayed to exactly as
//! after a migration (docs/PROTOCOL.md §5a).

use std::rc::Rc;

use bytes::Bytes;
use tracing::{info, warn};

use super::actor::{Actor, ActorState, AfterStop};
use super::links::{ClientLink, ConnMeta};
use super::{Actors, Unavailable};
use crate::handover::{ConnRecord, HeldMessage};
use crate::server::conn::control::ConnControl;

impl Actors {
    /// Old process: no actor starts from now on, and every actor on a
    /// runner is asked to stop there (its clients' messages are held).
    pub fn begin_handover(&self) {
        self.handing_over.set(true);
        let mut stopping = 0;
        let reason = Unavailable::Upgrading.to_string();
        for actor in self.directory.live() {
            // Handshakes waiting for it are answered now (503, Retry-After):
            // their clients come back to the next process.
            actor.fail_waiters(&reason);
            self.reject_pending_opens(&actor, &reason);
            if matches!(actor.state(), ActorState::Running | ActorState::Starting) {
                self.begin_stop(&actor, AfterStop::Migrate);
                stopping += 1;
            }
        }
        info!(
            worker = self.worker_id,
            stopping, "upgrade: stopping actors on their runners"
        );
    }

    /// Old process, every actor off its runner and every tunnel closed:
    /// nothing more can be queued for a client, so its session may leave.
    pub fn release_sessions(&self) {
        self.sessions_leave.set(true);
    }

    /// Whether client sessions hand themselves over now.
    pub fn sessions_may_leave(&self) -> bool {
        self.sessions_leave.get()
    }

    /// No actor is on a runner any more (each is asleep or waits to be placed).
    pub fn all_off_runners(&self) -> bool {
        self.directory.live().iter().all(|a| a.tunnel().is_none())
    }

    /// Connections waiting for their runner's accept.
    pub fn opening(&self) -> usize {
        self.opens.borrow().len()
    }

    /// Client connections linked to actors here.
    pub fn linked(&self) -> usize {
        self.links.borrow().len()
    }

    /// Links whose client closed before its actor could be told (they have
    /// no session any more, and travel without a socket).
    pub fn closed_links(&self) -> Vec<u64> {
        let links = self.links.borrow();
        links
            .iter()
            .filter(|(_, l)| l.is_closing())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Old process: unlinks connection `conn_id` and describes it for the
    /// new process (`next_index`: the client's last message; `unread`: bytes
    /// read from its socket, not decoded yet). A closed one's record carries
    /// its close.
    pub fn export_conn(&self, conn_id: u64, next_index: u64, unread: Bytes) -> Option<ConnRecord> {
        let link = self.forget_conn(conn_id)?;
        let actor = link.actor.clone();
        let (held, close) = link.with_outstanding(|o| match o.as_deref_mut() {
            None => (Vec::new(), None),
            Some(o) => (held_messages(o), o.close.take().map(|c| *c)),
        });
        let last_held = held.last().map_or(0, |m| m.index);
        let next_index = next_index.max(last_held).max(link.last_acked.get());
        let meta = *link.with_meta(|m| m.take()).unwrap_or_default();
        let record = ConnRecord {
            ns: actor.ns.clone(),
            name: actor.name.clone(),
            key: actor.key.clone(),
            actor_awake: actor.state() != ActorState::Asleep,
            conn_id,
            peer: link.peer.addr(),
            hibernatable: link.hibernatable,
            next_index,
            last_acked: link.last_acked.get(),
            query: meta.query.into(),
            headers: meta.headers.into(),
            protocol: meta.protocol.map(Into::into),
            attachment: meta.attachment,
            held,
            unread,
            close,
            tls: None,
        };
        self.drop_if_unused(&actor);
        Some(record)
    }

    /// New process, before the first connection comes: nothing starts until
    /// every one is in (`wake_imported`), so that a started actor is told of
    /// all its connections at once (runners may already be connected).
    pub fn begin_take_over(&self) {
        self.taking_over.set(true);
    }

    /// Whether an upgrade is under way (this process hands over or takes over).
    pub fn upgrading(&self) -> bool {
        self.starts_paused()
    }

    /// No actor may start now (an upgrade is moving this worker's actors).
    pub(super) fn starts_paused(&self) -> bool {
        self.handing_over.get() || self.taking_over.get()
    }

    /// New process: links a connection taken over (under its old id if it
    /// is one of this worker's); returns its id here. Refused when its
    /// namespace no longer exists.
    pub fn import_conn(&self, r: &ConnRecord, control: Rc<ConnControl>) -> Result<u64, String> {
        if self.config().namespace(&r.ns).is_none() {
            return Err(format!("namespace {:?} is not configured", r.ns));
        }
        let actor = self
            .directory
            .get(&r.ns, &r.name, &r.key)
            .unwrap_or_else(|| {
                let pool = self.config().pool_of(&r.ns, &r.name).to_owned();
                let hold = self.config().actors.migration_buffer_bytes;
                let (now, stats) = (self.now(), self.stats.clone());
                let actor = Rc::new(Actor::new(&r.ns, &r.name, &r.key, pool, now, hold, stats));
                actor.forget_output_marks();
                actor.take_id(self.ids.fresh());
                self.directory.insert(&actor);
                actor
            });
        if r.actor_awake && !self.to_wake.borrow().iter().any(|a| Rc::ptr_eq(a, &actor)) {
            self.to_wake.borrow_mut().push(actor.clone());
        }
        let conn_id = self.ids.adopt(r.conn_id);
        let link = ClientLink::new(
            control,
            actor.clone(),
            r.hibernatable,
            r.peer.into(),
            meta(r),
        );
        link.last_acked.set(r.last_acked);
        for m in &r.held {
            link.hold(m.index, m.kind, &m.payload);
        }
        if let Some((code, reason)) = &r.close {
            link.hold_close(*code, reason);
        }
        self.admission.adopt(r.peer.ip());
        actor.add_conn(conn_id);
        let mut links = self.links.borrow_mut();
        links.insert(conn_id, Box::new(link));
        self.count_links(&links);
        Ok(conn_id)
    }

    /// New process, every record in: the actors that were awake start as
    /// soon as a runner of their pool can take them.
    pub fn wake_imported(&self) {
        self.taking_over.set(false);
        let actors = std::mem::take(&mut *self.to_wake.borrow_mut());
        for actor in actors {
            if actor.state() == ActorState::Placing {
                self.place(&actor); // woken by a message while taking over
            } else if actor.state() == ActorState::Asleep && !actor.conns().is_empty() {
                self.wake(&actor);
            } else if actor.conns().is_empty() {
                warn!(actor = %actor.name, key = ?actor.key, "upgrade: an awake actor came without connections");
                self.drop_if_unused(&actor);
            }
        }
    }
}

fn held_messages(o: &super::outstanding::Outstanding) -> Vec<HeldMessage> {
    o.all()
        .map(|(index, kind, payload)| HeldMessage {
            index,
            kind,
            payload: Bytes::copy_from_slice(payload),
        })
        .collect()
}

fn meta(r: &ConnRecord) -> Option<Box<ConnMeta>> {
    let empty = r.query.is_empty()
        && r.headers.is_empty()
        && r.protocol.is_none()
        && r.attachment.is_empty();
    (!empty).then(|| {
        Box::new(ConnMeta {
            query: r.query.as_str().into(),
            headers: r.headers.clone().into(),
            protocol: r.protocol.as_deref().map(Into::into),
            attachment: r.attachment.clone(),
        })
    })
}
