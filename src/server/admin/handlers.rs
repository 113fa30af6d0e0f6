//! One handler per admin route; each returns the answer to write (`None`:
//! the client went away).

use std::time::Instant;

use crate::server::conn::stream::Stream;
use bytes::BytesMut;
use serde::Serialize;

use super::route::AdminRoute;
use super::{metrics, publish, AdminSide, Relay};
use crate::http::route::ActorPath;
use crate::http::{RequestHead, Status};
use crate::server::actors::{ActorStatus, MigrateOutcome};
use crate::server::conn::reply::Refusal;

const NO_SUCH_ACTOR: &str = "no such actor here (it never ran, or is gone)";

pub(super) async fn answer(
    side: &AdminSide,
    stream: &mut Stream,
    buf: &mut BytesMut,
    head: &RequestHead,
    route: AdminRoute,
    relay: Relay,
) -> Option<Refusal> {
    Some(match route {
        AdminRoute::Healthz => Refusal::new(Status::OK, "ok"),
        AdminRoute::Readyz => readiness(side),
        AdminRoute::Metrics => metrics::answer(side),
        AdminRoute::Actor(a) => status(side, &a),
        AdminRoute::Publish(a) => return publish::answer(side, stream, buf, head, &a).await,
        AdminRoute::Migrate(a) => migrate(side, &a).await,
        AdminRoute::DrainRunner(key) => drained(&key, relay),
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

async fn migrate(side: &AdminSide, a: &ActorPath) -> Refusal {
    let ready = match side.actors.migrate(a) {
        MigrateOutcome::NotFound => return Refusal::new(Status::NOT_FOUND, NO_SUCH_ACTOR),
        MigrateOutcome::NotRunning(state) => {
            let reason = format!("the actor is {state}: only a running actor can be moved");
            return Refusal::new(Status::CONFLICT, reason);
        }
        MigrateOutcome::Moving(ready) => ready,
    };
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
fn drained(key: &str, relay: Relay) -> Refusal {
    if relay.found == 0 {
        let reason = format!("no runner with key {key} is connected");
        return Refusal::new(Status::NOT_FOUND, reason);
    }
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
