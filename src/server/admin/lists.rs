//! `GET /runners`, `GET /actors` and `GET /actors/{name}/{key…}/connections`.
//!
//! A list spans workers: the request visits each (`AdminSide::visit`),
//! which adds what it holds to the relay (`gather_here`), and the last one
//! answers. An actor's connections are all on its home worker.

use serde::Serialize;

use super::auth::Caller;
use super::route::AdminRoute;
use super::{AdminSide, Relay};
use crate::http::route::ActorPath;
use crate::http::Status;
use crate::server::actors::{merge_runners, ActorView, Bounded, ConnView, RunnerView};
use crate::server::conn::reply::Refusal;

/// What a list gathered from the workers visited so far.
#[derive(Debug)]
pub(crate) enum Gathered {
    /// Each worker's tunnels, merged into runners by the last one.
    Runners(Vec<RunnerView>),
    /// Up to the limit; `total` counts every match on every worker.
    Actors(Bounded<ActorView>),
}

impl AdminSide {
    /// Adds this worker's runners or actors (those the caller may see).
    pub(super) fn gather_here(&self, route: &AdminRoute, caller: &Caller, relay: &mut Relay) {
        let ns = caller.namespace();
        match (route, relay.gathered.as_deref_mut()) {
            (AdminRoute::Runners(_), Some(Gathered::Runners(all))) => {
                all.extend(self.actors.runner_views(ns));
            }
            (AdminRoute::Runners(_), _) => {
                let mine = Gathered::Runners(self.actors.runner_views(ns));
                relay.gathered = Some(Box::new(mine));
            }
            (AdminRoute::Actors(limit), Some(Gathered::Actors(all))) => {
                let mine = self.actors.actor_views(ns, limit - all.items.len());
                all.items.extend(mine.items);
                all.total += mine.total;
            }
            (AdminRoute::Actors(limit), _) => {
                let mine = Gathered::Actors(self.actors.actor_views(ns, *limit));
                relay.gathered = Some(Box::new(mine));
            }
            _ => {}
        }
    }
}

#[derive(Serialize)]
struct Runners {
    runners: Vec<RunnerView>,
    total: usize,
    truncated: bool,
}

/// Every worker's tunnels, as runners (at most `limit`, by namespace and key).
pub(super) fn runners(limit: usize, relay: Relay) -> Refusal {
    let views = match relay.gathered.map(|g| *g) {
        Some(Gathered::Runners(views)) => views,
        _ => Vec::new(),
    };
    let mut runners = merge_runners(views);
    let total = runners.len();
    runners.truncate(limit);
    let truncated = total > runners.len();
    Refusal::json(
        Status::OK,
        &Runners {
            runners,
            total,
            truncated,
        },
    )
}

#[derive(Serialize)]
struct Actors {
    actors: Vec<ActorView>,
    total: usize,
    truncated: bool,
}

/// Every worker's actors (each worker's sorted; at most the limit).
pub(super) fn actors(relay: Relay) -> Refusal {
    let Bounded { items, total } = match relay.gathered.map(|g| *g) {
        Some(Gathered::Actors(all)) => all,
        _ => Bounded {
            items: Vec::new(),
            total: 0,
        },
    };
    let truncated = total > items.len();
    Refusal::json(
        Status::OK,
        &Actors {
            actors: items,
            total,
            truncated,
        },
    )
}

#[derive(Serialize)]
struct Connections<'a> {
    namespace: &'a str,
    name: &'a str,
    key: &'a [String],
    connections: Vec<ConnView>,
    total: usize,
    truncated: bool,
}

/// The actor's connections (served on its home worker).
pub(super) fn connections(side: &AdminSide, a: &ActorPath, limit: usize) -> Refusal {
    let Some(Bounded { items, total }) = side.actors.conn_views(a, limit) else {
        let reason = "no such actor here (it never ran, or is gone)";
        return Refusal::new(Status::NOT_FOUND, reason);
    };
    let truncated = total > items.len();
    let body = Connections {
        namespace: &a.ns,
        name: &a.name,
        key: &a.key,
        connections: items,
        total,
        truncated,
    };
    Refusal::json(Status::OK, &body)
}
