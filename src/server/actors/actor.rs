//! One actor as a gateway worker tracks it: where it runs, what state its
//! life is in, its clients, and its crash-loop record. Its state changes
//! only through the methods here, which keep its rules (docs/PROTOCOL.md §5
//! draws the transitions):
//! - Starting, Running and Stopping have a runner; Placing and Asleep have none;
//! - Placing, Starting and Stopping have a deadline; Running and Asleep have none;
//! - a runner's count of placed actors counts exactly the actors on it;
//! - its worker's count of actors by state (`/metrics`) counts it in its
//!   state, from its creation until it is dropped.

use std::cell::{Cell, Ref, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backoff::{BackoffPolicy, CrashBackoff};
use crate::server::conn::slot::Slot;
use crate::server::conn::stats::{WorkerStats, ACTOR_STATES};
use crate::server::tunnels::{release, Reserved, Tunnel};

/// Filled when a starting actor runs (or failed to start, with the reason).
pub(crate) type ReadySlot = Slot<Result<(), String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActorState {
    /// Waiting for a runner: after a failure (crash backoff), or because no
    /// runner of its pool had room yet. Its clients' messages are held.
    Placing,
    /// `StartActor` sent; waiting for `ActorReady`.
    Starting,
    Running,
    /// `StopActor` sent; waiting for the runner's `ActorStopped`, after which
    /// the actor sleeps or starts elsewhere.
    Stopping(AfterStop),
    /// Stopped on its runner (or never started); the gateway holds its
    /// hibernated connections.
    Asleep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterStop {
    Sleep,
    Migrate,
}

impl ActorState {
    /// Every state's name, in [`slot`](Self::slot) order.
    pub const NAMES: [&'static str; ACTOR_STATES] = [
        "placing",
        "starting",
        "running",
        "stopping",
        "migrating",
        "asleep",
    ];

    /// Its place in `NAMES` and in the worker's count of actors by state.
    pub fn slot(self) -> usize {
        match self {
            ActorState::Placing => 0,
            ActorState::Starting => 1,
            ActorState::Running => 2,
            ActorState::Stopping(AfterStop::Sleep) => 3,
            ActorState::Stopping(AfterStop::Migrate) => 4,
            ActorState::Asleep => 5,
        }
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self.slot()]
    }
}

/// Why an actor's clients wait for it to run again (measured when it does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// It was asleep: from the wake's trigger.
    Wake,
    /// It moves on purpose: from the stop on its old runner.
    Move,
}

pub(crate) struct Actor {
    /// Its namespace: only runners of the same namespace may run it.
    pub ns: String,
    pub name: String,
    pub key: Vec<String>,
    /// The runner pool it is placed in, looked up again at each placement
    /// (a reload may map its name to another).
    pool: RefCell<String>,
    /// The runner-side id of the current incarnation (new at every start).
    id: Cell<u64>,
    tunnel: RefCell<Option<Rc<Tunnel>>>,
    state: Cell<ActorState>,
    /// Placing, Starting, Stopping: when to give up waiting.
    deadline: Cell<Option<Instant>>,
    /// Placing: not before this (crash backoff).
    not_before: Cell<Instant>,
    /// A runner to keep away from at the next placement (operator migrate).
    avoid: RefCell<Option<String>>,
    backoff: Cell<CrashBackoff>,
    /// How many bytes each connection may hold while the actor is not
    /// running: `wake_buffer_bytes` for a wake, `migration_buffer_bytes`
    /// for a move.
    hold_limit: Cell<usize>,
    /// Why the last placement attempt failed.
    last_refusal: RefCell<String>,
    ready: RefCell<Vec<Rc<ReadySlot>>>,
    conns: RefCell<HashSet<u64>>,
    /// HTTP requests in flight to it (PROTOCOL §7b): like connections, they
    /// keep it from sleeping and from being dropped when it fails.
    requests: Cell<u32>,
    last_activity: Cell<Instant>,
    /// A wake or a move under way, and since when.
    paused: Cell<Option<(Instant, Pause)>>,
    /// The last `OutputMark` its runners sent, plus one (0: none yet):
    /// told to the next runner, which then knows whether the output of its
    /// last saved batches arrived (PROTOCOL §5a).
    output_seen: Cell<u64>,
    /// Every mark of its output this node received is in `output_seen`
    /// (false for an actor an upgrade handed over: marks are not).
    marks_known: Cell<bool>,
    /// Its marks came through another node (which relays its runner's):
    /// a runner that judges by `StartActor.output_seen` alone must not go
    /// by them (they are this node's share, not every node's).
    marks_via_peer: Cell<bool>,
    /// Its worker's counters: actors by state, wake and move pauses.
    stats: Arc<WorkerStats>,
}

impl Actor {
    /// Its runner's save `seq` reached this gateway with its output (a
    /// runner may mark an older save again when it resends its output).
    pub fn note_output_mark(&self, seq: u64, via_peer: bool) {
        let seen = self.output_seen.get().max(seq.saturating_add(1));
        self.output_seen.set(seen);
        self.marks_known.set(true);
        if !via_peer {
            self.marks_via_peer.set(false);
        }
    }

    /// It goes to another node's tunnel: marks come from there now.
    pub fn note_placed_on_peer(&self) {
        self.marks_via_peer.set(true);
    }

    /// Handed over by an upgrade: the marks the old process saw are not.
    pub fn forget_output_marks(&self) {
        self.output_seen.set(0);
        self.marks_known.set(false);
    }

    /// For `StartActor.output_seen`. A runner that takes
    /// `RestoreConn.output_seen` (`conn_marks`) is told there, per
    /// connection, what each one's gateway received ("none" and "not
    /// known" apart): the start says 0, and a restore that does not know
    /// is judged by its indices, not by this node's view. An older runner
    /// judges every restore by this one number, which marks that came
    /// through another node cannot be (they are this node's share only).
    pub fn output_seen(&self, conn_marks: bool) -> u64 {
        match (conn_marks, self.marks_via_peer.get()) {
            (true, _) | (false, true) => 0,
            (false, false) => self.output_seen.get(),
        }
    }

    /// What this node's own clients received of the actor's saved output
    /// (1: none of it; 0: unknown).
    pub fn output_seen_here(&self) -> u64 {
        match self.output_seen.get() {
            0 if self.marks_known.get() => 1,
            seen => seen,
        }
    }

    /// A new actor, not started yet (Asleep with no connections), counted
    /// in `stats` until it is dropped.
    pub fn new(
        ns: &str,
        name: &str,
        key: &[String],
        pool: String,
        now: Instant,
        hold: usize,
        stats: Arc<WorkerStats>,
    ) -> Self {
        stats.actors.add(ActorState::Asleep.slot());
        Actor {
            id: Cell::new(0),
            ns: ns.to_owned(),
            name: name.to_owned(),
            key: key.to_vec(),
            pool: RefCell::new(pool),
            tunnel: RefCell::new(None),
            state: Cell::new(ActorState::Asleep),
            deadline: Cell::new(None),
            not_before: Cell::new(now),
            avoid: RefCell::new(None),
            backoff: Cell::new(CrashBackoff::default()),
            hold_limit: Cell::new(hold),
            last_refusal: RefCell::new(String::new()),
            ready: RefCell::new(Vec::new()),
            conns: RefCell::new(HashSet::new()),
            requests: Cell::new(0),
            last_activity: Cell::new(now),
            paused: Cell::new(None),
            output_seen: Cell::new(0),
            marks_known: Cell::new(true),
            marks_via_peer: Cell::new(false),
            stats,
        }
    }

    // ---- what it is ----------------------------------------------------

    pub fn id(&self) -> u64 {
        self.id.get()
    }

    pub fn pool(&self) -> std::cell::Ref<'_, String> {
        self.pool.borrow()
    }

    /// Places it in `pool` from its next start on.
    pub fn set_pool(&self, pool: &str) {
        if *self.pool.borrow() != pool {
            *self.pool.borrow_mut() = pool.to_owned();
        }
    }

    pub fn state(&self) -> ActorState {
        self.state.get()
    }

    pub fn tunnel(&self) -> Option<Rc<Tunnel>> {
        self.tunnel.borrow().clone()
    }

    pub fn is_on(&self, tunnel: &Rc<Tunnel>) -> bool {
        self.tunnel
            .borrow()
            .as_ref()
            .is_some_and(|t| Rc::ptr_eq(t, tunnel))
    }

    /// Whether its deadline (Placing, Starting, Stopping) has passed.
    pub fn is_overdue(&self, now: Instant) -> bool {
        self.deadline.get().is_some_and(|d| now >= d)
    }

    /// Placing: whether its backoff allows a start at `now`.
    pub fn may_start(&self, now: Instant) -> bool {
        now >= self.not_before.get()
    }

    pub fn not_before(&self) -> Instant {
        self.not_before.get()
    }

    pub fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_activity.get())
    }

    pub fn hold_limit(&self) -> usize {
        self.hold_limit.get()
    }

    pub fn avoided_runner(&self) -> Option<String> {
        self.avoid.borrow().clone()
    }

    pub fn last_refusal(&self) -> String {
        self.last_refusal.borrow().clone()
    }

    pub fn backoff(&self) -> CrashBackoff {
        self.backoff.get()
    }

    // ---- its connections -------------------------------------------------

    pub fn conns(&self) -> Ref<'_, HashSet<u64>> {
        self.conns.borrow()
    }

    pub fn conn_ids(&self) -> Vec<u64> {
        self.conns.borrow().iter().copied().collect()
    }

    pub fn add_conn(&self, conn_id: u64) {
        self.conns.borrow_mut().insert(conn_id);
    }

    pub fn remove_conn(&self, conn_id: u64) {
        self.conns.borrow_mut().remove(&conn_id);
    }

    pub fn add_request(&self) {
        self.requests.set(self.requests.get() + 1);
    }

    pub fn remove_request(&self) {
        self.requests.set(self.requests.get().saturating_sub(1));
    }

    pub fn has_requests(&self) -> bool {
        self.requests.get() > 0
    }

    pub fn has_waiters(&self) -> bool {
        !self.ready.borrow().is_empty()
    }

    /// A slot filled when the actor runs, or fails to.
    pub fn wait_ready(&self) -> Rc<ReadySlot> {
        let slot = Slot::new();
        self.ready.borrow_mut().push(slot.clone());
        slot
    }

    /// Traffic from or to a client.
    pub fn touch(&self, now: Instant) {
        self.last_activity.set(now);
    }

    pub fn set_refusal(&self, reason: String) {
        *self.last_refusal.borrow_mut() = reason;
    }

    /// Keeps the next placement away from `runner_key` (operator migrate).
    pub fn avoid_runner(&self, runner_key: Option<String>) {
        *self.avoid.borrow_mut() = runner_key;
    }

    // ---- transitions -----------------------------------------------------

    /// Gives an actor that never ran here (taken over in an upgrade) an id
    /// of its own: the directory finds live actors by id.
    pub fn take_id(&self, id: u64) {
        debug_assert_eq!(self.state(), ActorState::Asleep);
        self.id.set(id);
    }

    /// To Starting as incarnation `id` on the runner where `slot` was
    /// taken, until `deadline`.
    pub fn begin_starting(&self, id: u64, slot: Reserved, now: Instant, deadline: Instant) {
        self.leave_tunnel();
        self.id.set(id);
        *self.tunnel.borrow_mut() = slot.keep();
        self.set_state(ActorState::Starting);
        self.deadline.set(Some(deadline));
        self.last_activity.set(now);
    }

    /// To Placing, off any runner: the next start may be tried from
    /// `not_before`, and is given up `start_timeout` after that; meanwhile
    /// each connection may hold `hold_limit` bytes. Returns the runner it left.
    pub fn begin_placing(
        &self,
        now: Instant,
        not_before: Instant,
        hold_limit: usize,
        start_timeout: Duration,
    ) -> Option<Rc<Tunnel>> {
        let left = self.leave_tunnel();
        self.not_before.set(not_before);
        self.hold_limit.set(hold_limit);
        self.deadline.set(Some(now.max(not_before) + start_timeout));
        self.set_state(ActorState::Placing);
        left
    }

    /// Records a failure; returns how long to wait before the next start.
    pub fn record_failure(&self, now: Instant, policy: &BackoffPolicy) -> Duration {
        let mut backoff = self.backoff.get();
        let wait = backoff.fail(now, policy);
        self.backoff.set(backoff);
        wait
    }

    /// A message, a close or a client arrived for it while asleep: its
    /// wake latency counts from `now` (from the first such trigger).
    pub fn note_wake(&self, now: Instant) {
        if self.paused.get().is_none() {
            self.paused.set(Some((now, Pause::Wake)));
        }
    }

    /// Starting → Running at `now`: every waiter learns it runs; a wake or
    /// a move that brought it here is measured.
    pub fn mark_running(&self, now: Instant) {
        self.set_state(ActorState::Running);
        if let Some((since, pause)) = self.paused.take() {
            let histogram = match pause {
                Pause::Wake => &self.stats.wake_latency,
                Pause::Move => &self.stats.migration_pause,
            };
            histogram.observe(now.saturating_duration_since(since));
        }
        self.deadline.set(None);
        self.avoid.borrow_mut().take();
        for slot in self.ready.borrow_mut().drain(..) {
            slot.fill(Ok(()));
        }
    }

    /// Running → Stopping at `now` until `deadline`, holding `hold_limit`
    /// bytes per connection meanwhile. A move's pause begins here: from now
    /// on its clients' messages are held.
    pub fn begin_stopping(
        &self,
        then: AfterStop,
        hold_limit: usize,
        now: Instant,
        deadline: Instant,
    ) {
        self.set_state(ActorState::Stopping(then));
        if then == AfterStop::Migrate {
            self.paused.set(Some((now, Pause::Move)));
        }
        self.hold_limit.set(hold_limit);
        self.deadline.set(Some(deadline));
    }

    /// The runner no longer runs it; returns the runner it left.
    fn leave_tunnel(&self) -> Option<Rc<Tunnel>> {
        let old = self.tunnel.borrow_mut().take();
        if let Some(t) = &old {
            release(t);
        }
        old
    }

    /// To Asleep (no runner, no deadline); returns the runner it left.
    pub fn mark_asleep(&self) -> Option<Rc<Tunnel>> {
        let left = self.leave_tunnel();
        self.set_state(ActorState::Asleep);
        self.deadline.set(None);
        self.paused.set(None);
        left
    }

    /// The only way its state changes: its worker's count follows.
    fn set_state(&self, next: ActorState) {
        let previous = self.state.replace(next);
        self.stats.actors.sub(previous.slot());
        self.stats.actors.add(next.slot());
    }

    /// Whoever waits for the actor to run learns it will not, and why.
    pub fn fail_waiters(&self, reason: &str) {
        for slot in self.ready.borrow_mut().drain(..) {
            slot.fill(Err(reason.to_owned()));
        }
    }

    /// Gives the actor up: waiters get `reason`; returns its connections,
    /// which the caller closes.
    pub fn discard(&self, reason: &str) -> Vec<u64> {
        self.mark_asleep();
        *self.last_refusal.borrow_mut() = reason.to_owned();
        for slot in self.ready.borrow_mut().drain(..) {
            slot.fill(Err(reason.to_owned()));
        }
        self.conns.borrow_mut().drain().collect()
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        self.stats.actors.sub(self.state.get().slot());
    }
}

#[cfg(test)]
mod tests;
