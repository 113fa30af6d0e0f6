//! A chat room's broadcasts across a runner killed mid-batch: clients send
//! numbered messages, the runner dies (with the batch saved and its output
//! not sent, or at a random moment), the room is restored on another
//! runner, the gateway replays what was not acknowledged, and every member
//! sees every message exactly once, in one order, through `Broadcast`
//! frames.

mod common;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tether::runner::{BuiltinActors, KillSwitch, MemoryStore, SaveRequest, StateStore};

const TEXT: u8 = 1;
const MEMBERS: usize = 3;
const PER_MEMBER: usize = 40;

fn replay_config() -> tether::Config {
    let mut c = test_config();
    c.actors.start_timeout = Duration::from_secs(5);
    c.actors.idle_timeout = Duration::ZERO;
    c
}

/// The harness's store, but the save of the `after`th batch also kills
/// its runner: the runner dies with that batch saved and its output and
/// acknowledgements not sent, the window a `kill -9` can hit.
struct KillsAfterSave {
    inner: MemoryStore,
    after: usize,
    saves: AtomicUsize,
    kill: Arc<Mutex<Option<KillSwitch>>>,
}

impl StateStore for KillsAfterSave {
    fn load(&self, name: &str, key: &[String]) -> io::Result<Option<Vec<u8>>> {
        self.inner.load(name, key)
    }
    fn save(&self, name: &str, key: &[String], record: &[u8]) -> io::Result<()> {
        self.inner.save(name, key, record)
    }
    fn save_batch(&self, records: &[SaveRequest<'_>]) -> Vec<io::Result<()>> {
        let results = self.inner.save_batch(records);
        if records.is_empty() {
            return results; // a batch that changed no actor
        }
        if self.saves.fetch_add(1, Ordering::Relaxed) + 1 == self.after {
            if let Some(kill) = self.kill.lock().unwrap().as_ref() {
                kill.kill();
            }
        }
        results
    }
}

/// Next text message, or `None` once the connection ends or stays silent
/// past its read timeout.
fn next_text(ws: &mut RawWs) -> Option<String> {
    loop {
        let f = ws.recv()?;
        match f.opcode {
            TEXT => return Some(String::from_utf8(f.payload).unwrap()),
            9 => ws.send(true, 10, &f.payload),
            other => panic!("unexpected frame {other}: {f:?}"),
        }
    }
}

/// Member `me` sends its numbered messages, each once the room has
/// broadcast the previous one (so they span many batches), then reads
/// until it has seen every member's: what it saw, in order.
fn member(mut ws: RawWs, me: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut read = |ws: &mut RawWs, until: &dyn Fn(&[String]) -> bool| {
        while !until(&seen) {
            match next_text(ws) {
                Some(t) => seen.push(t),
                None => panic!("member {me} waited in vain after {seen:?}"),
            }
        }
    };
    for n in 0..PER_MEMBER {
        let line = format!("m{me} {n}");
        ws.send(true, TEXT, line.as_bytes());
        read(&mut ws, &|seen| seen.last() == Some(&line));
    }
    read(&mut ws, &|seen| seen.len() >= MEMBERS * PER_MEMBER);
    // The answer to `/history` comes after everything the room sent
    // before it: a duplicate would come first. And the room's state holds
    // each message once: its history is the last lines everyone saw.
    ws.send(true, TEXT, b"/history");
    let history = next_text(&mut ws).expect("the room's history");
    let last = &seen[seen.len() - tether::runner::CHAT_HISTORY..];
    assert_eq!(history.split('\n').collect::<Vec<_>>(), last, "member {me}");
    seen
}

/// Every member saw each message once, all in one order, each member's
/// own in the order it sent them.
#[track_caller]
fn assert_exactly_once_in_one_order(seen: &[Vec<String>]) {
    for (i, s) in seen.iter().enumerate() {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for line in s {
            *counts.entry(line).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "member {i} saw duplicates {twice:?}");
        assert_eq!(s.len(), MEMBERS * PER_MEMBER, "member {i}");
        assert_eq!(s, &seen[0], "members {i} and 0 saw one order");
    }
    for m in 0..MEMBERS {
        let own: Vec<String> = seen[0]
            .iter()
            .filter(|l| l.starts_with(&format!("m{m} ")))
            .cloned()
            .collect();
        let sent: Vec<String> = (0..PER_MEMBER).map(|n| format!("m{m} {n}")).collect();
        assert_eq!(own, sent, "member {m}'s messages in the order sent");
    }
}

#[test]
fn a_runner_killed_after_saving_a_batch_loses_no_broadcast_and_repeats_none() {
    let mut h = start_bare(replay_config());
    let kill = Arc::new(Mutex::new(None));
    let mut doomed = h.runner_options();
    doomed.state = Some(Arc::new(KillsAfterSave {
        inner: h.store.clone(),
        after: 25,
        saves: AtomicUsize::new(0),
        kill: kill.clone(),
    }));
    let i = h.add_runner(doomed, BuiltinActors);
    *kill.lock().unwrap() = Some(h.runner(i).kill_switch());
    // The room starts on the doomed runner (the only one); then a second.
    let sockets: Vec<RawWs> = (0..MEMBERS)
        .map(|_| RawWs::connect(h.client_addr, "/actors/chat/replayed"))
        .collect();
    let o = h.runner_options();
    h.add_runner(o, BuiltinActors);
    let members: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(me, ws)| std::thread::spawn(move || member(ws, me)))
        .collect();
    let seen: Vec<Vec<String>> = members.into_iter().map(|m| m.join().unwrap()).collect();
    assert_eq!(h.stat(|s| &s.failovers), 1, "the doomed runner died once");
    assert_exactly_once_in_one_order(&seen);
    // One Broadcast frame per message reached the gateway: the room used
    // the one-frame path, and the resent batch was not counted twice.
    let total = (MEMBERS * PER_MEMBER) as u64;
    assert_eq!(h.stat(|s| &s.broadcasts), total);
    h.shutdown();
}
