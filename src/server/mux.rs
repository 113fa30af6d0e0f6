//! The per-worker multiplexer: this worker's runner tunnels, the actors it
//! placed on them, and the client connections of those actors.
//!
//! Everything here is owned by one worker thread. A client connection is
//! always served by its actor's home worker, and every runner keeps one
//! tunnel to every worker, so client ↔ actor traffic never crosses cores
//! (docs/ARCHITECTURE.md).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use slab::Slab;
use tracing::{debug, info, warn};

use super::registry::ConnControl;
use super::slot::Slot;
use crate::tunnel::{encode_frame, encode_message, Frame, MessageKind, TunnelError};
use crate::ws::{CloseCode, OpCode};

/// Close code for a tunnel replaced by a newer connection with the same
/// runner key (4000 + 409 Conflict). A runner library must not reconnect
/// after it: another process now holds its key.
pub(crate) const REPLACED: CloseCode = CloseCode(4409);

/// One runner's tunnel to this worker.
pub(crate) struct Tunnel {
    pub runner_key: String,
    pub pool: String,
    pub capacity: u32,
    pub actor_names: Vec<String>,
    /// The tunnel session's control: poked when frames are pending.
    pub control: Rc<ConnControl>,
    pending: RefCell<BytesMut>,
    max_pending: usize,
    placed: Cell<u32>,
    draining: Cell<bool>,
    slab_key: Cell<usize>,
    /// Client sessions that stopped reading because this tunnel is congested.
    blocked: RefCell<Vec<Rc<ConnControl>>>,
}

impl Tunnel {
    pub fn send(&self, frame: &Frame) {
        encode_frame(&mut self.pending.borrow_mut(), frame);
        self.control.poke();
    }

    pub fn send_message(&self, conn_id: u64, index: u64, kind: MessageKind, payload: &[u8]) {
        encode_message(
            &mut self.pending.borrow_mut(),
            conn_id,
            index,
            kind,
            payload,
        );
        self.control.poke();
    }

    /// Everything queued for the runner, as one batch (one WebSocket message).
    pub fn take_pending(&self) -> Option<Bytes> {
        let mut p = self.pending.borrow_mut();
        (!p.is_empty()).then(|| p.split().freeze())
    }

    /// Past `max_pending` queued bytes, clients of this runner stop reading.
    pub fn is_congested(&self) -> bool {
        self.pending.borrow().len() >= self.max_pending
    }

    pub fn wait_until_uncongested(&self, client: &Rc<ConnControl>) {
        self.blocked.borrow_mut().push(client.clone());
    }

    /// Called after the tunnel wrote a batch: release blocked clients.
    pub fn flushed(&self) {
        if !self.is_congested() {
            for c in self.blocked.borrow_mut().drain(..) {
                c.poke();
            }
        }
    }

    fn can_place(&self, name: &str) -> bool {
        !self.draining.get()
            && self.placed.get() < self.capacity
            && self.actor_names.iter().any(|n| n == name)
    }
}

/// Filled when a starting actor runs (or failed to start, with the reason).
pub(crate) type ReadySlot = Slot<Result<(), String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActorState {
    Starting,
    Running,
}

pub(crate) struct Actor {
    pub id: u64,
    pub name: String,
    pub key: Vec<String>,
    pub tunnel: Rc<Tunnel>,
    state: Cell<ActorState>,
    ready: RefCell<Vec<Rc<ReadySlot>>>,
    conns: RefCell<HashSet<u64>>,
}

/// How the runner answered a connection open.
#[derive(Debug, Clone)]
pub(crate) enum OpenAnswer {
    Accepted { protocol: Option<String> },
    Rejected { status: u16, reason: String },
}

struct PendingOpen {
    answer: Rc<Slot<OpenAnswer>>,
    control: Rc<ConnControl>,
    actor: Rc<Actor>,
}

struct ClientLink {
    control: Rc<ConnControl>,
    actor: Rc<Actor>,
    last_acked: Cell<u64>,
}

/// Why an actor cannot be reached: an HTTP status, a machine-readable kind
/// (`unknown_actor`, `no_runner`, `no_capacity`, `start_failed`,
/// `start_timeout`, `open_timeout`, `rejected`) and a human reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unavailable {
    pub status: u16,
    pub kind: &'static str,
    pub reason: String,
}

impl Unavailable {
    pub fn new(status: u16, kind: &'static str, reason: impl Into<String>) -> Self {
        Unavailable {
            status,
            kind,
            reason: reason.into(),
        }
    }

    /// `kind: reason`, what the client reads.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.kind, self.reason)
    }
}

type ActorKey = (String, Vec<String>);

pub(crate) struct Mux {
    worker_id: usize,
    max_tunnel_pending: usize,
    max_client_queue: usize,
    tunnels: RefCell<Slab<Rc<Tunnel>>>,
    actors_by_key: RefCell<HashMap<ActorKey, Rc<Actor>>>,
    actors_by_id: RefCell<HashMap<u64, Rc<Actor>>>,
    conns: RefCell<HashMap<u64, ClientLink>>,
    pending_opens: RefCell<HashMap<u64, PendingOpen>>,
    next_id: Cell<u64>,
}

impl Mux {
    pub fn new(worker_id: usize, max_tunnel_pending: usize, max_client_queue: usize) -> Self {
        Mux {
            worker_id,
            max_tunnel_pending,
            max_client_queue,
            tunnels: RefCell::new(Slab::new()),
            actors_by_key: RefCell::new(HashMap::new()),
            actors_by_id: RefCell::new(HashMap::new()),
            conns: RefCell::new(HashMap::new()),
            pending_opens: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
        }
    }

    /// Ids unique across the gateway: the worker id in the top byte.
    fn fresh_id(&self) -> u64 {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        ((self.worker_id as u64) << 56) | n
    }

    /// A runner introduced itself on a tunnel. A tunnel of the same runner key
    /// already here is a zombie (the runner restarted): it is replaced.
    pub fn add_tunnel(&self, hello: &Frame, control: Rc<ConnControl>) -> Option<Rc<Tunnel>> {
        let Frame::Hello {
            runner_key,
            pool,
            capacity,
            actor_names,
            ..
        } = hello
        else {
            return None;
        };
        let zombie = self
            .tunnels
            .borrow()
            .iter()
            .find(|(_, t)| &t.runner_key == runner_key)
            .map(|(_, t)| t.clone());
        if let Some(old) = zombie {
            info!(worker = self.worker_id, runner = %runner_key, "runner reconnected: replacing its previous tunnel");
            old.control.request_close(
                REPLACED,
                "replaced by a newer connection of the same runner key",
            );
            self.remove_tunnel(&old);
        }
        let tunnel = Rc::new(Tunnel {
            runner_key: runner_key.clone(),
            pool: pool.clone(),
            capacity: *capacity,
            actor_names: actor_names.clone(),
            control,
            pending: RefCell::new(BytesMut::new()),
            max_pending: self.max_tunnel_pending,
            placed: Cell::new(0),
            draining: Cell::new(false),
            slab_key: Cell::new(0),
            blocked: RefCell::new(Vec::new()),
        });
        let key = self.tunnels.borrow_mut().insert(tunnel.clone());
        tunnel.slab_key.set(key);
        info!(worker = self.worker_id, runner = %runner_key, pool = %pool, capacity, actors = ?actor_names, "runner tunnel up");
        Some(tunnel)
    }

    /// The tunnel is gone: its actors are gone with it, and so are their
    /// clients (live migration keeps them; it is not built yet).
    pub fn remove_tunnel(&self, tunnel: &Rc<Tunnel>) {
        {
            let mut tunnels = self.tunnels.borrow_mut();
            let key = tunnel.slab_key.get();
            if tunnels.get(key).is_some_and(|t| Rc::ptr_eq(t, tunnel)) {
                tunnels.remove(key);
            } else {
                return;
            }
        }
        info!(worker = self.worker_id, runner = %tunnel.runner_key, "runner tunnel down");
        let actors: Vec<Rc<Actor>> = self
            .actors_by_id
            .borrow()
            .values()
            .filter(|a| Rc::ptr_eq(&a.tunnel, tunnel))
            .cloned()
            .collect();
        for actor in actors {
            self.remove_actor(&actor, CloseCode(1012), "the actor's runner went away");
        }
        for c in tunnel.blocked.borrow_mut().drain(..) {
            c.poke();
        }
    }

    fn remove_actor(&self, actor: &Rc<Actor>, code: CloseCode, reason: &str) {
        self.actors_by_id.borrow_mut().remove(&actor.id);
        let key = (actor.name.clone(), actor.key.clone());
        let mut by_key = self.actors_by_key.borrow_mut();
        if by_key.get(&key).is_some_and(|a| Rc::ptr_eq(a, actor)) {
            by_key.remove(&key);
        }
        drop(by_key);
        actor
            .tunnel
            .placed
            .set(actor.tunnel.placed.get().saturating_sub(1));
        for slot in actor.ready.borrow_mut().drain(..) {
            slot.fill(Err(reason.to_owned()));
        }
        let conn_ids: Vec<u64> = actor.conns.borrow_mut().drain().collect();
        let mut conns = self.conns.borrow_mut();
        for id in conn_ids {
            if let Some(link) = conns.remove(&id) {
                link.control.request_close(code, reason);
            }
        }
        drop(conns);
        let mut opens = self.pending_opens.borrow_mut();
        let stale: Vec<u64> = opens
            .iter()
            .filter(|(_, p)| Rc::ptr_eq(&p.actor, actor))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(p) = opens.remove(&id) {
                p.answer.fill(OpenAnswer::Rejected {
                    status: 503,
                    reason: reason.to_owned(),
                });
            }
        }
    }

    /// Handles one frame from a runner. An error closes that tunnel only.
    pub fn on_tunnel_frame(&self, tunnel: &Rc<Tunnel>, frame: Frame) -> Result<(), TunnelError> {
        match frame {
            Frame::Message {
                conn_id,
                index: _,
                kind,
                payload,
            } => {
                let conns = self.conns.borrow();
                let Some(link) = conns
                    .get(&conn_id)
                    .filter(|l| Rc::ptr_eq(&l.actor.tunnel, tunnel))
                else {
                    return Ok(()); // closed meanwhile: nothing to deliver to
                };
                let opcode = match kind {
                    MessageKind::Text => OpCode::Text,
                    MessageKind::Binary => OpCode::Binary,
                };
                // One message alone never trips the limit (it is bounded by
                // max_message_bytes); a backlog behind it does.
                let len = payload.len();
                let queued = link.control.push_outbound((opcode, payload));
                if queued > self.max_client_queue && queued > len {
                    warn!(
                        conn = conn_id,
                        "client is not reading: send queue exceeded, closing with 1008"
                    );
                    link.control
                        .request_close(CloseCode::POLICY, "send queue exceeded: client too slow");
                }
            }
            Frame::Ack { conn_id, index } => {
                if let Some(link) = self.conns.borrow().get(&conn_id) {
                    link.last_acked.set(link.last_acked.get().max(index));
                }
            }
            Frame::Close {
                conn_id,
                code,
                reason,
            } => {
                let link = self.conns.borrow_mut().remove(&conn_id);
                if let Some(link) = link.filter(|l| Rc::ptr_eq(&l.actor.tunnel, tunnel)) {
                    link.actor.conns.borrow_mut().remove(&conn_id);
                    let code = if CloseCode(code).is_sendable() {
                        CloseCode(code)
                    } else {
                        CloseCode::INTERNAL
                    };
                    link.control.request_close(code, reason);
                }
            }
            Frame::ConnAccept {
                conn_id,
                protocol,
                hibernatable: _,
            } => {
                let Some(open) = self.pending_opens.borrow_mut().remove(&conn_id) else {
                    return Ok(());
                };
                open.actor.conns.borrow_mut().insert(conn_id);
                self.conns.borrow_mut().insert(
                    conn_id,
                    ClientLink {
                        control: open.control,
                        actor: open.actor,
                        last_acked: Cell::new(0),
                    },
                );
                open.answer.fill(OpenAnswer::Accepted { protocol });
            }
            Frame::ConnReject {
                conn_id,
                status,
                reason,
            } => {
                if let Some(open) = self.pending_opens.borrow_mut().remove(&conn_id) {
                    let status = if (400..600).contains(&status) {
                        status
                    } else {
                        500
                    };
                    open.answer.fill(OpenAnswer::Rejected { status, reason });
                }
            }
            Frame::ActorReady { actor_id } => {
                if let Some(actor) = self.actor_on(tunnel, actor_id) {
                    actor.state.set(ActorState::Running);
                    for slot in actor.ready.borrow_mut().drain(..) {
                        slot.fill(Ok(()));
                    }
                }
            }
            Frame::ActorStopped { actor_id, reason } => {
                if let Some(actor) = self.actor_on(tunnel, actor_id) {
                    debug!(actor = %actor.name, key = ?actor.key, %reason, "actor stopped");
                    self.remove_actor(
                        &actor,
                        CloseCode::INTERNAL,
                        &format!("actor stopped: {reason}"),
                    );
                }
            }
            Frame::SleepRequest { actor_id } => {
                // Hibernation is not built yet: a sleeping actor's clients are closed.
                if let Some(actor) = self.actor_on(tunnel, actor_id) {
                    tunnel.send(&Frame::StopActor { actor_id });
                    self.remove_actor(&actor, CloseCode::GOING_AWAY, "actor went to sleep");
                }
            }
            Frame::Keepalive { nonce } => tunnel.send(&Frame::KeepaliveAck { nonce }),
            Frame::KeepaliveAck { .. } => {}
            Frame::Drain => {
                info!(worker = self.worker_id, runner = %tunnel.runner_key, "runner draining: no new actors go there");
                tunnel.draining.set(true);
            }
            Frame::Hello { .. }
            | Frame::Welcome { .. }
            | Frame::StartActor { .. }
            | Frame::StopActor { .. }
            | Frame::ConnOpen { .. } => {
                return Err(TunnelError("frame type not allowed from a runner"));
            }
        }
        Ok(())
    }

    fn actor_on(&self, tunnel: &Rc<Tunnel>, actor_id: u64) -> Option<Rc<Actor>> {
        self.actors_by_id
            .borrow()
            .get(&actor_id)
            .filter(|a| Rc::ptr_eq(&a.tunnel, tunnel))
            .cloned()
    }

    /// The actor for `name`/`key`: the running or starting instance, or a
    /// new one started on the least loaded runner of `pool` that can run it.
    pub fn get_or_start(
        &self,
        name: &str,
        key: &[String],
        pool: &str,
        input: Bytes,
    ) -> Result<Rc<Actor>, Unavailable> {
        let k = (name.to_owned(), key.to_vec());
        if let Some(a) = self.actors_by_key.borrow().get(&k) {
            return Ok(a.clone());
        }
        let tunnels = self.tunnels.borrow();
        let in_pool: Vec<&Rc<Tunnel>> = tunnels
            .iter()
            .map(|(_, t)| t)
            .filter(|t| t.pool == pool)
            .collect();
        if in_pool.is_empty() {
            return Err(Unavailable::new(
                503,
                "no_runner",
                format!("no runner available in pool {pool}"),
            ));
        }
        if !in_pool
            .iter()
            .any(|t| t.actor_names.iter().any(|n| n == name))
        {
            return Err(Unavailable::new(
                404,
                "unknown_actor",
                format!("unknown actor {name}"),
            ));
        }
        let tunnel = in_pool
            .into_iter()
            .filter(|t| t.can_place(name))
            .min_by_key(|t| t.placed.get())
            .ok_or_else(|| {
                Unavailable::new(
                    503,
                    "no_capacity",
                    format!("no runner of pool {pool} has capacity for {name}"),
                )
            })?
            .clone();
        drop(tunnels);
        let actor = Rc::new(Actor {
            id: self.fresh_id(),
            name: name.to_owned(),
            key: key.to_vec(),
            tunnel: tunnel.clone(),
            state: Cell::new(ActorState::Starting),
            ready: RefCell::new(Vec::new()),
            conns: RefCell::new(HashSet::new()),
        });
        tunnel.placed.set(tunnel.placed.get() + 1);
        self.actors_by_key.borrow_mut().insert(k, actor.clone());
        self.actors_by_id
            .borrow_mut()
            .insert(actor.id, actor.clone());
        debug!(actor = %name, key = ?key, runner = %tunnel.runner_key, "starting actor");
        tunnel.send(&Frame::StartActor {
            actor_id: actor.id,
            name: name.to_owned(),
            key: key.to_vec(),
            input,
        });
        Ok(actor)
    }

    /// Resolves when the actor runs (immediately if it does already).
    pub fn when_ready(&self, actor: &Rc<Actor>) -> Option<Rc<ReadySlot>> {
        if actor.state.get() == ActorState::Running {
            return None;
        }
        let slot = Slot::new();
        actor.ready.borrow_mut().push(slot.clone());
        Some(slot)
    }

    /// An actor that did not become ready in time is given up on.
    pub fn abandon_start(&self, actor: &Rc<Actor>) {
        if actor.state.get() == ActorState::Starting
            && self.actors_by_id.borrow().contains_key(&actor.id)
        {
            actor.tunnel.send(&Frame::StopActor { actor_id: actor.id });
            self.remove_actor(actor, CloseCode::INTERNAL, "actor did not start in time");
        }
    }

    /// Asks the runner to accept a client connection for `actor`.
    pub fn open(
        &self,
        actor: &Rc<Actor>,
        control: Rc<ConnControl>,
        request: OpenRequest,
    ) -> (u64, Rc<Slot<OpenAnswer>>) {
        let conn_id = self.fresh_id();
        let answer = Slot::new();
        self.pending_opens.borrow_mut().insert(
            conn_id,
            PendingOpen {
                answer: answer.clone(),
                control,
                actor: actor.clone(),
            },
        );
        actor.tunnel.send(&Frame::ConnOpen {
            conn_id,
            actor_id: actor.id,
            path: request.path,
            query: request.query,
            headers: request.headers,
            protocols: request.protocols,
        });
        (conn_id, answer)
    }

    /// The runner did not answer an open in time.
    pub fn abandon_open(&self, conn_id: u64) {
        if let Some(open) = self.pending_opens.borrow_mut().remove(&conn_id) {
            open.actor.tunnel.send(&Frame::Close {
                conn_id,
                code: 1001,
                reason: "open timed out".into(),
            });
        }
    }

    /// The tunnel a client connection talks through, if it is still linked.
    pub fn tunnel_of(&self, conn_id: u64) -> Option<Rc<Tunnel>> {
        self.conns
            .borrow()
            .get(&conn_id)
            .map(|l| l.actor.tunnel.clone())
    }

    /// The client closed or went away: tell the runner, forget the link.
    pub fn client_closed(&self, conn_id: u64, code: u16, reason: &str) {
        let Some(link) = self.conns.borrow_mut().remove(&conn_id) else {
            return;
        };
        link.actor.conns.borrow_mut().remove(&conn_id);
        link.actor.tunnel.send(&Frame::Close {
            conn_id,
            code,
            reason: reason.to_owned(),
        });
    }
}

/// What the runner is told about a new client connection.
pub(crate) struct OpenRequest {
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, Bytes)>,
    pub protocols: Vec<String>,
}
