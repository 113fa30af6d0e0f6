//! `Actors` in a cluster against a scripted directory (issue 16; these
//! began as a review's failing tests).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::actor::{Actor, ActorState};
use super::{Claim, ClusterPort};
use crate::config::Config;
use crate::http::route::ActorPath;
use crate::server::actors::{Actors, SharedLimits};
use crate::server::conn::env::ConnEnv;

#[derive(Default)]
struct Port {
    claims: RefCell<Vec<(String, Vec<String>)>>,
    releases: RefCell<Vec<i64>>,
    leaves: RefCell<Vec<Vec<String>>>,
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
    fn leave(&self, _: &str, _: &str, key: &[String]) {
        self.leaves.borrow_mut().push(key.to_vec());
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

/// A claim won with no other member.
fn won(revision: i64) -> Claim {
    Claim::Won {
        revision,
        members: Vec::new(),
    }
}

fn won_with(revision: i64, members: &[&str]) -> Claim {
    Claim::Won {
        revision,
        members: members.iter().map(|m| m.to_string()).collect(),
    }
}

fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
}

/// Whether the actor still waits for other nodes' clients (else it was
/// placed: with no runner here, it waits for one, and says so).
fn gathering(actor: &Actor) -> bool {
    assert_eq!(actor.state(), ActorState::Placing);
    let why = actor.last_refusal();
    assert!(!why.is_empty(), "placed: it says why it waits");
    why.contains("waiting for the clients of nodes")
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
        actors.on_claim(&p.ns, &p.name, &p.key, won(7));
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
        actors.on_claim(&p.ns, &p.name, &p.key, won(9));
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
        actors.on_claim(&p.ns, &p.name, &p.key, won(3));
        assert!(!actors.owns(&p.ns, &p.name, &p.key), "fenced");
        port.alive.set(true);
        actors.check_fence(Instant::now());
        actors.on_claim(&p.ns, &p.name, &p.key, won(4));
        assert!(actors.owns(&p.ns, &p.name, &p.key), "serving again");
    });
}

/// The claim is won while nodes b and c hold member keys of the actor (they
/// had clients of it on the owner that died): it is not placed until both
/// started it here, then at once. (With the fixed 250 ms pause it was
/// placed after 250 ms whoever had come.)
#[test]
fn an_actor_won_with_members_waits_until_they_all_joined() {
    runtime().block_on(async {
        let (actors, _port) = actors_in_cluster();
        let p = path();
        let actor = actors.get_or_start_as(&p, None).unwrap();
        actor.add_conn(1); // a client of this node's
        actors.on_claim(&p.ns, &p.name, &p.key, won_with(5, &["b", "c"]));
        assert!(
            actors.owns(&p.ns, &p.name, &p.key),
            "b and c may start it here"
        );
        assert!(gathering(&actor), "{}", actor.last_refusal());
        actors.peer_joined(&actor, "b");
        assert!(gathering(&actor), "c has not come");
        actors.sweep(Instant::now());
        assert!(gathering(&actor), "the sweep does not place it early");
        assert!(
            actor.last_refusal().contains("nodes c "),
            "{}",
            actor.last_refusal()
        );
        actors.peer_joined(&actor, "c");
        assert!(
            !gathering(&actor),
            "placed once everyone joined: {}",
            actor.last_refusal()
        );
    });
}

/// No other node has clients of it: it is placed at once, even with
/// clients here (the fixed pause held every such actor 250 ms).
#[test]
fn an_actor_won_without_members_is_placed_at_once() {
    runtime().block_on(async {
        let (actors, _port) = actors_in_cluster();
        let p = path();
        let actor = actors.get_or_start_as(&p, None).unwrap();
        actor.add_conn(1);
        actors.on_claim(&p.ns, &p.name, &p.key, won(5));
        assert!(!gathering(&actor), "{}", actor.last_refusal());
        assert!(
            !actor.last_refusal().contains("gathering"),
            "{}",
            actor.last_refusal()
        );
    });
}

/// A member whose node leaves the cluster (its lease ended) is waited for
/// no more; a member key that outlived its clients costs GATHER_MAX once.
#[test]
fn a_member_that_never_comes_is_waited_for_until_its_node_goes_or_the_deadline() {
    runtime().block_on(async {
        let (actors, _port) = actors_in_cluster();
        let p = path();
        let actor = actors.get_or_start_as(&p, None).unwrap();
        actors.on_claim(&p.ns, &p.name, &p.key, won_with(5, &["b"]));
        assert!(gathering(&actor));
        actors.on_node_gone("elsewhere");
        assert!(gathering(&actor), "another node's going changes nothing");
        actors.on_node_gone("b");
        assert!(!gathering(&actor), "b is gone: {}", actor.last_refusal());

        let q = ActorPath {
            key: vec!["other".into()],
            ..path()
        };
        let other = actors.get_or_start_as(&q, None).unwrap();
        actors.on_claim(&q.ns, &q.name, &q.key, won_with(6, &["c"]));
        assert!(gathering(&other));
        actors.backdate_claim(&other, super::cluster::GATHER_MAX);
        actors.sweep(Instant::now());
        assert!(
            !gathering(&other),
            "the deadline passed: {}",
            other.last_refusal()
        );
    });
}

/// The same claim answered twice (a claim asked again after 5 s without
/// an answer) does not start the wait over for nodes that joined already.
#[test]
fn a_claim_answered_again_keeps_who_joined() {
    runtime().block_on(async {
        let (actors, _port) = actors_in_cluster();
        let p = path();
        let actor = actors.get_or_start_as(&p, None).unwrap();
        actors.on_claim(&p.ns, &p.name, &p.key, won_with(5, &["b", "c"]));
        actors.peer_joined(&actor, "b");
        actors.on_claim(&p.ns, &p.name, &p.key, won_with(5, &["b", "c"]));
        actors.sweep(Instant::now());
        assert!(
            actor.last_refusal().contains("nodes c "),
            "{}",
            actor.last_refusal()
        );
    });
}

/// A node whose clients of an actor owned elsewhere all left deletes its
/// member key (`leave`); an owner's release deletes its own with the claim.
#[test]
fn forgetting_an_actor_leaves_or_releases_it() {
    use crate::ws::CloseCode;
    runtime().block_on(async {
        let (actors, port) = actors_in_cluster();
        let p = path();
        let actor = actors.get_or_start_as(&p, None).unwrap();
        actors.on_claim(
            &p.ns,
            &p.name,
            &p.key,
            Claim::Owned {
                node: "b".into(),
                revision: 3,
            },
        );
        actors.remove_actor(&actor, CloseCode::GOING_AWAY, "test");
        assert_eq!(*port.leaves.borrow(), vec![p.key.clone()]);
        assert!(port.releases.borrow().is_empty());

        let actor = actors.get_or_start_as(&p, None).unwrap();
        actors.on_claim(&p.ns, &p.name, &p.key, won(8));
        actors.remove_actor(&actor, CloseCode::GOING_AWAY, "test");
        assert_eq!(*port.releases.borrow(), [8]);
        assert_eq!(port.leaves.borrow().len(), 1, "the release deletes it");

        // A claim answered for an actor gone meanwhile.
        let actor = actors.get_or_start_as(&p, None).unwrap();
        actors.remove_actor(&actor, CloseCode::GOING_AWAY, "test");
        assert_eq!(port.leaves.borrow().len(), 1, "asking: the answer decides");
        actors.on_claim(
            &p.ns,
            &p.name,
            &p.key,
            Claim::Owned {
                node: "b".into(),
                revision: 3,
            },
        );
        assert_eq!(port.leaves.borrow().len(), 2, "the lost claim's member key");

        // The owning node left the cluster: this worker forgot whose the
        // actor was (the next placement asks again); the actor goes before
        // that, and its member key with it.
        let actor = actors.get_or_start_as(&p, None).unwrap();
        let owned = Claim::Owned {
            node: "b".into(),
            revision: 11,
        };
        actors.on_claim(&p.ns, &p.name, &p.key, owned);
        actors.on_node_gone("b");
        actors.remove_actor(&actor, CloseCode::GOING_AWAY, "test");
        assert_eq!(port.leaves.borrow().len(), 3, "forgotten owner: left too");
    });
}
