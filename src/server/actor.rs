//! One actor as a gateway worker tracks it: where it runs, what state its
//! life is in, and its crash-loop record. Transitions are driven by
//! `Mux` (docs/PROTOCOL.md §5 draws them).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Instant;

use super::backoff::CrashBackoff;
use super::slot::Slot;
use super::tunnel::Tunnel;

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
    /// Stopped on its runner; the gateway holds its hibernated connections.
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
    /// The runner-side id of the current incarnation (new at every start).
    pub id: Cell<u64>,
    pub name: String,
    pub key: Vec<String>,
    pub pool: String,
    pub tunnel: RefCell<Option<Rc<Tunnel>>>,
    pub state: Cell<ActorState>,
    /// Starting, Stopping, Placing: when to give up waiting.
    pub deadline: Cell<Option<Instant>>,
    /// Placing: not before this (crash backoff).
    pub not_before: Cell<Instant>,
    /// A runner to keep away from at the next placement (operator migrate).
    pub avoid: RefCell<Option<String>>,
    pub backoff: Cell<CrashBackoff>,
    /// How many bytes each connection may hold while the actor is not
    /// running: `wake_buffer_bytes` for a wake, `migration_buffer_bytes`
    /// for a move.
    pub hold_limit: Cell<usize>,
    /// Why the last placement attempt failed.
    pub last_refusal: RefCell<String>,
    pub ready: RefCell<Vec<Rc<ReadySlot>>>,
    pub conns: RefCell<HashSet<u64>>,
    pub last_activity: Cell<Instant>,
}

impl Actor {
    pub fn new(name: &str, key: &[String], pool: String, now: Instant, hold: usize) -> Self {
        Actor {
            id: Cell::new(0),
            name: name.to_owned(),
            key: key.to_vec(),
            pool,
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

    pub fn tunnel(&self) -> Option<Rc<Tunnel>> {
        self.tunnel.borrow().clone()
    }

    pub fn is_on(&self, tunnel: &Rc<Tunnel>) -> bool {
        self.tunnel
            .borrow()
            .as_ref()
            .is_some_and(|t| Rc::ptr_eq(t, tunnel))
    }
}
