//! Several saved batches on their way when something dies (PROTOCOL §5a,
//! `kept.rs`): each connection gets again what its own gateway missed.

use super::*;

/// Runs each list of frames as one batch of one runner; returns what each
/// batch sent.
fn run_batches(shared: &Arc<Shared>, batches: Vec<Vec<Frame>>) -> Vec<Vec<Frame>> {
    run_batches_marked(shared, batches, true)
}

/// As `run_batches`, with a gateway that does (`marks`) or does not take
/// output marks.
fn run_batches_marked(
    shared: &Arc<Shared>,
    batches: Vec<Vec<Frame>>,
    marks: bool,
) -> Vec<Vec<Frame>> {
    let mut t = TunnelState {
        marks,
        ..TunnelState::default()
    };
    t.io.broadcasts = true;
    let mut sent = Vec::new();
    for frames in batches {
        let mut batch = Batch::default();
        for f in frames {
            t.handle_in_batch(shared, f, 0, &mut batch);
        }
        let out = t.finish_batch(shared, batch);
        sent.push(decode_frames(out.freeze()).map(Result::unwrap).collect());
    }
    sent
}

fn restore_seen(conn_id: u64, last_index: u64, seen: u64) -> Frame {
    let mut frame = restore_conn(conn_id, last_index);
    if let Frame::RestoreConn { output_seen, .. } = &mut frame {
        *output_seen = seen;
    }
    frame
}

fn open(conn_id: u64) -> Frame {
    Frame::ConnOpen {
        conn_id,
        actor_id: 1,
        path: "/actors/rec/k".into(),
        query: String::new(),
        headers: Vec::new(),
        protocols: Vec::new(),
        peer: String::new(),
    }
}

/// Who each broadcast among `frames` names, with its text.
fn broadcasts_to(frames: &[Frame]) -> Vec<(Vec<u64>, String)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Broadcast {
                to: crate::tunnel::Recipients::Only(to),
                payload,
                ..
            } => Some((to.clone(), String::from_utf8_lossy(payload).into_owned())),
            _ => None,
        })
        .collect()
}

/// Messages 1 and 2 of connection 9, with 10 a member too: records 1
/// and 2.
fn records_1_and_2_with_9_and_10(shared: &Arc<Shared>) {
    let first = vec![
        start_seen(0),
        restore_conn(9, 0),
        restore_conn(10, 0),
        message(1),
    ];
    run_batches(shared, vec![first, vec![message(2)]]);
}

/// Three messages on one connection, one batch each, saved as records
/// 1, 2 and 3.
fn three_batches(shared: &Arc<Shared>, also: Vec<Frame>) -> Vec<Vec<Frame>> {
    let first = [
        vec![start_seen(0), restore_conn(9, 0)],
        also,
        vec![message(1)],
    ]
    .concat();
    let sent = run_batches(shared, vec![first, vec![message(2)], vec![message(3)]]);
    let marked: Vec<Vec<u64>> = sent.iter().map(|b| marks(b)).collect();
    assert_eq!(marked, [[1], [2], [3]]);
    sent
}

#[test]
fn every_saved_batch_whose_output_never_arrived_is_sent_again_in_order() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    three_batches(&shared(&seen, &store), vec![]);
    // The gateway received record 1's output only (mark 1), and replays
    // messages 2 and 3, which the saved state already holds.
    let again = run_frames(
        &shared(&seen, &store),
        vec![start_seen(2), restore_conn(9, 1), message(2), message(3)],
    );
    assert_eq!(broadcast_texts(&again), ["saw m2", "saw m3"]);
    assert_eq!(marks(&again), [3], "record 3's mark again: both arrived");
    let acked = run(
        &shared(&seen, &store),
        vec![start_seen(4), restore_conn(9, 1), message(2), message(3)],
    );
    assert_eq!(acked, [2, 3], "replays dropped as handled, acknowledged");
    assert_eq!(*seen.lock().unwrap(), ["m1", "m2", "m3"]);
}

/// In a cluster each node holding clients got its own share of the
/// output before the node owning the actor died.
#[test]
fn each_connection_gets_again_what_its_own_gateway_missed() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    three_batches(&shared(&seen, &store), vec![restore_conn(10, 0)]);
    let again = run_frames(
        &shared(&seen, &store),
        vec![
            start_seen(0),
            restore_seen(9, 1, 4),
            restore_seen(10, 0, 2),
            message(2),
            message(3),
        ],
    );
    assert_eq!(
        broadcasts_to(&again),
        [
            (vec![10], "saw m2".to_string()),
            (vec![10], "saw m3".to_string())
        ]
    );
    assert_eq!(marks(&again), [3]);
}

/// A connection that joined after a batch never gets that batch's
/// broadcast, even from a gateway that says it received nothing.
#[test]
fn a_batch_from_before_a_connection_joined_is_not_its_own() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = shared(&seen, &store);
    run_batches(
        &shared,
        vec![
            vec![start_seen(0), restore_conn(9, 0), message(1)],
            vec![open(11), message(2)],
        ],
    );
    let again = run_frames(
        &shared,
        vec![start_seen(0), restore_seen(9, 2, 3), restore_seen(11, 0, 1)],
    );
    assert_eq!(broadcasts_to(&again), [(vec![11], "saw m2".to_string())]);
}

/// The start's mark speaks for the restores of the start only: once the
/// actor saved again, a connection restored later (another node's client
/// rejoining, whose node does not know its marks) is not sent what the
/// actor sent since.
#[test]
fn the_starts_mark_does_not_judge_a_later_restore() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    three_batches(&shared(&seen, &store), vec![]);
    let later = run_batches(
        &shared(&seen, &store),
        vec![
            vec![start_seen(4), restore_conn(9, 3), message(4)],
            vec![restore_seen(10, 0, 0)],
        ],
    );
    assert_eq!(broadcast_texts(&later[0]), ["saw m4"]);
    assert_eq!(broadcast_texts(&later[1]), Vec::<String>::new());
}

fn message_on(conn_id: u64, index: u64, text: &str) -> Frame {
    Frame::Message {
        conn_id,
        index,
        kind: MessageKind::Text,
        payload: Bytes::from(text.to_owned()),
    }
}

/// A connection opened in a batch that saved nothing is in no record:
/// restored after the runner dies, it is a member of no kept output, and
/// is not sent broadcasts made before it existed. (Single gateway: its
/// mark 1 says record 2's output was lost with the socket.)
#[test]
fn a_connection_opened_after_the_last_save_is_no_member_of_its_output() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = shared(&seen, &store);
    run_batches(
        &shared,
        vec![
            vec![start_seen(0), restore_conn(9, 0), message(1)],
            vec![message(2)],
            vec![open(11)],
        ],
    );
    let again = run_frames(
        &shared,
        vec![start_seen(2), restore_conn(9, 1), restore_conn(11, 0)],
    );
    assert_eq!(
        broadcasts_to(&again),
        [(vec![9], "saw m2".to_string())],
        "11 joined after record 2"
    );
}

/// A link blip: the owner's runner sees another node's client close, the
/// actor goes on (and says so to the others), then the client is restored
/// with its node's last mark. It is not sent what was broadcast while it
/// was not a member, its own "left" message included.
#[test]
fn a_connection_closed_and_restored_is_not_sent_what_was_said_while_it_was_away() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = shared(&seen, &store);
    let sent = run_batches(
        &shared,
        vec![
            vec![
                start_seen(0),
                restore_conn(9, 0),
                restore_conn(10, 0),
                message(1),
            ],
            vec![Frame::Close {
                conn_id: 10,
                code: 1001,
                reason: String::new(),
            }],
            vec![message(2)],
            // Its node received record 1's output and mark: output_seen 2.
            vec![restore_seen(10, 0, 2)],
        ],
    );
    assert_eq!(broadcast_texts(&sent[1]), ["left 10"]);
    assert_eq!(
        broadcasts_to(&sent[3]),
        Vec::<(Vec<u64>, String)>::new(),
        "10 was not a member of records 2 and 3"
    );
}

/// The index rule (no mark known for the connection) after the new
/// instance saved: the late connection gets its share of the record the
/// actor started from, not the new instance's newer output.
#[test]
fn a_late_restore_judged_by_indices_gets_its_share_of_the_start_batch() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    // First runner: conn 10's message 1 saved as record 1; its output
    // ("saw m1") never left.
    run_batches(
        &shared(&seen, &store),
        vec![vec![
            start_seen(0),
            restore_conn(9, 0),
            restore_conn(10, 0),
            message_on(10, 1, "m1"),
        ]],
    );
    // Next runner, no marks known (e.g. the gateway handed the actor over
    // in an upgrade): conn 9 is restored and talks (record 2); conn 10 is
    // restored in a later batch with no output_seen.
    let sent = run_batches(
        &shared(&seen, &store),
        vec![
            vec![start_seen(0), restore_conn(9, 0), message(2)],
            vec![restore_conn(10, 0)],
        ],
    );
    assert_eq!(broadcast_texts(&sent[0]), ["saw m2"]);
    assert_eq!(
        broadcast_texts(&sent[1]),
        ["saw m1"],
        "10 lost record 1's output; record 2's already went"
    );
}

/// After an upgrade handed the actor over (StartActor.output_seen 0), the
/// gateway's own client is judged by its indices and another node's by
/// that node's mark, in one batch: the whole resend the indices ask for
/// leaves out the connection its mark already served.
#[test]
fn a_whole_resend_by_indices_leaves_out_connections_judged_by_their_marks() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    records_1_and_2_with_9_and_10(&shared(&seen, &store));
    // Conn 10's node received record 1 only (output_seen 2); conn 9's
    // gateway saw index 1 acknowledged only (record 2 lost by indices).
    let again = run_frames(
        &shared(&seen, &store),
        vec![start_seen(0), restore_seen(10, 0, 2), restore_conn(9, 1)],
    );
    let to_10 = again
        .iter()
        .filter(|f| match f {
            Frame::Broadcast { to, .. } => match to {
                crate::tunnel::Recipients::All => true,
                crate::tunnel::Recipients::AllBut(b) => !b.contains(&10),
                crate::tunnel::Recipients::Only(o) => o.contains(&10),
            },
            _ => false,
        })
        .count();
    assert_eq!(to_10, 1, "record 2 reaches 10 once: {again:?}");
}

/// The 3-node failover: the new owner's runner already saved a batch of
/// its own (record 3, a broadcast to all, made before conn 10 was
/// restored here) when conn 10's node restores it with its own mark: 10
/// gets what it missed of records 1 and 2, not record 3 (no member of it;
/// the owner's gateway holds such broadcasts back from it until the
/// restore's acknowledgement).
#[test]
fn a_late_restore_is_not_sent_what_the_new_instance_said_before_it() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    records_1_and_2_with_9_and_10(&shared(&seen, &store));
    // 9's node got marks 1 and 2 (owner now); 10's node only mark 1.
    let sent = run_batches(
        &shared(&seen, &store),
        vec![
            vec![start_seen(3), restore_conn(9, 2), message(3)],
            vec![restore_seen(10, 0, 2)],
        ],
    );
    assert_eq!(broadcast_texts(&sent[0]), ["saw m3"]);
    assert_eq!(
        broadcasts_to(&sent[1]),
        [(vec![10], "saw m2".to_string())],
        "record 3 was made before 10 was restored here"
    );
}

/// A start's restores are answered together: each lost broadcast goes
/// again once, to every restored connection it was for, not once each.
#[test]
fn a_lost_broadcast_goes_again_once_for_all_restored_connections() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    three_batches(&shared(&seen, &store), vec![restore_conn(10, 0)]);
    let again = run_frames(
        &shared(&seen, &store),
        vec![start_seen(2), restore_conn(9, 1), restore_conn(10, 0)],
    );
    assert_eq!(
        broadcasts_to(&again),
        [
            (vec![9, 10], "saw m2".to_string()),
            (vec![9, 10], "saw m3".to_string())
        ]
    );
}

// ---- review 2 -------------------------------------------------------------

/// A connection restored late, in the same batch as (after) a message
/// whose handler broadcast to all: that broadcast was made before it
/// joined (the owner's gateway held it back from it, fenced), so it was
/// never a member of it. Its record counts it a member of the whole
/// batch (joined at `next_seq`), and a later restore by mark sends it
/// "saw m3", which it was never meant to get.
#[test]
fn a_restore_after_a_broadcast_in_its_batch_is_no_member_of_it() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    records_1_and_2_with_9_and_10(&shared(&seen, &store));
    // A new owner: 9's node has marks 1 and 2; 10's node restores it
    // late, in the same batch as message 3 (after it).
    let sent = run_batches(
        &shared(&seen, &store),
        vec![vec![
            start_seen(3),
            restore_conn(9, 2),
            message(3),
            restore_seen(10, 0, 2),
        ]],
    );
    assert_eq!(
        broadcasts_to(&sent[0]),
        [(vec![10], "saw m2".to_string())],
        "10 gets its share of record 2; saw m3 (all) was before it joined"
    );
    // That owner dies before it relayed this batch to 10's node (one link
    // message: 10's node has none of it, still mark 1, seen 2).
    let again = run_batches(
        &shared(&seen, &store),
        vec![vec![
            start_seen(4),
            restore_conn(9, 3),
            restore_seen(10, 0, 2),
        ]],
    );
    assert_eq!(
        broadcasts_to(&again[0]),
        [(vec![10], "saw m2".to_string())],
        "10 again gets its share of record 2, but never was sent saw m3"
    );
}

/// Broadcasts to all when a connection comes back.
struct Greeter;

impl Actor for Greeter {
    fn on_restore(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _info: &ConnInfo) {
        ctx.broadcast(&Message::Text(format!("back {conn}")));
    }
    fn on_message(&mut self, _ctx: &mut Ctx<'_>, _conn: ConnId, _message: Message) {}
    fn save_state(&self) -> Option<Vec<u8>> {
        Some(b"g".to_vec())
    }
}

struct GreeterFactory;

impl ActorFactory for GreeterFactory {
    fn actor_names(&self) -> Vec<String> {
        vec!["rec".into()]
    }
    fn create(&self, _name: &str, _key: &[String]) -> Option<Box<dyn Actor>> {
        Some(Box::new(Greeter))
    }
}

/// The gateway fences a late-restored connection from broadcasts to all
/// until the restore's `Ack`: what `on_restore` says to all (the runner
/// counts the connection in) must come after that `Ack`, or the restored
/// connection never hears it.
#[test]
fn a_late_restore_is_acknowledged_before_what_on_restore_says_to_all() {
    let store = MemoryStore::default();
    let mut options = RunnerOptions::new("ws://127.0.0.1:1", "t");
    options.state = Some(Arc::new(store.clone()));
    let shared = Arc::new(Shared::new(options, Box::new(GreeterFactory)));
    let mut t = TunnelState {
        marks: true,
        conn_marks: true,
        ..TunnelState::default()
    };
    t.io.broadcasts = true;
    let mut sent = Vec::new();
    for frames in [
        vec![start_seen(0), restore_conn(9, 0)],
        vec![restore_conn(10, 0)],
    ] {
        let mut batch = Batch::default();
        for f in frames {
            t.handle_in_batch(&shared, f, 0, &mut batch);
        }
        let out = t.finish_batch(&shared, batch);
        sent.push(
            decode_frames(out.freeze())
                .map(Result::unwrap)
                .collect::<Vec<Frame>>(),
        );
    }
    let late = &sent[1];
    let ack = late
        .iter()
        .position(|f| matches!(f, Frame::Ack { conn_id: 10, .. }))
        .expect("the late restore is acknowledged");
    let back = late
        .iter()
        .position(|f| matches!(f, Frame::Broadcast { payload, .. } if &payload[..] == b"back 10"))
        .expect("on_restore broadcast to all");
    assert!(
        ack < back,
        "Ack for 10 at {ack} after the broadcast to all at {back}: the fenced gateway drops it for 10"
    );
}

/// A gateway that takes restores' own marks (CONN_MARKS) says 0 at the
/// start and per connection what it received: a connection whose node
/// does not know (0: handed over by an upgrade, or an older node) is
/// judged by its indices, not sent again every kept batch it was in.
#[test]
fn an_unknown_restore_is_not_judged_by_a_fresh_owners_none_received() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    records_1_and_2_with_9_and_10(&shared(&seen, &store));
    // Node of 10 got everything, then was upgraded (marks forgotten); the
    // owner died; a node with no clients of its own places the actor.
    let sent = run_batches(
        &shared(&seen, &store),
        vec![vec![start_seen(0), restore_seen(10, 0, 0)]],
    );
    assert_eq!(
        broadcasts_to(&sent[0]),
        [] as [(Vec<u64>, String); 0],
        "10's node does not know; its indices show nothing lost"
    );
}

/// Saved before a restore in the middle of a batch, what the actor said
/// earlier is in that record only, not again in the batch's last one.
#[test]
fn output_saved_before_a_restore_is_not_kept_twice() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = shared(&seen, &store);
    run_batches(
        &shared,
        vec![
            vec![start_seen(0), restore_conn(9, 0), message(1)],
            vec![message(2), restore_seen(10, 0, 2), message(3)],
        ],
    );
    let again = run_frames(
        &shared,
        vec![start_seen(0), restore_seen(9, 1, 2), restore_seen(10, 0, 2)],
    );
    assert_eq!(
        broadcasts_to(&again),
        [
            (vec![9], "saw m2".to_string()),
            (vec![9, 10], "saw m3".to_string())
        ]
    );
}
