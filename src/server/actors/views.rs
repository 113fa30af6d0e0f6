//! What the admin API and the inspector see of one worker's runners,
//! actors and connections: plain values (`Send`, serializable) built from
//! this worker's state alone. A list request visits every worker and
//! merges what each built (`merge_runners`); the inspector gets one
//! `WorkerSnapshot` per worker per second.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::actor::{Actor, ActorState};
use super::Actors;
use crate::http::route::ActorPath;
use crate::server::tunnels::Tunnel;

/// A runner as one worker sees it (its tunnel here); merged over workers,
/// the runner.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunnerView {
    pub key: String,
    pub namespace: String,
    /// Whose token it presented (a name from the config, never the token).
    pub identity: String,
    pub pool: String,
    pub actor_names: Vec<String>,
    /// Actors placed on it through any worker, and how many it may run.
    pub actors: u32,
    pub capacity: u32,
    /// When its first tunnel still open connected (ms since the Unix epoch).
    pub connected_since_ms: u64,
    /// Its tunnels (one per worker when fully connected).
    pub tunnels: u16,
    /// An operator or the runner asked it to drain.
    pub draining: bool,
}

/// Client connections, open (all of them) and hibernated (held while
/// their actor sleeps).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct ConnCounts {
    pub open: usize,
    pub hibernated: usize,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ActorView {
    pub namespace: String,
    pub name: String,
    pub key: Vec<String>,
    /// placing, starting, running, stopping (to sleep), migrating, asleep.
    pub state: &'static str,
    pub runner: Option<String>,
    pub pool: String,
    pub connections: ConnCounts,
}

/// One client connection of an actor.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConnView {
    pub id: u64,
    pub peer: String,
    pub hibernatable: bool,
    /// Held while its actor sleeps.
    pub hibernated: bool,
    /// Hibernated with no task of its own (the parker holds its socket).
    pub parked: bool,
    /// The last client message index the actor acknowledged…
    pub last_acked: u64,
    /// …and the last one handed to a runner.
    pub last_sent: u64,
    /// Bytes kept until the actor acknowledges them (with their entries).
    pub unacked_bytes: usize,
    pub attachment_bytes: usize,
}

/// Up to `limit` items of a longer list, and how long it was.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Bounded<T> {
    pub items: Vec<T>,
    pub total: usize,
}

/// A worker's part of the inspector's picture.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkerSnapshot {
    pub worker: usize,
    pub runners: Vec<RunnerView>,
    pub actors: Bounded<ActorView>,
    pub connections: ConnCounts,
    /// Client messages to actors, and actor messages to clients, so far.
    pub messages_in: u64,
    pub messages_out: u64,
}

impl Actors {
    /// This worker's tunnels, as runners (of namespace `ns`, or all).
    pub fn runner_views(&self, ns: Option<&str>) -> Vec<RunnerView> {
        let tunnels = self
            .tunnels
            .filter(|t| ns.is_none_or(|ns| t.namespace == ns));
        tunnels.iter().map(runner_view).collect()
    }

    /// Up to `limit` of this worker's actors (of namespace `ns`, or all),
    /// sorted by namespace, name and key; `total` counts every match.
    pub fn actor_views(&self, ns: Option<&str>, limit: usize) -> Bounded<ActorView> {
        let mut items = Vec::new();
        let mut total = 0;
        self.directory.each(|actor| {
            if ns.is_some_and(|ns| actor.ns != ns) {
                return;
            }
            total += 1;
            if items.len() < limit {
                items.push(actor_view(actor));
            }
        });
        items.sort_by(|a, b| (&a.namespace, &a.name, &a.key).cmp(&(&b.namespace, &b.name, &b.key)));
        Bounded { items, total }
    }

    /// Up to `limit` connections of the actor (by id), or `None` if this
    /// worker does not know it.
    pub fn conn_views(&self, path: &ActorPath, limit: usize) -> Option<Bounded<ConnView>> {
        let actor = self.directory.get(&path.ns, &path.name, &path.key)?;
        let mut ids = actor.conn_ids();
        ids.sort_unstable();
        let total = ids.len();
        let links = self.links.borrow();
        let asleep = actor.state() == ActorState::Asleep;
        let items = ids
            .iter()
            .take(limit)
            .filter_map(|id| Some((*id, links.get(id)?)))
            .map(|(id, link)| {
                let (last_sent, unacked_bytes) = link.with_outstanding(|o| {
                    o.as_ref().map_or((0, 0), |o| (o.sent_index(), o.cost()))
                });
                let attachment_bytes =
                    link.with_meta(|m| m.as_ref().map_or(0, |m| m.attachment.len()));
                ConnView {
                    id,
                    peer: link.peer.to_string(),
                    hibernatable: link.hibernatable,
                    hibernated: asleep,
                    parked: link.control.is_parked(),
                    last_acked: link.last_acked.get(),
                    last_sent: last_sent.max(link.last_acked.get()),
                    unacked_bytes,
                    attachment_bytes,
                }
            })
            .collect();
        Some(Bounded { items, total })
    }

    /// This worker's part of the inspector's picture (at most `limit` actors).
    pub fn snapshot(&self, limit: usize) -> WorkerSnapshot {
        let mut connections = ConnCounts::default();
        self.directory.each(|actor| {
            let n = actor.conns().len();
            connections.open += n;
            if actor.state() == ActorState::Asleep {
                connections.hibernated += n;
            }
        });
        WorkerSnapshot {
            worker: self.worker_id,
            runners: self.runner_views(None),
            actors: self.actor_views(None, limit),
            connections,
            // This worker's own counters (it is the only writer).
            messages_in: self.stats.messages_in.load(Ordering::Relaxed),
            messages_out: self.stats.messages_out.load(Ordering::Relaxed),
        }
    }
}

/// A time as operators see it: milliseconds since the Unix epoch.
pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn runner_view(t: &Rc<Tunnel>) -> RunnerView {
    RunnerView {
        key: t.runner_key.clone(),
        namespace: t.namespace.clone(),
        identity: t.identity.clone(),
        pool: t.pool.clone(),
        actor_names: t.actor_names.clone(),
        actors: t.placed(),
        capacity: t.capacity(),
        connected_since_ms: unix_ms(t.connected_at),
        tunnels: 1,
        draining: t.drain_requested(),
    }
}

fn actor_view(actor: &Actor) -> ActorView {
    let open = actor.conns().len();
    let asleep = actor.state() == ActorState::Asleep;
    ActorView {
        namespace: actor.ns.clone(),
        name: actor.name.clone(),
        key: actor.key.clone(),
        state: actor.state().name(),
        runner: actor.tunnel().map(|t| t.runner_key.clone()),
        pool: actor.pool().clone(),
        connections: ConnCounts {
            open,
            hibernated: if asleep { open } else { 0 },
        },
    }
}

/// One entry per runner (namespace and key) out of the workers' views:
/// tunnels summed, the earliest connection, draining if any tunnel is.
pub(crate) fn merge_runners(views: impl IntoIterator<Item = RunnerView>) -> Vec<RunnerView> {
    let mut merged: BTreeMap<(String, String), RunnerView> = BTreeMap::new();
    for v in views {
        match merged.get_mut(&(v.namespace.clone(), v.key.clone())) {
            Some(m) => {
                m.tunnels = m.tunnels.saturating_add(v.tunnels);
                m.connected_since_ms = m.connected_since_ms.min(v.connected_since_ms);
                m.draining |= v.draining;
                m.actors = m.actors.max(v.actors);
            }
            None => {
                merged.insert((v.namespace.clone(), v.key.clone()), v);
            }
        }
    }
    merged.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ns: &str, key: &str, since: u64, draining: bool) -> RunnerView {
        RunnerView {
            key: key.into(),
            namespace: ns.into(),
            identity: "default".into(),
            pool: "default".into(),
            actor_names: vec!["chat".into()],
            actors: 1,
            capacity: 10,
            connected_since_ms: since,
            tunnels: 1,
            draining,
        }
    }

    #[test]
    fn a_runners_tunnels_merge_into_one_entry_per_namespace_and_key() {
        let merged = merge_runners([
            view("default", "r1", 20, false),
            view("acme", "r1", 5, false),
            view("default", "r1", 10, true),
        ]);
        assert_eq!(merged.len(), 2);
        let (acme, default) = (&merged[0], &merged[1]);
        assert_eq!((acme.namespace.as_str(), acme.tunnels), ("acme", 1));
        assert_eq!(default.tunnels, 2);
        assert_eq!(default.connected_since_ms, 10);
        assert!(default.draining);
    }
}
