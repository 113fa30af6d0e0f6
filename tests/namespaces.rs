//! Namespaces and client tokens over real sockets: a namespace's actors run
//! only on its own runners, its clients need its tokens (in a header, the
//! query or a subprotocol entry, none of which the runner sees), its access
//! tokens reach only its admin routes, and a runner token registers only
//! where it may.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use tether::config::{NamespaceConfig, NamespaceRunner};
use tether::http::token;
use tether::runner::{Actor, ActorFactory, ConnInfo, Ctx, Message, OpenDecision};

const PK: &str = "pk-acme-0123456789abcdef";
const SECRET: &str = "connect-secret-acme-0123456789";
const ACCESS: &str = "access-acme-0123456789abcdef";
const RUNNER_TOKEN: &str = "runner-acme-0123456789abcdef";

fn acme() -> NamespaceConfig {
    NamespaceConfig {
        name: "acme".into(),
        open: false,
        publishable_tokens: vec![PK.into()],
        connect_token_secrets: vec![SECRET.into()],
        access_tokens: vec![ACCESS.into()],
        pools: Default::default(),
        runners: vec![NamespaceRunner {
            name: "hosts".into(),
            token: RUNNER_TOKEN.into(),
            pools: vec![],
            key_prefix: "acme-".into(),
        }],
    }
}

fn gateway() -> Harness {
    let mut c = test_config();
    c.namespaces = vec![acme()];
    start_bare(c)
}

fn acme_runner(h: &mut Harness, key: &str) {
    let mut o = h.runner_options();
    o.token = RUNNER_TOKEN.into();
    o.key = key.into();
    h.add_runner(o, Inspectors("acme"));
}

/// An upgrade with extra header lines; the status and answer, and the
/// socket (still open when upgraded).
fn upgrade(addr: SocketAddr, path: &str, extra: &str) -> Result<(String, RawWs), (u16, String)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = upgrade_request(path);
    if !extra.is_empty() {
        request = request.replace("\r\n\r\n", &format!("\r\n{extra}\r\n\r\n"));
    }
    s.write_all(request.as_bytes()).unwrap();
    let mut peek = [0u8; 12];
    // Until the status line's first 12 bytes are there (or the peer closed).
    loop {
        match s.peek(&mut peek) {
            Ok(n) if n < peek.len() && n > 0 => std::thread::yield_now(),
            Ok(_) => break,
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "{e}"),
        }
    }
    if peek.starts_with(b"HTTP/1.1 101") {
        return Ok(Handshake::from_stream(s).finish_with_head());
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    Err((status_of(&answer), answer))
}

fn status(addr: SocketAddr, path: &str, extra: &str) -> u16 {
    match upgrade(addr, path, extra) {
        Ok(_) => 101,
        Err((status, _)) => status,
    }
}

fn signed(key: &[&str], ttl: u64) -> String {
    let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    token::sign_for(SECRET.as_bytes(), "acme", "inspect", &key, false, ttl, now)
}

fn first_text(ws: &mut RawWs) -> String {
    loop {
        let f = ws.recv().expect("a message");
        if f.opcode == 1 {
            return String::from_utf8(f.payload).unwrap();
        }
    }
}

#[test]
fn a_closed_namespace_admits_only_clients_with_its_tokens() {
    let mut h = gateway();
    acme_runner(&mut h, "acme-1");
    let to = h.client_addr;
    let path = "/ns/acme/actors/inspect/room";
    assert_eq!(status(to, path, ""), 401);
    assert_eq!(status(to, path, "Authorization: Bearer pk-wrong"), 401);
    assert_eq!(
        status(to, path, &format!("Authorization: Bearer {PK}")),
        101
    );
    let granted = signed(&["room"], 60);
    assert_eq!(status(to, &format!("{path}?token={granted}"), ""), 101);
    let other_room = signed(&["elsewhere"], 60);
    assert_eq!(status(to, &format!("{path}?token={other_room}"), ""), 403);
    let expired = signed(&["room"], 0);
    assert_eq!(status(to, &format!("{path}?token={expired}"), ""), 401);
    // The open default namespace needs nothing; a namespace that does not exist is 404.
    assert_eq!(status(to, "/ns/nowhere/actors/inspect/room", ""), 404);
    h.shutdown();
}

#[test]
fn the_runner_never_sees_the_gateways_token() {
    let mut h = gateway();
    acme_runner(&mut h, "acme-1");
    let granted = signed(&["room"], 60);
    let path = format!("/ns/acme/actors/inspect/room?token={granted}&app=1");
    let (_, mut ws) = upgrade(h.client_addr, &path, "").unwrap();
    let seen = first_text(&mut ws);
    assert!(seen.contains("query=app=1 "), "{seen}");
    assert!(!seen.contains("tt1."), "{seen}");
    // A browser's way: the token as a subprotocol entry. The runner sees
    // only the real protocols; with none chosen, the gateway selects the
    // token entry so that the browser accepts the upgrade.
    let offered = format!("Sec-WebSocket-Protocol: chat.v1, tether-token.{granted}");
    let (head, mut ws) = upgrade(h.client_addr, "/ns/acme/actors/inspect/room", &offered).unwrap();
    let seen = first_text(&mut ws);
    assert!(seen.contains("protocols=[\"chat.v1\"]"), "{seen}");
    assert!(
        head.contains(&format!("Sec-WebSocket-Protocol: tether-token.{granted}")),
        "{head}"
    );
    // In the Authorization header: the gateway consumed it; the runner gets
    // the client's other headers, not that one.
    let auth = format!("Authorization: Bearer {granted}\r\nOrigin: https://app.example");
    let (_, mut ws) = upgrade(h.client_addr, "/ns/acme/actors/inspect/room", &auth).unwrap();
    let seen = first_text(&mut ws);
    assert!(seen.contains("headers=[\"origin\"]"), "{seen}");
    h.shutdown();
}

#[test]
fn actors_run_only_on_runners_of_their_namespace() {
    let mut h = gateway();
    // A default-namespace runner offers the same actor name.
    let o = h.runner_options();
    h.add_runner(o, Inspectors("default"));
    let to = h.client_addr;
    let auth = format!("Authorization: Bearer {PK}");
    let Err((503, answer)) = upgrade(to, "/ns/acme/actors/inspect/k", &auth) else {
        panic!("placed on another namespace's runner")
    };
    assert!(answer.contains("no_runner"), "{answer}");
    acme_runner(&mut h, "acme-1");
    let (_, mut acme_ws) = upgrade(to, "/ns/acme/actors/inspect/k", &auth).unwrap();
    let (_, mut default_ws) = upgrade(to, "/actors/inspect/k", "").unwrap();
    // The same name and key in two namespaces are two actors, on their own runners.
    assert!(first_text(&mut acme_ws).contains("runner=acme"));
    assert!(first_text(&mut default_ws).contains("runner=default"));
    h.shutdown();
}

#[test]
fn access_tokens_reach_only_their_namespaces_admin_routes() {
    let mut h = gateway();
    acme_runner(&mut h, "acme-1");
    let auth = format!("Authorization: Bearer {PK}");
    let (_, _ws) = upgrade(h.client_addr, "/ns/acme/actors/inspect/k", &auth).unwrap();
    let admin = |path: &str, token: &str| {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        status_of(&raw_exchange(h.admin_addr, request.as_bytes()))
    };
    assert_eq!(admin("/ns/acme/actors/inspect/k", ACCESS), 200);
    assert_eq!(admin("/ns/acme/actors/inspect/k", ADMIN_TOKEN), 200);
    assert_eq!(
        admin("/actors/inspect/k", ACCESS),
        401,
        "not the default namespace"
    );
    assert_eq!(
        admin("/metrics", ACCESS),
        401,
        "not the gateway's own routes"
    );
    h.shutdown();
}

#[test]
fn a_namespace_runner_token_registers_only_its_keys_and_pools() {
    use common::raw_tunnel::{hello_answer, raw_tunnel_as};
    let mut c = test_config();
    let mut ns = acme();
    ns.runners[0].pools = vec!["games".into()];
    c.namespaces = vec![ns];
    let h = start_bare(c);
    let hello = |key: &str, pool: &str| tether::tunnel::Frame::Hello {
        version: tether::tunnel::PROTOCOL_VERSION,
        runner_key: key.into(),
        pool: pool.into(),
        capacity: 10,
        tunnel_index: 0,
        actor_names: vec!["inspect".into()],
        features: 0,
    };
    let answer = |key: &str, pool: &str| {
        hello_answer(&mut raw_tunnel_as(&h, RUNNER_TOKEN), &hello(key, pool))
    };
    assert_eq!(
        answer("not-acme", "games"),
        Some(4403),
        "a key outside its prefix"
    );
    assert_eq!(
        answer("acme-1", "default"),
        Some(4403),
        "a pool it may not use"
    );
    assert_eq!(answer("acme-1", "games"), None);
    h.shutdown();
}

/// Reports what the runner learned of a connection: its query, offered
/// subprotocols, and which runner (by its tag) serves it.
struct Inspector(&'static str);

impl Actor for Inspector {
    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: u64, info: &ConnInfo) -> OpenDecision {
        let headers: Vec<&str> = info.headers.iter().map(|(n, _)| n.as_str()).collect();
        let text = format!(
            "query={} protocols={:?} headers={headers:?} runner={}",
            info.query, info.protocols, self.0
        );
        ctx.send(conn, &Message::Text(text));
        OpenDecision::Accept {
            protocol: None,
            hibernatable: None,
        }
    }
    fn on_message(&mut self, _: &mut Ctx<'_>, _: u64, _: Message) {}
}

struct Inspectors(&'static str);

impl ActorFactory for Inspectors {
    fn actor_names(&self) -> Vec<String> {
        vec!["inspect".into()]
    }
    fn create(&self, _: &str, _: &[String]) -> Option<Box<dyn Actor>> {
        Some(Box::new(Inspector(self.0)))
    }
}

#[test]
fn tether_sign_token_makes_a_token_the_gateway_accepts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args([
            "sign-token",
            "--ns",
            "acme",
            "--name",
            "inspect",
            "--key",
            "room",
            "--ttl",
            "5m",
        ])
        .env("TETHER_CONNECT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let grant = token::verify(&token, &[SECRET.as_bytes()], now).unwrap();
    assert!(grant.allows("acme", "inspect", &["room".to_owned()]));
    assert!(grant.exp > now + 240 && grant.exp <= now + 300);
}

#[test]
fn runner_keys_of_two_namespaces_do_not_collide() {
    use common::raw_tunnel::{hello_answer, raw_tunnel_as};
    let h = gateway();
    let hello = |key: &str| tether::tunnel::Frame::Hello {
        version: tether::tunnel::PROTOCOL_VERSION,
        runner_key: key.into(),
        pool: "default".into(),
        capacity: 10,
        tunnel_index: 0,
        actor_names: vec!["inspect".into()],
        features: 0,
    };
    let mut acme = raw_tunnel_as(&h, RUNNER_TOKEN);
    assert_eq!(hello_answer(&mut acme, &hello("acme-1")), None);
    // A runner of another namespace naming the same key neither replaces
    // nor is refused by it: before, it was refused (4403) while acme's runner
    // was connected, and took the key (locking acme's runner out) while it
    // was reconnecting.
    let mut other = raw_tunnel_as(&h, tether::config::DEV_RUNNER_TOKEN);
    assert_eq!(hello_answer(&mut other, &hello("acme-1")), None);
    h.shutdown();
}
