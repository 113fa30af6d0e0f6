//! A client connection as its actor's worker tracks it: the link from the
//! connection to its actor (with what the actor has not acknowledged and
//! what is kept to restore the connection elsewhere), and a connection
//! still waiting for the runner to accept it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;

use super::actor::Actor;
use super::outstanding::Outstanding;
use crate::server::conn::control::ConnControl;
use crate::server::conn::slot::Slot;
use crate::server::tunnels::Tunnel;

/// Where a client connection's actor is, as its session needs to know once
/// per turn of its loop (one map look-up).
pub(crate) enum LinkView {
    /// Not linked (closed or being closed).
    Gone,
    /// `backlogged`: the actor has not acknowledged `migration_buffer_bytes`
    /// of this connection's messages; the session stops reading until it does.
    Running {
        tunnel: Rc<Tunnel>,
        backlogged: bool,
    },
    /// Starting, waking or moving: the connection's messages are held.
    Waking,
    /// Asleep with nothing held: the session may park.
    Hibernated,
}

/// How the runner answered a connection open.
#[derive(Debug, Clone)]
pub(crate) enum OpenAnswer {
    Accepted {
        protocol: Option<String>,
    },
    /// The runner refused it, with a status of its choice (HTTP semantics,
    /// checked where it becomes an HTTP answer).
    Rejected {
        status: u16,
        reason: String,
    },
    /// The gateway gave the actor up before the runner answered.
    GaveUp {
        reason: String,
    },
}

/// What the runner is told about a new client connection (and again, as a
/// restore, after the actor wakes or moves).
pub(crate) struct OpenRequest {
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, Bytes)>,
    pub protocols: Vec<String>,
}

/// A connection the runner has not accepted yet.
pub(super) struct PendingOpen {
    pub answer: Rc<Slot<OpenAnswer>>,
    pub control: Rc<ConnControl>,
    pub actor: Rc<Actor>,
    pub request: OpenRequest,
}

/// Kept per connection so that it can be restored into a woken or moved
/// actor. (The path is the actor's own and is rebuilt from its name and key.)
#[derive(Default)]
pub(super) struct ConnMeta {
    pub query: Box<str>,
    pub headers: Box<[(String, Bytes)]>,
    pub protocol: Option<Box<str>>,
    pub attachment: Bytes,
}

impl ConnMeta {
    /// `None` when there is nothing to keep: the common case costs no allocation.
    pub fn keep(request: OpenRequest, protocol: Option<&str>) -> Option<Box<ConnMeta>> {
        let worth_keeping =
            !request.query.is_empty() || !request.headers.is_empty() || protocol.is_some();
        worth_keeping.then(|| {
            Box::new(ConnMeta {
                query: request.query.into(),
                headers: request.headers.into(),
                protocol: protocol.map(Into::into),
                attachment: Bytes::new(),
            })
        })
    }
}

/// An accepted client connection of an actor.
pub(super) struct ClientLink {
    pub control: Rc<ConnControl>,
    pub actor: Rc<Actor>,
    pub last_acked: Cell<u64>,
    pub hibernatable: bool,
    pub meta: RefCell<Option<Box<ConnMeta>>>,
    /// Messages not acknowledged yet, and a close to deliver; `None` when
    /// there are none (every hibernated connection).
    pub outstanding: RefCell<Option<Box<Outstanding>>>,
}

/// An idle connection's buffer is freed past this capacity.
const KEEP_OUTSTANDING_CAPACITY: usize = 16 * 1024;

impl ClientLink {
    pub fn new(
        control: Rc<ConnControl>,
        actor: Rc<Actor>,
        hibernatable: bool,
        meta: Option<Box<ConnMeta>>,
    ) -> Self {
        ClientLink {
            control,
            actor,
            last_acked: Cell::new(0),
            hibernatable,
            meta: RefCell::new(meta),
            outstanding: RefCell::new(None),
        }
    }

    /// What the connection holds, counted against the hold and backlog limits.
    pub fn outstanding_cost(&self) -> usize {
        self.outstanding.borrow().as_ref().map_or(0, |o| o.cost())
    }

    /// Messages or a close wait for the actor's next runner.
    pub fn has_unsent(&self) -> bool {
        self.outstanding
            .borrow()
            .as_ref()
            .is_some_and(|o| o.has_unsent() || o.close.is_some())
    }

    pub fn is_closing(&self) -> bool {
        self.outstanding
            .borrow()
            .as_ref()
            .is_some_and(|o| o.close.is_some())
    }

    /// Drops the outstanding buffer if nothing is in it.
    pub fn release_if_empty(&self) {
        let mut o = self.outstanding.borrow_mut();
        if o.as_ref().is_some_and(|o| o.is_empty()) {
            *o = None;
        }
    }

    /// The runner handled everything up to `index`. Returns true if that
    /// brought a backlog of `limit` or more back under it. An index beyond
    /// what the runner was given is ignored: acknowledging it would drop
    /// unsent messages and make the next runner skip the client's messages
    /// as replays.
    pub fn ack(&self, index: u64, limit: usize) -> bool {
        let mut outstanding = self.outstanding.borrow_mut();
        let Some(o) = outstanding.as_deref_mut() else {
            return false;
        };
        if index > o.sent_index() {
            return false;
        }
        self.last_acked.set(self.last_acked.get().max(index));
        let was_backlogged = o.cost() >= limit;
        o.ack(index);
        let relieved = was_backlogged && o.cost() < limit;
        if o.is_empty() && o.capacity() > KEEP_OUTSTANDING_CAPACITY {
            *outstanding = None;
        }
        relieved
    }

    /// Every message sent goes again to the actor's next runner.
    pub fn resend_all(&self) {
        if let Some(o) = self.outstanding.borrow_mut().as_deref_mut() {
            o.resend_all();
        }
    }

    /// Holds the client's close for the actor, after its messages.
    pub fn hold_close(&self, code: u16, reason: &str) {
        self.outstanding
            .borrow_mut()
            .get_or_insert_with(Default::default)
            .close = Some((code, reason.to_owned()));
    }

    pub fn set_attachment(&self, attachment: Bytes) {
        self.meta
            .borrow_mut()
            .get_or_insert_with(Default::default)
            .attachment = attachment;
    }
}
