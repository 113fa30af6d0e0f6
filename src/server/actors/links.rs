//! A client connection as its actor's worker tracks it: the link from the
//! connection to its actor (with what the actor has not acknowledged and
//! what is kept to restore the connection elsewhere), and a connection
//! still waiting for the runner to accept it.

use super::Unavailable;
use crate::server::conn::admission::Ticket;
use std::cell::Cell;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
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
    /// The gateway refused it itself (the actor filled up meanwhile).
    Refused(Unavailable),
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
    /// The client's address, as accepted.
    pub peer: SocketAddr,
}

/// A connection the runner has not accepted yet.
pub(super) struct PendingOpen {
    pub answer: Rc<Slot<OpenAnswer>>,
    pub control: Rc<ConnControl>,
    pub actor: Rc<Actor>,
    pub request: OpenRequest,
    /// The connection's place, handed to its link when the runner accepts.
    pub ticket: Option<Ticket>,
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
///
/// Its rarely present parts are `Cell<Option<Box<…>>>` (8 bytes each, no
/// borrow flag), reached through `with_outstanding` and `with_meta`: a
/// hibernated socket pays for every byte here (docs/ARCHITECTURE.md).
pub(super) struct ClientLink {
    pub control: Rc<ConnControl>,
    pub actor: Rc<Actor>,
    pub last_acked: Cell<u64>,
    pub hibernatable: bool,
    /// Restored into a running actor and not yet answered: what the actor
    /// says to all of its connections meanwhile was not for this one
    /// (PROTOCOL §5a, a late restore).
    restoring: Cell<bool>,
    /// The client's address, as accepted.
    pub peer: Peer,
    meta: Cell<Option<Box<ConnMeta>>>,
    /// Messages not acknowledged yet, and a close to deliver; `None` when
    /// there are none (every hibernated connection).
    outstanding: Cell<Option<Box<Outstanding>>>,
}

/// A client address in 18 bytes (IPv4 as IPv4-mapped IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    ip: [u8; 16],
    port: u16,
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        Peer {
            ip: ip.octets(),
            port: addr.port(),
        }
    }
}

impl Peer {
    pub fn ip(&self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.ip);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.port)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr().fmt(f)
    }
}

/// An idle connection's buffer is freed past this capacity.
const KEEP_OUTSTANDING_CAPACITY: usize = 16 * 1024;

impl ClientLink {
    pub fn new(
        control: Rc<ConnControl>,
        actor: Rc<Actor>,
        hibernatable: bool,
        peer: Peer,
        meta: Option<Box<ConnMeta>>,
    ) -> Self {
        ClientLink {
            control,
            actor,
            last_acked: Cell::new(0),
            hibernatable,
            restoring: Cell::new(false),
            peer,
            meta: Cell::new(meta),
            outstanding: Cell::new(None),
        }
    }

    /// Whether a late restore of it awaits the runner's answer.
    pub fn is_restoring(&self) -> bool {
        self.restoring.get()
    }

    pub fn set_restoring(&self, restoring: bool) {
        self.restoring.set(restoring);
    }

    /// Runs `f` on the connection's outstanding messages (taken out of
    /// their cell meanwhile: `f` must not reach this link again).
    pub fn with_outstanding<R>(&self, f: impl FnOnce(&mut Option<Box<Outstanding>>) -> R) -> R {
        let mut outstanding = self.outstanding.take();
        let result = f(&mut outstanding);
        self.outstanding.set(outstanding);
        result
    }

    /// Runs `f` on what is kept to restore the connection (as above).
    pub fn with_meta<R>(&self, f: impl FnOnce(&mut Option<Box<ConnMeta>>) -> R) -> R {
        let mut meta = self.meta.take();
        let result = f(&mut meta);
        self.meta.set(meta);
        result
    }

    /// What the connection holds, counted against the hold and backlog limits.
    pub fn outstanding_cost(&self) -> usize {
        self.with_outstanding(|o| o.as_ref().map_or(0, |o| o.cost()))
    }

    /// Messages or a close wait for the actor's next runner.
    pub fn has_unsent(&self) -> bool {
        self.with_outstanding(|o| {
            o.as_ref()
                .is_some_and(|o| o.has_unsent() || o.close.is_some())
        })
    }

    pub fn is_closing(&self) -> bool {
        self.with_outstanding(|o| o.as_ref().is_some_and(|o| o.close.is_some()))
    }

    /// Drops the outstanding buffer if nothing is in it.
    pub fn release_if_empty(&self) {
        self.with_outstanding(|o| {
            if o.as_ref().is_some_and(|o| o.is_empty()) {
                *o = None;
            }
        })
    }

    /// The runner handled everything up to `index`. Returns true if that
    /// brought a backlog of `limit` or more back under it. An index beyond
    /// what the runner was given is ignored: acknowledging it would drop
    /// unsent messages and make the next runner skip the client's messages
    /// as replays.
    pub fn ack(&self, index: u64, limit: usize) -> bool {
        self.with_outstanding(|outstanding| {
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
        })
    }

    /// Holds a message for the actor's next runner (taken over from the
    /// process before an upgrade).
    pub fn hold(&self, index: u64, kind: crate::tunnel::MessageKind, payload: &[u8]) {
        self.with_outstanding(|o| {
            o.get_or_insert_with(Default::default)
                .push(index, kind, payload)
        })
    }

    /// Every message sent goes again to the actor's next runner.
    pub fn resend_all(&self) {
        self.with_outstanding(|o| {
            if let Some(o) = o.as_deref_mut() {
                o.resend_all();
            }
        })
    }

    /// Holds the client's close for the actor, after its messages.
    /// The first close held wins (an upgrade may report a client's close
    /// early, then again when its close handshake ends).
    pub fn hold_close(&self, code: u16, reason: &str) {
        self.with_outstanding(|o| {
            let held = &mut o.get_or_insert_with(Default::default).close;
            held.get_or_insert_with(|| Box::new((code, reason.to_owned())));
        })
    }

    pub fn set_attachment(&self, attachment: Bytes) {
        self.with_meta(|m| m.get_or_insert_with(Default::default).attachment = attachment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection, hibernated ones too, has a link in its worker's
    /// map: its size is paid per socket.
    #[test]
    fn a_link_stays_small() {
        let size = std::mem::size_of::<ClientLink>();
        assert!(size <= 64, "ClientLink grew to {size} bytes");
        // Boxed by every connection that sent something; 8 bytes more cost
        // 15 B of RSS per idle connection once (mimalloc's size classes).
        let outstanding = std::mem::size_of::<Outstanding>();
        assert!(
            outstanding <= 112,
            "Outstanding grew to {outstanding} bytes"
        );
    }

    #[test]
    fn peers_print_as_they_came() {
        for addr in ["127.0.0.1:4000", "[::1]:80", "[2001:db8::7]:65535"] {
            let a: SocketAddr = addr.parse().unwrap();
            assert_eq!(Peer::from(a).to_string(), addr);
        }
    }
}
