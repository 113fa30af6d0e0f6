//! Several nodes, one actor directory on etcd (issue 16), over loopback:
//! clients of one key on three nodes share one actor; killing the node
//! that owns it moves it without disconnecting the other nodes' clients or
//! losing their messages; two nodes racing for one key make one actor.
//! Each test skips (saying so) where etcd cannot be installed.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::cluster::{assert_each_senders_sequence, member, next_text, Cluster};
use common::{etcd, wait_for, RawWs};

const TEXT: u8 = 1;

/// Which node's runner runs the actor: the node whose status names a
/// runner of its own (the others name the owner's node tunnel).
fn owner_of(cluster: &Cluster, path: &str) -> Option<usize> {
    let owners: Vec<usize> = (0..cluster.nodes.len())
        .filter(|&i| cluster.nodes[i].gateway.is_some())
        .filter(|&i| {
            let (status, json) = cluster.admin_json(i, path);
            status == 200
                && json["state"] == "running"
                && json["runner"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("runner-of-"))
        })
        .collect();
    assert!(
        owners.len() <= 1,
        "{path} runs on several nodes: {owners:?}"
    );
    owners.first().copied()
}

#[test]
fn clients_of_one_key_on_three_nodes_share_one_actor() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(3);
    let path = "/actors/chat/shared";
    let mut clients: Vec<RawWs> = (0..6)
        .map(|i| RawWs::connect(cluster.nodes[i % 3].client_addr(), path))
        .collect();
    for i in 0..clients.len() {
        let line = format!("hello from client {i} on node {}", i % 3);
        clients[i].send(true, TEXT, line.as_bytes());
        // Every client, on every node, hears it: one actor.
        for (j, client) in clients.iter_mut().enumerate() {
            assert_eq!(next_text(client, &format!("client {j}")), line);
        }
    }
    let owner = owner_of(&cluster, "/actors/chat/shared").expect("one node runs it");
    for i in (0..3).filter(|&i| i != owner) {
        let (_, json) = cluster.admin_json(i, "/actors/chat/shared");
        let forwarded = format!("node:{}", cluster.nodes[owner].id);
        assert_eq!(
            json["runner"],
            forwarded.as_str(),
            "node {i} forwards to the owner"
        );
    }
}

#[test]
fn killing_the_node_that_owns_an_actor_moves_it_with_no_disconnect_and_nothing_lost() {
    if !etcd::available() {
        return;
    }
    let mut cluster = Cluster::start(3);
    let path = "/actors/chat/survivors";
    // The first client makes its node the owner: that node is killed, and
    // its own clients go with it; the other nodes' clients must not notice.
    let first = RawWs::connect(cluster.nodes[0].client_addr(), path);
    let owner = {
        let c = &cluster;
        let mut found = None;
        wait_for("the actor to run on one node", || {
            found = owner_of(c, path);
            found.is_some()
        });
        found.unwrap()
    };
    drop(first);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != owner).collect();
    const PER_NODE: usize = 3;
    let members = survivors.len() * PER_NODE;
    let talking = Arc::new(AtomicBool::new(true));
    let go = Arc::new(Barrier::new(members + 1));
    let done = Arc::new(Barrier::new(members));
    let sent = Arc::new(Mutex::new(BTreeMap::new()));
    let mut threads = Vec::new();
    for &node in &survivors {
        for m in 0..PER_NODE {
            let ws = RawWs::connect(cluster.nodes[node].client_addr(), path);
            let me = format!("n{node}m{m}");
            let (t, g, d, s) = (talking.clone(), go.clone(), done.clone(), sent.clone());
            let name = me.clone();
            threads.push((name, std::thread::spawn(move || member(ws, me, t, g, d, s))));
        }
    }
    go.wait();
    std::thread::sleep(Duration::from_millis(500));
    cluster.nodes[owner].kill();
    let moved = {
        let c = &cluster;
        let mut found = None;
        wait_for("the actor to run on a surviving node", || {
            found = owner_of(c, path);
            found.is_some()
        });
        found.unwrap()
    };
    assert!(survivors.contains(&moved));
    // They talk on with the actor in its new place.
    std::thread::sleep(Duration::from_millis(1500));
    talking.store(false, Ordering::Relaxed);
    let results: Vec<_> = threads.into_iter().map(|(n, t)| (n, t.join())).collect();
    let sent = sent.lock().unwrap().clone();
    eprintln!("lines sent per member, the owner killed midway: {sent:?}");
    for (name, seen) in results {
        let seen = seen.unwrap_or_else(|_| panic!("{name} failed"));
        assert_each_senders_sequence(&name, &seen, &sent);
    }
    assert!(sent.values().all(|&n| n > 0));
}

#[test]
fn two_nodes_racing_to_create_the_same_keys_make_one_actor_each() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(2);
    const KEYS: usize = 12;
    let (a, b) = (
        cluster.nodes[0].client_addr(),
        cluster.nodes[1].client_addr(),
    );
    let go = Arc::new(Barrier::new(2 * KEYS));
    let connect = |addr, key: usize| {
        let go = go.clone();
        std::thread::spawn(move || {
            go.wait();
            RawWs::connect(addr, &format!("/actors/chat/race-{key}"))
        })
    };
    let pairs: Vec<_> = (0..KEYS).map(|k| (connect(a, k), connect(b, k))).collect();
    for (k, (on_a, on_b)) in pairs.into_iter().enumerate() {
        let (mut on_a, mut on_b) = (on_a.join().unwrap(), on_b.join().unwrap());
        let line = format!("race {k}");
        on_a.send(true, TEXT, line.as_bytes());
        assert_eq!(
            next_text(&mut on_b, "the client on node 1"),
            line,
            "one actor for key {k}"
        );
        assert_eq!(next_text(&mut on_a, "the client on node 0"), line);
        assert!(owner_of(&cluster, &format!("/actors/chat/race-{k}")).is_some());
    }
}
