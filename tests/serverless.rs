//! The runner library's serverless entry point (issue 15): `/metadata`
//! says what the function speaks, `/start` starts a runner that dials the
//! gateway named in the request and streams keepalives until it is drained
//! or the caller goes away. Driven over real sockets against a gateway.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tether::runner::serverless::{http, ServerlessHandler, SERVERLESS_PROTOCOL};
use tether::runner::{ActorFactory, BuiltinActors};

fn function_host() -> http::HttpServer {
    let factory: Arc<dyn ActorFactory> = Arc::new(BuiltinActors);
    let handler = ServerlessHandler::new(factory, None).keepalive(Duration::from_millis(100));
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    http::serve(listener, handler).expect("serves")
}

/// Sends `head` and returns the connection, read timeout set.
fn request(addr: SocketAddr, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("function host listens");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s
}

/// A whole `Connection: close` answer: status and body.
fn exchange(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut answer = String::new();
    request(addr, head).read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    (status_of(head), body.to_owned())
}

fn start_head(h: &Harness, key: &str) -> String {
    format!(
        "GET /start HTTP/1.1\r\nhost: fn\r\nx-tether-gateway: {}\r\nx-tether-token: {}\r\nx-tether-pool: default\r\nx-tether-runner-key: {key}\r\n\r\n",
        h.runner_url(),
        tether::config::DEV_RUNNER_TOKEN
    )
}

#[test]
fn metadata_names_the_protocol_and_the_actors() {
    let host = function_host();
    let (status, body) = exchange(host.addr(), "GET /metadata HTTP/1.1\r\nhost: fn\r\n\r\n");
    assert_eq!(status, 200);
    let meta: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(meta["protocol"], SERVERLESS_PROTOCOL);
    assert_eq!(meta["version"], 1);
    let names = meta["actor_names"].as_array().expect("a list");
    assert!(names.iter().any(|n| n == "echo"), "{meta}");
    // What the gateway will check of a pool's function.
    let checked = tether::http::serverless::check_metadata(body.as_bytes()).expect("passes");
    assert!(checked.actor_names.contains(&"chat".to_owned()));
}

#[test]
fn bad_requests_get_their_status() {
    let host = function_host();
    let (status, body) = exchange(host.addr(), "GET /start HTTP/1.1\r\nhost: fn\r\n\r\n");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("x-tether-gateway"), "{body}");
    let (status, _) = exchange(host.addr(), "POST /start HTTP/1.1\r\nhost: fn\r\n\r\n");
    assert_eq!(status, 405);
    let (status, _) = exchange(host.addr(), "GET /elsewhere HTTP/1.1\r\nhost: fn\r\n\r\n");
    assert_eq!(status, 404);
}

#[test]
fn a_started_runner_serves_actors_until_its_caller_goes_away() {
    let h = start_bare(test_config());
    let host = function_host();
    let stream = request(host.addr(), &start_head(&h, "fn-1"));
    let mut events = BufReader::new(stream);
    let mut line = String::new();
    events.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    wait_for("the started runner's tunnels", || {
        h.stat(|s| &s.tunnels) > 0
    });

    // The only runner is the function's: an actor answers through it.
    let mut client = RawWs::connect(h.client_addr, "/actors/echo/serverless");
    client.echo("through a function");

    // The response streams keepalive comments while the runner lives.
    let mut keepalives = 0;
    while keepalives < 2 {
        line.clear();
        events.read_line(&mut line).expect("the stream goes on");
        keepalives += usize::from(line == ": keepalive\n");
    }

    // The caller goes away: the next keepalive fails and the runner stops.
    drop(events);
    wait_for("the runner's tunnels closed", || {
        h.stat(|s| &s.tunnels) == 0
    });
}

#[test]
fn a_drained_runner_ends_its_stream_with_an_end_event() {
    let h = start_bare(test_config());
    let host = function_host();
    let mut events = BufReader::new(request(host.addr(), &start_head(&h, "fn-drained")));
    // Every worker's: a tunnel that connects after the drain is not
    // drained, and the stream would never end.
    let workers = h.worker_stats().len() as u64;
    wait_for("the started runner's tunnels", || {
        h.stat(|s| &s.tunnels) == workers
    });
    let answer = h.admin("POST", "/runners/fn-drained/drain");
    assert!(matches!(status_of(&answer), 200 | 202), "{answer}");
    let mut rest = String::new();
    events.read_to_string(&mut rest).expect("the stream ends");
    assert!(rest.ends_with("event: end\ndata: drained\n\n"), "{rest:?}");
    wait_for("the runner's tunnels closed", || {
        h.stat(|s| &s.tunnels) == 0
    });
}

#[test]
fn a_function_dials_only_the_gateways_it_allows() {
    let h = start_bare(test_config());
    let factory: Arc<dyn ActorFactory> = Arc::new(BuiltinActors);
    let handler = ServerlessHandler::new(factory, None).allow_gateway("ws://127.0.0.1:1");
    let host = http::serve(TcpListener::bind("127.0.0.1:0").unwrap(), handler).unwrap();
    let (status, body) = exchange(host.addr(), &start_head(&h, "fn-elsewhere"));
    assert_eq!(status, 403, "{body}");
    assert_eq!(h.stat(|s| &s.tunnels), 0, "nothing dialed");
}

#[test]
fn a_request_head_that_trickles_in_is_cut_at_its_deadline() {
    let host = function_host();
    let mut s = request(host.addr(), "GET /metadata HTTP/1.1\r\n");
    // A byte now and then never completes the head; the server gives up
    // within its 10 s deadline (a per-read timeout would wait forever).
    let started = std::time::Instant::now();
    let mut answer = String::new();
    while answer.is_empty() && started.elapsed() < Duration::from_secs(30) {
        let _ = s.write_all(b"x");
        let mut buf = [0u8; 256];
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if let Ok(n) = s.read(&mut buf) {
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}
