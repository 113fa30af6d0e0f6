//! Runners, tunnels and actors end to end over loopback: the gateway in
//! process, runners from the runner library, clients as raw sockets.

mod common;

use std::collections::HashSet;
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use common::raw_tunnel::*;
use common::*;
use tether::runner::{
    Actor, ActorFactory, BuiltinActors, ConnId, ConnInfo, Ctx, Message, OpenDecision,
};
use tether::tunnel::{encode_frame, Frame, PROTOCOL_VERSION};

const TEXT: u8 = 1;

fn text_of(ws: &mut RawWs) -> String {
    loop {
        let f = ws.recv().expect("connection open");
        if f.opcode == TEXT {
            return String::from_utf8(f.payload).unwrap();
        }
        assert_eq!(f.opcode, 9, "unexpected frame {f:?}");
    }
}

#[test]
fn fifty_clients_in_one_chat_lobby_see_every_message_in_one_order() {
    let h = start_default();
    let mut clients: Vec<RawWs> = (0..50)
        .map(|_| RawWs::connect(h.client_addr, "/actors/chat/lobby"))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(true, TEXT, format!("msg {i}").as_bytes());
    }
    let orders: Vec<Vec<String>> = clients
        .iter_mut()
        .map(|c| (0..50).map(|_| text_of(c)).collect())
        .collect();
    let expected: HashSet<String> = (0..50).map(|i| format!("msg {i}")).collect();
    assert_eq!(
        orders[0].iter().cloned().collect::<HashSet<_>>(),
        expected,
        "every message arrives"
    );
    for o in &orders {
        assert_eq!(o, &orders[0], "every client sees the same order");
    }
    h.shutdown();
}

#[test]
fn different_keys_are_isolated_and_same_keys_share_state() {
    let h = start_default();
    let mut a1 = RawWs::connect(h.client_addr, "/actors/counter/a");
    let mut a2 = RawWs::connect(h.client_addr, "/actors/counter/a");
    let mut b = RawWs::connect(h.client_addr, "/actors/counter/b");
    a1.send(true, TEXT, b"inc");
    assert_eq!(text_of(&mut a1), "1");
    assert_eq!(
        text_of(&mut a2),
        "1",
        "same key, same instance: broadcast reaches a2"
    );
    a2.send(true, TEXT, b"inc");
    assert_eq!(text_of(&mut a1), "2");
    assert_eq!(text_of(&mut a2), "2");
    b.send(true, TEXT, b"get");
    assert_eq!(text_of(&mut b), "0", "another key is another instance");
    // Compound keys are distinct from their joined form.
    let mut c = RawWs::connect(h.client_addr, "/actors/counter/a/b");
    c.send(true, TEXT, b"get");
    assert_eq!(text_of(&mut c), "0");
    h.shutdown();
}

#[test]
fn concurrent_first_connections_start_one_instance() {
    let h = start_default();
    let addr = h.client_addr;
    let threads: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || RawWs::connect(addr, "/actors/counter/race")))
        .collect();
    let mut clients: Vec<RawWs> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(h.runner(0).running_actors(), 1);
    clients[0].send(true, TEXT, b"inc");
    for c in clients.iter_mut() {
        assert_eq!(text_of(c), "1");
    }
    h.shutdown();
}

#[test]
fn two_runners_share_the_load() {
    let mut h = start_default();
    let options = h.runner_options();
    h.add_runner(options, BuiltinActors);
    let mut clients = Vec::new();
    for i in 0..40 {
        let mut c = RawWs::connect(h.client_addr, &format!("/actors/echo/k{i}"));
        c.send(true, TEXT, format!("{i}").as_bytes());
        assert_eq!(text_of(&mut c), format!("{i}"));
        clients.push(c);
    }
    let (a, b) = (h.runner(0).running_actors(), h.runner(1).running_actors());
    assert_eq!(a + b, 40);
    assert!(
        a >= 10 && b >= 10,
        "least-loaded placement spreads actors: {a} / {b}"
    );
    h.shutdown();
}

#[test]
fn clients_accepted_on_one_worker_reach_actors_homed_on_the_other() {
    let h = start_default();
    let mut clients: Vec<RawWs> = (0..40)
        .map(|i| RawWs::connect(h.client_addr, &format!("/actors/echo/w{i}")))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(true, TEXT, format!("hop {i}").as_bytes());
        assert_eq!(text_of(c), format!("hop {i}"));
    }
    let accepted: Vec<u64> = h
        .worker_stats()
        .iter()
        .map(|s| s.accepted.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    assert!(
        accepted.iter().all(|&n| n > 0),
        "both workers accepted clients: {accepted:?}"
    );
    h.shutdown();
}

/// An actor that admits only clients presenting `?pass=yes`.
struct Guarded;

impl Actor for Guarded {
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, _conn: ConnId, info: &ConnInfo) -> OpenDecision {
        if info.query.contains("pass=yes") {
            OpenDecision::Accept {
                protocol: info.protocols.last().cloned(),
                hibernatable: None,
            }
        } else {
            OpenDecision::Reject {
                status: 403,
                reason: "no pass".into(),
            }
        }
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: Message) {
        ctx.send(conn, &message);
    }
}

struct GuardedFactory;

impl ActorFactory for GuardedFactory {
    fn actor_names(&self) -> Vec<String> {
        vec!["guarded".into()]
    }
    fn create(&self, _name: &str, _key: &[String]) -> Option<Box<dyn Actor>> {
        Some(Box::new(Guarded))
    }
}

#[test]
fn a_runner_rejecting_an_open_gives_the_client_its_status() {
    let mut h = start_default();
    let options = h.runner_options();
    h.add_runner(options, GuardedFactory);
    let r = raw_exchange(
        h.client_addr,
        upgrade_request("/actors/guarded/x").as_bytes(),
    );
    assert_eq!(status_of(&r), 403, "{r}");
    assert!(r.contains("no pass"), "{r}");
    let ok = upgrade_request("/actors/guarded/x?pass=yes").replace(
        "Host: test\r\n",
        "Host: test\r\nSec-WebSocket-Protocol: a, b\r\n",
    );
    let r = raw_head(h.client_addr, &ok);
    assert!(r.starts_with("HTTP/1.1 101"), "{r}");
    assert!(
        r.contains("Sec-WebSocket-Protocol: b\r\n"),
        "the actor chose b: {r}"
    );
    h.shutdown();
}

fn raw_head(addr: std::net::SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn unknown_actors_and_missing_runners_get_clear_answers() {
    let h = start_default();
    let r = raw_exchange(
        h.client_addr,
        upgrade_request("/actors/nosuch/x").as_bytes(),
    );
    assert_eq!(status_of(&r), 404, "{r}");
    h.shutdown();

    let mut c = test_config();
    c.actors.start_timeout = Duration::from_millis(500);
    let bare = start_bare(c);
    let r = raw_exchange(
        bare.client_addr,
        upgrade_request("/actors/echo/x").as_bytes(),
    );
    assert_eq!(status_of(&r), 503, "{r}");
    assert!(r.contains("no_runner: no runner available"), "{r}");
    bare.shutdown();
}

#[test]
fn browser_mode_reports_refusals_as_close_codes() {
    let mut c = test_config();
    c.client.handshake_errors = tether::config::HandshakeErrors::Close;
    let h = start(c);
    let mut ws = RawWs::connect(h.client_addr, "/actors/nosuch/x");
    let close = ws.recv().unwrap();
    assert_eq!(close.close_code(), Some(4404));
    let reason = String::from_utf8_lossy(&close.payload[2..]).into_owned();
    assert!(
        reason.starts_with("unknown_actor: "),
        "machine-readable reason first: {reason}"
    );
    h.shutdown();
}

#[test]
fn runner_listener_refuses_a_wrong_or_missing_token() {
    let h = start_default();
    let req = upgrade_request("/runners/connect");
    assert_eq!(status_of(&raw_exchange(h.runner_addr, req.as_bytes())), 401);
    let wrong = req.replace(
        "Host: test\r\n",
        "Host: test\r\nAuthorization: Bearer nope\r\n",
    );
    let r = raw_exchange(h.runner_addr, wrong.as_bytes());
    assert_eq!(status_of(&r), 401);
    assert!(r.contains("WWW-Authenticate: Bearer"), "{r}");
    let bad_tunnel = req
        .replace("/runners/connect", "/runners/connect?tunnel=99")
        .replace(
            "Host: test\r\n",
            "Host: test\r\nAuthorization: Bearer tether-dev-token\r\n",
        );
    assert_eq!(
        status_of(&raw_exchange(h.runner_addr, bad_tunnel.as_bytes())),
        400
    );
    h.shutdown();
}

fn hello(version: u16, key: &str) -> tungstenite::Message {
    let mut out = BytesMut::new();
    let names = vec!["echo".to_string()];
    encode_frame(
        &mut out,
        &Frame::Hello {
            version,
            runner_key: key.into(),
            pool: "default".into(),
            capacity: 10,
            tunnel_index: 0,
            actor_names: names,
            features: 0,
        },
    );
    tungstenite::Message::Binary(out.freeze())
}

fn close_code_of(ws: &mut tungstenite::WebSocket<TcpStream>) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(f))) => {
                return (u16::from(f.code), f.reason.to_string())
            }
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

#[test]
fn malformed_tunnel_messages_close_that_tunnel_only() {
    let h = start_default();
    let mut bad = raw_tunnel(&h);
    bad.send(hello(PROTOCOL_VERSION, "bad-runner")).unwrap();
    bad.send(tungstenite::Message::Binary(vec![0x30, 0x7F, 1, 2].into()))
        .unwrap();
    assert_eq!(close_code_of(&mut bad).0, 1002);
    let mut text = raw_tunnel(&h);
    text.send(tungstenite::Message::text("not binary")).unwrap();
    assert_eq!(close_code_of(&mut text).0, 1003);
    // The real runner is unaffected.
    let mut c = RawWs::connect(h.client_addr, "/actors/echo/after");
    c.send(true, TEXT, b"fine");
    assert_eq!(text_of(&mut c), "fine");
    h.shutdown();
}

#[test]
fn an_unsupported_protocol_version_is_refused_with_a_reason() {
    let h = start_default();
    let mut t = raw_tunnel(&h);
    t.send(hello(99, "future-runner")).unwrap();
    let (code, reason) = close_code_of(&mut t);
    assert_eq!(code, 1002);
    assert!(reason.contains("version 99"), "{reason}");
    h.shutdown();
}

#[test]
fn a_runner_reconnecting_with_its_key_replaces_the_zombie() {
    let mut h = start_bare(test_config());
    let mut zombie_options = h.runner_options();
    zombie_options.key = "same-key".into();
    let mut fresh_options = zombie_options.clone();
    fresh_options.key = "same-key".into();
    h.add_runner(zombie_options, BuiltinActors);
    let mut client = RawWs::connect(h.client_addr, "/actors/counter/z");
    client.send(true, TEXT, b"inc");
    assert_eq!(text_of(&mut client), "1");
    h.add_runner(fresh_options, BuiltinActors);
    // The zombie's actors move to the new process, state and clients included.
    client.send(true, TEXT, b"inc");
    assert_eq!(text_of(&mut client), "2");
    wait_for("the replaced runner to let go", || {
        h.runner(0).connected_tunnels() == 0
    });
    // Nothing marks a reconnection that does not happen; a runner that
    // reconnects does so within its first backoffs (50, then 100 ms).
    assert_stays(
        "the replaced runner does not come back",
        Duration::from_millis(300),
        || h.runner(0).connected_tunnels() == 0,
    );
    let mut again = RawWs::connect(h.client_addr, "/actors/counter/z");
    again.send(true, TEXT, b"get");
    assert_eq!(
        text_of(&mut again),
        "2",
        "the same actor, now on the new runner"
    );
    assert_eq!(h.runner(1).running_actors(), 1);
    h.shutdown();
}

/// Sends 200 messages of 64 KiB to whoever says "flood".
struct Flood;

impl Actor for Flood {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: Message) {
        if message == Message::Text("flood".into()) {
            let big = Message::Binary(vec![7u8; 64 * 1024].into());
            for _ in 0..200 {
                ctx.send(conn, &big);
            }
        } else {
            ctx.send(conn, &message);
        }
    }
}

struct FloodFactory;

impl ActorFactory for FloodFactory {
    fn actor_names(&self) -> Vec<String> {
        vec!["flood".into()]
    }
    fn create(&self, _name: &str, _key: &[String]) -> Option<Box<dyn Actor>> {
        Some(Box::new(Flood))
    }
}

#[test]
fn a_client_that_does_not_read_is_closed_with_1008_and_harms_nobody() {
    let mut c = test_config();
    c.client.max_send_queue_bytes = 1 << 20;
    let mut h = start_bare(c);
    let options = h.runner_options();
    h.add_runner(options, FloodFactory);
    let mut slow = RawWs::connect(h.client_addr, "/actors/flood/room");
    // A small receive buffer so the kernel cannot absorb the whole flood.
    let sock = socket2::SockRef::from(&slow.stream);
    sock.set_recv_buffer_size(4096).unwrap();
    let mut fine = RawWs::connect(h.client_addr, "/actors/flood/room");
    slow.send(true, TEXT, b"flood");
    // The runner has handled "flood" once its first bytes reach `slow`
    // (peeked: `slow` must not read). `fine`'s message is handled after it,
    // so its answer comes through the same tunnel behind the whole flood:
    // by then `slow`'s queue has overflowed.
    let peeked = loop {
        match slow.stream.peek(&mut [0u8; 1]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r,
        }
    };
    assert!(
        matches!(peeked, Ok(1)),
        "the flood reaches the slow client: {peeked:?}"
    );
    fine.send(true, TEXT, b"still served");
    assert_eq!(text_of(&mut fine), "still served");
    assert_eq!(slow.expect_close(), 1008);
    h.shutdown();
}

#[test]
fn the_reference_runner_binary_serves_actors_and_drains_on_sigterm() {
    let mut h = start_bare(test_config());
    let state_dir = std::env::temp_dir().join(format!("tether-cli-state-{}", std::process::id()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args([
            "runner",
            "--gateway",
            &h.runner_url(),
            "--key",
            "cli-runner",
            "--state-dir",
            state_dir.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The runner needs a moment to open its tunnels; until then 503.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut ws = loop {
        let r = raw_head(h.client_addr, &upgrade_request("/actors/counter/cli"));
        if r.starts_with("HTTP/1.1 101") {
            break RawWs::connect(h.client_addr, "/actors/counter/cli");
        }
        assert!(
            std::time::Instant::now() < until,
            "runner never served: {r}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    ws.send(true, TEXT, b"inc");
    assert_eq!(text_of(&mut ws), "1");
    // A second runner (sharing the host's state directory) to move to.
    let mut options = h.runner_options();
    options.state = Some(std::sync::Arc::new(
        tether::runner::DirStore::new(&state_dir).unwrap(),
    ));
    h.add_runner(options, BuiltinActors);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The actor moved with its state; the client never noticed.
    ws.send(true, TEXT, b"inc");
    assert_eq!(text_of(&mut ws), "2");
    h.shutdown();
    let _ = std::fs::remove_dir_all(state_dir);
}

#[test]
fn a_runner_reconnects_with_backoff_when_the_gateway_comes_back() {
    let mut config = test_config();
    let h = start_bare(config.clone());
    let runner_addr = h.runner_addr;
    let mut options =
        tether::runner::RunnerOptions::new(&h.runner_url(), tether::config::DEV_RUNNER_TOKEN);
    options.max_backoff = Duration::from_millis(200);
    let runner = tether::runner::Runner::start(options, BuiltinActors);
    assert!(runner.wait_connected(Duration::from_secs(10)));
    h.shutdown();
    wait_for("the runner to see the gateway gone", || {
        runner.connected_tunnels() == 0
    });
    // A new gateway on the same runner port.
    config.runners.listen = runner_addr;
    let h2 = start_bare(config);
    assert!(
        runner.wait_connected(Duration::from_secs(10)),
        "the runner came back by itself"
    );
    let mut ws = RawWs::connect(h2.client_addr, "/actors/echo/back");
    ws.send(true, TEXT, b"again");
    assert_eq!(text_of(&mut ws), "again");
    runner.stop();
    h2.shutdown();
}

/// Answers any message with its last words, then closes the connection.
struct LastWords;

impl Actor for LastWords {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _message: Message) {
        ctx.send(conn, &Message::Text("last words".into()));
        ctx.close(conn, 4000, "goodbye");
    }
}

struct LastWordsFactory;

impl ActorFactory for LastWordsFactory {
    fn actor_names(&self) -> Vec<String> {
        vec!["bye".into()]
    }
    fn create(&self, _name: &str, _key: &[String]) -> Option<Box<dyn Actor>> {
        Some(Box::new(LastWords))
    }
}

#[test]
fn what_an_actor_sends_before_it_closes_a_connection_arrives_before_the_close() {
    let mut h = start_bare(test_config());
    let o = h.runner_options();
    h.add_runner(o, LastWordsFactory);
    let mut ws = RawWs::connect(h.client_addr, "/actors/bye/k");
    ws.send(true, TEXT, b"anything");
    // Both come in one tunnel batch; before, the close was acted on first
    // and the message queued ahead of it was dropped.
    let first = ws.recv().expect("a frame");
    assert_eq!(
        (first.opcode, first.payload.as_slice()),
        (TEXT, &b"last words"[..])
    );
    assert_eq!(ws.expect_close(), 4000);
    h.shutdown();
}

/// A `Broadcast` frame reaches exactly the connections it names (all, all
/// but some, a list), each once and in the tunnel's order; the welcome
/// tells the runner the gateway takes it.
#[test]
fn a_broadcast_frame_reaches_exactly_the_connections_it_names() {
    use common::raw_tunnel::{next_frame, raw_tunnel, send_frame};
    use tether::tunnel::{features, Frame, MessageKind, Recipients, PROTOCOL_VERSION};
    let mut config = test_config();
    config.server.workers = 1;
    let h = start_bare(config);
    let mut t = raw_tunnel(&h);
    let mut pending = Vec::new();
    send_frame(
        &mut t,
        &Frame::Hello {
            version: PROTOCOL_VERSION,
            runner_key: "broadcaster".into(),
            pool: "default".into(),
            capacity: 10,
            tunnel_index: 0,
            actor_names: vec!["room".into()],
            features: features::BROADCAST,
        },
    );
    let Frame::Welcome { features: got, .. } = next_frame(&mut t, &mut pending) else {
        panic!("expected Welcome");
    };
    assert_ne!(got & features::BROADCAST, 0, "the gateway takes broadcasts");
    let addr = h.client_addr;
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    let mut actor = None;
    for _ in 0..3 {
        let client = std::thread::spawn(move || RawWs::connect(addr, "/actors/room/r"));
        let mut frame = next_frame(&mut t, &mut pending);
        if let Frame::StartActor { actor_id, .. } = frame {
            send_frame(&mut t, &Frame::ActorReady { actor_id });
            actor = Some(actor_id);
            frame = next_frame(&mut t, &mut pending);
        }
        let Frame::ConnOpen { conn_id, .. } = frame else {
            panic!("expected ConnOpen, got {frame:?}");
        };
        send_frame(
            &mut t,
            &Frame::ConnAccept {
                conn_id,
                protocol: None,
                hibernatable: Some(false),
            },
        );
        clients.push(client.join().expect("client connects"));
        ids.push(conn_id);
    }
    let actor_id = actor.expect("the actor started");
    let broadcast = |to, text: &'static str| Frame::Broadcast {
        actor_id,
        kind: MessageKind::Text,
        to,
        payload: bytes::Bytes::from_static(text.as_bytes()),
    };
    for frame in [
        broadcast(Recipients::All, "all"),
        broadcast(Recipients::AllBut(vec![ids[0]]), "not 0"),
        broadcast(Recipients::Only(vec![ids[2], 999]), "only 2"),
        broadcast(Recipients::All, "all again"),
    ] {
        send_frame(&mut t, &frame);
    }
    let expected: [&[&str]; 3] = [
        &["all", "all again"],
        &["all", "not 0", "all again"],
        &["all", "not 0", "only 2", "all again"],
    ];
    for (client, want) in clients.iter_mut().zip(expected) {
        for text in want {
            let frame = client.recv().expect("a message");
            assert_eq!(frame.payload, text.as_bytes(), "in order, each once");
        }
    }
}

/// A gateway address that accepts connections and then says nothing (or
/// whatever a caller of a serverless /start pointed the runner at) must
/// not hold the runner: its handshake gives up, and stop returns.
#[test]
fn a_silent_gateway_does_not_hold_a_runner_that_is_stopping() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", silent.local_addr().unwrap());
    let mut options = tether::runner::RunnerOptions::new(&url, "t");
    options.handshake_timeout = Duration::from_millis(300);
    let runner = tether::runner::Runner::start(options, tether::runner::BuiltinActors);
    // The runner is in its handshake once its connection is here.
    let (_held, _) = silent.accept().expect("the runner dials");
    let (done, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runner.stop();
        let _ = done.send(());
    });
    stopped
        .recv_timeout(Duration::from_secs(20))
        .expect("stop returns while the gateway stays silent");
    drop(silent);
}
