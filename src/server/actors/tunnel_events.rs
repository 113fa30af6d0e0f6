//! Runner tunnels coming, going and draining, as they affect actors: a
//! tunnel that goes away moves its actors; a draining one sends them away
//! one at a time and tells the runner when it may exit.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::actor::{ActorState, AfterStop};
use super::feed::EventKind;
use super::Actors;
use crate::server::conn::control::ConnControl;
use crate::server::tunnels::{Tunnel, REPLACED};
use crate::ws::CloseCode;

/// What a runner said in its hello.
pub(crate) struct RunnerHello {
    pub runner_key: String,
    pub pool: String,
    pub capacity: u32,
    pub actor_names: Vec<String>,
    /// Whose token the runner presented.
    pub identity: String,
    /// The namespace whose actors it runs.
    pub namespace: String,
    /// The features it announced (`tunnel::features`).
    pub features: u64,
}

impl Actors {
    /// A runner introduced itself on a tunnel. A tunnel of the same runner key
    /// already here is a zombie (the runner restarted): it is replaced, and
    /// its actors move.
    /// Refused (with why) when another identity holds the runner key, or
    /// when the hello names a serverless pool with a key that is none of
    /// its starts (closed 4403; `tether_serverless_runners_refused_total`).
    pub fn add_tunnel(
        &self,
        hello: RunnerHello,
        control: Rc<ConnControl>,
    ) -> Result<Rc<Tunnel>, String> {
        let old = self
            .tunnels
            .by_runner_key(&hello.namespace, &hello.runner_key);
        if let Some(old) = &old {
            if old.identity != hello.identity {
                warn!(worker = self.worker_id, runner = ?hello.runner_key, holder = %old.identity, claimant = %hello.identity, "runner key held by another identity: refused");
                return Err(format!(
                    "runner key {:?} is held by another identity",
                    hello.runner_key
                ));
            }
        }
        let runs = (hello.namespace.clone(), hello.pool.clone());
        // A runner the gateway started takes the pool's slots at most.
        let started = self.started_runner(&runs, &hello.runner_key);
        if started.is_none() && self.config().serverless_pool(&runs.0, &runs.1).is_some() {
            // Not one of the pool's starts (a dial-back after its start
            // failed, a key the function made up, a runner from before an
            // upgrade): it would be untracked — no lifespan, no slot cap,
            // not in max_runners — and its actors would die undrained.
            warn!(worker = self.worker_id, runner = %hello.runner_key, pool = %hello.pool, "runner key is none of the serverless pool's starts: refused");
            return Err(format!(
                "runner key {:?} is not a runner the gateway started for serverless pool {}/{}",
                hello.runner_key, runs.0, runs.1
            ));
        }
        if let Some(old) = old {
            info!(worker = self.worker_id, runner = %hello.runner_key, "runner reconnected: replacing its previous tunnel");
            let reason = "replaced by a newer connection of the same runner key";
            old.control.request_close(REPLACED, reason);
            self.remove_tunnel(&old);
        }
        let max_pending = self.config().runners.max_send_queue_bytes;
        let RunnerHello {
            runner_key,
            pool,
            capacity,
            actor_names,
            identity,
            namespace,
            features,
        } = hello;
        info!(worker = self.worker_id, runner = %runner_key, pool = %pool, capacity, actors = ?actor_names, "runner tunnel up");
        // The gateway's cap (runners.max_actors_per_runner) is the loads'.
        let capacity = started
            .as_ref()
            .map_or(capacity, |(_, slots)| capacity.min(*slots));
        let load = self
            .loads
            .for_runner(&identity, &runner_key, runs, capacity);
        let shared = load.clone();
        let mut tunnel = Tunnel::new(runner_key, pool, actor_names, control, max_pending, load);
        tunnel.identity = identity;
        tunnel.namespace = namespace;
        tunnel.features = features & crate::tunnel::features::SUPPORTED;
        let tunnel = Rc::new(tunnel);
        if let Some((lifetime, _)) = started {
            // A late tunnel of a retiring runner takes no actor, not even
            // from the place_waiting that follows its welcome: draining
            // from now (told Drained by the sweep, after the welcome).
            if lifetime.is_retiring() && tunnel.start_draining() {
                info!(worker = self.worker_id, runner = %tunnel.runner_key, "retiring runner's tunnel: draining it");
                self.note_runner(EventKind::Drain, &tunnel);
            }
            self.keep_started(&tunnel, lifetime, &shared);
        }
        self.tunnels.insert(&tunnel);
        self.record_runner(&tunnel, true);
        self.stats.tunnels.fetch_add(1, Ordering::Relaxed);
        Ok(tunnel)
    }

    /// A runner is here (its tunnel welcomed): actors waiting for one start
    /// now rather than at the sweep's next tick (up to half a second away),
    /// which is most of a failover's or an upgrade's pause.
    pub fn place_waiting(&self) {
        let now = self.now();
        for actor in self.directory.live() {
            if actor.state() == ActorState::Placing && actor.may_start(now) {
                self.place(&actor);
            }
        }
    }

    /// The tunnel is gone (closed, keepalive missed, replaced): every actor
    /// behind it moves to another runner of its pool, its clients staying
    /// connected; what it had not acknowledged is replayed there.
    pub fn remove_tunnel(&self, tunnel: &Rc<Tunnel>) {
        if !self.tunnels.remove(tunnel) {
            return;
        }
        self.record_runner(tunnel, false);
        self.stats.tunnels.fetch_sub(1, Ordering::Relaxed);
        self.forget_started(tunnel);
        let actors = self.directory.on_tunnel(tunnel);
        info!(worker = self.worker_id, runner = %tunnel.runner_key, actors = actors.len(), "runner tunnel down");
        for actor in actors {
            self.resend_all(&actor);
            match actor.state() {
                // It was leaving that runner anyway: the stop is as good as done.
                ActorState::Stopping(_) => self.on_stopped(&actor),
                _ => self.fail(&actor, "its runner went away"),
            }
        }
        tunnel.release_blocked();
    }

    /// Closes the tunnels `which` picks with `code` and `reason`; their
    /// actors move at once, as when a runner goes away. Returns how many.
    pub fn close_tunnels(
        &self,
        which: impl Fn(&Tunnel) -> bool,
        code: CloseCode,
        reason: &str,
    ) -> usize {
        let closing = self.tunnels.filter(which);
        for tunnel in &closing {
            warn!(worker = self.worker_id, runner = %tunnel.runner_key, identity = %tunnel.identity, %reason, "closing runner tunnel");
            tunnel.control.request_close(code, reason);
            self.remove_tunnel(tunnel);
        }
        closing.len()
    }

    /// Asks that no new actors go to `tunnel` and moves its actors away, one
    /// at a time; the runner gets `Drained` when none is left.
    pub(super) fn drain_tunnel(&self, tunnel: &Rc<Tunnel>) {
        if tunnel.start_draining() {
            info!(worker = self.worker_id, runner = %tunnel.runner_key, "runner draining: moving its actors away");
            self.note_runner(EventKind::Drain, tunnel);
        }
        self.continue_drain(tunnel);
    }

    pub(super) fn continue_drain(&self, tunnel: &Rc<Tunnel>) {
        if !tunnel.is_draining() {
            return;
        }
        let actors = self.directory.on_tunnel(tunnel);
        if actors
            .iter()
            .any(|a| matches!(a.state(), ActorState::Stopping(_)))
        {
            return; // one at a time: the next when this one has left
        }
        if let Some(next) = actors.first() {
            self.stats.migrations.fetch_add(1, Ordering::Relaxed);
            self.note(EventKind::Migrate, next, None);
            self.begin_stop(next, AfterStop::Migrate);
            return;
        }
        info!(worker = self.worker_id, runner = %tunnel.runner_key, "runner drained: told it may exit");
        tunnel.send_drained();
    }

    /// An operator asked to drain the runner `key` (in every namespace
    /// that has one: the admin token is the gateway's). Returns how many
    /// actors this worker moves away, or `None` if it has no such tunnel.
    pub fn drain_runner(&self, key: &str) -> Option<usize> {
        let tunnels = self.tunnels.all_by_runner_key(key);
        if tunnels.is_empty() {
            return None;
        }
        let mut moving = 0;
        for tunnel in &tunnels {
            moving += self.directory.on_tunnel(tunnel).len();
            self.drain_tunnel(tunnel);
        }
        Some(moving)
    }

    /// Tunnels draining whose runner is not yet told it may exit.
    pub(super) fn continue_drains(&self) {
        for t in self.tunnels.draining() {
            self.continue_drain(&t);
        }
    }
}
