//! One actor as a gateway worker tracks it: where it runs, what state its
//! life is in, its clients, and its crash-loop record. Its state changes
//! only through the methods here, which keep its rules (docs/PROTOCOL.md §5
//! draws the transitions):
//! - Starting, Running and Stopping have a runner; Placing and Asleep have none;
//! - Placing, Starting and Stopping have a deadline; Running and Asleep have none;
//! - a runner's count of placed actors counts exactly the actors on it.

use std::cell::{Cell, Ref, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::backoff::{BackoffPolicy, CrashBackoff};
use crate::server::conn::slot::Slot;
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
    pub fn name(self) -> &'static str {
        match self {
            ActorState::Placing => "placing",
            ActorState::Starting => "starting",
            ActorState::Running => "running",
            ActorState::Stopping(AfterStop::Sleep) => "stopping",
            ActorState::Stopping(AfterStop::Migrate) => "migrating",
            ActorState::Asleep => "asleep",
        }
    }
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
    last_activity: Cell<Instant>,
}

impl Actor {
    /// A new actor, not started yet (Asleep with no connections).
    pub fn new(
        ns: &str,
        name: &str,
        key: &[String],
        pool: String,
        now: Instant,
        hold: usize,
    ) -> Self {
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
            last_activity: Cell::new(now),
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

    /// To Starting as incarnation `id` on the runner where `slot` was
    /// taken, until `deadline`.
    pub fn begin_starting(&self, id: u64, slot: Reserved, now: Instant, deadline: Instant) {
        self.leave_tunnel();
        self.id.set(id);
        *self.tunnel.borrow_mut() = slot.keep();
        self.state.set(ActorState::Starting);
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
        self.state.set(ActorState::Placing);
        left
    }

    /// Records a failure; returns how long to wait before the next start.
    pub fn record_failure(&self, now: Instant, policy: &BackoffPolicy) -> Duration {
        let mut backoff = self.backoff.get();
        let wait = backoff.fail(now, policy);
        self.backoff.set(backoff);
        wait
    }

    /// Starting → Running: every waiter learns it runs.
    pub fn mark_running(&self) {
        self.state.set(ActorState::Running);
        self.deadline.set(None);
        self.avoid.borrow_mut().take();
        for slot in self.ready.borrow_mut().drain(..) {
            slot.fill(Ok(()));
        }
    }

    /// Running → Stopping until `deadline`, holding `hold_limit` bytes per
    /// connection meanwhile.
    pub fn begin_stopping(&self, then: AfterStop, hold_limit: usize, deadline: Instant) {
        self.state.set(ActorState::Stopping(then));
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
        self.state.set(ActorState::Asleep);
        self.deadline.set(None);
        left
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::conn::registry::Registry;
    use crate::server::tunnels::load::RunnerLoad;

    fn tunnel() -> Rc<Tunnel> {
        let registry = Rc::new(Registry::new(Rc::default()));
        let control = registry.register(Instant::now()).control.clone();
        let load = std::sync::Arc::new(RunnerLoad::new(10));
        let names = vec!["chat".into()];
        Rc::new(Tunnel::new(
            "r1".into(),
            "default".into(),
            names,
            control,
            1 << 20,
            load,
        ))
    }

    fn slot(t: &Rc<Tunnel>) -> Reserved {
        Reserved::on(t).expect("room on the runner")
    }

    fn actor(now: Instant) -> Actor {
        Actor::new(
            "default",
            "chat",
            &["lobby".into()],
            "default".into(),
            now,
            1024,
        )
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_start_counts_on_its_runner_until_the_actor_leaves() {
        let (t0, t) = (Instant::now(), tunnel());
        let a = actor(t0);
        a.begin_starting(7, slot(&t), t0, t0 + 10 * S);
        assert_eq!(
            (a.state(), a.id(), t.placed()),
            (ActorState::Starting, 7, 1)
        );
        assert!(a.is_on(&t) && !a.is_overdue(t0) && a.is_overdue(t0 + 10 * S));
        a.mark_running();
        assert!(!a.is_overdue(t0 + 100 * S), "running has no deadline");
        a.begin_stopping(AfterStop::Sleep, 99, t0 + 5 * S);
        assert_eq!(a.state().name(), "stopping");
        assert_eq!(a.hold_limit(), 99);
        a.mark_asleep();
        assert_eq!((a.state(), t.placed()), (ActorState::Asleep, 0));
        assert!(a.tunnel().is_none() && !a.is_overdue(t0 + 100 * S));
    }

    #[test]
    fn placing_leaves_the_runner_and_its_deadline_counts_from_the_backoff() {
        let (t0, t) = (Instant::now(), tunnel());
        let a = actor(t0);
        a.begin_starting(1, slot(&t), t0, t0 + 10 * S);
        let left = a.begin_placing(t0, t0 + 2 * S, 4096, 10 * S);
        assert!(left.is_some_and(|l| Rc::ptr_eq(&l, &t)));
        assert_eq!((a.state(), t.placed()), (ActorState::Placing, 0));
        assert!(a.tunnel().is_none());
        assert_eq!(a.hold_limit(), 4096);
        assert!(!a.may_start(t0) && a.may_start(t0 + 2 * S));
        assert!(!a.is_overdue(t0 + 11 * S) && a.is_overdue(t0 + 12 * S));
        // Starting again from Placing counts on the new runner only.
        a.begin_starting(2, slot(&t), t0 + 2 * S, t0 + 12 * S);
        assert_eq!(t.placed(), 1);
    }

    #[test]
    fn waiters_learn_whether_it_runs() {
        let t0 = Instant::now();
        let a = actor(t0);
        let slot = a.wait_ready();
        assert!(a.has_waiters());
        a.mark_running();
        assert!(!a.has_waiters());
        let b = actor(t0);
        let failed = b.wait_ready();
        b.add_conn(5);
        assert_eq!(b.discard("gone"), vec![5]);
        assert_eq!(b.last_refusal(), "gone");
        assert!(b.conns().is_empty());
        drop((slot, failed));
    }

    #[test]
    fn failures_back_off() {
        let t0 = Instant::now();
        let a = actor(t0);
        let policy = BackoffPolicy {
            initial: S,
            max: 10 * S,
            reset_after: 60 * S,
        };
        assert_eq!(a.record_failure(t0, &policy), Duration::ZERO);
        assert_eq!(a.record_failure(t0, &policy), S);
        assert_eq!(a.backoff().failures(t0, &policy), 2);
    }
}
