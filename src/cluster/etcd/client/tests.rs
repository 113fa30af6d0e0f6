//! The client's retries against a scripted fake etcd on loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

/// Answers each request with the next `(status, body)` of `script`, on
/// however many connections; returns the requests' heads and bodies (early,
/// after a few seconds, if the client stops asking: a test fails, never
/// hangs).
fn fake(script: Vec<(u16, &'static str)>) -> (String, JoinHandle<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    l.set_nonblocking(true).unwrap();
    let t = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut script = script.into_iter();
        let until = Instant::now() + Duration::from_secs(5);
        while script.len() > 0 && Instant::now() < until {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            while let Some(req) = read_request(&mut s) {
                let (status, body) = script.next().unwrap();
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(answer.as_bytes()).unwrap();
                seen.push(req);
                if script.len() == 0 {
                    break;
                }
            }
        }
        seen
    });
    (endpoint, t)
}

fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).ok()? == 0 {
            return None;
        }
        got.push(b[0]);
    }
    let head = String::from_utf8(got).ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))?
        .parse()
        .ok()?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(head + &String::from_utf8(body).ok()?)
}

fn config(endpoints: Vec<String>, user: bool) -> ClusterConfig {
    ClusterConfig {
        node_id: "n".into(),
        advertise: "n:1".into(),
        etcd_endpoints: endpoints,
        etcd_user: user.then(|| "u".into()),
        etcd_password: user.then(|| "p".into()),
        lease_ttl: Duration::from_secs(2),
        token: "t".repeat(16),
        tls: false,
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

const GRANT: &str = r#"{"ID":"7","TTL":"2"}"#;

#[test]
fn an_invalid_token_authenticates_again_once() {
    let invalid = r#"{"error":"x","message":"etcdserver: invalid auth token","code":16}"#;
    let (ep, server) = fake(vec![
        (200, r#"{"token":"one"}"#),
        (401, invalid),
        (200, r#"{"token":"two"}"#),
        (200, GRANT),
    ]);
    let counters = Arc::new(Counters::default());
    let mut c = Client::new(&config(vec![ep], true), counters.clone()).unwrap();
    assert_eq!(
        c.lease_grant(2, deadline()).unwrap(),
        Lease { id: 7, ttl: 2 }
    );
    let seen = server.join().unwrap();
    assert!(seen[0].starts_with("POST /v3/auth/authenticate"));
    assert!(seen[0].contains(r#""name":"u""#));
    assert!(seen[1].contains("authorization: one\r\n"));
    assert!(
        !seen[2].contains("authorization:"),
        "no token to get a token"
    );
    assert!(seen[3].contains("authorization: two\r\n"));
    assert_eq!(counters.auths.load(Ordering::Relaxed), 2);
    assert_eq!(counters.total.load(Ordering::Relaxed), 4);
}

#[test]
fn a_dead_endpoint_is_passed_over_and_a_refusal_is_not_retried() {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_ep = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let refused = r#"{"error":"x","message":"etcdserver: requested lease not found","code":5}"#;
    let (ep, server) = fake(vec![(200, GRANT), (404, refused)]);
    let mut c = Client::new(&config(vec![dead_ep, ep], false), Arc::default()).unwrap();
    assert_eq!(c.lease_grant(2, deadline()).unwrap().id, 7);
    let e = c.lease_revoke(7, deadline()).unwrap_err();
    assert!(matches!(e, Error::Etcd { code: 5, .. }), "{e}");
    assert_eq!(
        server.join().unwrap().len(),
        2,
        "one connection, kept alive"
    );
}

#[test]
fn garbage_from_etcd_is_an_error() {
    // Well-framed but not JSON: the call succeeded, the answer is refused.
    let (ep, server) = fake(vec![(200, "{not json")]);
    let mut c = Client::new(&config(vec![ep], false), Arc::default()).unwrap();
    assert!(matches!(c.lease_grant(2, deadline()), Err(Error::Bad(_))));
    server.join().unwrap();
}
