//! Actors in a cluster (issue 16, docs/ARCHITECTURE.md "Cluster"): which
//! node owns an actor, as this worker learned it from the directory, and
//! where a Placing actor therefore goes — this node's runners (a claim it
//! holds), another node's tunnel (that node's claim), or nowhere yet
//! (asking, or fenced). The directory is reached through `ClusterPort`,
//! which the runtime implements over `crate::cluster::directory`; nothing
//! here waits for it: answers come back as `on_claim` and the watch's
//! events.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::actor::{Actor, ActorState};
use super::Actors;
use crate::server::tunnels::{Reserved, Tunnel};
use crate::tunnel::Frame;
use crate::ws::CloseCode;

/// What the actors need of the cluster directory.
pub(crate) trait ClusterPort {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// Asks for the actor's claim (answered by `Actors::on_claim`); false
    /// when the request queue is full (asked again later).
    fn claim(&self, worker: usize, ns: &str, name: &str, key: &[String]) -> bool;
    /// Gives a claim up (only if it is still the one of `revision`), and
    /// this node's member key of the actor with it.
    fn release(&self, ns: &str, name: &str, key: &[String], revision: i64);
    /// This node no longer has the actor, which another node owns: its
    /// member key goes (a new owner would wait for its clients).
    fn leave(&self, ns: &str, name: &str, key: &[String]);
    /// Whether this node's lease is surely alive now (lease fencing).
    fn may_serve(&self, now: Instant) -> bool;
    /// Names in the claim made at `revision` the runner the actor went to.
    fn placed(&self, _ns: &str, _name: &str, _key: &[String], _revision: i64, _runner: &str) {}
    /// A runner connected to this node, or left it (`runners/…`).
    fn runner_up(&self, _ns: &str, _runner: &str) {}
    fn runner_down(&self, _ns: &str, _runner: &str) {}
}

/// The directory's answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// This node holds it (its create revision); `members`: the other
    /// nodes with clients of it (their member keys), which forward them
    /// here once they learn the owner.
    Won { revision: i64, members: Vec<String> },
    /// Another node does, since `revision`.
    Owned { node: String, revision: i64 },
    /// The directory could not be asked.
    Failed(String),
}

/// An actor's owner, as this worker knows it.
#[derive(Debug, Clone)]
enum Owner {
    Asking {
        since: Instant,
    },
    Mine {
        revision: i64,
        won: Instant,
        /// Nodes with clients of the actor that have not started it here
        /// yet (no StartActor on their link): it waits for them, at most
        /// until `won + GATHER_MAX`.
        waiting: Vec<String>,
    },
    Node {
        id: String,
        learned: Instant,
        revision: i64,
    },
    /// Asking failed: not again before `until`.
    Failed {
        until: Instant,
    },
}

type OwnerKey = (String, String, Vec<String>);

/// How a node's refusal of an actor it does not own starts (PROTOCOL §9).
pub(crate) const NOT_OWNER_KIND: &str = "not_owner";

/// A node that answered `not_owner` is asked again after this.
const NOT_OWNER_RETRY: Duration = Duration::from_millis(250);

/// A claim asked and not answered within this is asked again.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(5);
/// Another node's claim with no tunnel of that node here is checked again
/// after this (the node may be gone, its claim expiring).
const RECHECK_ABSENT_NODE: Duration = Duration::from_millis(500);
/// After a failed ask, the directory is not asked again for this long.
const FAILED_BACKOFF: Duration = Duration::from_millis(300);
/// An actor won while other nodes hold member keys of it (they have
/// clients of it: typically its owner died or was fenced and they had
/// forwarded to it) does not start before each of them has started it here
/// (StartActor on its link, which brings its clients' RestoreConns in the
/// same batch), so that what the actor replays and says first reaches
/// every node's clients. It waits at most this long: a member key can
/// outlive its node's clients (a `leave` lost to a full queue, a node whose
/// clients just left, a node cut off whose lease has not expired yet), and
/// such a key costs this delay once. A node whose lease ends is waited for
/// no more (`on_node_gone`).
pub(super) const GATHER_MAX: Duration = Duration::from_secs(2);

/// This worker's part of the cluster.
pub(crate) struct Cluster {
    port: Rc<dyn ClusterPort>,
    /// This node's id (its clients' connection ids derive from it).
    node: String,
    owners: RefCell<HashMap<OwnerKey, Owner>>,
    /// The lease could not be renewed in time: nothing is served from here
    /// until the directory gives a new one.
    fenced: Cell<bool>,
}

impl Cluster {
    pub fn new(port: Rc<dyn ClusterPort>) -> Self {
        Cluster {
            node: port.node_id().to_owned(),
            port,
            owners: RefCell::default(),
            fenced: Cell::new(false),
        }
    }
}

/// Where a Placing actor goes, in a cluster.
enum Route {
    /// On this node's runners.
    Local,
    /// On the tunnel of the node that owns it.
    Peer(Reserved),
    /// Not yet, and why.
    Wait(String),
}

fn owner_key(actor: &Actor) -> OwnerKey {
    (actor.ns.clone(), actor.name.clone(), actor.key.clone())
}

impl Actors {
    /// Joins this worker to a cluster (once, before it serves anything).
    pub fn join_cluster(&self, port: Rc<dyn ClusterPort>) {
        let _ = self.cluster.set(Cluster::new(port));
    }

    pub fn in_cluster(&self) -> bool {
        self.cluster.get().is_some()
    }

    /// This node's id, in a cluster.
    pub(super) fn cluster_node(&self) -> Option<&str> {
        self.cluster.get().map(|c| c.node.as_str())
    }

    /// Places a Placing actor in a cluster; false when the cluster says
    /// "here" and the caller places it on this node's runners.
    pub(super) fn place_in_cluster(&self, actor: &Rc<Actor>) -> bool {
        let Some(cluster) = self.cluster.get() else {
            return false;
        };
        match self.route(cluster, actor) {
            Route::Local => false,
            Route::Peer(slot) => {
                self.start_on(actor, slot);
                true
            }
            Route::Wait(reason) => {
                actor.set_refusal(reason);
                true
            }
        }
    }

    fn route(&self, cluster: &Cluster, actor: &Rc<Actor>) -> Route {
        let now = self.now();
        let key = owner_key(actor);
        let known = cluster.owners.borrow().get(&key).cloned();
        match known {
            Some(Owner::Mine { .. }) if cluster.fenced.get() || !cluster.port.may_serve(now) => {
                Route::Wait("this node's cluster lease is not confirmed (fenced)".into())
            }
            Some(Owner::Mine { won, waiting, .. }) if !waiting.is_empty() => {
                if now < won + GATHER_MAX {
                    // The sweep places it when the deadline passes.
                    self.wakeups.note_deadline(won + GATHER_MAX);
                    return Route::Wait(format!(
                        "waiting for the clients of nodes {} (their member keys) to be restored",
                        waiting.join(", ")
                    ));
                }
                info!(worker = self.worker_id, actor = %actor.name, key = ?actor.key, nodes = ?waiting, "member nodes did not start the actor here within GATHER_MAX: starting it without them");
                if let Some(Owner::Mine { waiting, .. }) = cluster.owners.borrow_mut().get_mut(&key)
                {
                    waiting.clear();
                }
                Route::Local
            }
            Some(Owner::Mine { .. }) => Route::Local,
            Some(Owner::Node { id, learned, .. }) => match self.peer_slot(&id) {
                Some(slot) => Route::Peer(slot),
                None if now.duration_since(learned) >= RECHECK_ABSENT_NODE => {
                    self.ask(cluster, actor, key, now)
                }
                None => Route::Wait(format!("waiting for a link to node {id}, which owns it")),
            },
            Some(Owner::Asking { since }) if now.duration_since(since) < ASK_AGAIN_AFTER => {
                Route::Wait("waiting for the cluster directory".into())
            }
            Some(Owner::Failed { until }) if now < until => {
                Route::Wait("the cluster directory could not be asked".into())
            }
            _ if cluster.fenced.get() => Route::Wait("this node is fenced".into()),
            _ => self.ask(cluster, actor, key, now),
        }
    }

    fn ask(&self, cluster: &Cluster, actor: &Actor, key: OwnerKey, now: Instant) -> Route {
        if cluster
            .port
            .claim(self.worker_id, &actor.ns, &actor.name, &actor.key)
        {
            cluster
                .owners
                .borrow_mut()
                .insert(key, Owner::Asking { since: now });
        }
        Route::Wait("waiting for the cluster directory".into())
    }

    /// A slot on node `id`'s tunnel to this worker (node tunnels take any
    /// number of actors).
    fn peer_slot(&self, id: &str) -> Option<Reserved> {
        let tunnels = self.tunnels.filter(|t| t.peer_node() == Some(id));
        tunnels.iter().find_map(Reserved::on)
    }

    /// The directory answered a claim of this worker's.
    pub fn on_claim(&self, ns: &str, name: &str, key: &[String], claim: Claim) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let now = self.now();
        let owner = match claim {
            // Asked before the node fenced itself: that claim died with the
            // old lease (another node may hold the actor now).
            _ if cluster.fenced.get() => Owner::Failed {
                until: now + FAILED_BACKOFF,
            },
            Claim::Won { revision, members } => {
                let key = (ns.to_owned(), name.to_owned(), key.to_vec());
                match cluster.owners.borrow().get(&key) {
                    // The same claim answered again (a claim asked twice):
                    // who already joined stays joined.
                    Some(mine @ Owner::Mine { revision: r, .. }) if *r == revision => mine.clone(),
                    _ => Owner::Mine {
                        revision,
                        won: now,
                        waiting: members,
                    },
                }
            }
            Claim::Owned { node, .. } if node == cluster.port.node_id() => {
                // Ours under an earlier lease: it is going away; ask again.
                Owner::Failed {
                    until: now + FAILED_BACKOFF,
                }
            }
            Claim::Owned { node, revision } => Owner::Node {
                id: node,
                learned: now,
                revision,
            },
            Claim::Failed(reason) => {
                warn!(worker = self.worker_id, actor = %name, key = ?key, %reason, "cluster directory claim failed");
                Owner::Failed {
                    until: now + FAILED_BACKOFF,
                }
            }
        };
        let actor = self.directory.get(ns, name, key);
        let key = (ns.to_owned(), name.to_owned(), key.to_vec());
        if actor.is_none() {
            // Gone meanwhile: a claim won for nobody is given back, and
            // the member key any claim put goes.
            match owner {
                Owner::Mine { revision, .. } => {
                    cluster.port.release(&key.0, &key.1, &key.2, revision)
                }
                _ => cluster.port.leave(&key.0, &key.1, &key.2),
            }
            cluster.owners.borrow_mut().remove(&key);
            return;
        }
        cluster.owners.borrow_mut().insert(key, owner);
        if let Some(actor) = actor.filter(|a| a.state() == ActorState::Placing) {
            self.place(&actor);
        }
    }

    /// The actor starts on one of this node's runners: its claim says which.
    pub(super) fn note_placement(&self, actor: &Actor, runner: &str) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        if let Some(Owner::Mine { revision, .. }) = cluster.owners.borrow().get(&owner_key(actor)) {
            cluster
                .port
                .placed(&actor.ns, &actor.name, &actor.key, *revision, runner);
        }
    }

    /// A runner's tunnel to worker 0 came or went: every runner has one, so
    /// worker 0 keeps the directory's `runners/…` records.
    pub(super) fn record_runner(&self, tunnel: &Tunnel, up: bool) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        if self.worker_id != 0 || tunnel.peer_node().is_some() {
            return;
        }
        match up {
            true => cluster
                .port
                .runner_up(&tunnel.namespace, &tunnel.runner_key),
            false => cluster
                .port
                .runner_down(&tunnel.namespace, &tunnel.runner_key),
        }
    }

    /// Whether this node holds the actor's claim (a node tunnel's request
    /// for an actor it does not hold is refused: no chain of forwards).
    pub fn owns(&self, ns: &str, name: &str, key: &[String]) -> bool {
        let Some(cluster) = self.cluster.get() else {
            return false;
        };
        let key = (ns.to_owned(), name.to_owned(), key.to_vec());
        let mine = matches!(cluster.owners.borrow().get(&key), Some(Owner::Mine { .. }));
        mine && !cluster.fenced.get()
    }

    /// The actor is forgotten here: its claim, if this node holds it, is
    /// given back, this node's member key of it goes, and what this worker
    /// knew of its owner is dropped.
    pub(super) fn forget_owner(&self, actor: &Actor) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let removed = cluster.owners.borrow_mut().remove(&owner_key(actor));
        let (ns, name, key) = (&actor.ns, &actor.name, &actor.key);
        match removed {
            // The release deletes the member key too.
            Some(Owner::Mine { revision, .. }) => cluster.port.release(ns, name, key, revision),
            // A claim in flight: its answer finds the actor gone (`on_claim`).
            Some(Owner::Asking { .. }) => {}
            // A claim that lost (or whose answer was lost) put a member
            // key; so did any claim of an actor whose owner this worker
            // forgot since (its claim gone, its node gone, a resync): an
            // actor dropped after `on_claim_gone` moved it away gets here.
            Some(Owner::Node { .. } | Owner::Failed { .. }) | None => {
                cluster.port.leave(ns, name, key)
            }
        }
    }

    /// Moves the actor's won claim `by` into the past (tests of deadlines).
    #[cfg(test)]
    pub(super) fn backdate_claim(&self, actor: &Actor, by: Duration) {
        let cluster = self.cluster.get().expect("in a cluster");
        if let Some(Owner::Mine { won, .. }) =
            cluster.owners.borrow_mut().get_mut(&owner_key(actor))
        {
            *won -= by;
        }
    }

    /// Node `node` started the actor here (StartActor on its link): its
    /// clients are restored here, so the actor waits for it no more, and
    /// starts if it waited for nobody else.
    ///
    /// Placing it here, synchronously, before the RestoreConn frames that
    /// came after the StartActor in the same batch are handled, is sound:
    /// the actor only becomes Starting on a runner of this node, and its
    /// connections are told to the runner when it is ready (`on_ready`,
    /// every connection it has then), which cannot happen before this batch
    /// is handled whole (the runner's ActorReady is read by another task of
    /// this same thread). So that node's restores are members before
    /// anything is replayed, as if they had come first.
    pub(crate) fn peer_joined(&self, actor: &Rc<Actor>, node: &str) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let released = match cluster.owners.borrow_mut().get_mut(&owner_key(actor)) {
            Some(Owner::Mine { waiting, .. }) if !waiting.is_empty() => {
                waiting.retain(|n| n != node);
                waiting.is_empty()
            }
            _ => false,
        };
        if released && actor.state() == ActorState::Placing {
            info!(worker = self.worker_id, actor = %actor.name, key = ?actor.key, %node, "the last member node started the actor here: placing it");
            self.place(actor);
        }
    }

    /// The watch saw the actor's claim vanish (at `revision`). If it was
    /// another node's and the actor runs there, it moves (the node is gone
    /// or fenced). A claim made after that revision is another one: kept.
    pub fn on_claim_gone(&self, ns: &str, name: &str, key: &[String], revision: i64) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let k = (ns.to_owned(), name.to_owned(), key.to_vec());
        let newer = match cluster.owners.borrow().get(&k) {
            Some(Owner::Mine { revision: r, .. } | Owner::Node { revision: r, .. }) => {
                *r > revision
            }
            _ => false,
        };
        if newer {
            return;
        }
        let was = cluster.owners.borrow_mut().remove(&k);
        let Some(actor) = self.directory.get(ns, name, key) else {
            return;
        };
        match was {
            Some(Owner::Node { id, .. }) => self.leave_peer(&actor, &format!("node {id} lost it")),
            Some(Owner::Mine { .. }) => self.fence_actor(&actor),
            _ => {}
        }
        if actor.state() == ActorState::Placing {
            self.place(&actor);
        }
    }

    /// A node left the cluster (its lease ended): its tunnels here close,
    /// and the actors on them move through the usual failover.
    pub fn on_node_gone(&self, node: &str) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let mut released = Vec::new();
        cluster.owners.borrow_mut().retain(|key, o| match o {
            Owner::Node { id, .. } => id != node,
            // Its clients will not come: the actor waits for it no more.
            Owner::Mine { waiting, .. } if waiting.iter().any(|n| n == node) => {
                waiting.retain(|n| n != node);
                if waiting.is_empty() {
                    released.push(key.clone());
                }
                true
            }
            _ => true,
        });
        for (ns, name, key) in released {
            let actor = self.directory.get(&ns, &name, &key);
            if let Some(actor) = actor.filter(|a| a.state() == ActorState::Placing) {
                self.place(&actor);
            }
        }
        for tunnel in self.tunnels.filter(|t| t.peer_node() == Some(node)) {
            info!(worker = self.worker_id, %node, "node left the cluster: closing its tunnel");
            tunnel
                .control
                .request_close(CloseCode::GOING_AWAY, "node left the cluster");
            self.remove_tunnel(&tunnel);
        }
    }

    /// Events may have been missed: what was learned of other nodes'
    /// claims is asked again at the next placement.
    pub fn on_directory_resync(&self) {
        if let Some(cluster) = self.cluster.get() {
            let mut owners = cluster.owners.borrow_mut();
            owners.retain(|_, o| matches!(o, Owner::Mine { .. }));
        }
    }

    /// This node's lease could not be renewed in time: before another node
    /// may take its actors over, none runs here any more. Runner tunnels
    /// close (a runner drops its actors with its tunnel) and every actor
    /// waits to be placed again (claimed anew once the node has a lease).
    pub fn fence(&self, why: &str) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        // Every time: a claim answered since the last fence is as dead.
        cluster.owners.borrow_mut().clear();
        if cluster.fenced.replace(true) {
            return;
        }
        warn!(worker = self.worker_id, %why, "cluster lease lost: fencing every actor of this node");
        for tunnel in self.tunnels.filter(|t| t.peer_node().is_none()) {
            tunnel.control.request_close(
                CloseCode::SERVICE_RESTART,
                "node fenced: cluster lease lost",
            );
            self.remove_tunnel(&tunnel);
        }
    }

    /// The directory gave this node a new lease: it may claim again.
    pub fn unfence(&self) {
        if let Some(cluster) = self.cluster.get() {
            if cluster.fenced.replace(false) {
                info!(
                    worker = self.worker_id,
                    "cluster lease renewed: placing actors again"
                );
                self.place_waiting();
            }
        }
    }

    /// Checked by the sweep: a lease past its confirmed life fences the
    /// node even if the directory thread has not said so yet.
    pub(super) fn check_fence(&self, now: Instant) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let confirmed = cluster.port.may_serve(now);
        if !cluster.fenced.get() && !confirmed {
            self.fence("lease not renewed in time");
        } else if cluster.fenced.get() && confirmed {
            // A keep-alive answered late: the directory never fenced (so
            // it will send no `Renewed`), and the lease is confirmed again.
            self.unfence();
        }
    }

    /// An actor whose claim this node lost stops here at once.
    fn fence_actor(&self, actor: &Rc<Actor>) {
        if let Some(tunnel) = actor.tunnel().filter(|t| t.peer_node().is_none()) {
            tunnel.send(&Frame::StopActor {
                actor_id: actor.id(),
            });
            self.resend_all(actor);
            self.fail(actor, "this node lost its claim");
        }
    }

    /// The actor runs on a node that no longer owns it: that node is told
    /// to let it go, and it moves.
    fn leave_peer(&self, actor: &Rc<Actor>, why: &str) {
        let on_peer = actor.tunnel().filter(|t| t.peer_node().is_some());
        let Some(tunnel) = on_peer else {
            return;
        };
        tunnel.send(&Frame::StopActor {
            actor_id: actor.id(),
        });
        self.resend_all(actor);
        self.fail(actor, why);
    }

    /// A node answered that it does not own the actor: what this worker
    /// knew is dropped and the directory is asked again at once (not a
    /// crash: no backoff). True if that is what happened.
    pub(super) fn peer_refused(
        &self,
        tunnel: &Rc<Tunnel>,
        actor: &Rc<Actor>,
        reason: &str,
    ) -> bool {
        let Some(cluster) = self.cluster.get() else {
            return false;
        };
        if tunnel.peer_node().is_none() || !reason.starts_with(NOT_OWNER_KIND) {
            return false;
        }
        cluster.owners.borrow_mut().remove(&owner_key(actor));
        self.resend_all(actor);
        // Not at once: the directory may name that node a while longer
        // (it fenced itself before its lease expired).
        let hold = self.config().actors.migration_buffer_bytes;
        self.replace(actor, self.now() + NOT_OWNER_RETRY, hold);
        true
    }
}
