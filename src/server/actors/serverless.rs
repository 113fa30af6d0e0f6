//! Actors of serverless pools on this worker: an actor no runner of its
//! pool can take waits (Placing) while the pool starts runners, instead of
//! failing with no_runner; this worker tells the pool how many of its
//! actors wait, makes the starts that need on its own runtime, and drains
//! its tunnels of runners the pool retires (lifespan up, or idle).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::actor::{Actor, ActorState};
use super::Actors;
use crate::server::serverless::{spawn_start, Lifetime, PoolKey, PoolView, StartJob};
use crate::server::tunnels::Tunnel;

/// A worker tells a pool its count of waiting actors at most this often
/// from placements (its sweep tells it every tick): a burst of new actors
/// counts them once, not once each.
const REPORT_EVERY: Duration = Duration::from_millis(10);

/// How much longer than its pool's `start_timeout` an actor of a
/// serverless pool (and its client) waits at least: the start's failure is
/// seen by the next sweep, which gives the actor up with the reason.
pub(crate) const START_MARGIN: Duration = Duration::from_secs(1);

/// Each pool's `Pools::failing`, looked up once per sweep: a sweep
/// placing many waiting actors of a pool takes the shared mutex once for
/// them all, not once each. Outside a sweep every look-up is fresh.
#[derive(Default)]
pub(super) struct FailingOnce {
    sweeping: bool,
    known: HashMap<PoolKey, Option<String>>,
}

impl FailingOnce {
    /// A sweep begins: what was known is forgotten.
    pub fn begin(&mut self, _now: Instant) {
        self.sweeping = true;
        self.known.clear();
    }

    pub fn end(&mut self) {
        self.sweeping = false;
        self.known.clear();
    }

    pub fn get(
        &mut self,
        key: &PoolKey,
        lookup: impl FnOnce() -> Option<String>,
    ) -> Option<String> {
        if !self.sweeping {
            return lookup();
        }
        if let Some(known) = self.known.get(key) {
            return known.clone();
        }
        let found = lookup();
        self.known.insert(key.clone(), found.clone());
        found
    }
}

impl Actors {
    /// The serverless pool `actor` is placed in now, if its pool is one.
    pub(super) fn serverless_pool_of(&self, actor: &Actor) -> Option<PoolKey> {
        let pool = actor.pool().clone();
        let config = self.config();
        config.serverless_pool(&actor.ns, &pool)?;
        Some((actor.ns.clone(), pool))
    }

    /// How long an actor `name` of namespace `ns` waits to be placed and
    /// started (and its client for it): `actors.start_timeout`, or for an
    /// actor of a serverless pool at least the pool's `start_timeout` and
    /// `START_MARGIN`, so that a start that fails gives the client the
    /// pool's reason (503 start_failed), not the generic timeout.
    pub fn start_wait(&self, ns: &str, name: &str) -> Duration {
        let config = self.config();
        let base = config.actors.start_timeout;
        match config.serverless_pool(ns, config.pool_of(ns, name)) {
            Some(pool) => base.max(pool.start_timeout + START_MARGIN),
            None => base,
        }
    }

    /// Why a new actor of a serverless pool would wait in vain (its pool's
    /// starts fail), if it would.
    pub(super) fn function_failing(&self, actor: &Actor) -> Option<String> {
        let key = self.serverless_pool_of(actor)?;
        self.pools.failing(&key, self.now())
    }

    /// No runner of serverless pool `key` could take an actor: it may wait
    /// while runners start (`Ok`), or the pool's starts fail and it must
    /// give up with the reason (`Err`).
    pub(super) fn wait_for_function(&self, key: &PoolKey) -> Result<(), String> {
        let now = self.now();
        let failing = self
            .failing
            .borrow_mut()
            .get(key, || self.pools.failing(key, now));
        if let Some(reason) = failing {
            return Err(reason);
        }
        let last = self.reported.borrow().get(key).map(|(at, _)| *at);
        if last.is_none_or(|at| now.saturating_duration_since(at) >= REPORT_EVERY) {
            let waiting = self.waiting_in(key);
            self.report_waiting(key, waiting, now);
        }
        Ok(())
    }

    /// This worker's actors of pool `key` waiting for a runner.
    fn waiting_in(&self, key: &PoolKey) -> u32 {
        let live = self.directory.live();
        let waiting = live
            .iter()
            .filter(|a| a.state() == ActorState::Placing && a.ns == key.0 && *a.pool() == key.1);
        waiting.count() as u32
    }

    fn report_waiting(&self, key: &PoolKey, waiting: u32, now: Instant) {
        self.reported
            .borrow_mut()
            .insert(key.clone(), (now, waiting));
        let jobs = self.pools.demand(self.worker_id, key, waiting, now);
        self.make_starts(jobs);
    }

    fn make_starts(&self, jobs: Vec<StartJob>) {
        for job in jobs {
            tracing::info!(worker = self.worker_id, runner = %job.order.key, pool = %job.pool.label(), "starting a serverless runner");
            spawn_start(&self.pools, job);
        }
    }

    /// The sweep's part: every pool this worker has waiting actors in (or
    /// had) hears the count; the pools' timers run; tunnels of runners
    /// that retire are drained here.
    pub(super) fn sweep_serverless(&self, now: Instant) {
        // Handing over (or taking over): the waiting actors are the next
        // process's to place; a start made now would be lost with this one.
        if !self.starts_paused() {
            self.report_and_tick(now);
        }
        let retiring: Vec<Rc<Tunnel>> = self
            .started
            .borrow()
            .iter()
            .filter(|(t, life)| life.is_retiring() && !t.drain_requested())
            .map(|(t, _)| t.clone())
            .collect();
        for tunnel in retiring {
            self.drain_tunnel(&tunnel);
        }
    }

    /// Tells every pool this worker's waiting count and runs the pools'
    /// timers, making the starts they call for.
    fn report_and_tick(&self, now: Instant) {
        let mut counts: HashMap<PoolKey, u32> = Default::default();
        for key in self.reported.borrow().keys() {
            counts.insert(key.clone(), 0);
        }
        for actor in self.directory.live() {
            if actor.state() == ActorState::Placing {
                if let Some(key) = self.serverless_pool_of(&actor) {
                    *counts.entry(key).or_default() += 1;
                }
            }
        }
        for (key, waiting) in counts {
            if waiting == 0 {
                self.reported.borrow_mut().remove(&key);
                let jobs = self.pools.demand(self.worker_id, &key, 0, now);
                self.make_starts(jobs); // min_idle_runners may still want one
            } else {
                self.report_waiting(&key, waiting, now);
            }
        }
        let jobs = self.pools.tick(now);
        self.make_starts(jobs);
    }

    /// Whether the sweep must tick for serverless pools: started runners
    /// exist (their retirement is timed) anywhere, or a pool keeps
    /// `min_idle_runners` (started with no demand).
    pub(super) fn serverless_needs_ticks(&self) -> bool {
        self.pools.active() > 0 || self.pools.keeps_idle_runners()
    }

    /// A runner's hello named runner `key` in `pool`: if the gateway
    /// started it, its lifetime and the slots it may take.
    pub(super) fn started_runner(&self, pool: &PoolKey, key: &str) -> Option<(Arc<Lifetime>, u32)> {
        self.pools.registered(pool, key, self.now())
    }

    /// Keeps `tunnel` of a started runner, to drain it when it retires.
    pub(super) fn keep_started(
        &self,
        tunnel: &Rc<Tunnel>,
        lifetime: Arc<Lifetime>,
        load: &Arc<crate::server::tunnels::load::RunnerLoad>,
    ) {
        self.pools.attach_load(&lifetime, load);
        self.started.borrow_mut().push((tunnel.clone(), lifetime));
    }

    /// The tunnel is gone.
    pub(super) fn forget_started(&self, tunnel: &Rc<Tunnel>) {
        self.started
            .borrow_mut()
            .retain(|(t, _)| !Rc::ptr_eq(t, tunnel));
    }

    /// Every serverless pool's state (for `/metrics`).
    pub fn serverless_pools(&self) -> Vec<PoolView> {
        self.pools.views()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_sweep_looks_up_each_pools_failure_once_however_many_actors_wait() {
        let mut once = FailingOnce::default();
        let lookups = Cell::new(0);
        let lookup = || {
            lookups.set(lookups.get() + 1);
            Some("connection refused".to_owned())
        };
        let (a, b): (PoolKey, PoolKey) = (("ns".into(), "a".into()), ("ns".into(), "b".into()));
        let t0 = Instant::now();
        once.begin(t0);
        for _ in 0..1000 {
            assert_eq!(once.get(&a, lookup).as_deref(), Some("connection refused"));
        }
        let _ = once.get(&b, lookup);
        assert_eq!(lookups.get(), 2, "once per pool in a sweep");
        once.end();
        let _ = once.get(&a, lookup);
        let _ = once.get(&a, lookup);
        assert_eq!(lookups.get(), 4, "outside a sweep, every time");
        once.begin(t0 + Duration::from_millis(100));
        let _ = once.get(&a, lookup);
        assert_eq!(lookups.get(), 5, "the next sweep looks again");
    }
}
