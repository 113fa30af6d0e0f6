//! The per-worker multiplexer: this worker's runner tunnels, the actors it
//! placed on them, and the client connections of those actors — including
//! actors that sleep while the gateway holds their hibernated connections.
//!
//! Everything here is owned by one worker thread. A client connection is
//! always served by its actor's home worker, and every runner keeps one
//! tunnel to every worker, so client ↔ actor traffic never crosses cores
//! (docs/ARCHITECTURE.md).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use slab::Slab;
use tracing::{debug, info, warn};

use super::registry::ConnControl;
use super::slot::Slot;
pub(crate) use super::tunnel::{Tunnel, REPLACED};
use crate::config::Config;
use crate::http::route::actor_path;
use crate::tunnel::{Frame, MessageKind, TunnelError};
use crate::ws::{CloseCode, OpCode};

/// Where a client connection's actor is, as its session needs to know once
/// per turn of its loop (one map look-up).
pub(crate) enum LinkView {
    /// Not linked (closed or being closed).
    Gone,
    Running(Rc<Tunnel>),
    /// Starting or waking: the connection's messages are held.
    Waking,
    /// Asleep with nothing held: the session may park.
    Hibernated,
}

/// Filled when a starting actor runs (or failed to start, with the reason).
pub(crate) type ReadySlot = Slot<Result<(), String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActorState {
    Starting,
    Running,
    /// Stopped on its runner; the gateway holds its hibernated connections.
    Asleep,
}

pub(crate) struct Actor {
    /// The runner-side id of the current incarnation (new at every start).
    id: Cell<u64>,
    pub name: String,
    pub key: Vec<String>,
    pool: String,
    tunnel: RefCell<Option<Rc<Tunnel>>>,
    state: Cell<ActorState>,
    start_deadline: Cell<Option<Instant>>,
    ready: RefCell<Vec<Rc<ReadySlot>>>,
    conns: RefCell<HashSet<u64>>,
    last_activity: Cell<Instant>,
}

impl Actor {
    fn tunnel(&self) -> Option<Rc<Tunnel>> {
        self.tunnel.borrow().clone()
    }
}

/// How the runner answered a connection open.
#[derive(Debug, Clone)]
pub(crate) enum OpenAnswer {
    Accepted { protocol: Option<String> },
    Rejected { status: u16, reason: String },
}

/// What the runner is told about a new client connection (and again, as a
/// restore, after the actor wakes).
pub(crate) struct OpenRequest {
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, Bytes)>,
    pub protocols: Vec<String>,
}

struct PendingOpen {
    answer: Rc<Slot<OpenAnswer>>,
    control: Rc<ConnControl>,
    actor: Rc<Actor>,
    request: OpenRequest,
}

/// Kept per connection so that it can be restored into a woken actor. (The
/// path is the actor's own and is rebuilt from its name and key.)
#[derive(Default)]
struct ConnMeta {
    query: Box<str>,
    headers: Box<[(String, Bytes)]>,
    protocol: Option<Box<str>>,
    attachment: Bytes,
}

/// Client messages (and a close) waiting for their actor to start.
#[derive(Default)]
struct Held {
    messages: VecDeque<(u64, MessageKind, Bytes)>,
    bytes: usize,
    close: Option<(u16, String)>,
}

struct ClientLink {
    control: Rc<ConnControl>,
    actor: Rc<Actor>,
    last_acked: Cell<u64>,
    hibernatable: bool,
    /// `None` when there is nothing to keep (no query, headers, protocol or
    /// attachment): the common case costs no allocation.
    meta: RefCell<Option<Box<ConnMeta>>>,
    held: RefCell<Option<Box<Held>>>,
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
    config: Arc<Config>,
    tunnels: RefCell<Slab<Rc<Tunnel>>>,
    actors_by_key: RefCell<HashMap<ActorKey, Rc<Actor>>>,
    actors_by_id: RefCell<HashMap<u64, Rc<Actor>>>,
    conns: RefCell<HashMap<u64, ClientLink>>,
    pending_opens: RefCell<HashMap<u64, PendingOpen>>,
    next_id: Cell<u64>,
    /// A coarse clock, advanced by the worker's timer sweep: activity
    /// tracking must not read the clock per message.
    clock: Cell<Instant>,
}

impl Mux {
    pub fn new(worker_id: usize, config: Arc<Config>) -> Self {
        Mux {
            worker_id,
            config,
            tunnels: RefCell::new(Slab::new()),
            actors_by_key: RefCell::new(HashMap::new()),
            actors_by_id: RefCell::new(HashMap::new()),
            conns: RefCell::new(HashMap::new()),
            pending_opens: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            clock: Cell::new(Instant::now()),
        }
    }

    /// Ids unique across the gateway: the worker id in the top byte.
    fn fresh_id(&self) -> u64 {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        ((self.worker_id as u64) << 56) | n
    }

    // ---- tunnels -------------------------------------------------------

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
            max_pending: self.config.runners.max_send_queue_bytes,
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

    /// The tunnel is gone: its running actors are gone with it, and so are
    /// their clients (live migration keeps them; it is not built yet).
    /// Sleeping actors are behind no tunnel and are not affected.
    pub fn remove_tunnel(&self, tunnel: &Rc<Tunnel>) {
        {
            let mut tunnels = self.tunnels.borrow_mut();
            let key = tunnel.slab_key.get();
            if !tunnels.get(key).is_some_and(|t| Rc::ptr_eq(t, tunnel)) {
                return;
            }
            tunnels.remove(key);
        }
        info!(worker = self.worker_id, runner = %tunnel.runner_key, "runner tunnel down");
        let actors: Vec<Rc<Actor>> = self
            .actors_by_id
            .borrow()
            .values()
            .filter(|a| a.tunnel().is_some_and(|t| Rc::ptr_eq(&t, tunnel)))
            .cloned()
            .collect();
        for actor in actors {
            self.remove_actor(&actor, CloseCode(1012), "the actor's runner went away");
        }
        tunnel.release_blocked();
    }

    fn choose_tunnel(&self, name: &str, pool: &str) -> Result<Rc<Tunnel>, Unavailable> {
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
        in_pool
            .into_iter()
            .filter(|t| t.can_place(name))
            .min_by_key(|t| t.placed.get())
            .cloned()
            .ok_or_else(|| {
                Unavailable::new(
                    503,
                    "no_capacity",
                    format!("no runner of pool {pool} has capacity for {name}"),
                )
            })
    }

    // ---- actor lifecycle ----------------------------------------------

    /// The actor for `name`/`key`: the running or starting instance, a
    /// sleeping one woken, or a new one started on the least loaded runner
    /// of its pool that can run it.
    pub fn get_or_start(&self, name: &str, key: &[String]) -> Result<Rc<Actor>, Unavailable> {
        let k = (name.to_owned(), key.to_vec());
        let existing = self.actors_by_key.borrow().get(&k).cloned();
        if let Some(actor) = existing {
            if actor.state.get() == ActorState::Asleep {
                self.wake(&actor)?;
            }
            return Ok(actor);
        }
        let pool = self
            .config
            .actors
            .pools
            .get(name)
            .cloned()
            .unwrap_or_else(|| "default".to_owned());
        let actor = Rc::new(Actor {
            id: Cell::new(0),
            name: name.to_owned(),
            key: key.to_vec(),
            pool,
            tunnel: RefCell::new(None),
            state: Cell::new(ActorState::Asleep),
            start_deadline: Cell::new(None),
            ready: RefCell::new(Vec::new()),
            conns: RefCell::new(HashSet::new()),
            last_activity: Cell::new(self.clock.get()),
        });
        self.start(&actor)?;
        self.actors_by_key.borrow_mut().insert(k, actor.clone());
        Ok(actor)
    }

    /// Sends StartActor to the best runner; the actor is Starting until ready.
    fn start(&self, actor: &Rc<Actor>) -> Result<(), Unavailable> {
        let tunnel = self.choose_tunnel(&actor.name, &actor.pool)?;
        let id = self.fresh_id();
        actor.id.set(id);
        tunnel.placed.set(tunnel.placed.get() + 1);
        *actor.tunnel.borrow_mut() = Some(tunnel.clone());
        actor.state.set(ActorState::Starting);
        // The coarse clock may be stale after a long quiet spell (sweeps only
        // run when something is due): read the real one here.
        let now = Instant::now();
        self.clock.set(now);
        // A running actor needs the sweep every tick (idle sleep, start
        // deadline): bring a sweep that sleeps until a far deadline forward.
        super::registry::note_deadline(now);
        actor
            .start_deadline
            .set(Some(now + self.config.actors.start_timeout));
        actor.last_activity.set(now);
        self.actors_by_id.borrow_mut().insert(id, actor.clone());
        debug!(actor = %actor.name, key = ?actor.key, runner = %tunnel.runner_key, "starting actor");
        tunnel.send(&Frame::StartActor {
            actor_id: id,
            name: actor.name.clone(),
            key: actor.key.clone(),
            input: Bytes::new(),
        });
        Ok(())
    }

    /// A message (or close) arrived for a sleeping actor: start it anywhere
    /// in its pool; its hibernated connections are restored when it is ready.
    fn wake(&self, actor: &Rc<Actor>) -> Result<(), Unavailable> {
        debug!(actor = %actor.name, key = ?actor.key, connections = actor.conns.borrow().len(), "waking actor");
        if let Err(u) = self.start(actor) {
            warn!(actor = %actor.name, key = ?actor.key, reason = %u.reason, "cannot wake actor");
            self.remove_actor(
                actor,
                CloseCode::INTERNAL,
                &format!("actor could not wake: {}", u.describe()),
            );
            return Err(u);
        }
        Ok(())
    }

    fn on_ready(&self, actor: &Rc<Actor>) {
        actor.state.set(ActorState::Running);
        actor.start_deadline.set(None);
        let Some(tunnel) = actor.tunnel() else { return };
        let restored: Vec<u64> = actor.conns.borrow().iter().copied().collect();
        let mut closed = Vec::new();
        {
            let conns = self.conns.borrow();
            // Every connection first, so that what the actor does with the
            // first held message (a broadcast, say) reaches all of them.
            for conn_id in &restored {
                let Some(link) = conns.get(conn_id) else {
                    continue;
                };
                let meta = link.meta.borrow();
                let meta = meta.as_deref();
                tunnel.send(&Frame::RestoreConn {
                    conn_id: *conn_id,
                    actor_id: actor.id.get(),
                    path: actor_path(&actor.name, &actor.key),
                    query: meta.map(|m| m.query.to_string()).unwrap_or_default(),
                    headers: meta.map(|m| m.headers.to_vec()).unwrap_or_default(),
                    protocol: meta.and_then(|m| m.protocol.as_deref()).map(str::to_owned),
                    attachment: meta.map(|m| m.attachment.clone()).unwrap_or_default(),
                    last_index: link.last_acked.get(),
                });
            }
            for conn_id in &restored {
                let Some(link) = conns.get(conn_id) else {
                    continue;
                };
                if let Some(held) = link.held.borrow_mut().take() {
                    for (index, kind, payload) in held.messages {
                        tunnel.send_message(*conn_id, index, kind, &payload);
                    }
                    if let Some((code, reason)) = held.close {
                        tunnel.send(&Frame::Close {
                            conn_id: *conn_id,
                            code,
                            reason,
                        });
                        closed.push(*conn_id);
                    }
                }
            }
        }
        for conn_id in closed {
            self.forget_conn(conn_id);
        }
        for slot in actor.ready.borrow_mut().drain(..) {
            slot.fill(Ok(()));
        }
    }

    /// Puts a running actor to sleep: the runner stops it; hibernatable
    /// connections stay open here, the others are closed with 1001.
    fn sleep(&self, actor: &Rc<Actor>) {
        if actor.state.get() != ActorState::Running {
            return;
        }
        if let Some(t) = actor.tunnel.borrow_mut().take() {
            t.send(&Frame::StopActor {
                actor_id: actor.id.get(),
            });
            t.placed.set(t.placed.get().saturating_sub(1));
        }
        self.actors_by_id.borrow_mut().remove(&actor.id.get());
        actor.state.set(ActorState::Asleep);
        let awake_only: Vec<u64> = {
            let conns = self.conns.borrow();
            actor
                .conns
                .borrow()
                .iter()
                .copied()
                .filter(|id| conns.get(id).is_some_and(|l| !l.hibernatable))
                .collect()
        };
        for id in awake_only {
            if let Some(link) = self.forget_conn(id) {
                link.control
                    .request_close(CloseCode::GOING_AWAY, "actor went to sleep");
            }
        }
        // Let the hibernated sessions notice, so they park now.
        for id in actor.conns.borrow().iter() {
            if let Some(link) = self.conns.borrow().get(id) {
                if !link.control.is_parked() {
                    link.control.poke();
                }
            }
        }
        debug!(actor = %actor.name, key = ?actor.key, hibernated = actor.conns.borrow().len(), "actor asleep");
        self.drop_if_unused(actor);
    }

    /// An actor with nothing running and nobody connected is forgotten.
    fn drop_if_unused(&self, actor: &Rc<Actor>) {
        if actor.state.get() == ActorState::Asleep && actor.conns.borrow().is_empty() {
            let key = (actor.name.clone(), actor.key.clone());
            let mut by_key = self.actors_by_key.borrow_mut();
            if by_key.get(&key).is_some_and(|a| Rc::ptr_eq(a, actor)) {
                by_key.remove(&key);
            }
        }
    }

    fn remove_actor(&self, actor: &Rc<Actor>, code: CloseCode, reason: &str) {
        self.actors_by_id.borrow_mut().remove(&actor.id.get());
        let key = (actor.name.clone(), actor.key.clone());
        {
            let mut by_key = self.actors_by_key.borrow_mut();
            if by_key.get(&key).is_some_and(|a| Rc::ptr_eq(a, actor)) {
                by_key.remove(&key);
            }
        }
        if let Some(t) = actor.tunnel.borrow_mut().take() {
            t.placed.set(t.placed.get().saturating_sub(1));
        }
        actor.state.set(ActorState::Asleep);
        for slot in actor.ready.borrow_mut().drain(..) {
            slot.fill(Err(reason.to_owned()));
        }
        let conn_ids: Vec<u64> = actor.conns.borrow_mut().drain().collect();
        {
            let mut conns = self.conns.borrow_mut();
            for id in conn_ids {
                if let Some(link) = conns.remove(&id) {
                    link.control.request_close(code, reason);
                }
            }
        }
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

    /// Resolves when the actor runs (immediately if it does already).
    pub fn when_ready(&self, actor: &Rc<Actor>) -> Option<Rc<ReadySlot>> {
        if actor.state.get() == ActorState::Running {
            return None;
        }
        let slot = Slot::new();
        actor.ready.borrow_mut().push(slot.clone());
        Some(slot)
    }

    /// Whether any actor has a timer running (a start deadline or idle sleep).
    pub fn needs_ticks(&self) -> bool {
        !self.actors_by_id.borrow().is_empty()
    }

    /// Timers of the actors: start deadlines and idle sleep. Called by the
    /// worker's sweep, which also advances the coarse clock.
    pub fn sweep(&self, now: Instant) {
        self.clock.set(now);
        let idle = self.config.actors.idle_timeout;
        let actors: Vec<Rc<Actor>> = self.actors_by_id.borrow().values().cloned().collect();
        for actor in actors {
            match actor.state.get() {
                ActorState::Starting if actor.start_deadline.get().is_some_and(|d| now >= d) => {
                    if let Some(t) = actor.tunnel() {
                        t.send(&Frame::StopActor {
                            actor_id: actor.id.get(),
                        });
                    }
                    warn!(actor = %actor.name, key = ?actor.key, "actor did not start within actors.start_timeout");
                    self.remove_actor(
                        &actor,
                        CloseCode::INTERNAL,
                        "actor did not start within actors.start_timeout",
                    );
                }
                ActorState::Running
                    if !idle.is_zero() && now.duration_since(actor.last_activity.get()) >= idle =>
                {
                    // Idle sleep never disconnects anyone: only actors whose
                    // connections can all hibernate are put to sleep.
                    let conns = self.conns.borrow();
                    let all_hibernatable = actor
                        .conns
                        .borrow()
                        .iter()
                        .all(|id| conns.get(id).is_some_and(|l| l.hibernatable));
                    drop(conns);
                    if all_hibernatable
                        && self
                            .pending_opens
                            .borrow()
                            .values()
                            .all(|p| !Rc::ptr_eq(&p.actor, &actor))
                    {
                        self.sleep(&actor);
                    }
                }
                _ => {}
            }
        }
    }

    // ---- frames from runners -------------------------------------------

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
                let Some(link) = conns.get(&conn_id).filter(|l| self.behind(l, tunnel)) else {
                    return Ok(()); // closed meanwhile: nothing to deliver to
                };
                link.actor.last_activity.set(self.clock.get());

                self.deliver(link, kind, payload);
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
                let behind = self
                    .conns
                    .borrow()
                    .get(&conn_id)
                    .is_some_and(|l| self.behind(l, tunnel));
                if let Some(link) = behind.then(|| self.forget_conn(conn_id)).flatten() {
                    let code = if CloseCode(code).is_sendable() {
                        CloseCode(code)
                    } else {
                        CloseCode::INTERNAL
                    };
                    link.control.request_close(code, reason);
                }
            }
            Frame::SetAttachment {
                conn_id,
                attachment,
            } => {
                let conns = self.conns.borrow();
                let Some(link) = conns.get(&conn_id).filter(|l| self.behind(l, tunnel)) else {
                    return Ok(());
                };
                if attachment.len() > self.config.actors.max_attachment_bytes {
                    warn!(
                        conn = conn_id,
                        bytes = attachment.len(),
                        "attachment over actors.max_attachment_bytes: ignored"
                    );
                } else {
                    link.meta
                        .borrow_mut()
                        .get_or_insert_with(Default::default)
                        .attachment = attachment;
                }
            }
            Frame::ConnAccept {
                conn_id,
                protocol,
                hibernatable,
            } => {
                let Some(open) = self.pending_opens.borrow_mut().remove(&conn_id) else {
                    return Ok(());
                };
                let hibernatable = hibernatable
                    .unwrap_or_else(|| self.config.actors.hibernatable.contains(&open.actor.name));
                let chosen = protocol.filter(|p| open.request.protocols.contains(p));
                open.actor.conns.borrow_mut().insert(conn_id);
                let meta = (!open.request.query.is_empty()
                    || !open.request.headers.is_empty()
                    || chosen.is_some())
                .then(|| {
                    Box::new(ConnMeta {
                        query: open.request.query.into(),
                        headers: open.request.headers.into(),
                        protocol: chosen.as_deref().map(Into::into),
                        attachment: Bytes::new(),
                    })
                });
                self.conns.borrow_mut().insert(
                    conn_id,
                    ClientLink {
                        control: open.control,
                        actor: open.actor,
                        last_acked: Cell::new(0),
                        hibernatable,
                        meta: RefCell::new(meta),
                        held: RefCell::new(None),
                    },
                );
                open.answer.fill(OpenAnswer::Accepted { protocol: chosen });
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
                    self.on_ready(&actor);
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
                if let Some(actor) = self.actor_on(tunnel, actor_id) {
                    self.sleep(&actor);
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
            | Frame::ConnOpen { .. }
            | Frame::RestoreConn { .. } => {
                return Err(TunnelError("frame type not allowed from a runner"));
            }
        }
        Ok(())
    }

    /// Whether the connection's actor currently lives behind `tunnel`.
    fn behind(&self, link: &ClientLink, tunnel: &Rc<Tunnel>) -> bool {
        link.actor
            .tunnel
            .borrow()
            .as_ref()
            .is_some_and(|t| Rc::ptr_eq(t, tunnel))
    }

    fn actor_on(&self, tunnel: &Rc<Tunnel>, actor_id: u64) -> Option<Rc<Actor>> {
        self.actors_by_id
            .borrow()
            .get(&actor_id)
            .filter(|a| a.tunnel().is_some_and(|t| Rc::ptr_eq(&t, tunnel)))
            .cloned()
    }

    /// Queues a message for a client; a client with too large a backlog is closed.
    fn deliver(&self, link: &ClientLink, kind: MessageKind, payload: Bytes) -> bool {
        let opcode = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        // One message alone never trips the limit (it is bounded by
        // max_message_bytes); a backlog behind it does.
        let len = payload.len();
        let queued = link.control.push_outbound((opcode, payload));
        if queued > self.config.client.max_send_queue_bytes && queued > len {
            warn!("client is not reading: send queue exceeded, closing with 1008");
            link.control
                .request_close(CloseCode::POLICY, "send queue exceeded: client too slow");
            return false;
        }
        true
    }

    // ---- client connections ---------------------------------------------

    /// Asks the runner to accept a client connection for `actor`.
    pub fn open(
        &self,
        actor: &Rc<Actor>,
        control: Rc<ConnControl>,
        request: OpenRequest,
    ) -> (u64, Rc<Slot<OpenAnswer>>) {
        let conn_id = self.fresh_id();
        let answer = Slot::new();
        if let Some(tunnel) = actor.tunnel() {
            tunnel.send(&Frame::ConnOpen {
                conn_id,
                actor_id: actor.id.get(),
                path: request.path.clone(),
                query: request.query.clone(),
                headers: request.headers.clone(),
                protocols: request.protocols.clone(),
            });
        }
        self.pending_opens.borrow_mut().insert(
            conn_id,
            PendingOpen {
                answer: answer.clone(),
                control,
                actor: actor.clone(),
                request,
            },
        );
        (conn_id, answer)
    }

    /// The runner did not answer an open in time.
    pub fn abandon_open(&self, conn_id: u64) {
        if let Some(open) = self.pending_opens.borrow_mut().remove(&conn_id) {
            if let Some(t) = open.actor.tunnel() {
                t.send(&Frame::Close {
                    conn_id,
                    code: 1001,
                    reason: "open timed out".into(),
                });
            }
        }
    }

    /// The tunnel a client connection talks through, if its actor runs.
    pub fn link_view(&self, conn_id: u64) -> LinkView {
        let conns = self.conns.borrow();
        let Some(link) = conns.get(&conn_id) else {
            return LinkView::Gone;
        };
        match link.actor.state.get() {
            ActorState::Running => link
                .actor
                .tunnel()
                .map_or(LinkView::Gone, LinkView::Running),
            ActorState::Asleep if link.held.borrow().is_none() => LinkView::Hibernated,
            _ => LinkView::Waking,
        }
    }

    /// A message from a client: to its actor now, or held while the actor
    /// starts (waking it if it sleeps).
    pub fn forward(&self, conn_id: u64, index: u64, kind: MessageKind, payload: &[u8]) {
        let actor = {
            let conns = self.conns.borrow();
            let Some(link) = conns.get(&conn_id) else {
                return;
            };
            let actor = link.actor.clone();
            actor.last_activity.set(self.clock.get());
            if actor.state.get() == ActorState::Running {
                if let Some(t) = actor.tunnel() {
                    t.send_message(conn_id, index, kind, payload);
                }
                return;
            }
            let mut held = link.held.borrow_mut();
            let held = held.get_or_insert_with(Default::default);
            if held.bytes + payload.len() > self.config.actors.wake_buffer_bytes {
                link.control.request_close(
                    CloseCode::TRY_AGAIN_LATER,
                    "too much sent while the actor was waking",
                );
                return;
            }
            held.bytes += payload.len();
            held.messages
                .push_back((index, kind, Bytes::copy_from_slice(payload)));
            actor
        };
        if actor.state.get() == ActorState::Asleep {
            let _ = self.wake(&actor);
        }
    }

    /// The client closed (`explicit`: with a close frame) or went away.
    pub fn client_closed(&self, conn_id: u64, code: u16, reason: &str, explicit: bool) {
        let Some(actor) = self.conns.borrow().get(&conn_id).map(|l| l.actor.clone()) else {
            return;
        };
        match actor.state.get() {
            ActorState::Running => {
                self.forget_conn(conn_id);
                if let Some(t) = actor.tunnel() {
                    t.send(&Frame::Close {
                        conn_id,
                        code,
                        reason: reason.to_owned(),
                    });
                }
            }
            // The actor is waking, or may be woken, so that it sees the close.
            ActorState::Starting | ActorState::Asleep
                if explicit && self.config.actors.wake_on_close =>
            {
                if let Some(link) = self.conns.borrow().get(&conn_id) {
                    link.held
                        .borrow_mut()
                        .get_or_insert_with(Default::default)
                        .close = Some((code, reason.to_owned()));
                }
                if actor.state.get() == ActorState::Asleep {
                    let _ = self.wake(&actor);
                }
            }
            ActorState::Starting | ActorState::Asleep => {
                self.forget_conn(conn_id);
                self.drop_if_unused(&actor);
            }
        }
    }

    fn forget_conn(&self, conn_id: u64) -> Option<ClientLink> {
        let link = self.conns.borrow_mut().remove(&conn_id)?;
        link.actor.conns.borrow_mut().remove(&conn_id);
        Some(link)
    }

    /// Delivers a message to every open connection of an actor, running or
    /// asleep, without starting it. Returns how many connections got it.
    pub fn publish(
        &self,
        name: &str,
        key: &[String],
        kind: MessageKind,
        payload: Bytes,
        only: &[u64],
    ) -> usize {
        let Some(actor) = self
            .actors_by_key
            .borrow()
            .get(&(name.to_owned(), key.to_vec()))
            .cloned()
        else {
            return 0;
        };
        let conns = self.conns.borrow();
        let mut delivered = 0;
        for id in actor.conns.borrow().iter() {
            if !only.is_empty() && !only.contains(id) {
                continue;
            }
            if let Some(link) = conns.get(id) {
                if link
                    .held
                    .borrow()
                    .as_ref()
                    .is_some_and(|h| h.close.is_some())
                {
                    continue;
                }
                delivered += usize::from(self.deliver(link, kind, payload.clone()));
            }
        }
        delivered
    }
}
