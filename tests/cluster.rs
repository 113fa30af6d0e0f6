//! Several nodes, one actor directory on etcd (issue 16), over loopback:
//! clients of one key on three nodes share one actor; killing the node
//! that owns it moves it without disconnecting the other nodes' clients or
//! losing their messages; two nodes racing for one key make one actor.
//! Each test skips (saying so) where etcd cannot be installed.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::cluster::{assert_each_senders_sequence, member, next_text, Cluster, Talk};
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
    let talk = Talk::new();
    let go = Arc::new(Barrier::new(members + 1));
    let done = Arc::new(Barrier::new(members));
    let sent = Arc::new(Mutex::new(BTreeMap::new()));
    let mut threads = Vec::new();
    for &node in &survivors {
        for m in 0..PER_NODE {
            let ws = RawWs::connect(cluster.nodes[node].client_addr(), path);
            let me = format!("n{node}m{m}");
            let (t, g, d, s) = (talk.clone(), go.clone(), done.clone(), sent.clone());
            let name = me.clone();
            threads.push((name, std::thread::spawn(move || member(ws, me, t, g, d, s))));
        }
    }
    go.wait();
    talk.wait_for_more_lines(60);
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
    talk.wait_for_more_lines(120);
    talk.stop();
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

/// `POST /actors/…/publish` on node `i`: the status.
fn publish(cluster: &Cluster, i: usize, actor: &str, body: &str) -> u16 {
    let request = format!(
        "POST /actors/{actor}/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        common::ADMIN_TOKEN,
        body.len()
    );
    common::status_of(&common::raw_exchange(
        cluster.nodes[i].admin_addr(),
        request.as_bytes(),
    ))
}

#[test]
fn a_publish_on_any_node_reaches_every_nodes_clients_once() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(3);
    let path = "/actors/chat/news";
    let mut clients: Vec<RawWs> = (0..6)
        .map(|i| RawWs::connect(cluster.nodes[i % 3].client_addr(), path))
        .collect();
    clients[0].send(true, TEXT, b"first");
    for c in clients.iter_mut() {
        assert_eq!(next_text(c, "a client"), "first");
    }
    let owner = owner_of(&cluster, path).expect("one node runs it");
    for (n, node) in [(owner + 1) % 3, owner].into_iter().enumerate() {
        let news = format!("news {n} from node {node}");
        assert_eq!(publish(&cluster, node, "chat/news", &news), 200);
        for (j, c) in clients.iter_mut().enumerate() {
            assert_eq!(next_text(c, &format!("client {j}")), news);
        }
    }
    // Nothing came twice: the next thing each client reads is the next line.
    clients[5].send(true, TEXT, b"last");
    for c in clients.iter_mut() {
        assert_eq!(next_text(c, "a client"), "last");
    }
}

#[test]
fn hibernated_clients_on_three_nodes_wake_their_actor_once() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start_with(3, common::rooms::Rooms);
    let key = vec!["dorm".to_string()];
    let mut clients: Vec<RawWs> = (0..3)
        .map(|i| {
            RawWs::connect(
                cluster.nodes[i].client_addr(),
                &format!("/actors/room/dorm?name=c{i}"),
            )
        })
        .collect();
    clients[0].send(true, TEXT, b"hello");
    for c in clients.iter_mut() {
        assert_eq!(next_text(c, "a member"), "hello");
    }
    clients[1].send(true, TEXT, b"sleep");
    wait_for("the room to sleep on its owner", || {
        let lives = common::lifelog::instances(&cluster.log, &key);
        lives.len() == 1 && lives[0].2.is_some()
    });
    // Every node's member speaks at once: one wake.
    let go = Arc::new(Barrier::new(3));
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let go = go.clone();
            std::thread::spawn(move || {
                go.wait();
                let line = format!("awake {i}");
                ws.send(true, TEXT, line.as_bytes());
                let mut got: Vec<String> = (0..3).map(|_| next_text(&mut ws, &line)).collect();
                got.sort();
                got
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), ["awake 0", "awake 1", "awake 2"]);
    }
    let lives = common::lifelog::instances(&cluster.log, &key);
    assert_eq!(lives.len(), 2, "created once, then woken once: {lives:?}");
    common::lifelog::assert_never_twice(&cluster.log, &key);
}

/// Node `i`'s etcd requests by kind.
fn etcd_requests(cluster: &Cluster, i: usize) -> BTreeMap<String, f64> {
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        common::ADMIN_TOKEN
    );
    let response = common::raw_exchange(cluster.nodes[i].admin_addr(), request.as_bytes());
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    common::metrics::Metrics::parse(body).by("tether_cluster_etcd_requests_total", "kind")
}

/// Requests other than keep-alives, summed over the nodes.
fn directory_work(cluster: &Cluster) -> f64 {
    (0..cluster.nodes.len())
        .flat_map(|i| etcd_requests(cluster, i))
        .filter(|(kind, _)| kind != "keepalive")
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn the_directory_costs_a_claim_per_node_per_actor_and_nothing_per_message() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(2);
    let before = directory_work(&cluster);
    const KEYS: usize = 10;
    let mut pairs: Vec<(RawWs, RawWs)> = (0..KEYS)
        .map(|k| {
            let path = format!("/actors/chat/cost-{k}");
            let first = RawWs::connect(cluster.nodes[k % 2].client_addr(), &path);
            let second = RawWs::connect(cluster.nodes[(k + 1) % 2].client_addr(), &path);
            (first, second)
        })
        .collect();
    let placed = directory_work(&cluster) - before;
    // Each node asks once per actor it serves clients of (the owner's
    // claim, the other node's answered with the owner), and the owner
    // names the runner in its claim once the actor starts.
    assert!(
        placed <= (3 * KEYS) as f64,
        "{placed} directory requests for {KEYS} actors on 2 nodes"
    );
    assert!(placed >= KEYS as f64, "every actor was claimed ({placed})");
    for round in 0..20 {
        for (k, (a, b)) in pairs.iter_mut().enumerate() {
            let line = format!("{k} {round}");
            a.send(true, TEXT, line.as_bytes());
            assert_eq!(next_text(b, "the other node's client"), line);
            assert_eq!(next_text(a, "the sender"), line);
        }
    }
    let after = directory_work(&cluster) - before;
    assert_eq!(after, placed, "messages cost no directory request");
}

#[test]
fn a_single_node_without_a_cluster_section_never_starts_the_directory() {
    let h = common::start_default();
    let mut ws = RawWs::connect(h.client_addr, "/actors/echo/alone");
    ws.echo("no etcd here");
    let threads: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .collect();
    assert!(
        threads.iter().any(|t| t.starts_with("tether-w")),
        "{threads:?}"
    );
    assert!(
        !threads.iter().any(|t| t.starts_with("tether-etcd")),
        "{threads:?}"
    );
    let metrics = h.metrics();
    assert!(metrics.get("tether_cluster_lease_confirmed", &[]).is_none());
}

#[test]
fn only_the_cluster_token_opens_a_node_link_and_it_opens_nothing_else() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(1);
    let runner = cluster.nodes[0].runner_addr;
    let ask = |path: &str, token: &str| {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        let mut s = std::net::TcpStream::connect(runner).unwrap();
        std::io::Write::write_all(&mut s, request.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = [0u8; 64];
        let n = std::io::Read::read(&mut s, &mut head).unwrap();
        common::status_of(&String::from_utf8_lossy(&head[..n]))
    };
    use common::cluster::{CLUSTER_TOKEN, RUNNER_TOKEN};
    assert_eq!(ask("/cluster/connect?tunnel=0", RUNNER_TOKEN), 401);
    assert_eq!(ask("/cluster/connect?tunnel=9", CLUSTER_TOKEN), 400);
    assert_eq!(ask("/runners/connect?tunnel=0", CLUSTER_TOKEN), 401);
    assert_eq!(ask("/cluster/connect?tunnel=0", CLUSTER_TOKEN), 101);
    // A node without [cluster] has no such path.
    let single = common::start_default();
    let request = format!(
        "GET /cluster/connect HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {CLUSTER_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let answer = common::raw_exchange(single.runner_addr, request.as_bytes());
    assert_eq!(common::status_of(&answer), 404, "{answer}");
}

#[test]
fn the_directory_names_each_actors_owner_and_runner_and_each_runners_node() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(2);
    let mut a = RawWs::connect(cluster.nodes[1].client_addr(), "/actors/chat/recorded");
    a.send(true, TEXT, b"hi");
    assert_eq!(next_text(&mut a, "the client"), "hi");
    let get = |key: &str| etcd_value(&cluster, key);
    wait_for("the claim to name node 1's runner", || {
        get("/tether/v1/actors/default/chat/recorded")
            .is_some_and(|v| v.contains("\"node-1\"") && v.contains("runner-of-node-1"))
    });
    for i in 0..2 {
        let key = format!("/tether/v1/runners/default/runner-of-node-{i}");
        wait_for("each runner's record", || {
            get(&key).is_some_and(|v| v.contains(&format!("\"node-{i}\"")))
        });
    }
}

/// The value of `key` in the cluster's etcd (JSON gateway), if any.
fn etcd_value(cluster: &Cluster, key: &str) -> Option<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = format!("{{\"key\":\"{}\"}}", b64.encode(key));
    let request = format!(
        "POST /v3/kv/range HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = common::raw_exchange(cluster.etcd.client_addr, request.as_bytes());
    let json: serde_json::Value = serde_json::from_str(answer.split_once("\r\n\r\n")?.1).ok()?;
    let value = json["kvs"][0]["value"].as_str()?;
    String::from_utf8(b64.decode(value).ok()?).ok()
}
