//! The cluster-wide actor directory (issue 16, groundwork) against a real
//! etcd: Debian's `etcd-server`, started per test on loopback ports in a
//! temp dir. Without etcd every test prints SKIPPED and passes.

mod common;

use common::etcd::{self, Etcd};

/// The helper itself: etcd starts, answers, and leaves nothing behind.
#[test]
fn etcd_starts_answers_and_is_removed_on_drop() {
    if !etcd::available() {
        return;
    }
    let a = Etcd::start();
    let b = Etcd::start();
    assert_ne!(a.client_addr, b.client_addr);
    let dir = a.dir().to_owned();
    assert!(dir.join("data").exists());
    drop(a);
    assert!(!dir.exists(), "the data dir goes with the etcd");
    assert!(std::net::TcpStream::connect(b.client_addr).is_ok());
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::WAIT;
use tether::cluster::directory::{ClaimResult, Directory, DirectoryEvent};
use tether::cluster::etcd::Client;
use tether::cluster::model::{self, ActorPath, NodeRecord};
use tether::config::ClusterConfig;

/// The config minimum: leases expire within 2 s, so the tests are quick.
const TTL: Duration = Duration::from_secs(2);

fn config(endpoint: &str, id: &str, ttl: Duration) -> ClusterConfig {
    ClusterConfig {
        node_id: id.into(),
        advertise: format!("{id}.test:7000"),
        etcd_endpoints: vec![endpoint.into()],
        etcd_user: None,
        etcd_password: None,
        lease_ttl: ttl,
        token: "cluster-token-0123456789".into(),
        tls: false,
    }
}

/// Two workers; an actor's home is its key's segment count, modulo 2.
fn start_with(config: &ClusterConfig) -> Result<Arc<Directory>, String> {
    let node = NodeRecord {
        advertise: config.advertise.clone(),
    };
    Directory::start(config, node, 2, Box::new(|a: &ActorPath| a.key.len()))
}

fn node(etcd: &Etcd, id: &str) -> Arc<Directory> {
    start_with(&config(&etcd.endpoint, id, TTL)).unwrap()
}

fn actor(key: &[&str]) -> ActorPath {
    ActorPath::new("default", "chat", key).unwrap()
}

/// The first event on `worker`'s inbox that `want` accepts, within the
/// tests' deadline; others are passed over.
#[track_caller]
fn event<T>(
    dir: &Directory,
    worker: usize,
    what: &str,
    mut want: impl FnMut(DirectoryEvent) -> Option<T>,
) -> T {
    let until = Instant::now() + WAIT;
    loop {
        match dir.inbox(worker).try_pop() {
            Some(e) => {
                if let Some(t) = want(e) {
                    return t;
                }
            }
            None => {
                assert!(Instant::now() < until, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn claimed(dir: &Directory, worker: usize, want: &ActorPath) -> ClaimResult {
    event(dir, worker, "a claim's answer", |e| match e {
        DirectoryEvent::Claimed { actor, outcome } if actor == *want => Some(outcome),
        _ => None,
    })
}

fn claim_once(dir: &Directory, actor: &ActorPath) -> ClaimResult {
    dir.claim(0, actor.clone()).unwrap();
    claimed(dir, 0, actor)
}

/// A claim's decided outcome: `Failed` (a loaded machine can make a 2 s
/// lease miss its keep-alives, or a call its deadline) is retried until
/// the tests' deadline.
#[track_caller]
fn claim(dir: &Directory, actor: &ActorPath) -> ClaimResult {
    let until = Instant::now() + WAIT;
    loop {
        match claim_once(dir, actor) {
            ClaimResult::Failed(why) if Instant::now() < until => {
                eprintln!("claim failed, retrying: {why}");
                std::thread::sleep(Duration::from_millis(50));
            }
            outcome => return outcome,
        }
    }
}

fn claim_gone(dir: &Directory, worker: usize, want: &ActorPath) {
    event(dir, worker, "the claim to go", |e| match e {
        DirectoryEvent::ClaimGone { actor, .. } if actor == *want => Some(()),
        _ => None,
    })
}

/// A node's lease ended: every worker hears the node go, and the home
/// worker of its one-segment `actor` (worker 1) that the claim went, in
/// either order (one revision deletes both).
fn lease_gone(dir: &Directory, node: &str, actor: &ActorPath) {
    event(dir, 0, "the node to go", |e| match e {
        DirectoryEvent::NodeGone { node: n } if n == node => Some(()),
        _ => None,
    });
    let mut seen = (false, false);
    event(dir, 1, "the node and its claim to go", |e| {
        match e {
            DirectoryEvent::NodeGone { node: n } if n == node => seen.0 = true,
            DirectoryEvent::ClaimGone { actor: a, .. } if a == *actor => seen.1 = true,
            _ => {}
        }
        (seen.0 && seen.1).then_some(())
    });
}

/// A raw call to etcd with a client of the test's own.
fn etcd_call(etcd: &Etcd, path: &str, body: &str) -> serde_json::Value {
    let mut c = Client::new(&config(&etcd.endpoint, "t", TTL), Arc::default()).unwrap();
    let b = c
        .call(path, body.as_bytes(), Instant::now() + WAIT)
        .unwrap();
    serde_json::from_slice(&b).unwrap()
}

#[test]
fn start_fails_with_a_reason_when_etcd_is_unreachable() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let t0 = Instant::now();
    let err = start_with(&config(&endpoint, "edge-a", TTL)).err().unwrap();
    assert!(err.contains("etcd"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(6), "bounded");
    let err = start_with(&config("ftp://127.0.0.1:1", "edge-a", TTL))
        .err()
        .unwrap();
    assert!(err.contains("ftp://"), "{err}");
}

#[test]
fn two_nodes_race_for_one_actor_and_exactly_one_wins() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start();
    let (a, b) = (node(&etcd, "edge-a"), node(&etcd, "edge-b"));
    for round in 0..5 {
        // A key with `/` inside a segment, as clients may send.
        let round_key = format!("room/{round}");
        let actor = actor(&["race", &round_key]);
        a.claim(0, actor.clone()).unwrap();
        b.claim(0, actor.clone()).unwrap();
        // A claim that failed (a loaded machine) is asked again.
        let decided = |dir: &Directory| match claimed(dir, 0, &actor) {
            ClaimResult::Failed(_) => claim(dir, &actor),
            outcome => outcome,
        };
        let (ra, rb) = (decided(&a), decided(&b));
        let (winner, revision, loser_saw) = match (ra, rb) {
            (ClaimResult::Won { revision, .. }, other) => ("edge-a", revision, other),
            (other, ClaimResult::Won { revision, .. }) => ("edge-b", revision, other),
            other => panic!("no winner: {other:?}"),
        };
        assert_eq!(
            loser_saw,
            ClaimResult::Owned {
                node: winner.into(),
                address: Some(format!("{winner}.test:7000")),
                revision
            }
        );
        let (w, l) = if winner == "edge-a" {
            (&a, &b)
        } else {
            (&b, &a)
        };
        // The owner claiming again is a win, with the same claim; the
        // other node's claim made it a member.
        let loser = if winner == "edge-a" {
            "edge-b"
        } else {
            "edge-a"
        };
        assert_eq!(
            claim(w, &actor),
            ClaimResult::Won {
                revision,
                members: vec![loser.into()]
            }
        );
        // A release reaches the other node's watch, on the home worker.
        w.release(actor.clone(), revision).unwrap();
        claim_gone(l, actor.key.len() % 2, &actor);
        // The release took the releasing node's member key with it.
        let ClaimResult::Won {
            revision: next,
            members,
        } = claim(l, &actor)
        else {
            panic!("the other node takes the released actor")
        };
        assert!(next > revision, "a new claim, a new revision");
        assert_eq!(members, Vec::<String>::new());
        // A stale release (the old revision) leaves the new claim alone.
        w.release(actor.clone(), revision).unwrap();
        assert_eq!(
            claim(l, &actor),
            ClaimResult::Won {
                revision: next,
                members: vec![]
            }
        );
    }
    // No ClaimGone ever went to a worker that is not the actor's home:
    // every actor here has two segments, so worker 1 never saw one.
    while let Some(e) = b.inbox(1).try_pop() {
        assert!(!matches!(e, DirectoryEvent::ClaimGone { .. }), "{e:?}");
    }
}

#[test]
fn a_node_that_stops_without_revoking_loses_its_claims_when_its_lease_expires() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start();
    let a = node(&etcd, "edge-a");
    let b = node(&etcd, "edge-b");
    // b read the nodes when it started.
    event(&b, 1, "edge-a announced", |e| match e {
        DirectoryEvent::NodeUp { node, address } if node == "edge-a" => Some(address),
        _ => None,
    });
    let actor = actor(&["takeover"]);
    let ClaimResult::Won {
        revision: first, ..
    } = claim(&a, &actor)
    else {
        panic!("a claims first")
    };
    assert!(matches!(claim(&b, &actor), ClaimResult::Owned { .. }));
    let stopped = Instant::now();
    drop(a); // as a crash: no revoke, the lease expires
    lease_gone(&b, "edge-a", &actor);
    assert!(
        stopped.elapsed() >= TTL / 2,
        "the lease outlived its last keep-alive"
    );
    let outcome = claim(&b, &actor);
    let ClaimResult::Won { revision, members } = outcome else {
        panic!("b takes it over: {outcome:?}")
    };
    assert!(members.is_empty(), "a's member key went with its lease");
    assert!(revision > first);
}

#[test]
fn shutdown_revokes_the_lease_at_once() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start();
    let a = start_with(&config(&etcd.endpoint, "edge-a", Duration::from_secs(60))).unwrap();
    let b = node(&etcd, "edge-b");
    let actor = actor(&["leaving"]);
    assert!(matches!(claim(&a, &actor), ClaimResult::Won { .. }));
    let t0 = Instant::now();
    a.shutdown();
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "shutdown is bounded"
    );
    assert!(!a.fence_alive(Instant::now()));
    lease_gone(&b, "edge-a", &actor);
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "long before the 60 s TTL"
    );
    assert!(matches!(claim(&b, &actor), ClaimResult::Won { .. }));
    drop(a);
}

/// Waits for the next keep-alive to be sent and answered; returns an
/// instant before it was sent.
fn a_keepalive_passes(dir: &Directory) -> Instant {
    let before = dir.requests().keepalives;
    let mut prev = Instant::now();
    common::wait_for("a keep-alive", || {
        let sent = dir.requests().keepalives > before;
        if !sent {
            prev = Instant::now();
        }
        sent
    });
    // Answered: the fence now reaches past what any older keep-alive
    // gave (send instant + TTL − the 500 ms margin).
    let past = prev + TTL - Duration::from_millis(600);
    common::wait_for("the keep-alive's answer", || dir.fence_alive(past));
    prev
}

#[test]
fn a_dead_etcd_fences_the_node_before_its_lease_could_expire() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start();
    let a = node(&etcd, "edge-a");
    assert!(a.fence_alive(Instant::now()));
    let sent_after = a_keepalive_passes(&a);
    drop(etcd); // killed: no more answers
    let fenced_at = event(&a, 0, "Fenced", |e| {
        (e == DirectoryEvent::Fenced).then(Instant::now)
    });
    event(&a, 1, "Fenced on every worker", |e| {
        (e == DirectoryEvent::Fenced).then_some(())
    });
    assert!(!a.fence_alive(fenced_at));
    // The lease lives at least TTL past the keep-alive's send instant.
    let expiry = sent_after + TTL;
    assert!(fenced_at < expiry, "fenced {:?} late", fenced_at - expiry);
    assert!(
        fenced_at > sent_after + TTL / 2,
        "kept serving while the lease was good"
    );
    // Claims fail instead of hanging or panicking; shutdown is bounded.
    assert!(matches!(
        claim_once(&a, &actor(&["x"])),
        ClaimResult::Failed(_)
    ));
    let t0 = Instant::now();
    a.shutdown();
    assert!(t0.elapsed() < Duration::from_millis(1500));
}

#[test]
fn a_revoked_lease_fences_then_renews() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start();
    let a = node(&etcd, "edge-a");
    let actor = actor(&["revoked"]);
    assert!(matches!(claim(&a, &actor), ClaimResult::Won { .. }));
    let leases = etcd_call(&etcd, "/v3/lease/leases", "{}");
    for l in leases["leases"].as_array().unwrap() {
        let body = format!(r#"{{"ID":"{}"}}"#, l["ID"].as_str().unwrap());
        etcd_call(&etcd, "/v3/lease/revoke", &body);
    }
    event(&a, 0, "Fenced", |e| {
        (e == DirectoryEvent::Fenced).then_some(())
    });
    event(&a, 0, "Renewed", |e| {
        (e == DirectoryEvent::Renewed).then_some(())
    });
    common::wait_for("the fence to reopen", || a.fence_alive(Instant::now()));
    // The claim went with the old lease; the node claims anew.
    let ClaimResult::Won { .. } = claim(&a, &actor) else {
        panic!("claims again under the new lease")
    };
}

#[test]
fn one_claim_costs_one_txn_and_idling_costs_only_keepalives() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start();
    let a = node(&etcd, "edge-a");
    let c0 = a.requests();
    assert_eq!((c0.grants, c0.puts), (1, 1), "{c0:?}");
    common::wait_for("the watch to open", || a.requests().watch_opens == 1);
    let c1 = a.requests();
    assert!(matches!(
        claim(&a, &actor(&["counted"])),
        ClaimResult::Won { .. }
    ));
    let c2 = a.requests();
    assert_eq!((c2.txns - c1.txns, c2.claims - c1.claims), (1, 1));
    assert_eq!(c2.total - c1.total, c2.keepalives - c1.keepalives + 1);
    // Two TTLs of nothing: keep-alives every TTL/4, nothing else.
    let window = 2 * TTL;
    std::thread::sleep(window);
    let c3 = a.requests();
    let keepalives = c3.keepalives - c2.keepalives;
    assert!((6..=10).contains(&keepalives), "{keepalives} keep-alives");
    assert_eq!(c3.total - c2.total, keepalives, "{c2:?} → {c3:?}");
}

#[test]
fn a_node_authenticates_when_etcd_has_users() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start();
    etcd_call(&etcd, "/v3/auth/role/add", r#"{"name":"root"}"#);
    etcd_call(
        &etcd,
        "/v3/auth/user/add",
        r#"{"name":"root","password":"secret"}"#,
    );
    etcd_call(
        &etcd,
        "/v3/auth/user/grant",
        r#"{"user":"root","role":"root"}"#,
    );
    etcd_call(&etcd, "/v3/auth/enable", "{}");
    let mut c = config(&etcd.endpoint, "edge-a", TTL);
    assert!(start_with(&c).is_err(), "anonymous is refused");
    c.etcd_user = Some("root".into());
    c.etcd_password = Some("secret".into());
    let a = start_with(&c).unwrap();
    assert!(matches!(
        claim(&a, &actor(&["auth"])),
        ClaimResult::Won { .. }
    ));
    assert!(
        a.requests().auths >= 2,
        "the request and watch threads each"
    );
}

#[test]
fn a_node_reaches_etcd_over_tls_verifying_it_against_the_ca_it_is_given() {
    if !etcd::available() {
        return;
    }
    let pki = common::pki::Pki::new();
    let etcd = Etcd::start_tls(&pki);
    let c = config(etcd.tls_endpoint.as_ref().unwrap(), "edge-a", TTL);
    // Only this test sets the variable; the others use plain http.
    let stranger = common::pki::Pki::new();
    std::env::set_var("TETHER_ETCD_CA", stranger.ca_path());
    let err = start_with(&c).err().expect("an unknown CA is refused");
    assert!(err.contains("etcd"), "{err}");
    std::env::set_var("TETHER_ETCD_CA", pki.ca_path());
    let a = start_with(&c).unwrap();
    event(&a, 0, "its own node, read over TLS", |e| match e {
        DirectoryEvent::NodeUp { node, .. } if node == "edge-a" => Some(()),
        _ => None,
    });
    let actor = actor(&["tls"]);
    let ClaimResult::Won { revision, .. } = claim(&a, &actor) else {
        panic!("claimed over TLS")
    };
    a.release(actor.clone(), revision).unwrap();
    claim_gone(&a, 1, &actor);
    a_keepalive_passes(&a);
}

/// The member keys of `actor` in etcd: the nodes they name, sorted.
fn member_keys(etcd: &Etcd, actor: &ActorPath) -> Vec<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let prefix = model::members_prefix(actor);
    let body = format!(
        r#"{{"key":"{}","range_end":"{}"}}"#,
        b64.encode(&prefix),
        b64.encode(model::prefix_range_end(&prefix))
    );
    let range = etcd_call(etcd, "/v3/kv/range", &body);
    let kvs = range["kvs"].as_array().cloned().unwrap_or_default();
    kvs.iter()
        .map(|kv| {
            let key = b64.decode(kv["key"].as_str().unwrap()).unwrap();
            let key = String::from_utf8(key).unwrap();
            key.strip_prefix(&prefix).unwrap().to_owned()
        })
        .collect()
}

fn won_with(dir: &Directory, actor: &ActorPath) -> (i64, Vec<String>) {
    match claim(dir, actor) {
        ClaimResult::Won { revision, members } => (revision, members),
        other => panic!("expected a win: {other:?}"),
    }
}

/// Every claim makes its node a member of the actor (a key under its
/// lease), the winner learns the other members with its claim, and a
/// member key goes with `leave`, with the node's release, and with its
/// lease.
#[test]
fn claims_record_members_and_members_go_with_leave_release_and_lease() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start();
    let (a, b, c) = (
        node(&etcd, "edge-a"),
        node(&etcd, "edge-b"),
        node(&etcd, "edge-c"),
    );
    let actor = actor(&["members", "a/b"]);
    // Key ["members"] is another actor, whose members prefix is a prefix
    // of this one's as text with `/` as the separator.
    let shorter = self::actor(&["members"]);
    let (revision, members) = won_with(&a, &actor);
    assert_eq!(
        members,
        Vec::<String>::new(),
        "the first claim: no one else"
    );
    assert!(matches!(claim(&b, &actor), ClaimResult::Owned { .. }));
    assert!(matches!(claim(&c, &actor), ClaimResult::Owned { .. }));
    assert!(matches!(claim(&c, &shorter), ClaimResult::Won { .. }));
    assert_eq!(member_keys(&etcd, &actor), ["edge-a", "edge-b", "edge-c"]);
    assert_eq!(member_keys(&etcd, &shorter), ["edge-c"]);
    // The owner's claim again (its own, under its lease) lists the others.
    assert_eq!(
        won_with(&a, &actor),
        (revision, vec!["edge-b".into(), "edge-c".into()])
    );

    // b's clients left: its member key goes.
    let leaves = b.requests().leaves;
    b.leave(actor.clone()).unwrap();
    common::wait_for("b's member key to go", || {
        member_keys(&etcd, &actor) == ["edge-a", "edge-c"]
    });
    assert_eq!(b.requests().leaves, leaves + 1, "counted");
    assert_eq!(won_with(&a, &actor), (revision, vec!["edge-c".into()]));

    // a releases the actor: its claim and its member key go together.
    a.release(actor.clone(), revision).unwrap();
    claim_gone(&c, actor.key.len() % 2, &actor);
    assert_eq!(member_keys(&etcd, &actor), ["edge-c"]);
    let (taken, members) = won_with(&c, &actor);
    assert!(taken > revision);
    assert_eq!(
        members,
        Vec::<String>::new(),
        "c is the only member, and wins"
    );

    // b claims again (a new client), then dies: its member key goes with
    // its lease, and the owner's claim no longer lists it.
    assert!(matches!(claim(&b, &actor), ClaimResult::Owned { .. }));
    assert_eq!(won_with(&c, &actor), (taken, vec!["edge-b".into()]));
    drop(b);
    event(&c, 0, "b to go", |e| match e {
        DirectoryEvent::NodeGone { node } if node == "edge-b" => Some(()),
        _ => None,
    });
    assert_eq!(member_keys(&etcd, &actor), ["edge-c"]);
    assert_eq!(won_with(&c, &actor), (taken, vec![]));
    assert_eq!(member_keys(&etcd, &shorter), ["edge-c"], "untouched");
}
