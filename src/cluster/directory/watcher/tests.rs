//! The watch thread against a scripted fake etcd: what a real one can
//! only be coaxed into by timing (a compaction under a reopened watch)
//! is one line of the script here.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::*;
use crate::cluster::directory::Shared;
use crate::cluster::etcd::Counters;
use crate::config::ClusterConfig;

/// Answers one request per connection with the next body of `script`
/// (status 200, then close); returns the requests. Gives up after a few
/// seconds so a test fails rather than hangs.
fn fake(script: Vec<String>) -> (String, JoinHandle<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    let t = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        let mut script = script.into_iter();
        while script.len() > 0 && Instant::now() < until {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            // Every request here has a small JSON body ending in `}`.
            while !got.ends_with(b"}") {
                match s.read(&mut b) {
                    Ok(n) if n > 0 => got.extend_from_slice(&b[..n]),
                    _ => break,
                }
            }
            let body = script.next().unwrap();
            let answer = format!(
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes());
            seen.push(String::from_utf8_lossy(&got).into_owned());
        }
        seen
    });
    (endpoint, t)
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

fn nodes(revision: i64) -> String {
    format!(
        r#"{{"header":{{"revision":"{revision}"}},"kvs":[{{"key":"{}","value":"{}"}}]}}"#,
        b64("/tether/v1/nodes/edge-b"),
        b64(r#"{"advertise":"b:1"}"#)
    )
}

fn config(endpoint: String) -> ClusterConfig {
    ClusterConfig {
        node_id: "edge-a".into(),
        advertise: "a:1".into(),
        etcd_endpoints: vec![endpoint],
        etcd_user: None,
        etcd_password: None,
        lease_ttl: Duration::from_secs(2),
        token: "t".repeat(16),
        tls: false,
    }
}

#[track_caller]
fn next(shared: &Shared, worker: usize) -> DirectoryEvent {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(e) = shared.inboxes[worker].try_pop() {
            return e;
        }
        assert!(Instant::now() < until, "no event on worker {worker}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn deletes_become_events_and_a_compacted_watch_resyncs_from_a_fresh_read() {
    let actor = ActorPath::new("default", "chat", &["r"]).unwrap();
    let stream = format!(
        "{}\n{}\n{}\n",
        r#"{"result":{"header":{"revision":"5"},"created":true}}"#,
        format_args!(
            r#"{{"result":{{"header":{{"revision":"6"}},"events":[{{"type":"DELETE","kv":{{"key":"{}","mod_revision":"6"}}}},{{"type":"DELETE","kv":{{"key":"{}","mod_revision":"6"}}}}]}}}}"#,
            b64(&actor.etcd_key()),
            b64("/tether/v1/nodes/edge-b")
        ),
        r#"{"result":{"header":{},"canceled":true,"compact_revision":"9"}}"#,
    );
    let (endpoint, server) = fake(vec![nodes(5), stream, nodes(12)]);
    let counters = Arc::new(Counters::default());
    let config = config(endpoint);
    let client = Client::new(&config, counters.clone()).unwrap();
    let node = NodeRecord {
        advertise: "a:1".into(),
    };
    let home = Box::new(|_: &ActorPath| 1);
    let shared = Arc::new(Shared::new(&config, node, 2, home, counters));
    let s = shared.clone();
    let thread = std::thread::spawn(move || run(s, client));
    let up = DirectoryEvent::NodeUp {
        node: "edge-b".into(),
        address: "b:1".into(),
    };
    let gone = DirectoryEvent::NodeGone {
        node: "edge-b".into(),
    };
    assert_eq!(next(&shared, 0), up);
    assert_eq!(next(&shared, 0), gone);
    assert_eq!(next(&shared, 0), DirectoryEvent::Resync);
    assert_eq!(next(&shared, 0), up, "read afresh");
    assert_eq!(next(&shared, 1), up);
    assert_eq!(
        next(&shared, 1),
        DirectoryEvent::ClaimGone { actor, revision: 6 },
        "home"
    );
    assert_eq!(next(&shared, 1), gone);
    assert_eq!(next(&shared, 1), DirectoryEvent::Resync);
    shared.stop.store(true, Ordering::Release);
    thread.join().unwrap();
    let seen = server.join().unwrap();
    assert!(seen[1].starts_with("POST /v3/watch"), "{}", seen[1]);
    assert!(
        seen[1].contains(r#""start_revision":"6""#),
        "after the read"
    );
    assert_eq!(
        shared
            .addresses
            .lock()
            .unwrap()
            .get("edge-b")
            .map(String::as_str),
        Some("b:1")
    );
}
