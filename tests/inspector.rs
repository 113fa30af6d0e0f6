//! The inspector over loopback: its event stream (`GET /events`) shows
//! runners, actors and what happens to them, within bounds (streams at
//! once, a reader that stops reading, shutdown); and the page itself, in
//! headless Chromium, shows a runner and an actor that sleeps and wakes.
//! That test leaves a screenshot in target/test-output/inspector.png and
//! prints its path (`cargo test --test inspector -- --nocapture` shows it).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::chromium::{self, Page};
use common::rooms::Rooms;
use common::*;
use serde_json::Value;

const TEXT: u8 = 1;
const RUNNER_KEY: &str = "inspected-runner";

fn rooms_gateway(config: tether::Config) -> Harness {
    let mut h = start_bare(config);
    let mut o = h.runner_options();
    o.key = RUNNER_KEY.into();
    h.add_runner(o, Rooms);
    h
}

/// An inspector stream read with a plain socket.
struct Events {
    stream: TcpStream,
    pending: String,
}

impl Events {
    /// Opens `/events`; the status and, if 200, the stream.
    fn open(admin: SocketAddr, token: &str) -> (u16, Option<Events>) {
        let mut stream = TcpStream::connect(admin).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let request =
            format!("GET /events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut events = Events {
            stream,
            pending: String::new(),
        };
        let deadline = Instant::now() + WAIT;
        while !events.pending.contains("\r\n\r\n") && events.read_some() {
            assert!(Instant::now() < deadline, "no answer head");
        }
        let status = status_of(&events.pending);
        if status != 200 {
            return (status, None);
        }
        let head_end = events.pending.find("\r\n\r\n").unwrap() + 4;
        assert!(events.pending[..head_end].contains("text/event-stream"));
        events.pending.drain(..head_end);
        (status, Some(events))
    }

    /// Reads what arrived; false once the stream has ended.
    fn read_some(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.pending.push_str(&String::from_utf8_lossy(&chunk[..n]));
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Err(_) => false,
        }
    }

    /// The next server-sent event (name, data), reading for at most WAIT.
    fn next(&mut self) -> (String, Value) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = Value::Null;
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n.to_owned();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(d).unwrap();
                    }
                }
                if !name.is_empty() {
                    return (name, data);
                }
                continue; // a comment
            }
            assert!(Instant::now() < deadline, "no event within {WAIT:?}");
            assert!(self.read_some(), "the stream ended");
        }
    }

    /// Reads until an event named `name` whose data satisfies `check`.
    #[track_caller]
    fn until(&mut self, name: &str, mut check: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no {name} event as wanted");
            let (n, data) = self.next();
            if n == name && check(&data) {
                return data;
            }
        }
    }
}

fn about(e: &Value, kind: &str, key: &str) -> bool {
    e["kind"] == kind && e["actor"] == "room" && e["key"][0] == key
}

#[test]
fn the_stream_shows_runners_and_actors_opening_sleeping_waking_and_closing() {
    let h = rooms_gateway(test_config());
    let (status, events) = Events::open(h.admin_addr, ADMIN_TOKEN);
    assert_eq!(status, 200);
    let mut events = events.unwrap();
    let picture = events.until("snapshot", |s| s["runners"][0]["key"] == RUNNER_KEY);
    assert_eq!(picture["runners"][0]["tunnels"], 2);
    assert_eq!(picture["workers"], 2);

    let mut ann = RawWs::connect(h.client_addr, "/actors/room/lobby?name=ann");
    let mut bob = RawWs::connect(h.client_addr, "/actors/room/lobby?name=bob");
    let start = events.until("event", |e| about(e, "start", "lobby"));
    assert_eq!(start["runner"], RUNNER_KEY);
    events.until("event", |e| about(e, "open", "lobby") && e["conn"].is_u64());
    for i in 0..10 {
        ann.send(true, TEXT, format!("m{i}").as_bytes());
        bob.recv().expect("broadcast");
    }
    let busy = events.until("snapshot", |s| {
        s["messages"]["in"].as_u64() >= Some(10) && s["connections"]["open"] == 2
    });
    let lobby = &busy["actors"][0];
    assert_eq!(
        (lobby["key"][0].as_str(), lobby["state"].as_str()),
        (Some("lobby"), Some("running"))
    );

    ann.send(true, TEXT, b"sleep");
    events.until("event", |e| about(e, "sleep", "lobby"));
    events.until("snapshot", |s| s["connections"]["hibernated"] == 2);
    bob.send(true, TEXT, b"wake up");
    let wake = events.until("event", |e| about(e, "wake", "lobby"));
    assert_eq!(wake["runner"], RUNNER_KEY, "woken on the runner it went to");
    // ann hears every message, hers included, and then the one that woke the room.
    let heard: Vec<Vec<u8>> = (0..11)
        .map(|_| ann.recv().expect("a message").payload)
        .collect();
    assert_eq!(heard.last().map(Vec::as_slice), Some(&b"wake up"[..]));
    events.until("snapshot", |s| s["actors"][0]["state"] == "running");
    drop(ann);
    events.until("event", |e| about(e, "close", "lobby"));
    h.shutdown();
}

#[test]
fn streams_are_bounded_a_reader_that_stops_reading_is_dropped_and_all_end_on_shutdown() {
    let mut c = test_config();
    c.admin.max_event_streams = 1;
    c.client.send_timeout = Duration::from_millis(500);
    let mut h = rooms_gateway(c);
    // One stream, whose reader reads nothing (and has little room to buffer).
    let stuck = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stuck.set_recv_buffer_size(4096).unwrap();
    stuck.connect(&h.admin_addr.into()).unwrap();
    let mut stuck: TcpStream = stuck.into();
    let request =
        format!("GET /events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n");
    stuck.write_all(request.as_bytes()).unwrap();
    // Wait until it holds the one place.
    wait_for("the stuck stream to hold the only place", || {
        Events::open(h.admin_addr, ADMIN_TOKEN).0 == 503
    });
    let refused = {
        let request = format!("GET /events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n");
        raw_exchange(h.admin_addr, request.as_bytes())
    };
    assert!(refused.contains("admin.max_event_streams"), "{refused}");
    // Plenty to send: connections come and go until the stream's writes
    // stall past client.send_timeout and it gives its place back.
    let mut events = None;
    wait_for("the stuck stream to be dropped", || {
        for _ in 0..20 {
            let mut ws = RawWs::connect(
                h.client_addr,
                "/actors/room/churn?name=someone-with-a-long-name",
            );
            ws.send(true, 8, &[0x03, 0xe8]);
            ws.expect_close();
        }
        let (status, opened) = Events::open(h.admin_addr, ADMIN_TOKEN);
        events = opened;
        status == 200
    });
    let mut events = events.unwrap();
    events.until("snapshot", |_| true);
    // Shutdown ends the stream.
    let gateway = h.take_gateway().unwrap();
    let stopping = std::thread::spawn(move || gateway.shutdown());
    let deadline = Instant::now() + WAIT;
    while events.read_some() {
        assert!(
            Instant::now() < deadline,
            "the stream did not end at shutdown"
        );
    }
    stopping.join().unwrap();
    drop(stuck);
}

/// Where tests leave files for people to look at: target/test-output.
fn output_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap().join("test-output")
}

#[test]
fn chromium_shows_the_runner_and_an_actor_falling_asleep_and_waking() {
    if !chromium::available() {
        return;
    }
    let h = rooms_gateway(test_config());
    let dir = output_dir().join("inspector-profile");
    let url = format!("http://{}/#token={ADMIN_TOKEN}", h.admin_addr);
    let mut page = Page::open(&dir, &url);
    page.wait_for_text("#runners tbody", &[RUNNER_KEY, "default"]);
    assert_eq!(
        page.eval("location.hash"),
        "",
        "the token left the address bar"
    );

    let mut ann = RawWs::connect(h.client_addr, "/actors/room/lobby?name=ann");
    let _bob = RawWs::connect(h.client_addr, "/actors/room/lobby?name=bob");
    page.wait_for_text("#actors tbody", &["lobby", "running"]);
    ann.send(true, TEXT, b"hello");
    ann.send(true, TEXT, b"sleep");
    page.wait_for_text("#actors tbody", &["lobby", "sleeping"]);
    page.wait_for_text("#log", &["sleep", "default/room/lobby"]);
    ann.send(true, TEXT, b"wake up");
    page.wait_for_text("#log", &["wake", "sleep", "open"]);
    page.wait_for_text("#actors tbody", &["lobby", "running"]);
    let status = page.eval("document.getElementById('status').textContent");
    assert_eq!(status, "live");
    let shot = output_dir().join("inspector.png");
    page.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    println!("inspector screenshot: {}", shot.display());
    drop(page);
    let _ = std::fs::remove_dir_all(dir);
    h.shutdown();
}
