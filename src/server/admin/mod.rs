//! The admin listener: operator endpoints. Every one but `/healthz`,
//! `/readyz` and the inspector page needs `Authorization: Bearer
//! <admin.token>` (none configured: 403); a namespace's access tokens reach
//! its actors' routes and the lists, narrowed to that namespace (`auth`).
//!
//! - `GET /healthz` → 200; `GET /readyz` → 200 once serving (503 before).
//! - `GET /metrics`: the Prometheus text format, every worker's counters
//!   summed at scrape time (the series are listed in `metrics/mod.rs`).
//! - `GET /runners[?limit=N]`: `{"runners":[…],"total":T,"truncated":B}`,
//!   one entry per runner (key, namespace, identity, pool, actor names,
//!   actors placed, capacity, connected since (ms since the Unix epoch),
//!   tunnels, draining).
//! - `GET /actors[?limit=N]`: `{"actors":[…],"total":T,"truncated":B}`
//!   (namespace, name, key, state, runner, pool, connections open and
//!   hibernated). `limit` is 1–1000, 100 if not given (else 400).
//! - `GET /actors/{name}/{key…}`: the actor's state, runner, connection
//!   count, failures in a row and whether it is crash-looping.
//! - `GET /actors/{name}/{key…}/connections[?limit=N]`: its connections
//!   (id, peer, hibernatable, hibernated, parked, last acknowledged and
//!   sent indices, unacknowledged bytes, attachment size).
//! - `POST /actors/{name}/{key…}/publish[?conn=ID…]`: delivers the body as
//!   one message to every open connection of that actor — running or
//!   hibernated — without starting it. Body `text/*` (or no type) is a text
//!   message (must be UTF-8); `application/octet-stream` a binary one.
//!   Answers `{"delivered":N}`.
//! - `POST /actors/{name}/{key…}/migrate`: moves a running actor to another
//!   runner of its pool (its clients stay connected); answers when it runs
//!   there: `{"migrated":true,"actor":{…}}`, 409 if it is not running.
//! - `POST /runners/{key}/drain`: no new actors go to that runner; its
//!   actors move away one by one, and the runner is told when it may exit.
//!   Answers `{"runner":…,"tunnels":T,"moving":N}` at once.
//! - `GET /serverless`, and `GET`/`PUT`/`DELETE` on
//!   `/serverless/{pool}` or `/ns/{ns}/serverless/{pool}`: serverless pools,
//!   made and changed per namespace, kept in `admin.state_file` (`pools`).
//! - `GET /`: the inspector, one self-contained page (`inspector.html`);
//!   `GET /events`: its live feed as server-sent events (`events`, `hub`,
//!   `picture`).
//!
//! Every change (publish, migrate, drain) is logged at info with who asked.
//!
//! Actor requests are served by the actor's home worker. A drain and the
//! lists visit every worker in turn (the connection is handed from one to
//! the next), each doing its part with its own state only — draining its
//! tunnel of the runner, or adding its runners and actors to the `Relay` —
//! and the last one answers. Which worker serves a request is decided here
//! (`visit`); moving it there is the runtime's job.

mod auth;
mod body;
mod events;
mod handlers;
mod hub;
mod inspector;
mod lists;
mod metrics;
mod picture;
mod pools;
mod publish;
mod route;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use crate::server::conn::stream::Stream;
use bytes::BytesMut;

pub(crate) use auth::Caller;
pub(crate) use hub::Hub;
pub(crate) use lists::Gathered;
pub(crate) use pools::{PoolChanges, PoolPut, PoolRefusal};
pub use route::{admin_route, AdminRoute};

use crate::http::RequestHead;
use crate::server::actors::{self, Actors};
use crate::server::conn::admission::Admission;
use crate::server::conn::env::ConnEnv;
use crate::server::conn::reply::{refuse, Refusal};
use crate::server::conn::stats::{GatewayStats, WorkerStats};
use crate::server::conn::stopping::Stopping;

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
    /// The inspector's streams (used on the worker the admin listener is on).
    pub hub: Hub,
    /// Set when the worker stops: inspector streams end.
    pub stopping: Rc<Stopping>,
    pub worker_id: usize,
    pub worker_count: usize,
    /// Changes to the API's serverless pools (made off the worker).
    pub pool_changes: Arc<dyn PoolChanges>,
    /// The cluster directory, with `[cluster]` (for /metrics).
    pub directory: Option<Arc<crate::cluster::directory::Directory>>,
}

/// An admin request that must visit every worker (a runner drain, a list)
/// carries what it gathered so far from worker to worker.
#[derive(Debug, Default)]
pub(crate) struct Relay {
    pub visited: u16,
    /// Workers that had a tunnel of the runner.
    pub found: u16,
    /// Actors those workers are moving away.
    pub moving: u32,
    /// What a list gathered (boxed: most requests carry none).
    pub gathered: Option<Box<Gathered>>,
}

/// A request this worker answers.
pub(crate) struct Served {
    pub route: AdminRoute,
    pub caller: Caller,
    pub relay: Relay,
}

/// Where an admin request goes next.
pub(crate) enum Visit {
    /// Answer it here.
    Serve(Served),
    /// Hand it to that worker.
    Forward(usize, Relay),
    Refuse(Refusal),
}

impl AdminSide {
    /// Checks an admin request (path, method, token) and does this worker's
    /// part of it if it must visit every worker; says where it goes next.
    pub fn visit(&self, head: &RequestHead, mut relay: Relay) -> Visit {
        let (route, caller) = match self.check(head) {
            Ok(checked) => checked,
            Err(refusal) => return Visit::Refuse(refusal),
        };
        let next = if route.visits_every_worker() {
            self.do_part(&route, &caller, &mut relay);
            self.next_of_every(&relay)
        } else if let Some(a) = route.actor() {
            actors::home_worker(a, self.worker_count)
        } else {
            self.worker_id
        };
        if next == self.worker_id {
            Visit::Serve(Served {
                route,
                caller,
                relay,
            })
        } else {
            Visit::Forward(next, relay)
        }
    }

    /// This worker's part of a request that visits every worker.
    fn do_part(&self, route: &AdminRoute, caller: &Caller, relay: &mut Relay) {
        relay.visited += 1;
        match route {
            AdminRoute::DrainRunner(key) => {
                if let Some(moving) = self.actors.drain_runner(key) {
                    relay.found += 1;
                    relay.moving = relay.moving.saturating_add(moving as u32);
                }
            }
            _ => self.gather_here(route, caller, relay),
        }
    }

    /// The next worker to visit, or this one if every worker has been.
    fn next_of_every(&self, relay: &Relay) -> usize {
        if usize::from(relay.visited) < self.worker_count {
            (self.worker_id + 1) % self.worker_count
        } else {
            self.worker_id
        }
    }
}

/// Serves an admin request on the worker `visit` chose.
pub(crate) async fn serve_admin(
    side: Rc<AdminSide>,
    stream: Stream,
    buf: BytesMut,
    head: RequestHead,
    peer: SocketAddr,
    served: Served,
) {
    let (mut stream, mut buf) = (stream, buf);
    let answer = handlers::answer(&side, &mut stream, &mut buf, &head, peer, served).await;
    if let Some(answer) = answer {
        refuse(&side.env, stream, buf, answer).await;
    }
}
