//! The admin listener: operator endpoints. Every one but `/healthz`
//! needs `Authorization: Bearer <admin.token>` (none configured: 403).
//!
//! - `GET /healthz` → 200.
//! - `POST /actors/{name}/{key…}/publish[?conn=ID…]`: delivers the body as
//!   one message to every open connection of that actor — running or
//!   hibernated — without starting it. Body `text/*` (or no type) is a text
//!   message (must be UTF-8); `application/octet-stream` a binary one.
//!   Answers `{"delivered":N}`.
//! - `POST /actors/{name}/{key…}/migrate`: moves a running actor to another
//!   runner of its pool (its clients stay connected); answers when it runs
//!   there: `{"migrated":true,"actor":{…}}`, 409 if it is not running.
//! - `GET /metrics`: the Prometheus text format, every worker's counters
//!   summed at scrape time (the series are listed in `metrics/mod.rs`).
//! - `GET /actors/{name}/{key…}`: the actor's state, runner, connection
//!   count, failures in a row and whether it is crash-looping.
//! - `POST /runners/{key}/drain`: no new actors go to that runner; its
//!   actors move away one by one, and the runner is told when it may exit.
//!   Answers `{"runner":…,"tunnels":T,"moving":N}` at once.
//!
//! Actor requests are served by the actor's home worker; a drain visits
//! every worker, each draining its own tunnel of the runner. Which worker
//! serves a request is decided here (`visit`); moving it there is the
//! runtime's job.

mod handlers;
mod metrics;
mod publish;
mod route;

use std::rc::Rc;
use std::sync::Arc;

use crate::server::conn::stream::Stream;
use bytes::BytesMut;

pub use route::{admin_route, AdminRoute};

use crate::http::{RequestHead, Status};
use crate::server::actors::{self, Actors};
use crate::server::conn::admission::Admission;
use crate::server::conn::env::ConnEnv;
use crate::server::conn::reply::{refuse, Refusal};
use crate::server::conn::stats::{GatewayStats, WorkerStats};

/// What admin requests on one worker need from it.
pub(crate) struct AdminSide {
    pub env: Rc<ConnEnv>,
    pub actors: Rc<Actors>,
    /// Every worker's counters (for /metrics).
    pub all_stats: Arc<[Arc<WorkerStats>]>,
    /// The process's counters (for /metrics).
    pub gateway_stats: Arc<GatewayStats>,
    /// Client connections' places (for /metrics).
    pub admission: Arc<Admission>,
    /// Set once every worker serves (for /readyz).
    pub serving: Arc<std::sync::atomic::AtomicBool>,
    pub worker_id: usize,
    pub worker_count: usize,
}

/// An admin request that must visit every worker (a runner drain) carries
/// what it gathered so far from worker to worker.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Relay {
    pub visited: u16,
    /// Workers that had a tunnel of the runner.
    pub found: u16,
    /// Actors those workers are moving away.
    pub moving: u32,
}

/// Where an admin request goes next.
pub(crate) enum Visit {
    /// Answer it here.
    Serve(AdminRoute, Relay),
    /// Hand it to that worker.
    Forward(usize, Relay),
    Refuse(Refusal),
}

impl AdminSide {
    /// Checks an admin request (path, method, token) and does this worker's
    /// part of it if it must visit every worker; says where it goes next.
    pub fn visit(&self, head: &RequestHead, relay: Relay) -> Visit {
        let route = match self.check(head) {
            Ok(route) => route,
            Err(refusal) => return Visit::Refuse(refusal),
        };
        let (home, relay) = match &route {
            AdminRoute::Healthz | AdminRoute::Readyz | AdminRoute::Metrics => {
                (self.worker_id, relay)
            }
            AdminRoute::Actor(a) | AdminRoute::Publish(a) | AdminRoute::Migrate(a) => {
                let home = actors::home_worker(a, self.worker_count);
                (home, relay)
            }
            AdminRoute::DrainRunner(key) => self.drain_here(key, relay),
        };
        if home == self.worker_id {
            Visit::Serve(route, relay)
        } else {
            Visit::Forward(home, relay)
        }
    }

    fn check(&self, head: &RequestHead) -> Result<AdminRoute, Refusal> {
        let Some(route) = admin_route(&head.target) else {
            return Err(Refusal::new(Status::NOT_FOUND, "no such path"));
        };
        let method = route.method();
        if head.method != method {
            return Err(Refusal::method_not_allowed(method, format!("use {method}")));
        }
        if route.needs_token() {
            self.authorize(head, &route)?;
        }
        Ok(route)
    }

    /// `admin.token` reaches every route; a namespace's access tokens reach
    /// its actors' routes (and nothing of another namespace).
    fn authorize(&self, head: &RequestHead, route: &AdminRoute) -> Result<(), Refusal> {
        let config = self.env.config();
        let namespace = route.actor().and_then(|a| config.namespace(&a.ns));
        let access: &[String] = namespace.map_or(&[], |ns| &ns.access_tokens);
        let admin = &config.admin.token;
        if admin.is_empty() && access.is_empty() {
            let reason = "admin.token is not configured: the admin API is disabled";
            return Err(Refusal::new(Status::FORBIDDEN, reason));
        }
        // Every token is compared, so timing does not tell which matched.
        let by_admin = !admin.is_empty() && head.bearer_is(admin);
        let by_access = access.iter().fold(false, |hit, t| hit | head.bearer_is(t));
        if by_admin || by_access {
            Ok(())
        } else {
            Err(Refusal::unauthorized("missing or wrong admin token"))
        }
    }

    /// Drains this worker's tunnel of the runner; the request goes on to
    /// the next worker until every worker has done so.
    fn drain_here(&self, key: &str, mut relay: Relay) -> (usize, Relay) {
        relay.visited += 1;
        if let Some(moving) = self.actors.drain_runner(key) {
            relay.found += 1;
            relay.moving = relay.moving.saturating_add(moving as u32);
        }
        if usize::from(relay.visited) < self.worker_count {
            ((self.worker_id + 1) % self.worker_count, relay)
        } else {
            (self.worker_id, relay)
        }
    }
}

/// Serves an admin request on the worker `visit` chose.
pub(crate) async fn serve_admin(
    side: Rc<AdminSide>,
    stream: Stream,
    buf: BytesMut,
    head: RequestHead,
    route: AdminRoute,
    relay: Relay,
) {
    let (mut stream, mut buf) = (stream, buf);
    let answer = handlers::answer(&side, &mut stream, &mut buf, &head, route, relay).await;
    if let Some(answer) = answer {
        refuse(&side.env, stream, buf, answer).await;
    }
}
