//! Hibernation over loopback: actors sleep, the gateway keeps their clients,
//! a message wakes them (possibly on another runner) with the connections and
//! attachments restored.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::raw_tunnel::*;
use common::*;
use tether::runner::{Actor, ActorFactory, ConnId, ConnInfo, Ctx, Message, OpenDecision};

const TEXT: u8 = 1;
const PING: u8 = 9;
const PONG: u8 = 10;

type Log = Arc<Mutex<Vec<String>>>;

/// A room: members name themselves with `?name=`, kept as the attachment.
/// "sleep" asks the gateway to put the room to sleep; anything else is
/// broadcast as "name: text".
struct Room {
    log: Log,
}

impl Actor for Room {
    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, info: &ConnInfo) -> OpenDecision {
        let name = info.query.strip_prefix("name=").unwrap_or("?").to_owned();
        ctx.set_attachment(conn, Bytes::from(name));
        OpenDecision::Accept {
            protocol: None,
            hibernatable: Some(true),
        }
    }

    fn on_restore(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _info: &ConnInfo) {
        let name = ctx
            .attachment(conn)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default();
        self.log.lock().unwrap().push(format!("restore {name}"));
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: Message) {
        let Message::Text(text) = message else { return };
        if text == "sleep" {
            return ctx.sleep();
        }
        let name = ctx
            .attachment(conn)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default();
        ctx.broadcast(&Message::Text(format!("{name}: {text}")));
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, code: u16, _reason: &str) {
        let name = ctx
            .attachment(conn)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default();
        self.log
            .lock()
            .unwrap()
            .push(format!("close {name} {code}"));
    }
}

#[derive(Clone)]
struct Rooms {
    log: Log,
}

impl ActorFactory for Rooms {
    fn actor_names(&self) -> Vec<String> {
        vec!["room".into()]
    }
    fn create(&self, _name: &str, _key: &[String]) -> Option<Box<dyn Actor>> {
        self.log.lock().unwrap().push("start".into());
        Some(Box::new(Room {
            log: self.log.clone(),
        }))
    }
}

fn text_of(ws: &mut RawWs) -> String {
    loop {
        let f = ws.recv().expect("connection open");
        match f.opcode {
            TEXT => return String::from_utf8(f.payload).unwrap(),
            PING => ws.send(true, PONG, &f.payload),
            other => panic!("unexpected frame {other}: {f:?}"),
        }
    }
}

fn parked(h: &Harness) -> u64 {
    h.stat(|s| &s.parked)
}

fn rooms_harness(config: tether::Config) -> (Harness, Log) {
    let log: Log = Arc::default();
    let mut h = start_bare(config);
    let options = h.runner_options();
    h.add_runner(options, Rooms { log: log.clone() });
    (h, log)
}

#[test]
fn a_sleeping_lobby_wakes_on_another_runner_with_connections_and_attachments() {
    let (mut h, log) = rooms_harness(test_config());
    let mut members: Vec<RawWs> = (0..20)
        .map(|i| RawWs::connect(h.client_addr, &format!("/actors/room/lobby?name=m{i}")))
        .collect();
    members[0].send(true, TEXT, b"hello");
    for m in members.iter_mut() {
        assert_eq!(text_of(m), "m0: hello");
    }
    // The room asks to sleep; its runner stops it.
    members[0].send(true, TEXT, b"sleep");
    wait_for("the actor to stop", || h.runner(0).running_actors() == 0);
    // The gateway holds the 20 sockets without a task each.
    wait_for("all 20 sockets parked", || parked(&h) == 20);
    // That runner goes away entirely; another one arrives.
    let first = h.take_runner(0);
    first.stop();
    let options = h.runner_options();
    h.add_runner(options, Rooms { log: log.clone() });
    assert_eq!(h.runner(0).running_actors(), 0);
    // A member speaks: the room wakes on the new runner, with everyone restored.
    members[7].send(true, TEXT, b"anyone?");
    for m in members.iter_mut() {
        assert_eq!(
            text_of(m),
            "m7: anyone?",
            "same sockets throughout, attachment restored"
        );
    }
    assert_eq!(h.runner(0).running_actors(), 1);
    assert_eq!(parked(&h), 0, "awake again, every socket has its task back");
    let log = log.lock().unwrap();
    assert_eq!(
        log.iter().filter(|e| e.as_str() == "start").count(),
        2,
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|e| e.starts_with("restore m")).count(),
        20,
        "{log:?}"
    );
    drop(log);
    h.shutdown();
}

#[test]
fn idle_actors_sleep_by_themselves_and_pings_do_not_wake_them() {
    let mut c = test_config();
    c.actors.idle_timeout = Duration::from_millis(300);
    let (h, log) = rooms_harness(c);
    let mut a = RawWs::connect(h.client_addr, "/actors/room/idle?name=a");
    a.send(true, TEXT, b"hi");
    assert_eq!(text_of(&mut a), "a: hi");
    wait_for("idle sleep", || h.runner(0).running_actors() == 0);
    wait_for("the socket to park", || parked(&h) == 1);
    a.send(true, PING, b"still there?");
    let pong = a.recv().unwrap();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (PONG, &b"still there?"[..])
    );
    // The ping unparked the socket (before the pong); it parks again only
    // once its session has dealt with the ping and found the actor asleep.
    // Had the ping woken the actor, that would be after it started (a
    // second "start") and went idle again.
    wait_for("the socket to park again after the pong", || {
        parked(&h) == 1
    });
    assert_eq!(
        h.runner(0).running_actors(),
        0,
        "a ping does not wake the actor"
    );
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|e| e.as_str() == "start")
            .count(),
        1
    );
    h.shutdown();
}

#[test]
fn a_silent_hibernated_client_is_dropped_without_waking_the_actor() {
    let mut c = test_config();
    c.client.ping_interval = Duration::from_millis(200);
    c.client.ping_timeout = Duration::from_millis(300);
    let (h, log) = rooms_harness(c);
    let mut silent = RawWs::connect(h.client_addr, "/actors/room/quiet?name=s");
    let mut other = RawWs::connect(h.client_addr, "/actors/room/quiet?name=o");
    other.send(true, TEXT, b"sleep");
    wait_for("sleep", || h.runner(0).running_actors() == 0);
    // `other` answers the gateway's pings, on its own thread...
    let answering = std::thread::spawn(move || {
        let mut pongs = 0;
        while pongs < 5 {
            let f = other.recv().expect("other stays connected");
            assert_eq!(f.opcode, PING, "{f:?}");
            other.send(true, PONG, &f.payload);
            pongs += 1;
        }
        other
    });
    // ...`silent` never does: it is dropped.
    let mut closed = false;
    while let Some(f) = silent.recv() {
        closed |= f.opcode == 8;
    }
    assert!(closed);
    let _other = answering.join().unwrap();
    assert_eq!(h.runner(0).running_actors(), 0);
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|e| e.as_str() == "start")
            .count(),
        1
    );
    h.shutdown();
}

#[test]
fn a_close_frame_wakes_the_actor_so_it_sees_the_close() {
    let (h, log) = rooms_harness(test_config());
    let mut a = RawWs::connect(h.client_addr, "/actors/room/bye?name=a");
    let mut b = RawWs::connect(h.client_addr, "/actors/room/bye?name=b");
    a.send(true, TEXT, b"sleep");
    wait_for("sleep", || h.runner(0).running_actors() == 0);
    b.send(true, 8, &4000u16.to_be_bytes());
    assert_eq!(b.expect_close(), 4000);
    wait_for("the close to reach the woken actor", || {
        log.lock().unwrap().iter().any(|e| e == "close b 4000")
    });
    a.send(true, TEXT, b"still here");
    assert_eq!(text_of(&mut a), "a: still here");
    h.shutdown();
}

fn publish(h: &Harness, path: &str, token: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(h.admin_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn publish_reaches_hibernated_sockets_and_the_actor_stays_asleep() {
    let mut c = test_config();
    c.admin.token = "admin-secret".into();
    let (h, log) = rooms_harness(c);
    let mut members: Vec<RawWs> = (0..5)
        .map(|i| RawWs::connect(h.client_addr, &format!("/actors/room/news?name=m{i}")))
        .collect();
    members[0].send(true, TEXT, b"sleep");
    wait_for("sleep", || h.runner(0).running_actors() == 0);
    let r = publish(&h, "/actors/room/news/publish", "admin-secret", "breaking");
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(r.ends_with("{\"delivered\":5}\n"), "{r}");
    for m in members.iter_mut() {
        assert_eq!(text_of(m), "breaking");
    }
    assert_eq!(
        h.runner(0).running_actors(),
        0,
        "publishing does not wake the actor"
    );
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|e| e.as_str() == "start")
            .count(),
        1
    );
    assert_eq!(
        status_of(&publish(&h, "/actors/room/news/publish", "wrong", "x")),
        401
    );
    assert!(
        publish(&h, "/actors/room/nobody/publish", "admin-secret", "x")
            .ends_with("{\"delivered\":0}\n")
    );
    h.shutdown();
}

#[test]
fn publish_is_refused_without_an_admin_token() {
    let mut c = test_config();
    c.admin.token = String::new();
    let (h, _) = rooms_harness(c);
    assert_eq!(
        status_of(&publish(&h, "/actors/room/x/publish", "", "x")),
        403
    );
    h.shutdown();
}

#[test]
fn a_wake_with_no_runner_closes_with_1011_and_harms_no_one_else() {
    let mut c = test_config();
    c.actors.start_timeout = Duration::from_millis(500);
    let (mut h, log) = rooms_harness(c);
    let mut a = RawWs::connect(h.client_addr, "/actors/room/doomed?name=a");
    a.send(true, TEXT, b"sleep");
    wait_for("sleep", || h.runner(0).running_actors() == 0);
    h.take_runner(0).stop();
    // Until the gateway has seen the runner leave, a wake would still go there.
    wait_for("the gateway to notice the runner left", || {
        raw_exchange(
            h.client_addr,
            upgrade_request("/actors/room/probe").as_bytes(),
        )
        .contains("no_runner")
    });
    a.send(true, TEXT, b"wake up");
    let close = loop {
        let f = a.recv().expect("a close frame");
        if f.opcode == 8 {
            break f;
        }
    };
    assert_eq!(close.close_code(), Some(1011));
    assert!(
        String::from_utf8_lossy(&close.payload[2..]).contains("no_runner"),
        "{close:?}"
    );
    // A runner comes back: the same actor key starts fresh for a new client.
    let options = h.runner_options();
    h.add_runner(options, Rooms { log: log.clone() });
    let mut b = RawWs::connect(h.client_addr, "/actors/room/doomed?name=b");
    b.send(true, TEXT, b"fresh");
    assert_eq!(text_of(&mut b), "b: fresh");
    h.shutdown();
}

/// The window between `StopActor` (to sleep) and the runner's `ActorStopped`:
/// a client arriving then must start the actor again as soon as the stop is
/// confirmed, not wait for `start_timeout` (it used to get 503 then).
#[test]
fn a_client_arriving_while_its_actor_stops_to_sleep_starts_it_once_the_stop_is_confirmed() {
    use tether::tunnel::{Frame, PROTOCOL_VERSION};
    let mut config = test_config();
    config.server.workers = 1;
    config.actors.idle_timeout = Duration::from_millis(300);
    config.actors.start_timeout = Duration::from_secs(6);
    let h = start_bare(config);
    let mut t = raw_tunnel(&h);
    let mut pending = Vec::new();
    send_frame(
        &mut t,
        &Frame::Hello {
            version: PROTOCOL_VERSION,
            runner_key: "slow-to-stop".into(),
            pool: "default".into(),
            capacity: 10,
            tunnel_index: 0,
            actor_names: vec!["echo".into()],
            features: 0,
        },
    );
    assert!(matches!(
        next_frame(&mut t, &mut pending),
        Frame::Welcome { .. }
    ));
    let addr = h.client_addr;
    let first = std::thread::spawn(move || RawWs::connect(addr, "/actors/echo/s"));
    let Frame::StartActor { actor_id, .. } = next_frame(&mut t, &mut pending) else {
        panic!("expected StartActor");
    };
    send_frame(&mut t, &Frame::ActorReady { actor_id });
    let Frame::ConnOpen {
        conn_id: first_id, ..
    } = next_frame(&mut t, &mut pending)
    else {
        panic!("expected ConnOpen");
    };
    send_frame(
        &mut t,
        &Frame::ConnAccept {
            conn_id: first_id,
            protocol: None,
            hibernatable: Some(true),
        },
    );
    let _first = first.join().expect("first client connects");
    // Idle: the gateway stops the actor to put it to sleep; hold the
    // confirmation back while a second client arrives.
    assert_eq!(
        next_frame(&mut t, &mut pending),
        Frame::StopActor { actor_id }
    );
    let second = RawWs::begin(addr, "/actors/echo/s");
    // Its request is sent. Once the gateway (one worker) has accepted it
    // and then answered an admin request (more turns of that worker than
    // reading the request takes), the client waits for the stopping actor:
    // only then is the stop confirmed.
    wait_for("the gateway to accept the second client", || {
        h.stat(|s| &s.accepted) == 2
    });
    let _ = h.admin("GET", "/actors/echo/s");
    send_frame(
        &mut t,
        &Frame::ActorStopped {
            actor_id,
            reason: "stopped".into(),
        },
    );
    // Well before start_timeout (6 s): the restart follows the confirmation.
    t.get_ref()
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let Frame::StartActor {
        actor_id: again, ..
    } = next_frame(&mut t, &mut pending)
    else {
        panic!("expected the actor to start again");
    };
    assert_ne!(again, actor_id, "a new incarnation");
    send_frame(&mut t, &Frame::ActorReady { actor_id: again });
    let mut restored = None;
    let mut opened = None;
    while restored.is_none() || opened.is_none() {
        match next_frame(&mut t, &mut pending) {
            Frame::RestoreConn { conn_id, .. } => restored = Some(conn_id),
            Frame::ConnOpen { conn_id, .. } => {
                assert!(restored.is_some(), "restores come before new opens");
                opened = Some(conn_id);
                send_frame(
                    &mut t,
                    &Frame::ConnAccept {
                        conn_id,
                        protocol: None,
                        hibernatable: Some(true),
                    },
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(restored, Some(first_id), "the sleeping client is restored");
    let mut second = second.finish();
    second.send(true, TEXT, b"hello");
    match next_frame(&mut t, &mut pending) {
        Frame::Message {
            conn_id, payload, ..
        } => {
            assert_eq!(Some(conn_id), opened);
            assert_eq!(&payload[..], b"hello");
        }
        other => panic!("expected the second client's message, got {other:?}"),
    }
    h.shutdown();
}
