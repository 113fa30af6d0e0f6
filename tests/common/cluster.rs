//! Three (or more) Tether nodes sharing one etcd, for the cluster tests:
//! each node a child process (so it can be killed for real) on loopback
//! ports chosen up front (a node advertises its runner listener to the
//! others before it starts), each with one in-process runner of the
//! builtin actors; the runners share one state store, as runners on
//! shared storage would.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use tether::runner::{ActorFactory, BuiltinActors, MemoryStore, Runner, RunnerOptions};

use super::child::ChildGateway;
use super::etcd::Etcd;
use super::lifelog::{Entries, Logged};
use super::RawWs;

pub const CLUSTER_TOKEN: &str = "cluster-token-for-tests-0001";
pub const RUNNER_TOKEN: &str = "runner-token-for-tests-0001";

/// One node: its process and its runner.
pub struct Node {
    pub id: String,
    // Stopped before its gateway goes (fields drop in this order).
    pub runner: Option<Runner>,
    pub gateway: Option<ChildGateway>,
    pub runner_addr: SocketAddr,
}

impl Node {
    pub fn client_addr(&self) -> SocketAddr {
        self.gateway.as_ref().expect("node running").client_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.gateway.as_ref().expect("node running").admin_addr
    }

    /// Kills the node's process (SIGKILL: no lease revoked, no goodbye).
    pub fn kill(&mut self) {
        drop(self.gateway.take());
    }
}

pub struct Cluster {
    // The nodes go before etcd (fields drop in this order).
    pub nodes: Vec<Node>,
    pub etcd: Etcd,
    pub store: MemoryStore,
    /// Every actor instance's life, on every node's runner.
    pub log: Entries,
}

/// `N` distinct free ports on `ip` now: all bound before any is let go (a
/// port bound and dropped can come back from the next bind, which once
/// gave a node the same port for two listeners). Another process could
/// take one meanwhile, which the loopback tests accept.
pub fn free_ports<const N: usize>(ip: &str) -> [SocketAddr; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind((ip, 0)).unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap())
}

/// A node's listeners: runners (advertised to the other nodes), clients,
/// admin.
pub struct NodeAddrs {
    pub runner: SocketAddr,
    pub client: SocketAddr,
    pub admin: SocketAddr,
}

/// The configuration of node `id` on `addrs`.
pub fn node_config(id: &str, addrs: &NodeAddrs, etcd: &str, extra: &str) -> String {
    let NodeAddrs {
        runner,
        client,
        admin: admin_addr,
    } = addrs;
    format!(
        r#"
[server]
workers = 2
log_level = "info"
shutdown_drain = "200ms"
[client]
listen = "{client}"
[admin]
listen = "{admin_addr}"
token = "{admin}"
[runners]
listen = "{runner}"
token = "{RUNNER_TOKEN}"
[actors]
start_timeout = "20s"
[cluster]
node_id = "{id}"
advertise = "{runner}"
etcd_endpoints = ["{etcd}"]
lease_ttl = "2s"
token = "{CLUSTER_TOKEN}"
{extra}
"#,
        admin = super::ADMIN_TOKEN,
    )
}

impl Cluster {
    /// Starts etcd and `n` nodes, each with its runner connected.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, BuiltinActors)
    }

    /// As `start`, the runners running `actors` (besides the builtin ones
    /// they do not have then).
    pub fn start_with<F: ActorFactory + Clone>(n: usize, actors: F) -> Cluster {
        let etcd = Etcd::start();
        let mut cluster = Cluster {
            etcd,
            nodes: Vec::new(),
            store: MemoryStore::default(),
            log: Entries::default(),
        };
        for i in 0..n {
            cluster.add_node(&format!("node-{i}"), "", actors.clone());
        }
        cluster
    }

    pub fn add_node<F: ActorFactory>(&mut self, id: &str, extra: &str, actors: F) -> usize {
        let [runner_addr, client, admin] = free_ports("127.0.0.1");
        let addrs = NodeAddrs {
            runner: runner_addr,
            client,
            admin,
        };
        let config = node_config(id, &addrs, &self.etcd.endpoint, extra);
        let gateway = ChildGateway::start(&config);
        let mut options = RunnerOptions::new(&format!("ws://{runner_addr}"), RUNNER_TOKEN);
        options.key = format!("runner-of-{id}");
        options.max_backoff = Duration::from_millis(200);
        options.state = Some(Arc::new(self.store.clone()));
        let logged = Logged {
            runner: id.to_owned(),
            log: self.log.clone(),
            inner: actors,
        };
        let runner = Runner::start(options, logged);
        assert!(
            runner.wait_connected(Duration::from_secs(10)),
            "{id}'s runner connects"
        );
        self.nodes.push(Node {
            id: id.to_owned(),
            gateway: Some(gateway),
            runner_addr,
            runner: Some(runner),
        });
        self.nodes.len() - 1
    }

    /// `GET path` on node `i`'s admin API: status and JSON body.
    pub fn admin_json(&self, i: usize, path: &str) -> (u16, serde_json::Value) {
        admin_json_at(self.nodes[i].admin_addr(), path)
    }
}

/// `GET path` on the admin API at `addr`: status and JSON body.
pub fn admin_json_at(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        super::ADMIN_TOKEN
    );
    let response = super::raw_exchange(addr, request.as_bytes());
    let status = super::status_of(&response);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Whether the admin API at `addr` says the actor at `path` runs on a
/// runner of that node's own (not another node's tunnel).
pub fn runs_here(addr: SocketAddr, path: &str) -> bool {
    let (status, json) = admin_json_at(addr, path);
    status == 200
        && json["state"] == "running"
        && json["runner"]
            .as_str()
            .is_some_and(|r| !r.starts_with("node:"))
}

const TEXT: u8 = 1;

/// Next text frame (answering pings); a disconnect fails the test.
pub fn next_text(ws: &mut RawWs, who: &str) -> String {
    // Pings come every few seconds and keep the socket's read timeout from
    // firing: the deadline is the test's own.
    let until = std::time::Instant::now() + super::WAIT;
    loop {
        assert!(
            std::time::Instant::now() < until,
            "{who}: no message within {:?}",
            super::WAIT
        );
        let f = ws
            .recv_until(until)
            .unwrap_or_else(|| panic!("{who}: disconnected (or nothing within {:?})", super::WAIT));
        match f.opcode {
            TEXT => return String::from_utf8(f.payload).unwrap(),
            9 => ws.send(true, 10, &f.payload),
            8 => panic!("{who}: closed with {:?}", f.close_code()),
            _ => {}
        }
    }
}

/// Member `me`: sends numbered lines (each once the room has broadcast
/// its previous one) while `talk` is on, then reads until it has seen every
/// surviving member's last line. Returns every line it saw, in order.
/// Members talking: whether they go on, and how many lines all of them
/// have seen come back so far (what a test waits on). Every member has a
/// line in flight at any time, so a lost owner leaves several batches of
/// one actor undelivered, on some nodes and not others (PROTOCOL §5a).
#[derive(Default)]
pub struct Talk {
    pub on: AtomicBool,
    pub lines: std::sync::atomic::AtomicUsize,
}

impl Talk {
    pub fn new() -> Arc<Talk> {
        let talk = Talk::default();
        talk.on.store(true, Ordering::Relaxed);
        Arc::new(talk)
    }

    /// Waits until `more` lines beyond those seen now came back.
    #[track_caller]
    pub fn wait_for_more_lines(&self, more: usize) {
        let goal = self.lines.load(Ordering::Relaxed) + more;
        super::wait_for("the members to talk on", || {
            self.lines.load(Ordering::Relaxed) >= goal
        });
    }

    pub fn stop(&self) {
        self.on.store(false, Ordering::Relaxed);
    }
}

pub fn member(
    mut ws: RawWs,
    me: String,
    talk: Arc<Talk>,
    go: Arc<Barrier>,
    done: Arc<Barrier>,
    sent: Arc<Mutex<BTreeMap<String, usize>>>,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut n = 0;
    go.wait();
    // A member that fails still reaches `done`, so that the others (and
    // the test) fail with its reason instead of waiting for it for good.
    let talked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        while talk.on.load(Ordering::Relaxed) {
            let line = format!("{me} {n}");
            ws.send(true, TEXT, line.as_bytes());
            loop {
                let got = next_text(&mut ws, &me);
                seen.push(got.clone());
                if got == line {
                    break;
                }
            }
            n += 1;
            talk.lines.fetch_add(1, Ordering::Relaxed);
        }
    }));
    if let Err(why) = talked {
        talk.stop();
        done.wait();
        std::panic::resume_unwind(why);
    }
    sent.lock().unwrap().insert(me.clone(), n);
    done.wait();
    let sent = sent.lock().unwrap().clone();
    for (other, count) in &sent {
        let last = format!("{other} {}", count - 1);
        while !seen.contains(&last) {
            seen.push(next_text(&mut ws, &me));
        }
    }
    seen
}

/// Each sender's lines, as `who` saw them, are exactly 0..sent in order:
/// nothing lost, repeated or reordered.
#[track_caller]
pub fn assert_each_senders_sequence(who: &str, seen: &[String], sent: &BTreeMap<String, usize>) {
    for (sender, count) in sent {
        let numbers: Vec<usize> = seen
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{sender} ")))
            .map(|n| n.parse().unwrap())
            .collect();
        let want: Vec<usize> = (0..*count).collect();
        assert_eq!(numbers, want, "{who} saw {sender}'s lines");
    }
}
