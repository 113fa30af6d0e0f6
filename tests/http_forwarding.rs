//! Plain HTTP requests to actors through the tunnel (PROTOCOL §7b), over
//! real sockets on loopback: methods, keep-alive and pipelining, bodies
//! streamed both ways, a Server-Sent Events stream across a migration, and
//! every answer the gateway gives of its own.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::http::{exchange, BodyEnd, HttpConn};
use common::*;
use tether::runner::{Actor, ActorFactory, ConnId, Ctx, HttpRequest, Message, ResponseBody};

#[test]
fn get_and_post_reach_the_counter_on_one_kept_alive_connection() {
    let h = start_default();
    let mut c = HttpConn::connect(h.client_addr);
    c.request("GET", "/actors/counter/a", &[], b"");
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "0\n"), "{r:?}");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    c.request("POST", "/actors/counter/a", &[], b"");
    assert_eq!(c.response().text(), "1\n");
    c.request("POST", "/actors/counter/a", &[], b"with a body");
    assert_eq!(c.response().text(), "2\n");
    c.request("HEAD", "/actors/counter/a", &[], b"");
    let head = c.response_to(true).unwrap();
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("2"))
    );
    c.request("PUT", "/actors/counter/a", &[], b"");
    let put = c.response();
    assert_eq!(
        (put.status, put.header("allow")),
        (405, Some("GET, HEAD, POST"))
    );
    c.request(
        "GET",
        "/actors/counter/a/nope",
        &[("Connection", "close")],
        b"",
    );
    assert_eq!(c.response().status, 404, "the actor's own status");
    assert!(c.is_closed(), "Connection: close is honoured");
    // The WebSocket side sees the same number.
    let mut ws = RawWs::connect(h.client_addr, "/actors/counter/a");
    ws.send(true, 1, b"get");
    assert_eq!(ws.recv().unwrap().payload, b"2");
    let m = h.metrics();
    assert!(m.value("tether_http_requests_total", &[("status", "200")]) >= 4.0);
    assert_eq!(
        m.value("tether_http_requests_total", &[("status", "404")]),
        1.0
    );
    h.shutdown();
}

/// Serves WebSockets only.
struct WsOnly;

impl ActorFactory for WsOnly {
    fn actor_names(&self) -> Vec<String> {
        vec!["wsonly".into()]
    }
    fn create(&self, _: &str, _: &[String]) -> Option<Box<dyn Actor>> {
        Some(Box::new(WsOnlyActor))
    }
}

struct WsOnlyActor;

impl Actor for WsOnlyActor {
    fn on_message(&mut self, _: &mut Ctx<'_>, _: ConnId, _: Message) {}
}

#[test]
fn an_actor_without_an_http_handler_answers_404_and_non_actor_paths_keep_their_answers() {
    let mut h = start_default();
    let o = h.runner_options();
    h.add_runner(o, WsOnly);
    let r = exchange(h.client_addr, "GET", "/actors/wsonly/x", b"");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.text().contains("does not serve HTTP"), "{r:?}");
    let r = exchange(h.client_addr, "POST", "/actors/echo/x", b"echoed");
    assert_eq!((r.status, r.text().as_str()), (200, "echoed"));
    assert_eq!(exchange(h.client_addr, "GET", "/healthz", b"").status, 200);
    assert_eq!(exchange(h.client_addr, "GET", "/nowhere", b"").status, 404);
    assert_eq!(
        exchange(h.client_addr, "GET", "/actors/nosuch/x", b"").status,
        404
    );
    h.shutdown();
}

#[test]
fn chat_serves_its_history_as_json() {
    let h = start_default();
    let mut ws = RawWs::connect(h.client_addr, "/actors/chat/lobby");
    for m in ["hello", "world"] {
        ws.send(true, 1, m.as_bytes());
        assert_eq!(ws.recv().unwrap().payload, m.as_bytes());
    }
    let posted = exchange(
        h.client_addr,
        "POST",
        "/actors/chat/lobby/messages",
        b"via http",
    );
    assert_eq!((posted.status, posted.text().as_str()), (201, "3\n"));
    assert_eq!(ws.recv().unwrap().payload, b"via http", "members see it");
    let r = exchange(h.client_addr, "GET", "/actors/chat/lobby/history", b"");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let expected = serde_json::json!([
        {"id": 1, "text": "hello"}, {"id": 2, "text": "world"}, {"id": 3, "text": "via http"}
    ]);
    assert_eq!(json, expected);
    h.shutdown();
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let h = start_default();
    let mut c = HttpConn::connect(h.client_addr);
    let mut all = Vec::new();
    for i in 0..5 {
        let method = if i % 2 == 0 { "POST" } else { "GET" };
        all.extend(
            format!(
                "{method} /actors/counter/pipe HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
            )
            .bytes(),
        );
    }
    // One for another worker's actor in the middle moves the connection.
    all.extend(b"GET /actors/counter/elsewhere-7 HTTP/1.1\r\nHost: t\r\n\r\n");
    all.extend(b"POST /actors/counter/pipe HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    c.send(&all);
    let got: Vec<String> = (0..7).map(|_| c.response().text()).collect();
    assert_eq!(got, ["1\n", "1\n", "2\n", "2\n", "3\n", "0\n", "4\n"]);
    h.shutdown();
}

/// The process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn a_100_mib_upload_streams_through_without_being_held() {
    let mut config = test_config();
    config.client.max_request_body_bytes = 200 << 20;
    // Below one credit window: the body also waits for the tunnel to drain.
    config.runners.max_send_queue_bytes = 64 << 10;
    let h = start(config);
    // Gateway and runner are in this process: its RSS bounds both.
    let baseline = rss();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut c = HttpConn::connect(h.client_addr);
    c.send(
        b"POST /actors/counter/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let piece = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        c.send(format!("{:x}\r\n", piece.len()).as_bytes());
        c.send(&piece);
        c.send(b"\r\n");
    }
    c.send(b"0\r\n\r\n");
    let r = c.response();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "1\n"));
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(growth < 64 << 20, "RSS grew by {} MiB", growth >> 20);
    let m = h.metrics();
    let forwarded = m.value(
        "tether_http_body_bytes_total",
        &[("direction", "client_to_actor")],
    );
    assert_eq!(forwarded, (100u64 << 20) as f64);
    h.shutdown();
}

#[test]
fn a_large_response_arrives_whole_within_the_credit() {
    let h = scripted(test_config());
    let mut c = HttpConn::connect(h.client_addr);
    c.request("GET", "/actors/scripted/k/big", &[], b"");
    let r = c.response();
    assert_eq!(
        (r.status, r.header("content-length")),
        (200, Some("8388608"))
    );
    assert!(r.body.len() == 8 << 20 && r.body.iter().all(|b| *b == 7));
    // The connection serves on.
    c.request("GET", "/actors/scripted/k/x", &[], b"");
    assert_eq!(c.response().status, 418);
    h.shutdown();
}

/// Test actors whose answers a test chooses by path.
struct Scripted;

impl ActorFactory for Scripted {
    fn actor_names(&self) -> Vec<String> {
        vec!["scripted".into()]
    }
    fn create(&self, _: &str, _: &[String]) -> Option<Box<dyn Actor>> {
        Some(Box::new(ScriptedActor::default()))
    }
}

#[derive(Default)]
struct ScriptedActor {
    /// Requests to `/wait`, left unanswered.
    waits: std::collections::HashSet<u64>,
    /// A `/drip` response being written as credit comes: its request and
    /// the bytes written so far.
    drip: Option<(u64, usize)>,
}

/// The size of a `/drip` response.
const DRIP_BYTES: usize = 8 << 20;

/// A `/drip` response was sent whole by the runner (its end included).
static DRIP_SENT: AtomicBool = AtomicBool::new(false);

impl ScriptedActor {
    /// Writes the `/drip` response while it sends at once; ends it once
    /// all of it left.
    fn drip(&mut self, ctx: &mut Ctx<'_>) {
        let Some((id, written)) = self.drip.as_mut() else {
            return;
        };
        while *written < DRIP_BYTES && ctx.response_backlog(*id) == 0 {
            let n = (DRIP_BYTES - *written).min(64 << 10);
            ctx.write_body(*id, &vec![3u8; n]);
            *written += n;
        }
        if *written == DRIP_BYTES && ctx.response_backlog(*id) == 0 {
            ctx.end_body(*id);
            self.drip = None;
            DRIP_SENT.store(true, Ordering::SeqCst);
        }
    }
}

/// Requests to `/wait` that reached a scripted actor, and those of them
/// the actor was told were cancelled.
static WAITS: AtomicU64 = AtomicU64::new(0);
static WAITS_CANCELLED: AtomicU64 = AtomicU64::new(0);

/// Requests to `/once` that reached a scripted actor.
static ONCE: AtomicU64 = AtomicU64::new(0);

/// Requests to `/hold` that reached a scripted actor.
static HELD: AtomicU64 = AtomicU64::new(0);

impl Actor for ScriptedActor {
    fn on_message(&mut self, _: &mut Ctx<'_>, _: ConnId, _: Message) {}
    fn on_request(&mut self, ctx: &mut Ctx<'_>, r: &HttpRequest) {
        match r.path.as_str() {
            "/big" => {
                let len = (
                    "content-length".to_string(),
                    bytes::Bytes::from_static(b"8388608"),
                );
                let body = bytes::Bytes::from(vec![7u8; 8 << 20]);
                ctx.respond(r.id, 200, vec![len], ResponseBody::Full(body));
            }
            "/short" => {
                let len = (
                    "content-length".to_string(),
                    bytes::Bytes::from_static(b"10"),
                );
                ctx.respond(r.id, 200, vec![len], ResponseBody::Stream);
                ctx.write_body(r.id, b"abc");
                ctx.end_body(r.id);
            }
            "/drip" => {
                let len = DRIP_BYTES.to_string();
                let len = ("content-length".to_string(), bytes::Bytes::from(len));
                ctx.respond(r.id, 200, vec![len], ResponseBody::Stream);
                self.drip = Some((r.id, 0));
                self.drip(ctx);
            }
            "/cancel" => ctx.cancel_request(r.id, "not today"),
            "/silent" => {}
            "/hold" => {
                HELD.fetch_add(1, Ordering::SeqCst);
            }
            // Unanswered the first time, echoed after that.
            "/once" if ONCE.fetch_add(1, Ordering::SeqCst) == 0 => {}
            "/once" => {
                ctx.respond(r.id, 200, vec![], ResponseBody::Stream);
            }
            "/seen" => {
                let has = |n: &str| r.header(n).is_some();
                let seen = format!(
                    "query={};authorization={};x-forwarded-for={};peer={}",
                    r.query,
                    has("authorization"),
                    has("x-forwarded-for"),
                    r.peer.is_some(),
                );
                ctx.respond(r.id, 200, vec![], ResponseBody::Full(seen.into()));
            }
            "/wait" => {
                self.waits.insert(r.id);
                WAITS.fetch_add(1, Ordering::SeqCst);
            }
            "/echo" => {
                ctx.respond(r.id, 200, vec![], ResponseBody::Stream);
            }
            _ => {
                ctx.respond(
                    r.id,
                    418,
                    vec![("x-custom".into(), bytes::Bytes::from_static(b"yes"))],
                    ResponseBody::Empty,
                );
            }
        }
    }
    fn on_request_body(&mut self, ctx: &mut Ctx<'_>, request: u64, data: &[u8]) {
        ctx.write_body(request, data);
    }
    fn on_request_end(&mut self, ctx: &mut Ctx<'_>, request: u64) {
        ctx.end_body(request);
    }
    fn on_response_writable(&mut self, ctx: &mut Ctx<'_>, _: u64) {
        self.drip(ctx);
    }
    fn on_request_cancelled(&mut self, _: &mut Ctx<'_>, request: u64) {
        if self.waits.remove(&request) {
            WAITS_CANCELLED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn scripted(config: tether::Config) -> Harness {
    let mut h = start_bare(config);
    let o = h.runner_options();
    h.add_runner(o, Scripted);
    h
}

#[test]
fn the_actors_statuses_and_headers_pass_and_its_errors_have_their_answers() {
    let mut config = test_config();
    config.client.http_response_timeout = Duration::from_millis(300);
    let h = scripted(config);
    let r = exchange(h.client_addr, "GET", "/actors/scripted/k/teapot", b"");
    assert_eq!((r.status, r.header("x-custom")), (418, Some("yes")));
    let r = exchange(h.client_addr, "GET", "/actors/scripted/k/cancel", b"");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.text().starts_with("cancelled: not today"), "{r:?}");
    let r = exchange(h.client_addr, "GET", "/actors/scripted/k/silent", b"");
    assert_eq!(r.status, 504, "{r:?}");
    // A streamed echo: the request body comes back chunked as it is read.
    let r = exchange(
        h.client_addr,
        "POST",
        "/actors/scripted/k/echo",
        b"ping pong",
    );
    assert_eq!(
        (r.status, r.header("transfer-encoding")),
        (200, Some("chunked"))
    );
    assert_eq!(r.text(), "ping pong");
    // A response shorter than its content-length ends the connection.
    let mut c = HttpConn::connect(h.client_addr);
    c.request("GET", "/actors/scripted/k/short", &[], b"");
    let (status, _) = c.read_head().unwrap();
    assert_eq!(status, 200);
    assert_eq!(c.read_to_end(), b"abc", "what was sent, then the end");
    let m = h.metrics();
    assert_eq!(
        m.value("tether_http_requests_total", &[("status", "504")]),
        1.0
    );
    assert_eq!(
        m.value("tether_http_requests_total", &[("status", "502")]),
        1.0
    );
    h.shutdown();
}

#[test]
fn refusals_before_the_actor_have_their_statuses() {
    let mut config = test_config();
    config.client.max_request_body_bytes = 1000;
    config.client.max_header_bytes = 2048;
    let h = start(config);
    let big = vec![b'b'; 1001];
    let r = exchange(h.client_addr, "POST", "/actors/counter/lim", &big);
    assert_eq!(r.status, 413, "a declared length over the limit: {r:?}");
    let mut c = HttpConn::connect(h.client_addr);
    c.send(b"POST /actors/counter/lim HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(b"3e8\r\n");
    c.send(&big[..1000]);
    c.send(b"\r\n1\r\nx\r\n0\r\n\r\n");
    assert_eq!(c.response().status, 413, "a chunked body past the limit");
    let both = b"POST /actors/counter/lim HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        status_of(&raw_exchange(h.client_addr, both)),
        400,
        "CL and TE"
    );
    let huge = format!(
        "GET /actors/counter/lim HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "h".repeat(3000)
    );
    assert_eq!(
        status_of(&raw_exchange(h.client_addr, huge.as_bytes())),
        431
    );
    let m = h.metrics();
    assert_eq!(
        m.value("tether_http_requests_total", &[("status", "413")]),
        2.0
    );
    h.shutdown();
    // No runner at all: 503 no_runner, as for a WebSocket.
    let bare = start_bare(test_config());
    let r = exchange(bare.client_addr, "GET", "/actors/counter/x", b"");
    assert_eq!(r.status, 503);
    assert!(r.text().starts_with("no_runner"), "{r:?}");
    bare.shutdown();
}

/// A raw runner of `counter` actors announcing `features`, welcomed;
/// with the frames read past the welcome.
fn raw_counter_runner(
    h: &Harness,
    key: &str,
    features: u64,
) -> (
    tungstenite::WebSocket<TcpStream>,
    Vec<tether::tunnel::Frame>,
) {
    use common::raw_tunnel::{next_frame, raw_tunnel, send_frame};
    use tether::tunnel::{Frame, PROTOCOL_VERSION};
    let mut ws = raw_tunnel(h);
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        runner_key: key.into(),
        pool: "default".into(),
        capacity: 10,
        tunnel_index: 0,
        actor_names: vec!["counter".into()],
        features,
    };
    send_frame(&mut ws, &hello);
    let mut pending = Vec::new();
    assert!(matches!(
        next_frame(&mut ws, &mut pending),
        Frame::Welcome { .. }
    ));
    (ws, pending)
}

/// The raw runner is told to start an actor, and says it is ready.
fn ready_the_actor(
    ws: &mut tungstenite::WebSocket<TcpStream>,
    pending: &mut Vec<tether::tunnel::Frame>,
) {
    use common::raw_tunnel::{next_frame, send_frame};
    use tether::tunnel::Frame;
    let Frame::StartActor { actor_id, .. } = next_frame(ws, pending) else {
        panic!("a start")
    };
    send_frame(ws, &Frame::ActorReady { actor_id });
}

#[test]
fn a_runner_without_http_gets_no_requests_501() {
    let mut config = test_config();
    config.server.workers = 1;
    let h = start_bare(config);
    let (mut ws, mut pending) = raw_counter_runner(&h, "old", 1 | 2);
    let addr = h.client_addr;
    let client = std::thread::spawn(move || exchange(addr, "GET", "/actors/counter/old", b""));
    ready_the_actor(&mut ws, &mut pending);
    let r = client.join().unwrap();
    assert_eq!(r.status, 501, "{r:?}");
    assert!(r.text().starts_with("no_http"), "{r:?}");
    h.shutdown();
}

#[test]
fn idle_keep_alive_connections_and_stalled_bodies_are_closed() {
    let mut config = test_config();
    config.client.http_idle_timeout = Duration::from_millis(300);
    let h = start(config);
    let mut c = HttpConn::connect(h.client_addr);
    c.request("GET", "/actors/counter/idle", &[], b"");
    assert_eq!(c.response().status, 200);
    assert!(
        c.is_closed(),
        "closed after http_idle_timeout without a request"
    );
    let mut c = HttpConn::connect(h.client_addr);
    c.send(b"POST /actors/counter/idle HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    assert_eq!(c.response().status, 408, "a body that stalls");
    h.shutdown();
}

#[test]
fn a_client_that_goes_away_cancels_its_request() {
    let h = scripted(test_config());
    let mut s = TcpStream::connect(h.client_addr).unwrap();
    s.write_all(b"GET /actors/scripted/k/wait HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    wait_for("the request at the actor", || {
        WAITS.load(Ordering::SeqCst) == 1
    });
    drop(s);
    wait_for("the actor told of the cancel", || {
        WAITS_CANCELLED.load(Ordering::SeqCst) == 1
    });
    let ok = exchange(h.client_addr, "GET", "/actors/scripted/k/teapot", b"");
    assert_eq!(ok.status, 418, "the actor serves on");
    h.shutdown();
}

/// Reads SSE events (`id`, `data`) from a chunked body until `n` arrived
/// or the body ends; returns them and how the body ended, if it did.
fn read_events(c: &mut HttpConn, n: usize) -> (Vec<(u64, String)>, Option<BodyEnd>) {
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        match c.next_chunk() {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8(chunk).unwrap()),
            Ok(None) => return (events, Some(BodyEnd::Complete)),
            Err(end) => return (events, Some(end)),
        }
        while let Some(at) = text.find("\n\n") {
            let event: String = text.drain(..at + 2).collect();
            let id = event.lines().find_map(|l| l.strip_prefix("id: "));
            let data = event.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id.parse().unwrap(), data.to_owned()));
            }
        }
    }
    (events, None)
}

fn open_events(addr: std::net::SocketAddr, last: Option<u64>) -> HttpConn {
    let mut c = HttpConn::connect(addr);
    let id = last.map(|l| l.to_string());
    let headers: Vec<(&str, &str)> = id.iter().map(|v| ("Last-Event-ID", v.as_str())).collect();
    c.request("GET", "/actors/chat/sse/events", &headers, b"");
    let (status, h) = c.read_head().unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        common::http::header(&h, "content-type"),
        Some("text/event-stream")
    );
    c
}

fn post(addr: std::net::SocketAddr, text: &str) {
    let r = exchange(addr, "POST", "/actors/chat/sse/messages", text.as_bytes());
    assert_eq!(r.status, 201, "{r:?}");
}

#[test]
fn an_sse_stream_is_cut_by_a_migration_and_resumes_from_its_last_event_id() {
    let mut h = start_bare(test_config());
    let mut a = h.runner_options();
    a.key = "runner-a".into();
    h.add_runner(a, tether::runner::BuiltinActors);
    let addr = h.client_addr;
    let mut events = open_events(addr, None);
    for i in 1..=5 {
        post(addr, &format!("m{i}"));
    }
    let (mut seen, end) = read_events(&mut events, 5);
    assert_eq!(end, None);
    let mut b = h.runner_options();
    b.key = "runner-b".into();
    h.add_runner(b, tether::runner::BuiltinActors);
    // Messages keep coming while the room moves.
    let poster = std::thread::spawn(move || {
        for i in 6..=15 {
            post(addr, &format!("m{i}"));
        }
    });
    let moved = h.admin("POST", "/actors/chat/sse/migrate");
    assert_eq!(status_of(&moved), 200, "{moved}");
    let (more, end) = read_events(&mut events, usize::MAX);
    assert_eq!(
        end,
        Some(BodyEnd::Cut),
        "the stream ends incomplete, not complete"
    );
    seen.extend(more);
    poster.join().unwrap();
    let last = seen.last().unwrap().0;
    let mut resumed = open_events(addr, Some(last));
    let (rest, _) = read_events(&mut resumed, (15 - last) as usize);
    seen.extend(rest);
    let expected: Vec<(u64, String)> = (1..=15).map(|i| (i, format!("m{i}"))).collect();
    assert_eq!(seen, expected, "nothing lost, nothing twice, in order");
    h.shutdown();
}

#[test]
fn a_failover_replays_idempotent_requests_and_answers_others_outcome_unknown() {
    let mut config = test_config();
    config.client.http_response_timeout = Duration::from_secs(2);
    let mut h = start_bare(config);
    let mut a = h.runner_options();
    a.key = "runner-a".into();
    h.add_runner(a, Scripted);
    let addr = h.client_addr;
    assert_eq!(
        exchange(addr, "GET", "/actors/scripted/f/x", b"").status,
        418
    );
    // A POST and a GET the actor leaves unanswered, then its runner dies.
    let post = std::thread::spawn(move || exchange(addr, "POST", "/actors/scripted/f/hold", b"x"));
    let get = std::thread::spawn(move || exchange(addr, "GET", "/actors/scripted/f/hold", b""));
    wait_for("both requests at the actor", || {
        HELD.load(Ordering::SeqCst) == 2
    });
    let mut b = h.runner_options();
    b.key = "runner-b".into();
    h.add_runner(b, Scripted);
    h.take_runner(0).kill();
    let r = post.join().unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.text().starts_with("outcome_unknown"), "{r:?}");
    // The GET went again to runner-b (a new request there), which holds it
    // unanswered too: 504 in the end.
    wait_for("the GET at runner-b", || HELD.load(Ordering::SeqCst) == 3);
    let r = get.join().unwrap();
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(h.stat(|s| &s.http_replays), 1);
    h.shutdown();
}

#[test]
fn a_request_the_runner_gives_back_on_a_graceful_move_is_sent_whole_to_the_next() {
    let mut h = start_bare(test_config());
    let mut a = h.runner_options();
    a.key = "runner-a".into();
    h.add_runner(a, Scripted);
    let addr = h.client_addr;
    let post =
        std::thread::spawn(move || exchange(addr, "POST", "/actors/scripted/g/once", b"payload"));
    wait_for("the request at the actor", || {
        ONCE.load(Ordering::SeqCst) == 1
    });
    let mut b = h.runner_options();
    b.key = "runner-b".into();
    h.add_runner(b, Scripted);
    let moved = h.admin("POST", "/actors/scripted/g/migrate");
    assert_eq!(status_of(&moved), 200, "{moved}");
    // runner-a gave it back unhandled; runner-b got it with its body.
    let r = post.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "payload"), "{r:?}");
    assert_eq!(h.stat(|s| &s.http_replays), 1);
    h.shutdown();
}

/// What a runner breaking the HTTP rules sends for request `id`.
fn misbehaviour(key: &str, id: u64) -> Vec<tether::tunnel::Frame> {
    use tether::tunnel::{Frame, HttpResponse};
    let head = |body| {
        Frame::HttpResponse(HttpResponse {
            req_id: id,
            status: 200,
            headers: vec![],
            body,
        })
    };
    let body = |n: usize| Frame::HttpBody {
        req_id: id,
        data: bytes::Bytes::from(vec![b'x'; n]),
    };
    match key {
        "nohead" => vec![body(1)],
        "twoheads" => vec![head(false), head(true)],
        // The initial credit is 256 KiB: four full pieces, then one byte.
        _ => {
            let mut v = vec![head(true)];
            v.extend((0..4).map(|_| body(64 * 1024)));
            v.push(body(1));
            v
        }
    }
}

/// A raw runner announcing HTTP on a one-worker gateway: the tunnel, and
/// the `HttpRequest` a client's `GET /actors/counter/{key}` became.
fn hand_http_runner(
    h: &Harness,
    key: &str,
) -> (
    tungstenite::WebSocket<TcpStream>,
    tether::tunnel::HttpRequest,
    std::thread::JoinHandle<(u16, BodyEnd)>,
) {
    use common::raw_tunnel::next_frame;
    use tether::tunnel::{features, Frame};
    let (mut ws, mut pending) = raw_counter_runner(h, key, features::SUPPORTED);
    let (addr, path) = (h.client_addr, format!("/actors/counter/{key}"));
    let client = std::thread::spawn(move || {
        let mut c = HttpConn::connect(addr);
        c.request("GET", &path, &[("Connection", "close")], b"");
        let (status, headers) = c.read_head().expect("an answer");
        if common::http::header(&headers, "transfer-encoding") != Some("chunked") {
            return (status, BodyEnd::Complete);
        }
        loop {
            match c.next_chunk() {
                Ok(Some(_)) => {}
                Ok(None) => return (status, BodyEnd::Complete),
                Err(end) => return (status, end),
            }
        }
    });
    ready_the_actor(&mut ws, &mut pending);
    let Frame::HttpRequest(request) = next_frame(&mut ws, &mut pending) else {
        panic!("the request")
    };
    (ws, request, client)
}

#[test]
fn a_runner_that_breaks_the_http_rules_loses_its_tunnel_and_nobody_else_is_affected() {
    let mut config = test_config();
    config.server.workers = 1;
    config.actors.start_timeout = Duration::from_millis(500);
    let cases = [
        ("nohead", "HTTP body the response does not allow"),
        ("twoheads", "a second final HTTP response head"),
        ("overcredit", "HTTP body beyond its credit"),
    ];
    for (key, reason) in cases {
        // A gateway each: the actor of one case must not wait for the next.
        let h = start_bare(config.clone());
        let (mut ws, request, client) = hand_http_runner(&h, key);
        common::raw_tunnel::send_batch(&mut ws, &misbehaviour(key, request.req_id));
        let close = loop {
            match ws.read() {
                Ok(tungstenite::Message::Close(c)) => break c.expect("a close code"),
                Ok(_) => continue,
                Err(e) => panic!("{key}: {e}"),
            }
        };
        assert_eq!(
            (u16::from(close.code), close.reason.as_str()),
            (1002, reason),
            "{key}"
        );
        // The first head of two was a whole answer; a response past its
        // credit is cut; a body with no head leaves no answer (the actor
        // finds no other runner: 503).
        let expected = match key {
            "twoheads" => (200, BodyEnd::Complete),
            "overcredit" => (200, BodyEnd::Cut),
            _ => (503, BodyEnd::Complete),
        };
        assert_eq!(client.join().unwrap(), expected, "{key}");
        h.shutdown();
    }
    let mut h = start_bare(config);
    let o = h.runner_options();
    h.add_runner(o, tether::runner::BuiltinActors);
    let r = exchange(h.client_addr, "GET", "/actors/counter/fine", b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "0\n"),
        "the gateway serves on"
    );
    h.shutdown();
}

#[test]
fn a_client_that_expects_100_continue_gets_it_once_the_actor_has_the_request() {
    let h = start_default();
    let mut c = HttpConn::connect(h.client_addr);
    c.send(b"POST /actors/echo/cont HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let (status, _) = c.read_head().unwrap();
    assert_eq!(status, 100, "before the body is sent");
    c.send(b"hello");
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    h.shutdown();
}

#[test]
fn client_tokens_are_checked_and_never_reach_the_actor() {
    use tether::config::{NamespaceConfig, NamespaceRunner};
    const PK: &str = "pk-acme-0123456789abcdef";
    const RUNNER_TOKEN: &str = "runner-acme-0123456789abcdef";
    let mut c = test_config();
    c.namespaces = vec![NamespaceConfig {
        name: "acme".into(),
        open: false,
        publishable_tokens: vec![PK.into()],
        connect_token_secrets: vec![],
        access_tokens: vec![],
        pools: Default::default(),
        runners: vec![NamespaceRunner {
            name: "hosts".into(),
            token: RUNNER_TOKEN.into(),
            pools: vec![],
            key_prefix: "acme-".into(),
        }],
    }];
    let mut h = start_bare(c);
    let mut o = h.runner_options();
    o.token = RUNNER_TOKEN.into();
    o.key = "acme-1".into();
    h.add_runner(o, Scripted);
    let path = "/ns/acme/actors/scripted/t/seen";
    assert_eq!(exchange(h.client_addr, "GET", path, b"").status, 401);
    let mut conn = HttpConn::connect(h.client_addr);
    let bearer = format!("Bearer {PK}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("X-Forwarded-For", "6.6.6.6"),
    ];
    conn.request("GET", path, &headers, b"");
    let r = conn.response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.text(),
        "query=;authorization=false;x-forwarded-for=false;peer=true"
    );
    let r = exchange(h.client_addr, "GET", &format!("{path}?token={PK}&x=1"), b"");
    assert_eq!(
        r.text(),
        "query=x=1;authorization=false;x-forwarded-for=false;peer=true"
    );
    h.shutdown();
}

/// Starts a `/drip` download from actor `scripted/{key}` and reads it
/// slowly until the runner has sent all of it: the connection and what it
/// read, if the gateway then still holds part of the response (what the
/// test needs). Whether it does depends on socket buffers and scheduling,
/// so `None` (the download read to its end) lets the caller try again.
fn download_the_runner_finished(h: &Harness, key: &str) -> Option<(HttpConn, usize)> {
    let bytes_out = || {
        let labels = [("direction", "actor_to_client")];
        h.metrics().value("tether_http_body_bytes_total", &labels)
    };
    let before = bytes_out();
    DRIP_SENT.store(false, Ordering::SeqCst);
    let mut c = HttpConn::connect(h.client_addr);
    c.request("GET", &format!("/actors/scripted/{key}/drip"), &[], b"");
    let (status, _) = c.read_head().unwrap();
    assert_eq!(status, 200);
    // Read slowly: a little at a time until the runner has sent it all,
    // which leaves up to a credit window (and the socket buffers) unread.
    let mut read = 0;
    while !DRIP_SENT.load(Ordering::SeqCst) {
        read += c.read_some(32 << 10);
        let until = std::time::Instant::now() + Duration::from_millis(20);
        while !DRIP_SENT.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            std::thread::yield_now();
        }
    }
    if bytes_out() - before < DRIP_BYTES as f64 {
        return Some((c, read));
    }
    while read < DRIP_BYTES {
        read += c.read_some(1 << 20);
    }
    None
}

#[test]
fn a_response_sent_whole_but_not_yet_read_survives_a_move_and_the_actor_then_sleeps() {
    let mut config = test_config();
    config.actors.idle_timeout = Duration::from_millis(300);
    let mut h = start_bare(config);
    let mut a = h.runner_options();
    a.key = "runner-a".into();
    h.add_runner(a, Scripted);
    let attempt = (0..5).find_map(|i| {
        let key = format!("slow-{i}");
        download_the_runner_finished(&h, &key).map(|(c, read)| (key, c, read))
    });
    let (key, mut c, mut read) = attempt.expect("in 5 tries, a response still on its way");
    let mut b = h.runner_options();
    b.key = "runner-b".into();
    h.add_runner(b, Scripted);
    let moved = h.admin("POST", &format!("/actors/scripted/{key}/migrate"));
    assert_eq!(status_of(&moved), 200, "{moved}");
    while read < DRIP_BYTES {
        read += c.read_some(1 << 20);
    }
    assert_eq!(read, DRIP_BYTES, "the response arrives whole");
    drop(c);
    // Nothing is in flight to it any more: it sleeps when idle.
    wait_for("the actor asleep", || {
        let (_, list) = h.admin_json("/actors");
        let actors = list["actors"].as_array().cloned().unwrap_or_default();
        let moved = actors.iter().find(|a| a["key"][0] == key.as_str());
        moved.is_none_or(|a| a["state"] == "asleep")
    });
    h.shutdown();
}

#[test]
fn an_upload_that_stalls_after_the_response_started_cuts_the_response() {
    let mut config = test_config();
    config.client.http_idle_timeout = Duration::from_millis(300);
    let h = scripted(config);
    let mut c = HttpConn::connect(h.client_addr);
    c.send(
        b"POST /actors/scripted/k/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    c.send(b"5\r\nhello\r\n");
    let (status, headers) = c.read_head().unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        common::http::header(&headers, "transfer-encoding"),
        Some("chunked")
    );
    assert_eq!(c.next_chunk(), Ok(Some(b"hello".to_vec())));
    // The client sends no more: once http_idle_timeout passes the response
    // ends where it is, with no second response written into it.
    let rest = String::from_utf8_lossy(&c.read_to_end()).into_owned();
    assert!(!rest.contains("HTTP/1.1"), "{rest:?}");
    h.shutdown();
}

#[test]
fn a_client_that_leaves_while_the_runner_withholds_credit_cancels_its_request() {
    use common::raw_tunnel::{next_frame, send_frame};
    use tether::tunnel::{features, Frame, HttpResponse};
    let mut config = test_config();
    config.server.workers = 1;
    let h = start_bare(config);
    let (mut ws, mut pending) = raw_counter_runner(&h, "stingy", features::SUPPORTED);
    // An upload longer than the first credit window, which this runner
    // never extends: the rest waits at the gateway.
    let mut c = HttpConn::connect(h.client_addr);
    c.send(b"POST /actors/counter/stingy HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n");
    c.send(&vec![b'u'; 300 << 10]);
    ready_the_actor(&mut ws, &mut pending);
    let Frame::HttpRequest(request) = next_frame(&mut ws, &mut pending) else {
        panic!("the request")
    };
    let req_id = request.req_id;
    let head = HttpResponse {
        req_id,
        status: 200,
        headers: vec![],
        body: true,
    };
    send_frame(&mut ws, &Frame::HttpResponse(head));
    assert_eq!(
        c.read_head().map(|(s, _)| s),
        Some(200),
        "the response started"
    );
    drop(c);
    // The gateway notices the client left and tells the runner.
    loop {
        match next_frame(&mut ws, &mut pending) {
            Frame::HttpCancel { req_id: id, .. } if id == req_id => break,
            Frame::HttpBody { .. } => continue,
            other => panic!("{other:?}"),
        }
    }
    h.shutdown();
}

#[test]
fn a_request_to_an_actor_of_a_serverless_pool_cold_starts_a_runner_and_is_answered() {
    use common::functions::{config_with, pool, FunctionHost};
    let host = FunctionHost::start(None);
    let h = start_bare(config_with(pool(&host.url())));
    assert_eq!(h.stat(|s| &s.tunnels), 0, "no runner before the request");
    let r = exchange(
        h.client_addr,
        "POST",
        "/actors/echo/cold",
        b"from a cold start",
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "from a cold start"),
        "{r:?}"
    );
    let starts = h.metrics().value(
        "tether_serverless_starts_total",
        &[("namespace", "default"), ("pool", "fn")],
    );
    assert_eq!(starts, 1.0);
    let r = exchange(h.client_addr, "GET", "/actors/chat/cold/history", b"");
    assert_eq!((r.status, r.text().as_str()), (200, "[]"), "{r:?}");
    // Uploads past the first credit window, to actors not started yet,
    // all at once.
    let addr = h.client_addr;
    let uploads: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let body = vec![b'a' + i as u8; 1 << 20];
                let r = exchange(addr, "POST", &format!("/actors/echo/up-{i}"), &body);
                (r.status, r.body == body)
            })
        })
        .collect();
    for u in uploads {
        assert_eq!(u.join().unwrap(), (200, true));
    }
    h.shutdown();
}

#[test]
fn requests_to_a_serverless_actor_go_on_across_its_runners_lifespan_hand_overs() {
    use common::functions::{config_with, pool, FunctionHost};
    let host = FunctionHost::start(Some(Duration::from_secs(1)));
    let mut p = pool(&host.url());
    p.request_lifespan = Duration::from_secs(1);
    p.drain_grace = Duration::from_millis(500);
    let h = start_bare(config_with(p));
    let mut c = HttpConn::connect(h.client_addr);
    let mut sent = 0;
    // Messages posted one after another, on one kept-alive connection
    // where it lasts, until the room has moved twice (each runner's
    // lifespan handed over to the next).
    while h.metrics().value("tether_actor_migrations_total", &[]) < 2.0 {
        sent += 1;
        let text = format!("m{sent}");
        c.request("POST", "/actors/chat/life/messages", &[], text.as_bytes());
        let r = match c.response_to(false) {
            Some(r) => r,
            None => {
                // The connection ended between requests: a new one.
                c = HttpConn::connect(h.client_addr);
                c.request("POST", "/actors/chat/life/messages", &[], text.as_bytes());
                c.response()
            }
        };
        assert_eq!((r.status, r.text()), (201, format!("{sent}\n")), "{r:?}");
    }
    let r = exchange(h.client_addr, "GET", "/actors/chat/life/history", b"");
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let last = json.as_array().and_then(|a| a.last()).cloned();
    let expected = serde_json::json!({"id": sent, "text": format!("m{sent}")});
    assert_eq!(last, Some(expected), "each message once, in order");
    h.shutdown();
}
