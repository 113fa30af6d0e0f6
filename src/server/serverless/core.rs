//! One serverless pool's decisions, without IO or clock: how many runners
//! to start for the demand, when a started runner is retired (its lifespan
//! ends, or it sat idle), how starts back off after failures. Events and
//! `Instant`s in, start orders and retirements out; `pools.rs` holds one
//! per pool behind the shared mutex and the start tasks do the IO.
//!
//! Counting: `max_runners` bounds the runners starting, or live and not
//! retiring within the lead (a runner retiring, or about to, is on its way
//! out, its actors moving to its replacement, which must be allowed to
//! exist — and be started ahead, even at the cap). Demand, in actors, is what
//! the workers report waiting plus the actors still on runners that retire
//! soon (`lead` before their retirement), so their replacement is started
//! before the hand-over and the move is not a cold start.

use std::time::{Duration, Instant};

use crate::config::ServerlessPool;

/// The first wait after a failed start; it doubles up to `BACKOFF_MAX`.
pub(crate) const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a pool's configuration says about its runners' lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_runners: u32,
    pub slots: u32,
    pub min_idle: u32,
    /// From the start to the drain: `request_lifespan - drain_grace`.
    pub useful_life: Duration,
    pub start_timeout: Duration,
    /// A runner with no actor this long is retired (above `min_idle`).
    pub idle_after: Duration,
}

impl Limits {
    pub fn of(pool: &ServerlessPool) -> Limits {
        let useful_life = pool.request_lifespan.saturating_sub(pool.drain_grace);
        Limits {
            max_runners: pool.max_runners,
            slots: pool.slots_per_runner.max(1),
            min_idle: pool.min_idle_runners,
            useful_life,
            start_timeout: pool.start_timeout,
            idle_after: idle_after(pool.request_lifespan),
        }
    }
}

/// How long a started runner may sit with no actor before it is retired:
/// a tenth of its lifespan, between 1 and 30 s. Long enough that a client
/// reconnecting finds it, short enough that an idle pool stops paying.
pub(crate) fn idle_after(lifespan: Duration) -> Duration {
    (lifespan / 10).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `/start` sent; the runner has until `deadline` to register.
    Starting {
        deadline: Instant,
    },
    Live,
    /// Draining on every worker; its request ends when it is drained.
    Retiring,
}

/// Why a runner is retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retire {
    Lifespan,
    Idle,
    /// Its pool is no longer configured (a reload removed it).
    Removed,
}

#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pub key: String,
    pub began: Instant,
    /// When it is drained: `began + useful_life`.
    pub retire_at: Instant,
    pub phase: Phase,
    /// Its actors across workers, as last seen (`Pools` refreshes it).
    pub placed: u32,
    /// Whether it still has a tunnel (`Pools` refreshes it): a live runner
    /// with none is gone, whatever its request says, and offers no slot.
    pub connected: bool,
    idle_since: Option<Instant>,
}

/// A start the caller must make: `GET /start` for runner `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StartOrder {
    pub key: String,
    pub deadline: Instant,
}

/// What a pool has counted since the gateway started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub starts: u64,
    pub registered: u64,
    /// Failed starts by cause: `http` (non-2xx), `connect`, `timeout`
    /// (no answer or no registration in time: a function whose request
    /// ends before its runner registers is seen here too, as the start
    /// task reads the body only once the runner is in), `protocol` (a
    /// response that is not HTTP or breaks a bound, TLS).
    pub failures: [u64; 4],
    pub lifespan_drains: u64,
    pub idle_retirements: u64,
    /// Live runners whose request ended before they were retired.
    pub died_early: u64,
    /// Tunnels refused: their hello named the pool with a runner key that
    /// is none of its starts (late, invented, from before an upgrade).
    pub refused: u64,
}

pub(crate) const FAILURE_CAUSES: [&str; 4] = ["http", "connect", "timeout", "protocol"];

/// One pool's runners and start history.
#[derive(Debug)]
pub(crate) struct PoolCore {
    pub limits: Limits,
    pub runners: Vec<Runner>,
    /// Actors waiting for a runner, as each worker last reported.
    waiting: Vec<u32>,
    failures: u32,
    backoff_until: Option<Instant>,
    pub last_error: Option<String>,
    /// Time from `/start` to the runner's registration, smoothed.
    start_estimate: Duration,
    pub counters: Counters,
    /// A reload removed the pool: nothing is started, its runners retire.
    removed: bool,
}

impl PoolCore {
    pub fn new(limits: Limits, workers: usize) -> PoolCore {
        PoolCore {
            limits,
            runners: Vec::new(),
            waiting: vec![0; workers],
            failures: 0,
            backoff_until: None,
            last_error: None,
            start_estimate: Duration::from_secs(1),
            counters: Counters::default(),
            removed: false,
        }
    }

    /// A reload removed the pool: it starts nothing more, and its live
    /// runners retire at the next `retirements` (and those starting, once
    /// they register).
    pub fn remove(&mut self) {
        self.removed = true;
    }

    /// The pool is configured again (a later reload put it back).
    pub fn restore(&mut self) {
        self.removed = false;
    }

    /// Removed, and none of its runners is left: it may be forgotten.
    pub fn is_gone(&self) -> bool {
        self.removed && self.runners.is_empty()
    }

    /// Worker `worker` has `waiting` actors that no runner could take.
    pub fn report_waiting(&mut self, worker: usize, waiting: u32) {
        if self.waiting.len() <= worker {
            self.waiting.resize(worker + 1, 0);
        }
        self.waiting[worker] = waiting;
    }

    pub fn waiting(&self) -> u32 {
        self.waiting.iter().sum()
    }

    /// Whether starts are held back after a failure, and no start is in
    /// flight: actors waiting now would wait in vain, and fail with this.
    pub fn failing(&self, now: Instant) -> Option<&str> {
        let backing_off = self.backoff_until.is_some_and(|until| now < until);
        let starting = self
            .runners
            .iter()
            .any(|r| matches!(r.phase, Phase::Starting { .. }));
        (backing_off && !starting).then(|| self.last_error.as_deref().unwrap_or("start failed"))
    }

    /// How long before its retirement a runner's replacement is started:
    /// twice the usual start time, within [0.5 s, start_timeout] and at
    /// most half the useful life (a runner serves at least half of it).
    pub fn lead(&self) -> Duration {
        (self.start_estimate * 2)
            .clamp(
                Duration::from_millis(500),
                self.limits.start_timeout.max(Duration::from_millis(500)),
            )
            .min(self.limits.useful_life / 2)
    }

    /// The starts the demand needs now (none while backing off), each
    /// recorded as Starting with a key made by `key_for(serial)`.
    pub fn plan(&mut self, now: Instant, mut key_for: impl FnMut() -> String) -> Vec<StartOrder> {
        if self.removed || self.backoff_until.is_some_and(|until| now < until) {
            return Vec::new();
        }
        let slots = self.limits.slots;
        let soon = now + self.lead();
        let (mut free, mut expiring, mut fresh, mut counted) = (0u32, 0u32, 0u32, 0u32);
        for r in &self.runners {
            match r.phase {
                Phase::Starting { .. } => {
                    free += slots;
                    fresh += 1;
                    counted += 1;
                }
                // No tunnel left: it takes no actor, and holds no place.
                Phase::Live if !r.connected => {}
                Phase::Live if r.retire_at > soon => {
                    free += slots.saturating_sub(r.placed);
                    fresh += 1;
                    counted += 1;
                }
                // Within the lead of its retirement: its replacement must
                // be able to start now, not as a cold start in the drain.
                Phase::Live => expiring += r.placed,
                Phase::Retiring => expiring += r.placed,
            }
        }
        let need = (self.waiting() + expiring).saturating_sub(free);
        let for_demand = need.div_ceil(slots);
        let for_idle = self.limits.min_idle.saturating_sub(fresh);
        // Requests still open (retiring runners' too, until they end) are
        // bounded apart: twice max_runners, so that churn with a function
        // that ignores drains cannot pile up requests.
        let open = self.runners.len() as u32;
        let room = self.limits.max_runners.saturating_sub(counted).min(
            self.limits
                .max_runners
                .saturating_mul(2)
                .saturating_sub(open),
        );
        let starts = for_demand.max(for_idle).min(room);
        (0..starts)
            .map(|_| {
                let order = StartOrder {
                    key: key_for(),
                    deadline: now + self.limits.start_timeout,
                };
                self.runners.push(Runner {
                    key: order.key.clone(),
                    began: now,
                    retire_at: now + self.limits.useful_life,
                    phase: Phase::Starting {
                        deadline: order.deadline,
                    },
                    placed: 0,
                    connected: true,
                    idle_since: None,
                });
                self.counters.starts += 1;
                order
            })
            .collect()
    }

    /// The runner of start `key` registered (its first tunnel's hello).
    /// Returns false if no such start is known (not ours, or given up).
    pub fn registered(&mut self, key: &str, now: Instant) -> bool {
        let Some(r) = self.runners.iter_mut().find(|r| r.key == key) else {
            return false;
        };
        if let Phase::Starting { .. } = r.phase {
            r.phase = Phase::Live;
            let took = now.saturating_duration_since(r.began);
            self.start_estimate = (self.start_estimate + took) / 2;
            self.counters.registered += 1;
            self.failures = 0;
            self.backoff_until = None;
            // The workers report again what is still waiting: the new
            // runner takes some of it at once, and stale counts would
            // start runners nobody needs.
            self.waiting.iter_mut().for_each(|w| *w = 0);
        }
        true
    }

    /// Start `key` failed (`cause` indexes `FAILURE_CAUSES`): it is
    /// forgotten and starts back off.
    pub fn start_failed(&mut self, key: &str, cause: usize, reason: String, now: Instant) {
        self.runners.retain(|r| r.key != key);
        self.counters.failures[cause.min(FAILURE_CAUSES.len() - 1)] += 1;
        self.failures = self.failures.saturating_add(1);
        let wait = BACKOFF_INITIAL
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(BACKOFF_MAX);
        self.backoff_until = Some(now + wait);
        self.last_error = Some(reason);
    }

    /// The `/start` request of `key` ended (drained, or the function died).
    pub fn ended(&mut self, key: &str) {
        let Some(at) = self.runners.iter().position(|r| r.key == key) else {
            return;
        };
        if self.runners[at].phase == Phase::Live {
            self.counters.died_early += 1;
        }
        self.runners.remove(at);
    }

    /// Live runners whose lifespan is up, or that sat idle past
    /// `idle_after` while more than `min_idle` fresh ones exist, or every
    /// live one of a removed pool, become Retiring; returned with why.
    pub fn retirements(&mut self, now: Instant) -> Vec<(String, Retire)> {
        let mut out = Vec::new();
        let idle_after = self.limits.idle_after;
        let mut live = self
            .runners
            .iter()
            .filter(|r| r.phase == Phase::Live)
            .count() as u32;
        for r in &mut self.runners {
            if r.phase != Phase::Live {
                continue;
            }
            if self.removed {
                r.phase = Phase::Retiring;
                live -= 1;
                out.push((r.key.clone(), Retire::Removed));
                continue;
            }
            if now >= r.retire_at {
                r.phase = Phase::Retiring;
                self.counters.lifespan_drains += 1;
                live -= 1;
                out.push((r.key.clone(), Retire::Lifespan));
                continue;
            }
            if r.placed > 0 {
                r.idle_since = None;
                continue;
            }
            let since = *r.idle_since.get_or_insert(now);
            // min_idle_runners stay, idle or not.
            if now.saturating_duration_since(since) >= idle_after && live > self.limits.min_idle {
                r.phase = Phase::Retiring;
                self.counters.idle_retirements += 1;
                live -= 1;
                out.push((r.key.clone(), Retire::Idle));
            }
        }
        out
    }

    /// Runners starting, live and retiring.
    pub fn counts(&self) -> (u32, u32, u32) {
        let mut c = (0, 0, 0);
        for r in &self.runners {
            match r.phase {
                Phase::Starting { .. } => c.0 += 1,
                Phase::Live => c.1 += 1,
                Phase::Retiring => c.2 += 1,
            }
        }
        c
    }
}

#[cfg(test)]
mod tests;
