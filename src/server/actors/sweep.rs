//! The actors' timers, run by the worker's sweep: placement retries and
//! deadlines, start and stop timeouts, idle sleep.

use std::rc::Rc;
use std::time::Instant;

use tracing::warn;

use super::actor::{Actor, ActorState};
use super::Actors;
use crate::tunnel::Frame;
use crate::ws::CloseCode;

impl Actors {
    /// Whether any actor has a timer running (a deadline or idle sleep).
    pub fn needs_ticks(&self) -> bool {
        self.directory.has_live() || self.serverless_needs_ticks()
    }

    /// Called by the worker's sweep, which also advances the coarse clock.
    pub fn sweep(&self, now: Instant) {
        self.clock.set(now);
        self.check_fence(now);
        self.failing.borrow_mut().begin(now);
        // Retiring runners' tunnels are draining before any placement:
        // no actor goes to a runner only to be moved again.
        self.sweep_serverless(now);
        for actor in self.directory.live() {
            let overdue = actor.is_overdue(now);
            match actor.state() {
                // Its connections go to the next process, which places it.
                ActorState::Placing if self.starts_paused() => {}
                ActorState::Placing if overdue => self.give_up_placing(&actor),
                ActorState::Placing if actor.may_start(now) => self.place(&actor),
                ActorState::Starting if overdue => self.start_timed_out(&actor),
                ActorState::Stopping(_) if overdue => {
                    warn!(actor = %actor.name, key = ?actor.key, "runner did not confirm the stop within actors.stop_timeout");
                    self.resend_all(&actor);
                    self.on_stopped(&actor);
                }
                ActorState::Running if self.is_idle(&actor, now) => self.idle_sleep(&actor),
                _ => {}
            }
        }
        self.continue_drains();
        self.failing.borrow_mut().end();
    }

    fn give_up_placing(&self, actor: &Rc<Actor>) {
        let reason = format!(
            "no runner could take the actor within actors.start_timeout ({})",
            actor.last_refusal()
        );
        warn!(actor = %actor.name, key = ?actor.key, %reason, "giving up on actor");
        self.remove_actor(actor, CloseCode::INTERNAL, &reason);
    }

    fn start_timed_out(&self, actor: &Rc<Actor>) {
        if let Some(t) = actor.tunnel() {
            t.send(&Frame::StopActor {
                actor_id: actor.id(),
            });
        }
        warn!(actor = %actor.name, key = ?actor.key, "actor did not start within actors.start_timeout");
        if actor.conns().is_empty() {
            let reason = "actor did not start within actors.start_timeout";
            self.remove_actor(actor, CloseCode::INTERNAL, reason);
        } else {
            self.fail(actor, "it did not start within actors.start_timeout");
        }
    }

    fn is_idle(&self, actor: &Actor, now: Instant) -> bool {
        let idle = self.config().actors.idle_timeout;
        // An actor on another node's tunnel sleeps there, not here.
        let on_peer = actor.tunnel().is_some_and(|t| t.peer_node().is_some());
        !on_peer && !idle.is_zero() && actor.idle_for(now) >= idle
    }

    /// Idle sleep never disconnects anyone: only actors whose connections
    /// can all hibernate are put to sleep.
    fn idle_sleep(&self, actor: &Rc<Actor>) {
        let all_hibernatable = {
            let links = self.links.borrow();
            let conns = actor.conns();
            conns
                .iter()
                .all(|id| links.get(id).is_some_and(|l| l.hibernatable))
        };
        if all_hibernatable && !actor.has_requests() && !self.has_pending_opens(actor) {
            self.sleep(actor);
        }
    }
}
