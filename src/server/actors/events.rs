//! Recording what happens to actors and connections for the inspector
//! (`feed`): nothing but a relaxed load while nobody watches.

use std::time::SystemTime;

use super::actor::Actor;
use super::feed::{Event, EventKind};
use super::views::unix_ms;
use super::Actors;
use crate::server::tunnels::Tunnel;

impl Actors {
    /// Records `kind` about `actor` (and one of its connections) if an
    /// inspector watches; the runner is the one the actor is on now.
    #[inline]
    pub(super) fn note(&self, kind: EventKind, actor: &Actor, conn: Option<u64>) {
        if self.feed.is_watched() {
            self.record(kind, actor, conn);
        }
    }

    #[cold]
    fn record(&self, kind: EventKind, actor: &Actor, conn: Option<u64>) {
        self.feed.push(Event {
            kind,
            at_ms: unix_ms(SystemTime::now()),
            worker: self.worker_id,
            namespace: Some(actor.ns.clone()),
            actor: Some(actor.name.clone()),
            key: actor.key.clone(),
            runner: actor.tunnel().map(|t| t.runner_key.clone()),
            conn,
        });
    }

    /// Records `kind` about a runner's tunnel on this worker, if watched.
    pub(super) fn note_runner(&self, kind: EventKind, tunnel: &Tunnel) {
        if !self.feed.is_watched() {
            return;
        }
        self.feed.push(Event {
            kind,
            at_ms: unix_ms(SystemTime::now()),
            worker: self.worker_id,
            namespace: Some(tunnel.namespace.clone()),
            actor: None,
            key: Vec::new(),
            runner: Some(tunnel.runner_key.clone()),
            conn: None,
        });
    }
}
