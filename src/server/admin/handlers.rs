//! One handler per admin route; each returns the answer to write (`None`:
//! the client went away, or a stream already answered). Changes are
//! logged at info with who asked.

use std::net::SocketAddr;
use std::time::Instant;

use crate::server::conn::stream::Stream;
use bytes::BytesMut;
use serde::Serialize;
use tracing::info;

use super::auth::Caller;
use super::route::AdminRoute;
use super::{events, inspector, lists, metrics, pools, publish, AdminSide, Relay, Served};
use crate::http::route::ActorPath;
use crate::http::{RequestHead, Status};
use crate::server::actors::{ActorStatus, MigrateOutcome};
use crate::server::conn::reply::Refusal;

const NO_SUCH_ACTOR: &str = "no such actor here (it never ran, or is gone)";

/// Who asked, for the log of a change.
pub(super) struct Asker<'a> {
    pub caller: &'a Caller,
    pub peer: SocketAddr,
}

pub(super) async fn answer(
    side: &AdminSide,
    stream: &mut Stream,
    buf: &mut BytesMut,
    head: &RequestHead,
    peer: SocketAddr,
    served: Served,
) -> Option<Refusal> {
    let Served {
        route,
        caller,
        relay,
    } = served;
    let by = Asker {
        caller: &caller,
        peer,
    };
    Some(match route {
        AdminRoute::Healthz => Refusal::new(Status::OK, "ok"),
        AdminRoute::Readyz => readiness(side),
        AdminRoute::Metrics => metrics::answer(side),
        AdminRoute::Inspector => inspector::page(),
        AdminRoute::Events => return events::stream(side, stream).await,
        AdminRoute::Runners(limit) => lists::runners(limit, relay),
        AdminRoute::Actors(_) => lists::actors(relay),
        AdminRoute::Actor(a) => status(side, &a),
        AdminRoute::Connections(a, limit) => lists::connections(side, &a, limit),
        AdminRoute::Publish(a) => return publish::answer(side, stream, buf, head, &a, &by).await,
        AdminRoute::Migrate(a) => migrate(side, &a, &by).await,
        AdminRoute::DrainRunner(key) => drained(&key, relay, &by),
        AdminRoute::Pools => pools::list(side, caller.namespace()),
        AdminRoute::Pool(p) => return pools::answer(side, stream, buf, head, &p, &by).await,
    })
}

/// Ready: every worker serves and, if `admin.ready_needs_runner`, at least
/// one runner tunnel is connected.
fn readiness(side: &AdminSide) -> Refusal {
    use std::sync::atomic::Ordering;
    if !side.serving.load(Ordering::Relaxed) {
        return Refusal::new(
            Status::SERVICE_UNAVAILABLE,
            "starting: not every worker serves yet",
        );
    }
    let tunnels: u64 = side
        .all_stats
        .iter()
        .map(|s| s.tunnels.load(Ordering::Relaxed))
        .sum();
    if side.env.config().admin.ready_needs_runner && tunnels == 0 {
        return Refusal::new(Status::SERVICE_UNAVAILABLE, "no runner connected");
    }
    Refusal::new(Status::OK, "ready")
}

fn status(side: &AdminSide, a: &ActorPath) -> Refusal {
    match side.actors.actor_status(a) {
        Some(status) => Refusal::json(Status::OK, &status),
        None => Refusal::new(Status::NOT_FOUND, NO_SUCH_ACTOR),
    }
}

async fn migrate(side: &AdminSide, a: &ActorPath, by: &Asker<'_>) -> Refusal {
    let ready = match side.actors.migrate(a) {
        MigrateOutcome::NotFound => return Refusal::new(Status::NOT_FOUND, NO_SUCH_ACTOR),
        MigrateOutcome::NotRunning(state) => {
            let reason = format!("the actor is {state}: only a running actor can be moved");
            return Refusal::new(Status::CONFLICT, reason);
        }
        MigrateOutcome::Moving(ready) => ready,
    };
    let (ns, name, key) = (&a.ns, &a.name, &a.key);
    info!(by = %by.caller, peer = %by.peer, namespace = %ns, actor = %name, ?key, "admin: migrating actor");
    #[derive(Serialize)]
    struct Migrated {
        migrated: bool,
        actor: Option<ActorStatus>,
    }
    let config = side.env.config();
    let c = &config.actors;
    let deadline = Instant::now() + c.stop_timeout + c.start_timeout;
    let before = side.actors.actor_status(a);
    match ready.wait_until(deadline).await {
        Some(Ok(())) => {
            let actor = side.actors.actor_status(a).or(before);
            Refusal::json(
                Status::OK,
                &Migrated {
                    migrated: true,
                    actor,
                },
            )
        }
        Some(Err(reason)) => {
            let reason = format!("the actor could not be moved: {reason}");
            Refusal::new(Status::BAD_GATEWAY, reason)
        }
        None => {
            let reason = "the actor is still moving (see GET on the actor)";
            Refusal::new(Status::GATEWAY_TIMEOUT, reason)
        }
    }
}

/// A drain that has visited every worker.
fn drained(key: &str, relay: Relay, by: &Asker<'_>) -> Refusal {
    if relay.found == 0 {
        let reason = format!("no runner with key {key} is connected");
        return Refusal::new(Status::NOT_FOUND, reason);
    }
    let (tunnels, moving) = (relay.found, relay.moving);
    info!(by = %by.caller, peer = %by.peer, runner = %key, tunnels, moving, "admin: draining runner");
    #[derive(Serialize)]
    struct Draining<'a> {
        runner: &'a str,
        tunnels: u16,
        moving: u32,
    }
    let body = Draining {
        runner: key,
        tunnels: relay.found,
        moving: relay.moving,
    };
    Refusal::json(Status::ACCEPTED, &body)
}
