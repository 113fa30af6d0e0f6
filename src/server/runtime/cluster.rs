//! A node of a cluster (issue 16, `[cluster]`): the directory on etcd
//! started before the workers (a node that cannot register does not
//! start), each worker's actors joined to it through `ClusterPort`, and
//! each worker following the directory's events: answers to its claims,
//! claims and nodes that go, its own lease fenced or renewed, and the
//! other nodes it keeps a link to (`server/peers`).

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tracing::{error, info, warn};

use super::worker::Worker;
use crate::cluster::directory::{ClaimResult, Directory, DirectoryEvent};
use crate::cluster::model::{ActorPath as DirectoryPath, NodeRecord};
use crate::config::Config;
use crate::http::route::ActorPath;
use crate::server::actors::{hash_twin, home_worker, Claim, ClusterPort};
use crate::server::conn::env::SessionLimits;
use crate::server::peers::{dial_node, Dialing, NodeAddress, PeerSide};

/// Registers this node in the directory, if `[cluster]` is set.
pub(super) fn start_directory(
    config: &Config,
    workers: usize,
) -> Result<Option<Arc<Directory>>, String> {
    let Some(cluster) = &config.cluster else {
        return Ok(None);
    };
    let node = NodeRecord {
        advertise: cluster.advertise.clone(),
    };
    let home = Box::new(move |a: &DirectoryPath| {
        let path = ActorPath {
            ns: a.namespace.clone(),
            name: a.name.clone(),
            key: a.key.clone(),
            query: None,
        };
        home_worker(&path, workers)
    });
    let directory = Directory::start(cluster, node, workers, home)
        .map_err(|e| format!("cluster: cannot join through etcd: {e}"))?;
    info!(node = %cluster.node_id, advertise = %cluster.advertise, "joined the cluster");
    Ok(Some(directory))
}

/// The directory as a worker's actors reach it.
struct DirectoryPort {
    directory: Arc<Directory>,
    node: String,
}

fn directory_path(ns: &str, name: &str, key: &[String]) -> DirectoryPath {
    DirectoryPath {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        key: key.to_vec(),
    }
}

impl ClusterPort for DirectoryPort {
    fn node_id(&self) -> &str {
        &self.node
    }

    fn claim(&self, worker: usize, ns: &str, name: &str, key: &[String]) -> bool {
        let path = directory_path(ns, name, key);
        self.directory.claim(worker, path).is_ok()
    }

    fn release(&self, ns: &str, name: &str, key: &[String], revision: i64) {
        let path = directory_path(ns, name, key);
        if self.directory.release(path, revision).is_err() {
            // The claim then ends with the lease, or is taken back by the
            // next claim of this node.
            warn!(actor = %name, "directory queue full: a claim is not given back");
        }
    }

    fn leave(&self, ns: &str, name: &str, key: &[String]) {
        let path = directory_path(ns, name, key);
        if self.directory.leave(path).is_err() {
            // The member key then goes with the lease (or with this node's
            // next release of the actor); until then a new owner may wait
            // for this node's clients in vain (at most GATHER_MAX).
            warn!(actor = %name, "directory queue full: a member key is not deleted");
        }
    }

    fn may_serve(&self, now: Instant) -> bool {
        self.directory.fence_alive(now)
    }

    fn placed(&self, ns: &str, name: &str, key: &[String], revision: i64, runner: &str) {
        let path = directory_path(ns, name, key);
        // Full: the claim keeps an empty runner; nothing depends on it.
        let _ = self.directory.placed(path, revision, runner.to_owned());
    }

    fn runner_up(&self, ns: &str, runner: &str) {
        let _ = self.directory.runner_up(ns.to_owned(), runner.to_owned());
    }

    fn runner_down(&self, ns: &str, runner: &str) {
        let _ = self.directory.runner_down(ns.to_owned(), runner.to_owned());
    }
}

/// Joins the worker's actors to the cluster and follows the directory.
pub(super) fn join(worker: &Rc<Worker>, directory: Arc<Directory>, config: &Config) {
    let Some(cluster) = &config.cluster else {
        return;
    };
    let port = DirectoryPort {
        directory: directory.clone(),
        node: cluster.node_id.clone(),
    };
    worker.actors.join_cluster(Rc::new(port));
    let side = PeerSide {
        env: worker.env.clone(),
        actors: worker.actors.clone(),
        limits: Cell::new(SessionLimits::tunnel(config)),
        worker_id: worker.id,
        worker_count: worker.worker_count,
        node: cluster.node_id.clone(),
        token: cluster.token.clone(),
        stopping: worker.stopping.clone(),
    };
    monoio::spawn(follow(worker.clone(), directory, Rc::new(side)));
}

/// This worker's links to other nodes, by node id.
type Links = HashMap<String, (String, Rc<Dialing>)>;

async fn follow(worker: Rc<Worker>, directory: Arc<Directory>, side: Rc<PeerSide>) {
    let inbox = directory.inbox(worker.id);
    let mut links = Links::new();
    loop {
        let event = monoio::select! {
            _ = worker.stopping.wait() => break,
            e = inbox.next() => e,
        };
        let Some(event) = event else { break };
        on_event(&worker, &side, &mut links, event);
    }
    // The worker stops: no more links (its drain closes what is open).
    for (_, (_, dialing)) in links {
        dialing.stop();
    }
}

fn on_event(worker: &Worker, side: &Rc<PeerSide>, links: &mut Links, event: DirectoryEvent) {
    let actors = &worker.actors;
    match event {
        DirectoryEvent::Claimed { actor, outcome } => {
            let claim = match outcome {
                ClaimResult::Won { revision, members } => Claim::Won { revision, members },
                ClaimResult::Owned { node, revision, .. } => Claim::Owned { node, revision },
                ClaimResult::Failed(why) => Claim::Failed(why),
            };
            actors.on_claim(&actor.namespace, &actor.name, &actor.key, claim);
        }
        DirectoryEvent::ClaimGone { actor, revision } => {
            actors.on_claim_gone(&actor.namespace, &actor.name, &actor.key, revision)
        }
        DirectoryEvent::NodeUp { node, address } => link_to(side, links, node, address),
        DirectoryEvent::NodeGone { node } => {
            if let Some((_, dialing)) = links.remove(&node) {
                dialing.stop();
            }
            actors.on_node_gone(&node);
        }
        DirectoryEvent::Fenced => {
            actors.fence("the directory could not renew this node's lease");
            // Other nodes' clients move off this node: their links drop
            // (and are dialed again; this node refuses what it no longer owns).
            for (_, dialing) in links.values() {
                dialing.drop_link();
            }
        }
        DirectoryEvent::Renewed => actors.unfence(),
        DirectoryEvent::Resync => actors.on_directory_resync(),
    }
}

/// Keeps a link to `node` at `address` (a new address replaces the link).
fn link_to(side: &Rc<PeerSide>, links: &mut Links, node: String, address: String) {
    if node == side.node {
        return;
    }
    // Their clients' connection ids would collide on the nodes both link to.
    let others = std::iter::once(side.node.as_str()).chain(links.keys().map(String::as_str));
    let twin = hash_twin(&node, others);
    if let Some(twin) = twin {
        error!(%node, %twin, "node ids that hash alike (15 bits of FNV-1a): not linking to this node; rename one of them");
        return;
    }
    if let Some((known, dialing)) = links.get(&node) {
        if *known == address && !dialing.is_stopped() {
            return;
        }
        dialing.stop();
    }
    let dialing = Rc::new(Dialing::default());
    let target = NodeAddress {
        node: node.clone(),
        address: address.clone(),
    };
    monoio::spawn(dial_node(side.clone(), target, dialing.clone()));
    links.insert(node, (address, dialing));
}
