//! Operator requests about one actor (its status, moving it), and how many
//! runners each pool has (for `/metrics`).

use crate::http::route::ActorPath;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use super::actor::{ActorState, AfterStop, ReadySlot};
use super::feed::EventKind;
use super::Actors;
use std::rc::Rc;

/// What the admin API shows of an actor.
#[derive(Debug, Serialize)]
pub(crate) struct ActorStatus {
    pub name: String,
    pub key: Vec<String>,
    pub state: &'static str,
    /// The runner pool it is (or will next be) placed in.
    pub pool: String,
    pub runner: Option<String>,
    pub connections: usize,
    pub failures: u32,
    pub crash_looping: bool,
    /// Placing: how long until the next start may be tried.
    pub restart_in_ms: Option<u128>,
    /// Placing: why no runner took it yet (a serverless pool starting one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// What became of an operator's request to move an actor.
pub(crate) enum MigrateOutcome {
    /// Stopping on its runner; it starts elsewhere when the runner confirms.
    Moving(Rc<ReadySlot>),
    NotFound,
    /// Asleep, already moving, or starting: nothing to move now.
    NotRunning(&'static str),
}

impl Actors {
    /// The actor's state, or `None` if this worker does not know it.
    pub fn actor_status(&self, path: &ActorPath) -> Option<ActorStatus> {
        let actor = self.directory.get(&path.ns, &path.name, &path.key)?;
        let now = Instant::now();
        let (backoff, policy) = (actor.backoff(), self.backoff());
        let restart_in_ms = (actor.state() == ActorState::Placing).then(|| {
            actor
                .not_before()
                .saturating_duration_since(now)
                .as_millis()
        });
        let connections = actor.conns().len();
        let pool = actor.pool().clone();
        Some(ActorStatus {
            name: actor.name.clone(),
            key: actor.key.clone(),
            state: actor.state().name(),
            pool,
            runner: actor.tunnel().map(|t| t.runner_key.clone()),
            connections,
            failures: backoff.failures(now, &policy),
            crash_looping: backoff.is_crash_looping(now, &policy),
            restart_in_ms,
            waiting_for: (actor.state() == ActorState::Placing)
                .then(|| actor.last_refusal())
                .filter(|r| !r.is_empty()),
        })
    }

    /// How many runners have a tunnel up, by namespace and pool (every
    /// worker's runners: the count is shared).
    pub fn runners_by_pool(&self) -> std::collections::BTreeMap<(String, String), u64> {
        self.loads.runners_by_pool()
    }

    /// Moves a running actor to another runner (its clients stay connected).
    pub fn migrate(&self, path: &ActorPath) -> MigrateOutcome {
        let Some(actor) = self.directory.get(&path.ns, &path.name, &path.key) else {
            return MigrateOutcome::NotFound;
        };
        if actor.state() != ActorState::Running {
            return MigrateOutcome::NotRunning(actor.state().name());
        }
        actor.avoid_runner(actor.tunnel().map(|t| t.runner_key.clone()));
        self.stats.migrations.fetch_add(1, Ordering::Relaxed);
        self.note(EventKind::Migrate, &actor, None);
        let slot = actor.wait_ready();
        self.begin_stop(&actor, AfterStop::Migrate);
        MigrateOutcome::Moving(slot)
    }
}
