//! A node cut off from the network, not killed (issue 16): three nodes in
//! network namespaces of their own (veth links to a bridge, etcd on the
//! bridge), each with its runner inside its namespace. The node that owns
//! a chat is cut off: it must stop its actor (lease fencing) before the
//! others take it over, so the key never runs twice; the clients on the
//! other nodes stay connected and lose nothing; once the link is back the
//! node rejoins and forwards its new clients to the new owner. Skips
//! (saying so) without root, iproute2 or etcd.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::child::ChildGateway;
use common::cluster::{
    assert_each_senders_sequence, member, next_text, runs_here, Talk, CLUSTER_TOKEN, RUNNER_TOKEN,
};
use common::etcd::{self, Etcd};
use common::lifelog::{assert_never_twice, instances, Entries, Logged};
use common::netns::{self, Lab};
use common::{wait_for, RawWs, ADMIN_TOKEN};
use tether::runner::{MemoryStore, Runner, RunnerOptions};

const CLIENT_PORT: u16 = 7000;
const ADMIN_PORT: u16 = 7001;
const RUNNER_PORT: u16 = 7100;

fn node_config(lab: &Lab, i: usize, etcd: &str) -> String {
    let addr = lab.node_addr(i);
    format!(
        r#"
[server]
workers = 2
log_level = "info"
shutdown_drain = "200ms"
[client]
listen = "{addr}:{CLIENT_PORT}"
[admin]
listen = "{addr}:{ADMIN_PORT}"
token = "{ADMIN_TOKEN}"
[runners]
listen = "0.0.0.0:{RUNNER_PORT}"
token = "{RUNNER_TOKEN}"
[actors]
start_timeout = "20s"
[[namespaces]]
name = "default"
open = true
[cluster]
node_id = "node-{i}"
advertise = "{addr}:{RUNNER_PORT}"
etcd_endpoints = ["{etcd}"]
lease_ttl = "2s"
token = "{CLUSTER_TOKEN}"
"#
    )
}

struct Node {
    // Stopped before its gateway goes (fields drop in this order).
    _runner: Runner,
    _gateway: ChildGateway,
    client: SocketAddr,
    admin: SocketAddr,
}

/// Node `i`: its gateway and its runner, both inside its namespace.
fn start_node(lab: &Lab, i: usize, etcd: &str, store: &MemoryStore, log: &Entries) -> Node {
    let gateway = ChildGateway::start_as(
        lab.command(i, env!("CARGO_BIN_EXE_tether")),
        &node_config(lab, i, etcd),
    );
    let mut options = RunnerOptions::new(&format!("ws://127.0.0.1:{RUNNER_PORT}"), RUNNER_TOKEN);
    options.key = format!("runner-of-node-{i}");
    options.max_backoff = Duration::from_millis(200);
    options.state = Some(Arc::new(store.clone()));
    let actors = Logged {
        runner: format!("node-{i}"),
        log: log.clone(),
        inner: tether::runner::BuiltinActors,
    };
    // Its threads are made inside the namespace, and stay there.
    let runner = lab.in_ns(i, move || Runner::start(options, actors));
    assert!(
        runner.wait_connected(Duration::from_secs(10)),
        "node {i}'s runner connects"
    );
    let addr = lab.node_addr(i);
    Node {
        _gateway: gateway,
        _runner: runner,
        client: SocketAddr::from((addr, CLIENT_PORT)),
        admin: SocketAddr::from((addr, ADMIN_PORT)),
    }
}

#[test]
fn a_partitioned_owner_stops_its_actor_before_another_node_takes_it_and_no_client_notices() {
    if !netns::available() || !etcd::available() {
        return;
    }
    let lab = Lab::new(3);
    let etcd = Etcd::start_on(lab.bridge_addr());
    let (store, log) = (MemoryStore::default(), Entries::default());
    let nodes: Vec<Node> = (0..3)
        .map(|i| start_node(&lab, i, &etcd.endpoint, &store, &log))
        .collect();
    let path = "/actors/chat/partitioned";
    let key = vec!["partitioned".to_string()];
    // Node 0's client makes it the owner; node 0 is the one cut off.
    let _first = RawWs::connect(nodes[0].client, path);
    wait_for("node 0 to run the actor", || {
        runs_here(nodes[0].admin, path)
    });

    const PER_NODE: usize = 3;
    let talk = Talk::new();
    let go = Arc::new(Barrier::new(2 * PER_NODE + 1));
    let done = Arc::new(Barrier::new(2 * PER_NODE));
    let sent = Arc::new(Mutex::new(BTreeMap::new()));
    let mut threads = Vec::new();
    for node in [1, 2] {
        for m in 0..PER_NODE {
            let ws = RawWs::connect(nodes[node].client, path);
            let me = format!("n{node}m{m}");
            let (t, g, d, s) = (talk.clone(), go.clone(), done.clone(), sent.clone());
            threads.push((
                me.clone(),
                std::thread::spawn(move || member(ws, me, t, g, d, s)),
            ));
        }
    }
    go.wait();
    talk.wait_for_more_lines(60);
    lab.cut(0);
    wait_for("a node still linked to run the actor", || {
        runs_here(nodes[1].admin, path) || runs_here(nodes[2].admin, path)
    });
    // They talk on with the actor in its new place.
    talk.wait_for_more_lines(120);
    talk.stop();
    let results: Vec<_> = threads.into_iter().map(|(n, t)| (n, t.join())).collect();
    let sent = sent.lock().unwrap().clone();
    for (name, seen) in results {
        let seen = seen.unwrap_or_else(|_| panic!("{name} was disconnected or failed"));
        assert_each_senders_sequence(&name, &seen, &sent);
    }
    // The cut-off node's runner dropped the actor (its node fenced itself)
    // before the new owner's runner created it.
    assert_never_twice(&log, &key);
    let lives = instances(&log, &key);
    let fenced = lives.iter().find(|l| l.0 == "node-0").and_then(|l| l.2);
    let taken = lives.iter().find(|l| l.0 != "node-0").map(|l| l.1);
    let (fenced, taken) = (
        fenced.expect("node 0 dropped it"),
        taken.expect("another node took it"),
    );
    eprintln!(
        "node 0 stopped the actor {:?} before another node started it",
        taken - fenced
    );

    // Back on the network, node 0 forwards a new client to the new owner.
    lab.heal(0);
    let mut back = wait_for_client(nodes[0].client, path);
    back.send(true, 1, b"node 0 is back");
    assert_eq!(
        next_text(&mut back, "node 0's new client"),
        "node 0 is back"
    );
    assert!(
        !runs_here(nodes[0].admin, path),
        "node 0 forwards instead of running it"
    );
    assert_never_twice(&log, &key);
}

/// A client of `path` on a node that is rejoining: it answers once it has
/// a lease again and the actor has a place.
fn wait_for_client(addr: SocketAddr, path: &str) -> RawWs {
    let mut client = None;
    wait_for("the rejoined node to take a client", || {
        let (status, _, stream) = common::upgrade_from("0.0.0.0", addr, path);
        if status == 101 {
            client = Some(RawWs::from_upgraded(stream));
        }
        client.is_some()
    });
    client.unwrap()
}
