//! Limits that keep one abuser from hurting others, over real sockets: each
//! 127.0.0.x source address is a client address of its own. Every limit
//! answers with its documented status and counts in `/metrics`.

mod common;

use common::*;
use tether::runner::BuiltinActors;

fn refused_metric(h: &Harness, reason: &str) -> u64 {
    let metrics = h.admin("GET", "/metrics");
    let series = format!("tether_connections_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

#[test]
fn one_address_may_hold_only_so_many_connections() {
    let mut c = test_config();
    c.client.max_connections_per_address = 3;
    let h = start(c);
    let to = h.client_addr;
    let mut held: Vec<_> = (0..3)
        .map(|i| upgrade_from("127.0.0.2", to, &format!("/actors/echo/a{i}")))
        .inspect(|(status, answer, _)| assert_eq!(*status, 101, "{answer}"))
        .collect();
    let (status, answer, _) = upgrade_from("127.0.0.2", to, "/actors/echo/a0");
    assert_eq!(status, 429, "{answer}");
    assert!(
        answer.contains("too many connections from your address"),
        "{answer}"
    );
    assert_eq!(
        upgrade_from("127.0.0.3", to, "/actors/echo/a0").0,
        101,
        "another address"
    );
    assert_eq!(refused_metric(&h, "max_connections_per_address"), 1);
    // A closed connection gives its place back.
    held.pop();
    wait_for("the place to come back", || {
        upgrade_from("127.0.0.2", to, "/actors/echo/a0").0 == 101
    });
    h.shutdown();
}

#[test]
fn the_gateway_holds_at_most_max_connections() {
    let mut c = test_config();
    c.client.max_connections = 2;
    let h = start(c);
    let to = h.client_addr;
    let _a = upgrade_from("127.0.0.2", to, "/actors/echo/x");
    let _b = upgrade_from("127.0.0.3", to, "/actors/echo/y");
    let (status, answer, _) = upgrade_from("127.0.0.4", to, "/actors/echo/z");
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("connection limit"), "{answer}");
    assert_eq!(refused_metric(&h, "max_connections"), 1);
    let metrics = h.admin("GET", "/metrics");
    assert!(metrics.contains("tether_client_connections 2"), "{metrics}");
    h.shutdown();
}

#[test]
fn one_address_may_open_only_so_many_connections_a_second() {
    let mut c = test_config();
    c.client.new_per_second_per_address = 1;
    c.client.new_burst_per_address = 3;
    let h = start(c);
    let to = h.client_addr;
    let started = std::time::Instant::now();
    let mut opened = 0;
    let (status, answer) = loop {
        // Each connection ends at once: only the rate, not the count, binds.
        let (status, answer, _) = upgrade_from("127.0.0.5", to, "/actors/echo/r");
        if status != 101 {
            break (status, answer);
        }
        opened += 1;
        assert!(opened < 30, "never refused");
    };
    let allowed = 3 + started.elapsed().as_secs() as usize + 1;
    assert!(
        (3..=allowed).contains(&opened),
        "{opened} opened, {allowed} allowed"
    );
    assert_eq!(status, 429, "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    assert_eq!(upgrade_from("127.0.0.6", to, "/actors/echo/r").0, 101);
    assert!(refused_metric(&h, "new_per_second_per_address") >= 1);
    h.shutdown();
}

#[test]
fn an_actor_holds_at_most_max_connections_per_actor() {
    let mut c = test_config();
    c.actors.max_connections_per_actor = 2;
    let h = start(c);
    let to = h.client_addr;
    let _a = upgrade_from("127.0.0.2", to, "/actors/echo/room");
    let _b = upgrade_from("127.0.0.3", to, "/actors/echo/room");
    let (status, answer, _) = upgrade_from("127.0.0.4", to, "/actors/echo/room");
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("actor_full"), "{answer}");
    assert_eq!(upgrade_from("127.0.0.4", to, "/actors/echo/other").0, 101);
    assert_eq!(refused_metric(&h, "max_connections_per_actor"), 1);
    h.shutdown();
}

#[test]
fn a_runner_identity_holds_at_most_max_tunnels() {
    let mut c = test_config();
    c.server.workers = 1;
    c.runners.max_tunnels_per_identity = 1;
    let h = start_bare(c);
    let url = format!("{}/runners/connect", h.runner_url());
    let first = tunnel_request(&url);
    assert!(first.is_ok(), "{:?}", first.err());
    let second = tunnel_request(&url);
    assert_eq!(second.err(), Some(429));
    assert_eq!(refused_metric(&h, "max_tunnels_per_identity"), 1);
    drop(first);
    wait_for("the tunnel's place to come back", || {
        tunnel_request(&url).is_ok()
    });
    h.shutdown();
}

/// A tunnel's upgrade with the test runner token: the socket, or the status.
fn tunnel_request(url: &str) -> Result<tungstenite::WebSocket<std::net::TcpStream>, u16> {
    use tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    let bearer = format!("Bearer {}", tether::config::DEV_RUNNER_TOKEN);
    req.headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let host = req.uri().authority().unwrap().as_str().to_owned();
    let stream = std::net::TcpStream::connect(host).unwrap();
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(r.status().as_u16())
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_runner_gets_at_most_max_actors_per_runner_whatever_it_declares() {
    let mut c = test_config();
    c.runners.max_actors_per_runner = 1;
    let mut h = start_bare(c);
    let mut o = h.runner_options();
    o.capacity = 50;
    h.add_runner(o, BuiltinActors);
    let to = h.client_addr;
    let (status, answer, _first) = upgrade_from("127.0.0.2", to, "/actors/echo/one");
    assert_eq!(status, 101, "{answer}");
    let (status, answer, _) = upgrade_from("127.0.0.2", to, "/actors/echo/two");
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("no_capacity"), "{answer}");
    assert_eq!(refused_metric(&h, "no_capacity"), 1);
    h.shutdown();
}

#[test]
fn every_way_a_connection_ends_gives_its_place_back() {
    let mut c = test_config();
    c.actors.max_connections_per_actor = 1;
    let h = start(c);
    let to = h.client_addr;
    let mut held = Vec::new();
    for (path, expected) in [
        ("/actors/echo/p", 101),   // linked to its actor
        ("/actors/echo/p", 503),   // the actor is full
        ("/nowhere", 404),         // no actor path
        ("/actors/bogus!/k", 400), // a bad name
        ("/healthz", 200),
    ] {
        let (status, answer, stream) = upgrade_from("127.0.0.7", to, path);
        assert_eq!(status, expected, "{path}: {answer}");
        held.push(stream);
    }
    let _admin_says = h.admin("POST", "/actors/echo/p/publish"); // nothing to do with places
    drop(held);
    wait_for("every place to be given back", || {
        h.admin("GET", "/metrics")
            .contains("tether_client_connections 0")
    });
    h.shutdown();
}
