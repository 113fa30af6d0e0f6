//! The tunnel client's batch handling, driven without a gateway.
use std::sync::Mutex;

use super::super::state::Record;
use super::super::{ActorFactory, MemoryStore, RunnerOptions, StateStore};
use super::*;

/// Records the payloads it handles, and broadcasts that it saw each.
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Actor for Recorder {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, _conn: ConnId, message: Message) {
        if let Message::Text(t) = message {
            ctx.broadcast(&Message::Text(format!("saw {t}")));
            self.0.lock().unwrap().push(t);
        }
    }
    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _code: u16, _reason: &str) {
        ctx.broadcast(&Message::Text(format!("left {conn}")));
    }
    fn save_state(&self) -> Option<Vec<u8>> {
        Some(self.0.lock().unwrap().join(",").into_bytes())
    }
}

/// Makes each message its connection's attachment, noting the attachment
/// it found there first.
struct Attacher(Arc<Mutex<Vec<String>>>);

impl Actor for Attacher {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, message: Message) {
        if let Message::Text(t) = message {
            let had = ctx.attachment(conn).cloned().unwrap_or_default();
            let had = String::from_utf8_lossy(&had).into_owned();
            self.0.lock().unwrap().push(format!("{t} after {had:?}"));
            ctx.set_attachment(conn, Bytes::from(t));
        }
    }
    fn save_state(&self) -> Option<Vec<u8>> {
        Some(self.0.lock().unwrap().join(",").into_bytes())
    }
}

struct Factory(Arc<Mutex<Vec<String>>>);

impl ActorFactory for Factory {
    fn actor_names(&self) -> Vec<String> {
        vec!["rec".into(), "att".into()]
    }
    fn create(&self, name: &str, _key: &[String]) -> Option<Box<dyn Actor>> {
        match name {
            "att" => Some(Box::new(Attacher(self.0.clone()))),
            _ => Some(Box::new(Recorder(self.0.clone()))),
        }
    }
}

fn shared(seen: &Arc<Mutex<Vec<String>>>, store: &MemoryStore) -> Arc<Shared> {
    let mut options = RunnerOptions::new("ws://127.0.0.1:1", "t");
    options.state = Some(Arc::new(store.clone()));
    Arc::new(Shared::new(options, Box::new(Factory(seen.clone()))))
}

fn message(index: u64) -> Frame {
    Frame::Message {
        conn_id: 9,
        index,
        kind: MessageKind::Text,
        payload: Bytes::from(format!("m{index}")),
    }
}

fn restore(last_index: u64) -> Frame {
    Frame::RestoreConn {
        conn_id: 9,
        actor_id: 1,
        path: "/actors/rec/k".into(),
        query: String::new(),
        headers: Vec::new(),
        protocol: None,
        attachment: Bytes::new(),
        last_index,
        peer: String::new(),
        output_seen: 0,
    }
}

fn start() -> Frame {
    Frame::StartActor {
        actor_id: 1,
        name: "rec".into(),
        key: vec!["k".into()],
        input: Bytes::new(),
        output_seen: 0,
    }
}

/// Runs frames through a fresh tunnel state as one batch; returns the
/// frames sent.
fn run_frames(shared: &Arc<Shared>, frames: Vec<Frame>) -> Vec<Frame> {
    let mut t = TunnelState {
        marks: true,
        ..TunnelState::default()
    };
    t.io.broadcasts = true;
    let mut batch = Batch::default();
    for f in frames {
        t.handle_in_batch(shared, f, 0, &mut batch);
    }
    let out = t.finish_batch(shared, batch);
    decode_frames(out.freeze()).map(Result::unwrap).collect()
}

/// Runs frames as one batch; returns the acks sent.
fn run(shared: &Arc<Shared>, frames: Vec<Frame>) -> Vec<u64> {
    let frames = run_frames(shared, frames).into_iter();
    frames
        .filter_map(|f| match f {
            Frame::Ack { index, .. } => Some(index),
            _ => None,
        })
        .collect()
}

/// The payloads of the broadcasts among `frames`.
fn broadcast_texts(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Broadcast { payload, .. } => Some(String::from_utf8_lossy(payload).into_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_saved_batch_whose_output_never_left_is_sent_again_once() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    // Handled and saved; the runner dies before the batch's message leaves.
    run(
        &shared(&seen, &store),
        vec![start(), restore(0), message(1), message(2)],
    );
    // The gateway restores with last_index 0 and replays 1 and 2: dropped
    // as handled, and what they made the actor broadcast is sent again.
    let second = run_frames(
        &shared(&seen, &store),
        vec![start(), restore(0), message(1), message(2)],
    );
    assert_eq!(broadcast_texts(&second), ["saw m1", "saw m2"]);
    assert_eq!(*seen.lock().unwrap(), ["m1", "m2"], "handled once");
    // That batch did arrive (the gateway restores with 2): nothing again.
    let third = run_frames(
        &shared(&seen, &store),
        vec![start(), restore(2), message(3)],
    );
    assert_eq!(broadcast_texts(&third), ["saw m3"]);
}

#[test]
fn output_sent_again_survives_a_second_death_before_it_leaves() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    // Handled and saved; the runner dies before the batch leaves.
    run(
        &shared(&seen, &store),
        vec![start(), restore(0), message(1), message(2)],
    );
    // The recovery batch resends m1 and m2's broadcasts and handles a new
    // message (so the actor is saved again); it dies before leaving too.
    run(
        &shared(&seen, &store),
        vec![start(), restore(0), message(1), message(2), message(3)],
    );
    // The third instance must still send all three broadcasts, once each.
    let third = run_frames(
        &shared(&seen, &store),
        vec![start(), restore(0), message(1), message(2), message(3)],
    );
    assert_eq!(broadcast_texts(&third), ["saw m1", "saw m2", "saw m3"]);
    assert_eq!(*seen.lock().unwrap(), ["m1", "m2", "m3"], "handled once");
}

#[test]
fn an_attachment_sent_again_is_the_one_the_restored_actor_sees() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let start_att = || Frame::StartActor {
        actor_id: 1,
        name: "att".into(),
        key: vec!["k".into()],
        input: Bytes::new(),
        output_seen: 0,
    };
    // m1 becomes the attachment; saved; the runner dies before it leaves,
    // so the gateway still holds no attachment for the connection.
    run(
        &shared(&seen, &store),
        vec![start_att(), restore(0), message(1)],
    );
    let second = run_frames(
        &shared(&seen, &store),
        vec![start_att(), restore(0), message(1), message(2)],
    );
    let sent_again = second.iter().any(
        |f| matches!(f, Frame::SetAttachment { attachment, .. } if attachment.as_ref() == b"m1"),
    );
    assert!(
        sent_again,
        "the lost SetAttachment is sent again: {second:?}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        ["m1 after \"\"", "m2 after \"m1\""],
        "the runner's copy agrees with what the gateway now holds"
    );
}

fn start_seen(output_seen: u64) -> Frame {
    Frame::StartActor {
        actor_id: 1,
        name: "rec".into(),
        key: vec!["k".into()],
        input: Bytes::new(),
        output_seen,
    }
}

fn restore_conn(conn_id: u64, last_index: u64) -> Frame {
    match restore(last_index) {
        Frame::RestoreConn {
            actor_id,
            path,
            query,
            headers,
            protocol,
            attachment,
            peer,
            ..
        } => Frame::RestoreConn {
            conn_id,
            actor_id,
            path,
            query,
            headers,
            protocol,
            attachment,
            last_index,
            peer,
            output_seen: 0,
        },
        other => other,
    }
}

fn marks(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::OutputMark { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

/// A batch that only handled a close acknowledges nothing, so no
/// connection's index can show that its output was lost: the gateway's
/// output mark does.
#[test]
fn the_output_of_a_batch_of_closes_is_sent_again_when_its_mark_never_arrived() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = || shared(&seen, &store);
    let first = run_frames(
        &shared(),
        vec![
            start_seen(0),
            restore_conn(9, 0),
            restore_conn(10, 0),
            message(1),
        ],
    );
    assert_eq!(marks(&first), [1], "record 1's output carries its mark");
    // 10 leaves and the room says so (record 2); the runner dies before
    // that batch leaves: the gateway saw mark 1 only.
    let close = Frame::Close {
        conn_id: 10,
        code: 1000,
        reason: String::new(),
    };
    let second = run_frames(
        &shared(),
        vec![
            start_seen(2),
            restore_conn(9, 1),
            restore_conn(10, 0),
            close,
        ],
    );
    assert_eq!(broadcast_texts(&second), ["left 10"]);
    assert_eq!(marks(&second), [2]);
    // Had mark 2 arrived, nothing would be sent again.
    let arrived = run_frames(&shared(), vec![start_seen(3), restore_conn(9, 1)]);
    assert_eq!(broadcast_texts(&arrived), Vec::<String>::new());
    // It did not: the next runner sends the lost broadcast, once, followed
    // by record 2's mark again, which tells the gateway it went out.
    let third = run_frames(&shared(), vec![start_seen(2), restore_conn(9, 1)]);
    assert_eq!(broadcast_texts(&third), ["left 10"]);
    assert_eq!(marks(&third), [2]);
    // So the start after that (a wake, a move) sends nothing again.
    let fourth = run_frames(&shared(), vec![start_seen(3), restore_conn(9, 1)]);
    assert_eq!(broadcast_texts(&fourth), Vec::<String>::new());
}

/// A record an older library wrote has no number: the connections'
/// indices judge it even when the gateway knows a mark.
#[test]
fn a_record_without_a_number_is_judged_by_its_indices() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let old_record = Record {
        seq: 0,
        handled: vec![(9, 1)],
        outbox: {
            let mut out = BytesMut::new();
            encode_frame(
                &mut out,
                &Frame::Broadcast {
                    actor_id: 1,
                    kind: MessageKind::Text,
                    to: crate::tunnel::Recipients::All,
                    payload: Bytes::from_static(b"saw m1"),
                },
            );
            out.freeze()
        },
        earlier: Vec::new(),
        spans: Vec::new(),
        state: Bytes::from_static(b"m1"),
    };
    StateStore::save(&store, "rec", &["k".to_owned()], &old_record.encode()).unwrap();
    // The gateway saw mark 7 from a newer runner, then an older one saved
    // m1 and died before its batch left (the gateway acknowledged 0).
    let frames = run_frames(
        &shared(&seen, &store),
        vec![start_seen(8), restore_conn(9, 0)],
    );
    assert_eq!(broadcast_texts(&frames), ["saw m1"]);
}

#[test]
fn replays_overlapping_what_was_handled_are_dropped_but_acknowledged() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = shared(&seen, &MemoryStore::default());
    let acks = run(
        &s,
        vec![
            start(),
            restore(3),
            message(2),
            message(3),
            message(4),
            message(4),
            message(5),
            message(3),
            message(6),
        ],
    );
    assert_eq!(*seen.lock().unwrap(), ["m4", "m5", "m6"]);
    assert_eq!(acks, [2, 3, 4, 4, 5, 3, 6]);
}

#[test]
fn a_saved_record_ahead_of_the_gateway_stops_a_second_application() {
    // A runner handled and saved up to 5, then died before its acks left:
    // the gateway restores with last_index 3 and replays 4..=7.
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let first = shared(&seen, &store);
    run(
        &first,
        vec![
            start(),
            restore(0),
            message(1),
            message(2),
            message(3),
            message(4),
            message(5),
        ],
    );
    seen.lock().unwrap().clear();
    let second = shared(&seen, &store);
    let acks = run(
        &second,
        vec![
            start(),
            restore(3),
            message(4),
            message(5),
            message(6),
            message(7),
        ],
    );
    assert_eq!(*seen.lock().unwrap(), ["m6", "m7"]);
    assert_eq!(acks, [4, 5, 6, 7]);
}

/// A store whose saves fail for keys starting with "bad".
struct FailsForBad(MemoryStore);

impl crate::runner::StateStore for FailsForBad {
    fn load(&self, name: &str, key: &[String]) -> std::io::Result<Option<Vec<u8>>> {
        self.0.load(name, key)
    }
    fn save(&self, name: &str, key: &[String], record: &[u8]) -> std::io::Result<()> {
        if key.iter().any(|k| k.starts_with("bad")) {
            return Err(std::io::Error::other("disk full"));
        }
        self.0.save(name, key, record)
    }
}

fn started(actor_id: u64, key: &str, conn_id: u64) -> Vec<Frame> {
    let restore = match restore(0) {
        Frame::RestoreConn { path, .. } => Frame::RestoreConn {
            conn_id,
            actor_id,
            path,
            query: String::new(),
            headers: Vec::new(),
            protocol: None,
            attachment: Bytes::new(),
            last_index: 0,
            peer: String::new(),
            output_seen: 0,
        },
        _ => unreachable!(),
    };
    let start = Frame::StartActor {
        actor_id,
        name: "rec".into(),
        key: vec![key.into()],
        input: Bytes::new(),
        output_seen: 0,
    };
    vec![start, restore]
}

fn msg(conn_id: u64, index: u64) -> Frame {
    Frame::Message {
        conn_id,
        index,
        kind: MessageKind::Text,
        payload: Bytes::from(format!("c{conn_id}m{index}")),
    }
}

/// One batch through a fresh tunnel state; what leaves, decoded.
fn batch(store: MemoryStore, frames: Vec<Frame>) -> (Vec<Frame>, MemoryStore) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut options = RunnerOptions::new("ws://127.0.0.1:1", "t");
    options.state = Some(Arc::new(FailsForBad(store.clone())));
    let shared = Arc::new(Shared::new(options, Box::new(Factory(seen))));
    let mut t = TunnelState::default();
    let mut b = Batch::default();
    for f in frames {
        t.handle_in_batch(&shared, f, 0, &mut b);
    }
    let out = t.finish_batch(&shared, b);
    let frames = decode_frames(out.freeze()).map(|f| f.unwrap()).collect();
    (frames, store)
}

fn acks_of(frames: &[Frame], conn: u64) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Ack { conn_id, index } if *conn_id == conn => Some(*index),
            _ => None,
        })
        .collect()
}

fn stopped_for_save(frames: &[Frame], actor: u64) -> bool {
    frames.iter().any(|f| {
        matches!(f, Frame::ActorStopped { actor_id, reason }
            if *actor_id == actor && reason.starts_with("state save failed"))
    })
}

#[test]
fn a_failed_save_withdraws_only_that_actors_part_of_the_batch() {
    let mut frames = started(1, "bad-a", 9);
    frames.extend(started(2, "good-b", 10));
    frames.extend([msg(9, 1), msg(10, 1), msg(9, 2), msg(10, 2)]);
    let (out, _) = batch(MemoryStore::default(), frames);
    assert_eq!(
        acks_of(&out, 9),
        Vec::<u64>::new(),
        "nothing unsaved is acknowledged"
    );
    assert_eq!(
        acks_of(&out, 10),
        vec![1, 2],
        "the other actor is untouched"
    );
    assert!(stopped_for_save(&out, 1) && !stopped_for_save(&out, 2));
}

#[test]
fn an_actor_stopped_in_the_batch_of_its_last_messages_is_saved_first() {
    let mut frames = started(1, "good-a", 9);
    frames.extend([msg(9, 1), Frame::StopActor { actor_id: 1 }]);
    let (out, store) = batch(MemoryStore::default(), frames);
    assert_eq!(acks_of(&out, 9), vec![1]);
    let saved = crate::runner::StateStore::load(&store, "rec", &["good-a".into()]).unwrap();
    assert!(saved.is_some(), "saved before it stopped");
    let mut frames = started(1, "bad-a", 9);
    frames.extend([msg(9, 1), Frame::StopActor { actor_id: 1 }]);
    let (out, _) = batch(MemoryStore::default(), frames);
    assert_eq!(
        acks_of(&out, 9),
        Vec::<u64>::new(),
        "its save failed: not acknowledged"
    );
    assert!(stopped_for_save(&out, 1));
}

/// A store that lost its records numbers the next one past the gateway's
/// last mark, so that a loss of that record's output is still seen.
#[test]
fn numbering_goes_on_past_the_gateways_mark_when_the_store_forgot() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    // The gateway saw mark 7 (output_seen 8); the store has nothing.
    let first = run_frames(
        &shared(&seen, &store),
        vec![start_seen(8), restore_conn(9, 0), message(1)],
    );
    assert_eq!(marks(&first), [8]);
    // That batch never arrived: the gateway still says 8.
    let second = run_frames(
        &shared(&seen, &store),
        vec![start_seen(8), restore_conn(9, 0)],
    );
    assert_eq!(broadcast_texts(&second), ["saw m1"]);
}

mod several;
