//! What a hostile client or runner can try, over real sockets: each test
//! is an attack that once worked, and checks that it no longer does and
//! that nobody else is harmed.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use common::raw_tunnel::{next_frame, send_frame};
use common::*;
use tether::runner::BuiltinActors;
use tether::tunnel::{encode_frame, Frame, PROTOCOL_VERSION};

const TEXT: u8 = 1;

fn text_of(ws: &mut RawWs) -> String {
    loop {
        let f = ws.recv().expect("a frame");
        if f.opcode == TEXT {
            return String::from_utf8(f.payload).unwrap();
        }
    }
}

/// One worker: every tunnel and actor meets on it, so a test can reason
/// about the order in which frames are handled.
fn one_worker() -> tether::Config {
    let mut c = test_config();
    c.server.workers = 1;
    c
}

type Tunnel = tungstenite::WebSocket<TcpStream>;

/// A runner tunnel driven by hand: connected, hello sent, welcome read.
fn hand_runner(h: &Harness, key: &str, actors: &[&str]) -> (Tunnel, Vec<Frame>) {
    let mut ws = common::raw_tunnel::raw_tunnel(h);
    send_frame(
        &mut ws,
        &Frame::Hello {
            version: PROTOCOL_VERSION,
            runner_key: key.into(),
            pool: "default".into(),
            capacity: 100,
            tunnel_index: 0,
            actor_names: actors.iter().map(|a| a.to_string()).collect(),
            features: 0,
        },
    );
    let mut pending = Vec::new();
    assert!(matches!(
        next_frame(&mut ws, &mut pending),
        Frame::Welcome { .. }
    ));
    (ws, pending)
}

/// The next tunnel message, retrying a read a signal interrupted.
fn read_tunnel(ws: &mut Tunnel) -> tungstenite::Message {
    loop {
        match ws.read() {
            Ok(m) => return m,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("tunnel read failed: {e}"),
        }
    }
}

/// As the runner an actor was placed on: reads its StartActor, says it is
/// ready, and returns the id of the connection the gateway then opens.
fn start_and_open(owner: &mut Tunnel, frames: &mut Vec<Frame>) -> u64 {
    let actor_id = match next_frame(owner, frames) {
        Frame::StartActor { actor_id, .. } => actor_id,
        other => panic!("expected StartActor, got {other:?}"),
    };
    send_frame(owner, &Frame::ActorReady { actor_id });
    match next_frame(owner, frames) {
        Frame::ConnOpen { conn_id, .. } => conn_id,
        other => panic!("expected ConnOpen, got {other:?}"),
    }
}

/// Sends a keepalive and reads until its answer: everything sent on this
/// tunnel before it has been handled by then.
fn barrier(ws: &mut Tunnel, pending: &mut Vec<Frame>) {
    send_frame(ws, &Frame::Keepalive { nonce: 4242 });
    loop {
        match read_tunnel(ws) {
            tungstenite::Message::Binary(b) => {
                for f in tether::tunnel::decode_frames(b) {
                    match f.unwrap() {
                        Frame::KeepaliveAck { nonce: 4242 } => return,
                        other => pending.push(other),
                    }
                }
            }
            _ => continue,
        }
    }
}

#[test]
fn empty_messages_held_for_a_missing_runner_count_against_the_buffer() {
    let mut c = test_config();
    c.actors.migration_buffer_bytes = 64 * 1024;
    let mut h = start_bare(c);
    let o = h.runner_options();
    h.add_runner(o, BuiltinActors);
    let mut client = RawWs::connect(h.client_addr, "/actors/echo/held");
    client.send(true, TEXT, b"hello");
    assert_eq!(text_of(&mut client), "hello");
    h.take_runner(0).kill();
    wait_for("the actor to look for another runner", || {
        h.admin("GET", "/actors/echo/held")
            .contains("\"state\":\"placing\"")
    });
    // Each empty message is still an entry the gateway keeps: many of them
    // must trip the buffer like bytes do (before, 20,000 cost nothing).
    let mut flood = Vec::new();
    for _ in 0..20_000 {
        flood.extend_from_slice(&client_frame(true, TEXT, b""));
    }
    client.send_raw(&flood);
    assert_eq!(client.expect_close(), 1013, "past migration_buffer_bytes");
    h.shutdown();
}

#[test]
fn actor_names_and_keys_are_limited_and_checked() {
    let h = start_default();
    let answer = |path: &str| {
        status_of(&raw_exchange(
            h.client_addr,
            upgrade_request(path).as_bytes(),
        ))
    };
    let long_key = "k".repeat(7000);
    assert_eq!(answer(&format!("/actors/echo/{long_key}")), 414);
    let long_name = "n".repeat(100);
    assert_eq!(answer(&format!("/actors/{long_name}/k")), 414);
    let many_parts = vec!["p"; 40].join("/");
    assert_eq!(answer(&format!("/actors/echo/{many_parts}")), 414);
    for bad in [
        "/actors/echo/../admin",
        "/actors/echo/%2E%2E/admin",
        "/actors/echo/./x",
        "/actors/echo/a%00b",
        "/actors/echo/line%0Abreak",
        "/actors/echo/tab%09",
        "/actors/ec%20ho/x",
        "/actors/e.cho/x",
        "/actors/%C3%A9cho/x",
    ] {
        assert_eq!(answer(bad), 400, "{bad}");
    }
    // What stays allowed: any other UTF-8 in keys, compound keys.
    let mut ws = RawWs::connect(h.client_addr, "/actors/echo/caf%C3%A9/room%2F1/x.y");
    ws.send(true, TEXT, b"still fine");
    assert_eq!(text_of(&mut ws), "still fine");
    h.shutdown();
}

#[test]
fn a_runner_cannot_acknowledge_another_runners_connections() {
    let mut h = start_bare(one_worker());
    for _ in 0..2 {
        let o = h.runner_options();
        h.add_runner(o, BuiltinActors);
    }
    let mut victim = RawWs::connect(h.client_addr, "/actors/echo/victim");
    victim.send(true, TEXT, b"one");
    assert_eq!(text_of(&mut victim), "one");
    // A foreign runner acknowledges every id it can guess far ahead.
    let (mut foreign, mut pending) = hand_runner(&h, "foreign", &["other"]);
    let mut acks = BytesMut::new();
    for conn_id in 1..=64u64 {
        let index = 1 << 62;
        encode_frame(&mut acks, &Frame::Ack { conn_id, index });
    }
    foreign
        .send(tungstenite::Message::Binary(acks.freeze()))
        .unwrap();
    barrier(&mut foreign, &mut pending);
    // The victim's actor moves; its next runner must still get the
    // victim's messages (not drop them as replays of index 2^62).
    let moved = h.admin("POST", "/actors/echo/victim/migrate");
    assert_eq!(status_of(&moved), 200, "{moved}");
    victim.send(true, TEXT, b"two");
    assert_eq!(text_of(&mut victim), "two");
    h.shutdown();
}

#[test]
fn a_runner_cannot_answer_opens_of_another_runners_actor() {
    let h = start_bare(one_worker());
    let (mut owner, mut owner_frames) = hand_runner(&h, "owner", &["echo"]);
    let (mut foreign, mut foreign_frames) = hand_runner(&h, "foreign", &["other"]);
    let client = RawWs::begin(h.client_addr, "/actors/echo/mine");
    let conn_id = start_and_open(&mut owner, &mut owner_frames);
    // The foreign runner guessed the id: its answer must not count.
    let reason = "not yours".to_owned();
    let reject = Frame::ConnReject {
        conn_id,
        status: 403,
        reason,
    };
    send_frame(&mut foreign, &reject);
    barrier(&mut foreign, &mut foreign_frames);
    let accept = Frame::ConnAccept {
        conn_id,
        protocol: None,
        hibernatable: None,
    };
    send_frame(&mut owner, &accept);
    let mut ws = client.finish();
    ws.send(true, TEXT, b"mine");
    match next_frame(&mut owner, &mut owner_frames) {
        Frame::Message { conn_id: c, .. } => assert_eq!(c, conn_id),
        other => panic!("expected the client's message, got {other:?}"),
    }
    h.shutdown();
}

/// Opens a tunnel, sends `hello`, and returns the close code the gateway
/// answers with (`None`: it welcomed the runner instead).
fn hello_answer(h: &Harness, hello: &Frame) -> Option<u16> {
    common::raw_tunnel::hello_answer(&mut common::raw_tunnel::raw_tunnel(h), hello)
}

fn hello(key: &str, pool: &str, actor_names: Vec<String>) -> Frame {
    Frame::Hello {
        version: PROTOCOL_VERSION,
        runner_key: key.into(),
        pool: pool.into(),
        capacity: 10,
        tunnel_index: 0,
        actor_names,
        features: 0,
    }
}

#[test]
fn a_runner_hello_with_huge_or_odd_lists_is_refused() {
    let h = start_bare(one_worker());
    // A million empty names in a 1 MB message: before, the gateway kept
    // 27.6 MiB for them and logged a 3.8 MiB line.
    // (Valid names, so that only the list bound can refuse them.)
    let million = vec!["a".to_owned(); 1_000_000];
    assert_eq!(
        hello_answer(&h, &hello("big", "default", million)),
        Some(1002)
    );
    let bad_names = [
        hello("k", "default", vec!["e.cho".into()]),
        hello("k", "default", vec!["x".repeat(65)]),
        hello("k", "pool with spaces", vec!["echo".into()]),
        hello("line\nbreak", "default", vec!["echo".into()]),
        hello(&"k".repeat(129), "default", vec!["echo".into()]),
    ];
    for frame in &bad_names {
        assert_eq!(hello_answer(&h, frame), Some(1002), "{frame:?}");
    }
    let fine = hello("fine", "default", vec!["echo".into(); 1024]);
    assert_eq!(
        hello_answer(&h, &fine),
        None,
        "a well-formed hello is welcomed"
    );
    h.shutdown();
}

#[test]
fn a_client_offering_too_many_subprotocols_is_refused() {
    let h = start_default();
    let protocols = (0..65)
        .map(|i| format!("p{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let request = upgrade_request("/actors/echo/p").replace(
        "\r\n\r\n",
        &format!("\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n"),
    );
    assert_eq!(
        status_of(&raw_exchange(h.client_addr, request.as_bytes())),
        400
    );
    // The runner's tunnel is still up: others are served.
    let mut ws = RawWs::connect(h.client_addr, "/actors/echo/p");
    ws.send(true, TEXT, b"still here");
    assert_eq!(text_of(&mut ws), "still here");
    h.shutdown();
}

#[test]
fn a_close_reason_that_is_not_utf8_gets_1007() {
    let h = start_default();
    let mut ws = RawWs::connect(h.client_addr, "/actors/echo/close");
    // Code 1000, then bytes that are not UTF-8 (RFC 6455 §8.1: 1007).
    ws.send(true, 8, &[0x03, 0xE8, 0xFF, 0xFE]);
    assert_eq!(ws.expect_close(), 1007);
    h.shutdown();
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let h = start_default();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: {scheme} {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw_exchange(h.admin_addr, request.as_bytes());
        assert_eq!(status_of(&answer), 200, "{scheme}: {answer}");
    }
    h.shutdown();
}

#[test]
fn a_head_ending_in_bare_line_feeds_is_answered_at_once() {
    let h = start_default();
    let answer = raw_exchange(h.client_addr, b"GET /healthz HTTP/1.1\nHost: t\n\n");
    // Before, the gateway waited for a CRLF blank line until
    // handshake_timeout and answered 408.
    assert_eq!(status_of(&answer), 200, "{answer}");
    h.shutdown();
}

#[test]
fn silent_connections_cannot_take_every_handshake_slot() {
    let mut c = one_worker();
    c.client.max_handshakes = 4;
    c.client.handshake_timeout = Duration::from_secs(30);
    let h = start(c);
    // Four connections that never send a byte hold every handshake slot…
    let silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(h.client_addr).unwrap())
        .collect();
    wait_for("the silent connections to be accepted", || {
        h.stat(|s| &s.accepted) == 4
    });
    // …so a fifth is refused at once with 503, not left waiting.
    let refused = raw_exchange(
        h.client_addr,
        upgrade_request("/actors/echo/late").as_bytes(),
    );
    assert_eq!(status_of(&refused), 503, "{refused}");
    let metrics = h.admin("GET", "/metrics");
    assert!(
        metrics.contains("tether_handshakes_refused_total 1"),
        "{metrics}"
    );
    // When they go, clients are served again.
    drop(silent);
    wait_for("a handshake slot to be free again", || {
        let answer = raw_exchange(h.client_addr, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        status_of(&answer) == 200
    });
    h.shutdown();
}

/// The status line and body a client gets for an upgrade to `path`,
/// keeping the connection open when it is accepted.
fn try_connect(addr: std::net::SocketAddr, path: &str) -> (u16, String, TcpStream) {
    upgrade_from("127.0.0.1", addr, path)
}

#[test]
fn a_runners_capacity_holds_across_workers_and_a_full_runner_is_not_a_crash() {
    let mut h = start_bare(test_config()); // two workers
    let mut o = h.runner_options();
    o.capacity = 2;
    h.add_runner(o, BuiltinActors);
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for k in 0..8 {
        let (status, answer, stream) = try_connect(h.client_addr, &format!("/actors/echo/k{k}"));
        match status {
            101 => open.push(stream),
            _ => refused.push((status, answer)),
        }
    }
    // Before, each worker placed up to the capacity (4 actors on a runner of
    // 2), and the runner's refusal was taken for a crash (backoff, then 503
    // start_failed after start_timeout).
    assert_eq!(open.len(), 2, "{refused:?}");
    for (status, answer) in &refused {
        assert_eq!(*status, 503, "{answer}");
        assert!(answer.contains("no_capacity"), "{answer}");
    }
    assert_eq!(h.stat(|s| &s.failovers), 0, "a full runner is not a crash");
    h.shutdown();
}

/// A store whose saves fail while `failing` is set.
#[derive(Clone, Default)]
struct FlakyStore {
    inner: tether::runner::MemoryStore,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tether::runner::StateStore for FlakyStore {
    fn load(&self, name: &str, key: &[String]) -> std::io::Result<Option<Vec<u8>>> {
        self.inner.load(name, key)
    }
    fn save(&self, name: &str, key: &[String], record: &[u8]) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        if self.failing.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(std::io::Error::other("disk full"));
        }
        self.inner.save(name, key, record)
    }
}

#[test]
fn a_message_whose_state_save_failed_is_not_acknowledged() {
    use std::sync::atomic::Ordering;
    let mut h = start_bare(test_config());
    let store = FlakyStore::default();
    let mut o = h.runner_options();
    o.state = Some(std::sync::Arc::new(store.clone()));
    h.add_runner(o, BuiltinActors);
    let mut client = RawWs::connect(h.client_addr, "/actors/counter/durable");
    client.send(true, TEXT, b"inc");
    assert_eq!(text_of(&mut client), "1");
    // The disk fails while the second increment is handled…
    store.failing.store(true, Ordering::SeqCst);
    client.send(true, TEXT, b"inc");
    wait_for("a save to fail", || store.failed.load(Ordering::SeqCst) > 0);
    store.failing.store(false, Ordering::SeqCst);
    // …so it must not count as handled: the actor restarts from its last
    // good state and handles it again, now durably.
    assert_eq!(text_of(&mut client), "2");
    // Proof that "2" was saved: a fresh runner, after this one dies, has it.
    h.take_runner(0).kill();
    let mut o = h.runner_options();
    o.state = Some(std::sync::Arc::new(store.clone()));
    h.add_runner(o, BuiltinActors);
    client.send(true, TEXT, b"get");
    assert_eq!(text_of(&mut client), "2", "the increment survived");
    h.shutdown();
}

/// Tells each client, when it opens or is restored, the address the
/// gateway gave for it and any forwarding headers it passed on.
struct WhoAmI;

impl WhoAmI {
    fn report(ctx: &mut tether::runner::Ctx<'_>, conn: u64, info: &tether::runner::ConnInfo) {
        let forwarded: Vec<&str> = info
            .headers
            .iter()
            .filter(|(n, _)| n.contains("forwarded") || n == "x-real-ip")
            .map(|(n, _)| n.as_str())
            .collect();
        let peer = info.peer.map_or("none".to_owned(), |p| p.to_string());
        let text = format!("peer={peer} forwarded={forwarded:?}");
        ctx.send(conn, &tether::runner::Message::Text(text));
    }
}

impl tether::runner::Actor for WhoAmI {
    fn on_open(
        &mut self,
        ctx: &mut tether::runner::Ctx<'_>,
        conn: u64,
        info: &tether::runner::ConnInfo,
    ) -> tether::runner::OpenDecision {
        WhoAmI::report(ctx, conn, info);
        tether::runner::OpenDecision::Accept {
            protocol: None,
            hibernatable: None,
        }
    }
    fn on_restore(
        &mut self,
        ctx: &mut tether::runner::Ctx<'_>,
        conn: u64,
        info: &tether::runner::ConnInfo,
    ) {
        WhoAmI::report(ctx, conn, info);
    }
    fn on_message(&mut self, _: &mut tether::runner::Ctx<'_>, _: u64, _: tether::runner::Message) {}
}

struct WhoAmIs;

impl tether::runner::ActorFactory for WhoAmIs {
    fn actor_names(&self) -> Vec<String> {
        vec!["whoami".into()]
    }
    fn create(&self, _: &str, _: &[String]) -> Option<Box<dyn tether::runner::Actor>> {
        Some(Box::new(WhoAmI))
    }
}

#[test]
fn the_runner_gets_the_real_client_address_not_the_clients_claim() {
    use std::io::Write;
    let mut h = start_bare(test_config());
    for _ in 0..2 {
        let o = h.runner_options();
        h.add_runner(o, WhoAmIs);
    }
    let mut s = TcpStream::connect(h.client_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let me = s.local_addr().unwrap();
    let request = upgrade_request("/actors/whoami/k").replace(
        "\r\n\r\n",
        "\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut ws = common::Handshake::from_stream(s).finish();
    let expected = format!("peer={me} forwarded=[]");
    assert_eq!(text_of(&mut ws), expected, "on open");
    // Restored on another runner, the actor learns the same address.
    let moved = h.admin("POST", "/actors/whoami/k/migrate");
    assert_eq!(status_of(&moved), 200, "{moved}");
    assert_eq!(text_of(&mut ws), expected, "on restore");
    h.shutdown();
}

#[test]
fn a_trusted_balancers_proxy_header_names_the_client_and_nobody_else_can_claim_one() {
    use std::io::{Read, Write};
    let mut c = test_config();
    c.client.trusted_proxies = vec![tether::config::IpNet::parse("127.0.0.1").unwrap()];
    c.client.max_connections_per_address = 1;
    let mut h = start_bare(c);
    let o = h.runner_options();
    h.add_runner(o, WhoAmIs);
    let via_balancer = |client: &str, path: &str| {
        let mut s = TcpStream::connect(h.client_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let proxy = format!("PROXY TCP4 {client} 10.0.0.1 40000 8080\r\n");
        s.write_all(format!("{proxy}{}", upgrade_request(path)).as_bytes())
            .unwrap();
        s
    };
    let mut ws =
        common::Handshake::from_stream(via_balancer("203.0.113.9", "/actors/whoami/a")).finish();
    assert_eq!(text_of(&mut ws), "peer=203.0.113.9:40000 forwarded=[]");
    // The address in the header is what the per-address limits count.
    let _other =
        common::Handshake::from_stream(via_balancer("203.0.113.10", "/actors/whoami/b")).finish();
    let mut again = via_balancer("203.0.113.9", "/actors/whoami/c");
    let mut answer = String::new();
    let _ = again.read_to_string(&mut answer);
    assert_eq!(status_of(&answer), 429, "{answer}");
    // From the balancer without a header: closed, nothing answered.
    let silent = raw_exchange(
        h.client_addr,
        upgrade_request("/actors/whoami/d").as_bytes(),
    );
    assert_eq!(silent, "");
    assert_eq!(h.stat(|s| &s.proxy_headers_refused), 1);
    // From anyone else, a PROXY header is not HTTP: 400.
    let (status, answer, _) = {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let local: std::net::SocketAddr = "127.0.0.2:0".parse().unwrap();
        socket.bind(&local.into()).unwrap();
        socket.connect(&h.client_addr.into()).unwrap();
        let mut s: TcpStream = socket.into();
        s.write_all(b"PROXY TCP4 6.6.6.6 10.0.0.1 1 2\r\n").unwrap();
        s.write_all(upgrade_request("/actors/whoami/e").as_bytes())
            .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        (status_of(&answer), answer.clone(), s)
    };
    assert_eq!(status, 400, "{answer}");
    h.shutdown();
}

fn status_from(from: &str, to: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (status, answer, _) = upgrade_from(from, to, path);
    (status, answer)
}

#[test]
fn one_address_cannot_create_actors_without_limit() {
    let mut c = test_config();
    c.actors.new_per_second_per_address = 1;
    c.actors.new_burst_per_address = 3;
    let h = start(c);
    let to = h.client_addr;
    // Fresh keys until the allowance runs out: the burst of 3, plus one a
    // second however slowly this machine gets through them.
    let started = std::time::Instant::now();
    let mut created = 0;
    let refusal = loop {
        let (status, answer) = status_from("127.0.0.2", to, &format!("/actors/echo/n{created}"));
        if status != 101 {
            break (status, answer);
        }
        created += 1;
        assert!(created < 30, "never refused");
    };
    let allowed = 3 + started.elapsed().as_secs() as usize + 1;
    assert!(
        created >= 3 && created <= allowed,
        "{created} created, {allowed} allowed"
    );
    // Before, every fresh key started an actor: 22 such requests filled a
    // runner of capacity 20 and locked everyone out.
    let (status, answer) = refusal;
    assert_eq!(status, 429, "{answer}");
    assert!(answer.contains("rate_limited"), "{answer}");
    // Joining an actor that exists is not creating one; other addresses
    // have their own allowance.
    assert_eq!(status_from("127.0.0.2", to, "/actors/echo/n0").0, 101);
    assert_eq!(status_from("127.0.0.3", to, "/actors/echo/fresh").0, 101);
    let metrics = h.admin("GET", "/metrics");
    assert!(
        metrics.contains("tether_actor_creations_refused_total 1"),
        "{metrics}"
    );
    h.shutdown();
}

/// A tunnel opened with `token`; its hello names `key` and `pool`.
/// Returns the close code the gateway answered the hello with, or the
/// welcomed tunnel.
fn tunnel_as(h: &Harness, token: &str, key: &str, pool: &str) -> Result<Tunnel, u16> {
    use common::raw_tunnel::{hello_answer, raw_tunnel_as};
    let mut ws = raw_tunnel_as(h, token);
    match hello_answer(&mut ws, &hello(key, pool, vec!["echo".into()])) {
        None => Ok(ws),
        Some(code) => Err(code),
    }
}

#[test]
fn a_runner_key_can_only_be_taken_over_by_the_same_identity() {
    let mut c = one_worker();
    c.runners.identities = vec![
        tether::config::RunnerIdentity {
            name: "host-a".into(),
            token: "token-a".into(),
            pools: vec![],
        },
        tether::config::RunnerIdentity {
            name: "host-b".into(),
            token: "token-b".into(),
            pools: vec!["special".into()],
        },
    ];
    let h = start_bare(c);
    let mut first = tunnel_as(&h, "token-a", "runner-1", "default").expect("welcomed");
    // Another identity names the same runner key: before, it replaced the
    // real runner (closed with 4409) and received its clients' cookies.
    assert_eq!(
        tunnel_as(&h, "token-b", "runner-1", "special").err(),
        Some(4403)
    );
    let mut pending = Vec::new();
    barrier(&mut first, &mut pending); // the real runner's tunnel is still served
                                       // An identity registers only in its pools.
    assert_eq!(
        tunnel_as(&h, "token-b", "runner-2", "default").err(),
        Some(4403)
    );
    assert!(tunnel_as(&h, "token-b", "runner-2", "special").is_ok());
    // The same identity may take its key over (a restarted runner).
    assert!(tunnel_as(&h, "token-a", "runner-1", "default").is_ok());
    drop(first);
    h.shutdown();
}

#[test]
fn clients_waiting_for_their_actor_count_as_handshakes() {
    let mut c = one_worker();
    c.client.max_handshakes = 2;
    c.actors.start_timeout = Duration::from_secs(30);
    let h = start_bare(c);
    // A runner that never says its actors are ready.
    let (mut slow, mut frames) = hand_runner(&h, "slow", &["echo"]);
    let _a = RawWs::begin(h.client_addr, "/actors/echo/a");
    let _b = RawWs::begin(h.client_addr, "/actors/echo/b");
    for _ in 0..2 {
        assert!(matches!(
            next_frame(&mut slow, &mut frames),
            Frame::StartActor { .. }
        ));
    }
    // Both wait for their actor with their request read: a third client is
    // refused at once instead of joining an unbounded queue.
    let answer = raw_exchange(h.client_addr, upgrade_request("/actors/echo/c").as_bytes());
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert!(
        answer.contains("too many connections handshaking"),
        "{answer}"
    );
    drop(slow);
    h.shutdown();
}

#[test]
fn a_runner_cannot_acknowledge_more_than_it_was_sent() {
    let mut h = start_bare(one_worker());
    // The hand-driven runner comes first, so the actor is placed there.
    let (mut owner, mut frames) = hand_runner(&h, "owner", &["echo"]);
    let o = h.runner_options();
    h.add_runner(o, BuiltinActors);
    let client = RawWs::begin(h.client_addr, "/actors/echo/acked");
    let conn_id = start_and_open(&mut owner, &mut frames);
    let accept = Frame::ConnAccept {
        conn_id,
        protocol: None,
        hibernatable: None,
    };
    send_frame(&mut owner, &accept);
    let mut ws = client.finish();
    ws.send(true, TEXT, b"one");
    assert!(matches!(
        next_frame(&mut owner, &mut frames),
        Frame::Message { index: 1, .. }
    ));
    // The owner acknowledges far beyond the one message it was sent, then
    // dies: its actor moves to the other runner.
    send_frame(
        &mut owner,
        &Frame::Ack {
            conn_id,
            index: 100,
        },
    );
    barrier(&mut owner, &mut frames);
    drop(owner);
    // Before, the next runner was told the client's messages up to 100 were
    // handled and dropped them; now "one" is replayed and "two" arrives.
    ws.send(true, TEXT, b"two");
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("two") {
        got.push(text_of(&mut ws));
        assert!(got.len() <= 2, "{got:?}");
    }
    assert_eq!(
        got,
        ["one", "two"],
        "the unacknowledged message was replayed, in order"
    );
    h.shutdown();
}

#[test]
fn http_frames_from_a_runner_that_did_not_announce_http_close_its_tunnel() {
    // A runner that did not name feature HTTP in its hello may not use
    // its frames (PROTOCOL §7a): sending one breaks the protocol.
    let h = start_bare(one_worker());
    let frames = [
        Frame::HttpEnd { req_id: 1 },
        Frame::HttpCredit {
            req_id: 1,
            bytes: 1,
        },
    ];
    for (i, frame) in frames.iter().enumerate() {
        let (mut ws, _) = hand_runner(&h, &format!("http{i}"), &["echo"]);
        send_frame(&mut ws, frame);
        loop {
            if let tungstenite::Message::Close(close) = read_tunnel(&mut ws) {
                let close = close.expect("a close code");
                assert_eq!(u16::from(close.code), 1002, "{frame:?}");
                assert_eq!(
                    close.reason,
                    "HTTP frame from a runner that did not announce HTTP"
                );
                break;
            }
        }
    }
    h.shutdown();
}
