//! SIGHUP against the real binary: limits, tokens, namespaces and pools
//! change live; settings that need a restart are reported and kept as
//! they run. Each test rewrites the gateway's file, sends SIGHUP and
//! waits for the reload's log line, which comes once every worker runs on
//! the new configuration; then it looks at what clients and runners get.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::child::ChildGateway;
use common::raw_tunnel::{hello_answer, raw_tunnel_at};
use common::{connect_from, raw_exchange, status_of, upgrade_from, wait_for, RawWs};
use tether::runner::{BuiltinActors, Runner, RunnerOptions};
use tether::tunnel::{Frame, PROTOCOL_VERSION};

const ADMIN: &str = "reload-admin-token-0001";
const DEV: &str = tether::config::DEV_RUNNER_TOKEN;

/// Two workers on free loopback ports, with `client`, `runners` and
/// `rest` added to their sections.
fn config(client: &str, runners: &str, rest: &str) -> String {
    format!(
        "[server]\nworkers = 2\nshutdown_drain = \"100ms\"\n\
         [client]\nlisten = \"127.0.0.1:0\"\n{client}\
         [runners]\nlisten = \"127.0.0.2:0\"\n{runners}\
         [admin]\nlisten = \"127.0.0.3:0\"\ntoken = \"{ADMIN}\"\n{rest}"
    )
}

/// The reference runner (echo, chat, counter) with `token`, its tunnels up.
fn start_runner(g: &ChildGateway, token: &str, pool: &str, key: &str) -> Runner {
    let mut o = RunnerOptions::new(&format!("ws://{}", g.runner_addr), token);
    o.pool = pool.into();
    o.key = key.into();
    o.max_backoff = Duration::from_millis(200);
    let runner = Runner::start(o, BuiltinActors);
    assert!(runner.wait_connected(common::WAIT), "runner {key} connects");
    runner
}

/// The status a runner connect request with `token` gets (not 101).
fn runner_refusal(addr: SocketAddr, token: &str) -> u16 {
    let request = format!(
        "GET /runners/connect HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        common::KEY
    );
    status_of(&raw_exchange(addr, request.as_bytes()))
}

fn hello(key: &str) -> Frame {
    Frame::Hello {
        version: PROTOCOL_VERSION,
        runner_key: key.into(),
        pool: "default".into(),
        capacity: 10,
        tunnel_index: 0,
        actor_names: vec!["echo".into()],
        features: 0,
    }
}

/// Reads a tunnel until the gateway closes it; its close code.
fn close_code(ws: &mut tungstenite::WebSocket<TcpStream>) -> u16 {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(f)) => return f.map_or(1005, |f| u16::from(f.code)),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("tunnel ended without a close frame: {e}"),
        }
    }
}

/// An admin request's JSON answer.
fn admin(g: &ChildGateway, method: &str, path: &str) -> serde_json::Value {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(g.admin_addr, request.as_bytes());
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// The runner an actor runs on now (`None` while it moves).
fn runner_of(g: &ChildGateway, actor: &str) -> Option<String> {
    admin(g, "GET", actor)["runner"].as_str().map(str::to_owned)
}

#[test]
fn a_lowered_per_address_limit_refuses_new_connections_and_keeps_open_ones() {
    let g = ChildGateway::start(&config("max_connections_per_address = 10\n", "", ""));
    let runner = start_runner(&g, DEV, "default", "r1");
    let mut open: Vec<RawWs> = (0..3)
        .map(|i| connect_from("127.0.0.5", g.client_addr, &format!("/actors/echo/{i}")))
        .collect();
    let said = g.reload(&config("max_connections_per_address = 2\n", "", ""));
    let applied = "applied=[\"client.max_connections_per_address\"] needs_restart=[]";
    assert!(said.contains(applied), "{said}");
    let (status, answer, _) = upgrade_from("127.0.0.5", g.client_addr, "/actors/echo/3");
    assert_eq!(status, 429, "{answer}");
    for (i, ws) in open.iter_mut().enumerate() {
        ws.echo(&format!("still connected {i}"));
    }
    connect_from("127.0.0.6", g.client_addr, "/actors/echo/4").echo("another address");
    // And raised again: room at once.
    g.reload(&config("max_connections_per_address = 10\n", "", ""));
    connect_from("127.0.0.5", g.client_addr, "/actors/echo/5").echo("room again");
    runner.stop();
}

const PK: &str = "pk-acme-0123456789abcdef";
const ACME_RUNNER: &str = "acme-runner-token-0123456789";

fn acme() -> String {
    format!(
        "[[namespaces]]\nname = \"acme\"\npublishable_tokens = [\"{PK}\"]\n\
         [[namespaces.runners]]\nname = \"hosts\"\ntoken = \"{ACME_RUNNER}\"\n"
    )
}

#[test]
fn a_namespace_added_live_admits_its_runners_and_clients() {
    let g = ChildGateway::start(&config("", "", ""));
    let path = format!("/ns/acme/actors/echo/1?token={PK}");
    let (status, answer, _) = upgrade_from("127.0.0.1", g.client_addr, &path);
    assert_eq!(status, 404, "no such namespace yet: {answer}");
    assert_eq!(runner_refusal(g.runner_addr, ACME_RUNNER), 401);
    let said = g.reload(&config("", "", &acme()));
    assert!(said.contains("applied=[\"namespaces\"]"), "{said}");
    let runner = start_runner(&g, ACME_RUNNER, "default", "acme-1");
    connect_from("127.0.0.1", g.client_addr, &path).echo("hello acme");
    let (status, _, _) = upgrade_from("127.0.0.1", g.client_addr, "/ns/acme/actors/echo/1");
    assert_eq!(status, 401, "its clients need its token");
    runner.stop();
}

#[test]
fn a_changed_runner_token_admits_the_new_one_and_revokes_the_old() {
    let (old, new) = ("old-runner-token-0001", "new-runner-token-0002");
    let g = ChildGateway::start(&config("", &format!("token = \"{old}\"\n"), ""));
    let mut tunnel = raw_tunnel_at(g.runner_addr, old);
    assert_eq!(hello_answer(&mut tunnel, &hello("r-old")), None, "welcomed");
    let said = g.reload(&config("", &format!("token = \"{new}\"\n"), ""));
    assert!(said.contains("applied=[\"runners.token\"]"), "{said}");
    assert_eq!(close_code(&mut tunnel), 4403, "a tunnel of the old token");
    assert_eq!(runner_refusal(g.runner_addr, old), 401);
    let mut fresh = raw_tunnel_at(g.runner_addr, new);
    assert_eq!(hello_answer(&mut fresh, &hello("r-new")), None, "welcomed");
}

fn identities(with_a: bool) -> String {
    let a = "[[runners.identities]]\nname = \"a\"\ntoken = \"token-of-a-0001\"\n";
    let b = "[[runners.identities]]\nname = \"b\"\ntoken = \"token-of-b-0001\"\n";
    if with_a {
        format!("{a}{b}")
    } else {
        b.to_owned()
    }
}

#[test]
fn a_revoked_runners_actors_move_to_another_and_their_clients_stay() {
    let g = ChildGateway::start(&config("", &identities(true), ""));
    let a = start_runner(&g, "token-of-a-0001", "default", "ra");
    let mut client = connect_from("127.0.0.1", g.client_addr, "/actors/echo/x");
    client.echo("on a");
    assert_eq!(runner_of(&g, "/actors/echo/x").as_deref(), Some("ra"));
    let b = start_runner(&g, "token-of-b-0001", "default", "rb");
    let said = g.reload(&config("", &identities(false), ""));
    assert!(said.contains("applied=[\"runners.identities\"]"), "{said}");
    wait_for("the actor to run on b", || {
        runner_of(&g, "/actors/echo/x").as_deref() == Some("rb")
    });
    client.echo("on b");
    a.stop();
    b.stop();
}

#[test]
fn a_pool_mapping_changed_live_places_actors_in_the_new_pool() {
    let g = ChildGateway::start(&config("", "", ""));
    let default = start_runner(&g, DEV, "default", "rd");
    let gpu = start_runner(&g, DEV, "gpu", "rg");
    let mut before = connect_from("127.0.0.1", g.client_addr, "/actors/echo/before");
    before.echo("x");
    assert_eq!(runner_of(&g, "/actors/echo/before").as_deref(), Some("rd"));
    let said = g.reload(&config("", "", "[actors]\npools = { echo = \"gpu\" }\n"));
    assert!(said.contains("applied=[\"actors.pools.echo\"]"), "{said}");
    connect_from("127.0.0.1", g.client_addr, "/actors/echo/after").echo("y");
    let after = admin(&g, "GET", "/actors/echo/after");
    assert_eq!(
        (after["pool"].as_str(), after["runner"].as_str()),
        (Some("gpu"), Some("rg"))
    );
    assert_eq!(
        runner_of(&g, "/actors/echo/before").as_deref(),
        Some("rd"),
        "a running actor stays where it is"
    );
    // ...until it next moves: then it goes where its name now maps.
    let moved = admin(&g, "POST", "/actors/echo/before/migrate");
    assert_eq!(moved["actor"]["runner"].as_str(), Some("rg"), "{moved}");
    before.echo("z");
    default.stop();
    gpu.stop();
}

#[test]
fn a_setting_that_needs_a_restart_is_reported_and_kept_as_it_runs() {
    let g = ChildGateway::start(&config("", "", ""));
    let moved = config("max_connections = 5\n", "", "").replace("127.0.0.1:0", "127.0.0.4:0");
    let said = g.reload(&moved);
    let expected = "applied=[\"client.max_connections\"] needs_restart=[\"client.listen\"]";
    assert!(said.contains(expected), "{said}");
    let request = b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n";
    let served = raw_exchange(g.client_addr, request);
    assert_eq!(status_of(&served), 404, "the listener stays: {served}");
    let said = g.reload(&moved);
    let waiting = "applied=[] needs_restart=[\"client.listen\"]";
    assert!(said.contains(waiting), "reported until a restart: {said}");
}
