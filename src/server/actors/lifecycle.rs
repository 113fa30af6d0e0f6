//! An actor's life on this worker: started on a runner, placed again after
//! a failure, stopped to sleep or to move, woken, given up.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::actor::{Actor, ActorState, AfterStop, ReadySlot};
use super::feed::EventKind;
use super::placement::choose_tunnel;
use super::unavailable::Unavailable;
use super::Actors;
use crate::http::route::ActorPath;
use crate::server::tunnels::{Reserved, Tunnel};
use crate::tunnel::{features, Frame};
use crate::ws::CloseCode;

impl Actors {
    /// The actor for `name`/`key`: the running, starting or moving instance,
    /// a sleeping one woken, or a new one started on the least loaded runner
    /// of its pool that can run it (if `creator` may create one now).
    pub fn get_or_start(
        &self,
        path: &ActorPath,
        creator: IpAddr,
    ) -> Result<Rc<Actor>, Unavailable> {
        self.get_or_start_as(path, Some(creator))
    }

    /// As `get_or_start`; `creator` `None` for another node's clients (that
    /// node counted them against their addresses' allowance already).
    pub(crate) fn get_or_start_as(
        &self,
        path: &ActorPath,
        creator: Option<IpAddr>,
    ) -> Result<Rc<Actor>, Unavailable> {
        if self.handing_over.get() {
            return Err(Unavailable::Upgrading);
        }
        let (ns, name, key) = (path.ns.as_str(), path.name.as_str(), path.key.as_slice());
        if let Some(actor) = self.directory.get(ns, name, key) {
            if actor.state() == ActorState::Asleep {
                self.wake(&actor);
                if actor.state() == ActorState::Asleep {
                    let reason = actor.last_refusal();
                    return Err(Unavailable::StartFailed { reason });
                }
            }
            return Ok(actor);
        }
        let pool = self.config().pool_of(ns, name).to_owned();
        let hold = self.config().actors.wake_buffer_bytes;
        let (now, stats) = (self.clock.get(), self.stats.clone());
        let actor = Rc::new(Actor::new(ns, name, key, pool, now, hold, stats));
        // In a cluster the directory decides first (`cluster.rs`).
        let local = match self.in_cluster() {
            true => Err(Unavailable::NoRunner {
                pool: String::new(),
            }),
            false => choose_tunnel(&self.tunnels, &actor, None),
        };
        let slot = match local {
            Ok(slot) => Some(slot),
            Err(_) if self.in_cluster() => None,
            Err(Unavailable::NoRunner { .. } | Unavailable::NoCapacity { .. })
                if self.serverless_pool_of(&actor).is_some() =>
            {
                None // it waits while the pool starts a runner
            }
            Err(u) => {
                if matches!(u, Unavailable::NoCapacity { .. }) {
                    self.stats.no_capacity.fetch_add(1, Ordering::Relaxed);
                }
                return Err(u);
            }
        };
        if slot.is_none() && !self.in_cluster() {
            if let Some(reason) = self.function_failing(&actor) {
                return Err(Unavailable::StartFailed { reason });
            }
        }
        // Counted only when an actor would really start (the slot goes
        // back if the address is over its allowance).
        let allowed = creator.is_none_or(|ip| self.creations.allow(ip, self.now()));
        if !allowed {
            self.stats.creations_refused.fetch_add(1, Ordering::Relaxed);
            return Err(Unavailable::TooManyNewActors);
        }
        match slot {
            Some(slot) => {
                self.start_on(&actor, slot);
                self.directory.insert(&actor);
            }
            None => {
                let (now, start_timeout) = (self.now(), self.start_wait(ns, name));
                actor.begin_placing(now, now, hold, start_timeout);
                self.directory.insert(&actor);
                self.place(&actor);
            }
        }
        self.note(EventKind::Start, &actor, None);
        Ok(actor)
    }

    /// Resolves when the actor runs (`None`: it does already).
    pub fn when_ready(&self, actor: &Rc<Actor>) -> Option<Rc<ReadySlot>> {
        (actor.state() != ActorState::Running).then(|| actor.wait_ready())
    }

    /// Sends StartActor on the runner where `slot` was taken; the actor is
    /// Starting until ready.
    pub(super) fn start_on(&self, actor: &Rc<Actor>, slot: Reserved) {
        let id = self.ids.fresh();
        self.directory.set_live(actor.id(), id, actor);
        let now = self.now();
        actor.begin_starting(id, slot, now, now + self.config().actors.start_timeout);
        let Some(tunnel) = actor.tunnel() else {
            return;
        };
        // A running actor needs the sweep every tick (idle sleep, deadlines):
        // bring a sweep that sleeps until a far deadline forward.
        self.wakeups.note_deadline(now);
        debug!(worker = self.worker_id, actor = %actor.name, key = ?actor.key, runner = %tunnel.runner_key, "starting actor");
        // A node tunnel serves every namespace: it is told which one.
        let name = match tunnel.peer_node() {
            Some(_) => {
                actor.note_placed_on_peer();
                format!("{}/{}", actor.ns, actor.name)
            }
            None => actor.name.clone(),
        };
        tunnel.send(&Frame::StartActor {
            actor_id: id,
            name,
            key: actor.key.clone(),
            input: Bytes::new(),
            output_seen: actor.output_seen(tunnel.features & features::CONN_MARKS != 0),
        });
        if tunnel.peer_node().is_some() {
            self.restore_on_peer(actor, &tunnel);
        } else {
            self.note_placement(actor, &tunnel.runner_key);
        }
    }

    /// To Placing (see `Actor::begin_placing`), then `place`; returns the
    /// runner the actor left.
    pub(super) fn replace(
        &self,
        actor: &Rc<Actor>,
        not_before: Instant,
        hold: usize,
    ) -> Option<Rc<Tunnel>> {
        let start_timeout = self.start_wait(&actor.ns, &actor.name);
        let left = actor.begin_placing(self.now(), not_before, hold, start_timeout);
        self.place(actor);
        left
    }

    /// Starts a Placing actor on a runner now if one can take it, or leaves
    /// it Placing (the sweep tries again each tick until its deadline). An
    /// actor name no runner of its pool knows fails at once.
    pub(super) fn place(&self, actor: &Rc<Actor>) {
        debug_assert_eq!(actor.state(), ActorState::Placing);
        let now = self.now();
        self.directory.set_live(actor.id(), actor.id(), actor);
        self.wakeups.note_deadline(now);
        if !actor.may_start(now) || self.starts_paused() {
            return;
        }
        // A pool mapping changed by a reload holds for every placement:
        // a woken, failed or moved actor goes where its name now maps.
        actor.set_pool(self.config().pool_of(&actor.ns, &actor.name));
        if self.place_in_cluster(actor) {
            return;
        }
        let avoid = actor.avoided_runner();
        match choose_tunnel(&self.tunnels, actor, avoid.as_deref()) {
            Ok(slot) => self.start_on(actor, slot),
            Err(unknown @ Unavailable::UnknownActor { .. }) => {
                warn!(actor = %actor.name, key = ?actor.key, reason = %unknown.reason(), "cannot start actor");
                self.remove_actor(actor, CloseCode::INTERNAL, &unknown.to_string());
            }
            Err(other @ (Unavailable::NoRunner { .. } | Unavailable::NoCapacity { .. })) => {
                match self.serverless_pool_of(actor) {
                    None => actor.set_refusal(other.to_string()),
                    Some(key) => match self.wait_for_function(&key) {
                        Ok(()) => actor.set_refusal(format!(
                            "waiting for a runner of serverless pool {}/{} to start",
                            key.0, key.1
                        )),
                        Err(reason) => {
                            warn!(actor = %actor.name, key = ?actor.key, %reason, "serverless start failed: giving the actor up");
                            self.remove_actor(actor, CloseCode::TRY_AGAIN_LATER, &reason);
                        }
                    },
                }
            }
            Err(other) => actor.set_refusal(other.to_string()),
        }
    }

    /// A message (or close) arrived for a sleeping actor: start it anywhere
    /// in its pool; its hibernated connections are restored when it is ready.
    pub(super) fn wake(&self, actor: &Rc<Actor>) {
        debug!(worker = self.worker_id, actor = %actor.name, key = ?actor.key, connections = actor.conns().len(), "waking actor");
        actor.note_wake(self.now());
        self.replace(
            actor,
            self.clock.get(),
            self.config().actors.wake_buffer_bytes,
        );
        self.note(EventKind::Wake, actor, None);
    }

    /// The actor's runner died, or the actor stopped or failed to start on
    /// its own: start it elsewhere after its crash backoff.
    pub(super) fn fail(&self, actor: &Rc<Actor>, why: &str) {
        let unused = actor.conns().is_empty() && !actor.has_requests();
        if unused && !actor.has_waiters() && !self.has_pending_opens(actor) {
            // Nobody is connected or waiting: nothing to restart it for.
            debug!(actor = %actor.name, key = ?actor.key, %why, "actor failed with no clients: dropped");
            self.remove_actor(actor, CloseCode::INTERNAL, why);
            return;
        }
        let now = self.now();
        let policy = self.backoff();
        let wait = actor.record_failure(now, &policy);
        self.stats.failovers.fetch_add(1, Ordering::Relaxed);
        if actor.backoff().is_crash_looping(now, &policy) {
            self.stats
                .crash_loop_restarts
                .fetch_add(1, Ordering::Relaxed);
            let failures = actor.backoff().failures(now, &policy);
            warn!(actor = %actor.name, key = ?actor.key, failures, wait_ms = wait.as_millis() as u64, %why, "actor is crash-looping: backing off");
        } else {
            info!(actor = %actor.name, key = ?actor.key, %why, "moving actor to another runner");
        }
        self.note(EventKind::Failover, actor, None);
        self.replace(
            actor,
            now + wait,
            self.config().actors.migration_buffer_bytes,
        );
    }

    /// Every message the actor's connections sent goes again to its next runner.
    /// (Its HTTP requests: PROTOCOL §7b, `requests.rs`.)
    pub(super) fn resend_all(&self, actor: &Rc<Actor>) {
        let links = self.links.borrow();
        for id in actor.conns().iter() {
            if let Some(link) = links.get(id) {
                link.resend_all();
            }
        }
        drop(links);
        self.requests_left_runner(actor);
    }

    /// Asks the runner to stop the actor; what follows is `then`, once the
    /// runner confirms (everything it handled before is acknowledged by then).
    pub(super) fn begin_stop(&self, actor: &Rc<Actor>, then: AfterStop) {
        let Some(tunnel) = actor.tunnel() else {
            return;
        };
        tunnel.send(&Frame::StopActor {
            actor_id: actor.id(),
        });
        let config = self.config();
        let a = &config.actors;
        let hold = match then {
            AfterStop::Sleep => a.wake_buffer_bytes,
            AfterStop::Migrate => a.migration_buffer_bytes,
        };
        let now = self.now();
        actor.begin_stopping(then, hold, now, now + a.stop_timeout);
    }

    /// The runner stopped the actor (or is gone, or did not answer in time).
    pub(super) fn on_stopped(&self, actor: &Rc<Actor>) {
        let ActorState::Stopping(then) = actor.state() else {
            return;
        };
        let old = match then {
            AfterStop::Migrate => self.replace(actor, self.clock.get(), actor.hold_limit()),
            AfterStop::Sleep => self.fall_asleep(actor),
        };
        if let Some(old) = old {
            self.continue_drain(&old);
        }
    }

    /// Stopping → Asleep; returns the runner it left.
    fn fall_asleep(&self, actor: &Rc<Actor>) -> Option<Rc<Tunnel>> {
        self.directory.set_not_live(actor.id());
        let left = actor.mark_asleep();
        // A message, a close or a new client arrived while it was stopping.
        if actor.has_waiters() || actor.has_requests() || self.any_unsent(actor) {
            self.wake(actor);
            return left;
        }
        // Let the hibernated sessions notice, so they park now; their
        // emptied buffers are given back.
        for id in actor.conns().iter() {
            if let Some(link) = self.links.borrow().get(id) {
                link.release_if_empty();
                if !link.control.is_parked() {
                    link.control.poke();
                }
            }
        }
        debug!(actor = %actor.name, key = ?actor.key, hibernated = actor.conns().len(), "actor asleep");
        self.note(EventKind::Sleep, actor, None);
        self.drop_if_unused(actor);
        left
    }

    fn any_unsent(&self, actor: &Actor) -> bool {
        let links = self.links.borrow();
        let conns = actor.conns();
        conns
            .iter()
            .any(|id| links.get(id).is_some_and(|l| l.has_unsent()))
    }

    /// Puts a running actor to sleep: the runner stops it; hibernatable
    /// connections stay open here, the others are closed with 1001.
    pub(super) fn sleep(&self, actor: &Rc<Actor>) {
        if actor.state() != ActorState::Running {
            return;
        }
        self.begin_stop(actor, AfterStop::Sleep);
        let awake_only: Vec<u64> = {
            let links = self.links.borrow();
            let conns = actor.conns();
            conns
                .iter()
                .copied()
                .filter(|id| links.get(id).is_some_and(|l| !l.hibernatable))
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
    pub(super) fn drop_if_unused(&self, actor: &Rc<Actor>) {
        if actor.state() == ActorState::Asleep && actor.conns().is_empty() {
            self.directory.forget(actor);
            self.forget_owner(actor);
        }
    }

    /// Gives the actor up: its clients are closed with `code`, whoever
    /// waits for it learns `reason`.
    pub(super) fn remove_actor(&self, actor: &Rc<Actor>, code: CloseCode, reason: &str) {
        self.directory.set_not_live(actor.id());
        self.directory.forget(actor);
        self.forget_owner(actor);
        let conn_ids = actor.discard(reason);
        {
            let mut links = self.links.borrow_mut();
            for id in conn_ids {
                if let Some(link) = links.remove(&id) {
                    link.control.request_close(code, reason);
                    self.admission.release(link.peer.ip());
                    self.note(EventKind::Close, actor, Some(id));
                }
            }
            self.count_links(&links);
        }
        self.reject_pending_opens(actor, reason);
        self.abort_requests(actor, reason);
    }
}
