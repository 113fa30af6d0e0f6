//! Broadcasts (PROTOCOL §7a) to an actor whose members are partly parked:
//! each named member gets each broadcast once, in order with the actor's
//! other messages, whether its socket was parked or had a task, and a
//! parked member needs to do nothing to receive it.

mod common;

use bytes::Bytes;
use common::raw_tunnel::{next_frame, raw_tunnel, send_batch, send_frame};
use common::*;
use tether::tunnel::{features, Frame, MessageKind, Recipients, PROTOCOL_VERSION};

type Tunnel = tungstenite::WebSocket<std::net::TcpStream>;

const TEXT: u8 = 1;

fn text_of(ws: &mut RawWs) -> String {
    loop {
        let f = ws.recv().expect("connection open");
        match f.opcode {
            TEXT => return String::from_utf8(f.payload).unwrap(),
            9 => ws.send(true, 10, &f.payload),
            other => panic!("unexpected frame {other}: {f:?}"),
        }
    }
}

fn parked(h: &Harness) -> u64 {
    h.stat(|s| &s.parked)
}

fn broadcasts(h: &Harness) -> u64 {
    h.stat(|s| &s.broadcasts)
}

/// A hand-driven runner of `room` that takes broadcasts.
struct RawRunner {
    t: Tunnel,
    pending: Vec<Frame>,
}

impl RawRunner {
    fn connect(h: &Harness) -> RawRunner {
        let mut r = RawRunner {
            t: raw_tunnel(h),
            pending: Vec::new(),
        };
        send_frame(
            &mut r.t,
            &Frame::Hello {
                version: PROTOCOL_VERSION,
                runner_key: "raw-room".into(),
                pool: "default".into(),
                capacity: 10,
                tunnel_index: 0,
                actor_names: vec!["room".into()],
                features: features::BROADCAST,
            },
        );
        let Frame::Welcome { features: got, .. } = r.next() else {
            panic!("expected Welcome");
        };
        assert_ne!(got & features::BROADCAST, 0, "the gateway takes broadcasts");
        r
    }

    fn next(&mut self) -> Frame {
        next_frame(&mut self.t, &mut self.pending)
    }

    /// Answers a `StartActor` (the next frame) with `ActorReady`; its id.
    fn start(&mut self) -> u64 {
        let frame = self.next();
        let Frame::StartActor { actor_id, .. } = frame else {
            panic!("expected StartActor, got {frame:?}");
        };
        send_frame(&mut self.t, &Frame::ActorReady { actor_id });
        actor_id
    }

    /// Accepts the next `ConnOpen` as hibernatable; its connection id.
    fn accept(&mut self) -> u64 {
        let frame = self.next();
        let Frame::ConnOpen { conn_id, .. } = frame else {
            panic!("expected ConnOpen, got {frame:?}");
        };
        let accept = Frame::ConnAccept {
            conn_id,
            protocol: None,
            hibernatable: Some(true),
        };
        send_frame(&mut self.t, &accept);
        conn_id
    }

    /// Answers the gateway's `StopActor` for `actor_id` (the next frame).
    fn stopped(&mut self, actor_id: u64) {
        let frame = self.next();
        assert!(
            matches!(frame, Frame::StopActor { actor_id: a } if a == actor_id),
            "expected StopActor, got {frame:?}"
        );
        let reason = "stopped".into();
        send_frame(&mut self.t, &Frame::ActorStopped { actor_id, reason });
    }
}

fn text(payload: &'static str) -> Bytes {
    Bytes::from_static(payload.as_bytes())
}

fn message(conn_id: u64, payload: &'static str) -> Frame {
    Frame::Message {
        conn_id,
        index: 0,
        kind: MessageKind::Text,
        payload: text(payload),
    }
}

fn broadcast(actor_id: u64, to: Recipients, payload: &'static str) -> Frame {
    Frame::Broadcast {
        actor_id,
        kind: MessageKind::Text,
        to,
        payload: text(payload),
    }
}

/// Four members of a room that sleeps: every socket parked.
fn parked_room(h: &Harness, runner: &mut RawRunner) -> (Vec<RawWs>, Vec<u64>, u64) {
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    let mut actor = None;
    for _ in 0..4 {
        let addr = h.client_addr;
        let client = std::thread::spawn(move || RawWs::connect(addr, "/actors/room/mixed"));
        if actor.is_none() {
            actor = Some(runner.start());
        }
        ids.push(runner.accept());
        clients.push(client.join().expect("client connects"));
    }
    let actor_id = actor.unwrap();
    send_frame(&mut runner.t, &Frame::SleepRequest { actor_id });
    runner.stopped(actor_id);
    wait_for("all four members parked", || parked(h) == 4);
    (clients, ids, actor_id)
}

#[test]
fn broadcasts_reach_parked_and_running_members_once_each_and_in_order() {
    let mut config = test_config();
    config.server.workers = 1;
    let h = start_bare(config);
    let mut runner = RawRunner::connect(&h);
    let (mut clients, ids, _) = parked_room(&h, &mut runner);

    // Member 0 speaks: the room wakes for it; the other three stay parked
    // (a wake restores their connections, it does not resume their sockets).
    clients[0].send(true, TEXT, b"wake");
    let actor_id = runner.start();
    for _ in 0..4 {
        let frame = runner.next();
        assert!(matches!(frame, Frame::RestoreConn { .. }), "{frame:?}");
    }
    let frame = runner.next();
    assert!(
        matches!(frame, Frame::Message { conn_id, index: 1, .. } if conn_id == ids[0]),
        "{frame:?}"
    );
    send_frame(
        &mut runner.t,
        &Frame::Ack {
            conn_id: ids[0],
            index: 1,
        },
    );
    wait_for("member 0 running, the others parked", || parked(&h) == 3);

    // One batch: private messages and broadcasts of each kind, while
    // members 1-3 are parked and member 0 has its task.
    let before = broadcasts(&h);
    send_batch(
        &mut runner.t,
        &[
            message(ids[0], "to 0"),
            broadcast(actor_id, Recipients::All, "all"),
            broadcast(actor_id, Recipients::AllBut(vec![ids[1]]), "all but 1"),
            broadcast(
                actor_id,
                Recipients::Only(vec![ids[1], ids[2], 999]),
                "only 1 2",
            ),
            message(ids[3], "to 3"),
            broadcast(actor_id, Recipients::Only(vec![ids[0], ids[0]]), "only 0"),
            broadcast(actor_id, Recipients::All, "all again"),
        ],
    );
    let expected: [&[&str]; 4] = [
        &["to 0", "all", "all but 1", "only 0", "all again"],
        &["all", "only 1 2", "all again"],
        &["all", "all but 1", "only 1 2", "all again"],
        &["all", "all but 1", "to 3", "all again"],
    ];
    for (i, (client, want)) in clients.iter_mut().zip(expected).enumerate() {
        for text in want {
            assert_eq!(text_of(client), *text, "member {i}: in order, each once");
        }
    }
    // Nothing more came: the next thing each member reads is this marker.
    let markers: Vec<Frame> = ids.iter().map(|id| message(*id, "marker")).collect();
    send_batch(&mut runner.t, &markers);
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(text_of(client), "marker", "member {i}: no duplicate");
    }
    assert_eq!(broadcasts(&h) - before, 5, "one Broadcast frame each");
    assert_eq!(parked(&h), 0, "a delivery resumed each parked socket");
    drop(runner);
    h.shutdown();
}

#[test]
fn a_broadcast_sent_as_the_actor_falls_asleep_reaches_everyone_without_a_wake() {
    let mut config = test_config();
    config.server.workers = 1;
    let h = start_bare(config);
    let mut runner = RawRunner::connect(&h);
    let (mut clients, _, _) = parked_room(&h, &mut runner);
    clients[0].send(true, TEXT, b"wake");
    let actor_id = runner.start();
    for _ in 0..4 {
        runner.next(); // the restores
    }
    let Frame::Message { conn_id, index, .. } = runner.next() else {
        panic!("expected member 0's message");
    };
    send_frame(&mut runner.t, &Frame::Ack { conn_id, index });
    wait_for("member 0 running, the others parked", || parked(&h) == 3);
    // The actor's last words and its sleep, in one batch.
    send_batch(
        &mut runner.t,
        &[
            broadcast(actor_id, Recipients::All, "good night"),
            Frame::SleepRequest { actor_id },
        ],
    );
    runner.stopped(actor_id);
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(text_of(client), "good night", "member {i}");
    }
    wait_for("all four members parked again", || parked(&h) == 4);
    let (_, status) = h.admin_json("/actors/room/mixed");
    assert_eq!(status["state"], "asleep", "{status}");
    let wakes = h
        .metrics()
        .value("tether_actor_wake_latency_seconds_count", &[]);
    assert_eq!(wakes, 1.0, "only member 0's message woke the room");
    drop(runner);
    h.shutdown();
}

/// PROTOCOL §5a: the gateway keeps the last `OutputMark` a runner sent for
/// an actor and tells the runner that starts it next (so that runner knows
/// whether the output of the actor's last saved batch arrived).
#[test]
fn the_next_runner_hears_which_output_mark_arrived_last() {
    let mut config = test_config();
    config.server.workers = 1;
    let h = start_bare(config);
    let mut first = RawRunner::connect(&h);
    let addr = h.client_addr;
    let client = std::thread::spawn(move || RawWs::connect(addr, "/actors/room/marks"));
    let frame = first.next();
    let Frame::StartActor {
        actor_id,
        output_seen,
        ..
    } = frame
    else {
        panic!("expected StartActor, got {frame:?}");
    };
    assert_eq!(output_seen, 0, "a new actor: no mark seen");
    send_frame(&mut first.t, &Frame::ActorReady { actor_id });
    first.accept();
    let mut client = client.join().expect("client connects");
    let mark = Frame::OutputMark { actor_id, seq: 41 };
    let after = broadcast(actor_id, Recipients::All, "after the mark");
    send_batch(&mut first.t, &[mark, after]);
    assert_eq!(text_of(&mut client), "after the mark");
    drop(first); // the runner dies; the room is started again elsewhere
    let mut second = RawRunner::connect(&h);
    let frame = second.next();
    assert!(
        matches!(
            frame,
            Frame::StartActor {
                output_seen: 42,
                ..
            }
        ),
        "the last mark, plus one: {frame:?}"
    );
}

/// A message the runner never acknowledged before the actor stopped (its
/// save failed, say) is replayed when the actor starts again.
#[test]
fn a_message_not_acknowledged_before_a_stop_is_replayed_at_the_next_start() {
    let mut config = test_config();
    config.server.workers = 1;
    let h = start_bare(config);
    let mut runner = RawRunner::connect(&h);
    let addr = h.client_addr;
    let client = std::thread::spawn(move || RawWs::connect(addr, "/actors/room/unacked"));
    let actor_id = runner.start();
    runner.accept();
    let mut client = client.join().expect("client connects");
    client.send(true, TEXT, b"m1");
    let frame = runner.next();
    assert!(
        matches!(frame, Frame::Message { index: 1, .. }),
        "{frame:?}"
    );
    // No Ack: the actor asks to sleep and stops with m1 unacknowledged.
    send_frame(&mut runner.t, &Frame::SleepRequest { actor_id });
    runner.stopped(actor_id);
    // m1 still waits for an actor: the room starts again (at once, or for
    // m2), and both reach it in order.
    client.send(true, TEXT, b"m2");
    runner.start();
    let frame = runner.next();
    assert!(matches!(frame, Frame::RestoreConn { .. }), "{frame:?}");
    let replayed: Vec<u64> = (0..2)
        .map(|_| match runner.next() {
            Frame::Message { index, .. } => index,
            other => panic!("expected a Message, got {other:?}"),
        })
        .collect();
    assert_eq!(replayed, [1, 2], "m1 again, then m2");
}
