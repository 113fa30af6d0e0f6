//! `Actors` in a cluster against a scripted directory (issue 16; these
//! began as a review's failing tests).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::{Claim, ClusterPort};
use crate::config::Config;
use crate::http::route::ActorPath;
use crate::server::actors::{Actors, SharedLimits};
use crate::server::conn::env::ConnEnv;

#[derive(Default)]
struct Port {
    claims: RefCell<Vec<(String, Vec<String>)>>,
    releases: RefCell<Vec<i64>>,
    alive: Cell<bool>,
}

impl ClusterPort for Rc<Port> {
    fn node_id(&self) -> &str {
        "me"
    }
    fn claim(&self, _: usize, _: &str, name: &str, key: &[String]) -> bool {
        self.claims.borrow_mut().push((name.into(), key.to_vec()));
        true
    }
    fn release(&self, _: &str, _: &str, _: &[String], revision: i64) {
        self.releases.borrow_mut().push(revision);
    }
    fn may_serve(&self, _: Instant) -> bool {
        self.alive.get()
    }
}

fn actors_in_cluster() -> (Rc<Actors>, Rc<Port>) {
    let config = Rc::new(Config::default());
    let env = Rc::new(ConnEnv::new(config.clone()));
    let stats: Arc<crate::server::conn::stats::WorkerStats> = Arc::default();
    let shared = SharedLimits::new(&config);
    let actors = Rc::new(Actors::new(
        0,
        env.live.clone(),
        stats,
        env.wakeups.clone(),
        shared,
        Arc::default(),
    ));
    let port = Rc::new(Port::default());
    port.alive.set(true);
    actors.join_cluster(Rc::new(port.clone()));
    (actors, port)
}

fn path() -> ActorPath {
    ActorPath {
        ns: "default".into(),
        name: "chat".into(),
        key: vec!["k".into()],
        query: None,
    }
}

/// The sweep fences the node (`check_fence`: the lease deadline
/// passed) and clears the owner cache; a claim the request thread had in
/// flight under the old lease then answers `Won`. `on_claim` records it as
/// `Mine` although the node is fenced, the later `Fenced` event is a no-op
/// (already fenced: the cache is not cleared again), and after `Renewed`
/// the node trusts a claim of a lease that is gone: it says it owns the
/// actor (accepting other nodes' StartActor for it) and places it on its
/// own runners, while another node may hold the real claim.
#[test]
fn a_claim_won_under_a_lost_lease_is_not_trusted_after_renewal() {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let (actors, port) = actors_in_cluster();
        let p = path();
        let _actor = actors.get_or_start_as(&p, None).unwrap();
        assert_eq!(port.claims.borrow().len(), 1, "the directory is asked");
        // The lease deadline passes: the sweep fences the node first.
        port.alive.set(false);
        actors.check_fence(Instant::now());
        // The claim sent just before, under the old lease, answers Won.
        actors.on_claim(&p.ns, &p.name, &p.key, Claim::Won { revision: 7 });
        actors.fence("the directory could not renew this node's lease");
        // A new lease: the old one (and claim 7 with it) is gone.
        port.alive.set(true);
        actors.unfence();
        assert!(
            !actors.owns(&p.ns, &p.name, &p.key),
            "claim 7 died with the old lease, yet the node says it owns the actor"
        );
    });
}

/// `ClaimGone` carries the deleting revision. A node that released an
/// actor's claim (the actor was forgotten) and re-claimed it at once (a
/// new client) holds a NEW claim; the watch's delete event of the OLD one
/// then arrives and `on_claim_gone` treats the new claim as lost: it drops
/// `Mine`, stops the actor on its runner (`fence_actor`) and asks again.
#[test]
fn the_claim_gone_of_a_released_revision_leaves_the_next_claim_alone() {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let (actors, port) = actors_in_cluster();
        let p = path();
        let _actor = actors.get_or_start_as(&p, None).unwrap();
        actors.on_claim(&p.ns, &p.name, &p.key, Claim::Won { revision: 9 });
        assert!(actors.owns(&p.ns, &p.name, &p.key));
        let asked = port.claims.borrow().len();
        // The delete event of an earlier claim (revision 5, released before).
        actors.on_claim_gone(&p.ns, &p.name, &p.key, 5);
        assert!(
            actors.owns(&p.ns, &p.name, &p.key),
            "claim 9 still holds, but the worker forgot it (asked {} more times)",
            port.claims.borrow().len() - asked
        );
    });
}

/// `relayed_conn_id` keeps 15 bits of the origin node's hash, so two
/// nodes can derive the same id for different clients (node-598 and
/// node-684 do): such a pair is found, and the runtime refuses to link the
/// second (`runtime/cluster.rs`), saying to rename one.
#[test]
fn two_nodes_whose_ids_hash_alike_are_told_apart() {
    use super::peers::{hash_twin, relayed_conn_id};
    let remote = (1u64 << 56) | 42; // client 42 of worker 1, on each node
    let (a, b) = (
        relayed_conn_id(1, "node-598", remote),
        relayed_conn_id(1, "node-684", remote),
    );
    assert_eq!(a, b, "the pair collides");
    assert_eq!(hash_twin("node-684", ["me", "node-598"]), Some("node-598"));
    assert_eq!(hash_twin("node-684", ["me", "node-684", "other"]), None);
}

/// The sweep fenced the worker (the deadline passed), then a late
/// keep-alive confirmed the lease again: the directory never fenced, so
/// no `Renewed` comes, and the worker must not stay fenced for good.
#[test]
fn a_worker_fenced_by_its_sweep_serves_again_once_the_lease_is_confirmed() {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let (actors, port) = actors_in_cluster();
        let p = path();
        let _actor = actors.get_or_start_as(&p, None).unwrap();
        port.alive.set(false);
        actors.check_fence(Instant::now());
        actors.on_claim(&p.ns, &p.name, &p.key, Claim::Won { revision: 3 });
        assert!(!actors.owns(&p.ns, &p.name, &p.key), "fenced");
        port.alive.set(true);
        actors.check_fence(Instant::now());
        actors.on_claim(&p.ns, &p.name, &p.key, Claim::Won { revision: 4 });
        assert!(actors.owns(&p.ns, &p.name, &p.key), "serving again");
    });
}
