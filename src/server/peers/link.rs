//! One link to another node, as this node sees it: the runner side of the
//! tunnel protocol over this node's actors. The other node starts actors
//! here (only those this node owns: no chains of forwards), opens and
//! restores its clients' connections and sends their messages; this node
//! answers as a runner would.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, warn};

use super::relay::relay_conn;
use super::PeerSide;
use crate::http::route::ActorPath;
use crate::server::actors::{relayed_conn_id, Actors, OpenRequest, Relay, RestoredConn};
use crate::server::conn::control::ConnControl;
use crate::server::conn::env::SessionLimits;
use crate::server::conn::outbox::Outbox;
use crate::server::conn::registry::Registration;
use crate::server::conn::session::{Failure, Gate, Role};
use crate::server::tunnels::PeerOut;
use crate::tunnel::{decode_frames, Frame, MessageKind, Recipients, PROTOCOL_VERSION};
use crate::ws::{CloseCode, OpCode};

/// The reason a node gives for an actor it does not own.
const NOT_OWNER: &str = "not_owner: this node does not hold the actor's claim";

/// An actor the other node started here.
struct PeerActor {
    actor: Rc<crate::server::actors::Actor>,
    conns: HashSet<u64>,
}

/// A connection of the other node's, linked here under `local`.
pub(super) struct PeerConn {
    pub local: u64,
    pub actor_id: u64,
    pub control: Rc<ConnControl>,
}

pub(crate) struct PeerLink {
    /// The node whose clients these are.
    pub node: String,
    pub out: Rc<PeerOut>,
    actors: RefCell<HashMap<u64, PeerActor>>,
    pub(super) conns: RefCell<HashMap<u64, PeerConn>>,
}

impl PeerLink {
    pub fn new(node: String, out: Rc<PeerOut>) -> Self {
        PeerLink {
            node,
            out,
            actors: RefCell::default(),
            conns: RefCell::default(),
        }
    }

    fn on_frame(self: &Rc<Self>, side: &Rc<PeerSide>, frame: Frame) -> Result<(), Failure> {
        match frame {
            Frame::Welcome {
                version, workers, ..
            } => check_welcome(side, version, workers)?,
            Frame::StartActor {
                actor_id,
                name,
                key,
                ..
            } => self.start(side, actor_id, &name, key),
            Frame::StopActor { actor_id } => self.stop(side, actor_id),
            Frame::ConnOpen {
                conn_id,
                actor_id,
                path,
                query,
                headers,
                protocols,
                peer,
            } => {
                let peer = parse_peer(&peer);
                let request = OpenRequest {
                    path,
                    query,
                    headers,
                    protocols,
                    peer,
                };
                self.open(side, conn_id, actor_id, request)
            }
            Frame::RestoreConn {
                conn_id,
                actor_id,
                query,
                headers,
                protocol,
                attachment,
                last_index,
                peer,
                output_seen,
                ..
            } => {
                let peer = parse_peer(&peer);
                let conn = RestoredConn {
                    query,
                    headers,
                    protocol,
                    attachment,
                    last_index,
                    peer,
                    output_seen,
                };
                self.restore(side, conn_id, actor_id, conn)
            }
            Frame::Message {
                conn_id,
                index,
                kind,
                payload,
            } => match self.local(conn_id) {
                Some(local) => side.actors.forward(local, index, kind, &payload),
                None => {
                    debug!(node = %self.node, conn = conn_id, index, "message for a connection not linked here: dropped")
                }
            },
            Frame::Close {
                conn_id,
                code,
                reason,
            } => self.close(&side.actors, conn_id, CloseCode(code), &reason),
            // A publish on the other node, for every client of the actor.
            Frame::Broadcast {
                actor_id,
                kind,
                to: Recipients::All,
                payload,
            } => {
                let actor = self.actors.borrow().get(&actor_id).map(|a| a.actor.clone());
                if let Some(actor) = actor {
                    side.actors.publish_to(&actor, kind, payload, &[]);
                }
            }
            Frame::Keepalive { nonce } => self.out.send(&Frame::KeepaliveAck { nonce }),
            Frame::KeepaliveAck { .. } | Frame::Drain | Frame::Drained => {}
            _ => {
                return Err(failure(
                    "frame type not allowed from a node to a node it forwards to",
                ))
            }
        }
        Ok(())
    }

    fn local(&self, remote: u64) -> Option<u64> {
        self.conns.borrow().get(&remote).map(|c| c.local)
    }

    fn start(self: &Rc<Self>, side: &Rc<PeerSide>, actor_id: u64, name: &str, key: Vec<String>) {
        let Some((ns, name)) = name.split_once('/') else {
            return self.stopped(actor_id, "a node names its actors ns/name");
        };
        if !side.actors.owns(ns, name, &key) {
            debug!(node = %self.node, actor = %name, ?key, "asked for an actor this node does not own");
            return self.stopped(actor_id, NOT_OWNER);
        }
        let path = ActorPath {
            ns: ns.to_owned(),
            name: name.to_owned(),
            key,
            query: None,
        };
        let actor = match side.actors.get_or_start_as(&path, None) {
            Ok(actor) => actor,
            Err(u) => return self.stopped(actor_id, &u.to_string()),
        };
        let ready = side.actors.when_ready(&actor);
        let entry = PeerActor {
            actor: actor.clone(),
            conns: HashSet::new(),
        };
        self.actors.borrow_mut().insert(actor_id, entry);
        // This node's clients of the actor come with this start: an owner
        // that waited for them may place it now (see `peer_joined` on why
        // the restores that follow in this batch are not missed).
        side.actors.peer_joined(&actor, &self.node);
        match ready {
            None => self.out.send(&Frame::ActorReady { actor_id }),
            Some(slot) => {
                let link = self.clone();
                monoio::spawn(async move {
                    let far = Instant::now() + std::time::Duration::from_secs(24 * 3600);
                    let result = slot.wait_until(far).await;
                    if !link.actors.borrow().contains_key(&actor_id) {
                        return; // stopped by the other node meanwhile
                    }
                    match result {
                        Some(Ok(())) => link.out.send(&Frame::ActorReady { actor_id }),
                        Some(Err(reason)) => link.forget_actor(actor_id, &reason),
                        None => link.forget_actor(actor_id, "gave up"),
                    }
                });
            }
        }
    }

    fn stopped(&self, actor_id: u64, reason: &str) {
        self.out.send(&Frame::ActorStopped {
            actor_id,
            reason: reason.to_owned(),
        });
    }

    fn forget_actor(&self, actor_id: u64, reason: &str) {
        self.actors.borrow_mut().remove(&actor_id);
        self.stopped(actor_id, reason);
    }

    /// The other node moves the actor away: its connections leave this
    /// node's actor (the runner sees them close), then it is told so.
    fn stop(&self, side: &PeerSide, actor_id: u64) {
        let Some(entry) = self.actors.borrow_mut().remove(&actor_id) else {
            return;
        };
        for remote in entry.conns {
            self.close(
                &side.actors,
                remote,
                CloseCode::GOING_AWAY,
                "moved by its node",
            );
        }
        self.stopped(actor_id, "stopped");
    }

    fn open(
        self: &Rc<Self>,
        side: &Rc<PeerSide>,
        remote: u64,
        actor_id: u64,
        request: OpenRequest,
    ) {
        let local = relayed_conn_id(side.worker_id, &self.node, remote);
        let Some(actor) = self.add_conn(side, remote, actor_id, local) else {
            let reason = "the actor is not started on this node".to_owned();
            return self.out.send(&Frame::ConnReject {
                conn_id: remote,
                status: 503,
                reason,
            });
        };
        let registration = side.env.registry.register(Instant::now());
        let relay = self.relay((remote, actor_id), request.peer, &registration);
        self.link_conn(remote, local, actor_id, registration.control.clone());
        side.actors.open_relayed(&actor, local, request, relay);
        // A client of this node would have woken it on its way in.
        side.actors.wake_if_asleep(&actor);
        monoio::spawn(relay_conn(
            side.clone(),
            self.clone(),
            remote,
            local,
            registration,
        ));
    }

    fn restore(
        self: &Rc<Self>,
        side: &Rc<PeerSide>,
        remote: u64,
        actor_id: u64,
        conn: RestoredConn,
    ) {
        let local = relayed_conn_id(side.worker_id, &self.node, remote);
        debug!(node = %self.node, conn = remote, local, actor = actor_id, "restoring a forwarded connection");
        let Some(actor) = self.add_conn(side, remote, actor_id, local) else {
            warn!(node = %self.node, "a restored connection of an actor not started here, or known already: refused");
            // Told, so that its node does not forward into nothing.
            return self.out.send(&Frame::Close {
                conn_id: remote,
                code: CloseCode::TRY_AGAIN_LATER.0,
                reason: "the node owning the actor could not restore this connection".into(),
            });
        };
        let registration = side.env.registry.register(Instant::now());
        let relay = self.relay((remote, actor_id), conn.peer, &registration);
        self.link_conn(remote, local, actor_id, registration.control.clone());
        side.actors.restore_relayed(&actor, local, conn, relay);
        monoio::spawn(relay_conn(
            side.clone(),
            self.clone(),
            remote,
            local,
            registration,
        ));
    }

    fn relay(
        &self,
        (remote, remote_actor): (u64, u64),
        peer: SocketAddr,
        registration: &Registration,
    ) -> Relay {
        Relay {
            out: self.out.clone(),
            remote_conn: remote,
            peer,
            control: registration.control.clone(),
            remote_actor,
            output_seen: std::cell::Cell::new(0),
        }
    }

    /// Notes `remote` on its actor; `None` if that actor is not started
    /// here or the connection is known already.
    fn add_conn(
        &self,
        side: &PeerSide,
        remote: u64,
        actor_id: u64,
        local: u64,
    ) -> Option<Rc<crate::server::actors::Actor>> {
        // A node forwards what it admitted; still, one link holds at most
        // as many connections as this node admits in all.
        if self.conns.borrow().len() >= side.env.config().client.max_connections {
            warn!(node = %self.node, "a node link holds client.max_connections connections: refused");
            return None;
        }
        if self.conns.borrow().contains_key(&remote) || side.actors.is_linked(local) {
            return None;
        }
        let mut actors = self.actors.borrow_mut();
        let entry = actors.get_mut(&actor_id)?;
        entry.conns.insert(remote);
        Some(entry.actor.clone())
    }

    fn link_conn(&self, remote: u64, local: u64, actor_id: u64, control: Rc<ConnControl>) {
        let conn = PeerConn {
            local,
            actor_id,
            control,
        };
        self.conns.borrow_mut().insert(remote, conn);
    }

    /// The connection is over on the other node (or the link is, or that
    /// node moves the actor away): it leaves this node's actor, and its
    /// relay ends without telling that node anything.
    pub(super) fn close(&self, actors: &Actors, remote: u64, code: CloseCode, reason: &str) {
        let Some(conn) = self.forget_conn(remote) else {
            return;
        };
        actors.drop_relayed(conn.local, code, reason);
        conn.control.request_close(code, reason.to_owned());
    }

    /// Forgets `remote` (its relay stops sending for it).
    pub(super) fn forget_conn(&self, remote: u64) -> Option<PeerConn> {
        let conn = self.conns.borrow_mut().remove(&remote)?;
        if let Some(entry) = self.actors.borrow_mut().get_mut(&conn.actor_id) {
            entry.conns.remove(&remote);
        }
        Some(conn)
    }

    /// The link is gone: the other node's clients leave this node's actors
    /// (that node moves them elsewhere, or they are gone with it).
    fn teardown(&self, actors: &Actors) {
        let remotes: Vec<u64> = self.conns.borrow().keys().copied().collect();
        for remote in remotes {
            self.close(actors, remote, CloseCode::ABNORMAL, "node link lost");
        }
        self.actors.borrow_mut().clear();
    }
}

fn check_welcome(side: &PeerSide, version: u16, workers: u32) -> Result<(), Failure> {
    if version != PROTOCOL_VERSION {
        return Err(failure(
            "the other node speaks another tunnel protocol version",
        ));
    }
    if workers as usize != side.worker_count {
        // An actor's clients and its instance must meet on the same worker
        // index on every node (docs/ARCHITECTURE.md, "Cluster").
        return Err(failure(
            "nodes of a cluster must run the same number of workers",
        ));
    }
    Ok(())
}

fn parse_peer(peer: &str) -> SocketAddr {
    peer.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

fn failure(reason: &str) -> Failure {
    Failure {
        code: CloseCode::PROTOCOL,
        reason: reason.to_owned(),
    }
}

/// The dialed link's WebSocket session: the first batch is this node's
/// hello; after it, the other node's frames go to `PeerLink`.
pub(crate) struct PeerRole {
    pub link: Rc<PeerLink>,
    pub side: Rc<PeerSide>,
}

impl Role for PeerRole {
    type Ctx = PeerSide;

    fn limits(side: &PeerSide) -> SessionLimits {
        side.limits.get()
    }

    fn unmasked_frames(&self) -> bool {
        true
    }

    fn gate(&mut self, _: &PeerSide, _: &Rc<ConnControl>, _: bool) -> Gate {
        Gate::Read
    }

    fn on_message(
        &mut self,
        _: &PeerSide,
        kind: MessageKind,
        payload: Bytes,
    ) -> Result<(), Failure> {
        if kind == MessageKind::Text {
            return Err(failure("tunnel messages are binary"));
        }
        for frame in decode_frames(payload) {
            let frame = frame.map_err(|e| failure(e.0))?;
            self.link.on_frame(&self.side, frame)?;
        }
        Ok(())
    }

    fn collect_outbound(&mut self, side: &PeerSide, _: &ConnControl, outbox: &mut Outbox, _: bool) {
        if let Some(batch) = self.link.out.take_pending() {
            outbox.push(&side.env.pool, OpCode::Binary, &batch);
        }
    }

    fn ended(&mut self, side: &PeerSide, code: CloseCode, reason: &str) {
        debug!(node = %self.link.node, code = code.0, %reason, "node link ended");
        self.link.teardown(&side.actors);
    }
}
