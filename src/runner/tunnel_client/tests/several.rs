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

/// Without marks the indices judge only the batch the actor started from:
/// once it saved another, a connection restored late whose index lags
/// the start's record is not sent the newer batch's output (which every
/// other connection already got).
#[test]
fn the_indices_judge_only_the_record_the_actor_started_from() {
    let store = MemoryStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let first = vec![start(), restore_conn(9, 0), restore_conn(10, 0), msg(10, 1)];
    run_batches_marked(&shared(&seen, &store), vec![first], false);
    let later = run_batches_marked(
        &shared(&seen, &store),
        vec![
            vec![start(), restore_conn(9, 0), msg(9, 1)],
            vec![restore_conn(10, 0)],
        ],
        false,
    );
    assert_eq!(broadcast_texts(&later[0]), ["saw c9m1"]);
    assert_eq!(broadcast_texts(&later[1]), Vec::<String>::new());
}
