//! The per-worker multiplexer: this worker's runner tunnels, the actors it
//! placed on them, and the client connections of those actors — including
//! actors that sleep while the gateway holds their hibernated connections,
//! and actors moving from one runner to another while their clients stay
//! connected.
//!
//! Everything here is owned by one worker thread. A client connection is
//! always served by its actor's home worker, and every runner keeps one
//! tunnel to every worker, so client ↔ actor traffic never crosses cores
//! (docs/ARCHITECTURE.md).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use slab::Slab;
use tracing::{debug, info, warn};

pub(crate) use super::actor::ReadySlot;
use super::actor::{Actor, ActorState, AfterStop};
use super::backoff::BackoffPolicy;
use super::outstanding::Outstanding;
use super::registry::ConnControl;
use super::slot::Slot;
pub(crate) use super::tunnel::{Tunnel, REPLACED};
use super::worker::WorkerStats;
use crate::config::Config;
use crate::http::route::actor_path;
use crate::tunnel::{Frame, MessageKind, TunnelError};
use crate::ws::{CloseCode, OpCode};

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
    Accepted { protocol: Option<String> },
    Rejected { status: u16, reason: String },
}

/// What the runner is told about a new client connection (and again, as a
/// restore, after the actor wakes or moves).
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

/// Kept per connection so that it can be restored into a woken or moved
/// actor. (The path is the actor's own and is rebuilt from its name and key.)
#[derive(Default)]
struct ConnMeta {
    query: Box<str>,
    headers: Box<[(String, Bytes)]>,
    protocol: Option<Box<str>>,
    attachment: Bytes,
}

struct ClientLink {
    control: Rc<ConnControl>,
    actor: Rc<Actor>,
    last_acked: Cell<u64>,
    hibernatable: bool,
    /// `None` when there is nothing to keep (no query, headers, protocol or
    /// attachment): the common case costs no allocation.
    meta: RefCell<Option<Box<ConnMeta>>>,
    /// Messages not acknowledged yet, and a close to deliver; `None` when
    /// there are none (every hibernated connection).
    outstanding: RefCell<Option<Box<Outstanding>>>,
}

impl ClientLink {
    fn outstanding_bytes(&self) -> usize {
        self.outstanding.borrow().as_ref().map_or(0, |o| o.bytes())
    }

    fn has_unsent(&self) -> bool {
        self.outstanding
            .borrow()
            .as_ref()
            .is_some_and(|o| o.has_unsent() || o.close.is_some())
    }

    fn is_closing(&self) -> bool {
        self.outstanding
            .borrow()
            .as_ref()
            .is_some_and(|o| o.close.is_some())
    }
}

/// An idle connection's buffer is freed past this capacity.
const KEEP_OUTSTANDING_CAPACITY: usize = 16 * 1024;

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

/// What became of an operator's request to move an actor.
pub(crate) enum MigrateOutcome {
    /// Stopping on its runner; it starts elsewhere when the runner confirms.
    Moving(Rc<ReadySlot>),
    NotFound,
    /// Asleep, already moving, or starting: nothing to move now.
    NotRunning(&'static str),
}

type ActorKey = (String, Vec<String>);

pub(crate) struct Mux {
    worker_id: usize,
    config: Arc<Config>,
    stats: Arc<WorkerStats>,
    backoff: BackoffPolicy,
    tunnels: RefCell<Slab<Rc<Tunnel>>>,
    actors_by_key: RefCell<HashMap<ActorKey, Rc<Actor>>>,
    /// Every actor that is not asleep, by its current id.
    actors_by_id: RefCell<HashMap<u64, Rc<Actor>>>,
    conns: RefCell<HashMap<u64, ClientLink>>,
    pending_opens: RefCell<HashMap<u64, PendingOpen>>,
    next_id: Cell<u64>,
    /// A coarse clock, advanced by the worker's timer sweep: activity
    /// tracking must not read the clock per message.
    clock: Cell<Instant>,
}

impl Mux {
    pub fn new(worker_id: usize, config: Arc<Config>, stats: Arc<WorkerStats>) -> Self {
        let a = &config.actors;
        let backoff = BackoffPolicy {
            initial: a.crash_backoff,
            max: a.crash_backoff_max,
            reset_after: a.crash_reset_after,
        };
        Mux {
            worker_id,
            config,
            stats,
            backoff,
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

    /// Reads the real clock (the coarse one may be stale after a long quiet
    /// spell, as sweeps only run when something is due).
    fn now(&self) -> Instant {
        let now = Instant::now();
        self.clock.set(now);
        now
    }

    // ---- tunnels -------------------------------------------------------

    /// A runner introduced itself on a tunnel. A tunnel of the same runner key
    /// already here is a zombie (the runner restarted): it is replaced, and
    /// its actors move.
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
        let tunnel = Rc::new(Tunnel::new(
            runner_key.clone(),
            pool.clone(),
            *capacity,
            actor_names.clone(),
            control,
            self.config.runners.max_send_queue_bytes,
        ));
        let key = self.tunnels.borrow_mut().insert(tunnel.clone());
        tunnel.slab_key.set(key);
        info!(worker = self.worker_id, runner = %runner_key, pool = %pool, capacity, actors = ?actor_names, "runner tunnel up");
        // Actors waiting for a runner of this pool need not wait for the sweep.
        super::registry::note_deadline(self.clock.get());
        Some(tunnel)
    }

    /// The tunnel is gone (closed, keepalive missed, replaced): every actor
    /// behind it moves to another runner of its pool, its clients staying
    /// connected; what it had not acknowledged is replayed there.
    pub fn remove_tunnel(&self, tunnel: &Rc<Tunnel>) {
        {
            let mut tunnels = self.tunnels.borrow_mut();
            let key = tunnel.slab_key.get();
            if !tunnels.get(key).is_some_and(|t| Rc::ptr_eq(t, tunnel)) {
                return;
            }
            tunnels.remove(key);
        }
        let actors = self.actors_on(tunnel);
        info!(worker = self.worker_id, runner = %tunnel.runner_key, actors = actors.len(), "runner tunnel down");
        for actor in actors {
            self.resend_all(&actor);
            match actor.state.get() {
                // It was leaving that runner anyway: the stop is as good as done.
                ActorState::Stopping(_) => self.on_stopped(&actor),
                _ => self.fail(&actor, "its runner went away"),
            }
        }
        tunnel.release_blocked();
    }

    /// Asks that no new actors go to `tunnel` and moves its actors away, one
    /// at a time; the runner gets `Drained` when none is left.
    fn drain_tunnel(&self, tunnel: &Rc<Tunnel>) {
        if !tunnel.draining.replace(true) {
            info!(worker = self.worker_id, runner = %tunnel.runner_key, "runner draining: moving its actors away");
        }
        self.continue_drain(tunnel);
    }

    fn continue_drain(&self, tunnel: &Rc<Tunnel>) {
        if !tunnel.draining.get() || tunnel.drained_sent.get() {
            return;
        }
        let actors = self.actors_on(tunnel);
        if actors
            .iter()
            .any(|a| matches!(a.state.get(), ActorState::Stopping(_)))
        {
            return; // one at a time: the next when this one has left
        }
        if let Some(next) = actors.first() {
            self.stats.migrations.fetch_add(1, Ordering::Relaxed);
            self.begin_stop(next, AfterStop::Migrate);
            return;
        }
        info!(worker = self.worker_id, runner = %tunnel.runner_key, "runner drained: told it may exit");
        tunnel.drained_sent.set(true);
        tunnel.send(&Frame::Drained);
    }

    /// An operator asked to drain the runner `key`. Returns how many actors
    /// this worker moves away from it, or `None` if it has no tunnel here.
    pub fn drain_runner(&self, key: &str) -> Option<usize> {
        let tunnel = self
            .tunnels
            .borrow()
            .iter()
            .find(|(_, t)| t.runner_key == key)
            .map(|(_, t)| t.clone())?;
        let moving = self.actors_on(&tunnel).len();
        self.drain_tunnel(&tunnel);
        Some(moving)
    }

    fn actors_on(&self, tunnel: &Rc<Tunnel>) -> Vec<Rc<Actor>> {
        let mut actors: Vec<Rc<Actor>> = self
            .actors_by_id
            .borrow()
            .values()
            .filter(|a| a.is_on(tunnel))
            .cloned()
            .collect();
        actors.sort_by_key(|a| a.id.get());
        actors
    }

    fn choose_tunnel(
        &self,
        name: &str,
        pool: &str,
        avoid: Option<&str>,
    ) -> Result<Rc<Tunnel>, Unavailable> {
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
        let placeable = || in_pool.iter().filter(|t| t.can_place(name));
        // Somewhere other than `avoid` if possible, else there after all.
        placeable()
            .filter(|t| avoid != Some(t.runner_key.as_str()))
            .min_by_key(|t| t.placed.get())
            .or_else(|| placeable().min_by_key(|t| t.placed.get()))
            .map(|t| (*t).clone())
            .ok_or_else(|| {
                Unavailable::new(
                    503,
                    "no_capacity",
                    format!("no runner of pool {pool} has capacity for {name}"),
                )
            })
    }

    // ---- actor lifecycle ----------------------------------------------

    /// The actor for `name`/`key`: the running, starting or moving instance,
    /// a sleeping one woken, or a new one started on the least loaded runner
    /// of its pool that can run it.
    pub fn get_or_start(&self, name: &str, key: &[String]) -> Result<Rc<Actor>, Unavailable> {
        let k = (name.to_owned(), key.to_vec());
        let existing = self.actors_by_key.borrow().get(&k).cloned();
        if let Some(actor) = existing {
            if actor.state.get() == ActorState::Asleep {
                self.wake(&actor);
                if actor.state.get() == ActorState::Asleep {
                    let reason = actor.last_refusal.borrow().clone();
                    return Err(Unavailable::new(503, "start_failed", reason));
                }
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
        let actor = Rc::new(Actor::new(
            name,
            key,
            pool,
            self.clock.get(),
            self.config.actors.wake_buffer_bytes,
        ));
        let tunnel = self.choose_tunnel(name, &actor.pool, None)?;
        self.start_on(&actor, &tunnel);
        self.actors_by_key.borrow_mut().insert(k, actor.clone());
        Ok(actor)
    }

    /// Sends StartActor; the actor is Starting until ready.
    fn start_on(&self, actor: &Rc<Actor>, tunnel: &Rc<Tunnel>) {
        let id = self.fresh_id();
        {
            let mut by_id = self.actors_by_id.borrow_mut();
            by_id.remove(&actor.id.get());
            by_id.insert(id, actor.clone());
        }
        actor.id.set(id);
        tunnel.placed.set(tunnel.placed.get() + 1);
        *actor.tunnel.borrow_mut() = Some(tunnel.clone());
        actor.state.set(ActorState::Starting);
        let now = self.now();
        // A running actor needs the sweep every tick (idle sleep, deadlines):
        // bring a sweep that sleeps until a far deadline forward.
        super::registry::note_deadline(now);
        actor
            .deadline
            .set(Some(now + self.config.actors.start_timeout));
        actor.last_activity.set(now);
        debug!(actor = %actor.name, key = ?actor.key, runner = %tunnel.runner_key, "starting actor");
        tunnel.send(&Frame::StartActor {
            actor_id: id,
            name: actor.name.clone(),
            key: actor.key.clone(),
            input: Bytes::new(),
        });
    }

    /// Starts the actor on a runner now if one can take it, or leaves it
    /// Placing (the sweep tries again each tick until its deadline). An
    /// actor name no runner of its pool knows fails at once.
    fn place(&self, actor: &Rc<Actor>) {
        let now = self.now();
        if actor.deadline.get().is_none() || actor.state.get() != ActorState::Placing {
            actor.deadline.set(Some(
                now.max(actor.not_before.get()) + self.config.actors.start_timeout,
            ));
        }
        actor.state.set(ActorState::Placing);
        self.actors_by_id
            .borrow_mut()
            .insert(actor.id.get(), actor.clone());
        super::registry::note_deadline(now);
        if now < actor.not_before.get() {
            return;
        }
        let avoid = actor.avoid.borrow().clone();
        match self.choose_tunnel(&actor.name, &actor.pool, avoid.as_deref()) {
            Ok(tunnel) => self.start_on(actor, &tunnel),
            Err(u) if u.status == 404 => {
                warn!(actor = %actor.name, key = ?actor.key, reason = %u.reason, "cannot start actor");
                self.remove_actor(actor, CloseCode::INTERNAL, &u.describe());
            }
            Err(u) => *actor.last_refusal.borrow_mut() = u.describe(),
        }
    }

    /// A message (or close) arrived for a sleeping actor: start it anywhere
    /// in its pool; its hibernated connections are restored when it is ready.
    fn wake(&self, actor: &Rc<Actor>) {
        debug!(actor = %actor.name, key = ?actor.key, connections = actor.conns.borrow().len(), "waking actor");
        actor.hold_limit.set(self.config.actors.wake_buffer_bytes);
        actor.not_before.set(self.clock.get());
        actor.deadline.set(None);
        self.place(actor);
    }

    /// The actor's runner died, or the actor stopped or failed to start on
    /// its own: start it elsewhere after its crash backoff.
    fn fail(&self, actor: &Rc<Actor>, why: &str) {
        if actor.conns.borrow().is_empty()
            && actor.ready.borrow().is_empty()
            && !self.has_pending_opens(actor)
        {
            // Nobody is connected or waiting: nothing to restart it for.
            debug!(actor = %actor.name, key = ?actor.key, %why, "actor failed with no clients: dropped");
            self.remove_actor(actor, CloseCode::INTERNAL, why);
            return;
        }
        let now = self.now();
        let mut backoff = actor.backoff.get();
        let wait = backoff.fail(now, &self.backoff);
        actor.backoff.set(backoff);
        self.leave_tunnel(actor);
        self.stats.failovers.fetch_add(1, Ordering::Relaxed);
        if backoff.is_crash_looping(now, &self.backoff) {
            self.stats
                .crash_loop_restarts
                .fetch_add(1, Ordering::Relaxed);
            warn!(actor = %actor.name, key = ?actor.key, failures = backoff.failures(now, &self.backoff), wait_ms = wait.as_millis() as u64, %why, "actor is crash-looping: backing off");
        } else {
            info!(actor = %actor.name, key = ?actor.key, %why, "moving actor to another runner");
        }
        actor
            .hold_limit
            .set(self.config.actors.migration_buffer_bytes);
        actor.not_before.set(now + wait);
        actor.deadline.set(None);
        self.place(actor);
    }

    fn has_pending_opens(&self, actor: &Rc<Actor>) -> bool {
        self.pending_opens
            .borrow()
            .values()
            .any(|p| Rc::ptr_eq(&p.actor, actor))
    }

    /// Detaches the actor from its runner (which no longer runs it).
    fn leave_tunnel(&self, actor: &Rc<Actor>) {
        if let Some(t) = actor.tunnel.borrow_mut().take() {
            t.placed.set(t.placed.get().saturating_sub(1));
        }
    }

    /// Every message the actor's connections sent goes again to its next runner.
    fn resend_all(&self, actor: &Actor) {
        let conns = self.conns.borrow();
        for id in actor.conns.borrow().iter() {
            if let Some(link) = conns.get(id) {
                if let Some(o) = link.outstanding.borrow_mut().as_deref_mut() {
                    o.resend_all();
                }
            }
        }
    }

    /// Asks the runner to stop the actor; what follows is `then`, once the
    /// runner confirms (everything it handled before is acknowledged by then).
    fn begin_stop(&self, actor: &Rc<Actor>, then: AfterStop) {
        let Some(tunnel) = actor.tunnel() else {
            return;
        };
        tunnel.send(&Frame::StopActor {
            actor_id: actor.id.get(),
        });
        actor.state.set(ActorState::Stopping(then));
        let limit = match then {
            AfterStop::Sleep => self.config.actors.wake_buffer_bytes,
            AfterStop::Migrate => self.config.actors.migration_buffer_bytes,
        };
        actor.hold_limit.set(limit);
        actor
            .deadline
            .set(Some(self.now() + self.config.actors.stop_timeout));
    }

    /// The runner stopped the actor (or is gone, or did not answer in time).
    fn on_stopped(&self, actor: &Rc<Actor>) {
        let ActorState::Stopping(then) = actor.state.get() else {
            return;
        };
        let old = actor.tunnel();
        self.leave_tunnel(actor);
        match then {
            AfterStop::Migrate => {
                actor.not_before.set(self.clock.get());
                actor.deadline.set(None);
                self.place(actor);
            }
            AfterStop::Sleep => self.fall_asleep(actor),
        }
        if let Some(old) = old {
            self.continue_drain(&old);
        }
    }

    fn fall_asleep(&self, actor: &Rc<Actor>) {
        self.actors_by_id.borrow_mut().remove(&actor.id.get());
        actor.state.set(ActorState::Asleep);
        actor.deadline.set(None);
        // A message, a close or a new client arrived while it was stopping.
        let woken_meanwhile = !actor.ready.borrow().is_empty() || {
            let conns = self.conns.borrow();
            actor
                .conns
                .borrow()
                .iter()
                .any(|id| conns.get(id).is_some_and(|l| l.has_unsent()))
        };
        if woken_meanwhile {
            return self.wake(actor);
        }
        // Let the hibernated sessions notice, so they park now; their
        // emptied buffers are given back.
        for id in actor.conns.borrow().iter() {
            if let Some(link) = self.conns.borrow().get(id) {
                let mut o = link.outstanding.borrow_mut();
                if o.as_ref().is_some_and(|o| o.is_empty()) {
                    *o = None;
                }
                if !link.control.is_parked() {
                    link.control.poke();
                }
            }
        }
        debug!(actor = %actor.name, key = ?actor.key, hibernated = actor.conns.borrow().len(), "actor asleep");
        self.drop_if_unused(actor);
    }

    fn on_ready(&self, actor: &Rc<Actor>) {
        actor.state.set(ActorState::Running);
        actor.deadline.set(None);
        actor.avoid.borrow_mut().take();
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
            // Then what was not acknowledged (a replay) and what was held, in order.
            for conn_id in &restored {
                let Some(link) = conns.get(conn_id) else {
                    continue;
                };
                let mut outstanding = link.outstanding.borrow_mut();
                let Some(o) = outstanding.as_deref_mut() else {
                    continue;
                };
                for (index, kind, payload) in o.unsent() {
                    tunnel.send_message(*conn_id, index, kind, payload);
                }
                o.mark_sent();
                if let Some((code, reason)) = o.close.take() {
                    tunnel.send(&Frame::Close {
                        conn_id: *conn_id,
                        code,
                        reason,
                    });
                    closed.push(*conn_id);
                }
            }
        }
        for conn_id in closed {
            self.forget_conn(conn_id);
        }
        // Opens sent to a runner that is gone go to this one.
        for (conn_id, open) in self.pending_opens.borrow().iter() {
            if Rc::ptr_eq(&open.actor, actor) {
                tunnel.send(&conn_open(*conn_id, actor, &open.request));
            }
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
        self.begin_stop(actor, AfterStop::Sleep);
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
        self.leave_tunnel(actor);
        actor.state.set(ActorState::Asleep);
        *actor.last_refusal.borrow_mut() = reason.to_owned();
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

    /// Whether any actor has a timer running (a deadline or idle sleep).
    pub fn needs_ticks(&self) -> bool {
        !self.actors_by_id.borrow().is_empty()
    }

    /// Timers of the actors: deadlines, placement retries and idle sleep.
    /// Called by the worker's sweep, which also advances the coarse clock.
    pub fn sweep(&self, now: Instant) {
        self.clock.set(now);
        let idle = self.config.actors.idle_timeout;
        let actors: Vec<Rc<Actor>> = self.actors_by_id.borrow().values().cloned().collect();
        for actor in actors {
            let overdue = actor.deadline.get().is_some_and(|d| now >= d);
            match actor.state.get() {
                ActorState::Placing if overdue => {
                    let reason = format!(
                        "no runner could take the actor within actors.start_timeout ({})",
                        actor.last_refusal.borrow()
                    );
                    warn!(actor = %actor.name, key = ?actor.key, %reason, "giving up on actor");
                    self.remove_actor(&actor, CloseCode::INTERNAL, &reason);
                }
                ActorState::Placing if now >= actor.not_before.get() => self.place(&actor),
                ActorState::Starting if overdue => {
                    if let Some(t) = actor.tunnel() {
                        t.send(&Frame::StopActor {
                            actor_id: actor.id.get(),
                        });
                    }
                    warn!(actor = %actor.name, key = ?actor.key, "actor did not start within actors.start_timeout");
                    if actor.conns.borrow().is_empty() {
                        self.remove_actor(
                            &actor,
                            CloseCode::INTERNAL,
                            "actor did not start within actors.start_timeout",
                        );
                    } else {
                        self.fail(&actor, "it did not start within actors.start_timeout");
                    }
                }
                ActorState::Stopping(_) if overdue => {
                    warn!(actor = %actor.name, key = ?actor.key, "runner did not confirm the stop within actors.stop_timeout");
                    self.resend_all(&actor);
                    self.on_stopped(&actor);
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
                    if all_hibernatable && !self.has_pending_opens(&actor) {
                        self.sleep(&actor);
                    }
                }
                _ => {}
            }
        }
        let draining: Vec<Rc<Tunnel>> = self
            .tunnels
            .borrow()
            .iter()
            .filter(|(_, t)| t.draining.get() && !t.drained_sent.get())
            .map(|(_, t)| t.clone())
            .collect();
        for t in draining {
            self.continue_drain(&t);
        }
    }

    // ---- operator requests -----------------------------------------------

    /// Moves a running actor to another runner (its clients stay connected).
    pub fn migrate(&self, name: &str, key: &[String]) -> MigrateOutcome {
        let Some(actor) = self
            .actors_by_key
            .borrow()
            .get(&(name.to_owned(), key.to_vec()))
            .cloned()
        else {
            return MigrateOutcome::NotFound;
        };
        if actor.state.get() != ActorState::Running {
            return MigrateOutcome::NotRunning(actor.state.get().name());
        }
        *actor.avoid.borrow_mut() = actor.tunnel().map(|t| t.runner_key.clone());
        self.stats.migrations.fetch_add(1, Ordering::Relaxed);
        let slot = Slot::new();
        actor.ready.borrow_mut().push(slot.clone());
        self.begin_stop(&actor, AfterStop::Migrate);
        MigrateOutcome::Moving(slot)
    }

    /// The actor's state as JSON for the admin API, or `None` if unknown.
    pub fn actor_status(&self, name: &str, key: &[String]) -> Option<String> {
        let actor = self
            .actors_by_key
            .borrow()
            .get(&(name.to_owned(), key.to_vec()))
            .cloned()?;
        let now = Instant::now();
        let backoff = actor.backoff.get();
        let runner = actor
            .tunnel()
            .map_or("null".to_owned(), |t| json_string(&t.runner_key));
        let restart_in_ms = (actor.state.get() == ActorState::Placing)
            .then(|| {
                actor
                    .not_before
                    .get()
                    .saturating_duration_since(now)
                    .as_millis()
            })
            .map_or("null".to_owned(), |ms| ms.to_string());
        Some(format!(
            "{{\"name\":{},\"key\":[{}],\"state\":\"{}\",\"runner\":{},\"connections\":{},\"failures\":{},\"crash_looping\":{},\"restart_in_ms\":{}}}",
            json_string(&actor.name),
            actor.key.iter().map(|k| json_string(k)).collect::<Vec<_>>().join(","),
            actor.state.get().name(),
            runner,
            actor.conns.borrow().len(),
            backoff.failures(now, &self.backoff),
            backoff.is_crash_looping(now, &self.backoff),
            restart_in_ms,
        ))
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
                let Some(link) = conns.get(&conn_id).filter(|l| l.actor.is_on(tunnel)) else {
                    return Ok(()); // closed meanwhile: nothing to deliver to
                };
                link.actor.last_activity.set(self.clock.get());
                self.deliver(link, kind, payload);
            }
            Frame::Ack { conn_id, index } => {
                if let Some(link) = self.conns.borrow().get(&conn_id) {
                    self.on_ack(link, index);
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
                    .is_some_and(|l| l.actor.is_on(tunnel));
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
                let Some(link) = conns.get(&conn_id).filter(|l| l.actor.is_on(tunnel)) else {
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
            } => self.on_accept(conn_id, protocol, hibernatable),
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
                    if actor.state.get() == ActorState::Starting {
                        self.on_ready(&actor);
                    }
                }
            }
            Frame::ActorStopped { actor_id, reason } => {
                if let Some(actor) = self.actor_on(tunnel, actor_id) {
                    match actor.state.get() {
                        ActorState::Stopping(_) => self.on_stopped(&actor),
                        _ => {
                            debug!(actor = %actor.name, key = ?actor.key, %reason, "actor stopped on its own");
                            self.resend_all(&actor);
                            self.fail(&actor, &format!("it stopped: {reason}"));
                        }
                    }
                }
            }
            Frame::SleepRequest { actor_id } => {
                if let Some(actor) = self.actor_on(tunnel, actor_id) {
                    self.sleep(&actor);
                }
            }
            Frame::Keepalive { nonce } => tunnel.send(&Frame::KeepaliveAck { nonce }),
            Frame::KeepaliveAck { .. } => {}
            Frame::Drain => self.drain_tunnel(tunnel),
            Frame::Hello { .. }
            | Frame::Welcome { .. }
            | Frame::StartActor { .. }
            | Frame::StopActor { .. }
            | Frame::ConnOpen { .. }
            | Frame::RestoreConn { .. }
            | Frame::Drained => {
                return Err(TunnelError("frame type not allowed from a runner"));
            }
        }
        Ok(())
    }

    fn on_ack(&self, link: &ClientLink, index: u64) {
        link.last_acked.set(link.last_acked.get().max(index));
        let mut outstanding = link.outstanding.borrow_mut();
        let Some(o) = outstanding.as_deref_mut() else {
            return;
        };
        let limit = self.config.actors.migration_buffer_bytes;
        let was_backlogged = o.bytes() >= limit;
        o.ack(index);
        if was_backlogged && o.bytes() < limit {
            link.control.poke(); // it stopped reading: it may go on
        }
        if o.is_empty() && o.capacity() > KEEP_OUTSTANDING_CAPACITY {
            *outstanding = None;
        }
    }

    fn on_accept(&self, conn_id: u64, protocol: Option<String>, hibernatable: Option<bool>) {
        let Some(open) = self.pending_opens.borrow_mut().remove(&conn_id) else {
            return;
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
                outstanding: RefCell::new(None),
            },
        );
        open.answer.fill(OpenAnswer::Accepted { protocol: chosen });
    }

    fn actor_on(&self, tunnel: &Rc<Tunnel>, actor_id: u64) -> Option<Rc<Actor>> {
        self.actors_by_id
            .borrow()
            .get(&actor_id)
            .filter(|a| a.is_on(tunnel))
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

    /// Asks the runner to accept a client connection for `actor` (sent when
    /// the actor runs, again if it moves before the runner answers).
    pub fn open(
        &self,
        actor: &Rc<Actor>,
        control: Rc<ConnControl>,
        request: OpenRequest,
    ) -> (u64, Rc<Slot<OpenAnswer>>) {
        let conn_id = self.fresh_id();
        let answer = Slot::new();
        if actor.state.get() == ActorState::Running {
            if let Some(tunnel) = actor.tunnel() {
                tunnel.send(&conn_open(conn_id, actor, &request));
            }
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
            ActorState::Running => match link.actor.tunnel() {
                Some(tunnel) => LinkView::Running {
                    tunnel,
                    backlogged: link.outstanding_bytes()
                        >= self.config.actors.migration_buffer_bytes,
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
            let conns = self.conns.borrow();
            let Some(link) = conns.get(&conn_id) else {
                return;
            };
            let actor = &link.actor;
            actor.last_activity.set(self.clock.get());
            let mut outstanding = link.outstanding.borrow_mut();
            let o = outstanding.get_or_insert_with(Default::default);
            if actor.state.get() == ActorState::Running {
                if let Some(t) = actor.tunnel() {
                    o.push(index, kind, payload);
                    o.mark_sent();
                    t.send_message(conn_id, index, kind, payload);
                }
                return;
            }
            if o.bytes() + payload.len() > actor.hold_limit.get() {
                link.control.request_close(
                    CloseCode::TRY_AGAIN_LATER,
                    "too much sent while the actor was starting or moving",
                );
                return;
            }
            o.push(index, kind, payload);
            actor.clone()
        };
        if actor.state.get() == ActorState::Asleep {
            self.wake(&actor);
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
            // A sleeping actor is woken to see an explicit close, if so configured.
            ActorState::Asleep if !(explicit && self.config.actors.wake_on_close) => {
                self.forget_conn(conn_id);
                self.drop_if_unused(&actor);
            }
            // The actor is (conceptually) alive: it sees the close after the
            // messages that came before it.
            _ => {
                if let Some(link) = self.conns.borrow().get(&conn_id) {
                    link.outstanding
                        .borrow_mut()
                        .get_or_insert_with(Default::default)
                        .close = Some((code, reason.to_owned()));
                }
                if actor.state.get() == ActorState::Asleep {
                    self.wake(&actor);
                }
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
            if let Some(link) = conns.get(id).filter(|l| !l.is_closing()) {
                delivered += usize::from(self.deliver(link, kind, payload.clone()));
            }
        }
        delivered
    }
}

fn conn_open(conn_id: u64, actor: &Actor, request: &OpenRequest) -> Frame {
    Frame::ConnOpen {
        conn_id,
        actor_id: actor.id.get(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers: request.headers.clone(),
        protocols: request.protocols.clone(),
    }
}

/// A JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
